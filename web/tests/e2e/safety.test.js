// Trust and safety in the chat screen: a buyer reports a scammer's message
// and blocks him (his next message is refused, never shown to her); a
// message unsent by its sender becomes a tombstone on both screens; a
// membership change shows as a system message.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import {
  BASE,
  api,
  assertNoErrors,
  history,
  launch,
  mintToken,
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

test('report and block a scammer; an unsent message is a tombstone on both screens', async () => {
  const alice = await signIn(browser, user('alice'));
  const mallory = await signIn(browser, user('mallory'));
  const m = mallory.page;
  const a = alice.page;

  const id = await startChat(m, alice.sub, 'audi-a4');
  await sendMessage(m, 'Pay the deposit by gift card please');
  await m.locator('li.msg.mine[data-state="sent"]', { hasText: 'gift card' }).waitFor();

  // Alice opens the chat and reports the message as a scam.
  await a.goto(`${BASE}/#/c/${id}`);
  const scam = a.locator('li.msg.theirs', { hasText: 'gift card' });
  await scam.waitFor();
  await scam.getByRole('button', { name: 'Report' }).click();
  await scam.getByTestId('report-reason').selectOption('scam');
  await screenshot(a, 'safety-report-form');
  await scam.getByRole('button', { name: 'Send report' }).click();
  await scam.locator('.actions', { hasText: 'Reported' }).waitFor();
  await a.locator('.chat-notice', { hasText: 'report was sent' }).waitFor();
  await screenshot(a, 'safety-reported');

  // She blocks him: the button says so, and his next message is refused.
  await a.getByTestId('block').click();
  await a.getByTestId('block').filter({ hasText: 'Unblock' }).waitFor();
  await a.locator('.chat-notice', { hasText: `You blocked ${mallory.sub}` }).waitFor();
  await screenshot(a, 'safety-blocked');
  await sendMessage(m, 'Hello?? answer me');
  const refused = m.locator('li.msg.mine[data-state="failed"]', { hasText: 'answer me' });
  await refused.waitFor();
  assert.match(await refused.locator('.failure-reason').textContent(), /does not accept your messages/);
  await screenshot(m, 'safety-blocked-sender');
  const stored = await history(alice.token, id);
  assert.deepEqual(stored.map((x) => x.body), ['Pay the deposit by gift card please']);
  assert.equal(await a.locator('li.msg', { hasText: 'answer me' }).count(), 0);

  // Unblocked, she writes by mistake and unsends it: both see a tombstone.
  await a.getByTestId('block').click();
  await a.getByTestId('block').filter({ hasText: /^Block$/ }).waitFor();
  await sendMessage(a, 'my number is 06 12 34 56 78');
  const mine = a.locator('li.msg.mine[data-state="sent"], li.msg.mine[data-state="read"]', { hasText: 'my number' });
  await mine.waitFor();
  await m.locator('li.msg.theirs', { hasText: 'my number' }).waitFor();
  await mine.getByRole('button', { name: 'Unsend' }).click();
  await a.locator('li.msg.mine.deleted').getByTestId('tombstone').waitFor();
  await m.locator('li.msg.theirs.deleted').getByTestId('tombstone').waitFor();
  assert.equal(await m.locator('li.msg', { hasText: 'my number' }).count(), 0);
  await screenshot(m, 'safety-tombstone');
  const after = await history(mallory.token, id);
  assert.deepEqual(after.map((x) => x.kind), ['text', 'deleted']);

  assertNoErrors(alice);
  assertNoErrors(mallory, [/409|403|Failed to load resource/]);
});

test('a member leaving a group shows as a system message', async () => {
  const alice = await signIn(browser, user('alice'));
  const carolId = user('carol');
  const { conversation_id: id } = await api(alice.token, 'POST', '/conversations', {
    kind: 'group',
    participants: [carolId, user('dave')],
    title: 'Weekend drive',
  });
  const a = alice.page;
  await a.goto(`${BASE}/#/c/${id}`);
  await a.locator(`section.chat[data-conversation-id="${id}"]`).waitFor();
  await api(mintToken(carolId), 'POST', `/conversations/${id}/leave`, {});
  await a.locator('li.msg.system', { hasText: `${carolId} left` }).waitFor();
  await screenshot(a, 'safety-system-message');
  assertNoErrors(alice);
});
