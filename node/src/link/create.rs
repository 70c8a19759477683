//! `CreateConversation`: the request checked, and the row to store built. The
//! router derives direct ids; the node derives them again, so a bad router
//! cannot split a pair's conversation in two.

use std::collections::HashSet;

use turbochat_protocol::http::{ConversationKind, ConversationView, MemberView};
use turbochat_protocol::ids::{
    direct_conversation_id, valid_user_id, UserId, MAX_GROUP_PARTICIPANTS, MAX_LISTING_ID_LEN,
    MAX_TITLE_CHARS,
};
use turbochat_protocol::link::CreateConversationRequest;
use turbochat_store::{ConversationState, NewConversation, Store};

use super::parse_conversation;
use crate::refusal::Refusal;

/// Checks a create request and builds the row to store. The router derives
/// direct ids; the node re-derives them so a bad router cannot split a pair's
/// conversation in two.
pub(super) fn validate_create(req: CreateConversationRequest) -> Result<NewConversation, Refusal> {
    let id = parse_conversation(&req.conversation_id)?;
    let creator = req.user_id;
    if !valid_user_id(&creator) {
        return Err(Refusal::invalid("invalid user id"));
    }
    if let Some(listing) = &req.listing_id {
        if listing.is_empty() || listing.len() > MAX_LISTING_ID_LEN || has_control(listing) {
            return Err(Refusal::invalid(format!(
                "listing_id must be 1 to {MAX_LISTING_ID_LEN} bytes without control characters"
            )));
        }
    }
    if let Some(title) = &req.title {
        if title.chars().count() > MAX_TITLE_CHARS || has_control(title) {
            return Err(Refusal::invalid(format!(
                "title must be at most {MAX_TITLE_CHARS} characters without control characters"
            )));
        }
    }
    let mut participants = vec![creator.clone()];
    let mut seen: HashSet<String> = HashSet::from([creator.clone()]);
    for user in req.participants {
        if !valid_user_id(&user) {
            return Err(Refusal::invalid(format!("invalid participant {user:?}")));
        }
        if seen.insert(user.clone()) {
            participants.push(user);
        }
    }
    let kind = ConversationKind::parse(&req.kind)
        .ok_or_else(|| Refusal::invalid("kind must be direct or group"))?;
    match kind {
        ConversationKind::Direct => {
            if participants.len() != 2 {
                return Err(Refusal::invalid(
                    "a direct conversation is between you and one other user",
                ));
            }
            let expected = direct_conversation_id(
                &participants[0],
                &participants[1],
                req.listing_id.as_deref(),
            );
            if expected != id {
                return Err(Refusal::invalid(
                    "conversation_id does not match its participants",
                ));
            }
        }
        ConversationKind::Group => {
            if participants.len() < 2 || participants.len() > MAX_GROUP_PARTICIPANTS {
                return Err(Refusal::invalid(format!(
                    "a group has 2 to {MAX_GROUP_PARTICIPANTS} participants"
                )));
            }
        }
    }
    Ok(NewConversation {
        conversation_id: id,
        kind,
        listing_id: req.listing_id,
        title: req.title,
        participants,
        created_at: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0),
    })
}

/// Control characters (NUL among them, which PostgreSQL cannot store in
/// text) have no place in one-line names.
pub(super) fn has_control(text: &str) -> bool {
    text.chars().any(char::is_control)
}

/// The conversation as `user` sees it right after creation (or after
/// being added to it). `profiles` are the participants' (see
/// [`members_of`]).
pub(crate) fn view_for(
    state: &ConversationState,
    user: &str,
    profiles: &[MemberView],
) -> Option<ConversationView> {
    let me = state.participants.iter().find(|p| p.user_id == user)?;
    let members = state
        .participants
        .iter()
        .map(|p| {
            profiles
                .iter()
                .find(|m| m.user_id == p.user_id)
                .cloned()
                .unwrap_or_else(|| MemberView::bare(p.user_id.clone()))
        })
        .collect();
    Some(ConversationView {
        conversation_id: state.conversation_id,
        kind: state.kind,
        listing_id: state.listing_id.clone(),
        title: state.title.clone(),
        participants: state
            .participants
            .iter()
            .map(|p| p.user_id.clone())
            .collect(),
        created_at: state.created_at,
        last_seq: state.last_seq,
        last_read_seq: me.last_read_seq,
        unread_count: 0,
        last_message: None,
        listing: state.listing.clone().map(Box::new),
        members,
        muted: me.muted,
    })
}

/// The profiles of a conversation's participants; bare ones if the store
/// cannot tell (a name is a courtesy: it never fails a call).
pub(crate) async fn members_of(store: &dyn Store, state: &ConversationState) -> Vec<MemberView> {
    let users: Vec<UserId> = state
        .participants
        .iter()
        .map(|p| p.user_id.clone())
        .collect();
    match store.profiles(&users).await {
        Ok(profiles) => profiles,
        Err(err) => {
            tracing::warn!(%err, "cannot read profiles; members shown by id");
            users.into_iter().map(MemberView::bare).collect()
        }
    }
}
