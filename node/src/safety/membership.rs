//! Membership of groups and hiding a conversation from one's list, at the
//! conversation's owner node:
//!
//! - a participant **leaves** a group: removed from it, they get nothing
//!   more from it (the owner drops their subscriptions and answers each
//!   with `not_found`; no push, no replay, no history: the conversation is
//!   no longer theirs). A creator who leaves hands the role to the member
//!   who joined first;
//! - the group's creator (role `owner`) **adds** a member (who sees the
//!   whole history, with everything before counted as read, and is sent a
//!   `conversation` frame) and **removes** one (as if they had left);
//! - a participant **archives** a conversation: it leaves their
//!   `GET /conversations` until a message newer than the newest one then
//!   arrives (or they unarchive it). Private: nobody else is told;
//! - a participant **mutes** a conversation: no pushes from it (live
//!   frames still arrive), until they unmute it. Private too.
//!
//! Every change of membership is then a system message in the
//! conversation, through its owner like any send, so it reaches every
//! member's sessions (and pushes) in seq order.

use bytes::Bytes;
use serde_json::{json, Value};
use turbochat_protocol::http::ConversationKind;
use turbochat_protocol::ids::{valid_user_id, ConversationId, UserId, MAX_GROUP_PARTICIPANTS};
use turbochat_protocol::safety::{membership_request, MembershipRequest};
use turbochat_protocol::{ErrorCode, ServerFrame};

use super::service::now_ms;
use super::Safety;
use crate::owner::Command;
use crate::refusal::Refusal;

/// One change a participant asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MembershipChange {
    /// The caller leaves a group.
    Leave,
    /// The creator adds this user to a group.
    Add(UserId),
    /// The creator removes this member from a group.
    Remove(UserId),
    /// The caller hides the conversation from their list (true) or shows
    /// it again (false).
    Archive(bool),
    /// The caller stops (true) or starts again (false) getting its pushes.
    Mute(bool),
}

impl MembershipChange {
    /// The change a `Membership` call carries.
    pub fn from_request(req: &MembershipRequest) -> Result<Self, Refusal> {
        use membership_request::Action;
        match Action::try_from(req.action) {
            Ok(Action::Leave) => Ok(MembershipChange::Leave),
            Ok(Action::Add) => Ok(MembershipChange::Add(req.target_id.clone())),
            Ok(Action::Remove) => Ok(MembershipChange::Remove(req.target_id.clone())),
            Ok(Action::Archive) => Ok(MembershipChange::Archive(true)),
            Ok(Action::Unarchive) => Ok(MembershipChange::Archive(false)),
            Ok(Action::Mute) => Ok(MembershipChange::Mute(true)),
            Ok(Action::Unmute) => Ok(MembershipChange::Mute(false)),
            _ => Err(Refusal::invalid("unknown membership action")),
        }
    }
}

impl Safety {
    /// Applies `change` asked by `actor` to `conversation`, owned here.
    /// Answers what the HTTP call returns.
    pub(crate) async fn change_membership(
        &self,
        conversation: ConversationId,
        actor: &str,
        change: MembershipChange,
    ) -> Result<Value, Refusal> {
        if self.is_banned(actor) {
            return Err(super::banned());
        }
        let state = self
            .store()
            .load_conversation(conversation)
            .await?
            .ok_or_else(Refusal::no_conversation)?;
        let me = state
            .participants
            .iter()
            .find(|p| p.user_id == actor)
            .ok_or_else(Refusal::no_conversation)?;
        let is_creator = me.role == "owner";
        if let MembershipChange::Archive(archived) = change {
            self.store()
                .set_archived(conversation, actor, archived)
                .await?;
            return Ok(json!({"conversation_id": conversation, "archived": archived}));
        }
        if let MembershipChange::Mute(muted) = change {
            self.store().set_muted(conversation, actor, muted).await?;
            // The owner decides at each commit who gets a push job: it
            // re-reads the participants (their `muted` among them). Pushes
            // already queued check the flag again when they are sent.
            self.tell_owner(conversation, Command::Refresh);
            metrics::counter!("turbochat_mutes_total", "muted" => if muted { "true" } else { "false" })
                .increment(1);
            return Ok(json!({"conversation_id": conversation, "muted": muted}));
        }
        if state.kind != ConversationKind::Group {
            return Err(Refusal::invalid(
                "a direct conversation has no members to change; archive it instead",
            ));
        }
        let (changed, body, answer) = match &change {
            MembershipChange::Leave => {
                let left = self.store().remove_member(conversation, actor).await?;
                (
                    left,
                    format!("{actor} left"),
                    json!({"conversation_id": conversation, "left": true}),
                )
            }
            MembershipChange::Add(user) => {
                if !is_creator {
                    return Err(not_creator());
                }
                if !valid_user_id(user) {
                    return Err(Refusal::invalid("user_id is not a valid user id"));
                }
                if state.participants.iter().any(|p| p.user_id == *user) {
                    return Ok(
                        json!({"conversation_id": conversation, "user_id": user, "added": false}),
                    );
                }
                if state.participants.len() >= MAX_GROUP_PARTICIPANTS {
                    return Err(Refusal::invalid(format!(
                        "a group has at most {MAX_GROUP_PARTICIPANTS} participants"
                    )));
                }
                let added = self
                    .store()
                    .add_member(conversation, user, now_ms())
                    .await?;
                (
                    added,
                    format!("{actor} added {user}"),
                    json!({"conversation_id": conversation, "user_id": user, "added": added}),
                )
            }
            MembershipChange::Remove(user) => {
                if !is_creator {
                    return Err(not_creator());
                }
                if user == actor {
                    return Err(Refusal::invalid("to leave a group, leave it"));
                }
                let removed = self.store().remove_member(conversation, user).await?;
                (
                    removed,
                    format!("{actor} removed {user}"),
                    json!({"conversation_id": conversation, "user_id": user, "removed": removed}),
                )
            }
            MembershipChange::Archive(_) | MembershipChange::Mute(_) => {
                unreachable!("answered above")
            }
        };
        if !changed {
            return Ok(answer);
        }
        tracing::info!(conversation_id = %conversation, %actor, ?change, "membership changed");
        metrics::counter!("turbochat_membership_changes_total").increment(1);
        // The owner re-reads the participants (dropping the sessions of
        // whoever is gone) before it numbers the system message: the
        // mailbox is in order.
        self.tell_owner(conversation, Command::Refresh);
        if let MembershipChange::Add(user) = &change {
            self.welcome_member(conversation, user).await;
        }
        let client_msg_id = format!("membership-{}", uuid::Uuid::now_v7());
        let ack = self.post_system(conversation, client_msg_id, body).await?;
        let mut answer = answer;
        answer["system_seq"] = ack["seq"].clone();
        Ok(answer)
    }

    /// Tells the sessions of a new member that the conversation is theirs
    /// (a `conversation` frame, as for a new conversation).
    async fn welcome_member(&self, conversation: ConversationId, user: &str) {
        let Some(events) = self.inner.events.get() else {
            return;
        };
        let state = match self.store().load_conversation(conversation).await {
            Ok(Some(state)) => state,
            Ok(None) => return,
            Err(err) => {
                tracing::warn!(%err, "cannot tell a new member of the conversation");
                return;
            }
        };
        let profiles = crate::link::members_of(self.store(), &state).await;
        if let Some(view) = crate::link::view_for(&state, user, &profiles) {
            let frame = ServerFrame::Conversation { conversation: view };
            events.publish(vec![(user.to_string(), Bytes::from(frame.to_json()))]);
        }
    }
}

fn not_creator() -> Refusal {
    Refusal::new(
        ErrorCode::Forbidden,
        "only the group's creator adds and removes members",
    )
}
