import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Outbox, newClientMsgId } from '../../js/outbox.js';
import { MemoryStorage } from './fakes.js';

test('queued messages are stored and survive a new Outbox on the same storage', () => {
  const storage = new MemoryStorage();
  const outbox = new Outbox(storage, 'q');
  const a = outbox.add('c1', 'first');
  const b = outbox.add('c1', 'second');
  const reloaded = new Outbox(storage, 'q');
  assert.deepEqual(
    reloaded.list.map((e) => [e.client_msg_id, e.body, e.state]),
    [
      [a.client_msg_id, 'first', 'pending'],
      [b.client_msg_id, 'second', 'pending'],
    ],
  );
});

test('heads are the oldest pending entry of each conversation', () => {
  const outbox = new Outbox(new MemoryStorage(), 'q');
  const a1 = outbox.add('a', 'a1');
  outbox.add('a', 'a2');
  const b1 = outbox.add('b', 'b1');
  assert.deepEqual(outbox.heads(), [a1, b1]);
  outbox.fail(a1.client_msg_id, 'body is too long');
  assert.deepEqual(outbox.heads().map((e) => e.body), ['a2', 'b1']);
  assert.equal(outbox.get(a1.client_msg_id).error, 'body is too long');
  outbox.retry(a1.client_msg_id);
  assert.deepEqual(outbox.heads().map((e) => e.body), ['a1', 'b1']);
  assert.equal(outbox.get(a1.client_msg_id).error, undefined);
});

test('remove takes an acked entry out for good', () => {
  const storage = new MemoryStorage();
  const outbox = new Outbox(storage, 'q');
  const entry = outbox.add('c', 'hi');
  assert.equal(outbox.remove(entry.client_msg_id), true);
  assert.equal(outbox.remove(entry.client_msg_id), false);
  assert.deepEqual(new Outbox(storage, 'q').list, []);
});

test('corrupt or foreign stored data is ignored', () => {
  const storage = new MemoryStorage();
  storage.setItem('q', '{not json');
  assert.deepEqual(new Outbox(storage, 'q').list, []);
  storage.setItem('q', JSON.stringify([{ body: 1 }, null, { client_msg_id: 'x', conversation_id: 'c', body: 'ok', state: 'pending' }]));
  assert.deepEqual(new Outbox(storage, 'q').list.map((e) => e.body), ['ok']);
});

test('client_msg_ids are unique, time-ordered and within the 64-byte limit', () => {
  const ids = new Set();
  for (let i = 0; i < 1000; i++) ids.add(newClientMsgId(1_700_000_000_000 + i));
  assert.equal(ids.size, 1000);
  for (const id of ids) assert.ok(id.length <= 64 && /^[0-9a-z-]+$/.test(id), id);
  assert.ok(newClientMsgId(1000) < newClientMsgId(2000));
});
