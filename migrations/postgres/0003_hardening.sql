-- Hardening. The SQLite twin is migrations/sqlite/0003_hardening.sql.

-- Device tokens of up to 4096 bytes, as documented: a b-tree entry holds at
-- most ~2,700 bytes, so a token primary key refused longer (valid) tokens.
-- Uniqueness now rests on the token's SHA-256 (32 bytes), and lookups by
-- token go through a hash index, which has no size limit.
CREATE FUNCTION turbochat_token_key(token text) RETURNS bytea
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    AS $$ SELECT sha256(convert_to(token, 'UTF8')) $$;

ALTER TABLE user_devices DROP CONSTRAINT user_devices_pkey;
ALTER TABLE user_devices
    ADD COLUMN token_key bytea GENERATED ALWAYS AS (turbochat_token_key(token)) STORED;
ALTER TABLE user_devices ADD CONSTRAINT user_devices_token_key UNIQUE (token_key);
CREATE INDEX user_devices_token_idx ON user_devices USING hash (token);

-- Every object `POST /media` stored: a `send` may name only a recorded
-- upload of its own conversation.
CREATE TABLE media_uploads (
    media_key        text    PRIMARY KEY,
    conversation_id  uuid    NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    uploader_id      text    NOT NULL,
    content_type     text    NOT NULL,
    size             bigint  NOT NULL CHECK (size >= 0),
    created_at       bigint  NOT NULL
);
