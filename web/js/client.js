// The chat client without the page: one signed-in user's conversations, the
// live connection, the send queue. Views read its state and call its
// methods; it says `change` when something they show moved.
//
// Data path: user writes → Outbox (localStorage) → `send` on the socket,
// one in flight per conversation so the server sees them in order → `ack`
// (or our own `message` echo) takes it out of the queue and into the
// conversation by seq. A dropped socket leaves unacked entries queued; the
// next `welcome` resumes every conversation from its cursor and sends the
// queue again with the same client_msg_ids.
//
// Nothing here touches the DOM: WebSocket, fetch and storage are passed in,
// so tests can run it in node against fakes.

import { Api, ApiError } from './api.js';
import { Connection } from './connection.js';
import { Conversation, TYPING_SHOWN_MS } from './conversation.js';
import { Outbox } from './outbox.js';

/** Errors after which a `send` is tried again with the same client_msg_id. */
const RETRYABLE = new Set(['rate_limited', 'unavailable', 'internal']);
/** Send `typing: start` again this often while the user keeps typing
 * (the server ignores repeats within 2 s and expires a start after 6 s). */
const TYPING_REPEAT_MS = 3_000;
/** No keystroke for this long: send `typing: stop`. */
const TYPING_IDLE_MS = 4_000;
/** Newest messages fetched when a conversation is opened, and per older page. */
export const PAGE_SIZE = 50;
/** The server allows this many subscriptions per session. */
const MAX_SUBSCRIPTIONS = 1000;

const PLAIN_ERRORS = {
  invalid_argument: 'refused by the server',
  // Also a conversation you are not in: the server answers both alike.
  not_found: 'no such conversation, or you are not in it',
  malformed_frame: 'the client sent a bad frame',
};

export class ChatClient extends EventTarget {
  /**
   * @param {{
   *   token: string,
   *   userId: string,
   *   storage: Storage,
   *   baseUrl?: string,
   *   wsUrl: (token: string) => string,
   *   WebSocket?: typeof WebSocket,
   *   fetch?: typeof fetch,
   *   connection?: object,
   * }} options
   */
  constructor(options) {
    super();
    this.me = options.userId;
    this.token = options.token;
    this.storage = options.storage;
    this.api = new Api({ baseUrl: options.baseUrl ?? '', token: this.token, fetch: options.fetch });
    this.connection = new Connection({
      url: () => options.wsUrl(this.token),
      WebSocket: options.WebSocket,
      ...options.connection,
    });
    this.outbox = new Outbox(this.storage, `turbochat.outbox.${this.me}`);
    this.readsKey = `turbochat.reads.${this.me}`;
    /** @type {Map<string, Conversation>} */
    this.conversations = new Map();
    /** @type {Map<string, boolean>} user -> online, from `presence` frames */
    this.presence = new Map();
    /** Users we block (read when a chat opens; changed by setBlocked). */
    this.blocked = new Set();
    /** media_key -> object URL (null while loading, 'error' if it failed) */
    this.mediaUrls = new Map();
    this.list = { loaded: false, loading: false, error: null };
    /** Conversations subscribed on the current socket. */
    this.subscriptions = new Set();
    /** conversation -> client_msg_id of the `send` awaiting its ack */
    this.inFlight = new Map();
    /** conversation -> timer before its queue is tried again */
    this.sendRetry = new Map();
    this.typingState = { conversation: null, sentAt: 0, idleTimer: null };
    /** "conversation\nuser" -> timer that re-renders when a typing indicator lapses */
    this.typingExpiry = new Map();
    this.welcomedOnce = false;
    this.failedConnects = 0;
    this.stopped = false;

    this.connection.addEventListener('frame', (e) => this.onFrame(e.detail));
    this.connection.addEventListener('close', (e) => this.onClose(e.detail));
    this.connection.addEventListener('state', () => this.changed('connection'));
  }

  /** Loads the list and connects. */
  start() {
    this.refreshList();
    this.connection.start();
  }

  /** Disconnects for good (sign-out). The send queue stays for next time. */
  stop() {
    this.stopped = true;
    for (const timer of this.sendRetry.values()) clearTimeout(timer);
    this.sendRetry.clear();
    for (const timer of this.typingExpiry.values()) clearTimeout(timer);
    this.typingExpiry.clear();
    clearTimeout(this.typingState.idleTimer);
    this.connection.stop();
  }

  // --- reading state ---

  /** The conversation, created empty if unknown (e.g. opened by a link). */
  conversation(id) {
    let conversation = this.conversations.get(id);
    if (!conversation) {
      conversation = new Conversation(id);
      const reads = this.storedReads()[id];
      if (reads) for (const [user, seq] of Object.entries(reads)) conversation.peerReads.set(user, seq);
      this.conversations.set(id, conversation);
    }
    return conversation;
  }

  /** Conversations with a known view, most recently active first. */
  sortedConversations() {
    return [...this.conversations.values()]
      .filter((c) => c.view && !c.error)
      .sort((a, b) => b.activity() - a.activity());
  }

  /** Queued (pending or failed) messages of a conversation, oldest first. */
  queued(conversation_id) {
    return this.outbox.of(conversation_id);
  }

  // --- actions ---

  /** Fetches `GET /conversations` and subscribes to any new ones. */
  async refreshList() {
    this.list.loading = true;
    this.changed('list');
    try {
      const views = await this.api.conversations();
      for (const view of views) {
        this.conversation(view.conversation_id).applyView(view);
        this.subscribe(view.conversation_id);
      }
      this.list = { loaded: true, loading: false, error: null };
    } catch (err) {
      this.list = { ...this.list, loading: false, error: err.message };
      this.checkAuth(err);
    }
    this.changed('list');
  }

  /** Starts (or finds) a direct conversation; returns its id. */
  async createDirect(peer_id, listing_id) {
    return this.adopt(await this.api.createDirect(peer_id, listing_id));
  }

  /** Starts a group; returns its id. */
  async createGroup(participants, title) {
    return this.adopt(await this.api.createGroup(participants, title));
  }

  adopt(view) {
    this.conversation(view.conversation_id).applyView(view);
    this.subscribe(view.conversation_id);
    this.changed('list', view.conversation_id);
    return view.conversation_id;
  }

  /** Mutes or unmutes a conversation for this user (pushes only: the
   * live stream is unchanged), as the server answers. */
  async setMuted(id, muted) {
    const conversation = this.conversation(id);
    const answer = await this.api.setMuted(id, muted);
    if (conversation.view) {
      conversation.view = { ...conversation.view, muted: answer?.muted ?? muted };
    }
    this.changed('conversation', id);
    return conversation.muted;
  }

  /** Unread messages over all conversations (the app badge). */
  unreadTotal() {
    let total = 0;
    for (const conversation of this.conversations.values()) {
      if (conversation.view && !conversation.error) total += conversation.unread(this.me);
    }
    return total;
  }

  /** The user opened a conversation: make sure it is live and has its
   * newest page of history. */
  open(id) {
    const conversation = this.conversation(id);
    this.subscribe(id);
    if (!conversation.historyLoaded) this.loadHistory(id);
    return conversation;
  }

  /** Loads the next older page (or the newest one if none is loaded). */
  async loadHistory(id) {
    const conversation = this.conversation(id);
    if (conversation.loadingOlder) return;
    if (conversation.historyLoaded && conversation.nextBeforeSeq === null) return;
    conversation.loadingOlder = true;
    conversation.historyError = null;
    this.changed('conversation', id);
    try {
      const before_seq = conversation.historyLoaded ? conversation.nextBeforeSeq : undefined;
      const page = await this.api.history(id, { before_seq, limit: PAGE_SIZE });
      for (const message of page.messages ?? []) {
        conversation.add(message, { fromStream: false });
        this.settleIfStored(message);
      }
      conversation.historyLoaded = true;
      conversation.nextBeforeSeq = page.next_before_seq ?? null;
    } catch (err) {
      if (err instanceof ApiError && err.code === 'not_found') {
        conversation.error = 'There is no such conversation, or you are not in it.';
      } else {
        conversation.historyError = err.message;
        this.checkAuth(err);
      }
    }
    conversation.loadingOlder = false;
    this.changed('conversation', id);
  }

  /** Queues a message; it goes out now if online, else on reconnect. */
  send(conversation_id, body, media_key = undefined) {
    const entry = this.outbox.add(conversation_id, body, Date.now(), media_key);
    // The server ends our typing indicator when the message commits.
    this.resetTyping();
    this.pump();
    this.changed('conversation', conversation_id);
    return entry;
  }

  /** Uploads a photo (needs the connection: the bytes are not queued),
   * then queues the message that carries it. Rejects with the server's
   * reason (too large, not an image...). */
  async sendMedia(conversation_id, file, caption = '') {
    const uploaded = await this.api.uploadMedia(conversation_id, file);
    this.mediaUrls.set(uploaded.media_key, URL.createObjectURL(file));
    return this.send(conversation_id, caption, uploaded.media_key);
  }

  /** A displayable URL for a message's media, or null while it loads. */
  /** Blocks (or unblocks) `user`; resolves once it is in force. */
  async setBlocked(user, blocked) {
    if (blocked) await this.api.block(user);
    else await this.api.unblock(user);
    if (blocked) this.blocked.add(user);
    else this.blocked.delete(user);
    this.changed('list');
  }

  /** Reads who we block (for the chat screen's Block/Unblock button). */
  async loadBlocks() {
    this.blocked = new Set(await this.api.blocks());
    this.changed('list');
  }

  /** Reports message `seq` of a conversation for `reason`. */
  report(conversation_id, seq, reason) {
    return this.api.report({ conversation_id, seq, reason });
  }

  /** Unsends our message `seq`; the tombstone shows at once. */
  async unsend(conversation_id, seq) {
    await this.api.unsend(conversation_id, seq);
    if (this.conversation(conversation_id).tombstone(seq)) this.changed('conversation', conversation_id);
  }

  mediaUrl(media_key) {
    const known = this.mediaUrls.get(media_key);
    if (known !== undefined) return known;
    this.mediaUrls.set(media_key, null);
    this.api
      .mediaBlob(`/media/${media_key}`)
      .then((blob) => {
        this.mediaUrls.set(media_key, URL.createObjectURL(blob));
        this.changed('conversation', media_key.split('/')[0]);
      })
      .catch(() => this.mediaUrls.set(media_key, 'error'));
    return null;
  }

  /** Sends a failed message again (same client_msg_id). */
  retry(client_msg_id) {
    const entry = this.outbox.get(client_msg_id);
    this.outbox.retry(client_msg_id);
    this.pump();
    if (entry) this.changed('conversation', entry.conversation_id);
  }

  /** Drops a failed message from the queue. */
  discard(client_msg_id) {
    const entry = this.outbox.get(client_msg_id);
    if (!entry || entry.state !== 'failed') return;
    this.outbox.remove(client_msg_id);
    this.changed('conversation', entry.conversation_id);
  }

  /** The user has seen everything up to `seq`. */
  markRead(conversation_id, seq) {
    const conversation = this.conversation(conversation_id);
    if (seq <= conversation.myRead) return;
    conversation.myRead = seq;
    conversation.readToSend = seq;
    this.flushRead(conversation);
    this.changed('list', conversation_id);
  }

  /** Called on every keystroke in the composer (`active`), and with false
   * when the user clears it or leaves. */
  typing(conversation_id, active) {
    const t = this.typingState;
    const now = Date.now();
    clearTimeout(t.idleTimer);
    if (!active) {
      if (t.conversation === conversation_id) this.resetTyping(true);
      return;
    }
    if (t.conversation && t.conversation !== conversation_id) this.resetTyping(true);
    if (t.conversation !== conversation_id || now - t.sentAt >= TYPING_REPEAT_MS) {
      if (this.connection.send({ type: 'typing', conversation_id, state: 'start' })) {
        t.conversation = conversation_id;
        t.sentAt = now;
      }
    }
    t.idleTimer = setTimeout(() => this.typing(conversation_id, false), TYPING_IDLE_MS);
  }

  /** Another tab changed the stored queue. */
  outboxChanged() {
    this.outbox.reload();
    this.pump();
    this.changed('list');
  }

  // --- the socket ---

  onFrame(frame) {
    switch (frame?.type) {
      case 'welcome':
        return this.onWelcome(frame);
      case 'message':
        return this.onMessage(frame);
      case 'ack':
        return this.onAck(frame);
      case 'subscribed': {
        const conversation = this.conversation(frame.conversation_id);
        conversation.lastSeq = Math.max(conversation.lastSeq, frame.last_seq);
        // Everything up to last_seq has been sent to us (the replay is done).
        conversation.cursor = Math.max(conversation.cursor ?? 0, frame.last_seq);
        return this.changed('conversation', frame.conversation_id);
      }
      case 'read': {
        const conversation = this.conversation(frame.conversation_id);
        if (conversation.applyRead(frame.user_id, frame.seq, this.me)) {
          if (frame.user_id !== this.me) this.storeReads(conversation);
          this.changed('conversation', frame.conversation_id);
        }
        return;
      }
      case 'typing': {
        if (frame.user_id === this.me) return;
        this.conversation(frame.conversation_id).applyTyping(frame.user_id, frame.state);
        this.changed('conversation', frame.conversation_id);
        // Re-render when it would expire on its own.
        if (frame.state === 'start') {
          const key = `${frame.conversation_id}\n${frame.user_id}`;
          clearTimeout(this.typingExpiry.get(key));
          this.typingExpiry.set(
            key,
            setTimeout(() => {
              this.typingExpiry.delete(key);
              this.changed('conversation', frame.conversation_id);
            }, TYPING_SHOWN_MS + 50),
          );
        }
        return;
      }
      case 'presence':
        this.presence.set(frame.user_id, frame.online);
        return this.changed('list');
      case 'conversation':
        return this.adopt(frame.conversation);
      case 'message_deleted':
        if (this.conversation(frame.conversation_id).tombstone(frame.seq)) {
          this.changed('conversation', frame.conversation_id);
        }
        return;
      case 'error':
        return this.onError(frame);
      default:
        // pong, and frame types added later: nothing to do.
        return;
    }
  }

  onWelcome(frame) {
    if (frame.user_id && frame.user_id !== this.me) {
      // Cannot happen with a sound server; refuse to mix two users' data.
      this.signedOut('The server identified you as someone else. Sign in again.');
      return;
    }
    this.failedConnects = 0;
    this.subscriptions.clear();
    this.inFlight.clear();
    // Resume everything we know from where we left it.
    const cursors = [];
    for (const conversation of this.conversations.values()) {
      if (conversation.error || cursors.length >= MAX_SUBSCRIPTIONS) continue;
      cursors.push(this.cursorOf(conversation));
      this.subscriptions.add(conversation.id);
    }
    if (cursors.length) this.connection.send({ type: 'resume', conversations: cursors });
    for (const conversation of this.conversations.values()) {
      this.flushRead(conversation);
      // A page that failed while we were offline: try it again now.
      if (conversation.historyError) this.loadHistory(conversation.id);
    }
    this.pump();
    // Conversations created while we were away, fresh unread counts.
    if (this.welcomedOnce) this.refreshList();
    this.welcomedOnce = true;
    this.changed('list');
  }

  /** `{conversation_id, since}`: replay everything after the last seq we
   * know of. Without any (a conversation opened by a link, not loaded yet)
   * there is no `since`: live from now, and history fills in the rest. */
  cursorOf(conversation) {
    const cursor = { conversation_id: conversation.id };
    let since = conversation.cursor;
    if (since === undefined && (conversation.view || conversation.historyLoaded)) {
      since = conversation.lastSeq;
    }
    if (since !== undefined) cursor.since = since;
    return cursor;
  }

  subscribe(id) {
    if (this.connection.state.status !== 'online' || this.subscriptions.has(id)) return;
    if (this.subscriptions.size >= MAX_SUBSCRIPTIONS) return;
    const conversation = this.conversation(id);
    if (conversation.error) return;
    if (this.connection.send({ type: 'subscribe', ...this.cursorOf(conversation) })) {
      this.subscriptions.add(id);
    }
  }

  onMessage(message) {
    const conversation = this.conversation(message.conversation_id);
    const fresh = conversation.add(message);
    // Our own echo can come before the ack: either one settles the send.
    const settled = this.settleIfStored(message);
    if (fresh || settled) this.changed('conversation', message.conversation_id);
  }

  /** A stored message of ours that is still queued (its ack was lost, or
   * has not come yet) is durable: take it out of the queue. */
  settleIfStored(message) {
    if (message.sender_id !== this.me || !this.outbox.get(message.client_msg_id)) return false;
    this.settled(message.conversation_id, message.client_msg_id);
    return true;
  }

  onAck(ack) {
    const entry = this.outbox.get(ack.client_msg_id);
    if (entry) {
      // Shown as sent right away; the `message` echo with this seq is then
      // a duplicate. Not a stream message: the cursor stays where it is.
      this.conversation(ack.conversation_id).add(
        {
          conversation_id: ack.conversation_id,
          seq: ack.seq,
          message_id: ack.message_id,
          sender_id: this.me,
          client_msg_id: ack.client_msg_id,
          kind: entry.media_key ? 'media' : 'text',
          body: entry.body,
          media_key: entry.media_key,
          created_at: ack.created_at,
        },
        { fromStream: false },
      );
    }
    this.settled(ack.conversation_id, ack.client_msg_id);
    this.changed('conversation', ack.conversation_id);
  }

  /** A send is durable: out of the queue, next one in that conversation. */
  settled(conversation_id, client_msg_id) {
    this.outbox.remove(client_msg_id);
    if (this.inFlight.get(conversation_id) === client_msg_id) this.inFlight.delete(conversation_id);
    this.pump();
  }

  onError(frame) {
    const { code, client_msg_id, conversation_id } = frame;
    const entry = client_msg_id ? this.outbox.get(client_msg_id) : null;
    if (entry) {
      if (this.inFlight.get(entry.conversation_id) === client_msg_id) this.inFlight.delete(entry.conversation_id);
      if (RETRYABLE.has(code)) {
        // Same client_msg_id later: the queue for this conversation waits.
        const delay = frame.retry_after_ms ?? 1000 + Math.floor(Math.random() * 1000);
        this.holdQueue(entry.conversation_id, delay);
      } else {
        this.outbox.fail(client_msg_id, frame.message || PLAIN_ERRORS[code] || code);
        this.pump();
      }
      this.changed('conversation', entry.conversation_id);
      return;
    }
    if (code === 'token_expired') {
      this.signedOut('Your session expired. Sign in with a fresh token.');
      return;
    }
    if (conversation_id && code === 'not_found') {
      const conversation = this.conversation(conversation_id);
      conversation.error = PLAIN_ERRORS[code];
      this.subscriptions.delete(conversation_id);
      this.changed('conversation', conversation_id);
      return;
    }
    if (conversation_id && code === 'unavailable') {
      // The owner could not serve a subscribe (or a read/typing): subscribe
      // again shortly; a duplicate subscription only replays what we have.
      this.subscriptions.delete(conversation_id);
      setTimeout(() => this.subscribe(conversation_id), 1000 + Math.floor(Math.random() * 1000));
    }
    this.notice(frame.message || code);
  }

  onClose({ code, reason, wasOnline }) {
    this.subscriptions.clear();
    this.inFlight.clear();
    for (const timer of this.sendRetry.values()) clearTimeout(timer);
    this.sendRetry.clear();
    if (this.stopped) return;
    if (code === 1008 && /token/i.test(reason ?? '')) {
      this.signedOut('Your session expired. Sign in with a fresh token.');
      return;
    }
    if (!wasOnline) {
      // A refused upgrade looks like any failed connect to a page; ask the
      // HTTP API (which says 401) now and then.
      this.failedConnects += 1;
      if (this.failedConnects === 2 || this.failedConnects % 10 === 0) {
        this.api.conversations(1).catch((err) => this.checkAuth(err));
      }
    }
  }

  /** Sends the oldest queued message of every conversation that has none
   * in flight: one at a time per conversation keeps them in order even if
   * one is refused and retried. */
  pump() {
    if (this.connection.state.status !== 'online') return;
    for (const entry of this.outbox.heads()) {
      const id = entry.conversation_id;
      if (this.inFlight.has(id) || this.sendRetry.has(id)) continue;
      const frame = {
        type: 'send',
        conversation_id: id,
        client_msg_id: entry.client_msg_id,
        body: entry.body,
      };
      if (entry.media_key) {
        frame.kind = 'media';
        frame.media_key = entry.media_key;
      }
      const sent = this.connection.send(frame);
      if (!sent) return;
      this.inFlight.set(id, entry.client_msg_id);
    }
  }

  holdQueue(conversation_id, delay) {
    clearTimeout(this.sendRetry.get(conversation_id));
    this.sendRetry.set(
      conversation_id,
      setTimeout(() => {
        this.sendRetry.delete(conversation_id);
        this.pump();
      }, delay),
    );
  }

  flushRead(conversation) {
    if (!conversation.readToSend) return;
    const sent = this.connection.send({
      type: 'read',
      conversation_id: conversation.id,
      seq: conversation.readToSend,
    });
    if (sent) conversation.readToSend = 0;
  }

  resetTyping(sendStop = false) {
    const t = this.typingState;
    clearTimeout(t.idleTimer);
    if (sendStop && t.conversation) {
      this.connection.send({ type: 'typing', conversation_id: t.conversation, state: 'stop' });
    }
    t.conversation = null;
    t.sentAt = 0;
  }

  checkAuth(err) {
    if (err instanceof ApiError && err.status === 401) {
      this.signedOut(`The server refused your token (${err.message}). Sign in again.`);
    }
  }

  signedOut(reason) {
    if (this.stopped) return;
    this.stop();
    this.dispatchEvent(new CustomEvent('signedout', { detail: { reason } }));
  }

  notice(message) {
    this.dispatchEvent(new CustomEvent('notice', { detail: { message } }));
  }

  changed(scope, conversation_id) {
    this.dispatchEvent(new CustomEvent('change', { detail: { scope, conversation_id } }));
  }

  // --- peers' read cursors, remembered across reloads (the server only
  // tells them live) ---

  storedReads() {
    try {
      return JSON.parse(this.storage.getItem(this.readsKey) ?? '{}') ?? {};
    } catch {
      return {};
    }
  }

  storeReads(conversation) {
    const all = this.storedReads();
    all[conversation.id] = Object.fromEntries(conversation.peerReads);
    try {
      this.storage.setItem(this.readsKey, JSON.stringify(all));
    } catch {
      // Storage full: read marks just won't survive a reload.
    }
  }
}
