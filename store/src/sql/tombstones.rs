//! [`SqlStore`]'s tombstones: one message read by seq, and a message
//! replaced by its tombstone with its pending pushes dropped (and the
//! operator's audit entry, when an operator did it), in one transaction.

use sqlx::{Decode, Encode, Executor, FromRow, IntoArguments, Type};
use turbochat_protocol::http::MessageView;
use turbochat_protocol::ids::{ConversationId, Seq};

use super::rows::MessageRow;
use super::safety::INSERT_AUDIT;
use super::statements::stored_message_columns;
use super::{seq_bound, Backend, DbUuid, SqlStore};
use crate::safety::{AuditEntry, Tombstone, Tombstoned};
use crate::StoreError;

const SELECT_MESSAGE: &str = concat!(
    "SELECT ",
    stored_message_columns!(),
    " FROM messages WHERE conversation_id = $1 AND seq = $2"
);
/// Empties a message that is not a tombstone yet.
const TOMBSTONE: &str = "UPDATE messages SET body = '', media_key = NULL, \
     deleted_at = $3, deleted_by = $4 \
     WHERE conversation_id = $1 AND seq = $2 AND deleted_at IS NULL";
/// Jobs no worker finished yet: a claimed one is dropped too (its worker
/// then finds its claim gone), though a send already under way completes.
const DROP_PENDING_PUSHES: &str =
    "DELETE FROM push_outbox WHERE message_id = $1 AND status = 'pending'";

impl<DB> SqlStore<DB>
where
    DB: Backend + sqlx::database::HasStatementCache,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> DbUuid: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'r> MessageRow: FromRow<'r, DB::Row>,
{
    /// See [`crate::Store::message`].
    pub(crate) async fn message(
        &self,
        id: ConversationId,
        seq: Seq,
    ) -> Result<Option<MessageView>, StoreError> {
        let row: Option<MessageRow> = sqlx::query_as(SELECT_MESSAGE)
            .bind(DbUuid(id))
            .bind(seq_bound(seq))
            .fetch_optional(&self.pool)
            .await?;
        row.map(MessageView::try_from).transpose()
    }

    /// See [`crate::Store::tombstone_message`].
    pub(crate) async fn tombstone_message(
        &self,
        tombstone: &Tombstone,
        audit: Option<&AuditEntry>,
    ) -> Result<Tombstoned, StoreError> {
        let mut tx = self.pool.begin_with(DB::BEGIN_WRITE).await?;
        let conversation = DbUuid(tombstone.conversation_id);
        let seq = seq_bound(tombstone.seq);
        let done = sqlx::query(TOMBSTONE)
            .bind(conversation)
            .bind(seq)
            .bind(tombstone.deleted_at)
            .bind(tombstone.deleted_by.as_str())
            .execute(&mut *tx)
            .await?;
        let row: Option<MessageRow> = sqlx::query_as(SELECT_MESSAGE)
            .bind(conversation)
            .bind(seq)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else {
            return Ok(Tombstoned::Missing);
        };
        if DB::rows_affected(&done) == 0 {
            return Ok(Tombstoned::Already(MessageView::try_from(row)?));
        }
        sqlx::query(DROP_PENDING_PUSHES)
            .bind(row.id)
            .execute(&mut *tx)
            .await?;
        if let Some(audit) = audit {
            sqlx::query(INSERT_AUDIT)
                .bind(audit.operator.as_str())
                .bind(audit.action.as_str())
                .bind(audit.target.as_str())
                .bind(audit.detail.as_str())
                .bind(audit.created_at)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(Tombstoned::Now(MessageView::try_from(row)?))
    }
}
