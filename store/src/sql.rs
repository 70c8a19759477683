//! The SQL both backends share, written once over [`sqlx::Database`].
//!
//! PostgreSQL and SQLite agree on nearly everything the store needs: `$n`
//! placeholders (SQLite accepts them), `INSERT ... ON CONFLICT (...) DO
//! NOTHING ... RETURNING`, `excluded.` in upserts, correlated subqueries and
//! `LIMIT` in derived tables. What differs sits behind [`Backend`]: how a
//! write transaction starts, how a seq conflict is recognised, and the fast
//! path of `append`. Uuids cross the boundary as [`DbUuid`], a native `uuid`
//! in PostgreSQL and hyphenated lowercase TEXT in SQLite.
//!
//! [`SqlStore`] holds the pool and implements every operation of
//! [`crate::Store`]; `PgStore` and `SqliteStore` wrap it and only add how to
//! connect and migrate ([`impl_store_via_sql!`]).

use std::collections::HashSet;
use std::future::Future;
use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::error::{BoxDynError, DatabaseError, ErrorKind};
use sqlx::{Database, Decode, Encode, Executor, FromRow, IntoArguments, Pool, Type};
use turbochat_protocol::http::{ConversationKind, ConversationView, MessageView};
use turbochat_protocol::ids::{ConversationId, Seq, UserId};
use turbochat_protocol::MessageKind;
use uuid::Uuid;

use crate::{
    AppendError, Appended, ConversationBatch, ConversationState, Device, MediaUpload,
    NewConversation, NewMessage, Participant, PushJob, StoreError,
};

/// Role of the participant who created a conversation (listed first).
pub(crate) const ROLE_OWNER: &str = "owner";
/// Role of every other participant.
pub(crate) const ROLE_MEMBER: &str = "member";
/// `unread_count` in conversation lists stops counting here, so a user with
/// a huge backlog does not make the list query scan it all.
pub(crate) const UNREAD_CAP: i64 = 1000;

/// A uuid as both databases store it: `uuid` in PostgreSQL, hyphenated
/// lowercase TEXT in SQLite (readable in the `sqlite3` shell, and what the
/// schema in `migrations/sqlite` declares).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct DbUuid(pub Uuid);

impl Type<sqlx::Postgres> for DbUuid {
    fn type_info() -> sqlx::postgres::PgTypeInfo {
        <Uuid as Type<sqlx::Postgres>>::type_info()
    }
}

impl Encode<'_, sqlx::Postgres> for DbUuid {
    fn encode_by_ref(
        &self,
        buf: &mut sqlx::postgres::PgArgumentBuffer,
    ) -> Result<sqlx::encode::IsNull, BoxDynError> {
        <Uuid as Encode<sqlx::Postgres>>::encode_by_ref(&self.0, buf)
    }
}

impl Decode<'_, sqlx::Postgres> for DbUuid {
    fn decode(value: sqlx::postgres::PgValueRef<'_>) -> Result<Self, BoxDynError> {
        <Uuid as Decode<sqlx::Postgres>>::decode(value).map(DbUuid)
    }
}

impl Type<sqlx::Sqlite> for DbUuid {
    fn type_info() -> sqlx::sqlite::SqliteTypeInfo {
        <uuid::fmt::Hyphenated as Type<sqlx::Sqlite>>::type_info()
    }
}

impl<'q> Encode<'q, sqlx::Sqlite> for DbUuid {
    fn encode_by_ref(
        &self,
        args: &mut Vec<sqlx::sqlite::SqliteArgumentValue<'q>>,
    ) -> Result<sqlx::encode::IsNull, BoxDynError> {
        <uuid::fmt::Hyphenated as Encode<sqlx::Sqlite>>::encode_by_ref(&self.0.hyphenated(), args)
    }
}

impl Decode<'_, sqlx::Sqlite> for DbUuid {
    fn decode(value: sqlx::sqlite::SqliteValueRef<'_>) -> Result<Self, BoxDynError> {
        <uuid::fmt::Hyphenated as Decode<sqlx::Sqlite>>::decode(value)
            .map(|id| DbUuid(id.into_uuid()))
    }
}

/// What a backend does its own way.
pub(crate) trait Backend: Database {
    /// Opens a transaction that is going to write. SQLite needs `BEGIN
    /// IMMEDIATE`: a deferred transaction that upgrades to a writer midway
    /// can fail with `SQLITE_BUSY` at once instead of waiting `busy_timeout`.
    const BEGIN_WRITE: &'static str;

    /// Whether [`Backend::write_fast`] is one statement that writes all of
    /// it or nothing, so it runs on its own (autocommit: one round trip)
    /// instead of inside `BEGIN`/`COMMIT`. Such a `write_fast` answers
    /// `Ok(None)` only when it wrote nothing.
    const FAST_WRITE_IS_ONE_STATEMENT: bool;

    /// Whether `err` is the unique violation of `(conversation_id, seq)`,
    /// i.e. another writer took a seq (guarantee 5).
    fn is_seq_conflict(err: &dyn DatabaseError) -> bool;

    /// Registers a device token: [`upsert_device`] with the backend's
    /// arbiter of token uniqueness.
    const UPSERT_DEVICE: &'static str;

    /// Whether `err` says a value is data the database cannot hold (the
    /// client's fault: retrying the same value fails again).
    fn is_bad_data(err: &dyn DatabaseError) -> bool;

    /// Rows an `INSERT`/`UPDATE`/`DELETE` touched.
    fn rows_affected(result: &Self::QueryResult) -> u64;

    /// Claims due push jobs: `$1` now, `$2` the lease's end, `$3` the claim
    /// token, `$4` the most rows; returns [`ClaimedJobRow`] columns. Two
    /// concurrent claims must never return the same row.
    const CLAIM_PUSH_JOBS: &'static str;

    /// Writes every batch, as [`SqlStore::write_stepwise`] would, inside the
    /// open write transaction `conn` (or on its own, see
    /// [`Backend::FAST_WRITE_IS_ONE_STATEMENT`]). May answer `Ok(None)`
    /// ("this needs the step-wise path"): the caller then rolls the
    /// transaction back and runs [`SqlStore::write_stepwise`] in a fresh one.
    fn write_fast<'a>(
        conn: &'a mut Self::Connection,
        batches: &'a [ConversationBatch],
    ) -> impl Future<Output = Result<Option<Vec<Vec<Appended>>>, WriteError>> + Send + 'a;
}

/// Why writing batches inside one transaction stopped. The transaction is
/// unusable either way and must be rolled back.
#[derive(Debug)]
pub(crate) enum WriteError {
    /// The database refused a statement because of what a batch holds (a
    /// taken seq, an unknown conversation, bad data). Writing each batch in
    /// its own transaction isolates the culprit.
    Rejected(AppendError),
    /// The database could not be used (connection, pool, protocol).
    Store(StoreError),
}

impl WriteError {
    /// Classifies a failed statement of a batch of `conversation_id` whose
    /// message was to take `seq`.
    pub(crate) fn classify<DB: Backend>(
        err: sqlx::Error,
        conversation_id: ConversationId,
        seq: Seq,
    ) -> Self {
        match &err {
            sqlx::Error::Database(db) if DB::is_seq_conflict(db.as_ref()) => {
                WriteError::Rejected(AppendError::SeqTaken {
                    conversation_id,
                    seq,
                })
            }
            sqlx::Error::Database(db) if DB::is_bad_data(db.as_ref()) => {
                WriteError::Rejected(AppendError::Invalid(err.to_string()))
            }
            sqlx::Error::Database(_) => WriteError::Rejected(AppendError::Failed(err.to_string())),
            _ => WriteError::Store(err.into()),
        }
    }

    /// Classifies a failed `BEGIN`/`COMMIT`: the server refusing it is on the
    /// batches (retry them one by one); anything else is on the database.
    fn from_transaction(err: sqlx::Error) -> Self {
        match err {
            sqlx::Error::Database(_) => WriteError::Rejected(AppendError::Failed(err.to_string())),
            other => WriteError::Store(other.into()),
        }
    }
}

impl From<StoreError> for WriteError {
    fn from(err: StoreError) -> Self {
        WriteError::Store(err)
    }
}

/// Current time in unix milliseconds.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A seq bound for a query (`after`, `before`, a read cursor): anything past
/// what the column can hold means "past everything".
pub(crate) fn seq_bound(seq: Seq) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

/// A seq to store: it must fit the column.
pub(crate) fn seq_to_store(seq: Seq) -> Result<i64, AppendError> {
    i64::try_from(seq).map_err(|_| AppendError::Failed(format!("seq {seq} is out of range")))
}

fn seq_from_row(seq: i64) -> Result<Seq, StoreError> {
    Seq::try_from(seq).map_err(|_| StoreError::Corrupt(format!("negative seq {seq}")))
}

/// Whether some `(conversation, sender, client_msg_id)` appears twice among
/// the batches: the second is a duplicate of the first, which a single
/// multi-row insert cannot tell apart from a duplicate of a stored message.
pub(crate) fn has_repeated_client_msg_id(batches: &[ConversationBatch]) -> bool {
    let mut seen = HashSet::new();
    batches.iter().any(|batch| {
        batch.messages.iter().any(|m| {
            !seen.insert((
                batch.conversation_id,
                m.sender_id.as_str(),
                m.client_msg_id.as_str(),
            ))
        })
    })
}

/// The view of `message` stored now with `seq`.
pub(crate) fn inserted_view(
    conversation_id: ConversationId,
    message: &NewMessage,
    seq: Seq,
) -> MessageView {
    MessageView {
        conversation_id,
        seq,
        message_id: message.message_id,
        sender_id: message.sender_id.clone(),
        client_msg_id: message.client_msg_id.clone(),
        kind: message.kind,
        body: message.body.clone(),
        media_key: message.media_key.clone(),
        created_at: message.created_at,
    }
}

/// Most rows (or list entries) bound in one statement: far below the
/// parameter limits (SQLite 32766, PostgreSQL 65535) even at 4 columns.
const ROWS_PER_STATEMENT: usize = 250;

/// `$first, $first+1, ...`, `count` placeholders (both dialects accept `$n`).
fn placeholder_list(first: usize, count: usize) -> String {
    (first..first + count)
        .map(|n| format!("${n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `($1, ..., $columns), (...)`: `rows` value tuples.
fn placeholder_rows(rows: usize, columns: usize) -> String {
    (0..rows)
        .map(|row| format!("({})", placeholder_list(row * columns + 1, columns)))
        .collect::<Vec<_>>()
        .join(", ")
}

// Statements. Each is one static string so both drivers cache its prepared
// form per connection.

macro_rules! message_columns {
    () => {
        "id, conversation_id, seq, sender_id, client_msg_id, kind, body, media_key, created_at"
    };
}

const INSERT_MESSAGE: &str = concat!(
    "INSERT INTO messages (",
    message_columns!(),
    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
     ON CONFLICT (conversation_id, sender_id, client_msg_id) DO NOTHING \
     RETURNING seq"
);

const INSERT_OUTBOX: &str = "INSERT INTO push_outbox \
     (message_id, conversation_id, seq, user_id, next_attempt_at, created_at) \
     VALUES ($1, $2, $3, $4, $5, $6)";

const SELECT_BY_CLIENT_MSG_ID: &str = concat!(
    "SELECT ",
    message_columns!(),
    " FROM messages WHERE conversation_id = $1 AND sender_id = $2 AND client_msg_id = $3"
);

const SELECT_AFTER: &str = concat!(
    "SELECT ",
    message_columns!(),
    " FROM messages WHERE conversation_id = $1 AND seq > $2 ORDER BY seq ASC LIMIT $3"
);

const SELECT_BEFORE: &str = concat!(
    "SELECT ",
    message_columns!(),
    " FROM messages WHERE conversation_id = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3"
);

const INSERT_CONVERSATION: &str = "INSERT INTO conversations \
     (id, kind, listing_id, title, created_at) VALUES ($1, $2, $3, $4, $5) \
     ON CONFLICT (id) DO NOTHING";

const SELECT_CONVERSATION: &str = "SELECT c.id, c.kind, c.listing_id, c.title, c.created_at, \
     COALESCE((SELECT MAX(m.seq) FROM messages m WHERE m.conversation_id = c.id), 0) AS last_seq \
     FROM conversations c WHERE c.id = $1";

/// Participants in a stable order: by join time, the creator (`owner`)
/// first among those who joined together, then by user id.
macro_rules! participant_order {
    () => {
        "joined_at, CASE WHEN role = 'owner' THEN 0 ELSE 1 END, user_id"
    };
}

const SELECT_PARTICIPANTS: &str = concat!(
    "SELECT user_id, role, last_read_seq, muted \
     FROM conversation_participants WHERE conversation_id = $1 ORDER BY ",
    participant_order!()
);

/// The user's conversations by last activity (last message, else creation),
/// with the last message and the capped unread count.
const SELECT_CONVERSATION_LIST: &str = "SELECT c.id, c.kind, c.listing_id, c.title, c.created_at, \
         p.last_read_seq, \
         (SELECT COUNT(*) FROM (SELECT 1 FROM messages u \
             WHERE u.conversation_id = c.id AND u.seq > p.last_read_seq AND u.sender_id <> p.user_id \
             LIMIT $3) AS unread) AS unread_count, \
         lm.id AS lm_id, lm.seq AS lm_seq, lm.sender_id AS lm_sender_id, \
         lm.client_msg_id AS lm_client_msg_id, lm.kind AS lm_kind, lm.body AS lm_body, \
         lm.media_key AS lm_media_key, lm.created_at AS lm_created_at \
     FROM conversation_participants p \
     JOIN conversations c ON c.id = p.conversation_id \
     LEFT JOIN messages lm ON lm.conversation_id = c.id \
         AND lm.seq = (SELECT MAX(m.seq) FROM messages m WHERE m.conversation_id = c.id) \
     WHERE p.user_id = $1 \
     ORDER BY COALESCE(lm.created_at, c.created_at) DESC, c.id DESC \
     LIMIT $2";

const MARK_READ: &str = "UPDATE conversation_participants SET last_read_seq = $3 \
     WHERE conversation_id = $1 AND user_id = $2 AND last_read_seq < $3";

const CONTACTS: &str = "SELECT DISTINCT other.user_id FROM conversation_participants me \
     JOIN conversation_participants other ON other.conversation_id = me.conversation_id \
     WHERE me.user_id = $1 AND other.user_id <> $1 ORDER BY other.user_id LIMIT $2";

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

const RECORD_MEDIA_UPLOAD: &str = "INSERT INTO media_uploads \
     (media_key, conversation_id, uploader_id, content_type, size, created_at) \
     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (media_key) DO NOTHING";

const SELECT_MEDIA_UPLOAD: &str = "SELECT media_key, uploader_id, content_type, size, created_at \
     FROM media_uploads WHERE conversation_id = $1 AND media_key = $2";

const DELETE_DEVICE: &str = "DELETE FROM user_devices WHERE user_id = $1 AND token = $2";

const DELETE_DEVICE_TOKEN: &str = "DELETE FROM user_devices WHERE token = $1";

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
const FINISH_PUSH_JOB: &str = "UPDATE push_outbox SET status = $3, next_attempt_at = $4, \
         locked_until = NULL, claim_token = NULL, done_tokens = $5, last_error = $6 \
     WHERE id = $1 AND claim_token = $2 AND status = 'pending'";

/// Whether any job is due (`$1` now): a read, so idle workers polling the
/// outbox never take SQLite's write lock.
const ANY_DUE_PUSH_JOB: &str = "SELECT COUNT(*) AS count FROM (SELECT 1 FROM push_outbox \
     WHERE status = 'pending' AND next_attempt_at <= $1 LIMIT 1) AS due";

const PURGE_PUSH_JOBS: &str = "DELETE FROM push_outbox WHERE id IN (\
         SELECT id FROM push_outbox \
         WHERE status IN ('sent', 'failed') AND next_attempt_at < $1 LIMIT $2)";

/// Jobs by what is happening to them at `$1` (unix ms): `due`, `leased`
/// (a worker holds it), `waiting` (for its retry), `sent`, `failed`.
const COUNT_PUSH_JOBS_BY_STATE: &str = "SELECT CASE \
         WHEN status <> 'pending' THEN status \
         WHEN locked_until IS NOT NULL AND locked_until > $1 THEN 'leased' \
         WHEN next_attempt_at > $1 THEN 'waiting' \
         ELSE 'due' END AS state, COUNT(*) AS count \
     FROM push_outbox GROUP BY 1";

const COUNT_PENDING_PUSH_JOBS: &str =
    "SELECT COUNT(*) AS count FROM push_outbox WHERE status = 'pending'";

/// `status` of a job that is done.
const PUSH_SENT: &str = "sent";
/// `status` of a job that failed for good.
const PUSH_FAILED: &str = "failed";
/// `status` of a job waiting (or leased).
const PUSH_PENDING: &str = "pending";

// Rows.

#[derive(FromRow)]
pub(crate) struct MessageRow {
    id: DbUuid,
    conversation_id: DbUuid,
    seq: i64,
    sender_id: String,
    client_msg_id: String,
    kind: String,
    body: String,
    media_key: Option<String>,
    created_at: i64,
}

impl TryFrom<MessageRow> for MessageView {
    type Error = StoreError;

    fn try_from(row: MessageRow) -> Result<Self, StoreError> {
        Ok(MessageView {
            conversation_id: row.conversation_id.0,
            seq: seq_from_row(row.seq)?,
            message_id: row.id.0,
            sender_id: row.sender_id,
            client_msg_id: row.client_msg_id,
            kind: parse_message_kind(&row.kind)?,
            body: row.body,
            media_key: row.media_key,
            created_at: row.created_at,
        })
    }
}

fn parse_message_kind(kind: &str) -> Result<MessageKind, StoreError> {
    MessageKind::parse(kind).ok_or_else(|| StoreError::Corrupt(format!("message kind {kind:?}")))
}

fn parse_conversation_kind(kind: &str) -> Result<ConversationKind, StoreError> {
    ConversationKind::parse(kind)
        .ok_or_else(|| StoreError::Corrupt(format!("conversation kind {kind:?}")))
}

#[derive(FromRow)]
pub(crate) struct ConversationRow {
    id: DbUuid,
    kind: String,
    listing_id: Option<String>,
    title: Option<String>,
    created_at: i64,
    last_seq: i64,
}

#[derive(FromRow)]
pub(crate) struct ParticipantRow {
    user_id: String,
    role: String,
    last_read_seq: i64,
    muted: bool,
}

impl TryFrom<ParticipantRow> for Participant {
    type Error = StoreError;

    fn try_from(row: ParticipantRow) -> Result<Self, StoreError> {
        Ok(Participant {
            user_id: row.user_id,
            role: row.role,
            last_read_seq: seq_from_row(row.last_read_seq)?,
            muted: row.muted,
        })
    }
}

#[derive(FromRow)]
pub(crate) struct MemberRow {
    conversation_id: DbUuid,
    user_id: String,
}

#[derive(FromRow)]
pub(crate) struct ConversationListRow {
    id: DbUuid,
    kind: String,
    listing_id: Option<String>,
    title: Option<String>,
    created_at: i64,
    last_read_seq: i64,
    unread_count: i64,
    lm_id: Option<DbUuid>,
    lm_seq: Option<i64>,
    lm_sender_id: Option<String>,
    lm_client_msg_id: Option<String>,
    lm_kind: Option<String>,
    lm_body: Option<String>,
    lm_media_key: Option<String>,
    lm_created_at: Option<i64>,
}

impl ConversationListRow {
    /// The last message, if the conversation has one.
    fn last_message(&mut self) -> Result<Option<MessageRow>, StoreError> {
        let Some(id) = self.lm_id else {
            return Ok(None);
        };
        let missing = || StoreError::Corrupt(format!("last message {} is incomplete", id.0));
        Ok(Some(MessageRow {
            id,
            conversation_id: self.id,
            seq: self.lm_seq.ok_or_else(missing)?,
            sender_id: self.lm_sender_id.take().ok_or_else(missing)?,
            client_msg_id: self.lm_client_msg_id.take().ok_or_else(missing)?,
            kind: self.lm_kind.take().ok_or_else(missing)?,
            body: self.lm_body.take().ok_or_else(missing)?,
            media_key: self.lm_media_key.take(),
            created_at: self.lm_created_at.ok_or_else(missing)?,
        }))
    }
}

#[derive(FromRow)]
pub(crate) struct DeviceRow {
    user_id: String,
    platform: String,
    token: String,
    updated_at: i64,
}

#[derive(FromRow)]
pub(crate) struct MediaUploadRow {
    media_key: String,
    uploader_id: String,
    content_type: String,
    size: i64,
    created_at: i64,
}

#[derive(FromRow)]
pub(crate) struct StateCountRow {
    state: String,
    count: i64,
}

#[derive(FromRow)]
pub(crate) struct UserRow {
    user_id: String,
}

#[derive(FromRow)]
pub(crate) struct CountRow {
    count: i64,
}

#[derive(FromRow)]
pub(crate) struct ClaimedJobRow {
    id: i64,
    message_id: DbUuid,
    user_id: String,
    attempts: i32,
    done_tokens: String,
    created_at: i64,
}

/// A pool and every store operation, for any [`Backend`].
pub(crate) struct SqlStore<DB: Database> {
    pub(crate) pool: Pool<DB>,
}

impl<DB> SqlStore<DB>
where
    DB: Backend + sqlx::database::HasStatementCache,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> DbUuid: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> bool: Decode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> Option<&'q str>: Encode<'q, DB> + Type<DB>,
    for<'r> MessageRow: FromRow<'r, DB::Row>,
    for<'r> ConversationRow: FromRow<'r, DB::Row>,
    for<'r> ParticipantRow: FromRow<'r, DB::Row>,
    for<'r> MemberRow: FromRow<'r, DB::Row>,
    for<'r> ConversationListRow: FromRow<'r, DB::Row>,
    for<'r> DeviceRow: FromRow<'r, DB::Row>,
    for<'r> MediaUploadRow: FromRow<'r, DB::Row>,
    for<'r> UserRow: FromRow<'r, DB::Row>,
    for<'r> StateCountRow: FromRow<'r, DB::Row>,
    for<'r> ClaimedJobRow: FromRow<'r, DB::Row>,
    for<'r> CountRow: FromRow<'r, DB::Row>,
{
    /// Wraps a pool whose schema is (or will be) migrated.
    pub(crate) fn new(pool: Pool<DB>) -> Self {
        SqlStore { pool }
    }

    /// See [`crate::Store::create_conversation`]: one write transaction that
    /// inserts the conversation and its participants unless the id exists,
    /// then reads the stored state back.
    pub(crate) async fn create_conversation(
        &self,
        new: &NewConversation,
    ) -> Result<ConversationState, StoreError> {
        let mut tx = self.pool.begin_with(DB::BEGIN_WRITE).await?;
        let created = sqlx::query(INSERT_CONVERSATION)
            .bind(DbUuid(new.conversation_id))
            .bind(new.kind.as_str())
            .bind(new.listing_id.as_deref())
            .bind(new.title.as_deref())
            .bind(new.created_at)
            .execute(&mut *tx)
            .await?;
        if DB::rows_affected(&created) == 1 && !new.participants.is_empty() {
            for (chunk, users) in new.participants.chunks(ROWS_PER_STATEMENT).enumerate() {
                let statement = format!(
                    "INSERT INTO conversation_participants \
                     (conversation_id, user_id, role, joined_at) VALUES {} \
                     ON CONFLICT (conversation_id, user_id) DO NOTHING",
                    placeholder_rows(users.len(), 4)
                );
                // A participant listed twice joins once (ON CONFLICT above).
                let mut insert = sqlx::query::<DB>(&statement).persistent(false);
                for (i, user) in users.iter().enumerate() {
                    let creator = chunk == 0 && i == 0;
                    insert = insert
                        .bind(DbUuid(new.conversation_id))
                        .bind(user.as_str())
                        .bind(if creator { ROLE_OWNER } else { ROLE_MEMBER })
                        .bind(new.created_at);
                }
                insert.execute(&mut *tx).await?;
            }
        }
        let state = Self::load_state(&mut tx, new.conversation_id)
            .await?
            .ok_or_else(|| {
                StoreError::Corrupt(format!(
                    "conversation {} vanished while being created",
                    new.conversation_id
                ))
            })?;
        tx.commit().await?;
        Ok(state)
    }

    /// See [`crate::Store::load_conversation`].
    pub(crate) async fn load_conversation(
        &self,
        id: ConversationId,
    ) -> Result<Option<ConversationState>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        Self::load_state(&mut conn, id).await
    }

    async fn load_state(
        conn: &mut DB::Connection,
        id: ConversationId,
    ) -> Result<Option<ConversationState>, StoreError> {
        let Some(row) = sqlx::query_as::<DB, ConversationRow>(SELECT_CONVERSATION)
            .bind(DbUuid(id))
            .fetch_optional(&mut *conn)
            .await?
        else {
            return Ok(None);
        };
        let participants = sqlx::query_as::<DB, ParticipantRow>(SELECT_PARTICIPANTS)
            .bind(DbUuid(id))
            .fetch_all(&mut *conn)
            .await?
            .into_iter()
            .map(Participant::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some(ConversationState {
            conversation_id: row.id.0,
            kind: parse_conversation_kind(&row.kind)?,
            listing_id: row.listing_id,
            title: row.title,
            created_at: row.created_at,
            participants,
            last_seq: seq_from_row(row.last_seq)?,
        }))
    }

    /// See [`crate::Store::append`]. All batches go into one write
    /// transaction through [`Backend::write_fast`]. If the database rejects
    /// any of them, every batch is retried in its own transaction, so only
    /// the culprit fails and the others commit.
    pub(crate) async fn append(
        &self,
        batches: &[ConversationBatch],
    ) -> Result<Vec<Result<Vec<Appended>, AppendError>>, StoreError> {
        if batches.is_empty() {
            return Ok(Vec::new());
        }
        match self.write_together(batches).await {
            Ok(written) => Ok(written.into_iter().map(Ok).collect()),
            Err(WriteError::Store(err)) => Err(err),
            Err(WriteError::Rejected(reason)) => {
                tracing::debug!(%reason, batches = batches.len(), "group commit rejected; writing batch by batch");
                let mut results = Vec::with_capacity(batches.len());
                for batch in batches {
                    results.push(self.write_alone(batch).await);
                }
                Ok(results)
            }
        }
    }

    async fn write_together(
        &self,
        batches: &[ConversationBatch],
    ) -> Result<Vec<Vec<Appended>>, WriteError> {
        let fast = if DB::FAST_WRITE_IS_ONE_STATEMENT {
            let mut conn = self
                .pool
                .acquire()
                .await
                .map_err(WriteError::from_transaction)?;
            DB::write_fast(&mut conn, batches).await?
        } else {
            let mut tx = self.begin_write().await?;
            match DB::write_fast(&mut tx, batches).await? {
                Some(written) => {
                    tx.commit().await.map_err(WriteError::from_transaction)?;
                    Some(written)
                }
                None => {
                    tx.rollback().await.map_err(WriteError::from_transaction)?;
                    None
                }
            }
        };
        if let Some(written) = fast {
            return Ok(written);
        }
        // Nothing was written: step by step, in one transaction.
        let mut tx = self.begin_write().await?;
        let written = Self::write_stepwise(&mut tx, batches).await?;
        tx.commit().await.map_err(WriteError::from_transaction)?;
        Ok(written)
    }

    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, DB>, WriteError> {
        self.pool
            .begin_with(DB::BEGIN_WRITE)
            .await
            .map_err(WriteError::from_transaction)
    }

    async fn write_alone(&self, batch: &ConversationBatch) -> Result<Vec<Appended>, AppendError> {
        let attempt = async {
            let mut tx = self.begin_write().await?;
            let written = Self::write_batch_stepwise(&mut tx, batch).await?;
            tx.commit().await.map_err(WriteError::from_transaction)?;
            Ok::<_, WriteError>(written)
        };
        attempt.await.map_err(|err| match err {
            WriteError::Rejected(reason) => reason,
            WriteError::Store(err) => AppendError::Failed(err.to_string()),
        })
    }

    /// Writes the batches message by message inside the open write
    /// transaction `conn`: each insert either takes the next seq or finds
    /// its `(conversation, sender, client_msg_id)` already stored (earlier,
    /// or earlier in this very batch) and reads that message back. Stops at
    /// the first refused statement.
    pub(crate) async fn write_stepwise(
        conn: &mut DB::Connection,
        batches: &[ConversationBatch],
    ) -> Result<Vec<Vec<Appended>>, WriteError> {
        let mut written = Vec::with_capacity(batches.len());
        for batch in batches {
            written.push(Self::write_batch_stepwise(conn, batch).await?);
        }
        Ok(written)
    }

    async fn write_batch_stepwise(
        conn: &mut DB::Connection,
        batch: &ConversationBatch,
    ) -> Result<Vec<Appended>, WriteError> {
        let conversation = DbUuid(batch.conversation_id);
        let mut next = batch.first_seq;
        let mut appended = Vec::with_capacity(batch.messages.len());
        for message in &batch.messages {
            let seq = seq_to_store(next).map_err(WriteError::Rejected)?;
            let refused = |err| WriteError::classify::<DB>(err, batch.conversation_id, next);
            let inserted = sqlx::query(INSERT_MESSAGE)
                .bind(DbUuid(message.message_id))
                .bind(conversation)
                .bind(seq)
                .bind(message.sender_id.as_str())
                .bind(message.client_msg_id.as_str())
                .bind(message.kind.as_str())
                .bind(message.body.as_str())
                .bind(message.media_key.as_deref())
                .bind(message.created_at)
                .fetch_optional(&mut *conn)
                .await
                .map_err(refused)?;
            if inserted.is_none() {
                let stored = sqlx::query_as::<DB, MessageRow>(SELECT_BY_CLIENT_MSG_ID)
                    .bind(conversation)
                    .bind(message.sender_id.as_str())
                    .bind(message.client_msg_id.as_str())
                    .fetch_optional(&mut *conn)
                    .await
                    .map_err(refused)?
                    .ok_or_else(|| {
                        WriteError::Rejected(AppendError::Failed(format!(
                            "client_msg_id {:?} of {} conflicted but is not stored",
                            message.client_msg_id, message.sender_id
                        )))
                    })?;
                appended.push(Appended::Duplicate(stored.try_into()?));
                continue;
            }
            for user in &message.push_to {
                sqlx::query(INSERT_OUTBOX)
                    .bind(DbUuid(message.message_id))
                    .bind(conversation)
                    .bind(seq)
                    .bind(user.as_str())
                    .bind(message.created_at)
                    .bind(message.created_at)
                    .execute(&mut *conn)
                    .await
                    .map_err(refused)?;
            }
            appended.push(Appended::Inserted(inserted_view(
                batch.conversation_id,
                message,
                next,
            )));
            next += 1;
        }
        Ok(appended)
    }

    /// Runs `{select} ($1, ...) {order}` with `keys` bound to the list, in
    /// chunks that stay below either database's parameter limit; the rows of
    /// the chunks are concatenated.
    async fn select_in<R, K>(
        &self,
        select: &str,
        order: &str,
        keys: &[K],
    ) -> Result<Vec<R>, StoreError>
    where
        R: for<'r> FromRow<'r, DB::Row> + Send + Unpin,
        K: for<'q> Encode<'q, DB> + Type<DB> + Sync + 'static,
    {
        let mut rows = Vec::new();
        for chunk in keys.chunks(ROWS_PER_STATEMENT) {
            let statement = format!("{select} ({}) {order}", placeholder_list(1, chunk.len()));
            // The text varies with the chunk size: not worth a cached statement.
            let mut query = sqlx::query_as::<DB, R>(&statement).persistent(false);
            for key in chunk {
                query = query.bind(key);
            }
            rows.extend(query.fetch_all(&self.pool).await?);
        }
        Ok(rows)
    }

    /// See [`crate::Store::messages_after`].
    pub(crate) async fn messages_after(
        &self,
        id: ConversationId,
        after: Seq,
        limit: u32,
    ) -> Result<Vec<MessageView>, StoreError> {
        self.messages(SELECT_AFTER, id, seq_bound(after), limit)
            .await
    }

    /// See [`crate::Store::history`].
    pub(crate) async fn history(
        &self,
        id: ConversationId,
        before: Option<Seq>,
        limit: u32,
    ) -> Result<Vec<MessageView>, StoreError> {
        let before = before.map_or(i64::MAX, seq_bound);
        self.messages(SELECT_BEFORE, id, before, limit).await
    }

    async fn messages(
        &self,
        statement: &'static str,
        id: ConversationId,
        seq: i64,
        limit: u32,
    ) -> Result<Vec<MessageView>, StoreError> {
        sqlx::query_as::<DB, MessageRow>(statement)
            .bind(DbUuid(id))
            .bind(seq)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .map(MessageView::try_from)
            .collect()
    }

    /// See [`crate::Store::list_conversations`]: one query for the list, one
    /// for the participants of the listed conversations.
    pub(crate) async fn list_conversations(
        &self,
        user: &str,
        limit: u32,
    ) -> Result<Vec<ConversationView>, StoreError> {
        let rows = sqlx::query_as::<DB, ConversationListRow>(SELECT_CONVERSATION_LIST)
            .bind(user)
            .bind(i64::from(limit))
            .bind(UNREAD_CAP)
            .fetch_all(&self.pool)
            .await?;
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<DbUuid> = rows.iter().map(|row| row.id).collect();
        let members: Vec<MemberRow> = self
            .select_in(
                "SELECT conversation_id, user_id FROM conversation_participants \
                 WHERE conversation_id IN",
                concat!("ORDER BY conversation_id, ", participant_order!()),
                &ids,
            )
            .await?;
        let mut participants = std::collections::HashMap::<Uuid, Vec<UserId>>::new();
        for member in members {
            participants
                .entry(member.conversation_id.0)
                .or_default()
                .push(member.user_id);
        }
        rows.into_iter()
            .map(|mut row| {
                let last_message = row.last_message()?.map(MessageView::try_from).transpose()?;
                Ok(ConversationView {
                    conversation_id: row.id.0,
                    kind: parse_conversation_kind(&row.kind)?,
                    listing_id: row.listing_id,
                    title: row.title,
                    participants: participants.remove(&row.id.0).unwrap_or_default(),
                    created_at: row.created_at,
                    last_seq: last_message.as_ref().map_or(0, |m| m.seq),
                    last_read_seq: seq_from_row(row.last_read_seq)?,
                    unread_count: u64::try_from(row.unread_count).map_err(|_| {
                        StoreError::Corrupt(format!("unread count {}", row.unread_count))
                    })?,
                    last_message,
                })
            })
            .collect()
    }

    /// See [`crate::Store::mark_read`].
    pub(crate) async fn mark_read(
        &self,
        id: ConversationId,
        user: &str,
        seq: Seq,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(MARK_READ)
            .bind(DbUuid(id))
            .bind(user)
            .bind(seq_bound(seq))
            .execute(&self.pool)
            .await?;
        Ok(DB::rows_affected(&done) == 1)
    }

    /// See [`crate::Store::contacts`].
    pub(crate) async fn contacts(&self, user: &str, limit: u32) -> Result<Vec<UserId>, StoreError> {
        let rows: Vec<UserRow> = sqlx::query_as(CONTACTS)
            .bind(user)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().map(|row| row.user_id).collect())
    }

    /// See [`crate::Store::upsert_device`].
    pub(crate) async fn upsert_device(
        &self,
        user: &str,
        platform: &str,
        token: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(DB::UPSERT_DEVICE)
            .bind(token)
            .bind(user)
            .bind(platform)
            .bind(now_ms())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// See [`crate::Store::delete_device`].
    pub(crate) async fn delete_device(&self, user: &str, token: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(DELETE_DEVICE)
            .bind(user)
            .bind(token)
            .execute(&self.pool)
            .await?;
        Ok(DB::rows_affected(&done) == 1)
    }

    /// See [`crate::Store::devices_of`].
    pub(crate) async fn devices_of(&self, users: &[UserId]) -> Result<Vec<Device>, StoreError> {
        if users.is_empty() {
            return Ok(Vec::new());
        }
        let rows: Vec<DeviceRow> = self
            .select_in(
                "SELECT user_id, platform, token, updated_at FROM user_devices WHERE user_id IN",
                "ORDER BY user_id, token",
                users,
            )
            .await?;
        Ok(rows
            .into_iter()
            .map(|row| Device {
                user_id: row.user_id,
                platform: row.platform,
                token: row.token,
                updated_at: row.updated_at,
            })
            .collect())
    }
    /// See [`crate::Store::record_media_upload`].
    pub(crate) async fn record_media_upload(&self, upload: &MediaUpload) -> Result<(), StoreError> {
        let size = i64::try_from(upload.size).map_err(|_| {
            StoreError::Corrupt(format!("upload size {} is out of range", upload.size))
        })?;
        sqlx::query(RECORD_MEDIA_UPLOAD)
            .bind(upload.media_key.as_str())
            .bind(DbUuid(upload.conversation_id))
            .bind(upload.uploader_id.as_str())
            .bind(upload.content_type.as_str())
            .bind(size)
            .bind(upload.created_at)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// See [`crate::Store::media_upload`].
    pub(crate) async fn media_upload(
        &self,
        conversation: ConversationId,
        media_key: &str,
    ) -> Result<Option<MediaUpload>, StoreError> {
        let row: Option<MediaUploadRow> = sqlx::query_as(SELECT_MEDIA_UPLOAD)
            .bind(DbUuid(conversation))
            .bind(media_key)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| {
            Ok(MediaUpload {
                media_key: row.media_key,
                conversation_id: conversation,
                uploader_id: row.uploader_id,
                content_type: row.content_type,
                size: u64::try_from(row.size)
                    .map_err(|_| StoreError::Corrupt(format!("upload size {}", row.size)))?,
                created_at: row.created_at,
            })
        })
        .transpose()
    }

    /// See [`crate::Store::delete_device_token`].
    pub(crate) async fn delete_device_token(&self, token: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(DELETE_DEVICE_TOKEN)
            .bind(token)
            .execute(&self.pool)
            .await?;
        Ok(DB::rows_affected(&done) == 1)
    }

    /// See [`crate::Store::claim_push_jobs`]: one statement claims the rows
    /// ([`Backend::CLAIM_PUSH_JOBS`]), one more reads their messages.
    pub(crate) async fn claim_push_jobs(
        &self,
        now: i64,
        limit: u32,
        lease: std::time::Duration,
    ) -> Result<Vec<PushJob>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let CountRow { count: due } = sqlx::query_as(ANY_DUE_PUSH_JOB)
            .bind(now)
            .fetch_one(&self.pool)
            .await?;
        if due == 0 {
            return Ok(Vec::new());
        }
        let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
        let claim = Uuid::new_v4().to_string();
        let mut rows: Vec<ClaimedJobRow> = sqlx::query_as(DB::CLAIM_PUSH_JOBS)
            .bind(now)
            .bind(now.saturating_add(lease_ms.max(1)))
            .bind(claim.as_str())
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        rows.sort_by_key(|row| row.id);
        let ids: Vec<DbUuid> = rows.iter().map(|row| row.message_id).collect();
        let messages: Vec<MessageRow> = self
            .select_in(
                concat!("SELECT ", message_columns!(), " FROM messages WHERE id IN"),
                "",
                &ids,
            )
            .await?;
        // Several jobs (recipients) may share a message.
        let messages: std::collections::HashMap<Uuid, MessageView> = messages
            .into_iter()
            .map(|row| MessageView::try_from(row).map(|m| (m.message_id, m)))
            .collect::<Result<_, _>>()?;
        let mut jobs = Vec::with_capacity(rows.len());
        for row in rows {
            let attempt = u32::try_from(row.attempts)
                .map_err(|_| StoreError::Corrupt(format!("push job {} attempts", row.id)))?;
            let done_tokens: Vec<String> = serde_json::from_str(&row.done_tokens).map_err(|e| {
                StoreError::Corrupt(format!("push job {} done_tokens: {e}", row.id))
            })?;
            let Some(message) = messages.get(&row.message_id.0).cloned() else {
                // The message is gone (the row cascades away with it; this
                // is the race with its deletion): nothing left to announce.
                sqlx::query(FINISH_PUSH_JOB)
                    .bind(row.id)
                    .bind(claim.as_str())
                    .bind(PUSH_FAILED)
                    .bind(now)
                    .bind(row.done_tokens.as_str())
                    .bind(Some("message no longer exists"))
                    .execute(&self.pool)
                    .await?;
                continue;
            };
            jobs.push(PushJob {
                id: row.id,
                claim: claim.clone(),
                attempt,
                user_id: row.user_id,
                message,
                done_tokens,
                created_at: row.created_at,
            });
        }
        Ok(jobs)
    }

    /// Writes the outcome of a claimed job; `false` if the claim is lost.
    pub(crate) async fn finish_push_job(
        &self,
        job: &PushJob,
        status: &str,
        at: i64,
        error: Option<&str>,
    ) -> Result<bool, StoreError> {
        let done_tokens = serde_json::to_string(&job.done_tokens)
            .map_err(|e| StoreError::Corrupt(format!("done_tokens: {e}")))?;
        let done = sqlx::query(FINISH_PUSH_JOB)
            .bind(job.id)
            .bind(job.claim.as_str())
            .bind(status)
            .bind(at)
            .bind(done_tokens.as_str())
            .bind(error)
            .execute(&self.pool)
            .await?;
        Ok(DB::rows_affected(&done) == 1)
    }

    /// See [`crate::Store::complete_push_job`].
    pub(crate) async fn complete_push_job(&self, job: &PushJob) -> Result<bool, StoreError> {
        self.finish_push_job(job, PUSH_SENT, now_ms(), None).await
    }

    /// See [`crate::Store::fail_push_job`].
    pub(crate) async fn fail_push_job(
        &self,
        job: &PushJob,
        reason: &str,
    ) -> Result<bool, StoreError> {
        self.finish_push_job(job, PUSH_FAILED, now_ms(), Some(reason))
            .await
    }

    /// See [`crate::Store::reschedule_push_job`].
    pub(crate) async fn reschedule_push_job(
        &self,
        job: &PushJob,
        at: i64,
        reason: &str,
    ) -> Result<bool, StoreError> {
        self.finish_push_job(job, PUSH_PENDING, at, Some(reason))
            .await
    }

    /// See [`crate::Store::purge_push_jobs`].
    pub(crate) async fn purge_push_jobs(&self, before: i64, limit: u32) -> Result<u64, StoreError> {
        let done = sqlx::query(PURGE_PUSH_JOBS)
            .bind(before)
            .bind(i64::from(limit))
            .execute(&self.pool)
            .await?;
        Ok(DB::rows_affected(&done))
    }

    /// See [`crate::Store::pending_push_jobs`].
    /// See [`crate::Store::push_jobs_by_state`].
    pub(crate) async fn push_jobs_by_state(
        &self,
        now: i64,
    ) -> Result<Vec<(String, u64)>, StoreError> {
        let rows: Vec<StateCountRow> = sqlx::query_as(COUNT_PUSH_JOBS_BY_STATE)
            .bind(now)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .into_iter()
            .map(|row| (row.state, u64::try_from(row.count).unwrap_or(0)))
            .collect())
    }

    pub(crate) async fn pending_push_jobs(&self) -> Result<u64, StoreError> {
        let CountRow { count } = sqlx::query_as(COUNT_PENDING_PUSH_JOBS)
            .fetch_one(&self.pool)
            .await?;
        u64::try_from(count).map_err(|_| StoreError::Corrupt(format!("pending count {count}")))
    }
}

/// Implements [`crate::Store`] for a type with a `sql: SqlStore<_>` field and
/// a `migrator()` function, by delegating every operation to [`SqlStore`].
macro_rules! impl_store_via_sql {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl $crate::Store for $store {
            async fn migrate(&self) -> Result<(), $crate::StoreError> {
                Self::migrator().run(&self.sql.pool).await?;
                Ok(())
            }

            async fn create_conversation(
                &self,
                new: &$crate::NewConversation,
            ) -> Result<$crate::ConversationState, $crate::StoreError> {
                self.sql.create_conversation(new).await
            }

            async fn load_conversation(
                &self,
                id: turbochat_protocol::ids::ConversationId,
            ) -> Result<Option<$crate::ConversationState>, $crate::StoreError> {
                self.sql.load_conversation(id).await
            }

            async fn append(
                &self,
                batches: &[$crate::ConversationBatch],
            ) -> Result<Vec<Result<Vec<$crate::Appended>, $crate::AppendError>>, $crate::StoreError>
            {
                self.sql.append(batches).await
            }

            async fn messages_after(
                &self,
                id: turbochat_protocol::ids::ConversationId,
                after: turbochat_protocol::ids::Seq,
                limit: u32,
            ) -> Result<Vec<turbochat_protocol::http::MessageView>, $crate::StoreError> {
                self.sql.messages_after(id, after, limit).await
            }

            async fn history(
                &self,
                id: turbochat_protocol::ids::ConversationId,
                before: Option<turbochat_protocol::ids::Seq>,
                limit: u32,
            ) -> Result<Vec<turbochat_protocol::http::MessageView>, $crate::StoreError> {
                self.sql.history(id, before, limit).await
            }

            async fn list_conversations(
                &self,
                user: &str,
                limit: u32,
            ) -> Result<Vec<turbochat_protocol::http::ConversationView>, $crate::StoreError> {
                self.sql.list_conversations(user, limit).await
            }

            async fn mark_read(
                &self,
                id: turbochat_protocol::ids::ConversationId,
                user: &str,
                seq: turbochat_protocol::ids::Seq,
            ) -> Result<bool, $crate::StoreError> {
                self.sql.mark_read(id, user, seq).await
            }

            async fn upsert_device(
                &self,
                user: &str,
                platform: &str,
                token: &str,
            ) -> Result<(), $crate::StoreError> {
                self.sql.upsert_device(user, platform, token).await
            }

            async fn delete_device(
                &self,
                user: &str,
                token: &str,
            ) -> Result<bool, $crate::StoreError> {
                self.sql.delete_device(user, token).await
            }

            async fn devices_of(
                &self,
                users: &[turbochat_protocol::ids::UserId],
            ) -> Result<Vec<$crate::Device>, $crate::StoreError> {
                self.sql.devices_of(users).await
            }

            async fn contacts(
                &self,
                user: &str,
                limit: u32,
            ) -> Result<Vec<turbochat_protocol::ids::UserId>, $crate::StoreError> {
                self.sql.contacts(user, limit).await
            }

            async fn record_media_upload(
                &self,
                upload: &$crate::MediaUpload,
            ) -> Result<(), $crate::StoreError> {
                self.sql.record_media_upload(upload).await
            }

            async fn media_upload(
                &self,
                conversation: turbochat_protocol::ids::ConversationId,
                media_key: &str,
            ) -> Result<Option<$crate::MediaUpload>, $crate::StoreError> {
                self.sql.media_upload(conversation, media_key).await
            }

            async fn delete_device_token(&self, token: &str) -> Result<bool, $crate::StoreError> {
                self.sql.delete_device_token(token).await
            }

            async fn claim_push_jobs(
                &self,
                now: i64,
                limit: u32,
                lease: std::time::Duration,
            ) -> Result<Vec<$crate::PushJob>, $crate::StoreError> {
                self.sql.claim_push_jobs(now, limit, lease).await
            }

            async fn complete_push_job(
                &self,
                job: &$crate::PushJob,
            ) -> Result<bool, $crate::StoreError> {
                self.sql.complete_push_job(job).await
            }

            async fn fail_push_job(
                &self,
                job: &$crate::PushJob,
                reason: &str,
            ) -> Result<bool, $crate::StoreError> {
                self.sql.fail_push_job(job, reason).await
            }

            async fn reschedule_push_job(
                &self,
                job: &$crate::PushJob,
                at: i64,
                reason: &str,
            ) -> Result<bool, $crate::StoreError> {
                self.sql.reschedule_push_job(job, at, reason).await
            }

            async fn purge_push_jobs(
                &self,
                before: i64,
                limit: u32,
            ) -> Result<u64, $crate::StoreError> {
                self.sql.purge_push_jobs(before, limit).await
            }

            async fn pending_push_jobs(&self) -> Result<u64, $crate::StoreError> {
                self.sql.pending_push_jobs().await
            }

            async fn push_jobs_by_state(
                &self,
                now: i64,
            ) -> Result<Vec<(String, u64)>, $crate::StoreError> {
                self.sql.push_jobs_by_state(now).await
            }
        }
    };
}

pub(crate) use impl_store_via_sql;

/// Whether a statement's error is a unique violation (for [`Backend`]s).
pub(crate) fn is_unique_violation(err: &dyn DatabaseError) -> bool {
    err.kind() == ErrorKind::UniqueViolation
}
