//! What a push says: an FCM HTTP v1 `Message` built from a stored message.
//!
//! Title: the sender. Body: the text, cut to `push.body_max_chars`, or
//! "Photo" for media. Data (all strings, as FCM requires):
//! `conversation_id`, `message_id`, `seq`, `sender_id` and `link`, the deep
//! link the browser client opens (`/#/c/{conversation_id}`). Every push of
//! a conversation shares a collapse key (`android.collapse_key`, the Android
//! notification `tag`, `apns-collapse-id`), so a burst shows as one banner.

use std::collections::BTreeMap;

use serde::Serialize;
use turbochat_protocol::http::MessageView;
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
    /// What the system shows.
    pub notification: Notification,
    /// Handed to the app (string values only).
    pub data: BTreeMap<String, String>,
    /// Android options.
    pub android: AndroidConfig,
    /// APNs options.
    pub apns: ApnsConfig,
    /// Web push options (only with an absolute `https://` link).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webpush: Option<WebpushConfig>,
}

/// `notification`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Notification {
    /// The sender.
    pub title: String,
    /// The text (cut) or "Photo".
    pub body: String,
}

/// `android`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AndroidConfig {
    /// Messages with one key replace each other while the device is offline.
    pub collapse_key: String,
    /// `high`: chat messages are user-visible and time-sensitive.
    pub priority: &'static str,
    /// Display options.
    pub notification: AndroidNotification,
}

/// `android.notification`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AndroidNotification {
    /// A notification with the same tag replaces the shown one.
    pub tag: String,
}

/// `apns`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApnsConfig {
    /// `apns-collapse-id` (at most 64 bytes: a UUID is 36).
    pub headers: BTreeMap<String, String>,
    /// `aps.thread-id` groups a conversation's notifications.
    pub payload: serde_json::Value,
}

/// `webpush`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WebpushConfig {
    /// `{"link": ...}`: what a click opens (FCM requires HTTPS).
    pub fcm_options: BTreeMap<String, String>,
}

/// How pushes look (from `[push]`).
#[derive(Debug, Clone)]
pub struct Style {
    /// Longest body, in characters.
    pub body_max_chars: usize,
    /// Deep link prefix (empty: relative).
    pub link_base: String,
}

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

/// The push announcing `message` on the device with `token`.
pub fn build(message: &MessageView, token: &str, style: &Style) -> Message {
    let conversation = message.conversation_id.to_string();
    let link = deep_link(&style.link_base, message);
    let data = BTreeMap::from([
        ("conversation_id".to_string(), conversation.clone()),
        ("message_id".to_string(), message.message_id.to_string()),
        ("seq".to_string(), message.seq.to_string()),
        ("sender_id".to_string(), message.sender_id.clone()),
        ("link".to_string(), link.clone()),
    ]);
    let webpush = link.starts_with("https://").then(|| WebpushConfig {
        fcm_options: BTreeMap::from([("link".to_string(), link.clone())]),
    });
    Message {
        token: token.to_string(),
        notification: Notification {
            title: message.sender_id.clone(),
            body: body(message, style.body_max_chars),
        },
        data,
        android: AndroidConfig {
            collapse_key: conversation.clone(),
            priority: "high",
            notification: AndroidNotification {
                tag: conversation.clone(),
            },
        },
        apns: ApnsConfig {
            headers: BTreeMap::from([
                ("apns-collapse-id".to_string(), conversation.clone()),
                ("apns-priority".to_string(), "10".to_string()),
            ]),
            payload: serde_json::json!({"aps": {"thread-id": conversation}}),
        },
        webpush,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn message(kind: MessageKind, body: &str) -> MessageView {
        MessageView {
            conversation_id: Uuid::parse_str("0194f6a4-0000-7000-8000-000000000001").unwrap(),
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
        let push = build(
            &message(MessageKind::Text, "Still for sale?"),
            "tok",
            &style(),
        );
        let json = serde_json::to_value(SendRequest { message: &push }).unwrap();
        let conversation = "0194f6a4-0000-7000-8000-000000000001";
        assert_eq!(
            json,
            serde_json::json!({"message": {
                "token": "tok",
                "notification": {"title": "alice", "body": "Still for…"},
                "data": {
                    "conversation_id": conversation,
                    "message_id": "0194f6a4-0000-7000-8000-0000000000aa",
                    "seq": "42",
                    "sender_id": "alice",
                    "link": format!("/#/c/{conversation}"),
                },
                "android": {"collapse_key": conversation, "priority": "high",
                            "notification": {"tag": conversation}},
                "apns": {"headers": {"apns-collapse-id": conversation, "apns-priority": "10"},
                         "payload": {"aps": {"thread-id": conversation}}},
            }})
        );
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
        let push = build(&message(MessageKind::Text, "x"), "tok", &style);
        let link = "https://chat.example/#/c/0194f6a4-0000-7000-8000-000000000001";
        assert_eq!(push.data["link"], link);
        assert_eq!(push.webpush.unwrap().fcm_options["link"], link);
    }
}
