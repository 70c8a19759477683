-- turbochat schema, SQLite dialect. The PostgreSQL twin is
-- migrations/postgres/0001_init.sql; keep the two in step (same tables,
-- columns, constraints and index names).
--
-- Differences from PostgreSQL: uuids are TEXT (hyphenated, lowercase),
-- booleans are INTEGER 0/1, and the outbox id is an INTEGER rowid alias.
-- Times are unix milliseconds.

CREATE TABLE conversations (
    id          TEXT     PRIMARY KEY NOT NULL,
    kind        TEXT     NOT NULL CHECK (kind IN ('direct', 'group')),
    listing_id  TEXT     NULL,
    title       TEXT     NULL,
    created_at  INTEGER  NOT NULL
);

CREATE TABLE conversation_participants (
    conversation_id  TEXT     NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    user_id          TEXT     NOT NULL,
    role             TEXT     NOT NULL DEFAULT 'member',
    joined_at        INTEGER  NOT NULL,
    -- The read cursor: every message with seq <= last_read_seq has been read.
    last_read_seq    INTEGER  NOT NULL DEFAULT 0 CHECK (last_read_seq >= 0),
    muted            BOOLEAN  NOT NULL DEFAULT 0,
    PRIMARY KEY (conversation_id, user_id)
);

CREATE INDEX conversation_participants_user_id_idx
    ON conversation_participants (user_id);

CREATE TABLE messages (
    id               TEXT     PRIMARY KEY NOT NULL,
    conversation_id  TEXT     NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    seq              INTEGER  NOT NULL CHECK (seq > 0),
    sender_id        TEXT     NOT NULL,
    client_msg_id    TEXT     NOT NULL,
    kind             TEXT     NOT NULL CHECK (kind IN ('text', 'media', 'system')),
    body             TEXT     NOT NULL,
    media_key        TEXT     NULL,
    created_at       INTEGER  NOT NULL,
    -- Fencing (guarantee 5): two writers can never both store a seq.
    CONSTRAINT messages_seq_key UNIQUE (conversation_id, seq),
    -- Idempotent send (guarantee 3): the arbiter of INSERT ... ON CONFLICT.
    CONSTRAINT messages_client_msg_id_key UNIQUE (conversation_id, sender_id, client_msg_id)
);

CREATE TABLE user_devices (
    token       TEXT     PRIMARY KEY NOT NULL,
    user_id     TEXT     NOT NULL,
    platform    TEXT     NOT NULL,
    created_at  INTEGER  NOT NULL,
    updated_at  INTEGER  NOT NULL
);

CREATE INDEX user_devices_user_id_idx ON user_devices (user_id);

-- One push job per (message, recipient), written in the message's
-- transaction (guarantee 6) and drained by the push worker.
CREATE TABLE push_outbox (
    id               INTEGER  PRIMARY KEY AUTOINCREMENT,
    message_id       TEXT     NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    conversation_id  TEXT     NOT NULL,
    seq              INTEGER  NOT NULL,
    user_id          TEXT     NOT NULL,
    status           TEXT     NOT NULL DEFAULT 'pending'
                              CHECK (status IN ('pending', 'sent', 'failed')),
    attempts         INTEGER  NOT NULL DEFAULT 0,
    next_attempt_at  INTEGER  NOT NULL,
    -- A worker that claims a job sets this; another may take it once it passed.
    locked_until     INTEGER  NULL,
    last_error       TEXT     NULL,
    created_at       INTEGER  NOT NULL
);

CREATE INDEX push_outbox_status_next_attempt_at_idx
    ON push_outbox (status, next_attempt_at);
