//! Rows as the shared statements return them, and how they become the
//! store's types.

use sqlx::FromRow;
use turbochat_protocol::http::{ConversationKind, MessageView};
use turbochat_protocol::MessageKind;

use super::{seq_from_row, DbUuid};
use crate::{Participant, StoreError};

#[derive(FromRow)]
pub(crate) struct MessageRow {
    pub(super) id: DbUuid,
    pub(super) conversation_id: DbUuid,
    pub(super) seq: i64,
    pub(super) sender_id: String,
    pub(super) client_msg_id: String,
    pub(super) kind: String,
    pub(super) body: String,
    pub(super) media_key: Option<String>,
    pub(super) created_at: i64,
    /// Set on a tombstone: the message reads back as kind `deleted`.
    pub(super) deleted_at: Option<i64>,
}

impl TryFrom<MessageRow> for MessageView {
    type Error = StoreError;

    fn try_from(row: MessageRow) -> Result<Self, StoreError> {
        Ok(MessageView {
            conversation_id: row.conversation_id.0,
            seq: seq_from_row(row.seq)?,
            message_id: row.id.0,
            sender_id: row.sender_id,
            client_msg_id: row.client_msg_id,
            kind: match row.deleted_at {
                Some(_) => MessageKind::Deleted,
                None => parse_message_kind(&row.kind)?,
            },
            body: row.body,
            media_key: row.media_key,
            created_at: row.created_at,
        })
    }
}

pub(super) fn parse_message_kind(kind: &str) -> Result<MessageKind, StoreError> {
    MessageKind::parse(kind).ok_or_else(|| StoreError::Corrupt(format!("message kind {kind:?}")))
}

pub(super) fn parse_conversation_kind(kind: &str) -> Result<ConversationKind, StoreError> {
    ConversationKind::parse(kind)
        .ok_or_else(|| StoreError::Corrupt(format!("conversation kind {kind:?}")))
}

/// One row of `SELECT_CONVERSATION_STATE`: the conversation, and one
/// participant (absent when it has none).
#[derive(FromRow)]
pub(crate) struct ConversationStateRow {
    pub(super) id: DbUuid,
    pub(super) kind: String,
    pub(super) listing_id: Option<String>,
    pub(super) title: Option<String>,
    pub(super) listing_card: Option<String>,
    pub(super) created_at: i64,
    pub(super) last_seq: i64,
    pub(super) user_id: Option<String>,
    pub(super) role: Option<String>,
    pub(super) last_read_seq: Option<i64>,
    pub(super) muted: Option<bool>,
}

impl ConversationStateRow {
    /// The participant this row carries, if any.
    pub(super) fn participant(&mut self) -> Result<Option<Participant>, StoreError> {
        let Some(user_id) = self.user_id.take() else {
            return Ok(None);
        };
        Ok(Some(Participant {
            user_id,
            role: self.role.take().unwrap_or_default(),
            last_read_seq: seq_from_row(self.last_read_seq.unwrap_or_default())?,
            muted: self.muted.unwrap_or_default(),
        }))
    }
}

#[derive(FromRow)]
pub(crate) struct MemberRow {
    pub(super) conversation_id: DbUuid,
    pub(super) user_id: String,
    pub(super) name: Option<String>,
    pub(super) avatar_url: Option<String>,
}

#[derive(FromRow)]
pub(crate) struct ConversationListRow {
    pub(super) id: DbUuid,
    pub(super) kind: String,
    pub(super) listing_id: Option<String>,
    pub(super) title: Option<String>,
    pub(super) listing_card: Option<String>,
    pub(super) created_at: i64,
    pub(super) last_read_seq: i64,
    pub(super) muted: bool,
    pub(super) unread_count: i64,
    pub(super) lm_id: Option<DbUuid>,
    pub(super) lm_seq: Option<i64>,
    pub(super) lm_sender_id: Option<String>,
    pub(super) lm_client_msg_id: Option<String>,
    pub(super) lm_kind: Option<String>,
    pub(super) lm_body: Option<String>,
    pub(super) lm_media_key: Option<String>,
    pub(super) lm_created_at: Option<i64>,
    pub(super) lm_deleted_at: Option<i64>,
}

impl ConversationListRow {
    /// The last message, if the conversation has one.
    pub(super) fn last_message(&mut self) -> Result<Option<MessageRow>, StoreError> {
        let Some(id) = self.lm_id else {
            return Ok(None);
        };
        let missing = || StoreError::Corrupt(format!("last message {} is incomplete", id.0));
        Ok(Some(MessageRow {
            id,
            conversation_id: self.id,
            seq: self.lm_seq.ok_or_else(missing)?,
            sender_id: self.lm_sender_id.take().ok_or_else(missing)?,
            client_msg_id: self.lm_client_msg_id.take().ok_or_else(missing)?,
            kind: self.lm_kind.take().ok_or_else(missing)?,
            body: self.lm_body.take().ok_or_else(missing)?,
            media_key: self.lm_media_key.take(),
            created_at: self.lm_created_at.ok_or_else(missing)?,
            deleted_at: self.lm_deleted_at,
        }))
    }
}

#[derive(FromRow)]
pub(crate) struct DeviceRow {
    pub(super) user_id: String,
    pub(super) platform: String,
    pub(super) token: String,
    pub(super) updated_at: i64,
}

#[derive(FromRow)]
pub(crate) struct MediaUploadRow {
    pub(super) media_key: String,
    pub(super) uploader_id: String,
    pub(super) content_type: String,
    pub(super) size: i64,
    pub(super) created_at: i64,
}

#[derive(FromRow)]
pub(crate) struct StateCountRow {
    pub(super) state: String,
    pub(super) count: i64,
}

#[derive(FromRow)]
pub(crate) struct UserRow {
    pub(super) user_id: String,
}

#[derive(FromRow)]
pub(crate) struct CountRow {
    pub(super) count: i64,
}

#[derive(FromRow)]
pub(crate) struct ClaimedJobRow {
    pub(super) id: i64,
    pub(super) message_id: DbUuid,
    pub(super) user_id: String,
    pub(super) attempts: i32,
    pub(super) done_tokens: String,
    pub(super) created_at: i64,
}

/// A stored listing card (JSON), read back.
pub(crate) fn listing_card_from_row(
    json: Option<&str>,
) -> Result<Option<turbochat_protocol::http::ListingCard>, StoreError> {
    json.map(|json| {
        serde_json::from_str(json).map_err(|e| StoreError::Corrupt(format!("listing card: {e}")))
    })
    .transpose()
}
