// The service worker (web/sw.js) against fakes of its globals: which push
// shows what, when nothing shows, what a click opens, the app badge.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import vm from 'node:vm';

const SOURCE = readFileSync(new URL('../../sw.js', import.meta.url), 'utf8');
const ORIGIN = 'https://chat.turbocar.test';

/** Objects made inside the worker's context have its own prototypes:
 * compare them as data. */
const plain = (value) => JSON.parse(JSON.stringify(value));

/** A window of ours (or of another origin, by `url`). */
function windowClient({ url = `${ORIGIN}/#/`, focused = false, visibilityState = 'visible' } = {}) {
  return {
    url,
    focused,
    visibilityState,
    messages: [],
    focusCalls: 0,
    postMessage(message) {
      this.messages.push(plain(message));
    },
    async focus() {
      this.focusCalls += 1;
      return this;
    },
  };
}

/** sw.js loaded in a fresh context; `push(payload)` and `click(n)` dispatch. */
function worker({ windows = [], badging = true } = {}) {
  const listeners = {};
  const shown = [];
  const badges = [];
  const opened = [];
  const self = {
    location: new URL(`${ORIGIN}/sw.js`),
    addEventListener: (type, listener) => (listeners[type] = listener),
    skipWaiting() {},
    clients: {
      matchAll: async () => windows,
      claim: async () => {},
      openWindow: async (url) => {
        opened.push(url);
        return windowClient({ url });
      },
    },
    registration: {
      showNotification: async (title, options) => {
        shown.push(plain({ title, ...options }));
      },
    },
    navigator: badging
      ? { setAppBadge: async (n) => badges.push(n), clearAppBadge: async () => badges.push(0) }
      : {},
  };
  vm.runInNewContext(SOURCE, { self, URL, console });
  const dispatch = async (type, event) => {
    const pending = [];
    listeners[type]({ ...event, waitUntil: (promise) => pending.push(promise) });
    await Promise.all(pending);
  };
  return {
    shown,
    badges,
    opened,
    push: (payload) => dispatch('push', { data: { json: () => (typeof payload === 'string' ? JSON.parse(payload) : payload) } }),
    click: (notification) => dispatch('notificationclick', { notification: { close() {}, ...notification } }),
  };
}

const CONVERSATION = '0194f6a4-0000-7000-8000-000000000001';

/** What FCM hands the browser for the server's push (with a notification). */
function payload(overrides = {}) {
  return {
    notification: { title: 'Bob Smith', body: 'Is the A4 still for sale?' },
    data: {
      conversation_id: CONVERSATION,
      message_id: 'm1',
      seq: '7',
      sender_id: 'bob',
      sender_name: 'Bob Smith',
      title: 'Bob Smith',
      body: 'Is the A4 still for sale?',
      link: `/#/c/${CONVERSATION}`,
      badge: '3',
      listing_title: 'Audi A4 Avant',
      listing_photo_url: 'https://photos.turbocar.test/a4.jpg',
    },
    from: '905412345678',
    fcmMessageId: 'f1',
    ...overrides,
  };
}

test('a push with no window of ours in front shows one notification per conversation', async () => {
  const sw = worker();
  await sw.push(payload());
  assert.deepEqual(sw.shown, [
    {
      title: 'Bob Smith',
      body: 'Is the A4 still for sale?',
      tag: CONVERSATION,
      renotify: true,
      silent: false,
      icon: '/favicon.svg',
      image: 'https://photos.turbocar.test/a4.jpg',
      data: { conversation_id: CONVERSATION, message_id: 'm1', link: `/#/c/${CONVERSATION}` },
    },
  ]);
  assert.deepEqual(sw.badges, [3]);
});

test('nothing shows while a window of ours is visible and focused; the badge still follows', async () => {
  const looking = worker({ windows: [windowClient({ focused: true })] });
  await looking.push(payload());
  assert.deepEqual(looking.shown, []);
  assert.deepEqual(looking.badges, [3]);

  // Visible but another app has the focus, hidden, or another site's tab
  // focused: it shows.
  for (const windows of [
    [windowClient({ focused: false })],
    [windowClient({ focused: true, visibilityState: 'hidden' })],
    [windowClient({ url: 'https://elsewhere.test/', focused: true })],
  ]) {
    const sw = worker({ windows });
    await sw.push(payload());
    assert.equal(sw.shown.length, 1, JSON.stringify(windows));
  }
});

test('quiet hours: no notification block, so the data says it, silently', async () => {
  const sw = worker();
  const quiet = payload({ notification: undefined });
  quiet.data = { ...quiet.data, silent: 'true', title: 'Bob Smith · Audi A4 Avant', body: 'Is it still for sale?' };
  delete quiet.notification;
  await sw.push(quiet);
  assert.equal(sw.shown.length, 1);
  const [shown] = sw.shown;
  assert.equal(shown.title, 'Bob Smith · Audi A4 Avant');
  assert.equal(shown.body, 'Is it still for sale?');
  assert.equal(shown.silent, true);
  assert.equal(shown.renotify, false);
  assert.equal(shown.tag, CONVERSATION);
});

test('the payload\'s own icon, image and link are used; a bare push falls back to the sender', async () => {
  const sw = worker();
  await sw.push(
    payload({
      notification: { title: 'Bob', body: 'Photo', icon: 'https://avatars.turbocar.test/bob.png', image: 'https://photos.turbocar.test/b.jpg' },
      fcmOptions: { link: `https://chat.turbocar.test/#/c/${CONVERSATION}` },
    }),
  );
  assert.equal(sw.shown[0].icon, 'https://avatars.turbocar.test/bob.png');
  assert.equal(sw.shown[0].image, 'https://photos.turbocar.test/b.jpg');
  assert.equal(sw.shown[0].data.link, `https://chat.turbocar.test/#/c/${CONVERSATION}`);

  const face = worker();
  await face.push(payload({ data: { ...payload().data, sender_avatar_url: 'https://avatars.turbocar.test/bob.png' } }));
  assert.equal(face.shown[0].icon, 'https://avatars.turbocar.test/bob.png');

  const bare = worker();
  await bare.push({ data: { conversation_id: CONVERSATION, sender_id: 'bob', link: '/#/c/x' } });
  assert.equal(bare.shown[0].title, 'bob');
  assert.equal(bare.shown[0].body, '');
  assert.equal('image' in bare.shown[0], false);
  assert.deepEqual(bare.badges, [], 'no badge field, no badge change');
});

test('junk is ignored; a zero badge clears; no badging API is fine', async () => {
  const sw = worker();
  await sw.push('"just a string"');
  await sw.push({ data: {} });
  assert.deepEqual(sw.shown, []);
  await sw.push(payload({ data: { ...payload().data, badge: '0' } }));
  assert.deepEqual(sw.badges, [0]);
  const plain = worker({ badging: false });
  await plain.push(payload());
  assert.equal(plain.shown.length, 1);
});

test('a click tells an open window which chat to show and focuses it, else opens the link', async () => {
  const other = windowClient({ url: 'https://elsewhere.test/', focused: true });
  const ours = windowClient({ focused: false });
  const sw = worker({ windows: [other, ours] });
  await sw.click({ data: { conversation_id: CONVERSATION, link: `/#/c/${CONVERSATION}` } });
  assert.deepEqual(ours.messages, [{ type: 'open-conversation', conversation_id: CONVERSATION }]);
  assert.equal(ours.focusCalls, 1);
  assert.deepEqual(other.messages, []);
  assert.deepEqual(sw.opened, []);

  const none = worker();
  await none.click({ data: { conversation_id: CONVERSATION, link: `/#/c/${CONVERSATION}` } });
  assert.deepEqual(none.opened, [`${ORIGIN}/#/c/${CONVERSATION}`]);
});
