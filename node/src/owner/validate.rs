//! The rules a `send` must pass before it may join a batch. Pure: the owner
//! applies them with what it knows (participants, limits); nothing here
//! touches the store. Anything the store could refuse is refused here
//! first, so a bad message never reaches a batch it shares with others.

use turbochat_protocol::ids::{valid_client_msg_id, ConversationId};
use turbochat_protocol::MessageKind;

use crate::refusal::Refusal;

/// What the rules look at in a send.
#[derive(Debug, Clone, Copy)]
pub struct SendDraft<'a> {
    /// Whether the sender participates in the conversation.
    pub participant: bool,
    /// Posted by an operator (a system message), not by a client.
    pub trusted: bool,
    /// The sender's idempotency key.
    pub client_msg_id: &'a str,
    /// `text` or `media`.
    pub kind: MessageKind,
    /// Text or caption.
    pub body: &'a str,
    /// Attached media.
    pub media_key: Option<&'a str>,
}

/// Longest accepted `media_key`, in bytes (`{uuid}/{uuid}.{ext}` is ~80).
pub const MAX_MEDIA_KEY_LEN: usize = 128;

/// Checks one send for `conversation` against the rules; the first broken
/// rule is the answer.
pub fn check_send(
    conversation: ConversationId,
    send: SendDraft<'_>,
    max_body_chars: usize,
) -> Result<(), Refusal> {
    if !send.participant {
        return Err(Refusal::no_conversation());
    }
    if !valid_client_msg_id(send.client_msg_id) {
        return Err(Refusal::invalid(
            "client_msg_id must be 1 to 64 bytes without control characters",
        ));
    }
    match send.kind {
        MessageKind::Deleted => {
            return Err(Refusal::invalid(
                "kind deleted is a tombstone; unsend with DELETE /conversations/{id}/messages/{seq}",
            ));
        }
        MessageKind::System if !send.trusted => {
            return Err(Refusal::invalid("clients cannot send system messages"));
        }
        MessageKind::System if send.body.trim().is_empty() => {
            return Err(Refusal::invalid("a system message needs a body"));
        }
        MessageKind::Text if send.body.trim().is_empty() => {
            return Err(Refusal::invalid("a text message needs a body"));
        }
        MessageKind::Media if send.media_key.is_none() => {
            return Err(Refusal::invalid("a media message needs a media_key"));
        }
        _ => {}
    }
    if send.body.contains('\0') {
        return Err(Refusal::invalid("body must not contain NUL (U+0000)"));
    }
    if send.body.chars().count() > max_body_chars {
        return Err(Refusal::invalid(format!(
            "body is too long (at most {max_body_chars} characters)"
        )));
    }
    if let Some(key) = send.media_key {
        if !media_key_of(conversation, key) {
            return Err(Refusal::invalid(
                "media_key is not an upload of this conversation; upload it here first",
            ));
        }
    }
    Ok(())
}

/// Whether `key` has the shape of an upload to `conversation`:
/// `{conversation}/{uuid}.{ext}`, nothing that could name another path.
/// (Whether it was really uploaded is the store's to say.)
pub fn media_key_of(conversation: ConversationId, key: &str) -> bool {
    let Some(name) = key
        .strip_prefix(conversation.to_string().as_str())
        .and_then(|rest| rest.strip_prefix('/'))
    else {
        return false;
    };
    let Some((id, ext)) = name.split_once('.') else {
        return false;
    };
    key.len() <= MAX_MEDIA_KEY_LEN
        && uuid::Uuid::try_parse(id).is_ok_and(|u| u.hyphenated().to_string() == id)
        && !ext.is_empty()
        && ext.len() <= 8
        && ext.bytes().all(|b| b.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;
    use turbochat_protocol::ErrorCode;
    use uuid::Uuid;

    fn text(body: &str) -> SendDraft<'_> {
        SendDraft {
            participant: true,
            trusted: false,
            client_msg_id: "c-1",
            kind: MessageKind::Text,
            body,
            media_key: None,
        }
    }

    fn refused(conversation: ConversationId, send: SendDraft<'_>) -> Option<ErrorCode> {
        check_send(conversation, send, 10).err().map(|r| r.code)
    }

    #[test]
    fn a_plain_text_passes() {
        assert_eq!(refused(Uuid::nil(), text("hello")), None);
        assert_eq!(refused(Uuid::nil(), text("a\nb\tc")), None);
    }

    #[test]
    fn text_the_store_cannot_hold_is_refused_before_any_batch() {
        assert_eq!(
            refused(Uuid::nil(), text("a\0b")),
            Some(ErrorCode::InvalidArgument)
        );
    }

    #[test]
    fn a_non_participant_learns_nothing_about_the_conversation() {
        let mut send = text("hi");
        send.participant = false;
        assert_eq!(refused(Uuid::nil(), send), Some(ErrorCode::NotFound));
    }

    #[test]
    fn bodies_ids_and_kinds_are_checked() {
        assert_eq!(
            refused(Uuid::nil(), text("   ")),
            Some(ErrorCode::InvalidArgument)
        );
        assert_eq!(
            refused(Uuid::nil(), text("01234567890")),
            Some(ErrorCode::InvalidArgument),
            "11 characters over a limit of 10"
        );
        assert_eq!(
            refused(Uuid::nil(), text("éééééééééé")),
            None,
            "counted in characters"
        );
        let mut send = text("hi");
        send.client_msg_id = "a\0";
        assert_eq!(refused(Uuid::nil(), send), Some(ErrorCode::InvalidArgument));
        send = text("hi");
        send.kind = MessageKind::System;
        assert_eq!(refused(Uuid::nil(), send), Some(ErrorCode::InvalidArgument));
        send.trusted = true;
        assert_eq!(
            refused(Uuid::nil(), send),
            None,
            "an operator's system message"
        );
    }

    #[test]
    fn media_keys_name_an_upload_of_this_conversation_only() {
        let here = Uuid::now_v7();
        let there = Uuid::now_v7();
        let name = Uuid::now_v7();
        assert!(media_key_of(here, &format!("{here}/{name}.jpg")));
        assert!(!media_key_of(here, &format!("{there}/{name}.jpg")));
        assert!(!media_key_of(
            here,
            &format!("{here}/../{there}/{name}.jpg")
        ));
        assert!(!media_key_of(here, &format!("{here}/{name}")));
        assert!(!media_key_of(here, &format!("{here}/{name}.j/g")));
        assert!(!media_key_of(here, &format!("{here}/x.jpg")));
        assert!(!media_key_of(
            here,
            &format!("{here}/{}.jpg", name.simple())
        ));
        let mut media = text("");
        media.kind = MessageKind::Media;
        let key = format!("{there}/{name}.jpg");
        media.media_key = Some(&key);
        assert_eq!(refused(here, media), Some(ErrorCode::InvalidArgument));
    }
}
