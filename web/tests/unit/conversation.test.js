import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Conversation, TYPING_SHOWN_MS } from '../../js/conversation.js';

const msg = (seq, sender_id = 'bob', body = `m${seq}`) => ({
  conversation_id: 'c',
  seq,
  sender_id,
  client_msg_id: `${sender_id}-${seq}`,
  kind: 'text',
  body,
  created_at: 1000 + seq,
});

test('messages are kept once per seq and ordered by seq whatever the arrival order', () => {
  const c = new Conversation('c');
  assert.equal(c.add(msg(3)), true);
  assert.equal(c.add(msg(1), { fromStream: false }), true);
  assert.equal(c.add(msg(2)), true);
  assert.equal(c.add(msg(3)), false);
  assert.equal(c.add(msg(1)), false);
  assert.deepEqual(c.ordered().map((m) => m.seq), [1, 2, 3]);
  assert.equal(c.last().seq, 3);
  assert.equal(c.lastSeq, 3);
});

test('only stream messages move the resume cursor', () => {
  const c = new Conversation('c');
  c.add(msg(10), { fromStream: false }); // a history page
  assert.equal(c.cursor, undefined);
  c.add(msg(11));
  assert.equal(c.cursor, 11);
  c.add(msg(12), { fromStream: false }); // an ack
  assert.equal(c.cursor, 11);
});

test('unread: the server count, plus newer messages from others, minus what was read', () => {
  const c = new Conversation('c');
  c.applyView({ conversation_id: 'c', participants: ['me', 'bob'], last_seq: 5, last_read_seq: 2, unread_count: 3 });
  assert.equal(c.unread('me'), 3);
  c.add(msg(6, 'bob'));
  c.add(msg(7, 'me'));
  assert.equal(c.unread('me'), 4);
  c.myRead = 6;
  assert.equal(c.unread('me'), 0);
  c.add(msg(8, 'bob'));
  assert.equal(c.unread('me'), 1);
  c.myRead = 8;
  assert.equal(c.unread('me'), 0);
});

test('read cursors only move forward; readBy names who read a seq', () => {
  const c = new Conversation('c');
  assert.equal(c.applyRead('bob', 5, 'me'), true);
  assert.equal(c.applyRead('bob', 3, 'me'), false);
  assert.equal(c.applyRead('carol', 2, 'me'), true);
  assert.deepEqual(c.readBy(2), ['bob', 'carol']);
  assert.deepEqual(c.readBy(4), ['bob']);
  assert.deepEqual(c.readBy(6), []);
  assert.equal(c.applyRead('me', 4, 'me'), true);
  assert.equal(c.myRead, 4);
});

test('typing shows until stop, a message from the typist, or expiry', () => {
  const c = new Conversation('c');
  c.applyTyping('bob', 'start', 0);
  c.applyTyping('carol', 'start', 0);
  assert.deepEqual(c.typists(1), ['bob', 'carol']);
  c.applyTyping('carol', 'stop', 2);
  assert.deepEqual(c.typists(2), ['bob']);
  c.add(msg(1, 'bob'));
  assert.deepEqual(c.typists(3), []);
  c.applyTyping('bob', 'start', 10);
  assert.deepEqual(c.typists(10 + TYPING_SHOWN_MS), []);
});

test('titles: group title, else the other participants', () => {
  const c = new Conversation('c');
  c.applyView({ conversation_id: 'c', participants: ['me', 'bob'], last_seq: 0 });
  assert.equal(c.title('me'), 'bob');
  c.applyView({ conversation_id: 'c', participants: ['me', 'bob', 'carol'], title: 'Audi A4', last_seq: 0 });
  assert.equal(c.title('me'), 'Audi A4');
});

test('participants are called by their names, else by their ids', () => {
  const c = new Conversation('c');
  c.applyView({
    conversation_id: 'c',
    kind: 'direct',
    participants: ['me', 'bob'],
    members: [
      { user_id: 'me', name: 'Me Myself' },
      { user_id: 'bob', name: 'Bob Smith', avatar_url: 'https://avatars.example.test/bob.png' },
    ],
    muted: true,
    last_seq: 0,
  });
  assert.equal(c.title('me'), 'Bob Smith');
  assert.equal(c.nameOf('bob'), 'Bob Smith');
  assert.equal(c.member('bob').avatar_url, 'https://avatars.example.test/bob.png');
  assert.equal(c.muted, true);
  // Someone the server knows nothing more about (no name), or not at all.
  c.applyView({ ...c.view, members: [{ user_id: 'me' }, { user_id: 'bob', name: '  ' }], muted: false });
  assert.equal(c.title('me'), 'bob');
  assert.deepEqual(c.member('zoe'), { user_id: 'zoe' });
  assert.equal(c.nameOf('zoe'), 'zoe');
  assert.equal(c.muted, false);
  // A group's own title wins.
  c.applyView({ ...c.view, kind: 'group', title: 'A4 viewing' });
  assert.equal(c.title('me'), 'A4 viewing');
});
