//! Rows of trust and safety: blocks between users and reports about
//! messages or users (see `migrations/*/0004_safety.sql`).

use turbochat_protocol::ids::{ConversationId, Seq, UserId};

/// One block: `blocker_id` receives nothing from `blocked_id` in direct
/// conversations, and neither can start a new one with the other.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    /// Who blocked.
    pub blocker_id: UserId,
    /// Who is blocked.
    pub blocked_id: UserId,
    /// When, unix milliseconds.
    pub created_at: i64,
}

/// A report to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewReport {
    /// Who reports (a user, or `system:moderation` for a flagged message).
    pub reporter_id: UserId,
    /// Whom the report is about.
    pub reported_user_id: UserId,
    /// The conversation the reported message or user was met in.
    pub conversation_id: Option<ConversationId>,
    /// The reported message's seq (absent for a report about a user, or a
    /// flagged message not yet numbered).
    pub reported_seq: Option<Seq>,
    /// One of the reasons documented in `docs/protocol.md`.
    pub reason: String,
    /// The reporter's free text.
    pub note: Option<String>,
    /// JSON array of the messages as they were (a copy).
    pub evidence: String,
    /// Unix milliseconds.
    pub created_at: i64,
}

/// A stored report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Row id.
    pub id: i64,
    /// What was reported.
    pub report: NewReport,
    /// `open` or `resolved`.
    pub status: String,
    /// What the operator decided.
    pub resolution: Option<String>,
    /// The operator who resolved it.
    pub resolved_by: Option<String>,
    /// When, unix milliseconds.
    pub resolved_at: Option<i64>,
}

/// A banned user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ban {
    /// Who.
    pub user_id: UserId,
    /// Why (the operator's words).
    pub reason: String,
    /// The operator who banned.
    pub banned_by: String,
    /// When, unix milliseconds.
    pub created_at: i64,
}

/// One entry of the admin audit log: who did what, on what, when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// Row id (0 for an entry not yet stored).
    pub id: i64,
    /// The operator's name (from the credential that authenticated them).
    pub operator: String,
    /// `ban`, `unban`, `resolve_report`, `system_message`, ...
    pub action: String,
    /// What it was done to (a user id, `report:12`, a conversation id).
    pub target: String,
    /// JSON object with the action's details.
    pub detail: String,
    /// Unix milliseconds.
    pub created_at: i64,
}

/// A message to replace by its tombstone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tombstone {
    /// The conversation.
    pub conversation_id: ConversationId,
    /// The message's seq.
    pub seq: Seq,
    /// `sender` (unsent) or `operator` (deleted).
    pub deleted_by: turbochat_protocol::DeletedBy,
    /// When, unix milliseconds.
    pub deleted_at: i64,
}

/// What [`crate::Store::tombstone_message`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tombstoned {
    /// The message is a tombstone now (this is it, kind `deleted`); its
    /// pending push jobs were dropped.
    Now(turbochat_protocol::http::MessageView),
    /// It already was one (nothing changed).
    Already(turbochat_protocol::http::MessageView),
    /// No message has this seq.
    Missing,
}

/// A user's place in one conversation (for an export).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Participation {
    /// The conversation.
    pub conversation_id: ConversationId,
    /// `direct` or `group`.
    pub kind: turbochat_protocol::http::ConversationKind,
    /// `owner` (the creator) or `member`.
    pub role: String,
    /// When they joined, unix milliseconds.
    pub joined_at: i64,
    /// Their read cursor.
    pub last_read_seq: Seq,
    /// Whether they muted it.
    pub muted: bool,
    /// The seq at which they archived it, if they did.
    pub archived_seq: Option<Seq>,
}

/// What erasing a user changed, row counts by kind.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Erased {
    /// Their messages, now tombstones under an anonymous sender id.
    pub messages: u64,
    /// Conversations they were removed from (their read cursors).
    pub conversations: u64,
    /// Device tokens deleted.
    pub devices: u64,
    /// Blocks deleted (made by them or of them).
    pub blocks: u64,
    /// Reports they filed, now under the anonymous id.
    pub reports_filed: u64,
    /// Push jobs to them deleted.
    pub push_jobs: u64,
    /// Uploads recorded under their id, now under the anonymous id.
    pub uploads: u64,
}
