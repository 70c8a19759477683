// Deep links: `/#/c/{id}` opens that chat (what a push notification tap
// does), signed in or not; `#/login?token=...&next=/c/{id}` signs in and
// opens it.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import {
  BASE,
  api,
  assertNoErrors,
  history,
  launch,
  messageBodies,
  mintToken,
  screenshot,
  sendMessage,
  signIn,
  user,
  watchErrors,
} from './harness.js';

let browser;
before(async () => {
  browser = await launch();
});
after(async () => {
  await browser?.close();
});

/** Alice with two chats (bob about car-1, carol about car-2), one message each. */
async function twoChats() {
  const alice = user('alice');
  const token = mintToken(alice);
  const bob = user('bob');
  const carol = user('carol');
  const withBob = await api(token, 'POST', '/conversations', { kind: 'direct', peer_id: bob, listing_id: 'car-1' });
  const withCarol = await api(token, 'POST', '/conversations', { kind: 'direct', peer_id: carol, listing_id: 'car-2' });
  const bobToken = mintToken(bob);
  const carolToken = mintToken(carol);
  return { alice, token, bob, carol, bobToken, carolToken, withBob: withBob.conversation_id, withCarol: withCarol.conversation_id };
}

test('a deep link opens the right chat in a new tab', async () => {
  const chats = await twoChats();
  const alice = await signIn(browser, chats.alice);
  // Bob writes into the first chat, so it is the most recent one.
  const bob = await signIn(browser, chats.bob);
  await bob.page.goto(`${BASE}/#/c/${chats.withBob}`);
  await sendMessage(bob.page, 'Hi, about the car-1 listing');
  await bob.page.locator('li.msg.mine[data-state="sent"]').waitFor();

  // A notification for carol's chat opens a new tab on its link.
  const tab = await alice.context.newPage();
  const errors = watchErrors(tab);
  await tab.goto(`${BASE}/#/c/${chats.withCarol}`);
  const chat = tab.locator(`section.chat[data-conversation-id="${chats.withCarol}"]`);
  await chat.waitFor();
  await tab.locator('#chat-title', { hasText: chats.carol }).waitFor();
  await tab.locator('.chat-sub', { hasText: 'About car-2' }).waitFor();
  await tab
    .locator(`li.conversation[data-conversation-id="${chats.withCarol}"] a[aria-current="page"]`)
    .waitFor();
  assert.deepEqual(await messageBodies(tab), []);
  // The composer has focus, ready to answer.
  assert.equal(await tab.evaluate(() => document.activeElement?.id), 'composer-input');
  await sendMessage(tab, 'Hello carol');
  await tab.locator('li.msg.mine[data-state="sent"]', { hasText: 'Hello carol' }).waitFor();
  assert.deepEqual((await history(chats.token, chats.withCarol)).map((m) => m.body), ['Hello carol']);
  assert.deepEqual((await history(chats.token, chats.withBob)).map((m) => m.body), ['Hi, about the car-1 listing']);

  // Following the other chat's link switches to it.
  await tab.goto(`${BASE}/#/c/${chats.withBob}`);
  await tab.locator('#chat-title', { hasText: chats.bob }).waitFor();
  await tab.locator('li.msg.theirs', { hasText: 'car-1 listing' }).waitFor();
  await screenshot(tab, 'deeplink-open-chat');
  assert.deepEqual(errors, []);
  assertNoErrors(alice);
  assertNoErrors(bob);
  await alice.context.close();
  await bob.context.close();
});

test('a deep link while signed out asks for a token, then opens the chat', async () => {
  const chats = await twoChats();
  const context = await browser.newContext({ viewport: { width: 420, height: 760 } });
  const page = await context.newPage();
  const errors = watchErrors(page);
  await page.goto(`${BASE}/#/c/${chats.withCarol}`);
  await page.getByLabel('Access token').waitFor();
  await screenshot(page, 'deeplink-sign-in');

  // A bad token is refused with a reason; the right one opens the chat.
  await page.getByLabel('Access token').fill('not-a-token');
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.locator('#token-error', { hasText: 'not a JWT' }).waitFor();
  await page.getByLabel('Access token').fill(chats.token);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.locator(`section.chat[data-conversation-id="${chats.withCarol}"]`).waitFor();
  await page.locator('#chat-title', { hasText: chats.carol }).waitFor();
  // Narrow screen: only the chat shows, with a way back to the list.
  assert.equal(await page.locator('nav.sidebar').isVisible(), false);
  await screenshot(page, 'deeplink-narrow-chat');
  await page.getByRole('link', { name: 'Back to chats' }).click();
  await page.locator(`li.conversation[data-conversation-id="${chats.withCarol}"]`).waitFor();
  assert.equal(await page.locator('section.chat').isVisible(), false);
  await screenshot(page, 'deeplink-narrow-list');
  assert.deepEqual(errors, []);
  await context.close();
});

test('a login link with next= signs in and opens the chat; a chat you are not in says so', async () => {
  const chats = await twoChats();
  const context = await browser.newContext();
  const page = await context.newPage();
  const errors = watchErrors(page);
  await page.goto(`${BASE}/#/login?token=${encodeURIComponent(chats.bobToken)}&next=/c/${chats.withBob}`);
  await page.locator(`section.chat[data-conversation-id="${chats.withBob}"]`).waitFor();
  await page.locator('#chat-title', { hasText: chats.alice }).waitFor();
  assert.ok(!page.url().includes('token='), page.url());

  // Bob is not in alice's chat with carol.
  await page.goto(`${BASE}/#/c/${chats.withCarol}`);
  await page.locator('.chat-notice', { hasText: 'you are not in it' }).waitFor();
  assert.equal(await page.locator('form.composer').isVisible(), false);
  // The refused history request logs a 404 in the console; nothing else.
  assert.deepEqual(errors.filter((e) => !/404/.test(e)), []);
  await context.close();
});
