// The sidebar: "new conversation" form and the conversation list (avatar,
// name, listing card, last message, time, unread badge, typing, muted).

import { avatar, listingCard } from './cards.js';
import { h, fill, reconcile, shortTime, longTime } from './dom.js';

export class ListView {
  /**
   * @param {import('./client.js').ChatClient} client
   * @param {{onCreated: (id: string) => void}} options
   */
  constructor(client, { onCreated }) {
    this.client = client;
    this.selected = null;
    /** false, true while opened for an empty list, 'done' after. */
    this.autoOpened = false;
    this.peer = h('input', {
      id: 'new-peer',
      name: 'peer',
      required: true,
      autocomplete: 'off',
      autocapitalize: 'off',
      spellcheck: 'false',
      maxlength: 128,
      placeholder: 'e.g. bob',
    });
    this.listing = h('input', {
      id: 'new-listing',
      name: 'listing',
      autocomplete: 'off',
      autocapitalize: 'off',
      spellcheck: 'false',
      placeholder: 'e.g. car-1',
    });
    this.formError = h('p', { class: 'error', role: 'alert' });
    this.submit = h('button', { type: 'submit', class: 'primary' }, 'Start chat');
    this.form = h(
      'form',
      {
        class: 'new-chat-form',
        onsubmit: async (event) => {
          event.preventDefault();
          const peer = this.peer.value.trim();
          if (!peer) return;
          this.submit.disabled = true;
          this.formError.textContent = '';
          try {
            const id = await this.client.createDirect(peer, this.listing.value.trim() || undefined);
            this.peer.value = '';
            this.listing.value = '';
            this.details.open = false;
            onCreated(id);
          } catch (err) {
            this.formError.textContent = `Could not start the chat: ${err.message}`;
          } finally {
            this.submit.disabled = false;
          }
        },
      },
      h('label', { for: 'new-peer' }, 'User id'),
      this.peer,
      h('label', { for: 'new-listing' }, 'Listing ', h('span', { class: 'optional' }, '(optional)')),
      this.listing,
      this.formError,
      this.submit,
    );
    this.details = h(
      'details',
      { class: 'new-chat' },
      h('summary', {}, h('span', { 'aria-hidden': 'true', class: 'plus' }, '+'), ' New conversation'),
      this.form,
    );
    this.state = h('p', { class: 'list-state', role: 'status' });
    this.items = h('ul', { class: 'conversations', 'aria-labelledby': 'conversations-title' });
    this.el = h(
      'nav',
      { class: 'sidebar', 'aria-label': 'Conversations' },
      h('div', { class: 'sidebar-head' }, h('h2', { id: 'conversations-title' }, 'Chats'), this.details),
      this.state,
      this.items,
    );
  }

  render() {
    const client = this.client;
    const me = client.me;
    const conversations = client.sortedConversations();
    const { loaded, loading, error } = client.list;
    if (error && !conversations.length) {
      fill(
        this.state,
        `Could not load your chats: ${error} `,
        h('button', { type: 'button', class: 'link', onclick: () => client.refreshList() }, 'Try again'),
      );
    } else if (!loaded && loading) {
      fill(this.state, 'Loading chats…');
    } else if (loaded && !conversations.length) {
      fill(this.state, 'No chats yet. Start one with “New conversation”.');
      if (!this.autoOpened) {
        this.details.open = true;
        this.autoOpened = true;
      }
    } else {
      fill(this.state);
    }
    // Opened only because the list was empty, and untouched: close it once
    // there is something to show.
    if (conversations.length && this.autoOpened === true && this.details.open) {
      const untouched = !this.peer.value && !this.listing.value && !this.details.contains(document.activeElement);
      if (untouched) this.details.open = false;
      this.autoOpened = 'done';
    }
    const now = Date.now();
    reconcile(
      this.items,
      conversations.map((c) => this.summary(c, me, now)),
      (s) => s.id,
      (s, el) => this.renderItem(s, el),
      (s) => JSON.stringify(s),
    );
  }

  /** Everything an item shows, so unchanged items are not re-rendered. */
  summary(conversation, me, now) {
    const last = conversation.last();
    const queued = this.client.queued(conversation.id);
    const newestQueued = queued[queued.length - 1];
    const typists = conversation.typists(now);
    let preview = '';
    let previewState = '';
    if (typists.length) {
      preview =
        typists.length === 1 ? `${conversation.nameOf(typists[0])} is typing…` : 'several people are typing…';
      previewState = 'typing';
    } else if (newestQueued) {
      preview = `You: ${newestQueued.body || (newestQueued.media_key ? 'Photo' : '')}`;
      previewState = newestQueued.state;
    } else if (last) {
      const text =
        last.kind === 'deleted' ? 'Message deleted' : last.kind === 'media' ? last.body || 'Photo' : last.body;
      const group = conversation.view?.kind === 'group';
      preview =
        last.sender_id === me
          ? `You: ${text}`
          : group && last.kind !== 'system'
            ? `${conversation.nameOf(last.sender_id)}: ${text}`
            : text;
    }
    const peers = conversation.peers(me);
    const title = conversation.title(me);
    // A direct conversation shows the other person; a group its title.
    const face = conversation.view?.kind === 'group' || !peers.length ? null : conversation.member(peers[0]);
    const card = conversation.view?.listing;
    return {
      id: conversation.id,
      title,
      listing: card?.title ? '' : (conversation.view?.listing_id ?? ''),
      card: card?.title ? card : null,
      avatarName: face ? conversation.nameOf(face.user_id) : title,
      avatarUrl: face?.avatar_url ?? '',
      online: peers.some((p) => this.client.presence.get(p) === true),
      muted: conversation.muted,
      preview,
      previewState,
      time: last?.created_at ?? conversation.view?.created_at ?? 0,
      timeText: shortTime(last?.created_at ?? conversation.view?.created_at, now),
      unread: conversation.unread(me),
      selected: this.selected === conversation.id,
    };
  }

  renderItem(s, el) {
    const badge =
      s.unread > 0
        ? h(
            'span',
            { class: 'badge', 'data-testid': 'unread' },
            s.unread > 99 ? '99+' : String(s.unread),
            h('span', { class: 'visually-hidden' }, s.unread === 1 ? ' unread message' : ' unread messages'),
          )
        : null;
    const link = h(
      'a',
      {
        href: `#/c/${encodeURIComponent(s.id)}`,
        class: 'conversation-link',
        'aria-current': s.selected ? 'page' : false,
      },
      avatar({ name: s.avatarName, url: s.avatarUrl, online: s.online }),
      h(
        'span',
        { class: 'conversation-text' },
        h(
          'span',
          { class: 'conversation-top' },
          h('span', { class: 'conversation-title' }, s.title),
          s.listing ? h('span', { class: 'listing' }, s.listing) : null,
          s.muted
            ? h(
                'span',
                { class: 'muted-icon', title: 'Muted', 'data-testid': 'muted' },
                h('span', { class: 'visually-hidden' }, 'muted'),
              )
            : null,
          h('time', { datetime: s.time ? new Date(s.time).toISOString() : false, title: longTime(s.time) }, s.timeText),
        ),
        s.card ? listingCard(s.card, { compact: true }) : null,
        h(
          'span',
          { class: 'conversation-bottom' },
          h('span', { class: 'preview', dataset: { state: s.previewState } }, s.preview || 'No messages yet'),
          badge,
        ),
      ),
    );
    const item = el ?? h('li', { class: 'conversation' });
    item.classList.toggle('unread', s.unread > 0);
    item.dataset.conversationId = s.id;
    return fill(item, link);
  }
}
