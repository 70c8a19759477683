// Offline: bob loses the network, writes two messages (pending, kept in
// localStorage), comes back; alice gets both exactly once and in order, bob
// sees them turn to sent, and bob gets what alice wrote meanwhile.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import {
  BASE,
  api,
  assertNoErrors,
  cuttableNetwork,
  eventually,
  history,
  launch,
  messageBodies,
  online,
  screenshot,
  sendMessage,
  signIn,
  user,
} from './harness.js';

/** What a page may log while its network is cut on purpose. */
const CUT_NETWORK_NOISE = [/WebSocket/i, /ERR_INTERNET_DISCONNECTED/, /Failed to load resource/];

let browser;
before(async () => {
  browser = await launch();
});
after(async () => {
  await browser?.close();
});

async function directChat(alice, bob, listing) {
  const view = await api(alice.token, 'POST', '/conversations', {
    kind: 'direct',
    peer_id: bob.sub,
    listing_id: listing,
  });
  return view.conversation_id;
}

/** Opens the chat from the list (as a person would). */
async function openFromList(page, id) {
  await page.locator(`li.conversation[data-conversation-id="${id}"] a`).click();
  await page.locator(`section.chat[data-conversation-id="${id}"]`).waitFor();
}

function connectionLabel(page) {
  return page.getByTestId('connection').textContent();
}

test('bob writes two messages offline; after reconnecting alice gets both once, in order', async () => {
  const alice = await signIn(browser, user('alice'));
  let net;
  const bob = await signIn(browser, user('bob'), {
    beforeLoad: async (context) => {
      net = await cuttableNetwork(context);
    },
  });
  const id = await directChat(alice, bob, 'car-7');
  await alice.page.goto(`${BASE}/#/c/${id}`);
  await alice.page.locator(`section.chat[data-conversation-id="${id}"]`).waitFor();
  await openFromList(bob.page, id);
  await sendMessage(bob.page, 'Hello from the road');
  await alice.page.locator('li.msg.theirs', { hasText: 'Hello from the road' }).waitFor();

  // Bob drives into a tunnel: the socket drops and reconnecting fails.
  await bob.context.setOffline(true);
  await net.cutOff();
  await bob.page.locator('[data-testid="connection"][data-status="offline"]').waitFor();
  await eventually(() => net.refused >= 1, { message: 'bob tried to reconnect and was refused' });
  await eventually(async () => /Offline, reconnecting in \d+ s/.test(await connectionLabel(bob.page)), {
    message: 'bob sees when the next attempt is',
  });

  await sendMessage(bob.page, 'first, written offline');
  await sendMessage(bob.page, 'second, written offline');
  const pending = bob.page.locator('li.msg.mine[data-state="pending"]');
  await eventually(async () => (await pending.count()) === 2, { message: 'two pending messages' });
  assert.deepEqual(await pending.locator('.body').allTextContents(), [
    'first, written offline',
    'second, written offline',
  ]);
  const stored = await bob.page.evaluate(
    (sub) => JSON.parse(localStorage.getItem(`turbochat.outbox.${sub}`)).map((e) => [e.body, e.state]),
    bob.sub,
  );
  assert.deepEqual(stored, [
    ['first, written offline', 'pending'],
    ['second, written offline', 'pending'],
  ]);
  await screenshot(bob.page, 'offline-bob-pending');

  // Meanwhile alice writes; the server has nothing new from bob.
  await sendMessage(alice.page, 'Are you there?');
  await alice.page.locator('li.msg.mine[data-state="sent"]', { hasText: 'Are you there?' }).waitFor();
  assert.deepEqual(
    (await history(alice.token, id)).map((m) => m.body),
    ['Hello from the road', 'Are you there?'],
  );

  // Out of the tunnel.
  net.restore();
  await bob.context.setOffline(false);
  await online(bob.page);

  const expected = ['Hello from the road', 'Are you there?', 'first, written offline', 'second, written offline'];
  await eventually(async () => (await messageBodies(alice.page)).length >= 4, {
    message: 'alice received bob’s queued messages',
  });
  await bob.page.locator('li.msg[data-state="pending"]').first().waitFor({ state: 'detached' });
  for (const body of expected.slice(2)) {
    await bob.page.locator('li.msg.mine', { hasText: body }).and(bob.page.locator('[data-state="sent"], [data-state="read"]')).waitFor();
  }
  // Bob got alice's message through the resume.
  await bob.page.locator('li.msg.theirs', { hasText: 'Are you there?' }).waitFor();

  // Exactly once, in order: on both screens and in the store.
  assert.deepEqual(await messageBodies(alice.page), expected);
  assert.deepEqual(await messageBodies(bob.page), expected);
  const messages = await history(alice.token, id);
  assert.deepEqual(
    messages.map((m) => [m.seq, m.body]),
    expected.map((body, i) => [i + 1, body]),
  );
  assert.deepEqual(
    await bob.page.evaluate((sub) => localStorage.getItem(`turbochat.outbox.${sub}`), bob.sub),
    '[]',
  );
  await screenshot(bob.page, 'offline-bob-back-online');
  await screenshot(alice.page, 'offline-alice-received');
  assertNoErrors(alice);
  assertNoErrors(bob, CUT_NETWORK_NOISE);
  await alice.context.close();
  await bob.context.close();
});

test('the queue survives a reload, and the client reconnects by itself when the network returns', async () => {
  const alice = await signIn(browser, user('alice'));
  let net;
  const bob = await signIn(browser, user('bob'), {
    beforeLoad: async (context) => {
      net = await cuttableNetwork(context);
    },
  });
  const id = await directChat(alice, bob, 'car-8');
  await openFromList(bob.page, id);

  // Only the WebSocket is cut (no offline event, so the page can reload).
  await net.cutOff();
  await bob.page.locator('[data-testid="connection"][data-status="offline"]').waitFor();
  await sendMessage(bob.page, 'written before the reload');
  await bob.page.locator('li.msg.mine[data-state="pending"]', { hasText: 'before the reload' }).waitFor();

  await bob.page.reload();
  await bob.page.locator(`section.chat[data-conversation-id="${id}"]`).waitFor();
  await bob.page.locator('li.msg.mine[data-state="pending"]', { hasText: 'before the reload' }).waitFor();
  await eventually(() => net.refused >= 2, { message: 'reconnects keep failing while cut' });

  // The network comes back without any browser event: the backoff retries.
  net.restore();
  await online(bob.page, 40_000);
  await bob.page
    .locator('li.msg.mine', { hasText: 'before the reload' })
    .and(bob.page.locator('[data-state="sent"], [data-state="read"]'))
    .waitFor();
  assert.deepEqual(
    (await history(alice.token, id)).map((m) => [m.sender_id, m.body]),
    [[bob.sub, 'written before the reload']],
  );
  assertNoErrors(alice);
  assertNoErrors(bob, CUT_NETWORK_NOISE);
  await alice.context.close();
  await bob.context.close();
});

test('a send whose ack is lost with the connection is sent again and stored once', async () => {
  const alice = await signIn(browser, user('alice'));
  // Bob's first connection dies right after the server commits his first
  // message: the ack (and the echo) never reach the page.
  const lost = [];
  const bob = await signIn(browser, user('bob'), {
    beforeLoad: async (context) => {
      await context.routeWebSocket(/\/ws(\?|$)/, (ws) => {
        const server = ws.connectToServer();
        server.onMessage((text) => {
          const frame = JSON.parse(text);
          const ours = frame.type === 'ack' || (frame.type === 'message' && frame.body === 'only once');
          if (ours && lost.length === 0) {
            lost.push(frame);
            ws.close({ code: 1006, reason: 'connection lost before the ack' }).catch(() => {});
            return;
          }
          ws.send(text);
        });
      });
    },
  });
  const id = await directChat(alice, bob, 'car-9');
  await openFromList(bob.page, id);

  await sendMessage(bob.page, 'only once');
  await eventually(() => lost.length === 1, { message: 'the first ack was lost' });
  // Reconnected (backoff), resent with the same client_msg_id, acked.
  await online(bob.page);
  await bob.page
    .locator('li.msg.mine', { hasText: 'only once' })
    .and(bob.page.locator('[data-state="sent"], [data-state="read"]'))
    .waitFor();
  const stored = await history(alice.token, id);
  assert.deepEqual(
    stored.map((m) => [m.seq, m.body]),
    [[1, 'only once']],
  );
  assert.equal(stored[0].client_msg_id, lost[0].client_msg_id);
  assert.deepEqual(await messageBodies(bob.page), ['only once']);
  assertNoErrors(alice);
  assertNoErrors(bob, CUT_NETWORK_NOISE);
  await alice.context.close();
  await bob.context.close();
});
