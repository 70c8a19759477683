//! Identifiers and the rules that make them.

use uuid::Uuid;

/// A conversation id: a UUID. Direct conversations get a deterministic id
/// ([`direct_conversation_id`]) so "chat with the seller about this listing"
/// always lands in the same conversation, on the same owner node.
pub type ConversationId = Uuid;

/// A user is the JWT `sub` of the car app; turbochat stores no user records.
pub type UserId = String;

/// Per-conversation message sequence number: 1, 2, 3, ... without gaps.
pub type Seq = u64;

/// Longest accepted user id (JWT `sub`), in bytes.
pub const MAX_USER_ID_LEN: usize = 128;
/// Longest accepted `client_msg_id`, in bytes.
pub const MAX_CLIENT_MSG_ID_LEN: usize = 64;
/// Longest accepted listing id, in bytes.
pub const MAX_LISTING_ID_LEN: usize = 128;
/// Longest accepted conversation title, in characters.
pub const MAX_TITLE_CHARS: usize = 200;
/// Most participants in one group conversation.
pub const MAX_GROUP_PARTICIPANTS: usize = 256;

const DIRECT_NAMESPACE: Uuid = Uuid::from_u128(0x6d1f_1c1e_2b8a_4f0e_9a51_7c3e_0d2b_a9e4);

/// The id of the direct conversation between two users, optionally about one
/// listing. Symmetric in the two users and stable across processes.
pub fn direct_conversation_id(a: &str, b: &str, listing_id: Option<&str>) -> ConversationId {
    let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
    // Lengths prefix each part so ("ab","c") and ("a","bc") never collide.
    let mut name = Vec::with_capacity(lo.len() + hi.len() + 32);
    for part in [lo, hi, listing_id.unwrap_or("")] {
        name.extend_from_slice(&(part.len() as u32).to_be_bytes());
        name.extend_from_slice(part.as_bytes());
    }
    Uuid::new_v5(&DIRECT_NAMESPACE, &name)
}

/// Checks a user id (JWT `sub`): non-empty, at most [`MAX_USER_ID_LEN`]
/// bytes, no control characters.
pub fn valid_user_id(user: &str) -> bool {
    !user.is_empty() && user.len() <= MAX_USER_ID_LEN && !user.chars().any(char::is_control)
}

/// Checks a `client_msg_id`: non-empty, at most [`MAX_CLIENT_MSG_ID_LEN`]
/// bytes, no control characters.
pub fn valid_client_msg_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_CLIENT_MSG_ID_LEN && !id.chars().any(char::is_control)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direct_id_is_symmetric_and_listing_specific() {
        let ab = direct_conversation_id("alice", "bob", Some("car-1"));
        assert_eq!(ab, direct_conversation_id("bob", "alice", Some("car-1")));
        assert_ne!(ab, direct_conversation_id("alice", "bob", Some("car-2")));
        assert_ne!(ab, direct_conversation_id("alice", "bob", None));
        assert_ne!(
            direct_conversation_id("ab", "c", None),
            direct_conversation_id("a", "bc", None)
        );
    }

    #[test]
    fn ids_are_checked() {
        assert!(valid_user_id("alice"));
        assert!(!valid_user_id(""));
        assert!(!valid_user_id(&"x".repeat(129)));
        assert!(!valid_client_msg_id("a\nb"));
        assert!(valid_client_msg_id("01J0000000000000000000000"));
    }
}
