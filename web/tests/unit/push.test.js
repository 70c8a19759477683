// WebPush (web/js/push.js) against a fake browser: what "Enable
// notifications" asks, loads, registers and tells the server, and when it
// stops short.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Api } from '../../js/api.js';
import { PushStatus, WebPush } from '../../js/push.js';
import { MemoryStorage } from './fakes.js';

const PUSH = {
  firebase: { apiKey: 'k', projectId: 'p', messagingSenderId: '42', appId: '1:42:web:x' },
  vapid_key: 'BKey',
  sdk_url: 'https://sdk.firebase.test/12.0.0',
};

/** A browser with Notification, a service worker container and the Push API. */
function browser({ push = PUSH, permission = 'default', answer = 'granted', tokens = ['t1'] } = {}) {
  const calls = [];
  const registration = { scope: 'https://chat.test/', active: {}, pushManager: { getSubscription: async () => null } };
  const env = {
    PushManager: class {},
    Notification: {
      permission,
      async requestPermission() {
        calls.push('requestPermission');
        env.Notification.permission = answer;
        return answer;
      },
    },
    navigator: {
      serviceWorker: {
        async register(url, options) {
          calls.push(['register', url, options]);
          return registration;
        },
        ready: Promise.resolve(registration),
        getRegistration: async () => registration,
      },
    },
    fetch: async (url) => {
      calls.push(['fetch', url]);
      return new Response(JSON.stringify({ push }), { status: 200 });
    },
  };
  const server = [];
  const api = new Api({
    token: 'jwt',
    baseUrl: 'http://router',
    fetch: async (url, init) => {
      server.push([init.method, new URL(url).pathname, init.body ? JSON.parse(init.body) : undefined]);
      return new Response('{}', { status: 200 });
    },
  });
  const importModule = async (url) => {
    calls.push(['import', url]);
    if (url.endsWith('/firebase-app.js')) return { initializeApp: (options, name) => ({ options, name }) };
    if (url.endsWith('/firebase-messaging.js')) {
      return {
        getMessaging: (app) => ({ app }),
        getToken: async (messaging, options) => {
          calls.push(['getToken', messaging.app.options.projectId, options.vapidKey, options.serviceWorkerRegistration === registration]);
          return tokens.shift();
        },
      };
    }
    throw new Error(`unexpected import ${url}`);
  };
  return { env, api, importModule, calls, server };
}

function webPush(b, storage = new MemoryStorage()) {
  return new WebPush({ api: b.api, storage, me: 'alice', env: b.env, importModule: b.importModule });
}

test('enabling: permission, the service worker at /, a token from the SDK, PUT /devices', async () => {
  const b = browser();
  const storage = new MemoryStorage();
  const push = webPush(b, storage);
  assert.equal(push.status, PushStatus.OFF);
  await push.enable();
  assert.equal(push.status, PushStatus.ON, push.message);
  assert.deepEqual(b.calls, [
    ['fetch', '/client-config.json'],
    'requestPermission',
    ['register', '/sw.js', { scope: '/' }],
    ['import', 'https://sdk.firebase.test/12.0.0/firebase-app.js'],
    ['import', 'https://sdk.firebase.test/12.0.0/firebase-messaging.js'],
    ['getToken', 'p', 'BKey', true],
  ]);
  assert.deepEqual(b.server, [['PUT', '/devices', { token: 't1', platform: 'web' }]]);
  assert.equal(storage.getItem('turbochat.push.alice'), 't1');
  // A reload knows it is on.
  assert.equal(webPush(b, storage).status, PushStatus.ON);
});

test('without [web.push] it says so and asks nothing', async () => {
  const b = browser({ push: null });
  const push = webPush(b);
  await push.enable();
  assert.equal(push.status, PushStatus.UNCONFIGURED);
  assert.match(push.message, /not configured/);
  assert.deepEqual(b.calls, [['fetch', '/client-config.json']]);
  assert.deepEqual(b.server, []);
});

test('a refusal registers nothing; a blocked site says where to change it', async () => {
  const b = browser({ answer: 'denied' });
  const push = webPush(b);
  await push.enable();
  assert.equal(push.status, PushStatus.BLOCKED);
  assert.match(push.message, /browser settings/);
  assert.deepEqual(b.server, []);
  assert.equal(webPush(browser({ permission: 'denied' })).status, PushStatus.BLOCKED);
  const dismissed = browser({ answer: 'default' });
  const later = webPush(dismissed);
  await later.enable();
  assert.equal(later.status, PushStatus.OFF);
});

test('a new token after a reload replaces the old one; turning off deletes it', async () => {
  const b = browser({ tokens: ['t1', 't2'] });
  const storage = new MemoryStorage();
  await webPush(b, storage).enable();
  const reloaded = webPush(b, storage);
  await reloaded.refresh();
  assert.deepEqual(b.server, [
    ['PUT', '/devices', { token: 't1', platform: 'web' }],
    ['PUT', '/devices', { token: 't2', platform: 'web' }],
    ['DELETE', '/devices/t1', undefined],
  ]);
  await reloaded.disable();
  assert.equal(reloaded.status, PushStatus.OFF);
  assert.deepEqual(b.server.at(-1), ['DELETE', '/devices/t2', undefined]);
  assert.equal(storage.getItem('turbochat.push.alice'), null);
});

test('a browser without the Push API is told apart', () => {
  const b = browser();
  delete b.env.PushManager;
  assert.equal(webPush(b).status, PushStatus.UNSUPPORTED);
});
