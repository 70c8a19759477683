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
    /// What the conversation is about, as the operator set it (never from
    /// a participant's say-so).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listing: Option<Box<ListingCard>>,
    /// Every participant with their display name and avatar (from their
    /// last token's `name` and `picture` claims), in `participants`' order.
    #[serde(default)]
    pub members: Vec<MemberView>,
    /// Whether the viewer muted the conversation (no pushes from it).
    #[serde(default)]
    pub muted: bool,
}

/// A participant as the others see them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberView {
    /// The user.
    pub user_id: UserId,
    /// Display name (the `name` claim of their last session), if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// An `https://` URL of their picture (the `picture` claim), if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avatar_url: Option<String>,
}

impl MemberView {
    /// A member of whom nothing but the id is known.
    pub fn bare(user_id: impl Into<UserId>) -> Self {
        MemberView {
            user_id: user_id.into(),
            name: None,
            avatar_url: None,
        }
    }

    /// What to call them: the name, else the user id.
    pub fn display_name(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.user_id)
    }
}

/// Longest display name kept, in characters (longer ones are cut).
pub const MAX_DISPLAY_NAME_CHARS: usize = 64;
/// Longest avatar URL kept, in bytes (longer ones are dropped).
pub const MAX_AVATAR_URL_BYTES: usize = 2048;

/// A display name as turbochat keeps it: trimmed, control characters
/// dropped, cut to [`MAX_DISPLAY_NAME_CHARS`]; `None` when nothing is left.
pub fn clean_display_name(name: &str) -> Option<String> {
    let cleaned: String = name
        .chars()
        .filter(|c| !c.is_control())
        .collect::<String>()
        .trim()
        .chars()
        .take(MAX_DISPLAY_NAME_CHARS)
        .collect();
    let cleaned = cleaned.trim_end().to_string();
    (!cleaned.is_empty()).then_some(cleaned)
}

/// An avatar URL as turbochat keeps it: `https://` only, at most
/// [`MAX_AVATAR_URL_BYTES`], no whitespace or control characters; else `None`.
pub fn clean_avatar_url(url: &str) -> Option<String> {
    let url = url.trim();
    let ok = url.starts_with("https://")
        && url.len() > "https://".len()
        && url.len() <= MAX_AVATAR_URL_BYTES
        && !url.chars().any(|c| c.is_control() || c.is_whitespace());
    ok.then(|| url.to_string())
}

/// A user's notification settings (`GET|PUT /settings/notifications`).
/// Absent fields take their defaults; unknown fields are refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct NotificationSettings {
    /// `all` (default) or `none` (no pushes at all).
    #[serde(default)]
    pub mode: NotifyMode,
    /// Pushes say "New message" instead of the text.
    #[serde(default)]
    pub hide_text: bool,
    /// A daily window in which pushes are sent silently (no sound, no
    /// banner: the app's badge and list still update).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quiet_hours: Option<QuietHours>,
}

/// `all` or `none`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum NotifyMode {
    /// Every message of a conversation not muted.
    #[default]
    All,
    /// Nothing.
    None,
}

/// Quiet hours: from `start` to `end` (`"HH:MM"`, 24-hour) in `time_zone`
/// (IANA, e.g. `"Europe/Berlin"`); `start` after `end` spans midnight.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuietHours {
    /// First quiet minute, e.g. `"22:00"`.
    pub start: String,
    /// First minute no longer quiet, e.g. `"07:00"`.
    pub end: String,
    /// The user's IANA time zone.
    pub time_zone: String,
}

/// Minutes after midnight of an `"HH:MM"` time, if it is one.
pub fn parse_hh_mm(text: &str) -> Option<u16> {
    let (h, m) = text.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let h: u16 = h.parse().ok()?;
    let m: u16 = m.parse().ok()?;
    (h < 24 && m < 60).then_some(h * 60 + m)
}

/// A listing's card on a conversation: set through the admin API by the
/// operator (e.g. the car app's backend), shown by clients in the list and
/// the chat header.
/// Clients read it leniently (a later server may add fields); the admin
/// API that sets it refuses unknown fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListingCard {
    /// E.g. "Audi A4 Avant 2.0 TDI, 2019". 1 to 200 characters.
    pub title: String,
    /// Asking price, if shown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price: Option<Price>,
    /// An `https://` URL of the listing's photo, at most 2,048 bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub photo_url: Option<String>,
}

/// An amount of money in minor units (cents) of an ISO 4217 currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Price {
    /// Minor units, 0 or more: 1890000 with "EUR" is €18,900.00.
    pub amount_minor: i64,
    /// Three upper-case letters, e.g. "EUR".
    pub currency: String,
}

/// Longest listing title, in characters.
pub const MAX_LISTING_TITLE_CHARS: usize = 200;
/// Longest listing photo URL, in bytes.
pub const MAX_LISTING_PHOTO_URL_BYTES: usize = 2048;

impl ListingCard {
    /// Why the card cannot be stored, if it cannot.
    pub fn check(&self) -> Result<(), String> {
        let title_chars = self.title.chars().count();
        if !(1..=MAX_LISTING_TITLE_CHARS).contains(&title_chars) {
            return Err(format!(
                "listing title must be 1 to {MAX_LISTING_TITLE_CHARS} characters"
            ));
        }
        if self.title.chars().any(char::is_control) {
            return Err("listing title may not hold control characters".into());
        }
        if let Some(price) = &self.price {
            if price.amount_minor < 0 {
                return Err("price amount_minor must be 0 or more".into());
            }
            if price.currency.len() != 3 || !price.currency.bytes().all(|b| b.is_ascii_uppercase())
            {
                return Err("price currency must be three upper-case letters (ISO 4217)".into());
            }
        }
        if let Some(url) = &self.photo_url {
            if url.len() > MAX_LISTING_PHOTO_URL_BYTES
                || !url.starts_with("https://")
                || url.len() == "https://".len()
                || url.chars().any(|c| c.is_control() || c.is_whitespace())
            {
                return Err(format!(
                    "photo_url must be an https:// URL of at most {MAX_LISTING_PHOTO_URL_BYTES} bytes"
                ));
            }
        }
        Ok(())
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn card() -> ListingCard {
        ListingCard {
            title: "Audi A4 Avant, 2019".into(),
            price: Some(Price {
                amount_minor: 1_890_000,
                currency: "EUR".into(),
            }),
            photo_url: Some("https://img.turbocar.example/1.jpg".into()),
        }
    }

    #[test]
    fn a_listing_card_is_checked_field_by_field() {
        assert_eq!(card().check(), Ok(()));
        let bad = [
            ListingCard {
                title: String::new(),
                ..card()
            },
            ListingCard {
                title: "x".repeat(MAX_LISTING_TITLE_CHARS + 1),
                ..card()
            },
            ListingCard {
                title: "Audi\u{0}".into(),
                ..card()
            },
            ListingCard {
                price: Some(Price {
                    amount_minor: -1,
                    currency: "EUR".into(),
                }),
                ..card()
            },
            ListingCard {
                price: Some(Price {
                    amount_minor: 1,
                    currency: "eur".into(),
                }),
                ..card()
            },
            ListingCard {
                photo_url: Some("http://img.example/1.jpg".into()),
                ..card()
            },
            ListingCard {
                photo_url: Some("javascript:alert(1)".into()),
                ..card()
            },
            ListingCard {
                photo_url: Some(format!(
                    "https://{}",
                    "a".repeat(MAX_LISTING_PHOTO_URL_BYTES)
                )),
                ..card()
            },
        ];
        for card in bad {
            assert!(card.check().is_err(), "{card:?}");
        }
        let minimal = ListingCard {
            title: "Golf".into(),
            price: None,
            photo_url: None,
        };
        assert_eq!(minimal.check(), Ok(()));
        let later: ListingCard =
            serde_json::from_str(r#"{"title":"x","mileage_km":42000}"#).unwrap();
        assert_eq!(later.title, "x", "a client reads a later server's card");
    }
}
