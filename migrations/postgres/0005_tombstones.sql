-- Trust and safety, second slice: tombstones, archived conversations, retention. The SQLite twin is
-- migrations/sqlite/0005_tombstones.sql; keep the two in step.

-- A message unsent by its sender or deleted by an operator keeps its row
-- (its seq stays taken: seqs are gapless) with its body emptied and its
-- media key dropped; `deleted_at` says it is a tombstone (read back with
-- kind `deleted`), `deleted_by` who did it (`sender` or `operator`).
ALTER TABLE messages ADD COLUMN deleted_at bigint NULL;
ALTER TABLE messages ADD COLUMN deleted_by text NULL
    CHECK (deleted_by IN ('sender', 'operator'));

-- A participant who archived (hid) the conversation: it leaves their list
-- until a message with a seq above this one arrives (NULL: shown).
ALTER TABLE conversation_participants ADD COLUMN archived_seq bigint NULL;

-- Retention finds the old messages not yet emptied by creation time.
CREATE INDEX messages_retention_idx ON messages (created_at) WHERE deleted_at IS NULL;

-- The push outbox by message: a tombstone drops the message's pending jobs.
CREATE INDEX push_outbox_message_id_idx ON push_outbox (message_id);
