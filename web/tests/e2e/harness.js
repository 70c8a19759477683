// Helpers for the end-to-end tests: the router started by run.sh, dev
// tokens from its `mint-token`, Chromium from Debian, users signed in in
// their own browser contexts, polling with a deadline, screenshots, the
// node's admin API, and pictures from hosts under `.test` (no test lets the
// browser reach the internet).

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import zlib from 'node:zlib';
import { chromium } from 'playwright-core';

function required(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run the tests with web/tests/run.sh`);
  return value;
}

/** `http://127.0.0.1:PORT` of the router under test. */
export const BASE = required('TURBOCHAT_URL');
/** Its operator listener (`/metrics`). */
export const OPS = required('TURBOCHAT_OPS_URL');
const SCREENSHOTS = join(dirname(fileURLToPath(import.meta.url)), '..', 'screenshots');

/** A user id no other test (or earlier run on the same store) uses. */
export function user(name) {
  return `${name}-${randomBytes(3).toString('hex')}`;
}

/**
 * A dev token for `sub`, minted by the router binary with the dev config;
 * `name` and `picture` become the JWT's profile claims.
 */
export function mintToken(sub, { ttl = '1h', name, picture } = {}) {
  const args = ['--config', required('TURBOCHAT_CONFIG'), 'mint-token', '--sub', sub, '--ttl', ttl];
  if (name) args.push('--name', name);
  if (picture) args.push('--picture', picture);
  return execFileSync(required('TURBOCHAT_ROUTER_BIN'), args, { encoding: 'utf8' }).trim();
}

/** Headless Debian Chromium (Playwright's own builds cannot be downloaded here). */
export function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    headless: true,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
}

/**
 * A user in their own browser context (own localStorage), signed in through
 * the `#/login?token=` link or by pasting the token into the form; `name`
 * and `picture` go into their token, `locale` into the context.
 * Page errors and console errors are collected in `errors`.
 */
export async function signIn(browser, sub, { via = 'link', viewport, beforeLoad, name, picture, locale } = {}) {
  const token = mintToken(sub, { name, picture });
  const context = await browser.newContext({ viewport: viewport ?? { width: 1100, height: 720 }, locale });
  if (beforeLoad) await beforeLoad(context);
  const page = await context.newPage();
  const errors = watchErrors(page);
  if (via === 'link') {
    await page.goto(`${BASE}/#/login?token=${encodeURIComponent(token)}`);
  } else {
    await page.goto(`${BASE}/`);
    await page.getByLabel('Access token').fill(token);
    await page.getByRole('button', { name: 'Sign in' }).click();
  }
  await page.locator('.topbar .me', { hasText: sub }).waitFor();
  await online(page);
  return { sub, token, context, page, errors };
}

/** Collects uncaught page errors and console errors (CSP violations too). */
export function watchErrors(page) {
  const errors = [];
  page.on('pageerror', (err) => errors.push(`pageerror: ${err.message}`));
  page.on('console', (msg) => {
    if (msg.type() === 'error') errors.push(`console: ${msg.text()}`);
  });
  return errors;
}

/** Fails if the page logged errors, ignoring `allowed` patterns (e.g. the
 * WebSocket failures a test provokes on purpose). */
export function assertNoErrors(who, allowed = []) {
  const left = who.errors.filter((e) => !allowed.some((pattern) => pattern.test(e)));
  assert.deepEqual(left, [], `${who.sub}'s page logged errors`);
}

/** Waits until the connection indicator says online. */
export function online(page, timeout = 15_000) {
  return page.locator('[data-testid="connection"][data-status="online"]').waitFor({ timeout });
}

/** Polls `probe` until it returns a truthy value (returned), or fails with
 * the last value seen after `timeout` ms. */
export async function eventually(probe, { timeout = 15_000, interval = 100, message = 'condition' } = {}) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    last = await probe();
    if (last) return last;
    if (Date.now() > deadline) {
      assert.fail(`${message}: not true after ${timeout} ms (last: ${JSON.stringify(last)})`);
    }
    await new Promise((resolve) => setTimeout(resolve, interval));
  }
}

/** Texts of the message bubbles in the open chat, oldest first. */
export function messageBodies(page, selector = 'li.msg') {
  return page.locator(`${selector} .body`).allTextContents();
}

/**
 * A real PNG (a horizontal gradient from black to `rgb`), so the browser
 * can decode it.
 */
export function png(width = 96, height = 64, rgb = [255, 60, 200]) {
  const chunk = (type, data) => {
    const length = Buffer.alloc(4);
    length.writeUInt32BE(data.length);
    const body = Buffer.concat([Buffer.from(type, 'ascii'), data]);
    const crc = Buffer.alloc(4);
    crc.writeUInt32BE(zlib.crc32(body));
    return Buffer.concat([length, body, crc]);
  };
  const header = Buffer.alloc(13);
  header.writeUInt32BE(width, 0);
  header.writeUInt32BE(height, 4);
  header.set([8, 2, 0, 0, 0], 8); // 8-bit RGB
  const rows = [];
  for (let y = 0; y < height; y++) {
    const row = Buffer.alloc(1 + width * 3);
    for (let x = 0; x < width; x++) row.set(rgb.map((c, i) => (i === 0 ? Math.round((c * x) / width) : c)), 1 + x * 3);
    rows.push(row);
  }
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', header),
    chunk('IDAT', zlib.deflateSync(Buffer.concat(rows))),
    chunk('IEND', Buffer.alloc(0)),
  ]);
}

/**
 * Keeps a browser context off the internet: pictures from hosts under
 * `.test` (`https://photos.turbocar.test/a4.jpg`, avatars) are answered
 * with a generated PNG, each URL its own colour; any other request that is
 * not to the router under test is aborted and listed in `refused` (a test
 * may assert it stays empty). `hosts` adds handlers by URL prefix (e.g. a
 * stub of a script). Install before the page loads.
 */
export async function offline(context, { hosts = {} } = {}) {
  const net = { refused: [], pictures: [] };
  // Registered first, so it runs last (Playwright tries routes newest first).
  await context.route(
    (url) => url.origin !== new URL(BASE).origin,
    (route) => {
      net.refused.push(route.request().url());
      return route.abort('internetdisconnected');
    },
  );
  await context.route(
    (url) => url.protocol === 'https:' && url.hostname.endsWith('.test') && /\.(png|jpe?g|webp|gif)$/i.test(url.pathname),
    (route) => {
      const url = route.request().url();
      net.pictures.push(url);
      let hash = 0;
      for (const c of url) hash = (hash * 31 + c.charCodeAt(0)) >>> 0;
      const rgb = [120 + (hash % 136), 60 + ((hash >> 8) % 120), 80 + ((hash >> 16) % 160)];
      return route.fulfill({ status: 200, contentType: 'image/png', body: png(160, 120, rgb) });
    },
  );
  for (const [prefix, handler] of Object.entries(hosts)) {
    await context.route((url) => url.href.startsWith(prefix), handler);
  }
  return net;
}

/** The node's admin API, as an operator (`[[admin.operators]]` of run.sh). */
export async function admin(method, path, body) {
  const response = await fetch(required('TURBOCHAT_ADMIN_URL') + path, {
    method,
    headers: {
      authorization: `Bearer ${required('TURBOCHAT_ADMIN_SECRET')}`,
      'content-type': 'application/json',
    },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  assert.ok(response.ok, `admin ${method} ${path}: ${response.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

/** Saves `screenshots/{name}.png`. */
export async function screenshot(page, name) {
  mkdirSync(SCREENSHOTS, { recursive: true });
  await page.screenshot({ path: join(SCREENSHOTS, `${name}.png`) });
}

/** The HTTP API as a client would call it. */
export async function api(token, method, path, body) {
  const response = await fetch(BASE + path, {
    method,
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const json = await response.json();
  assert.ok(response.ok, `${method} ${path}: ${response.status} ${JSON.stringify(json)}`);
  return json;
}

/** Every message of a conversation from GET /history, oldest first. */
export async function history(token, conversation_id) {
  const all = [];
  let before;
  for (;;) {
    const query = new URLSearchParams({ conversation_id, limit: '200' });
    if (before) query.set('before_seq', String(before));
    const page = await api(token, 'GET', `/history?${query}`);
    all.push(...page.messages);
    if (!page.next_before_seq) break;
    before = page.next_before_seq;
  }
  return all.sort((a, b) => a.seq - b.seq);
}

/** The conversation id of the chat open in `page` (from `#/c/{id}`). */
export function openConversationId(page) {
  const match = new URL(page.url()).hash.match(/^#\/c\/(.+)$/);
  assert.ok(match, `no chat open at ${page.url()}`);
  return decodeURIComponent(match[1]);
}

/** Types a message in the open chat and sends it with Enter. */
export async function sendMessage(page, text) {
  const input = page.getByRole('textbox', { name: 'Message', exact: true });
  await input.fill(text);
  await input.press('Enter');
}

/** Starts a direct chat from the "New conversation" form; returns its id
 * (another chat than the one open, if any). */
export async function startChat(page, peer, listing) {
  const details = page.locator('details.new-chat');
  if ((await details.getAttribute('open')) === null) await details.locator('summary').click();
  await page.getByLabel('User id').fill(peer);
  if (listing) await page.getByLabel('Listing').fill(listing);
  const before = page.url();
  await page.getByRole('button', { name: 'Start chat' }).click();
  await page.waitForURL((url) => /#\/c\//.test(url.href) && url.href !== before);
  return openConversationId(page);
}

/**
 * Lets a test cut one browser context off the router's WebSocket and
 * restore it. Cutting closes the open socket (the page sees it drop) and
 * closes every new one at once (its reconnects fail) until `restore()`.
 * Chromium's offline emulation alone leaves an open WebSocket up, so this
 * goes through Playwright's WebSocket routing; it must be installed before
 * the page loads.
 */
export async function cuttableNetwork(context) {
  const net = {
    cut: false,
    /** Connection attempts refused while cut. */
    refused: 0,
    /** Page-side routes of sockets connected to the router. */
    open: new Set(),
    async cutOff() {
      net.cut = true;
      const open = [...net.open];
      net.open.clear();
      await Promise.all(open.map((ws) => ws.close({ code: 1006, reason: 'network cut by the test' }).catch(() => {})));
    },
    restore() {
      net.cut = false;
    },
  };
  await context.routeWebSocket(/\/ws(\?|$)/, (ws) => {
    if (net.cut) {
      net.refused += 1;
      return ws.close({ code: 1006, reason: 'network cut by the test' });
    }
    // Closing either side closes the other (no onClose handlers here).
    net.open.add(ws);
    ws.connectToServer();
  });
  return net;
}

/** A counter from the router's Prometheus `/metrics` (0 if not there yet). */
export async function metric(name) {
  const text = await (await fetch(`${OPS}/metrics`)).text();
  let total = 0;
  for (const line of text.split('\n')) {
    if (line.startsWith(`${name} `) || line.startsWith(`${name}{`)) total += Number(line.split(' ').pop());
  }
  return total;
}
