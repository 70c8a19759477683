//! Typing indicators: announced to the other participants, throttled,
//! expiring by themselves.

use tokio::time::Instant;
use turbochat_protocol::frame::{ServerFrame, TypingState};
use turbochat_protocol::ids::UserId;

use super::state::{State, Typist};
use super::Owner;
use crate::fanout::RouterLink;
use crate::refusal::Refusal;

impl Owner<'_> {
    pub(super) fn typing(
        &mut self,
        state: &mut State,
        link: RouterLink,
        session_id: u64,
        user_id: UserId,
        active: bool,
    ) {
        if !state.participants.contains_key(&user_id) {
            link.refuse(session_id, self.id, &Refusal::no_conversation(), None);
            return;
        }
        let now = Instant::now();
        let config = self.owners.config();
        if !active {
            if state.typing.remove(&user_id).is_some() {
                self.announce_typing(state, &user_id, false);
            }
            return;
        }
        let expires = now + config.typing_expiry;
        match state.typing.get_mut(&user_id) {
            // Throttled: refresh the expiry without telling everyone again.
            Some(typist) if now.duration_since(typist.announced) < config.typing_throttle => {
                typist.expires = expires;
            }
            _ => {
                state.typing.insert(
                    user_id.clone(),
                    Typist {
                        expires,
                        announced: now,
                    },
                );
                self.announce_typing(state, &user_id, true);
            }
        }
    }

    pub(super) fn announce_typing(&self, state: &mut State, user_id: &str, active: bool) {
        let frame = ServerFrame::Typing {
            conversation_id: self.id,
            state: if active {
                TypingState::Start
            } else {
                TypingState::Stop
            },
            user_id: user_id.to_string(),
        };
        self.broadcast(state, &frame, Some(user_id));
    }
}
