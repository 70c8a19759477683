//! [`SqlStore`]'s membership changes: a member added to or removed from a
//! group (or leaving it), and a conversation hidden from one user's list
//! until a newer message arrives.

use sqlx::{Decode, Encode, Executor, IntoArguments, Type};
use turbochat_protocol::ids::ConversationId;

use super::{Backend, DbUuid, SqlStore, ROLE_MEMBER, ROLE_OWNER};
use crate::StoreError;

/// A new member; they start with everything before as read. (`WHERE`:
/// SQLite needs one to tell an upsert's `ON` from a join's.)
const INSERT_MEMBER: &str = "INSERT INTO conversation_participants \
     (conversation_id, user_id, role, joined_at, last_read_seq) \
     SELECT $1, $2, $3, $4, \
         COALESCE((SELECT MAX(m.seq) FROM messages m WHERE m.conversation_id = $1), 0) \
     WHERE 1 = 1 ON CONFLICT (conversation_id, user_id) DO NOTHING";
const DELETE_MEMBER: &str =
    "DELETE FROM conversation_participants WHERE conversation_id = $1 AND user_id = $2";
/// What a member who left was still to be pushed of the conversation.
const DROP_MEMBER_PUSHES: &str = "DELETE FROM push_outbox \
     WHERE conversation_id = $1 AND user_id = $2 AND status = 'pending'";
/// A group whose creator left gets a new one: the member who joined first.
const PROMOTE_OWNER: &str = "UPDATE conversation_participants SET role = $2 \
     WHERE conversation_id = $1 AND user_id = (\
         SELECT user_id FROM conversation_participants WHERE conversation_id = $1 \
         ORDER BY joined_at, user_id LIMIT 1) \
     AND NOT EXISTS (SELECT 1 FROM conversation_participants \
         WHERE conversation_id = $1 AND role = $2)";
/// Hidden until a message newer than the newest one now.
const ARCHIVE: &str = "UPDATE conversation_participants SET archived_seq = \
         COALESCE((SELECT MAX(m.seq) FROM messages m WHERE m.conversation_id = $1), 0) \
     WHERE conversation_id = $1 AND user_id = $2";
const UNARCHIVE: &str = "UPDATE conversation_participants SET archived_seq = NULL \
     WHERE conversation_id = $1 AND user_id = $2";

impl<DB> SqlStore<DB>
where
    DB: Backend + sqlx::database::HasStatementCache,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> DbUuid: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
{
    /// See [`crate::Store::add_member`].
    pub(crate) async fn add_member(
        &self,
        id: ConversationId,
        user: &str,
        at: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(INSERT_MEMBER)
            .bind(DbUuid(id))
            .bind(user)
            .bind(ROLE_MEMBER)
            .bind(at)
            .execute(&self.pool)
            .await?;
        Ok(DB::rows_affected(&done) > 0)
    }

    /// See [`crate::Store::remove_member`].
    pub(crate) async fn remove_member(
        &self,
        id: ConversationId,
        user: &str,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin_with(DB::BEGIN_WRITE).await?;
        let done = sqlx::query(DELETE_MEMBER)
            .bind(DbUuid(id))
            .bind(user)
            .execute(&mut *tx)
            .await?;
        sqlx::query(DROP_MEMBER_PUSHES)
            .bind(DbUuid(id))
            .bind(user)
            .execute(&mut *tx)
            .await?;
        sqlx::query(PROMOTE_OWNER)
            .bind(DbUuid(id))
            .bind(ROLE_OWNER)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(DB::rows_affected(&done) > 0)
    }

    /// See [`crate::Store::set_archived`].
    pub(crate) async fn set_archived(
        &self,
        id: ConversationId,
        user: &str,
        archived: bool,
    ) -> Result<bool, StoreError> {
        let statement = if archived { ARCHIVE } else { UNARCHIVE };
        let done = sqlx::query(statement)
            .bind(DbUuid(id))
            .bind(user)
            .execute(&self.pool)
            .await?;
        Ok(DB::rows_affected(&done) > 0)
    }
}
