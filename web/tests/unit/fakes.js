// Stand-ins for the browser pieces the client modules take as parameters.

/** localStorage over a Map. */
export class MemoryStorage {
  constructor() {
    this.map = new Map();
  }
  getItem(key) {
    return this.map.has(key) ? this.map.get(key) : null;
  }
  setItem(key, value) {
    this.map.set(key, String(value));
  }
  removeItem(key) {
    this.map.delete(key);
  }
}

/** A WebSocket the test drives: `open()`, `receive(frame)`, `drop()`. */
export class FakeSocket {
  static instances = [];

  constructor(url) {
    this.url = url;
    this.readyState = 0;
    this.sent = [];
    this.onmessage = null;
    this.onclose = null;
    this.onerror = null;
    FakeSocket.instances.push(this);
  }

  static reset() {
    FakeSocket.instances = [];
  }

  static last() {
    return FakeSocket.instances[FakeSocket.instances.length - 1];
  }

  /** The server accepts and says welcome. */
  welcome(user_id) {
    this.readyState = 1;
    this.receive({ type: 'welcome', user_id, session_id: 1, token_expires_at: 4e9, max_frame_bytes: 65536 });
  }

  receive(frame) {
    this.onmessage?.({ data: JSON.stringify(frame) });
  }

  /** The connection is lost. */
  drop(code = 1006, reason = '') {
    this.readyState = 3;
    this.onclose?.({ code, reason });
  }

  send(text) {
    this.sent.push(JSON.parse(text));
  }

  close() {
    this.readyState = 3;
  }

  /** Frames sent of one type. */
  frames(type) {
    return this.sent.filter((f) => f.type === type);
  }
}

/** A fetch answering GET /conversations with `views` and anything else with 404. */
export function fakeFetch(views = []) {
  const calls = [];
  const fetch = async (url, init) => {
    calls.push({ url, init });
    const path = new URL(url, 'http://router').pathname;
    if (path === '/conversations') {
      return new Response(JSON.stringify({ conversations: views }), { status: 200 });
    }
    if (path === '/history') {
      return new Response(JSON.stringify({ messages: [] }), { status: 200 });
    }
    return new Response(JSON.stringify({ code: 'not_found', message: 'no' }), { status: 404 });
  };
  fetch.calls = calls;
  return fetch;
}

/** Resolves once `probe()` is truthy (polling), or rejects after `ms`. */
export async function until(probe, ms = 2000) {
  const deadline = Date.now() + ms;
  while (!probe()) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}
