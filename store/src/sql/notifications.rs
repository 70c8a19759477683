//! [`SqlStore`]'s profiles, notification settings, mute and what a push
//! needs to know about its recipient ([`crate::PushContext`]).

use sqlx::{Decode, Encode, Executor, FromRow, IntoArguments, Type};
use turbochat_protocol::http::{MemberView, NotificationSettings};
use turbochat_protocol::ids::{ConversationId, UserId};

use super::rows::listing_card_from_row;
use super::{Backend, DbUuid, SqlStore};
use crate::{PushContext, StoreError};

/// The badge stops counting here (as `unread_count` stops at 1000 per
/// conversation), so one user's huge backlog costs a bounded scan.
pub(crate) const BADGE_CAP: i64 = 9_999;

const UPSERT_PROFILE: &str = "INSERT INTO user_profiles (user_id, name, avatar_url, updated_at) \
     VALUES ($1, $2, $3, $4) \
     ON CONFLICT (user_id) DO UPDATE SET name = excluded.name, \
     avatar_url = excluded.avatar_url, updated_at = excluded.updated_at";
const SELECT_SETTINGS: &str = "SELECT settings FROM notification_settings WHERE user_id = $1";
const UPSERT_SETTINGS: &str = "INSERT INTO notification_settings (user_id, settings, updated_at) \
     VALUES ($1, $2, $3) \
     ON CONFLICT (user_id) DO UPDATE SET settings = excluded.settings, \
     updated_at = excluded.updated_at";
const SET_MUTED: &str = "UPDATE conversation_participants SET muted = $3 \
     WHERE conversation_id = $1 AND user_id = $2";
const SELECT_RECIPIENT: &str = "SELECT p.muted, c.listing_card \
     FROM conversation_participants p JOIN conversations c ON c.id = p.conversation_id \
     WHERE p.conversation_id = $1 AND p.user_id = $2";
const SELECT_PROFILE: &str =
    "SELECT user_id, name, avatar_url FROM user_profiles WHERE user_id = $1";
/// Messages from others after the read cursor, over the user's
/// conversations they did not mute, up to `$2`.
const SELECT_BADGE: &str = "SELECT COUNT(*) FROM (SELECT 1 FROM conversation_participants p \
     JOIN messages m ON m.conversation_id = p.conversation_id \
         AND m.seq > p.last_read_seq AND m.sender_id <> p.user_id \
     WHERE p.user_id = $1 AND p.muted = $3 LIMIT $2) AS unread";

#[derive(FromRow)]
pub(crate) struct ProfileRow {
    user_id: String,
    name: Option<String>,
    avatar_url: Option<String>,
}

impl From<ProfileRow> for MemberView {
    fn from(row: ProfileRow) -> Self {
        MemberView {
            user_id: row.user_id,
            name: row.name,
            avatar_url: row.avatar_url,
        }
    }
}

#[derive(FromRow)]
pub(crate) struct RecipientRow {
    muted: bool,
    listing_card: Option<String>,
}

fn settings_from_json(json: Option<String>) -> Result<NotificationSettings, StoreError> {
    match json {
        None => Ok(NotificationSettings::default()),
        Some(json) => serde_json::from_str(&json)
            .map_err(|e| StoreError::Corrupt(format!("notification settings: {e}"))),
    }
}

impl<DB> SqlStore<DB>
where
    DB: Backend + sqlx::database::HasStatementCache,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> DbUuid: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> bool: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> Option<&'q str>: Encode<'q, DB> + Type<DB>,
    for<'r> ProfileRow: FromRow<'r, DB::Row>,
    for<'r> RecipientRow: FromRow<'r, DB::Row>,
    for<'r> (i64,): FromRow<'r, DB::Row>,
    for<'r> (String,): FromRow<'r, DB::Row>,
{
    /// See [`crate::Store::set_profile`].
    pub(crate) async fn set_profile(
        &self,
        user: &str,
        name: Option<&str>,
        avatar_url: Option<&str>,
        at: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(UPSERT_PROFILE)
            .bind(user)
            .bind(name)
            .bind(avatar_url)
            .bind(at)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// See [`crate::Store::profiles`].
    pub(crate) async fn profiles(&self, users: &[UserId]) -> Result<Vec<MemberView>, StoreError> {
        let mut found = Vec::with_capacity(users.len());
        for user in users {
            let row: Option<ProfileRow> = sqlx::query_as(SELECT_PROFILE)
                .bind(user.as_str())
                .fetch_optional(&self.pool)
                .await?;
            found.push(row.map_or_else(|| MemberView::bare(user.clone()), MemberView::from));
        }
        Ok(found)
    }

    /// See [`crate::Store::notification_settings`].
    pub(crate) async fn notification_settings(
        &self,
        user: &str,
    ) -> Result<NotificationSettings, StoreError> {
        let row: Option<(String,)> = sqlx::query_as(SELECT_SETTINGS)
            .bind(user)
            .fetch_optional(&self.pool)
            .await?;
        settings_from_json(row.map(|(json,)| json))
    }

    /// See [`crate::Store::set_notification_settings`].
    pub(crate) async fn set_notification_settings(
        &self,
        user: &str,
        settings: &NotificationSettings,
        at: i64,
    ) -> Result<(), StoreError> {
        let json = serde_json::to_string(settings)
            .map_err(|e| StoreError::Corrupt(format!("notification settings: {e}")))?;
        sqlx::query(UPSERT_SETTINGS)
            .bind(user)
            .bind(json.as_str())
            .bind(at)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// See [`crate::Store::set_muted`].
    pub(crate) async fn set_muted(
        &self,
        id: ConversationId,
        user: &str,
        muted: bool,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(SET_MUTED)
            .bind(DbUuid(id))
            .bind(user)
            .bind(muted)
            .execute(&self.pool)
            .await?;
        Ok(DB::rows_affected(&done) > 0)
    }

    /// See [`crate::Store::push_context`].
    pub(crate) async fn push_context(
        &self,
        user: &str,
        id: ConversationId,
        sender: &str,
    ) -> Result<Option<PushContext>, StoreError> {
        let Some(recipient): Option<RecipientRow> = sqlx::query_as(SELECT_RECIPIENT)
            .bind(DbUuid(id))
            .bind(user)
            .fetch_optional(&self.pool)
            .await?
        else {
            return Ok(None);
        };
        let sender: Option<ProfileRow> = sqlx::query_as(SELECT_PROFILE)
            .bind(sender)
            .fetch_optional(&self.pool)
            .await?;
        let settings: Option<(String,)> = sqlx::query_as(SELECT_SETTINGS)
            .bind(user)
            .fetch_optional(&self.pool)
            .await?;
        let (badge,): (i64,) = sqlx::query_as(SELECT_BADGE)
            .bind(user)
            .bind(BADGE_CAP)
            .bind(false)
            .fetch_one(&self.pool)
            .await?;
        Ok(Some(PushContext {
            muted: recipient.muted,
            listing: listing_card_from_row(recipient.listing_card.as_deref())?,
            sender: sender.map(MemberView::from),
            settings: settings_from_json(settings.map(|(json,)| json))?,
            badge: u64::try_from(badge).unwrap_or(0),
        }))
    }
}
