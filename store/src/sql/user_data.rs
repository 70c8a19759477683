//! [`SqlStore`]'s data rights: what is stored about a user (for an
//! export), and erasing it.

use sqlx::{Decode, Encode, Executor, FromRow, IntoArguments, Type};
use turbochat_protocol::http::MessageView;

use super::rows::{parse_conversation_kind, MessageRow};
use super::safety::{ReportRow, INSERT_AUDIT};
use super::statements::stored_message_columns;
use super::{seq_from_row, Backend, DbUuid, SqlStore};
use crate::safety::{AuditEntry, Erased, Participation, Report};
use crate::StoreError;

const SELECT_PARTICIPATIONS: &str = "SELECT p.conversation_id, c.kind, p.role, p.joined_at, \
         p.last_read_seq, p.muted, p.archived_seq \
     FROM conversation_participants p JOIN conversations c ON c.id = p.conversation_id \
     WHERE p.user_id = $1 ORDER BY p.joined_at, p.conversation_id";
const SELECT_MESSAGES_OF: &str = concat!(
    "SELECT ",
    stored_message_columns!(),
    " FROM messages WHERE sender_id = $1 ORDER BY created_at, conversation_id, seq"
);
const SELECT_REPORTS_INVOLVING: &str = "SELECT id, reporter_id, reported_user_id, \
         conversation_id, reported_seq, reason, note, evidence, status, resolution, \
         resolved_by, resolved_at, created_at \
     FROM reports WHERE reporter_id = $1 OR reported_user_id = $1 ORDER BY id";

/// Erasure, in this order (the jobs first: they are found by the
/// messages' sender), in one transaction: `$1` the user, `$2` the
/// anonymous id, `$3` now.
const ERASE_MESSAGES: &str = "UPDATE messages SET body = '', media_key = NULL, \
         deleted_at = COALESCE(deleted_at, $3), deleted_by = COALESCE(deleted_by, 'operator'), \
         sender_id = $2 \
     WHERE sender_id = $1";
/// Jobs to them, and jobs of their messages not yet sent.
const ERASE_PUSH_JOBS: &str = "DELETE FROM push_outbox WHERE user_id = $1 \
     OR (status = 'pending' AND message_id IN (SELECT id FROM messages WHERE sender_id = $1))";
const ERASE_PARTICIPATIONS: &str = "DELETE FROM conversation_participants WHERE user_id = $1";
const ERASE_DEVICES: &str = "DELETE FROM user_devices WHERE user_id = $1";
const ERASE_BLOCKS: &str = "DELETE FROM user_blocks WHERE blocker_id = $1 OR blocked_id = $1";
const ERASE_REPORTER: &str = "UPDATE reports SET reporter_id = $2 WHERE reporter_id = $1";
const ERASE_UPLOADER: &str = "UPDATE media_uploads SET uploader_id = $2 WHERE uploader_id = $1";
const ERASE_PROFILE: &str = "DELETE FROM user_profiles WHERE user_id = $1";
const ERASE_SETTINGS: &str = "DELETE FROM notification_settings WHERE user_id = $1";

#[derive(FromRow)]
pub(crate) struct ParticipationRow {
    conversation_id: DbUuid,
    kind: String,
    role: String,
    joined_at: i64,
    last_read_seq: i64,
    muted: bool,
    archived_seq: Option<i64>,
}

impl<DB> SqlStore<DB>
where
    DB: Backend + sqlx::database::HasStatementCache,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> DbUuid: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'r> MessageRow: FromRow<'r, DB::Row>,
    for<'r> ReportRow: FromRow<'r, DB::Row>,
    for<'r> ParticipationRow: FromRow<'r, DB::Row>,
{
    /// See [`crate::Store::participations_of`].
    pub(crate) async fn participations_of(
        &self,
        user: &str,
    ) -> Result<Vec<Participation>, StoreError> {
        let rows: Vec<ParticipationRow> = sqlx::query_as(SELECT_PARTICIPATIONS)
            .bind(user)
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter()
            .map(|r| {
                Ok(Participation {
                    conversation_id: r.conversation_id.0,
                    kind: parse_conversation_kind(&r.kind)?,
                    role: r.role,
                    joined_at: r.joined_at,
                    last_read_seq: seq_from_row(r.last_read_seq)?,
                    muted: r.muted,
                    archived_seq: r.archived_seq.map(seq_from_row).transpose()?,
                })
            })
            .collect()
    }

    /// See [`crate::Store::messages_of`].
    pub(crate) async fn messages_of(&self, user: &str) -> Result<Vec<MessageView>, StoreError> {
        let rows: Vec<MessageRow> = sqlx::query_as(SELECT_MESSAGES_OF)
            .bind(user)
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter().map(MessageView::try_from).collect()
    }

    /// See [`crate::Store::reports_involving`].
    pub(crate) async fn reports_involving(&self, user: &str) -> Result<Vec<Report>, StoreError> {
        let rows: Vec<ReportRow> = sqlx::query_as(SELECT_REPORTS_INVOLVING)
            .bind(user)
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter().map(Report::try_from).collect()
    }

    /// See [`crate::Store::erase_user`].
    pub(crate) async fn erase_user(
        &self,
        user: &str,
        anonymous: &str,
        audit: &AuditEntry,
    ) -> Result<Erased, StoreError> {
        let mut tx = self.pool.begin_with(DB::BEGIN_WRITE).await?;
        let mut counts = [0u64; 9];
        for (i, statement) in [
            ERASE_PUSH_JOBS,
            ERASE_MESSAGES,
            ERASE_PARTICIPATIONS,
            ERASE_DEVICES,
            ERASE_BLOCKS,
            ERASE_REPORTER,
            ERASE_UPLOADER,
            ERASE_PROFILE,
            ERASE_SETTINGS,
        ]
        .into_iter()
        .enumerate()
        {
            let mut query = sqlx::query(statement).bind(user);
            if statement.contains("$2") {
                query = query.bind(anonymous);
            }
            if statement.contains("$3") {
                query = query.bind(audit.created_at);
            }
            counts[i] = DB::rows_affected(&query.execute(&mut *tx).await?);
        }
        sqlx::query(INSERT_AUDIT)
            .bind(audit.operator.as_str())
            .bind(audit.action.as_str())
            .bind(audit.target.as_str())
            .bind(audit.detail.as_str())
            .bind(audit.created_at)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Erased {
            push_jobs: counts[0],
            messages: counts[1],
            conversations: counts[2],
            devices: counts[3],
            blocks: counts[4],
            reports_filed: counts[5],
            uploads: counts[6],
        })
    }
}
