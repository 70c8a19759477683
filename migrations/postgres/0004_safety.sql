-- Trust and safety: blocks and reports. The SQLite twin is
-- migrations/sqlite/0004_safety.sql; keep the two in step.

-- `blocker_id` receives nothing from `blocked_id` in direct conversations,
-- and neither can start a new one with the other (docs/protocol.md, Blocking).
CREATE TABLE user_blocks (
    blocker_id  text    NOT NULL,
    blocked_id  text    NOT NULL,
    created_at  bigint  NOT NULL,
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
    id                bigserial  PRIMARY KEY,
    reporter_id       text       NOT NULL,
    reported_user_id  text       NOT NULL,
    conversation_id   uuid       NULL,
    reported_seq      bigint     NULL,
    reason            text       NOT NULL,
    note              text       NULL,
    evidence          text       NOT NULL DEFAULT '[]',
    status            text       NOT NULL DEFAULT 'open'
                                 CHECK (status IN ('open', 'resolved')),
    resolution        text       NULL,
    resolved_by       text       NULL,
    resolved_at       bigint     NULL,
    created_at        bigint     NOT NULL
);

CREATE INDEX reports_status_id_idx ON reports (status, id);

-- Banned users: their sends are refused, their sessions closed.
CREATE TABLE user_bans (
    user_id     text    PRIMARY KEY,
    reason      text    NOT NULL,
    banned_by   text    NOT NULL,
    created_at  bigint  NOT NULL
);

-- Every admin action: who (the operator's name), when, what, on what.
-- Written in the action's own transaction: no action without its entry.
CREATE TABLE admin_audit (
    id          bigserial  PRIMARY KEY,
    operator    text       NOT NULL,
    action      text       NOT NULL,
    target      text       NOT NULL,
    detail      text       NOT NULL DEFAULT '{}',
    created_at  bigint     NOT NULL
);
