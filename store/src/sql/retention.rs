//! [`SqlStore`]'s retention purge: messages older than a cutoff removed in
//! bounded batches, each its own short transaction.

use sqlx::{Decode, Encode, Executor, IntoArguments, Type};

use super::{Backend, SqlStore};
use crate::StoreError;

/// Old messages that are not their conversation's newest (its seq stays
/// taken by the newest, so numbering goes on from it).
const DELETE_OLD: &str = "DELETE FROM messages WHERE id IN (\
         SELECT m.id FROM messages m WHERE m.created_at < $1 \
         AND m.seq < (SELECT MAX(x.seq) FROM messages x WHERE x.conversation_id = m.conversation_id) \
         LIMIT $2)";
/// An old newest message stays as a tombstone (it holds the seq).
const TOMBSTONE_OLD_NEWEST: &str = "UPDATE messages SET body = '', media_key = NULL, \
         deleted_at = $3, deleted_by = 'operator' \
     WHERE id IN (SELECT m.id FROM messages m WHERE m.created_at < $1 AND m.deleted_at IS NULL \
         AND m.seq = (SELECT MAX(x.seq) FROM messages x WHERE x.conversation_id = m.conversation_id) \
         LIMIT $2)";

impl<DB> SqlStore<DB>
where
    DB: Backend + sqlx::database::HasStatementCache,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> i64: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
{
    /// See [`crate::Store::purge_messages`].
    pub(crate) async fn purge_messages(
        &self,
        before: i64,
        limit: u32,
        now: i64,
    ) -> Result<u64, StoreError> {
        let deleted = sqlx::query(DELETE_OLD)
            .bind(before)
            .bind(i64::from(limit))
            .execute(&self.pool)
            .await?;
        let deleted = DB::rows_affected(&deleted);
        let left = u64::from(limit).saturating_sub(deleted);
        if left == 0 {
            return Ok(deleted);
        }
        let emptied = sqlx::query(TOMBSTONE_OLD_NEWEST)
            .bind(before)
            .bind(i64::try_from(left).unwrap_or(i64::MAX))
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(deleted + DB::rows_affected(&emptied))
    }
}
