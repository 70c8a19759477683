// Web push on this device, without the DOM: what the "Enable notifications"
// button does.
//
// Enabling: `GET /client-config.json` (the operator's `[web.push]`; without
// it push is not configured here) → `Notification.requestPermission()` →
// register `/sw.js` (scope `/`) → the Firebase JS SDK, imported from the
// configured `sdk_url`, mints an FCM token for that registration
// (`getToken(messaging, {vapidKey, serviceWorkerRegistration})`) →
// `PUT /devices {"token", "platform": "web"}`. The token is kept in
// localStorage per user, so a reload knows push is on and registers the
// token again (the SDK may hand out a new one); turning off or signing out
// deletes it from the server.

/** `status` values. */
export const PushStatus = Object.freeze({
  /** No Notification, service worker or Push API in this browser. */
  UNSUPPORTED: 'unsupported',
  OFF: 'off',
  WORKING: 'working',
  ON: 'on',
  /** The user (or the browser's settings) said no. */
  BLOCKED: 'blocked',
  /** The server has no `[web.push]`. */
  UNCONFIGURED: 'unconfigured',
  FAILED: 'failed',
});

export class WebPush extends EventTarget {
  /**
   * @param {{
   *   api: import('./api.js').Api,
   *   storage: Storage,
   *   me: string,
   *   env?: any,                       window, or a fake in tests
   *   importModule?: (url: string) => Promise<any>,
   * }} options
   */
  constructor({ api, storage, me, env = globalThis, importModule = (url) => import(url) }) {
    super();
    this.api = api;
    this.storage = storage;
    this.key = `turbochat.push.${me}`;
    this.env = env;
    this.importModule = importModule;
    /** The Firebase app, once initialised (one per page). */
    this.app = null;
    this.status = PushStatus.OFF;
    /** Said next to the button: why it is off, what went wrong. */
    this.message = '';
    if (!this.supported()) this.set(PushStatus.UNSUPPORTED, '');
    else if (this.env.Notification.permission === 'denied') this.set(PushStatus.BLOCKED, BLOCKED_MESSAGE);
    else if (this.storedToken() && this.env.Notification.permission === 'granted') this.set(PushStatus.ON, '');
  }

  supported() {
    const env = this.env;
    return Boolean(env.Notification && env.navigator?.serviceWorker && env.PushManager);
  }

  storedToken() {
    return this.storage.getItem(this.key);
  }

  set(status, message = '') {
    this.status = status;
    this.message = message;
    this.dispatchEvent(new CustomEvent('change'));
  }

  /** The button: asks for permission and registers this browser. */
  async enable() {
    if (this.status === PushStatus.UNSUPPORTED || this.status === PushStatus.WORKING) return;
    this.set(PushStatus.WORKING, 'Asking for permission…');
    try {
      const push = await this.config();
      if (!push) {
        this.set(PushStatus.UNCONFIGURED, 'Push notifications are not configured on this server.');
        return;
      }
      const permission = await this.env.Notification.requestPermission();
      if (permission !== 'granted') {
        this.set(
          permission === 'denied' ? PushStatus.BLOCKED : PushStatus.OFF,
          permission === 'denied' ? BLOCKED_MESSAGE : 'Notifications stay off: permission was not given.',
        );
        return;
      }
      this.set(PushStatus.WORKING, 'Registering this browser…');
      await this.register(push);
      this.set(PushStatus.ON, '');
    } catch (err) {
      this.set(PushStatus.FAILED, `Could not enable notifications: ${err.message}`);
    }
  }

  /**
   * After a reload with push on: mint the token again and register it if it
   * changed (FCM may rotate it). Quiet: a failure only says so.
   */
  async refresh() {
    if (this.status !== PushStatus.ON) return;
    try {
      const push = await this.config();
      if (!push) {
        // The operator took push away: nothing will come any more.
        await this.forget();
        this.set(PushStatus.UNCONFIGURED, 'Push notifications are not configured on this server.');
        return;
      }
      await this.register(push);
    } catch (err) {
      this.set(PushStatus.ON, `Notifications may not arrive: ${err.message}`);
    }
  }

  /** The button again: this browser gets no more pushes. */
  async disable() {
    this.set(PushStatus.WORKING, '');
    try {
      await this.forget();
      this.set(PushStatus.OFF, '');
    } catch (err) {
      this.set(PushStatus.ON, `Could not turn notifications off: ${err.message}`);
    }
  }

  /** Sign-out: the server forgets this browser's token (best effort). */
  async forget() {
    const token = this.storedToken();
    this.storage.removeItem(this.key);
    if (!token) return;
    await this.api.deleteDevice(token);
    const registration = await this.env.navigator.serviceWorker.getRegistration('/');
    const subscription = await registration?.pushManager?.getSubscription?.();
    await subscription?.unsubscribe().catch(() => {});
  }

  /** `[web.push]` as the router tells it, or null. */
  async config() {
    const response = await this.env.fetch('/client-config.json', { cache: 'no-store' });
    if (!response.ok) throw new Error(`client config: HTTP ${response.status}`);
    const config = await response.json();
    return config?.push ?? null;
  }

  /** Registers the service worker, mints the FCM token, tells the server. */
  async register(push) {
    const container = this.env.navigator.serviceWorker;
    await container.register('/sw.js', { scope: '/' });
    // `getToken` subscribes through the active worker.
    const registration = await container.ready;
    const sdk = String(push.sdk_url).replace(/\/+$/, '');
    const [firebaseApp, messaging] = await Promise.all([
      this.importModule(`${sdk}/firebase-app.js`),
      this.importModule(`${sdk}/firebase-messaging.js`),
    ]);
    this.app ??= firebaseApp.initializeApp(push.firebase, 'turbochat-web-push');
    const token = await messaging.getToken(messaging.getMessaging(this.app), {
      vapidKey: push.vapid_key,
      serviceWorkerRegistration: registration,
    });
    if (typeof token !== 'string' || !token) throw new Error('Firebase handed out no token');
    const previous = this.storedToken();
    await this.api.registerDevice(token, 'web');
    this.storage.setItem(this.key, token);
    if (previous && previous !== token) await this.api.deleteDevice(previous).catch(() => {});
    return token;
  }
}

const BLOCKED_MESSAGE = 'Notifications are blocked for this site in your browser settings.';
