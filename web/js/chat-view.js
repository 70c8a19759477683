// One open conversation: header (who, the listing's card, mute, block),
// messages (with older pages on scroll), typing line, composer. Marks
// messages read as they scroll into view.

import { avatar, listingCard, setAvatar } from './cards.js';
import { h, fill, reconcile, shortTime, longTime } from './dom.js';

/** The server's default `owner.max_body_chars`; the server has the final
 * word (it may be configured lower), so going over only warns. */
const BODY_LIMIT = 4000;
/** A message is "seen" once this much of it is on screen. */
const SEEN_RATIO = 0.6;

/** The reasons a report may give (docs/protocol.md, Reporting). */
const REPORT_REASONS = ['scam', 'spam', 'harassment', 'inappropriate', 'other'];

/** Drafts survive switching conversations (not reloads). */
const drafts = new Map();

export class ChatView {
  /**
   * @param {import('./client.js').ChatClient} client
   * @param {string} id conversation id
   */
  constructor(client, id) {
    this.client = client;
    this.id = id;
    this.conversation = client.open(id);
    this.stickToBottom = true;
    /** Seqs of others' messages on screen now. */
    this.visible = new Set();
    /** Newest seq seen on screen while the page was visible, not yet marked read. */
    this.seenMax = 0;
    this.readTimer = null;
    /** The seq whose report form is open, and the seqs reported here. */
    this.reporting = null;
    this.reported = new Set();
    this.actionNotice = '';
    client.loadBlocks().catch(() => {});

    this.title = h('h2', { id: 'chat-title', class: 'chat-title' });
    this.subtitle = h('p', { class: 'chat-sub' });
    this.blockButton = h('button', {
      type: 'button',
      class: 'link danger block',
      'data-testid': 'block',
      onclick: () => this.toggleBlock(),
    });
    this.muteButton = h('button', {
      type: 'button',
      class: 'link mute',
      'data-testid': 'mute',
      onclick: () => this.toggleMute(),
    });
    this.avatar = h('span', { class: 'avatar', 'aria-hidden': 'true' });
    /** The listing's card, under the header's first line. */
    this.card = h('div', { class: 'chat-listing', 'data-testid': 'chat-listing' });
    this.olderButton = h(
      'button',
      { type: 'button', class: 'link', onclick: () => this.loadOlder() },
      'Load older messages',
    );
    this.older = h('div', { class: 'older' });
    this.list = h('ol', { class: 'messages' });
    this.log = h('div', { class: 'log', role: 'log', 'aria-label': 'Messages' }, this.list);
    this.scroller = h(
      'div',
      { class: 'scroller', tabindex: '0', 'aria-label': 'Message history' },
      this.older,
      this.log,
    );
    this.notice = h('p', { class: 'chat-notice', role: 'alert' });
    this.typingLine = h('p', { class: 'typing', 'aria-live': 'polite', 'data-testid': 'typing' });
    this.input = h('textarea', {
      id: 'composer-input',
      name: 'body',
      rows: 1,
      placeholder: 'Write a message',
      autocomplete: 'off',
      'aria-describedby': 'composer-hint',
      oninput: () => this.onInput(),
      onkeydown: (event) => {
        if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
          event.preventDefault();
          this.submit();
        }
      },
      onblur: () => this.client.typing(this.id, false),
    });
    this.input.value = drafts.get(id) ?? '';
    this.counter = h('span', { class: 'counter', 'aria-live': 'polite' });
    this.hint = h('p', { id: 'composer-hint', class: 'composer-hint' });
    this.sendButton = h('button', { type: 'submit', class: 'primary send' }, 'Send');
    this.fileInput = h('input', {
      type: 'file',
      id: 'composer-photo',
      accept: 'image/jpeg,image/png,image/gif,image/webp',
      class: 'visually-hidden',
      onchange: () => this.attach(),
    });
    this.attachButton = h(
      'label',
      { for: 'composer-photo', class: 'attach', title: 'Send a photo', role: 'button', tabindex: '0',
        onkeydown: (event) => {
          if (event.key === 'Enter' || event.key === ' ') {
            event.preventDefault();
            this.fileInput.click();
          }
        } },
      h('span', { 'aria-hidden': 'true' }, '+'),
      h('span', { class: 'visually-hidden' }, 'Send a photo'),
    );
    this.composer = h(
      'form',
      {
        class: 'composer',
        onsubmit: (event) => {
          event.preventDefault();
          this.submit();
        },
      },
      h('label', { for: 'composer-input', class: 'visually-hidden' }, 'Message'),
      this.fileInput,
      this.attachButton,
      this.input,
      this.sendButton,
      h('div', { class: 'composer-foot' }, this.hint, this.counter),
    );
    this.el = h(
      'section',
      { class: 'chat', 'aria-labelledby': 'chat-title', dataset: { conversationId: id } },
      h(
        'header',
        { class: 'chat-header' },
        h(
          'div',
          { class: 'chat-header-row' },
          h(
            'a',
            { href: '#/', class: 'back', 'aria-label': 'Back to chats' },
            h('span', { 'aria-hidden': 'true' }, '‹'),
          ),
          this.avatar,
          h('div', { class: 'chat-heading' }, this.title, this.subtitle),
          this.muteButton,
          this.blockButton,
        ),
        this.card,
      ),
      this.scroller,
      this.notice,
      this.typingLine,
      this.composer,
    );

    // Messages from others count as read once they are actually on screen
    // while the page is visible.
    this.seen = new IntersectionObserver(
      (entries) => {
        for (const entry of entries) {
          const seq = Number(entry.target.dataset.seq);
          if (entry.isIntersecting && entry.intersectionRatio >= SEEN_RATIO) {
            this.visible.add(seq);
            if (document.visibilityState === 'visible') this.seenMax = Math.max(this.seenMax, seq);
          } else {
            this.visible.delete(seq);
          }
        }
        this.scheduleRead();
      },
      { root: this.scroller, threshold: [0, SEEN_RATIO, 1] },
    );
    // The top of the list coming into view loads the previous page.
    this.topWatcher = new IntersectionObserver(
      (entries) => {
        if (entries.some((e) => e.isIntersecting) && this.ready) this.loadOlder();
      },
      { root: this.scroller, rootMargin: '200px 0px 0px 0px' },
    );
    this.topWatcher.observe(this.older);
    this.onVisibility = () => this.scheduleRead();
    document.addEventListener('visibilitychange', this.onVisibility);
    this.scroller.addEventListener('scroll', () => {
      this.stickToBottom = this.atBottom();
    }, { passive: true });
  }

  focus() {
    this.input.focus();
  }

  destroy() {
    this.client.typing(this.id, false);
    this.seen.disconnect();
    this.topWatcher.disconnect();
    clearTimeout(this.readTimer);
    document.removeEventListener('visibilitychange', this.onVisibility);
  }

  atBottom() {
    const s = this.scroller;
    return s.scrollHeight - s.scrollTop - s.clientHeight < 48;
  }

  loadOlder() {
    const c = this.conversation;
    if (c.loadingOlder || (c.historyLoaded && c.nextBeforeSeq === null)) return;
    this.client.loadHistory(this.id);
  }

  onInput() {
    const value = this.input.value;
    drafts.set(this.id, value);
    this.client.typing(this.id, value.trim() !== '');
    this.renderComposer();
  }

  submit() {
    const body = this.input.value;
    if (!body.trim() || this.conversation.error) return;
    this.client.send(this.id, body);
    this.input.value = '';
    drafts.delete(this.id);
    this.stickToBottom = true;
    this.renderComposer();
    this.input.focus();
  }

  /** Uploads the chosen photo and sends it, with the composer's text as
   * caption. Upload needs the connection; a refusal says why. */
  async attach() {
    const file = this.fileInput.files?.[0];
    this.fileInput.value = '';
    if (!file || this.conversation.error) return;
    const caption = this.input.value.trim();
    this.attachButton.classList.add('busy');
    this.uploadError = '';
    try {
      await this.client.sendMedia(this.id, file, caption);
      if (caption) {
        this.input.value = '';
        drafts.delete(this.id);
      }
      this.stickToBottom = true;
    } catch (err) {
      this.uploadError = `Photo not sent: ${err.message}`;
    }
    this.attachButton.classList.remove('busy');
    this.render();
  }

  /** Blocks the other person of a direct conversation, or lifts it. */
  async toggleBlock() {
    const peer = this.conversation.peers(this.client.me)[0];
    if (!peer) return;
    const blocked = !this.client.blocked.has(peer);
    try {
      await this.client.setBlocked(peer, blocked);
      this.actionNotice = blocked
        ? `You blocked ${peer}. They can no longer write to you here.`
        : `You unblocked ${peer}.`;
    } catch (err) {
      this.actionNotice = `Could not ${blocked ? 'block' : 'unblock'} ${peer}: ${err.message}`;
    }
    this.render();
  }

  /** Mutes the conversation (no pushes from it), or lifts it. */
  async toggleMute() {
    const muted = !this.conversation.muted;
    this.muteButton.disabled = true;
    try {
      await this.client.setMuted(this.id, muted);
      this.actionNotice = '';
    } catch (err) {
      this.actionNotice = `Could not ${muted ? 'mute' : 'unmute'} this conversation: ${err.message}`;
    }
    this.muteButton.disabled = false;
    this.render();
  }

  /** Files the open report form's report. */
  async sendReport(seq, reason) {
    try {
      await this.client.report(this.id, seq, reason);
      this.reported.add(seq);
      this.actionNotice = 'Thank you. Your report was sent to our moderators.';
    } catch (err) {
      this.actionNotice = `Could not send the report: ${err.message}`;
    }
    this.reporting = null;
    this.render();
  }

  async unsend(seq) {
    try {
      await this.client.unsend(this.id, seq);
    } catch (err) {
      this.actionNotice = `Could not unsend: ${err.message}`;
      this.render();
    }
  }

  scheduleRead() {
    if (this.readTimer) return;
    this.readTimer = setTimeout(() => {
      this.readTimer = null;
      if (document.visibilityState !== 'visible') return;
      // Whatever was on screen at some point counts, even if the user has
      // scrolled on since.
      const newest = Math.max(this.seenMax, ...this.visible);
      this.seenMax = 0;
      if (newest > 0) this.client.markRead(this.id, newest);
    }, 150);
  }

  render() {
    const client = this.client;
    const me = client.me;
    const c = this.conversation;
    const now = Date.now();

    // Header.
    const peers = c.peers(me);
    const title = c.view || c.historyLoaded || c.error ? c.title(me) : 'Loading…';
    if (this.title.textContent !== title) this.title.textContent = title;
    const face = c.view?.kind === 'group' || !peers.length ? null : c.member(peers[0]);
    setAvatar(this.avatar, { name: face ? c.nameOf(face.user_id) : title, url: face?.avatar_url });
    const online = peers.filter((p) => client.presence.get(p) === true);
    const card = c.view?.listing?.title ? c.view.listing : null;
    const sub = [];
    // A direct chat's id shows under the name when the name is not the id.
    if (face && c.nameOf(face.user_id) !== face.user_id) sub.push(face.user_id);
    if (c.view?.listing_id && !card) sub.push(`About ${c.view.listing_id}`);
    if (c.view?.kind === 'group') sub.push(`${c.view.participants.length} people`);
    if (online.length) sub.push(peers.length === 1 ? 'online' : `${online.map((p) => c.nameOf(p)).join(', ')} online`);
    const subText = sub.join(' · ');
    if (this.subtitle.textContent !== subText) fill(this.subtitle, subText);
    document.title = `${title} · turbochat`;

    // The listing's card, re-built only when it changed (its photo would
    // flicker otherwise).
    const cardKey = card ? JSON.stringify(card) : '';
    if (this.card.dataset.key !== cardKey) {
      this.card.dataset.key = cardKey;
      fill(this.card, card ? listingCard(card) : null);
    }
    this.card.hidden = !card;

    // Mute: pushes from this conversation, for this user.
    this.muteButton.hidden = !c.view || Boolean(c.error);
    const muteLabel = c.muted ? 'Unmute' : 'Mute';
    if (this.muteButton.textContent !== muteLabel) this.muteButton.textContent = muteLabel;
    this.muteButton.setAttribute('aria-pressed', c.muted ? 'true' : 'false');
    this.muteButton.title = c.muted ? 'Muted: no notifications from this chat' : 'No notifications from this chat';

    // Block: direct conversations only (groups are shared rooms).
    const peer = c.view?.kind === 'direct' ? peers[0] : undefined;
    this.blockButton.hidden = !peer;
    const blockLabel = peer && client.blocked.has(peer) ? 'Unblock' : 'Block';
    if (this.blockButton.textContent !== blockLabel) this.blockButton.textContent = blockLabel;

    // Errors: not a participant, no such conversation, history not loading.
    const problem =
      c.error ??
      (c.historyError ? `Could not load messages: ${c.historyError}` : this.uploadError || this.actionNotice || '');
    if (this.notice.textContent !== problem) this.notice.textContent = problem;
    this.notice.hidden = !problem;
    this.composer.hidden = Boolean(c.error);

    // Older pages (re-filled only on change, so a focused button keeps focus).
    let older = 'none';
    if (c.loadingOlder) older = 'loading';
    else if (c.historyLoaded && c.nextBeforeSeq === null) older = c.messages.size ? 'start' : 'empty';
    else if (c.historyLoaded || c.historyError) older = 'more';
    if (this.olderState !== older) {
      this.olderState = older;
      if (older === 'loading') fill(this.older, h('span', { class: 'muted' }, 'Loading messages…'));
      else if (older === 'start') fill(this.older, h('span', { class: 'muted' }, 'This is the start of the conversation.'));
      else if (older === 'more') fill(this.older, this.olderButton);
      else fill(this.older);
    }

    // Messages: stored ones by seq, then our queued ones in the order written.
    const stick = this.stickToBottom || this.atBottom();
    const anchor = this.list.firstElementChild;
    const anchorTop = anchor ? anchor.offsetTop : 0;
    const rows = c.ordered().map((m) => this.row(m, me));
    // A queued message already stored (its ack still on the way) shows once.
    const stored = new Set(rows.map((r) => r.key));
    for (const entry of client.queued(this.id)) {
      const row = this.queuedRow(entry, me);
      if (!stored.has(row.key)) rows.push(row);
    }
    reconcile(
      this.list,
      rows,
      (r) => r.key,
      (r, el) => this.renderRow(r, el, now),
      (r) => JSON.stringify(r),
    );
    for (const el of this.list.children) {
      if (el.dataset.watch === 'yes' && !el.dataset.watched) {
        el.dataset.watched = 'yes';
        this.seen.observe(el);
      }
    }
    if (stick) {
      this.scroller.scrollTop = this.scroller.scrollHeight;
    } else if (anchor && anchor.isConnected) {
      // Older messages went in above: keep what the user was reading still.
      this.scroller.scrollTop += anchor.offsetTop - anchorTop;
    }
    this.ready = c.historyLoaded;

    // Typing.
    const typists = c.typists(now).map((user) => c.nameOf(user));
    const typing =
      typists.length === 0
        ? ''
        : typists.length === 1
          ? `${typists[0]} is typing…`
          : `${typists.slice(0, -1).join(', ')} and ${typists[typists.length - 1]} are typing…`;
    if (this.typingLine.textContent !== typing) this.typingLine.textContent = typing;
    this.renderComposer();
    this.scheduleRead();
  }

  renderComposer() {
    const length = [...this.input.value].length;
    this.sendButton.disabled = this.input.value.trim() === '';
    const over = length > BODY_LIMIT;
    this.counter.textContent = length > BODY_LIMIT * 0.9 ? `${length.toLocaleString()} / ${BODY_LIMIT.toLocaleString()}` : '';
    this.counter.classList.toggle('over', over);
    const status = this.client.connection.state.status;
    const hint = over
      ? 'Too long: the server will likely refuse it.'
      : status === 'online'
        ? ''
        : 'You are offline. Messages are kept and sent when the connection is back.';
    if (this.hint.textContent !== hint) this.hint.textContent = hint;
  }

  /** What one stored message shows. */
  row(m, me) {
    const mine = m.sender_id === me;
    let state = 'received';
    let readers = [];
    if (mine) {
      readers = this.conversation.readBy(m.seq).map((user) => this.conversation.nameOf(user));
      state = readers.length ? 'read' : 'sent';
    }
    return {
      key: `m:${m.sender_id}:${m.client_msg_id || m.seq}`,
      seq: m.seq,
      mine,
      author: m.sender_id,
      authorName: this.conversation.nameOf(m.sender_id),
      authorPicture: this.conversation.member(m.sender_id).avatar_url ?? '',
      body: m.body,
      media: m.kind === 'media' && m.media_key ? this.client.mediaUrl(m.media_key) ?? 'loading' : undefined,
      system: m.kind === 'system',
      deleted: m.kind === 'deleted',
      reportable: !mine && m.kind !== 'system' && m.kind !== 'deleted',
      reporting: this.reporting === m.seq,
      reported: this.reported.has(m.seq),
      unsendable: mine && m.kind !== 'deleted' && m.kind !== 'system',
      time: m.created_at,
      state,
      readers,
      watch: !mine && m.seq > this.conversation.myRead,
    };
  }

  /** What one queued (pending or failed) message shows. */
  queuedRow(entry, me) {
    return {
      key: `m:${me}:${entry.client_msg_id}`,
      clientMsgId: entry.client_msg_id,
      mine: true,
      author: me,
      body: entry.body,
      media: entry.media_key ? this.client.mediaUrl(entry.media_key) ?? 'loading' : undefined,
      time: entry.created_at,
      state: entry.state,
      error: entry.error ?? '',
    };
  }

  renderRow(r, el, now) {
    const group = this.conversation.view?.kind === 'group';
    const item = el ?? h('li');
    item.className = `msg ${r.system ? 'system' : r.mine ? 'mine' : 'theirs'}${r.deleted ? ' deleted' : ''}`;
    item.dataset.state = r.state;
    if (r.seq) item.dataset.seq = String(r.seq);
    else delete item.dataset.seq;
    if (r.clientMsgId) item.dataset.clientMsgId = r.clientMsgId;
    // Only unread messages from others need watching.
    item.dataset.watch = r.watch ? 'yes' : 'no';
    if (!r.watch && item.dataset.watched) {
      this.seen.unobserve(item);
      delete item.dataset.watched;
    }
    const meta = h(
      'span',
      { class: 'meta' },
      h('time', { datetime: r.time ? new Date(r.time).toISOString() : false, title: longTime(r.time) }, shortTime(r.time, now)),
      r.mine ? this.stateLabel(r) : null,
    );
    const showAuthor = group && !r.mine && !r.system;
    const children = [
      h(
        'span',
        { class: showAuthor ? 'author' : 'author visually-hidden', title: r.authorName && r.authorName !== r.author ? r.author : false },
        r.mine ? 'You:' : `${r.authorName ?? r.author}:`,
      ),
      r.deleted ? h('p', { class: 'body tombstone', 'data-testid': 'tombstone' }, 'This message was deleted') : null,
      !r.deleted && r.media ? this.mediaElement(r.media) : null,
      !r.deleted && r.body ? h('p', { class: 'body' }, r.body) : null,
      meta,
      r.seq ? this.messageActions(r) : null,
    ];
    if (r.state === 'failed') {
      children.push(
        h(
          'div',
          { class: 'failure' },
          h('p', { class: 'failure-reason' }, `Not sent: ${r.error}`),
          h('button', { type: 'button', class: 'link', onclick: () => this.client.retry(r.clientMsgId) }, 'Retry'),
          h('button', { type: 'button', class: 'link danger', onclick: () => this.client.discard(r.clientMsgId) }, 'Delete'),
        ),
      );
    }
    // In a group, others' messages carry the sender's face.
    const face = showAuthor ? avatar({ name: r.authorName ?? r.author, url: r.authorPicture, size: 'small' }) : null;
    return fill(item, face, h('div', { class: 'bubble' }, children));
  }

  /** Report (others' messages) or Unsend (ours), and the report form. */
  messageActions(r) {
    if (r.reported) return h('p', { class: 'actions muted' }, 'Reported');
    if (r.reporting) {
      const reason = h(
        'select',
        { 'aria-label': 'Reason', 'data-testid': 'report-reason' },
        REPORT_REASONS.map((value) => h('option', { value }, value)),
      );
      return h(
        'div',
        { class: 'actions report-form' },
        reason,
        h('button', { type: 'button', class: 'link danger', onclick: () => this.sendReport(r.seq, reason.value) }, 'Send report'),
        h('button', { type: 'button', class: 'link', onclick: () => { this.reporting = null; this.render(); } }, 'Cancel'),
      );
    }
    if (r.reportable) {
      return h(
        'div',
        { class: 'actions' },
        h('button', { type: 'button', class: 'link', onclick: () => { this.reporting = r.seq; this.render(); } }, 'Report'),
      );
    }
    if (r.unsendable) {
      return h(
        'div',
        { class: 'actions' },
        h('button', { type: 'button', class: 'link', onclick: () => this.unsend(r.seq) }, 'Unsend'),
      );
    }
    return null;
  }

  mediaElement(src) {
    if (src === 'loading') return h('p', { class: 'media muted' }, 'Loading photo…');
    if (src === 'error') return h('p', { class: 'media muted' }, 'Photo unavailable');
    return h('img', { class: 'media', src, alt: 'Photo', loading: 'lazy', 'data-testid': 'photo' });
  }

  stateLabel(r) {
    const labels = {
      pending: ['◷', 'Pending'],
      failed: ['!', 'Failed'],
      sent: ['✓', 'Sent'],
      read: ['✓✓', 'Read'],
    };
    const [icon, text] = labels[r.state] ?? ['', ''];
    const title =
      r.state === 'read'
        ? `Read by ${r.readers.join(', ')}`
        : r.state === 'pending'
          ? 'Waiting to be sent'
          : text;
    return h(
      'span',
      { class: 'state', title, 'data-testid': 'state' },
      h('span', { class: 'state-icon', 'aria-hidden': 'true' }, icon),
      h('span', { class: 'state-text' }, text),
    );
  }
}
