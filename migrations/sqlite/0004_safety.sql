-- Trust and safety: blocks and reports. The PostgreSQL twin is
-- migrations/postgres/0004_safety.sql; keep the two in step.

-- `blocker_id` receives nothing from `blocked_id` in direct conversations,
-- and neither can start a new one with the other (docs/protocol.md, Blocking).
CREATE TABLE user_blocks (
    blocker_id  TEXT     NOT NULL,
    blocked_id  TEXT     NOT NULL,
    created_at  INTEGER  NOT NULL,
    PRIMARY KEY (blocker_id, blocked_id),
    CHECK (blocker_id <> blocked_id)
);

-- Who blocked a user (presence is hidden from them).
CREATE INDEX user_blocks_blocked_id_idx ON user_blocks (blocked_id);

-- A report by a user (or by the moderation rules, reporter `system:moderation`)
-- about a message or a user. `evidence` is a JSON array of the messages as
-- they were when the report was made (the reported one and the ones before
-- it): a copy, so deleting or erasing the originals does not erase it.
CREATE TABLE reports (
    id                INTEGER  PRIMARY KEY AUTOINCREMENT,
    reporter_id       TEXT     NOT NULL,
    reported_user_id  TEXT     NOT NULL,
    conversation_id   TEXT     NULL,
    reported_seq      INTEGER  NULL,
    reason            TEXT     NOT NULL,
    note              TEXT     NULL,
    evidence          TEXT     NOT NULL DEFAULT '[]',
    status            TEXT     NOT NULL DEFAULT 'open'
                               CHECK (status IN ('open', 'resolved')),
    resolution        TEXT     NULL,
    resolved_by       TEXT     NULL,
    resolved_at       INTEGER  NULL,
    created_at        INTEGER  NOT NULL
);

CREATE INDEX reports_status_id_idx ON reports (status, id);

-- Banned users: their sends are refused, their sessions closed.
CREATE TABLE user_bans (
    user_id     TEXT     PRIMARY KEY NOT NULL,
    reason      TEXT     NOT NULL,
    banned_by   TEXT     NOT NULL,
    created_at  INTEGER  NOT NULL
);

-- Every admin action: who (the operator's name), when, what, on what.
-- Written in the action's own transaction: no action without its entry.
CREATE TABLE admin_audit (
    id          INTEGER  PRIMARY KEY AUTOINCREMENT,
    operator    TEXT     NOT NULL,
    action      TEXT     NOT NULL,
    target      TEXT     NOT NULL,
    detail      TEXT     NOT NULL DEFAULT '{}',
    created_at  INTEGER  NOT NULL
);
