// ChatClient against a fake socket: the queue, resume and retry rules,
// frame by frame. (The e2e tests check the same against the real server.)

import assert from 'node:assert/strict';
import { beforeEach, test } from 'node:test';
import { Backoff } from '../../js/backoff.js';
import { ChatClient } from '../../js/client.js';
import { FakeSocket, MemoryStorage, fakeFetch, until } from './fakes.js';

const VIEW = {
  conversation_id: 'c1',
  kind: 'direct',
  participants: ['me', 'bob'],
  created_at: 1,
  last_seq: 4,
  last_read_seq: 4,
  unread_count: 0,
};

function client({ views = [], storage = new MemoryStorage() } = {}) {
  const c = new ChatClient({
    token: 'token',
    userId: 'me',
    storage,
    baseUrl: 'http://router',
    wsUrl: (token) => `ws://router/ws?token=${token}`,
    WebSocket: FakeSocket,
    fetch: fakeFetch(views),
    connection: {
      backoff: new Backoff({ baseMs: 1, capMs: 4, minMs: 1 }),
      heartbeatMs: 1e9,
    },
  });
  return c;
}

const ack = (client_msg_id, seq) => ({
  type: 'ack',
  conversation_id: 'c1',
  client_msg_id,
  seq,
  message_id: `m${seq}`,
  created_at: 1000 + seq,
});

beforeEach(() => FakeSocket.reset());

test('messages written before the connection is up go out in order, one at a time', async () => {
  const c = client();
  c.start();
  const ws = FakeSocket.last();
  assert.equal(ws.url, 'ws://router/ws?token=token');
  const one = c.send('c1', 'one');
  const two = c.send('c1', 'two');
  assert.deepEqual(ws.frames('send'), []);
  assert.deepEqual(c.queued('c1').map((e) => e.state), ['pending', 'pending']);

  ws.welcome('me');
  assert.deepEqual(ws.frames('send').map((f) => f.client_msg_id), [one.client_msg_id]);
  ws.receive(ack(one.client_msg_id, 1));
  assert.deepEqual(ws.frames('send').map((f) => [f.client_msg_id, f.body]), [
    [one.client_msg_id, 'one'],
    [two.client_msg_id, 'two'],
  ]);
  ws.receive(ack(two.client_msg_id, 2));
  assert.deepEqual(c.queued('c1'), []);
  assert.deepEqual(c.conversation('c1').ordered().map((m) => [m.seq, m.body]), [
    [1, 'one'],
    [2, 'two'],
  ]);
  c.stop();
});

test('after a drop: resume from the last seq seen, resend the unacked message with its id, keep it once', async () => {
  const storage = new MemoryStorage();
  const c = client({ views: [VIEW], storage });
  c.start();
  await until(() => c.list.loaded);
  const ws = FakeSocket.last();
  ws.welcome('me');
  assert.deepEqual(ws.frames('resume'), [{ type: 'resume', conversations: [{ conversation_id: 'c1', since: 4 }] }]);

  ws.receive({ type: 'message', conversation_id: 'c1', seq: 5, sender_id: 'bob', client_msg_id: 'b5', kind: 'text', body: 'hi', created_at: 5 });
  const mine = c.send('c1', 'hello');
  assert.equal(ws.frames('send').length, 1);
  ws.drop();
  assert.equal(c.connection.state.status, 'offline');
  // The queue is in storage: a reload would find it.
  assert.equal(JSON.parse(storage.getItem('turbochat.outbox.me'))[0].client_msg_id, mine.client_msg_id);

  await until(() => FakeSocket.instances.length === 2);
  const ws2 = FakeSocket.last();
  ws2.welcome('me');
  assert.deepEqual(ws2.frames('resume'), [{ type: 'resume', conversations: [{ conversation_id: 'c1', since: 5 }] }]);
  assert.deepEqual(ws2.frames('send').map((f) => f.client_msg_id), [mine.client_msg_id]);

  // The first send had been stored: the replay brings it back, then the ack.
  ws2.receive({ type: 'message', conversation_id: 'c1', seq: 6, sender_id: 'me', client_msg_id: mine.client_msg_id, kind: 'text', body: 'hello', created_at: 6 });
  assert.deepEqual(c.queued('c1'), []);
  ws2.receive(ack(mine.client_msg_id, 6));
  ws2.receive({ type: 'message', conversation_id: 'c1', seq: 6, sender_id: 'me', client_msg_id: mine.client_msg_id, kind: 'text', body: 'hello', created_at: 6 });
  assert.deepEqual(c.conversation('c1').ordered().map((m) => [m.seq, m.body]), [
    [4 + 1, 'hi'],
    [6, 'hello'],
  ]);
  assert.equal(ws2.frames('send').length, 1);
  c.stop();
});

test('a refused message fails with the reason and does not hold up the next; rate_limited retries the same id', async () => {
  const c = client();
  c.start();
  const ws = FakeSocket.last();
  ws.welcome('me');
  const bad = c.send('c1', 'x'.repeat(5000));
  const good = c.send('c1', 'fine');
  ws.receive({ type: 'error', code: 'invalid_argument', message: 'body is too long', client_msg_id: bad.client_msg_id, conversation_id: 'c1' });
  assert.equal(c.outbox.get(bad.client_msg_id).state, 'failed');
  assert.equal(c.outbox.get(bad.client_msg_id).error, 'body is too long');
  assert.deepEqual(ws.frames('send').map((f) => f.client_msg_id), [bad.client_msg_id, good.client_msg_id]);

  ws.receive({ type: 'error', code: 'rate_limited', message: 'slow down', client_msg_id: good.client_msg_id, conversation_id: 'c1', retry_after_ms: 30 });
  assert.equal(ws.frames('send').length, 2, 'waits before retrying');
  assert.equal(c.outbox.get(good.client_msg_id).state, 'pending');
  await until(() => ws.frames('send').length === 3);
  assert.equal(ws.frames('send')[2].client_msg_id, good.client_msg_id);

  // Retry of the failed one: same id again.
  ws.receive(ack(good.client_msg_id, 1));
  c.retry(bad.client_msg_id);
  assert.equal(ws.frames('send')[3].client_msg_id, bad.client_msg_id);
  c.stop();
});

test('reads are sent when online, and after the next welcome when not', async () => {
  const c = client();
  c.start();
  const ws = FakeSocket.last();
  c.markRead('c1', 3);
  assert.deepEqual(ws.frames('read'), []);
  ws.welcome('me');
  assert.deepEqual(ws.frames('read'), [{ type: 'read', conversation_id: 'c1', seq: 3 }]);
  c.markRead('c1', 2); // never backwards
  c.markRead('c1', 4);
  assert.deepEqual(ws.frames('read').map((f) => f.seq), [3, 4]);
  c.stop();
});

test('typing: one start per few seconds while typing, stop when cleared', async () => {
  const c = client();
  c.start();
  const ws = FakeSocket.last();
  ws.welcome('me');
  c.typing('c1', true);
  c.typing('c1', true);
  c.typing('c1', true);
  c.typing('c1', false);
  assert.deepEqual(ws.frames('typing').map((f) => f.state), ['start', 'stop']);
  // Others' typing shows; our own echo is ignored.
  ws.receive({ type: 'typing', conversation_id: 'c1', user_id: 'bob', state: 'start' });
  ws.receive({ type: 'typing', conversation_id: 'c1', user_id: 'me', state: 'start' });
  assert.deepEqual(c.conversation('c1').typists(), ['bob']);
  c.stop();
});

test('an expired token signs the user out', async () => {
  const c = client();
  const reasons = [];
  c.addEventListener('signedout', (e) => reasons.push(e.detail.reason));
  c.start();
  const ws = FakeSocket.last();
  ws.welcome('me');
  ws.receive({ type: 'error', code: 'token_expired', message: 'token expired' });
  assert.equal(reasons.length, 1);
  assert.match(reasons[0], /expired/);
  assert.equal(c.connection.state.status, 'stopped');
});

test('the connection waits longer after each failed attempt and shows when it retries', async () => {
  const c = client();
  c.connection.backoff = new Backoff({ baseMs: 40, capMs: 1000, minMs: 40, random: () => 0 });
  c.start();
  FakeSocket.last().drop();
  const state = c.connection.state;
  assert.equal(state.status, 'offline');
  assert.ok(state.retryAt >= Date.now() + 30, 'a retry is scheduled in the future');
  await until(() => FakeSocket.instances.length === 2);
  c.connection.reconnectNow(); // already connecting: no extra socket
  assert.equal(FakeSocket.instances.length, 2);
  FakeSocket.last().drop();
  c.connection.reconnectNow(); // offline: now
  assert.equal(FakeSocket.instances.length, 3);
  c.stop();
});
