//! What a push says: an FCM HTTP v1 `Message` built from a stored message
//! and what is known of its recipient when it is sent ([`Extras`]).
//!
//! Title: the sender's display name (their `name` claim, else their id),
//! then ` · ` and the listing's title when the conversation has a card.
//! Body: the text, cut to `push.body_max_chars`, or "Photo" for media, or
//! "New message" when the recipient hides text. Image: the listing's photo.
//! Data (all strings, as FCM requires): `conversation_id`, `message_id`,
//! `seq`, `sender_id`, `sender_name`, `title`, `body`, `badge` (the
//! recipient's unread total), `silent`, `link` (the deep link the browser
//! client opens, `/#/c/{conversation_id}`) and, with a card,
//! `listing_title`, `listing_photo_url`, `listing_price_minor`,
//! `listing_currency`. The badge is also `aps.badge` and Android's
//! `notification_count`.
//!
//! In the recipient's quiet hours the push is data-only (`silent: "true"`,
//! no `notification`, Android priority `normal`, an APNs background push
//! with the badge): nothing rings, the app still learns of the message.
//! Every push of a conversation shares a collapse key (`android.collapse_key`,
//! the Android notification `tag`, `apns-collapse-id`), so a burst shows as
//! one banner.

use std::collections::BTreeMap;

use serde::Serialize;
use turbochat_protocol::http::{ListingCard, MemberView, MessageView};
use turbochat_protocol::MessageKind;

/// Body of `POST /v1/projects/{project}/messages:send`.
#[derive(Debug, Serialize)]
pub struct SendRequest<'a> {
    /// The message.
    pub message: &'a Message,
}

/// An FCM v1 `Message` for one device token (the fields we use).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Message {
    /// The device's registration token.
    pub token: String,
    /// What the system shows (absent in quiet hours: data only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notification: Option<Notification>,
    /// Handed to the app (string values only).
    pub data: BTreeMap<String, String>,
    /// Android options.
    pub android: AndroidConfig,
    /// APNs options.
    pub apns: ApnsConfig,
    /// Web push options.
    pub webpush: WebpushConfig,
}

/// `notification`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Notification {
    /// The sender (and the listing).
    pub title: String,
    /// The text (cut), "Photo" or "New message".
    pub body: String,
    /// The listing's photo.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
}

/// `android`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AndroidConfig {
    /// Messages with one key replace each other while the device is offline.
    pub collapse_key: String,
    /// `high`: chat messages are user-visible and time-sensitive; `normal`
    /// in quiet hours.
    pub priority: &'static str,
    /// Display options (absent in quiet hours).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notification: Option<AndroidNotification>,
}

/// `android.notification`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AndroidNotification {
    /// A notification with the same tag replaces the shown one.
    pub tag: String,
    /// The unread total, shown on the launcher icon.
    pub notification_count: u64,
}

/// `apns`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApnsConfig {
    /// `apns-collapse-id` (at most 64 bytes: a UUID is 36), priority, type.
    pub headers: BTreeMap<String, String>,
    /// `aps`: `thread-id` groups a conversation's notifications, `badge`.
    pub payload: serde_json::Value,
}

/// `webpush`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WebpushConfig {
    /// `Urgency`: `high`, or `normal` in quiet hours.
    pub headers: BTreeMap<String, String>,
    /// `{"link": ...}`: what a click opens (FCM requires HTTPS: only with
    /// an absolute `https://` link base).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub fcm_options: BTreeMap<String, String>,
    /// Web Notification options: the sender's picture as the icon.
    #[serde(skip_serializing_if = "serde_json::Map::is_empty")]
    pub notification: serde_json::Map<String, serde_json::Value>,
}

/// How pushes look (from `[push]`).
#[derive(Debug, Clone)]
pub struct Style {
    /// Longest body, in characters.
    pub body_max_chars: usize,
    /// Deep link prefix (empty: relative).
    pub link_base: String,
}

/// What is known of the push's recipient and sender when it is sent.
#[derive(Debug, Clone, Default)]
pub struct Extras<'a> {
    /// The sender's profile, if any.
    pub sender: Option<&'a MemberView>,
    /// The conversation's listing card, if any.
    pub listing: Option<&'a ListingCard>,
    /// The recipient's unread total.
    pub badge: u64,
    /// The recipient hides message text.
    pub hide_text: bool,
    /// The recipient is in quiet hours.
    pub silent: bool,
}

/// Body shown when the recipient hides message text.
pub const HIDDEN_BODY: &str = "New message";
/// Longest listing title in a push title, in characters.
const TITLE_LISTING_CHARS: usize = 60;

/// The deep link that opens a conversation in the browser client.
pub fn deep_link(link_base: &str, message: &MessageView) -> String {
    format!(
        "{}/#/c/{}",
        link_base.trim_end_matches('/'),
        message.conversation_id
    )
}

/// The notification body for `message`.
pub fn body(message: &MessageView, max_chars: usize) -> String {
    match message.kind {
        MessageKind::Media => "Photo".to_string(),
        MessageKind::Text | MessageKind::System => truncate(message.body.trim(), max_chars),
        // Never pushed (the worker drops such a job); said plainly if it were.
        MessageKind::Deleted => "Message deleted".to_string(),
    }
}

/// `text` cut to at most `max_chars` characters, the last one `…` if cut.
fn truncate(text: &str, max_chars: usize) -> String {
    if text.chars().count() <= max_chars {
        return text.to_string();
    }
    let mut cut: String = text.chars().take(max_chars.saturating_sub(1)).collect();
    cut.truncate(cut.trim_end().len());
    cut.push('…');
    cut
}

/// The title: who wrote, and about which listing.
pub fn title(message: &MessageView, extras: &Extras<'_>) -> String {
    let name = extras
        .sender
        .and_then(|s| s.name.as_deref())
        .unwrap_or(&message.sender_id);
    match extras.listing {
        Some(card) => format!("{name} · {}", truncate(&card.title, TITLE_LISTING_CHARS)),
        None => name.to_string(),
    }
}

/// The push announcing `message` on the device with `token`.
pub fn build(message: &MessageView, token: &str, style: &Style, extras: &Extras<'_>) -> Message {
    let conversation = message.conversation_id.to_string();
    let link = deep_link(&style.link_base, message);
    let title = title(message, extras);
    let body = if extras.hide_text {
        HIDDEN_BODY.to_string()
    } else {
        body(message, style.body_max_chars)
    };
    let sender_name = extras
        .sender
        .map_or(message.sender_id.as_str(), |s| s.display_name())
        .to_string();
    let mut data = BTreeMap::from([
        ("conversation_id".to_string(), conversation.clone()),
        ("message_id".to_string(), message.message_id.to_string()),
        ("seq".to_string(), message.seq.to_string()),
        ("sender_id".to_string(), message.sender_id.clone()),
        ("sender_name".to_string(), sender_name),
        ("title".to_string(), title.clone()),
        ("body".to_string(), body.clone()),
        ("badge".to_string(), extras.badge.to_string()),
        ("silent".to_string(), extras.silent.to_string()),
        ("link".to_string(), link.clone()),
    ]);
    let avatar = extras.sender.and_then(|s| s.avatar_url.clone());
    if let Some(avatar) = &avatar {
        data.insert("sender_avatar_url".into(), avatar.clone());
    }
    if let Some(card) = extras.listing {
        data.insert("listing_title".into(), card.title.clone());
        if let Some(photo) = &card.photo_url {
            data.insert("listing_photo_url".into(), photo.clone());
        }
        if let Some(price) = &card.price {
            data.insert("listing_price_minor".into(), price.amount_minor.to_string());
            data.insert("listing_currency".into(), price.currency.clone());
        }
    }
    let image = extras.listing.and_then(|card| card.photo_url.clone());
    let notification = (!extras.silent).then_some(Notification { title, body, image });
    let mut apns_headers = BTreeMap::from([("apns-collapse-id".to_string(), conversation.clone())]);
    let aps = if extras.silent {
        apns_headers.insert("apns-priority".into(), "5".into());
        apns_headers.insert("apns-push-type".into(), "background".into());
        serde_json::json!({"thread-id": conversation, "badge": extras.badge, "content-available": 1})
    } else {
        apns_headers.insert("apns-priority".into(), "10".into());
        apns_headers.insert("apns-push-type".into(), "alert".into());
        serde_json::json!({"thread-id": conversation, "badge": extras.badge, "sound": "default"})
    };
    let mut web_notification = serde_json::Map::new();
    if let (Some(avatar), false) = (avatar, extras.silent) {
        web_notification.insert("icon".into(), avatar.into());
    }
    Message {
        token: token.to_string(),
        notification,
        data,
        android: AndroidConfig {
            collapse_key: conversation.clone(),
            priority: if extras.silent { "normal" } else { "high" },
            notification: (!extras.silent).then(|| AndroidNotification {
                tag: conversation.clone(),
                notification_count: extras.badge,
            }),
        },
        apns: ApnsConfig {
            headers: apns_headers,
            payload: serde_json::json!({ "aps": aps }),
        },
        webpush: WebpushConfig {
            headers: BTreeMap::from([(
                "Urgency".to_string(),
                if extras.silent { "normal" } else { "high" }.to_string(),
            )]),
            fcm_options: if link.starts_with("https://") {
                BTreeMap::from([("link".to_string(), link)])
            } else {
                BTreeMap::new()
            },
            notification: web_notification,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use turbochat_protocol::http::Price;
    use uuid::Uuid;

    const CONVERSATION: &str = "0194f6a4-0000-7000-8000-000000000001";

    fn message(kind: MessageKind, body: &str) -> MessageView {
        MessageView {
            conversation_id: Uuid::parse_str(CONVERSATION).unwrap(),
            seq: 42,
            message_id: Uuid::parse_str("0194f6a4-0000-7000-8000-0000000000aa").unwrap(),
            sender_id: "alice".into(),
            client_msg_id: "c1".into(),
            kind,
            body: body.into(),
            media_key: (kind == MessageKind::Media).then(|| "k".into()),
            created_at: 1,
        }
    }

    fn style() -> Style {
        Style {
            body_max_chars: 10,
            link_base: String::new(),
        }
    }

    #[test]
    fn text_push_has_the_documented_shape() {
        let extras = Extras {
            badge: 3,
            ..Extras::default()
        };
        let push = build(
            &message(MessageKind::Text, "Still for sale?"),
            "tok",
            &style(),
            &extras,
        );
        let json = serde_json::to_value(SendRequest { message: &push }).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"message": {
                "token": "tok",
                "notification": {"title": "alice", "body": "Still for…"},
                "data": {
                    "conversation_id": CONVERSATION,
                    "message_id": "0194f6a4-0000-7000-8000-0000000000aa",
                    "seq": "42",
                    "sender_id": "alice",
                    "sender_name": "alice",
                    "title": "alice",
                    "body": "Still for…",
                    "badge": "3",
                    "silent": "false",
                    "link": format!("/#/c/{CONVERSATION}"),
                },
                "android": {"collapse_key": CONVERSATION, "priority": "high",
                            "notification": {"tag": CONVERSATION, "notification_count": 3}},
                "apns": {"headers": {"apns-collapse-id": CONVERSATION, "apns-priority": "10",
                                     "apns-push-type": "alert"},
                         "payload": {"aps": {"thread-id": CONVERSATION, "badge": 3,
                                             "sound": "default"}}},
                "webpush": {"headers": {"Urgency": "high"}},
            }})
        );
    }

    #[test]
    fn names_listing_and_picture_show() {
        let sender = MemberView {
            user_id: "alice".into(),
            name: Some("Alice Martin".into()),
            avatar_url: Some("https://img.test/alice.png".into()),
        };
        let card = ListingCard {
            title: "Audi A4 Avant 2.0 TDI, 2019".into(),
            price: Some(Price {
                amount_minor: 1_890_000,
                currency: "EUR".into(),
            }),
            photo_url: Some("https://img.test/a4.jpg".into()),
        };
        let extras = Extras {
            sender: Some(&sender),
            listing: Some(&card),
            badge: 1,
            ..Extras::default()
        };
        let push = build(&message(MessageKind::Text, "Hi"), "tok", &style(), &extras);
        let n = push.notification.as_ref().unwrap();
        assert_eq!(n.title, "Alice Martin · Audi A4 Avant 2.0 TDI, 2019");
        assert_eq!(n.image.as_deref(), Some("https://img.test/a4.jpg"));
        assert_eq!(push.data["sender_name"], "Alice Martin");
        assert_eq!(push.data["listing_title"], "Audi A4 Avant 2.0 TDI, 2019");
        assert_eq!(push.data["listing_price_minor"], "1890000");
        assert_eq!(push.data["listing_currency"], "EUR");
        assert_eq!(push.data["sender_avatar_url"], "https://img.test/alice.png");
        assert_eq!(
            push.webpush.notification["icon"],
            serde_json::json!("https://img.test/alice.png")
        );
    }

    #[test]
    fn hidden_text_and_quiet_hours() {
        let hidden = Extras {
            hide_text: true,
            ..Extras::default()
        };
        let push = build(
            &message(MessageKind::Text, "secret"),
            "t",
            &style(),
            &hidden,
        );
        assert_eq!(push.notification.unwrap().body, HIDDEN_BODY);
        assert_eq!(push.data["body"], HIDDEN_BODY);

        let quiet = Extras {
            silent: true,
            badge: 7,
            ..Extras::default()
        };
        let push = build(&message(MessageKind::Text, "late"), "t", &style(), &quiet);
        let json = serde_json::to_value(&push).unwrap();
        assert!(json.get("notification").is_none(), "data only: {json}");
        assert!(json["android"].get("notification").is_none());
        assert_eq!(json["android"]["priority"], "normal");
        assert_eq!(json["apns"]["headers"]["apns-push-type"], "background");
        assert_eq!(json["apns"]["payload"]["aps"]["content-available"], 1);
        assert_eq!(json["apns"]["payload"]["aps"]["badge"], 7);
        assert_eq!(json["data"]["silent"], "true");
        assert_eq!(json["data"]["body"], "late");
    }

    #[test]
    fn media_says_photo() {
        assert_eq!(body(&message(MessageKind::Media, "caption"), 10), "Photo");
    }

    #[test]
    fn truncation_counts_characters_not_bytes() {
        assert_eq!(truncate("short", 10), "short");
        assert_eq!(truncate("exactly 10", 10), "exactly 10");
        assert_eq!(truncate("ééééééééééé", 5), "éééé…");
        assert_eq!(
            truncate("ab cd ef", 4),
            "ab…",
            "no space before the ellipsis"
        );
        assert_eq!(body(&message(MessageKind::Text, "  hi  "), 10), "hi");
    }

    #[test]
    fn https_base_sets_the_web_push_link() {
        let style = Style {
            body_max_chars: 10,
            link_base: "https://chat.example/".into(),
        };
        let push = build(
            &message(MessageKind::Text, "x"),
            "tok",
            &style,
            &Extras::default(),
        );
        let link = format!("https://chat.example/#/c/{CONVERSATION}");
        assert_eq!(push.data["link"], link);
        assert_eq!(push.webpush.fcm_options["link"], link);
    }
}
