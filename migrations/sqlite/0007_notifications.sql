-- Profiles and notification settings (issue 13). The PostgreSQL twin is
-- migrations/postgres/0007_notifications.sql.
--
-- A user's display name and avatar URL, from the `name` and `picture`
-- claims of their last session's token (kept by their home node).
CREATE TABLE user_profiles (
    user_id     TEXT     PRIMARY KEY NOT NULL,
    name        TEXT     NULL,
    avatar_url  TEXT     NULL,
    updated_at  INTEGER  NOT NULL
);

-- A user's notification settings: JSON of
-- turbochat_protocol::http::NotificationSettings (no row: the defaults).
CREATE TABLE notification_settings (
    user_id     TEXT     PRIMARY KEY NOT NULL,
    settings    TEXT     NOT NULL,
    updated_at  INTEGER  NOT NULL
);
