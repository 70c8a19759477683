// Web push, end to end with the server's real push: alice enables
// notifications (permission, service worker, an FCM token from a stub of
// the Firebase JS SDK, `PUT /devices`), closes her tab, bob writes; the
// node's file push backend writes the FCM v1 message it would have sent to
// alice's token; the test turns it into what FCM hands a browser and
// delivers it to her service worker through DevTools, as the push service
// would. The notification shows; nothing shows while she looks at the app;
// its click opens the chat.
//
// Never online: the SDK's host is under `.test` and answered by a stub
// module; listing photos likewise (harness `offline`).

import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { after, before, test } from 'node:test';
import {
  BASE,
  admin,
  api,
  assertNoErrors,
  eventually,
  launch,
  offline,
  screenshot,
  sendMessage,
  signIn,
  startChat,
  user,
  watchErrors,
} from './harness.js';

const SDK_URL = process.env.TURBOCHAT_WEB_PUSH_SDK_URL;
const SENDER_ID = process.env.TURBOCHAT_WEB_PUSH_SENDER_ID;
const PUSH_FILE = process.env.TURBOCHAT_PUSH_FILE;

let browser;
before(async () => {
  browser = await launch();
});
after(async () => {
  await browser?.close();
});

/**
 * A stand-in for the Firebase JS SDK's two ES modules, served at
 * `{sdk_url}/firebase-app.js` and `{sdk_url}/firebase-messaging.js`: the
 * functions the client calls, `getToken` answering `token` once it is
 * given a VAPID key and an active service worker. What it was given is
 * left in `globalThis.firebaseStub` for the test to check.
 */
function firebaseStub(token) {
  const modules = {
    'firebase-app.js': `
      export function initializeApp(options, name = '[DEFAULT]') {
        globalThis.firebaseStub = { ...globalThis.firebaseStub, options, name };
        return { name, options };
      }`,
    'firebase-messaging.js': `
      export function getMessaging(app) { return { app }; }
      export async function getToken(messaging, { vapidKey, serviceWorkerRegistration } = {}) {
        if (!vapidKey) throw new Error('getToken: no vapidKey');
        if (!serviceWorkerRegistration?.active) throw new Error('getToken: no active service worker');
        globalThis.firebaseStub = {
          ...globalThis.firebaseStub,
          vapidKey,
          scope: serviceWorkerRegistration.scope,
          calls: (globalThis.firebaseStub?.calls ?? 0) + 1,
        };
        return ${JSON.stringify(token)};
      }`,
  };
  return {
    [`${SDK_URL}/`]: (route) => {
      const name = new URL(route.request().url()).pathname.split('/').pop();
      if (!modules[name]) return route.fulfill({ status: 404, body: 'not in the stub' });
      return route.fulfill({
        status: 200,
        contentType: 'text/javascript',
        // A cross-origin module script needs CORS.
        headers: { 'access-control-allow-origin': '*' },
        body: modules[name],
      });
    },
  };
}

/**
 * What FCM hands a browser for an HTTP v1 message (the Firebase SDK's
 * `MessagePayloadInternal`), built from the `message` of a line of the
 * node's file push backend (`{"at", "message": <FCM v1 message>}`):
 *
 * - `notification`: `message.notification` (title, body, image) with
 *   `message.webpush.notification` over it (icon, image...); absent when the
 *   message has none (quiet hours: data only)
 * - `data`: `message.data` with `message.webpush.data` over it
 * - `fcmOptions`: `{link}` from `message.webpush.fcm_options.link`, if set
 * - `from`: the Firebase project's sender id; `fcmMessageId`: FCM's id for
 *   the delivery (made up here)
 * - `collapse_key`: `message.webpush.headers.Topic`, if set (FCM's web
 *   collapse key; `android.collapse_key` and `apns` stay on their platforms)
 */
function fcmToBrowser(message, senderId = SENDER_ID) {
  const webpush = message.webpush ?? {};
  const notification =
    message.notification || webpush.notification ? { ...message.notification, ...webpush.notification } : undefined;
  const link = webpush.fcm_options?.link ?? webpush.fcmOptions?.link;
  const payload = {
    data: { ...message.data, ...webpush.data },
    from: senderId,
    fcmMessageId: randomUUID(),
  };
  if (notification) payload.notification = notification;
  if (link) payload.fcmOptions = { link };
  if (webpush.headers?.Topic) payload.collapse_key = webpush.headers.Topic;
  return payload;
}

/** FCM v1 messages the node wrote for `token` so far. */
function pushesTo(token) {
  let text = '';
  try {
    text = readFileSync(PUSH_FILE, 'utf8');
  } catch {
    return [];
  }
  return text
    .split('\n')
    .filter(Boolean)
    .map((line) => JSON.parse(line).message)
    .filter((message) => message.token === token);
}

/**
 * Delivers payloads to the context's service worker as the push service
 * would, through DevTools (`ServiceWorker.deliverPushMessage`), each call
 * returning once the worker has handled it (DevTools' "Push event
 * completed", recorded as a background-service event) with its status. The
 * session is opened on `page`, which must stay open: a blank tab, so that
 * closing the app's tab does not end it.
 */
async function pushChannel(page) {
  const cdp = await page.context().newCDPSession(page);
  const registrations = new Map();
  cdp.on('ServiceWorker.workerRegistrationUpdated', ({ registrations: list }) => {
    for (const r of list) {
      if (r.isDeleted) registrations.delete(r.registrationId);
      else registrations.set(r.registrationId, r);
    }
  });
  const completed = [];
  cdp.on('BackgroundService.backgroundServiceEventReceived', ({ backgroundServiceEvent: event }) => {
    if (event.eventName === 'Push event completed') completed.push(event);
  });
  await cdp.send('ServiceWorker.enable');
  await cdp.send('BackgroundService.startObserving', { service: 'pushMessaging' });
  await cdp.send('BackgroundService.setRecording', { shouldRecord: true, service: 'pushMessaging' });
  const { registrationId } = await eventually(
    () => [...registrations.values()].find((r) => r.scopeURL === `${BASE}/`),
    { message: 'the service worker registration for /' },
  );
  return {
    async deliver(payload) {
      const seen = completed.length;
      await cdp.send('ServiceWorker.deliverPushMessage', {
        origin: BASE,
        registrationId,
        data: JSON.stringify(payload),
      });
      const done = await eventually(() => completed[seen], { message: 'the push event to complete' });
      return done.eventMetadata.find((m) => m.key === 'Status')?.value;
    },
  };
}

/** The notifications the service worker shows now. */
function shownNotifications(worker) {
  return worker.evaluate(async () =>
    (await self.registration.getNotifications()).map((n) => ({
      title: n.title,
      body: n.body,
      tag: n.tag,
      icon: n.icon,
      image: n.image,
      silent: n.silent,
      data: n.data,
    })),
  );
}

test('alice enables notifications; bob writes while her tab is closed; the server\'s push shows and its click opens the chat', async () => {
  const aliceId = user('alice');
  const fcmToken = `web-${aliceId}-${randomUUID()}`;
  let net;
  const alice = await signIn(browser, aliceId, {
    name: 'Alice Martin',
    beforeLoad: async (context) => {
      net = await offline(context, { hosts: firebaseStub(fcmToken) });
      await context.grantPermissions(['notifications'], { origin: BASE });
    },
  });
  const bob = await signIn(browser, user('bob'), {
    name: 'Bob Smith',
    beforeLoad: (context) => offline(context),
  });
  const context = alice.context;
  // A blank tab for DevTools: it stays when the app's tab closes.
  const blank = await context.newPage();

  // The button, then a click: permission (granted by the test), the
  // service worker, a token from the (stub) SDK, PUT /devices.
  const a = alice.page;
  const button = a.getByTestId('notifications');
  await button.filter({ hasText: 'Enable notifications' }).waitFor();
  await screenshot(a, 'push-enable-button');
  await button.click();
  await a.getByTestId('notifications-note').filter({ hasText: 'Notifications on' }).waitFor();
  await button.filter({ hasText: 'Turn off notifications' }).waitFor();
  await screenshot(a, 'push-enabled');
  const { devices } = await api(alice.token, 'GET', '/devices');
  assert.deepEqual(
    devices.map((d) => [d.token, d.platform]),
    [[fcmToken, 'web']],
  );
  const stub = await a.evaluate(() => globalThis.firebaseStub);
  assert.equal(stub.options.projectId, 'turbochat-web-tests');
  assert.equal(stub.options.messagingSenderId, SENDER_ID);
  assert.match(stub.vapidKey, /^BTurbochatWebTests/);
  assert.equal(stub.scope, `${BASE}/`);
  const worker = await eventually(() => context.serviceWorkers().find((w) => w.url() === `${BASE}/sw.js`), {
    message: 'the service worker',
  });
  const channel = await pushChannel(blank);

  // Alice closes her tab. Later bob writes to her about a listing whose
  // card the operator set: with no session of hers subscribed to the new
  // conversation, the message is pushed to her token.
  await a.close();
  const id = await startChat(bob.page, aliceId, 'audi-a4-2019');
  await admin('PUT', `/admin/conversations/${id}/listing`, {
    title: 'Audi A4 Avant 2.0 TDI, 2019',
    price: { amount_minor: 1890000, currency: 'EUR' },
    photo_url: 'https://photos.turbocar.test/a4.jpg',
  });
  await sendMessage(bob.page, 'Is the A4 still for sale?');
  const [message] = await eventually(
    () => {
      const pushes = pushesTo(fcmToken).filter((m) => m.data?.conversation_id === id);
      return pushes.length ? pushes : null;
    },
    { message: 'a push to alice\'s web token in the push file' },
  );
  assert.equal(message.data.sender_id, bob.sub);
  const payload = fcmToBrowser(message);

  // Delivered with no window of ours open: it shows, tagged with the
  // conversation, opening the chat.
  assert.equal(await channel.deliver(payload), 'Success');
  const [shown, ...more] = await shownNotifications(worker);
  assert.deepEqual(more, []);
  assert.equal(shown.title, payload.notification?.title ?? payload.data.title);
  // The sender's name (else id), then the listing's title when the
  // conversation has a card (as the server composes it).
  assert.equal(shown.title, 'Bob Smith · Audi A4 Avant 2.0 TDI, 2019');
  assert.equal(shown.body, 'Is the A4 still for sale?');
  assert.equal(shown.tag, id);
  assert.equal(shown.silent, false);
  assert.equal(shown.data.conversation_id, id);
  assert.match(shown.data.link, new RegExp(`/#/c/${id}$`));
  const photo = payload.notification?.image ?? payload.data.listing_photo_url;
  if (photo) {
    assert.equal(shown.image, photo);
    // Fetched by the worker from the .test host, answered by the test.
    await eventually(() => net.pictures.includes(photo), { message: 'the notification image fetched' });
  }

  // A click, with a tab of ours open on the list: that tab shows the chat.
  // (Chromium has no DevTools command to click a notification, and the
  // worker may focus or open windows only inside a real click: the test
  // runs the worker's click handling, `openFromNotification`, on the shown
  // notification; the tab is told which chat to show and shows it.)
  const again = await context.newPage();
  const againErrors = watchErrors(again);
  await again.goto(`${BASE}/#/`);
  await again.locator(`li.conversation[data-conversation-id="${id}"]`).waitFor();
  await worker.evaluate(async (tag) => {
    const [notification] = await self.registration.getNotifications({ tag });
    notification.close();
    // eslint-disable-next-line no-undef
    await openFromNotification(notification);
  }, id);
  await again.waitForURL(new RegExp(`#/c/${id}$`));
  await again.locator(`section.chat[data-conversation-id="${id}"] li.msg.theirs`, { hasText: 'still for sale' }).waitFor();
  assert.deepEqual(await shownNotifications(worker), []);

  // While she looks at the chat (visible, focused), a push shows nothing:
  // the open page has the message already.
  assert.equal(await again.evaluate(() => document.visibilityState === 'visible' && document.hasFocus()), true);
  assert.equal(await channel.deliver(payload), 'Success');
  assert.deepEqual(await shownNotifications(worker), []);

  assert.deepEqual(net.refused, [], 'requests that would have left the machine');
  assertNoErrors(alice);
  assertNoErrors({ sub: `${alice.sub} (second tab)`, errors: againErrors });
  assertNoErrors(bob);
});

test('without [web.push] the button says push is not configured', async () => {
  const alice = await signIn(browser, user('alice'), {
    beforeLoad: async (context) => {
      await offline(context);
      await context.grantPermissions(['notifications'], { origin: BASE });
      // This router has web push configured (run.sh); answer as one
      // without it does (`web_push::tests` checks the router's answer).
      await context.route(`${BASE}/client-config.json`, (route) =>
        route.fulfill({ status: 200, contentType: 'application/json', body: '{"push":null}' }),
      );
    },
  });
  const a = alice.page;
  await a.getByTestId('notifications').click();
  await a.getByTestId('notifications-note').filter({ hasText: 'not configured on this server' }).waitFor();
  await screenshot(a, 'push-not-configured');
  const { devices } = await api(alice.token, 'GET', '/devices');
  assert.deepEqual(devices, []);
  assert.equal(await a.evaluate(async () => (await navigator.serviceWorker.getRegistrations()).length), 0);
  assertNoErrors(alice);
});

test('the router tells the page its web push settings and allows the SDK\'s origin only for scripts', async () => {
  const config = await (await fetch(`${BASE}/client-config.json`)).json();
  assert.equal(config.push.sdk_url, SDK_URL);
  assert.equal(config.push.firebase.messagingSenderId, SENDER_ID);
  const page = await fetch(`${BASE}/`);
  const csp = page.headers.get('content-security-policy');
  assert.match(csp, new RegExp(`script-src 'self' ${new URL(SDK_URL).origin};`));
  assert.match(csp, /img-src 'self' data: blob: https:;/);
  const sw = await fetch(`${BASE}/sw.js`);
  assert.equal(sw.status, 200);
  assert.match(sw.headers.get('content-type'), /javascript/);
});
