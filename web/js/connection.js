// The WebSocket to a router, kept up for as long as the user is signed in.
//
// States: `connecting` (socket opening, waiting for `welcome`), `online`
// (welcomed: frames may be sent), `offline` (waiting `retryAt` before the
// next attempt), `stopped`. A socket counts as up only once `welcome`
// arrives: a router that accepts TCP and then refuses the upgrade is a
// failed attempt like any other.
//
// Dead sockets are found three ways: the browser's close event; a ping
// when nothing has been heard for `heartbeatMs`, dropped if nothing comes
// back within `pongTimeoutMs` (half-open TCP after a network change never
// gets a close event); and `probe()`, which the page calls when the
// browser says the network changed.

import { Backoff } from './backoff.js';

const OPEN = 1;

/** Close codes we use ourselves (4000-4999 is the application range). */
export const CLOSE_DEAD = 4000;

export class Connection extends EventTarget {
  /**
   * @param {{
   *   url: () => string,
   *   WebSocket?: typeof WebSocket,
   *   backoff?: Backoff,
   *   heartbeatMs?: number,
   *   pongTimeoutMs?: number,
   *   connectTimeoutMs?: number,
   *   stableMs?: number,
   *   now?: () => number,
   * }} options
   */
  constructor(options) {
    super();
    this.url = options.url;
    this.WebSocket = options.WebSocket ?? globalThis.WebSocket;
    this.backoff = options.backoff ?? new Backoff();
    this.heartbeatMs = options.heartbeatMs ?? 25_000;
    this.pongTimeoutMs = options.pongTimeoutMs ?? 10_000;
    this.connectTimeoutMs = options.connectTimeoutMs ?? 10_000;
    this.stableMs = options.stableMs ?? 10_000;
    this.now = options.now ?? Date.now;
    /** @type {{status: 'idle'|'connecting'|'online'|'offline'|'stopped', retryAt: number|null, attempt: number, since: number}} */
    this.state = { status: 'idle', retryAt: null, attempt: 0, since: this.now() };
    this.ws = null;
    this.timers = {};
    /** Frames received on the current socket (liveness checks compare it). */
    this.received = 0;
    this.lastHeard = 0;
    this.nonce = 0;
  }

  /** Connects now, and keeps reconnecting until `stop()`. */
  start() {
    if (this.state.status === 'idle' || this.state.status === 'stopped') this.connect();
  }

  /** Closes the socket for good (sign-out). */
  stop() {
    this.clearTimers();
    const ws = this.detach();
    if (ws) safeClose(ws, 1000, 'bye');
    this.setState('stopped');
  }

  /** Sends a frame if the session is up; false if it could not. */
  send(frame) {
    if (this.state.status !== 'online' || !this.ws || this.ws.readyState !== OPEN) return false;
    this.ws.send(JSON.stringify(frame));
    return true;
  }

  /** Skips the wait (the network came back, or the user asked): connects
   * now if offline, checks the socket if online. */
  reconnectNow() {
    if (this.state.status === 'offline') {
      this.backoff.reset();
      this.connect();
    } else if (this.state.status === 'online') {
      this.probe();
    }
  }

  /** Pings; drops the socket if nothing at all arrives within `timeoutMs`. */
  probe(timeoutMs = this.pongTimeoutMs) {
    if (this.state.status !== 'online' || this.timers.probe) return;
    const mark = this.received;
    this.nonce += 1;
    this.send({ type: 'ping', nonce: String(this.nonce) });
    this.timers.probe = setTimeout(() => {
      this.timers.probe = null;
      if (this.received === mark) this.drop('no answer from the server');
    }, timeoutMs);
  }

  // --- internals ---

  connect() {
    this.clearTimers();
    const old = this.detach();
    if (old) safeClose(old, 1000, 'reconnecting');
    this.setState('connecting');
    let ws;
    try {
      ws = new this.WebSocket(this.url());
    } catch (err) {
      this.failed(1006, String(err?.message ?? err));
      return;
    }
    this.ws = ws;
    this.received = 0;
    this.timers.connect = setTimeout(() => this.drop('connecting took too long'), this.connectTimeoutMs);
    ws.onmessage = (event) => {
      if (this.ws !== ws) return;
      this.received += 1;
      this.lastHeard = this.now();
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch {
        return;
      }
      if (frame?.type === 'welcome' && this.state.status !== 'online') this.welcomed();
      this.dispatchEvent(new CustomEvent('frame', { detail: frame }));
    };
    ws.onclose = (event) => {
      if (this.ws !== ws) return;
      this.detach();
      this.failed(event.code, event.reason);
    };
    // An error is always followed by close; nothing to do here.
    ws.onerror = () => {};
  }

  welcomed() {
    clearTimeout(this.timers.connect);
    this.timers.connect = null;
    this.setState('online');
    // Only a connection that stays up resets the schedule: a router that
    // welcomes and drops at once must not be hammered.
    this.timers.stable = setTimeout(() => this.backoff.reset(), this.stableMs);
    this.timers.heartbeat = setInterval(() => {
      if (this.now() - this.lastHeard >= this.heartbeatMs) this.probe();
    }, Math.max(1000, Math.floor(this.heartbeatMs / 2)));
  }

  /** The socket is gone (or given up on): tell, then schedule the next try. */
  failed(code, reason) {
    const wasOnline = this.state.status === 'online';
    this.clearTimers();
    this.dispatchEvent(new CustomEvent('close', { detail: { code, reason, wasOnline } }));
    if (this.state.status === 'stopped') return;
    const delay = this.backoff.next();
    this.setState('offline', { retryAt: this.now() + delay, attempt: this.backoff.attempt });
    this.timers.retry = setTimeout(() => this.connect(), delay);
  }

  /** Gives up on a socket that looks dead without waiting for the browser
   * (a close handshake on a dead network can take minutes). */
  drop(reason) {
    const ws = this.detach();
    if (ws) safeClose(ws, CLOSE_DEAD, reason);
    this.failed(1006, reason);
  }

  detach() {
    const ws = this.ws;
    this.ws = null;
    if (ws) ws.onmessage = ws.onclose = ws.onerror = null;
    return ws;
  }

  clearTimers() {
    clearTimeout(this.timers.connect);
    clearTimeout(this.timers.stable);
    clearTimeout(this.timers.retry);
    clearTimeout(this.timers.probe);
    clearInterval(this.timers.heartbeat);
    this.timers = {};
  }

  setState(status, extra = {}) {
    this.state = { status, retryAt: null, attempt: this.backoff.attempt, since: this.now(), ...extra };
    this.dispatchEvent(new CustomEvent('state', { detail: this.state }));
  }
}

function safeClose(ws, code, reason) {
  try {
    ws.close(code, reason);
  } catch {
    // Already closing, or an invalid state: nothing left to close.
  }
}
