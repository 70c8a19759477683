// The offline send queue: every message the user writes goes here first and
// stays (in localStorage) until the server acks it, so a message written
// offline, or in flight when the tab closed, is sent on the next connection.
//
// Each entry keeps its `client_msg_id` for its whole life: a resend after a
// lost ack is recognised by the server and acked with the original seq
// instead of creating a duplicate.

/** @typedef {{client_msg_id: string, conversation_id: string, body: string,
 *   created_at: number, state: 'pending' | 'failed', error?: string}} Entry */

/** A client_msg_id: time-ordered, random, well under the 64-byte limit. */
export function newClientMsgId(now = Date.now()) {
  const random = new Uint8Array(10);
  globalThis.crypto.getRandomValues(random);
  const hex = Array.from(random, (b) => b.toString(16).padStart(2, '0')).join('');
  return `${now.toString(36).padStart(9, '0')}-${hex}`;
}

export class Outbox {
  /**
   * @param {Storage} storage  localStorage, or anything with the same methods
   * @param {string} key       one queue per user
   */
  constructor(storage, key) {
    this.storage = storage;
    this.key = key;
    /** @type {Entry[]} in the order they were written */
    this.list = [];
    this.reload();
  }

  /** Re-reads the stored queue (another tab may have changed it). */
  reload() {
    let stored = [];
    try {
      stored = JSON.parse(this.storage.getItem(this.key) ?? '[]');
    } catch {
      stored = [];
    }
    this.list = Array.isArray(stored) ? stored.filter(isEntry) : [];
  }

  save() {
    try {
      this.storage.setItem(this.key, JSON.stringify(this.list));
    } catch {
      // Storage full or disabled: the queue still works for this tab.
    }
  }

  /** Queues a new message; returns its entry. */
  add(conversation_id, body, now = Date.now(), media_key = undefined) {
    const entry = {
      client_msg_id: newClientMsgId(now),
      conversation_id,
      body,
      created_at: now,
      state: 'pending',
    };
    if (media_key) entry.media_key = media_key;
    this.list.push(entry);
    this.save();
    return entry;
  }

  get(client_msg_id) {
    return this.list.find((e) => e.client_msg_id === client_msg_id);
  }

  /** Entries of one conversation, oldest first. */
  of(conversation_id) {
    return this.list.filter((e) => e.conversation_id === conversation_id);
  }

  /** The oldest pending entry of each conversation: what to send next. */
  heads() {
    const heads = new Map();
    for (const entry of this.list) {
      if (entry.state === 'pending' && !heads.has(entry.conversation_id)) {
        heads.set(entry.conversation_id, entry);
      }
    }
    return [...heads.values()];
  }

  /** Acked: the message now lives in the conversation. */
  remove(client_msg_id) {
    const before = this.list.length;
    this.list = this.list.filter((e) => e.client_msg_id !== client_msg_id);
    if (this.list.length !== before) this.save();
    return this.list.length !== before;
  }

  /** The server refused it for good; kept so the user sees why. */
  fail(client_msg_id, reason) {
    const entry = this.get(client_msg_id);
    if (!entry) return;
    entry.state = 'failed';
    entry.error = reason;
    this.save();
  }

  /** Puts a failed entry back in the queue (same client_msg_id). */
  retry(client_msg_id) {
    const entry = this.get(client_msg_id);
    if (!entry) return;
    entry.state = 'pending';
    delete entry.error;
    this.save();
  }
}

function isEntry(e) {
  return (
    e &&
    typeof e.client_msg_id === 'string' &&
    typeof e.conversation_id === 'string' &&
    typeof e.body === 'string' &&
    (e.state === 'pending' || e.state === 'failed')
  );
}
