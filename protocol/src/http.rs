//! JSON bodies of the HTTP API and the message shape shared with frames.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::ErrorCode;
use crate::frame::MessageKind;
use crate::ids::{ConversationId, Seq, UserId};

/// A stored message as clients see it (also the body of a `message` frame).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageView {
    /// The conversation.
    pub conversation_id: ConversationId,
    /// Position in the conversation, from 1, gapless.
    pub seq: Seq,
    /// Server-assigned id.
    pub message_id: Uuid,
    /// Author (JWT `sub`).
    pub sender_id: UserId,
    /// The author's idempotency key.
    pub client_msg_id: String,
    /// `text`, `media` or `system`.
    pub kind: MessageKind,
    /// Text or caption.
    pub body: String,
    /// Object key of attached media.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_key: Option<String>,
    /// Commit time, unix milliseconds.
    pub created_at: i64,
}

/// `direct` (two people, optionally about a listing) or `group`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConversationKind {
    /// Two participants.
    Direct,
    /// Up to [`crate::ids::MAX_GROUP_PARTICIPANTS`] participants.
    Group,
}

impl ConversationKind {
    /// The stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            ConversationKind::Direct => "direct",
            ConversationKind::Group => "group",
        }
    }

    /// Parses the stored form.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "direct" => Some(ConversationKind::Direct),
            "group" => Some(ConversationKind::Group),
            _ => None,
        }
    }
}

/// A conversation as listed to one of its participants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConversationView {
    /// The conversation.
    pub conversation_id: ConversationId,
    /// `direct` or `group`.
    pub kind: ConversationKind,
    /// The listing a direct conversation is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listing_id: Option<String>,
    /// Group title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Every participant's user id.
    pub participants: Vec<UserId>,
    /// Creation time, unix milliseconds.
    pub created_at: i64,
    /// Seq of the newest message (0 when empty).
    pub last_seq: Seq,
    /// The viewer's read cursor.
    pub last_read_seq: Seq,
    /// Messages from others after the viewer's read cursor.
    pub unread_count: u64,
    /// The newest message, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_message: Option<MessageView>,
}

/// `POST /conversations` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CreateConversation {
    /// A direct conversation with `peer_id`, optionally about a listing.
    /// Creating it twice returns the same conversation.
    Direct {
        /// The other participant.
        peer_id: UserId,
        /// The listing it is about.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        listing_id: Option<String>,
    },
    /// A group of the caller and `participants`.
    Group {
        /// The other participants.
        participants: Vec<UserId>,
        /// Optional title.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        title: Option<String>,
    },
}

/// `GET /history` answer: newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryPage {
    /// Messages, highest seq first.
    pub messages: Vec<MessageView>,
    /// Pass as `before_seq` to get the next (older) page; absent at the start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_before_seq: Option<Seq>,
}

/// `GET /conversations` answer: most recently active first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConversationList {
    /// The caller's conversations.
    pub conversations: Vec<ConversationView>,
}

/// Body of every HTTP error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Stable code.
    pub code: ErrorCode,
    /// Human-readable detail.
    pub message: String,
    /// For `rate_limited`: when to retry (also in the `Retry-After` header).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}
