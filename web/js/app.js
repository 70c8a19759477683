// The page: routes (`#/`, `#/c/{id}`, `#/login?token=...`), sign-in, and
// the signed-in layout (top bar with connection state, chat list, open
// chat). Rendering is batched to one pass per animation frame however many
// frames arrive.
//
// Routes:
//   #/login?token=JWT[&next=/c/{id}]
//                      sign in with that token (which then leaves the URL)
//   #/c/{id}           open a conversation (what a push notification opens)
//   #/                 the chat list

import { ChatClient } from './client.js';
import { ChatView } from './chat-view.js';
import { h, fill } from './dom.js';
import { ListView } from './list-view.js';
import { renderLogin } from './login-view.js';
import { WebPush } from './push.js';
import { PushView } from './push-view.js';
import { clearToken, loadSession, parseToken, saveToken } from './session.js';
import { StatusView } from './status-view.js';
import { avatar } from './cards.js';

const storage = window.localStorage;
const root = document.getElementById('app');
/** Where to go after signing in (a deep link opened while signed out). */
const RETURN_KEY = 'turbochat.returnTo';

/** The signed-in layout, or null when signed out. */
let shell = null;

function parseRoute() {
  const hash = location.hash.replace(/^#/, '') || '/';
  const [path, query = ''] = hash.split('?');
  if (path === '/login') {
    const params = new URLSearchParams(query);
    return { name: 'login', token: params.get('token'), next: params.get('next') };
  }
  const chat = path.match(/^\/c\/([^/]+)$/);
  if (chat) return { name: 'chat', id: decodeURIComponent(chat[1]) };
  return { name: 'home' };
}

function onRoute() {
  const route = parseRoute();
  if (route.name === 'login' && route.token) {
    // Never leave a token in the address bar or the history.
    history.replaceState(null, '', '#/login');
    if (route.next?.startsWith('/c/')) sessionStorage.setItem(RETURN_KEY, `#${route.next}`);
    const error = signIn(route.token);
    if (error) showLogin(error);
    return;
  }
  const session = loadSession(storage);
  if (!session || session.error) {
    if (route.name === 'chat') sessionStorage.setItem(RETURN_KEY, location.hash);
    showLogin(session?.error);
    return;
  }
  if (route.name === 'login') {
    history.replaceState(null, '', '#/');
  }
  if (!shell || shell.client.token !== session.token) {
    shell?.destroy();
    shell = new Shell(session);
  }
  shell.show(route.name === 'chat' ? route.id : null);
}

/** Signs in with a pasted or linked token; returns an error or null. */
function signIn(input) {
  const parsed = parseToken(input);
  if (parsed.error) return parsed.error;
  saveToken(storage, parsed.token);
  const back = sessionStorage.getItem(RETURN_KEY);
  sessionStorage.removeItem(RETURN_KEY);
  const target = back ?? '#/';
  if (location.hash !== target) {
    history.replaceState(null, '', target);
  }
  onRoute();
  return null;
}

function showLogin(error) {
  shell?.destroy();
  shell = null;
  document.title = 'Sign in · turbochat';
  root.removeAttribute('aria-busy');
  renderLogin(root, { error, onSignIn: (token) => signIn(token) });
}

function signOut(reason) {
  // This browser's push token goes with the session (best effort: the
  // request may fail, e.g. offline or with an expired token).
  shell?.push.forget().catch(() => {});
  clearToken(storage);
  if (parseRoute().name === 'chat') sessionStorage.setItem(RETURN_KEY, location.hash);
  history.replaceState(null, '', '#/login');
  showLogin(reason);
}

class Shell {
  constructor(session) {
    const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
    this.client = new ChatClient({
      token: session.token,
      userId: session.claims.sub,
      storage,
      wsUrl: (token) => `${proto}//${location.host}/ws?token=${encodeURIComponent(token)}`,
    });
    this.chat = null;
    this.pending = false;
    this.status = new StatusView(this.client.connection);
    this.push = new WebPush({ api: this.client.api, storage, me: this.client.me, env: window });
    this.pushView = new PushView(this.push);
    const { name, picture } = session.claims;
    this.list = new ListView(this.client, { onCreated: (id) => (location.hash = `#/c/${encodeURIComponent(id)}`) });
    this.main = h('main', { class: 'main', id: 'main' });
    this.toasts = h('div', { class: 'toasts', role: 'status', 'aria-live': 'polite' });
    this.el = h(
      'div',
      { class: 'shell', dataset: { view: 'list' } },
      h(
        'header',
        { class: 'topbar' },
        h('a', { href: '#/', class: 'brand' }, h('span', { class: 'logo', 'aria-hidden': 'true' }), 'turbochat'),
        this.status.el,
        h(
          'div',
          { class: 'account' },
          this.pushView.el,
          typeof name === 'string' && name ? avatar({ name, url: picture, size: 'small' }) : null,
          h(
            'span',
            { class: 'me' },
            h('span', { class: 'visually-hidden' }, 'Signed in as '),
            typeof name === 'string' && name ? [name, ' ', h('span', { class: 'me-id' }, this.client.me)] : this.client.me,
          ),
          h('button', { type: 'button', class: 'link', onclick: () => signOut() }, 'Sign out'),
        ),
      ),
      h('div', { class: 'panes' }, this.list.el, this.main),
      this.toasts,
    );
    root.replaceChildren(this.el);
    root.removeAttribute('aria-busy');

    this.client.addEventListener('change', () => this.schedule());
    this.client.addEventListener('notice', (e) => this.toast(e.detail.message));
    this.client.addEventListener('signedout', (e) => signOut(e.detail.reason));
    this.listeners = {
      online: () => this.client.connection.reconnectNow(),
      offline: () => this.client.connection.probe(3000),
      visibilitychange: () => {
        if (document.visibilityState === 'visible') this.client.connection.reconnectNow();
      },
      storage: (event) => {
        if (event.key === this.client.outbox.key) this.client.outboxChanged();
      },
    };
    window.addEventListener('online', this.listeners.online);
    window.addEventListener('offline', this.listeners.offline);
    window.addEventListener('storage', this.listeners.storage);
    document.addEventListener('visibilitychange', this.listeners.visibilitychange);
    this.client.start();
    this.push.refresh();
  }

  /** Shows a conversation, or the list (and an empty main pane) for null. */
  show(id) {
    if (this.chat?.id !== id) {
      this.chat?.destroy();
      this.chat = null;
      if (id) {
        this.chat = new ChatView(this.client, id);
        fill(this.main, this.chat.el);
      } else {
        document.title = 'turbochat';
        fill(
          this.main,
          h(
            'div',
            { class: 'empty' },
            h('p', {}, 'Pick a chat on the left, or start a new one.'),
          ),
        );
      }
    }
    this.el.dataset.view = id ? 'chat' : 'list';
    this.list.selected = id;
    this.render();
    if (this.chat) this.chat.focus();
  }

  schedule() {
    if (this.pending) return;
    this.pending = true;
    requestAnimationFrame(() => {
      this.pending = false;
      this.render();
    });
  }

  render() {
    this.status.render();
    this.list.render();
    this.chat?.render();
    if (!this.chat) document.title = 'turbochat';
    this.renderBadge();
  }

  /** The installed app's badge: the unread total (the service worker sets
   * it from pushes while no page is open; reading here brings it down). */
  renderBadge() {
    if (!this.client.list.loaded || !('setAppBadge' in navigator)) return;
    const total = this.client.unreadTotal();
    if (total === this.badge) return;
    this.badge = total;
    // A nicety: refused when the page is not an installed app, say.
    Promise.resolve()
      .then(() => (total > 0 ? navigator.setAppBadge(total) : navigator.clearAppBadge()))
      .catch(() => {});
  }

  toast(message) {
    const item = h('p', { class: 'toast' }, message);
    this.toasts.append(item);
    setTimeout(() => item.remove(), 6000);
  }

  destroy() {
    this.client.stop();
    this.chat?.destroy();
    this.status.destroy();
    this.pushView.destroy();
    window.removeEventListener('online', this.listeners.online);
    window.removeEventListener('offline', this.listeners.offline);
    window.removeEventListener('storage', this.listeners.storage);
    document.removeEventListener('visibilitychange', this.listeners.visibilitychange);
  }
}

// A click on a notification, with a window of ours already open: the
// service worker tells it which chat to show (sw.js).
if ('serviceWorker' in navigator) {
  navigator.serviceWorker.addEventListener('message', (event) => {
    const { type, conversation_id: id } = event.data ?? {};
    if (type === 'open-conversation' && typeof id === 'string' && id) {
      location.hash = `#/c/${encodeURIComponent(id)}`;
    }
  });
  navigator.serviceWorker.startMessages();
}

window.addEventListener('hashchange', onRoute);
onRoute();
