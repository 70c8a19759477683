// Who and what a conversation is about: names and pictures from the users'
// tokens (the JWT's `name` and `picture`), the listing's card the operator
// set (title, price, photo), in the conversation list, the chat header and
// on group messages; and muting a conversation from its header.
//
// Pictures come from hosts under `.test`, answered by the test (harness
// `offline`): nothing leaves the machine.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import {
  BASE,
  admin,
  api,
  assertNoErrors,
  eventually,
  launch,
  offline,
  online,
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

const A4 = {
  title: 'Audi A4 Avant 2.0 TDI, 2019',
  price: { amount_minor: 1890000, currency: 'EUR' },
  photo_url: 'https://photos.turbocar.test/a4.jpg',
};

/** Signs a named user in, off the internet; `net` lists their pictures. */
async function named(sub, name, picture) {
  let net;
  const who = await signIn(browser, sub, {
    name,
    picture,
    // Prices are written the user's way: pin it.
    locale: 'en-US',
    beforeLoad: async (context) => {
      net = await offline(context);
    },
  });
  return { ...who, net };
}

/** Waits until an `<img>` has decoded a picture. */
function loaded(img, message = 'picture') {
  return eventually(() => img.evaluate((el) => el.complete && el.naturalWidth > 0), { message: `${message} loaded` });
}

async function reload(page) {
  await page.reload();
  await online(page);
}

test('the listing card the operator set shows in the list and under the chat header', async () => {
  const alice = await named(user('alice'));
  const bob = await named(user('bob'));
  const id = await startChat(bob.page, alice.sub, 'audi-a4-2019');
  await sendMessage(bob.page, 'Hello, the A4 is still available');
  const plain = await startChat(bob.page, user('carol'), 'golf-7');

  // Cards are read with the list: set now, seen on the next read.
  await admin('PUT', `/admin/conversations/${id}/listing`, A4);
  const a = alice.page;
  await reload(a);
  const item = a.locator(`li.conversation[data-conversation-id="${id}"]`);
  assert.equal(await item.getByTestId('listing-title').textContent(), A4.title);
  assert.equal(await item.getByTestId('listing-price').textContent(), '€18,900');
  await loaded(item.getByTestId('listing-photo'), 'the listing photo in the list');
  await screenshot(a, 'listing-cards-list');
  await item.locator('a').click();
  const card = a.locator(`section.chat[data-conversation-id="${id}"]`).getByTestId('chat-listing');
  assert.equal(await card.getByTestId('listing-title').textContent(), A4.title);
  assert.equal(await card.getByTestId('listing-price').textContent(), '€18,900');
  await loaded(card.getByTestId('listing-photo'), 'the listing photo in the header');
  await screenshot(a, 'listing-cards-header');

  // A card without a photo or a price; a conversation without a card shows
  // its listing id as before.
  await admin('PUT', `/admin/conversations/${plain}/listing`, { title: 'VW Golf 7, 2016' });
  const b = bob.page;
  await reload(b);
  const golf = b.locator(`li.conversation[data-conversation-id="${plain}"]`);
  assert.equal(await golf.getByTestId('listing-title').textContent(), 'VW Golf 7, 2016');
  assert.equal(await golf.getByTestId('listing-price').count(), 0);
  assert.equal(await golf.getByTestId('listing-photo').count(), 0);
  await admin('DELETE', `/admin/conversations/${plain}/listing`);
  await reload(b);
  await golf.locator('.listing', { hasText: 'golf-7' }).waitFor();
  assert.equal(await golf.getByTestId('listing-card').count(), 0);

  assert.deepEqual([...new Set(alice.net.pictures)], [A4.photo_url]);
  for (const who of [alice, bob]) {
    assert.deepEqual(who.net.refused, [], `${who.sub}'s requests that would have left the machine`);
    assertNoErrors(who);
  }
});

test('names, pictures and the listing card in the list and the chat header', async () => {
  const aliceId = user('alice');
  const bobId = user('bob');
  const alice = await named(aliceId, 'Alice Martin', `https://avatars.turbocar.test/${aliceId}.png`);
  const bob = await named(bobId, 'Bob Smith'); // no picture: initials

  // Bob writes about the A4; the operator sets its card. A second chat,
  // about nothing in particular, shows the plain list entry beside it.
  const id = await startChat(bob.page, aliceId, 'audi-a4-2019');
  await admin('PUT', `/admin/conversations/${id}/listing`, A4);
  await sendMessage(bob.page, 'Hello Alice, the A4 is still available');
  const carol = await named(user('carol'), 'Carol Dupont');
  await startChat(carol.page, aliceId);
  await sendMessage(carol.page, 'Hi! Do you still have the winter tyres?');
  await carol.page.locator('li.msg.mine[data-state="sent"]').waitFor();

  // Alice's list (cards are read with it).
  const a = alice.page;
  await reload(a);
  const item = a.locator(`li.conversation[data-conversation-id="${id}"]`);
  await item.locator('.conversation-title', { hasText: 'Bob Smith' }).waitFor();
  assert.equal(await item.locator('.avatar').textContent(), 'BS');
  assert.equal(await item.getByTestId('listing-title').textContent(), A4.title);
  assert.equal(await item.getByTestId('listing-price').textContent(), '€18,900');
  await loaded(item.getByTestId('listing-photo'), 'the listing photo in the list');
  await a.locator('li.conversation .conversation-title', { hasText: 'Carol Dupont' }).waitFor();
  // Her own name and picture in the top bar.
  await a.locator('.topbar .me', { hasText: 'Alice Martin' }).waitFor();
  await loaded(a.locator('.topbar [data-testid="avatar-image"]'), 'her own picture');
  await screenshot(a, 'profiles-list-cards');

  // The chat header: his name, his user id under it, the card.
  await item.locator('a').click();
  const header = a.locator(`section.chat[data-conversation-id="${id}"] .chat-header`);
  await header.locator('.chat-title', { hasText: 'Bob Smith' }).waitFor();
  assert.match(await header.locator('.chat-sub').textContent(), new RegExp(bobId));
  const card = header.getByTestId('chat-listing');
  assert.equal(await card.getByTestId('listing-title').textContent(), A4.title);
  assert.equal(await card.getByTestId('listing-price').textContent(), '€18,900');
  await loaded(card.getByTestId('listing-photo'), 'the listing photo in the header');
  await a.locator('li.msg.theirs', { hasText: 'still available' }).waitFor();
  await screenshot(a, 'profiles-chat-header-card');

  // Bob sees her picture, in his list and his header.
  const b = bob.page;
  await reload(b);
  await b.goto(`${BASE}/#/c/${id}`);
  const bobItem = b.locator(`li.conversation[data-conversation-id="${id}"]`);
  await bobItem.locator('.conversation-title', { hasText: 'Alice Martin' }).waitFor();
  await loaded(bobItem.getByTestId('avatar-image'), 'her picture in his list');
  const bobHeader = b.locator('.chat-header');
  await bobHeader.locator('.chat-title', { hasText: 'Alice Martin' }).waitFor();
  await loaded(bobHeader.getByTestId('avatar-image'), 'her picture in his header');
  await bobHeader.getByTestId('listing-title').filter({ hasText: A4.title }).waitFor();
  await screenshot(b, 'profiles-seller-view');
  assert.ok(bob.net.pictures.includes(`https://avatars.turbocar.test/${aliceId}.png`));

  for (const who of [alice, bob, carol]) {
    assert.deepEqual(who.net.refused, [], `${who.sub}'s requests that would have left the machine`);
    assertNoErrors(who);
  }
});

test('in a group, messages carry their sender\'s name and picture', async () => {
  const alice = await named(user('alice'), 'Alice Martin');
  const bob = await named(user('bob'), 'Bob Smith');
  const carolId = user('carol');
  const carol = await named(carolId, 'Carol Dupont', `https://avatars.turbocar.test/${carolId}.png`);
  const { conversation_id: id } = await api(alice.token, 'POST', '/conversations', {
    kind: 'group',
    participants: [bob.sub, carol.sub],
    title: 'A4 viewing on Saturday',
  });
  for (const [who, text] of [
    [bob, 'I can be there at 10'],
    [carol, 'Saturday works for me too'],
  ]) {
    await who.page.goto(`${BASE}/#/c/${id}`);
    await sendMessage(who.page, text);
    await who.page.locator('li.msg.mine[data-state="sent"], li.msg.mine[data-state="read"]', { hasText: text }).waitFor();
  }

  const a = alice.page;
  await reload(a);
  await a.goto(`${BASE}/#/c/${id}`);
  const fromBob = a.locator('li.msg.theirs', { hasText: 'at 10' });
  const fromCarol = a.locator('li.msg.theirs', { hasText: 'works for me' });
  assert.equal(await fromBob.locator('.author').textContent(), 'Bob Smith:');
  assert.equal(await fromBob.locator('.avatar').textContent(), 'BS');
  assert.equal(await fromCarol.locator('.author').textContent(), 'Carol Dupont:');
  await loaded(fromCarol.getByTestId('avatar-image'), 'her picture on her message');
  const preview = a.locator(`li.conversation[data-conversation-id="${id}"] .preview`);
  assert.equal(await preview.textContent(), 'Carol Dupont: Saturday works for me too');
  await screenshot(a, 'profiles-group-senders');

  for (const who of [alice, bob, carol]) {
    assert.deepEqual(who.net.refused, []);
    assertNoErrors(who);
  }
});

test('mute from the chat header; the list shows it; it holds across a reload', async () => {
  const alice = await named(user('alice'), 'Alice Martin');
  const bob = await named(user('bob'), 'Bob Smith');
  const id = await startChat(bob.page, alice.sub);
  await sendMessage(bob.page, 'Are you around?');

  const a = alice.page;
  await a.goto(`${BASE}/#/c/${id}`);
  const mute = a.getByTestId('mute');
  const item = a.locator(`li.conversation[data-conversation-id="${id}"]`);
  await mute.filter({ hasText: /^Mute$/ }).waitFor();
  assert.equal(await item.getByTestId('muted').count(), 0);
  await mute.click();
  await mute.filter({ hasText: 'Unmute' }).waitFor();
  assert.equal(await mute.getAttribute('aria-pressed'), 'true');
  await item.getByTestId('muted').waitFor();
  await screenshot(a, 'profiles-muted');
  const mine = async () =>
    (await api(alice.token, 'GET', '/conversations')).conversations.find((c) => c.conversation_id === id);
  assert.equal((await mine()).muted, true);
  // Bob's view of the same conversation is his own: not muted.
  const his = (await api(bob.token, 'GET', '/conversations')).conversations.find((c) => c.conversation_id === id);
  assert.equal(his.muted, false);

  await reload(a);
  await item.getByTestId('muted').waitFor();
  await mute.filter({ hasText: 'Unmute' }).waitFor();
  await mute.click();
  await mute.filter({ hasText: /^Mute$/ }).waitFor();
  await eventually(async () => (await item.getByTestId('muted').count()) === 0, { message: 'the muted icon gone' });
  assert.equal((await mine()).muted, false);

  assertNoErrors(alice);
  assertNoErrors(bob);
});
