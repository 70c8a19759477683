// The service worker: shows web push notifications, and opens the chat when
// one is clicked. It has no `fetch` handler: pages load as they would
// without it (no offline cache, nothing between the page and the server).
//
// What arrives is what FCM hands a browser for an HTTP v1 message
// (Firebase's `MessagePayloadInternal`):
//   {"notification"?: {"title", "body", "image"?, "icon"?},
//    "data": {conversation_id, message_id, seq, sender_id, sender_name?,
//             sender_avatar_url?, title?, body?, link, badge?, silent?,
//             listing_title?, listing_photo_url?, ...},   (all strings)
//    "fcmOptions"?: {"link"}, "from", "fcmMessageId", "collapse_key"?}
// During the user's quiet hours the server sends no `notification` block and
// `data.silent = "true"`: the notification is then made from `data.title` /
// `data.body` and shown without sound or vibration.
//
// Rules: no notification while a window of ours is visible and focused (the
// open page shows the message itself); otherwise one per conversation
// (`tag` = conversation id, so a burst collapses into the newest). The app
// badge follows `data.badge`, the user's unread total.

/* eslint-env serviceworker */

self.addEventListener('install', () => self.skipWaiting());
self.addEventListener('activate', (event) => event.waitUntil(self.clients.claim()));

self.addEventListener('push', (event) => {
  let payload = null;
  try {
    payload = event.data ? event.data.json() : null;
  } catch {
    payload = null;
  }
  if (!payload || typeof payload !== 'object') return;
  event.waitUntil(onPush(payload));
});

self.addEventListener('notificationclick', (event) => {
  event.notification.close();
  event.waitUntil(openFromNotification(event.notification));
});

/** Shows what `payload` announces, unless someone is looking at the app. */
async function onPush(payload) {
  await setBadge(payload.data?.badge);
  if (await someoneIsLooking()) return;
  const shown = notificationFor(payload);
  if (shown) await self.registration.showNotification(shown.title, shown.options);
}

/**
 * The notification a push payload asks for: `{title, options}`, or null
 * when there is nothing to say. Pure (no globals), so it is easy to read
 * against the payload description above.
 */
function notificationFor(payload) {
  const data = payload.data && typeof payload.data === 'object' ? payload.data : {};
  const shown = payload.notification && typeof payload.notification === 'object' ? payload.notification : null;
  const title = shown?.title || data.title || data.sender_name || data.sender_id;
  const body = shown?.body ?? data.body ?? '';
  if (!title && !body) return null;
  const conversation = data.conversation_id;
  const link = payload.fcmOptions?.link || data.link || (conversation ? `/#/c/${encodeURIComponent(conversation)}` : '/');
  const options = {
    body,
    tag: conversation || payload.collapse_key || undefined,
    // A newer message in the same conversation replaces the banner; say so
    // again only when it is not a quiet-hours push.
    renotify: Boolean(conversation) && data.silent !== 'true',
    silent: data.silent === 'true',
    icon: shown?.icon || data.sender_avatar_url || '/favicon.svg',
    image: shown?.image || data.listing_photo_url || undefined,
    data: {
      conversation_id: conversation,
      message_id: data.message_id,
      link,
    },
  };
  for (const key of Object.keys(options)) if (options[key] === undefined) delete options[key];
  return { title: title || 'turbochat', options };
}

/** Our windows (this origin), controlled or not. */
async function ourWindows() {
  const windows = await self.clients.matchAll({ type: 'window', includeUncontrolled: true });
  return windows.filter((client) => new URL(client.url).origin === self.location.origin);
}

async function someoneIsLooking() {
  const windows = await ourWindows();
  return windows.some((client) => client.visibilityState === 'visible' && client.focused);
}

/**
 * A click: the chat opens in a window of ours if there is one (it is told
 * which conversation, and focused), else in a new window at the link.
 * Focusing and opening are allowed only while handling a click.
 */
async function openFromNotification(notification) {
  const { conversation_id: conversation, link } = notification.data ?? {};
  const windows = await ourWindows();
  const client =
    windows.find((c) => c.focused) ?? windows.find((c) => c.visibilityState === 'visible') ?? windows[0];
  if (client) {
    if (conversation) client.postMessage({ type: 'open-conversation', conversation_id: conversation });
    try {
      await client.focus();
    } catch {
      // Not from a real click (or the browser said no): told is enough.
    }
    return client;
  }
  const target = new URL(link || '/', self.location.origin);
  return self.clients.openWindow(target.href);
}

/** `navigator.setAppBadge` where the browser has it; `badge` is a string. */
async function setBadge(badge) {
  if (badge === undefined || !('setAppBadge' in self.navigator)) return;
  const count = Number.parseInt(badge, 10);
  try {
    if (Number.isFinite(count) && count > 0) await self.navigator.setAppBadge(count);
    else await self.navigator.clearAppBadge();
  } catch {
    // Not installed as an app, or not allowed: the badge is a nicety.
  }
}
