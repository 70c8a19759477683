//! The SQL text both backends share.

// Statements. Each is one static string so both drivers cache its prepared
// form per connection.

macro_rules! message_columns {
    () => {
        "id, conversation_id, seq, sender_id, client_msg_id, kind, body, media_key, created_at"
    };
}
pub(crate) use message_columns;

/// What a read of messages selects: the inserted columns and whether the
/// message is a tombstone (see [`super::rows::MessageRow`]).
macro_rules! stored_message_columns {
    () => {
        concat!($crate::sql::statements::message_columns!(), ", deleted_at")
    };
}
pub(crate) use stored_message_columns;

pub(super) const INSERT_MESSAGE: &str = concat!(
    "INSERT INTO messages (",
    message_columns!(),
    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
     ON CONFLICT (conversation_id, sender_id, client_msg_id) DO NOTHING \
     RETURNING seq"
);

pub(super) const INSERT_OUTBOX: &str = "INSERT INTO push_outbox \
     (message_id, conversation_id, seq, user_id, next_attempt_at, created_at) \
     VALUES ($1, $2, $3, $4, $5, $6)";

pub(super) const SELECT_BY_CLIENT_MSG_ID: &str = concat!(
    "SELECT ",
    stored_message_columns!(),
    " FROM messages WHERE conversation_id = $1 AND sender_id = $2 AND client_msg_id = $3"
);

pub(super) const SELECT_AFTER: &str = concat!(
    "SELECT ",
    stored_message_columns!(),
    " FROM messages WHERE conversation_id = $1 AND seq > $2 ORDER BY seq ASC LIMIT $3"
);

pub(super) const SELECT_BEFORE: &str = concat!(
    "SELECT ",
    stored_message_columns!(),
    " FROM messages WHERE conversation_id = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3"
);

pub(super) const INSERT_CONVERSATION: &str = "INSERT INTO conversations \
     (id, kind, listing_id, title, created_at) VALUES ($1, $2, $3, $4, $5) \
     ON CONFLICT (id) DO NOTHING";

/// Participants in a stable order: by join time, the creator (`owner`)
/// first among those who joined together, then by user id.
macro_rules! participant_order {
    () => {
        "joined_at, CASE WHEN role = 'owner' THEN 0 ELSE 1 END, user_id"
    };
}

/// A conversation with its participants, one row per participant (one row
/// with NULL participant columns when it has none), in the order of
/// `participant_order!`: what an owner loads, in one round trip. The last
/// seq is an uncorrelated subquery (read once, not per row) written as
/// `ORDER BY seq DESC LIMIT 1` so it is a backward scan of
/// `(conversation_id, seq)` whatever the planner's statistics say.
pub(super) const SELECT_CONVERSATION_STATE: &str = concat!(
    "SELECT c.id, c.kind, c.listing_id, c.title, c.listing_card, c.created_at, \
     COALESCE((SELECT m.seq FROM messages m WHERE m.conversation_id = $1 \
               ORDER BY m.seq DESC LIMIT 1), 0) AS last_seq, \
     p.user_id, p.role, p.last_read_seq, p.muted \
     FROM conversations c \
     LEFT JOIN conversation_participants p ON p.conversation_id = c.id \
     WHERE c.id = $1 ORDER BY ",
    participant_order!()
);

/// The user's conversations by last activity (last message, else creation),
/// with the last message and the capped unread count; not those the user
/// archived, unless a newer message came since.
pub(super) const SELECT_CONVERSATION_LIST: &str = "SELECT c.id, c.kind, c.listing_id, c.title, c.listing_card, c.created_at, \
         p.last_read_seq, p.muted, \
         (SELECT COUNT(*) FROM (SELECT 1 FROM messages u \
             WHERE u.conversation_id = c.id AND u.seq > p.last_read_seq AND u.sender_id <> p.user_id \
             LIMIT $3) AS unread) AS unread_count, \
         lm.id AS lm_id, lm.seq AS lm_seq, lm.sender_id AS lm_sender_id, \
         lm.client_msg_id AS lm_client_msg_id, lm.kind AS lm_kind, lm.body AS lm_body, \
         lm.media_key AS lm_media_key, lm.created_at AS lm_created_at, \
         lm.deleted_at AS lm_deleted_at \
     FROM conversation_participants p \
     JOIN conversations c ON c.id = p.conversation_id \
     LEFT JOIN messages lm ON lm.conversation_id = c.id \
         AND lm.seq = (SELECT MAX(m.seq) FROM messages m WHERE m.conversation_id = c.id) \
     WHERE p.user_id = $1 \
         AND (p.archived_seq IS NULL OR COALESCE(lm.seq, 0) > p.archived_seq) \
     ORDER BY COALESCE(lm.created_at, c.created_at) DESC, c.id DESC \
     LIMIT $2";

/// Sets (or, with NULL, clears) a conversation's listing card (JSON).
pub(super) const SET_LISTING_CARD: &str =
    "UPDATE conversations SET listing_card = $2 WHERE id = $1";

pub(super) const MARK_READ: &str = "UPDATE conversation_participants SET last_read_seq = $3 \
     WHERE conversation_id = $1 AND user_id = $2 AND last_read_seq < $3";

/// Registers a device token (`$1` token, `$2` user, `$3` platform, `$4`
/// now); `{conflict}` is the backend's arbiter of the token's uniqueness.
macro_rules! upsert_device {
    ($conflict:literal) => {
        concat!(
            "INSERT INTO user_devices \
             (token, user_id, platform, created_at, updated_at) VALUES ($1, $2, $3, $4, $4) \
             ON CONFLICT ",
            $conflict,
            " DO UPDATE SET user_id = excluded.user_id, \
             platform = excluded.platform, updated_at = excluded.updated_at"
        )
    };
}
pub(crate) use upsert_device;

pub(super) const RECORD_MEDIA_UPLOAD: &str = "INSERT INTO media_uploads \
     (media_key, conversation_id, uploader_id, content_type, size, created_at) \
     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (media_key) DO NOTHING";

pub(super) const SELECT_MEDIA_UPLOAD: &str =
    "SELECT media_key, uploader_id, content_type, size, created_at \
     FROM media_uploads WHERE conversation_id = $1 AND media_key = $2";

pub(super) const DELETE_DEVICE: &str = "DELETE FROM user_devices WHERE user_id = $1 AND token = $2";

pub(super) const DELETE_DEVICE_TOKEN: &str = "DELETE FROM user_devices WHERE token = $1";

/// Columns a claim returns (see [`Backend::CLAIM_PUSH_JOBS`]).
macro_rules! claimed_job_columns {
    () => {
        "id, message_id, user_id, attempts, done_tokens, created_at"
    };
}
pub(crate) use claimed_job_columns;

/// Finishes a claimed job: `$3` status (`pending` to retry), `$4` when it
/// finished or is due again, `$5` done tokens, `$6` the error, if any. For
/// a finished job `next_attempt_at` is when it finished (what the purge
/// goes by). Only the holder of the claim (`$2`) can.
pub(super) const FINISH_PUSH_JOB: &str =
    "UPDATE push_outbox SET status = $3, next_attempt_at = $4, \
         locked_until = NULL, claim_token = NULL, done_tokens = $5, last_error = $6 \
     WHERE id = $1 AND claim_token = $2 AND status = 'pending'";

/// Whether any job is due (`$1` now): a read, so idle workers polling the
/// outbox never take SQLite's write lock.
pub(super) const ANY_DUE_PUSH_JOB: &str =
    "SELECT COUNT(*) AS count FROM (SELECT 1 FROM push_outbox \
     WHERE status = 'pending' AND next_attempt_at <= $1 LIMIT 1) AS due";

pub(super) const PURGE_PUSH_JOBS: &str = "DELETE FROM push_outbox WHERE id IN (\
         SELECT id FROM push_outbox \
         WHERE status IN ('sent', 'failed') AND next_attempt_at < $1 LIMIT $2)";

/// Jobs by what is happening to them at `$1` (unix ms): `due`, `leased`
/// (a worker holds it), `waiting` (for its retry), `sent`, `failed`.
pub(super) const COUNT_PUSH_JOBS_BY_STATE: &str = "SELECT CASE \
         WHEN status <> 'pending' THEN status \
         WHEN locked_until IS NOT NULL AND locked_until > $1 THEN 'leased' \
         WHEN next_attempt_at > $1 THEN 'waiting' \
         ELSE 'due' END AS state, COUNT(*) AS count \
     FROM push_outbox GROUP BY 1";

pub(super) const COUNT_PENDING_PUSH_JOBS: &str =
    "SELECT COUNT(*) AS count FROM push_outbox WHERE status = 'pending'";

/// `status` of a job that is done.
pub(super) const PUSH_SENT: &str = "sent";
/// `status` of a job that failed for good.
pub(super) const PUSH_FAILED: &str = "failed";
/// `status` of a job waiting (or leased).
pub(super) const PUSH_PENDING: &str = "pending";
