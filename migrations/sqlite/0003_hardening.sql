-- Hardening. The PostgreSQL twin is migrations/postgres/0003_hardening.sql.
-- (SQLite indexes have no entry size limit: user_devices keeps its token
-- primary key; PostgreSQL moved uniqueness to the token's SHA-256.)

-- Every object `POST /media` stored: a `send` may name only a recorded
-- upload of its own conversation.
CREATE TABLE media_uploads (
    media_key        TEXT     PRIMARY KEY NOT NULL,
    conversation_id  TEXT     NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    uploader_id      TEXT     NOT NULL,
    content_type     TEXT     NOT NULL,
    size             INTEGER  NOT NULL CHECK (size >= 0),
    created_at       INTEGER  NOT NULL
);
