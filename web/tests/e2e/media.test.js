// Photos: alice sends one from the composer, bob sees it in the chat; a
// text file dressed up as a JPEG is refused with the server's reason.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { assertNoErrors, eventually, history, launch, png, screenshot, signIn, startChat, user } from './harness.js';

/** A 96x64 blue-to-red gradient. */
const PNG = png(96, 64, [255, 60, 200]);

let browser;
before(async () => {
  browser = await launch();
});
after(async () => {
  await browser?.close();
});

test('a photo sent by alice shows in bob\'s chat; a fake JPEG is refused', async () => {
  const alice = await signIn(browser, user('alice'));
  const bob = await signIn(browser, user('bob'));
  const a = alice.page;
  const id = await startChat(a, bob.sub, 'car-photo');

  await a.locator('#composer-photo').setInputFiles({ name: 'car.png', mimeType: 'image/png', buffer: PNG });
  const mine = a.locator('li.msg.mine[data-state="sent"] img[data-testid="photo"]');
  await mine.waitFor();

  // Bob opens the chat from a deep link and sees the picture, decoded.
  const b = bob.page;
  await b.goto(`${b.url().split('#')[0]}#/c/${id}`);
  const theirs = b.locator('li.msg.theirs img[data-testid="photo"]');
  await theirs.waitFor();
  await eventually(async () => (await theirs.evaluate((img) => img.complete && img.naturalWidth)) === 96, {
    message: 'bob\'s browser decoded the photo',
  });
  await screenshot(b, 'media-bob-sees-photo');

  // Stored once, as a media message whose key belongs to this conversation.
  const stored = await history(bob.token, id);
  assert.equal(stored.length, 1);
  assert.equal(stored[0].kind, 'media');
  assert.ok(stored[0].media_key.startsWith(`${id}/`), stored[0].media_key);

  // A text file named like a photo: the server reads the bytes and says no.
  await a.locator('#composer-photo').setInputFiles({
    name: 'car.jpg',
    mimeType: 'image/jpeg',
    buffer: Buffer.from('definitely not a jpeg, just words about a car'),
  });
  await a.locator('.chat-notice', { hasText: 'Photo not sent' }).waitFor();
  await screenshot(a, 'media-alice-refused');
  assert.equal((await history(bob.token, id)).length, 1, 'nothing sent for the refused file');

  // The refused upload shows as a notice, not a broken page (the failed
  // POST's console line is expected).
  assertNoErrors(alice, [/status of 415/]);
  assertNoErrors(bob);
});
