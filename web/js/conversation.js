// One conversation as this client knows it: the server's view of it (from
// GET /conversations or a `conversation` frame), the messages loaded so far
// (by seq, each once), the read cursors, who is typing.
//
// Messages arrive from three places that overlap: the live stream and its
// replay after a reconnect, history pages, and our own acks. Everything is
// keyed by seq, so whatever arrives twice is kept once.

/** How long a `typing: start` shows without being repeated (the server's
 * own expiry is 6 s; a lost `stop` must not leave it on for ever). */
export const TYPING_SHOWN_MS = 7_000;

export class Conversation {
  /** @param {string} id */
  constructor(id) {
    this.id = id;
    /** @type {any} ConversationView fields (kind, participants, ...) once known */
    this.view = null;
    /** @type {Map<string, {user_id: string, name?: string, avatar_url?: string}>}
     * participants' profiles from `view.members` */
    this.members = new Map();
    /** @type {Map<number, any>} seq -> MessageView */
    this.messages = new Map();
    /** @type {number[] | null} sorted seqs, rebuilt lazily */
    this.sorted = null;
    /** Highest seq known to exist (from the list, `subscribed`, messages). */
    this.lastSeq = 0;
    /** Highest seq received on the stream or in history: `since` on resume. */
    this.cursor = undefined;
    /** The viewer's read cursor. */
    this.myRead = 0;
    /** Unread count as of `unreadBase.seq` (from the server). */
    this.unreadBase = { count: 0, seq: 0 };
    /** @type {Map<string, number>} other participants' read cursors */
    this.peerReads = new Map();
    /** @type {Map<string, number>} user -> when their typing indicator ends */
    this.typing = new Map();
    /** Newest history page fetched. */
    this.historyLoaded = false;
    /** `before_seq` of the next older page; null when there is none. */
    this.nextBeforeSeq = null;
    this.loadingOlder = false;
    /** Why the last history page failed (network), if it did. */
    this.historyError = null;
    /** Read cursor still to send to the server (0: nothing). */
    this.readToSend = 0;
    /** Why this conversation cannot be shown (not found, or not yours). */
    this.error = null;
  }

  /** Takes the server's view (list entry, POST answer, `conversation` frame). */
  applyView(view) {
    this.view = view;
    this.members = new Map((view.members ?? []).map((m) => [m.user_id, m]));
    this.lastSeq = Math.max(this.lastSeq, view.last_seq ?? 0);
    if (typeof view.last_read_seq === 'number' && view.last_read_seq >= this.myRead) {
      this.myRead = view.last_read_seq;
      // The server's count is exact for its own snapshot; our stream adds
      // only what came after `last_seq`.
      this.unreadBase = { count: view.unread_count ?? 0, seq: view.last_seq ?? 0 };
    }
    if (view.last_message) this.add(view.last_message, { fromStream: false });
    this.error = null;
  }

  /**
   * Adds a message; returns false if this seq was already known.
   * `fromStream`: it came from the subscription, which is gapless from
   * `since`, so it also advances the resume cursor; history pages and list
   * entries do not.
   */
  add(message, { fromStream = true } = {}) {
    const seq = message.seq;
    if (!Number.isInteger(seq) || seq < 1) return false;
    if (seq > this.lastSeq) this.lastSeq = seq;
    if (fromStream && (this.cursor === undefined || seq > this.cursor)) this.cursor = seq;
    if (message.sender_id !== undefined) this.typing.delete(message.sender_id);
    if (this.messages.has(seq)) return false;
    this.messages.set(seq, message);
    this.sorted = null;
    return true;
  }

  /** A message was unsent or deleted: keep its place, drop its content. */
  tombstone(seq) {
    const message = this.messages.get(seq);
    if (!message || message.kind === 'deleted') return false;
    this.messages.set(seq, { ...message, kind: 'deleted', body: '', media_key: undefined });
    return true;
  }

  /** Messages, oldest first. */
  ordered() {
    if (!this.sorted) this.sorted = [...this.messages.keys()].sort((a, b) => a - b);
    return this.sorted.map((seq) => this.messages.get(seq));
  }

  /** The newest known message, if any. */
  last() {
    const ordered = this.ordered();
    return ordered.length ? ordered[ordered.length - 1] : this.view?.last_message;
  }

  /** When it last moved: for sorting the list. */
  activity() {
    return this.last()?.created_at ?? this.view?.created_at ?? 0;
  }

  /** Messages from others after the viewer's read cursor. */
  unread(me) {
    if (this.myRead >= this.lastSeq) return 0;
    const base = this.unreadBase;
    let count = this.myRead >= base.seq ? 0 : Math.min(base.count, base.seq - this.myRead);
    const from = Math.max(base.seq, this.myRead);
    for (const [seq, message] of this.messages) {
      if (seq > from && message.sender_id !== me) count += 1;
    }
    return count;
  }

  /** A `read` from the server (ours from any device, or a peer's). */
  applyRead(user_id, seq, me) {
    if (user_id === me) {
      if (seq <= this.myRead) return false;
      this.myRead = seq;
      return true;
    }
    if (seq <= (this.peerReads.get(user_id) ?? 0)) return false;
    this.peerReads.set(user_id, seq);
    return true;
  }

  /** Other participants who have read `seq`. */
  readBy(seq) {
    const readers = [];
    for (const [user, read] of this.peerReads) if (read >= seq) readers.push(user);
    return readers.sort();
  }

  /** A `typing` frame. */
  applyTyping(user_id, state, now = Date.now()) {
    if (state === 'start') this.typing.set(user_id, now + TYPING_SHOWN_MS);
    else this.typing.delete(user_id);
  }

  /** Who is typing now (expired indicators dropped). */
  typists(now = Date.now()) {
    for (const [user, until] of this.typing) if (until <= now) this.typing.delete(user);
    return [...this.typing.keys()].sort();
  }

  /** Other participants (before the view is known, whoever wrote). */
  peers(me) {
    const people = this.view?.participants ?? [...new Set(this.ordered().map((m) => m.sender_id))];
    return people.filter((p) => p !== me);
  }

  /** A participant's profile: `{user_id, name?, avatar_url?}` (the id
   * alone when the server knows no more, e.g. they never signed in). */
  member(user_id) {
    return this.members.get(user_id) ?? { user_id };
  }

  /** What to call a participant: their name, else their user id. */
  nameOf(user_id) {
    const name = this.members.get(user_id)?.name;
    return typeof name === 'string' && name.trim() ? name.trim() : user_id;
  }

  /** The viewer muted it (no pushes; the server's word, or ours just set). */
  get muted() {
    return this.view?.muted === true;
  }

  /** What to call it in the list and the header. */
  title(me) {
    if (this.view?.title) return this.view.title;
    const peers = this.peers(me);
    if (peers.length) return peers.map((p) => this.nameOf(p)).join(', ');
    return 'Conversation';
  }
}
