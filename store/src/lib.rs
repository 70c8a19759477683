//! The store of record.
//!
//! One [`Store`] trait with two implementations that pass the same test suite
//! (`tests/store_suite.rs`): [`postgres::PgStore`] for production and
//! [`sqlite::SqliteStore`] as the embedded default. SQL is shared where the
//! dialects agree; the differences live in the two implementation modules.
//!
//! Messages are written through [`writer::Writer`], which gathers the batches
//! of many conversations into one transaction (group commit), so throughput
//! does not stop at one fsync per message.
//!
//! Fencing (guarantee 5): `messages` has a unique `(conversation_id, seq)`.
//! A node that appends a seq another node already wrote gets
//! [`AppendError::SeqTaken`] for that conversation and must reload its state.
//!
//! Push outbox (guarantee 6): `append` writes one `push_outbox` job per
//! offline recipient in the message's transaction; push workers on every
//! node claim due jobs with a lease ([`Store::claim_push_jobs`]) and finish
//! them with the claim, so a job survives the crash of the node sending it.

#![deny(missing_docs)]

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use turbochat_protocol::http::{ConversationKind, ConversationView, MessageView};
use turbochat_protocol::ids::{ConversationId, Seq, UserId};
use uuid::Uuid;

pub mod postgres;
pub mod safety;
mod sql;
pub mod sqlite;
pub mod writer;

pub use postgres::PgStore;
pub use safety::{
    AuditEntry, Ban, Block, Erased, NewReport, Participation, Report, Tombstone, Tombstoned,
};
pub use sqlite::SqliteStore;
pub use writer::{AppendResult, Writer, WriterConfig};

/// Errors of the store layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be reached or a statement failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Migrations failed at start-up.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The store URL is neither `postgres://` nor `sqlite:`.
    #[error("unsupported store url scheme in {0:?} (expected postgres:// or sqlite:)")]
    UnsupportedUrl(String),
    /// A stored row could not be read back (corrupt or from a newer version).
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// The writer task is gone (the node is shutting down).
    #[error("writer closed")]
    WriterClosed,
    /// The group commit this request was part of failed as a whole; the
    /// cause is shared by every request of that commit. Nothing of it was
    /// written, unless the commit's outcome is unknown (connection lost
    /// during `COMMIT`): a retry with the same `client_msg_id`s is safe.
    #[error("group commit failed: {0}")]
    GroupCommit(#[source] Arc<StoreError>),
}

/// Why one conversation's batch was not appended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppendError {
    /// Another writer already holds a seq of this batch: this node is not (or
    /// no longer) the conversation's single writer. Reload before writing again.
    #[error("seq {seq} of conversation {conversation_id} is already taken")]
    SeqTaken {
        /// The conversation.
        conversation_id: ConversationId,
        /// The first seq that was taken.
        seq: Seq,
    },
    /// The database refused a value of the batch as data it cannot hold
    /// (PostgreSQL's class 22 "data exception", e.g. a NUL in text; SQLite's
    /// "too big" or "datatype mismatch"). Nothing of the batch was written;
    /// the same batch would fail again.
    #[error("the store cannot hold this data: {0}")]
    Invalid(String),
    /// The transaction failed; nothing of the batch was written.
    #[error("append failed: {0}")]
    Failed(String),
}

/// A message to append. `seq` is assigned by the owner; the store may lower
/// it when earlier messages of the same batch turn out to be duplicates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    /// Server-assigned id (UUIDv7).
    pub message_id: Uuid,
    /// Author.
    pub sender_id: UserId,
    /// The author's idempotency key.
    pub client_msg_id: String,
    /// `text`, `media` or `system`.
    pub kind: turbochat_protocol::MessageKind,
    /// Text or caption.
    pub body: String,
    /// Attached media object key.
    pub media_key: Option<String>,
    /// Unix milliseconds.
    pub created_at: i64,
    /// Users to push to (no live session, not muted): one outbox job each,
    /// written in the same transaction as the message.
    pub push_to: Vec<UserId>,
}

/// One conversation's share of a group commit: messages that take the seqs
/// `first_seq, first_seq + 1, ...` in order, skipping duplicates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversationBatch {
    /// The conversation.
    pub conversation_id: ConversationId,
    /// Seq of the first message that is not a duplicate.
    pub first_seq: Seq,
    /// The messages, in the order the owner accepted them.
    pub messages: Vec<NewMessage>,
}

/// What became of one [`NewMessage`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Appended {
    /// Written now, with this (possibly renumbered) seq.
    Inserted(MessageView),
    /// `(conversation_id, sender_id, client_msg_id)` was already stored:
    /// nothing was written and this is the stored message (same seq as before).
    Duplicate(MessageView),
}

impl Appended {
    /// The stored message either way.
    pub fn message(&self) -> &MessageView {
        match self {
            Appended::Inserted(m) | Appended::Duplicate(m) => m,
        }
    }
}

/// A conversation to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewConversation {
    /// Its id (deterministic for direct conversations).
    pub conversation_id: ConversationId,
    /// `direct` or `group`.
    pub kind: ConversationKind,
    /// Listing of a direct conversation.
    pub listing_id: Option<String>,
    /// Group title.
    pub title: Option<String>,
    /// Every participant, creator first; no duplicates.
    pub participants: Vec<UserId>,
    /// Unix milliseconds.
    pub created_at: i64,
}

/// One participant's row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Participant {
    /// The user.
    pub user_id: UserId,
    /// `owner` or `member`.
    pub role: String,
    /// Read cursor.
    pub last_read_seq: Seq,
    /// Muted participants get no push.
    pub muted: bool,
}

/// Everything an owner needs to take over a conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversationState {
    /// The conversation.
    pub conversation_id: ConversationId,
    /// `direct` or `group`.
    pub kind: ConversationKind,
    /// Listing of a direct conversation.
    pub listing_id: Option<String>,
    /// Group title.
    pub title: Option<String>,
    /// The listing's card, as the operator set it.
    pub listing: Option<turbochat_protocol::http::ListingCard>,
    /// Unix milliseconds.
    pub created_at: i64,
    /// Participants.
    pub participants: Vec<Participant>,
    /// Highest stored seq (0 when empty).
    pub last_seq: Seq,
}

/// A device token row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// Owner of the device.
    pub user_id: UserId,
    /// `android`, `ios` or `web`.
    pub platform: String,
    /// FCM registration token (unique across users).
    pub token: String,
    /// Unix milliseconds.
    pub updated_at: i64,
}

/// An object `POST /media` stored for a conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaUpload {
    /// `{conversation_id}/{uuid}.{ext}`: what a `send` names.
    pub media_key: String,
    /// The conversation it was uploaded to.
    pub conversation_id: ConversationId,
    /// Who uploaded it.
    pub uploader_id: UserId,
    /// The type read from its bytes.
    pub content_type: String,
    /// Bytes stored.
    pub size: u64,
    /// Unix milliseconds.
    pub created_at: i64,
}

/// A push job a worker has claimed: one message for one recipient, whose
/// devices each get it. The claim is a lease: unless the job is finished
/// ([`Store::complete_push_job`], [`Store::fail_push_job`],
/// [`Store::reschedule_push_job`]) before it ends, the job is due again and
/// another worker may claim it (a node killed mid-send loses no job).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushJob {
    /// Row id.
    pub id: i64,
    /// This claim's token: finishing the job needs it, so a worker whose
    /// lease ran out cannot overwrite the outcome of its successor.
    pub claim: String,
    /// Which attempt this claim is (1 for the first).
    pub attempt: u32,
    /// The recipient.
    pub user_id: UserId,
    /// The message to announce.
    pub message: MessageView,
    /// Device tokens already handled by earlier attempts (sent, pruned or
    /// failed for good). The worker adds to it; finishing stores it.
    pub done_tokens: Vec<String>,
    /// When the job was queued (the message's commit time), unix ms.
    pub created_at: i64,
}

/// What a push to one recipient needs besides the message, read when it
/// is delivered (so a mute, a read on another device or a new setting
/// made after the message was stored still counts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushContext {
    /// The recipient muted the conversation.
    pub muted: bool,
    /// The conversation's listing card.
    pub listing: Option<turbochat_protocol::http::ListingCard>,
    /// The sender's profile, if one is known.
    pub sender: Option<turbochat_protocol::http::MemberView>,
    /// The recipient's notification settings.
    pub settings: turbochat_protocol::http::NotificationSettings,
    /// The recipient's unread total over the conversations they did not
    /// mute (messages from others after their read cursor), up to 9,999.
    pub badge: u64,
}

/// The store of record. Every method is one transaction or one statement.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Applies pending migrations (idempotent; run at start).
    async fn migrate(&self) -> Result<(), StoreError>;

    /// Creates a conversation with its participants, or returns the stored one
    /// unchanged if the id exists. Returns the stored state. The first
    /// participant gets role `owner`, the others `member`; a participant
    /// listed twice joins once. Participants are listed by join time, the
    /// creator first among those who joined together, then by user id.
    async fn create_conversation(
        &self,
        new: &NewConversation,
    ) -> Result<ConversationState, StoreError>;

    /// Loads a conversation's state, or `None` if it does not exist.
    async fn load_conversation(
        &self,
        id: ConversationId,
    ) -> Result<Option<ConversationState>, StoreError>;

    /// Appends several conversations' batches in as few transactions as
    /// possible (one when nothing conflicts). Returns one result per batch, in
    /// order; within an `Ok`, one [`Appended`] per message, in order.
    /// Duplicates (same sender and `client_msg_id`) are not written and do not
    /// consume a seq; the inserted ones take `first_seq..` contiguously.
    /// A batch whose seq is taken fails alone with [`AppendError::SeqTaken`];
    /// one holding data the database cannot store fails alone with
    /// [`AppendError::Invalid`]; a batch the database refuses otherwise (e.g.
    /// an unknown conversation) fails alone with [`AppendError::Failed`]. Each inserted message gets
    /// one pending `push_outbox` job per user in its `push_to`, in the same
    /// transaction; a duplicate gets none. Batches of one conversation are
    /// numbered independently: do not put a batch in flight before the
    /// previous one of its conversation has been answered.
    async fn append(
        &self,
        batches: &[ConversationBatch],
    ) -> Result<Vec<Result<Vec<Appended>, AppendError>>, StoreError>;

    /// Messages with seq > `after`, ascending, at most `limit`.
    async fn messages_after(
        &self,
        id: ConversationId,
        after: Seq,
        limit: u32,
    ) -> Result<Vec<MessageView>, StoreError>;

    /// Messages with seq < `before` (all when `None`), descending, at most `limit`.
    async fn history(
        &self,
        id: ConversationId,
        before: Option<Seq>,
        limit: u32,
    ) -> Result<Vec<MessageView>, StoreError>;

    /// The user's conversations, most recently active first (last message's
    /// `created_at`, else the conversation's), at most `limit`, leaving out
    /// those the user archived with no message since, each with its
    /// participants, last message, and unread count (messages from others
    /// after the user's `last_read_seq`, counted up to 1000 at most).
    async fn list_conversations(
        &self,
        user: &str,
        limit: u32,
    ) -> Result<Vec<ConversationView>, StoreError>;

    /// Moves the user's read cursor forward to `seq` (never back). Returns
    /// whether it moved (`false` also when the user is not a participant).
    async fn mark_read(&self, id: ConversationId, user: &str, seq: Seq)
        -> Result<bool, StoreError>;

    /// Registers a device token for `user` (upsert). A token registered by
    /// another user before moves to this one.
    async fn upsert_device(
        &self,
        user: &str,
        platform: &str,
        token: &str,
    ) -> Result<(), StoreError>;

    /// Removes a device token of `user`. Returns whether it existed; a token
    /// that now belongs to another user is left alone (`false`).
    async fn delete_device(&self, user: &str, token: &str) -> Result<bool, StoreError>;

    /// Every device of the given users (none for an empty list).
    async fn devices_of(&self, users: &[UserId]) -> Result<Vec<Device>, StoreError>;

    /// Everyone who shares at least one conversation with `user` (not
    /// `user`) and is in no block relation with them (neither blocks the
    /// other), sorted, at most `limit`: who sees the user's presence, and
    /// whose presence the user sees. One statement: a session open asks it.
    async fn contacts(&self, user: &str, limit: u32) -> Result<Vec<UserId>, StoreError>;

    /// Records an upload (idempotent by `media_key`).
    async fn record_media_upload(&self, upload: &MediaUpload) -> Result<(), StoreError>;

    /// The upload `media_key` of `conversation`, if one was recorded.
    async fn media_upload(
        &self,
        conversation: ConversationId,
        media_key: &str,
    ) -> Result<Option<MediaUpload>, StoreError>;

    /// Removes a device token whoever it belongs to (FCM said it is dead).
    /// Returns whether it existed.
    async fn delete_device_token(&self, token: &str) -> Result<bool, StoreError>;

    /// Claims up to `limit` push jobs that are due at `now` (unix ms),
    /// oldest due first, for `lease`: until `now + lease` no other claim
    /// returns them. Concurrent claims (other nodes) never return the same
    /// job (PostgreSQL: `FOR UPDATE SKIP LOCKED`; SQLite: one writer).
    /// Each claim counts as an attempt.
    async fn claim_push_jobs(
        &self,
        now: i64,
        limit: u32,
        lease: Duration,
    ) -> Result<Vec<PushJob>, StoreError>;

    /// Marks a claimed job sent (done: every device handled). Returns
    /// `false`, changing nothing, if the claim is no longer held.
    async fn complete_push_job(&self, job: &PushJob) -> Result<bool, StoreError>;

    /// Marks a claimed job failed for good with `reason`. Returns `false`,
    /// changing nothing, if the claim is no longer held.
    async fn fail_push_job(&self, job: &PushJob, reason: &str) -> Result<bool, StoreError>;

    /// Releases a claimed job to be retried at `at` (unix ms), recording
    /// `reason` and the job's `done_tokens`. Returns `false`, changing
    /// nothing, if the claim is no longer held.
    async fn reschedule_push_job(
        &self,
        job: &PushJob,
        at: i64,
        reason: &str,
    ) -> Result<bool, StoreError>;

    /// Deletes up to `limit` sent or failed jobs that finished before
    /// `before` (unix ms); returns how many.
    async fn purge_push_jobs(&self, before: i64, limit: u32) -> Result<u64, StoreError>;

    /// Jobs not finished yet (due or leased or waiting for a retry).
    async fn pending_push_jobs(&self) -> Result<u64, StoreError>;

    /// Jobs by state at `now` (unix ms): `due`, `leased`, `waiting` (for a
    /// retry), `sent`, `failed` (finished ones until purged). States with
    /// no job are left out.
    async fn push_jobs_by_state(&self, now: i64) -> Result<Vec<(String, u64)>, StoreError>;

    /// Records that `blocker` blocks `blocked` at `at` (unix ms). Returns
    /// whether the block is new (blocking twice keeps the first time).
    async fn block(&self, blocker: &str, blocked: &str, at: i64) -> Result<bool, StoreError>;

    /// Lifts a block. Returns whether there was one.
    async fn unblock(&self, blocker: &str, blocked: &str) -> Result<bool, StoreError>;

    /// Everyone `blocker` blocks, oldest block first.
    async fn blocks_of(&self, blocker: &str) -> Result<Vec<Block>, StoreError>;

    /// Everyone who blocks `user` or whom `user` blocks (no duplicates,
    /// any order): who must not see `user`'s presence, nor `user` theirs.
    async fn block_relations(&self, user: &str) -> Result<Vec<UserId>, StoreError>;

    /// Stores a report (status `open`) and returns its id.
    async fn insert_report(&self, report: &NewReport) -> Result<i64, StoreError>;

    /// Reports with id > `after_id`, by id, at most `limit`; only those in
    /// `status` (`open` or `resolved`) when given.
    async fn reports(
        &self,
        status: Option<&str>,
        after_id: i64,
        limit: u32,
    ) -> Result<Vec<Report>, StoreError>;

    /// One report by id.
    async fn report(&self, id: i64) -> Result<Option<Report>, StoreError>;

    /// Resolves an open report with the operator's `resolution`, by
    /// `audit.operator` at `audit.created_at`, and writes `audit` in the
    /// same transaction. Returns `false`, changing nothing, when there is
    /// no such open report.
    async fn resolve_report(
        &self,
        id: i64,
        resolution: &str,
        audit: &AuditEntry,
    ) -> Result<bool, StoreError>;

    /// Bans a user (idempotent: a second ban keeps the first) and writes
    /// `audit` in the same transaction. Returns whether the ban is new.
    async fn ban(&self, ban: &Ban, audit: &AuditEntry) -> Result<bool, StoreError>;

    /// Sets (or, with `None`, clears) a conversation's listing card and
    /// writes `audit` in the same transaction (nothing when there is no
    /// such conversation). Returns whether the conversation exists.
    async fn set_listing_card(
        &self,
        id: ConversationId,
        card: Option<&turbochat_protocol::http::ListingCard>,
        audit: &AuditEntry,
    ) -> Result<bool, StoreError>;

    /// Lifts a ban and writes `audit` in the same transaction. Returns
    /// whether there was one.
    async fn unban(&self, user: &str, audit: &AuditEntry) -> Result<bool, StoreError>;

    /// Every banned user, oldest ban first.
    async fn bans(&self) -> Result<Vec<Ban>, StoreError>;

    /// Writes one audit entry on its own (for actions whose own write is
    /// elsewhere, e.g. a system message through the owner).
    async fn record_audit(&self, audit: &AuditEntry) -> Result<(), StoreError>;

    /// Adds `user` to a group as a `member` joined `at` (unix ms), with
    /// every message so far counted as read. Returns whether they are new.
    async fn add_member(&self, id: ConversationId, user: &str, at: i64)
        -> Result<bool, StoreError>;

    /// Removes `user` from a conversation and drops their pending push jobs
    /// of it; if no `owner` is left, the member who joined first becomes
    /// it. Returns whether they were a participant.
    async fn remove_member(&self, id: ConversationId, user: &str) -> Result<bool, StoreError>;

    /// Hides the conversation from `user`'s [`Store::list_conversations`]
    /// until a message newer than the newest one now (true), or shows it
    /// again (false). Returns whether `user` participates.
    async fn set_archived(
        &self,
        id: ConversationId,
        user: &str,
        archived: bool,
    ) -> Result<bool, StoreError>;

    /// Retention: empties up to `limit` of the oldest messages created
    /// before `before` (unix ms) into tombstones (deleted by `operator` at
    /// `now`; rows and seqs stay, so every history stays gapless), and
    /// drops their unsent push jobs, in one short transaction. Returns how
    /// many were emptied (0: nothing older is left).
    async fn purge_messages(&self, before: i64, limit: u32, now: i64) -> Result<u64, StoreError>;

    /// Keeps `user`'s display name and avatar URL (an upsert).
    async fn set_profile(
        &self,
        user: &str,
        name: Option<&str>,
        avatar_url: Option<&str>,
        at: i64,
    ) -> Result<(), StoreError>;

    /// The profiles of `users`, in their order (a bare one for a user with
    /// none).
    async fn profiles(
        &self,
        users: &[UserId],
    ) -> Result<Vec<turbochat_protocol::http::MemberView>, StoreError>;

    /// `user`'s notification settings (the defaults if never set).
    async fn notification_settings(
        &self,
        user: &str,
    ) -> Result<turbochat_protocol::http::NotificationSettings, StoreError>;

    /// Replaces `user`'s notification settings.
    async fn set_notification_settings(
        &self,
        user: &str,
        settings: &turbochat_protocol::http::NotificationSettings,
        at: i64,
    ) -> Result<(), StoreError>;

    /// Mutes (or unmutes) a conversation for `user`. Returns whether
    /// `user` participates.
    async fn set_muted(
        &self,
        id: ConversationId,
        user: &str,
        muted: bool,
    ) -> Result<bool, StoreError>;

    /// What a push of a message of `sender` in conversation `id` to `user`
    /// needs; `None` when `user` no longer participates.
    async fn push_context(
        &self,
        user: &str,
        id: ConversationId,
        sender: &str,
    ) -> Result<Option<PushContext>, StoreError>;

    /// Every conversation `user` participates in, oldest join first.
    async fn participations_of(&self, user: &str) -> Result<Vec<Participation>, StoreError>;

    /// Every message `user` sent (tombstones too), oldest first.
    async fn messages_of(&self, user: &str) -> Result<Vec<MessageView>, StoreError>;

    /// Every report `user` filed or is the subject of, by id.
    async fn reports_involving(&self, user: &str) -> Result<Vec<Report>, StoreError>;

    /// Erases `user`, in one transaction with `audit`: their messages
    /// become tombstones sent by `anonymous`; their push jobs, read
    /// cursors (participations), devices and blocks (made or suffered) are
    /// deleted; the reports they filed and the uploads they made are kept
    /// under `anonymous`. Reports about them and a ban of them are kept.
    async fn erase_user(
        &self,
        user: &str,
        anonymous: &str,
        audit: &AuditEntry,
    ) -> Result<Erased, StoreError>;

    /// One message by seq (a tombstone reads back with kind `deleted`).
    async fn message(
        &self,
        id: ConversationId,
        seq: Seq,
    ) -> Result<Option<MessageView>, StoreError>;

    /// Replaces a message by its tombstone (body emptied, media key
    /// dropped; read back with kind `deleted`), drops its push jobs not yet
    /// finished, and writes `audit` if given, in one transaction. A message
    /// that already is a tombstone is left as it is (and `audit` unwritten).
    async fn tombstone_message(
        &self,
        tombstone: &Tombstone,
        audit: Option<&AuditEntry>,
    ) -> Result<Tombstoned, StoreError>;

    /// Audit entries, newest first, with id < `before_id` when given, at
    /// most `limit`.
    async fn audit_log(
        &self,
        before_id: Option<i64>,
        limit: u32,
    ) -> Result<Vec<AuditEntry>, StoreError>;
}

/// Opens the store named by `url` (`postgres://...` or `sqlite:...`), with a
/// pool of at most `max_connections`, and runs migrations.
pub async fn open(url: &str, max_connections: u32) -> Result<Arc<dyn Store>, StoreError> {
    let store: Arc<dyn Store> =
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Arc::new(postgres::PgStore::connect(url, max_connections).await?)
        } else if url.starts_with("sqlite:") {
            Arc::new(sqlite::SqliteStore::connect(url, max_connections).await?)
        } else {
            return Err(StoreError::UnsupportedUrl(url.to_string()));
        };
    // Several nodes may start at once on one fresh SQLite file; SQLite has no
    // migration lock, so a loser of that race fails ("table ... already
    // exists", its transaction rolled back) and simply tries again.
    let sqlite = url.starts_with("sqlite:");
    let mut attempt = 0u32;
    loop {
        match store.migrate().await {
            Ok(()) => break,
            Err(err) if sqlite && attempt < 10 => {
                attempt += 1;
                tracing::warn!(%err, attempt, "migration raced with another process; retrying");
                tokio::time::sleep(std::time::Duration::from_millis(100 * u64::from(attempt)))
                    .await;
            }
            Err(err) => return Err(err),
        }
    }
    Ok(store)
}
