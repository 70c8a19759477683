-- turbochat schema, PostgreSQL dialect. The SQLite twin is
-- migrations/sqlite/0001_init.sql; keep the two in step (same tables,
-- columns, constraints and index names).
--
-- Times are unix milliseconds (bigint). Users live in the car app: a user id
-- is the JWT `sub`, stored as text, with no users table.

CREATE TABLE conversations (
    id          uuid    PRIMARY KEY,
    kind        text    NOT NULL CHECK (kind IN ('direct', 'group')),
    listing_id  text    NULL,
    title       text    NULL,
    created_at  bigint  NOT NULL
);

CREATE TABLE conversation_participants (
    conversation_id  uuid     NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    user_id          text     NOT NULL,
    role             text     NOT NULL DEFAULT 'member',
    joined_at        bigint   NOT NULL,
    -- The read cursor: every message with seq <= last_read_seq has been read.
    last_read_seq    bigint   NOT NULL DEFAULT 0 CHECK (last_read_seq >= 0),
    muted            boolean  NOT NULL DEFAULT false,
    PRIMARY KEY (conversation_id, user_id)
);

CREATE INDEX conversation_participants_user_id_idx
    ON conversation_participants (user_id);

CREATE TABLE messages (
    id               uuid    PRIMARY KEY,
    conversation_id  uuid    NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    seq              bigint  NOT NULL CHECK (seq > 0),
    sender_id        text    NOT NULL,
    client_msg_id    text    NOT NULL,
    kind             text    NOT NULL CHECK (kind IN ('text', 'media', 'system')),
    body             text    NOT NULL,
    media_key        text    NULL,
    created_at       bigint  NOT NULL,
    -- Fencing (guarantee 5): two writers can never both store a seq.
    CONSTRAINT messages_seq_key UNIQUE (conversation_id, seq),
    -- Idempotent send (guarantee 3): the arbiter of INSERT ... ON CONFLICT.
    CONSTRAINT messages_client_msg_id_key UNIQUE (conversation_id, sender_id, client_msg_id)
);

CREATE TABLE user_devices (
    token       text    PRIMARY KEY,
    user_id     text    NOT NULL,
    platform    text    NOT NULL,
    created_at  bigint  NOT NULL,
    updated_at  bigint  NOT NULL
);

CREATE INDEX user_devices_user_id_idx ON user_devices (user_id);

-- One push job per (message, recipient), written in the message's
-- transaction (guarantee 6) and drained by the push worker.
CREATE TABLE push_outbox (
    id               bigserial  PRIMARY KEY,
    message_id       uuid       NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    conversation_id  uuid       NOT NULL,
    seq              bigint     NOT NULL,
    user_id          text       NOT NULL,
    status           text       NOT NULL DEFAULT 'pending'
                                CHECK (status IN ('pending', 'sent', 'failed')),
    attempts         integer    NOT NULL DEFAULT 0,
    next_attempt_at  bigint     NOT NULL,
    -- A worker that claims a job sets this; another may take it once it passed.
    locked_until     bigint     NULL,
    last_error       text       NULL,
    created_at       bigint     NOT NULL
);

CREATE INDEX push_outbox_status_next_attempt_at_idx
    ON push_outbox (status, next_attempt_at);
