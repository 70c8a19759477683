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
use sqlx::{Database, Decode, Encode, Pool, Type};
use turbochat_protocol::http::MessageView;
use turbochat_protocol::ids::{ConversationId, Seq};
use uuid::Uuid;

use crate::{AppendError, Appended, ConversationBatch, NewMessage, StoreError};

mod listing;
mod membership;
mod notifications;
mod retention;
mod rows;
mod safety;
mod statements;
mod store;
mod tombstones;
mod user_data;

pub(crate) use statements::{claimed_job_columns, upsert_device};

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

    /// Everyone sharing a conversation with `$1`, not `$1`, unordered (the
    /// caller sorts and caps). Runs on every session open, so its plan must
    /// not depend on table statistics: a join on `conversation_participants`
    /// planned without them (a fresh or bulk-loaded table, autovacuum off)
    /// hash-joins over a scan of the whole table, and setting up 100,000
    /// sessions took minutes instead of seconds (issue 16).
    const CONTACTS: &'static str;

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

pub(super) fn seq_from_row(seq: i64) -> Result<Seq, StoreError> {
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
pub(super) const ROWS_PER_STATEMENT: usize = 250;

/// `$first, $first+1, ...`, `count` placeholders (both dialects accept `$n`).
pub(super) fn placeholder_list(first: usize, count: usize) -> String {
    (first..first + count)
        .map(|n| format!("${n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `($1, ..., $columns), (...)`: `rows` value tuples.
pub(super) fn placeholder_rows(rows: usize, columns: usize) -> String {
    (0..rows)
        .map(|row| format!("({})", placeholder_list(row * columns + 1, columns)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A pool and every store operation, for any [`Backend`].
pub(crate) struct SqlStore<DB: Database> {
    pub(crate) pool: Pool<DB>,
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

            async fn block(
                &self,
                blocker: &str,
                blocked: &str,
                at: i64,
            ) -> Result<bool, $crate::StoreError> {
                self.sql.block(blocker, blocked, at).await
            }

            async fn unblock(
                &self,
                blocker: &str,
                blocked: &str,
            ) -> Result<bool, $crate::StoreError> {
                self.sql.unblock(blocker, blocked).await
            }

            async fn blocks_of(
                &self,
                blocker: &str,
            ) -> Result<Vec<$crate::safety::Block>, $crate::StoreError> {
                self.sql.blocks_of(blocker).await
            }

            async fn block_relations(
                &self,
                user: &str,
            ) -> Result<Vec<turbochat_protocol::ids::UserId>, $crate::StoreError> {
                self.sql.block_relations(user).await
            }

            async fn insert_report(
                &self,
                report: &$crate::safety::NewReport,
            ) -> Result<i64, $crate::StoreError> {
                self.sql.insert_report(report).await
            }

            async fn reports(
                &self,
                status: Option<&str>,
                after_id: i64,
                limit: u32,
            ) -> Result<Vec<$crate::safety::Report>, $crate::StoreError> {
                self.sql.reports(status, after_id, limit).await
            }

            async fn report(
                &self,
                id: i64,
            ) -> Result<Option<$crate::safety::Report>, $crate::StoreError> {
                self.sql.report(id).await
            }

            async fn resolve_report(
                &self,
                id: i64,
                resolution: &str,
                audit: &$crate::safety::AuditEntry,
            ) -> Result<bool, $crate::StoreError> {
                self.sql.resolve_report(id, resolution, audit).await
            }

            async fn ban(
                &self,
                ban: &$crate::safety::Ban,
                audit: &$crate::safety::AuditEntry,
            ) -> Result<bool, $crate::StoreError> {
                self.sql.ban(ban, audit).await
            }

            async fn set_listing_card(
                &self,
                id: turbochat_protocol::ids::ConversationId,
                card: Option<&turbochat_protocol::http::ListingCard>,
                audit: &$crate::safety::AuditEntry,
            ) -> Result<bool, $crate::StoreError> {
                self.sql.set_listing_card(id, card, audit).await
            }

            async fn unban(
                &self,
                user: &str,
                audit: &$crate::safety::AuditEntry,
            ) -> Result<bool, $crate::StoreError> {
                self.sql.unban(user, audit).await
            }

            async fn bans(&self) -> Result<Vec<$crate::safety::Ban>, $crate::StoreError> {
                self.sql.bans().await
            }

            async fn record_audit(
                &self,
                audit: &$crate::safety::AuditEntry,
            ) -> Result<(), $crate::StoreError> {
                self.sql.record_audit(audit).await
            }

            async fn message(
                &self,
                id: turbochat_protocol::ids::ConversationId,
                seq: turbochat_protocol::ids::Seq,
            ) -> Result<Option<turbochat_protocol::http::MessageView>, $crate::StoreError> {
                self.sql.message(id, seq).await
            }

            async fn tombstone_message(
                &self,
                tombstone: &$crate::safety::Tombstone,
                audit: Option<&$crate::safety::AuditEntry>,
            ) -> Result<$crate::safety::Tombstoned, $crate::StoreError> {
                self.sql.tombstone_message(tombstone, audit).await
            }

            async fn add_member(
                &self,
                id: turbochat_protocol::ids::ConversationId,
                user: &str,
                at: i64,
            ) -> Result<bool, $crate::StoreError> {
                self.sql.add_member(id, user, at).await
            }

            async fn remove_member(
                &self,
                id: turbochat_protocol::ids::ConversationId,
                user: &str,
            ) -> Result<bool, $crate::StoreError> {
                self.sql.remove_member(id, user).await
            }

            async fn set_archived(
                &self,
                id: turbochat_protocol::ids::ConversationId,
                user: &str,
                archived: bool,
            ) -> Result<bool, $crate::StoreError> {
                self.sql.set_archived(id, user, archived).await
            }

            async fn purge_messages(
                &self,
                before: i64,
                limit: u32,
                now: i64,
            ) -> Result<u64, $crate::StoreError> {
                self.sql.purge_messages(before, limit, now).await
            }

            async fn set_profile(
                &self,
                user: &str,
                name: Option<&str>,
                avatar_url: Option<&str>,
                at: i64,
            ) -> Result<(), $crate::StoreError> {
                self.sql.set_profile(user, name, avatar_url, at).await
            }

            async fn profiles(
                &self,
                users: &[turbochat_protocol::ids::UserId],
            ) -> Result<Vec<turbochat_protocol::http::MemberView>, $crate::StoreError> {
                self.sql.profiles(users).await
            }

            async fn notification_settings(
                &self,
                user: &str,
            ) -> Result<turbochat_protocol::http::NotificationSettings, $crate::StoreError> {
                self.sql.notification_settings(user).await
            }

            async fn set_notification_settings(
                &self,
                user: &str,
                settings: &turbochat_protocol::http::NotificationSettings,
                at: i64,
            ) -> Result<(), $crate::StoreError> {
                self.sql.set_notification_settings(user, settings, at).await
            }

            async fn set_muted(
                &self,
                id: turbochat_protocol::ids::ConversationId,
                user: &str,
                muted: bool,
            ) -> Result<bool, $crate::StoreError> {
                self.sql.set_muted(id, user, muted).await
            }

            async fn push_context(
                &self,
                user: &str,
                id: turbochat_protocol::ids::ConversationId,
                sender: &str,
            ) -> Result<Option<$crate::PushContext>, $crate::StoreError> {
                self.sql.push_context(user, id, sender).await
            }

            async fn participations_of(
                &self,
                user: &str,
            ) -> Result<Vec<$crate::safety::Participation>, $crate::StoreError> {
                self.sql.participations_of(user).await
            }

            async fn messages_of(
                &self,
                user: &str,
            ) -> Result<Vec<turbochat_protocol::http::MessageView>, $crate::StoreError> {
                self.sql.messages_of(user).await
            }

            async fn reports_involving(
                &self,
                user: &str,
            ) -> Result<Vec<$crate::safety::Report>, $crate::StoreError> {
                self.sql.reports_involving(user).await
            }

            async fn erase_user(
                &self,
                user: &str,
                anonymous: &str,
                audit: &$crate::safety::AuditEntry,
            ) -> Result<$crate::safety::Erased, $crate::StoreError> {
                self.sql.erase_user(user, anonymous, audit).await
            }

            async fn audit_log(
                &self,
                before_id: Option<i64>,
                limit: u32,
            ) -> Result<Vec<$crate::safety::AuditEntry>, $crate::StoreError> {
                self.sql.audit_log(before_id, limit).await
            }
        }
    };
}

pub(crate) use impl_store_via_sql;

/// Whether a statement's error is a unique violation (for [`Backend`]s).
pub(crate) fn is_unique_violation(err: &dyn DatabaseError) -> bool {
    err.kind() == ErrorKind::UniqueViolation
}
