//! [`SqlStore`]'s listing cards: what a conversation is about, as the
//! operator set it, written with its audit entry.

use sqlx::{Decode, Encode, Executor, IntoArguments, Type};
use turbochat_protocol::http::ListingCard;
use turbochat_protocol::ids::ConversationId;

use super::safety::INSERT_AUDIT;
use super::statements::SET_LISTING_CARD;
use super::{Backend, DbUuid, SqlStore};
use crate::safety::AuditEntry;
use crate::StoreError;

impl<DB> SqlStore<DB>
where
    DB: Backend + sqlx::database::HasStatementCache,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> DbUuid: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> Option<&'q str>: Encode<'q, DB> + Type<DB>,
{
    /// See [`crate::Store::set_listing_card`].
    pub(crate) async fn set_listing_card(
        &self,
        id: ConversationId,
        card: Option<&ListingCard>,
        audit: &AuditEntry,
    ) -> Result<bool, StoreError> {
        let json = card
            .map(serde_json::to_string)
            .transpose()
            .map_err(|e| StoreError::Corrupt(format!("listing card: {e}")))?;
        let mut tx = self.pool.begin_with(DB::BEGIN_WRITE).await?;
        let done = sqlx::query(SET_LISTING_CARD)
            .bind(DbUuid(id))
            .bind(json.as_deref())
            .execute(&mut *tx)
            .await?;
        let found = DB::rows_affected(&done) > 0;
        if found {
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
        Ok(found)
    }
}
