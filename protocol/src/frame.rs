//! WebSocket frames: JSON text, one object per frame, tagged by `"type"`.
//!
//! Client → server: [`ClientFrame`]. Server → client: [`ServerFrame`].
//! Unknown fields are ignored so clients and servers can evolve apart;
//! an unknown `type` is a `malformed_frame` error.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::ErrorCode;
use crate::http::{ConversationView, MessageView};
use crate::ids::{ConversationId, Seq, UserId};

/// What a message carries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageKind {
    /// Plain text in `body`.
    #[default]
    Text,
    /// An uploaded object (`media_key`), with an optional caption in `body`.
    Media,
    /// Written by the system (e.g. "conversation created"); clients cannot send it.
    System,
    /// A tombstone: the message was unsent by its sender or deleted by an
    /// operator. Its `body` is empty and it has no `media_key`; `seq`,
    /// `message_id`, `sender_id`, `client_msg_id` and `created_at` are the
    /// original's. Never stored as a kind and never accepted in a `send`.
    Deleted,
}

impl MessageKind {
    /// The kind as stored and sent on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            MessageKind::Text => "text",
            MessageKind::Media => "media",
            MessageKind::System => "system",
            MessageKind::Deleted => "deleted",
        }
    }

    /// Parses the stored form; `None` for anything else.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "text" => Some(MessageKind::Text),
            "media" => Some(MessageKind::Media),
            "system" => Some(MessageKind::System),
            "deleted" => Some(MessageKind::Deleted),
            _ => None,
        }
    }
}

/// Typing indicator state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TypingState {
    /// The user started typing (expires by itself after a few seconds).
    Start,
    /// The user stopped typing.
    Stop,
}

/// Who replaced a message by its tombstone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeletedBy {
    /// Its sender unsent it (within the unsend window).
    Sender,
    /// An operator deleted it (admin API), or the sender's account was erased.
    Operator,
}

impl DeletedBy {
    /// The form stored in `messages.deleted_by` and sent on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            DeletedBy::Sender => "sender",
            DeletedBy::Operator => "operator",
        }
    }

    /// Parses the stored form.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "sender" => Some(DeletedBy::Sender),
            "operator" => Some(DeletedBy::Operator),
            _ => None,
        }
    }
}

/// A conversation and the last seq the client has seen in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    /// The conversation.
    pub conversation_id: ConversationId,
    /// Last seq seen; the server replays everything after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<Seq>,
}

/// A frame sent by a client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientFrame {
    /// Send a message. Acked with `ack` once durable; a retry with the same
    /// `client_msg_id` is acked with the first one's seq and makes no new message.
    Send {
        /// Target conversation (the sender must participate).
        conversation_id: ConversationId,
        /// Client-chosen idempotency key, unique per sender and conversation.
        client_msg_id: String,
        /// `text` (default) or `media`.
        #[serde(default)]
        kind: MessageKind,
        /// Text, or a caption for media.
        #[serde(default)]
        body: String,
        /// Object key returned by `POST /media`, for `kind: media`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        media_key: Option<String>,
    },
    /// Receive a conversation's messages: first every message after `since`
    /// (if given), then live ones, in seq order. Answered with `subscribed`.
    Subscribe {
        /// The conversation.
        conversation_id: ConversationId,
        /// Last seq seen, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        since: Option<Seq>,
    },
    /// Stop receiving a conversation's messages.
    Unsubscribe {
        /// The conversation.
        conversation_id: ConversationId,
    },
    /// Subscribe to many conversations at once, e.g. after a reconnect.
    Resume {
        /// One cursor per conversation.
        conversations: Vec<Cursor>,
    },
    /// Mark everything up to `seq` as read.
    Read {
        /// The conversation.
        conversation_id: ConversationId,
        /// Highest seq read.
        seq: Seq,
    },
    /// Typing indicator.
    Typing {
        /// The conversation.
        conversation_id: ConversationId,
        /// `start` or `stop`.
        state: TypingState,
    },
    /// Liveness check; answered with `pong` carrying the same nonce.
    Ping {
        /// Echoed back.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        nonce: Option<String>,
    },
    /// Replace the session's token before it expires.
    Auth {
        /// A fresh JWT for the same user.
        token: String,
    },
}

/// A frame sent by the server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    /// First frame of every session.
    Welcome {
        /// The authenticated user (JWT `sub`).
        user_id: UserId,
        /// This session's id on its router (for logs and support). A string:
        /// the number behind it does not fit a JavaScript number.
        session_id: String,
        /// When the token expires (unix seconds); send `auth` before then.
        token_expires_at: i64,
        /// Largest accepted frame, in bytes; larger ones close the socket with 1009.
        max_frame_bytes: usize,
    },
    /// A `send` is durable.
    Ack {
        /// The conversation.
        conversation_id: ConversationId,
        /// The client's idempotency key.
        client_msg_id: String,
        /// The message's seq in the conversation.
        seq: Seq,
        /// Server-assigned message id.
        message_id: Uuid,
        /// Commit time, unix milliseconds.
        created_at: i64,
    },
    /// A message in a subscribed conversation.
    Message(MessageView),
    /// A subscription is live: everything up to `last_seq` has been sent.
    Subscribed {
        /// The conversation.
        conversation_id: ConversationId,
        /// Last seq replayed (or the current last seq when no `since` was given).
        last_seq: Seq,
    },
    /// Someone read up to `seq`.
    Read {
        /// The conversation.
        conversation_id: ConversationId,
        /// The reader.
        user_id: UserId,
        /// Highest seq read.
        seq: Seq,
    },
    /// Someone is (or stopped) typing.
    Typing {
        /// The conversation.
        conversation_id: ConversationId,
        /// Who.
        user_id: UserId,
        /// `start` or `stop`.
        state: TypingState,
    },
    /// A user came online or went offline.
    Presence {
        /// Who.
        user_id: UserId,
        /// Whether they have any live session.
        online: bool,
    },
    /// The user was added to a conversation (e.g. someone started a chat with them).
    Conversation {
        /// The conversation.
        conversation: ConversationView,
    },
    /// A message of a subscribed conversation was replaced by its tombstone
    /// (unsent by its sender, or deleted by an operator): drop its body and
    /// media. History and replays already show the tombstone
    /// (`kind: "deleted"`). It has no seq of its own.
    MessageDeleted {
        /// The conversation.
        conversation_id: ConversationId,
        /// The deleted message's seq.
        seq: Seq,
        /// The deleted message's id.
        message_id: Uuid,
        /// `sender` (unsent) or `operator` (deleted by moderation).
        deleted_by: DeletedBy,
        /// When, unix milliseconds.
        deleted_at: i64,
    },
    /// Answer to `ping`.
    Pong {
        /// The ping's nonce.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        nonce: Option<String>,
    },
    /// A request failed, or the session is about to close.
    Error {
        /// Stable code.
        code: ErrorCode,
        /// Human-readable detail.
        message: String,
        /// The `send` this answers, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        client_msg_id: Option<String>,
        /// The conversation concerned, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        conversation_id: Option<ConversationId>,
        /// For `rate_limited`: when to retry.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after_ms: Option<u64>,
    },
}

impl ServerFrame {
    /// An `error` frame with only a code and a message.
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        ServerFrame::Error {
            code,
            message: message.into(),
            client_msg_id: None,
            conversation_id: None,
            retry_after_ms: None,
        }
    }

    /// The frame as JSON text.
    pub fn to_json(&self) -> String {
        // Serializing these plain structs cannot fail.
        serde_json::to_string(self).expect("server frames serialize")
    }
}

impl ClientFrame {
    /// Parses one text frame. Any text is taken: what is not a frame is an
    /// error, never a panic.
    pub fn parse(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// The conversation the frame is about, if it names one.
    pub fn conversation_id(&self) -> Option<ConversationId> {
        match self {
            ClientFrame::Send {
                conversation_id, ..
            }
            | ClientFrame::Subscribe {
                conversation_id, ..
            }
            | ClientFrame::Unsubscribe { conversation_id }
            | ClientFrame::Read {
                conversation_id, ..
            }
            | ClientFrame::Typing {
                conversation_id, ..
            } => Some(*conversation_id),
            ClientFrame::Resume { .. } | ClientFrame::Ping { .. } | ClientFrame::Auth { .. } => {
                None
            }
        }
    }

    /// The `client_msg_id` of a `send`.
    pub fn client_msg_id(&self) -> Option<&str> {
        match self {
            ClientFrame::Send { client_msg_id, .. } => Some(client_msg_id),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn send_parses_with_defaults() {
        let id = Uuid::now_v7();
        let f = ClientFrame::parse(&format!(
            r#"{{"type":"send","conversation_id":"{id}","client_msg_id":"c1","body":"hi","extra":1}}"#
        ))
        .unwrap();
        assert_eq!(
            f,
            ClientFrame::Send {
                conversation_id: id,
                client_msg_id: "c1".into(),
                kind: MessageKind::Text,
                body: "hi".into(),
                media_key: None
            }
        );
    }

    #[test]
    fn unknown_type_and_garbage_are_errors() {
        assert!(ClientFrame::parse(r#"{"type":"nope"}"#).is_err());
        assert!(ClientFrame::parse("not json").is_err());
        assert!(ClientFrame::parse(r#"{"type":"send"}"#).is_err());
    }

    proptest::proptest! {
        #[test]
        fn any_text_parses_or_fails_without_panic(text in ".*") {
            let _ = ClientFrame::parse(&text);
        }

        #[test]
        fn any_bytes_parse_or_fail_without_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = ClientFrame::parse(&String::from_utf8_lossy(&bytes));
        }

        #[test]
        fn frame_shaped_garbage_parses_or_fails_without_panic(
            kind in "(send|subscribe|unsubscribe|resume|read|typing|ping|auth|[a-z]{0,8})",
            field in "[a-z_]{0,16}",
            value in r#"(-?[0-9]{1,25}|"[^"\\]{0,32}"|null|true|\[\]|\{\}|1e999)"#,
        ) {
            let text = format!(r#"{{"type":"{kind}","{field}":{value},"conversation_id":"00000000-0000-0000-0000-000000000000","since":{value},"seq":{value}}}"#);
            let _ = ClientFrame::parse(&text);
        }
    }

    #[test]
    fn message_frame_is_flat() {
        let m = MessageView {
            conversation_id: Uuid::nil(),
            seq: 7,
            message_id: Uuid::nil(),
            sender_id: "alice".into(),
            client_msg_id: "c".into(),
            kind: MessageKind::Text,
            body: "hi".into(),
            media_key: None,
            created_at: 1,
        };
        let v: serde_json::Value =
            serde_json::from_str(&ServerFrame::Message(m).to_json()).unwrap();
        assert_eq!(v["type"], "message");
        assert_eq!(v["seq"], 7);
        assert_eq!(v["sender_id"], "alice");
    }
}
