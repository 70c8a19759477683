-- Profiles and notification settings (issue 13). The SQLite twin is
-- migrations/sqlite/0007_notifications.sql.
--
-- A user's display name and avatar URL, from the `name` and `picture`
-- claims of their last session's token (kept by their home node).
CREATE TABLE user_profiles (
    user_id     text    PRIMARY KEY,
    name        text    NULL,
    avatar_url  text    NULL,
    updated_at  bigint  NOT NULL
);

-- A user's notification settings: JSON of
-- turbochat_protocol::http::NotificationSettings (no row: the defaults).
CREATE TABLE notification_settings (
    user_id     text    PRIMARY KEY,
    settings    text    NOT NULL,
    updated_at  bigint  NOT NULL
);
