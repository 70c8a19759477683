// Two people chat in two browsers: a new conversation shows up on the other
// side with an unread badge, messages go both ways, typing and read
// receipts show, and a message the server refuses shows why.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import {
  assertNoErrors,
  eventually,
  history,
  launch,
  messageBodies,
  screenshot,
  sendMessage,
  signIn,
  startChat,
  user,
} from './harness.js';

let browser;
before(async () => {
  browser = await launch();
});
after(async () => {
  await browser?.close();
});

test('alice and bob chat: list, unread badge, messages both ways, typing, read receipts', async () => {
  const alice = await signIn(browser, user('alice'), { via: 'form' });
  const bob = await signIn(browser, user('bob'), { via: 'link' });
  // The token does not stay in the address bar.
  assert.ok(!bob.page.url().includes('token='), bob.page.url());

  // Alice starts a chat with bob about a listing.
  const a = alice.page;
  const id = await startChat(a, bob.sub, 'car-1');
  await a.locator('#chat-title', { hasText: bob.sub }).waitFor();

  await sendMessage(a, 'Hi! Is the car still available?');
  await a.locator('li.msg.mine[data-state="sent"]', { hasText: 'still available' }).waitFor();

  // Bob's list gets the new conversation live, with an unread badge.
  const b = bob.page;
  const item = b.locator(`li.conversation[data-conversation-id="${id}"]`);
  await item.waitFor();
  await eventually(async () => (await item.getByTestId('unread').textContent())?.startsWith('1'), {
    message: "bob's unread badge shows 1",
  });
  await eventually(async () => (await item.locator('.preview').textContent()).includes('still available'), {
    message: "bob's list shows the last message",
  });
  await screenshot(b, 'chat-bob-list-unread');

  // Bob opens it: he sees the message, the badge goes, alice sees "Read".
  await item.getByRole('link').click();
  await b.locator('li.msg.theirs', { hasText: 'still available' }).waitFor();
  await item.getByTestId('unread').waitFor({ state: 'detached' });
  await a.locator('li.msg.mine[data-state="read"]', { hasText: 'still available' }).waitFor();

  // Bob types: alice sees it; bob sends: alice gets the message and the
  // indicator goes away.
  const input = b.getByRole('textbox', { name: 'Message', exact: true });
  await input.pressSequentially('Yes, it is', { delay: 20 });
  await a.getByTestId('typing').filter({ hasText: `${bob.sub} is typing` }).waitFor();
  await screenshot(a, 'chat-alice-sees-typing');
  await input.press('Enter');
  await a.locator('li.msg.theirs', { hasText: 'Yes, it is' }).waitFor();
  await eventually(async () => (await a.getByTestId('typing').textContent()) === '', {
    message: 'typing indicator cleared on alice’s side',
  });
  await b.locator('li.msg.mine[data-state="read"]', { hasText: 'Yes, it is' }).waitFor();

  await sendMessage(a, 'Great, can I see it on Saturday?');
  await b.locator('li.msg.theirs', { hasText: 'Saturday' }).waitFor();

  assert.deepEqual(await messageBodies(a), [
    'Hi! Is the car still available?',
    'Yes, it is',
    'Great, can I see it on Saturday?',
  ]);
  assert.deepEqual(await messageBodies(b), await messageBodies(a));
  const stored = await history(alice.token, id);
  assert.deepEqual(
    stored.map((m) => [m.seq, m.sender_id, m.body]),
    [
      [1, alice.sub, 'Hi! Is the car still available?'],
      [2, bob.sub, 'Yes, it is'],
      [3, alice.sub, 'Great, can I see it on Saturday?'],
    ],
  );
  await screenshot(a, 'chat-alice');
  await screenshot(b, 'chat-bob');
  assertNoErrors(alice);
  assertNoErrors(bob);
  await alice.context.close();
  await bob.context.close();
});

test('a message the server refuses shows as failed with the reason, and can be deleted', async () => {
  const alice = await signIn(browser, user('alice'));
  const bob = user('bob');
  const a = alice.page;
  await startChat(a, bob);

  // Over the server's 4,000-character limit: the composer warns, the server refuses.
  await sendMessage(a, 'x'.repeat(4001));
  const failed = a.locator('li.msg.mine[data-state="failed"]');
  await failed.waitFor();
  assert.match(await failed.locator('.failure-reason').textContent(), /Not sent: .*too long/);
  await screenshot(a, 'chat-failed-message');

  // Later messages are not held up by a failed one.
  await sendMessage(a, 'short one');
  await a.locator('li.msg.mine[data-state="sent"]', { hasText: 'short one' }).waitFor();

  await failed.getByRole('button', { name: 'Delete' }).click();
  await failed.waitFor({ state: 'detached' });
  assert.deepEqual(await messageBodies(a), ['short one']);
  const queued = await a.evaluate(() =>
    Object.keys(localStorage)
      .filter((k) => k.startsWith('turbochat.outbox.'))
      .map((k) => JSON.parse(localStorage.getItem(k)).length),
  );
  assert.deepEqual(queued, [0], 'nothing left in the send queue');
  assertNoErrors(alice);
  await alice.context.close();
});
