//! [`SqlStore`]'s retention: messages older than a cutoff emptied into
//! tombstones in bounded batches, each its own short transaction.

use sqlx::{Decode, Encode, Executor, IntoArguments, Type};

use super::{Backend, SqlStore};
use crate::StoreError;

/// The oldest messages not yet emptied, created before `$1`, at most `$2`
/// (the partial index on `created_at` where `deleted_at IS NULL` finds
/// them without walking earlier tombstones).
macro_rules! old_messages {
    () => {
        "SELECT id FROM messages WHERE created_at < $1 AND deleted_at IS NULL \
         ORDER BY created_at, id LIMIT $2"
    };
}
const DROP_OLD_PUSHES: &str = concat!(
    "DELETE FROM push_outbox WHERE status = 'pending' AND message_id IN (",
    old_messages!(),
    ")"
);
const EMPTY_OLD: &str = concat!(
    "UPDATE messages SET body = '', media_key = NULL, deleted_at = $3, deleted_by = 'operator' \
     WHERE id IN (",
    old_messages!(),
    ")"
);

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
        let mut tx = self.pool.begin_with(DB::BEGIN_WRITE).await?;
        sqlx::query(DROP_OLD_PUSHES)
            .bind(before)
            .bind(i64::from(limit))
            .execute(&mut *tx)
            .await?;
        let emptied = sqlx::query(EMPTY_OLD)
            .bind(before)
            .bind(i64::from(limit))
            .bind(now)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(DB::rows_affected(&emptied))
    }
}
