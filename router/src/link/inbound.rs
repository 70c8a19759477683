//! What nodes send a router (over the link or the bus): deliveries to
//! sessions, redirects of frames a node does not own, and requests to
//! subscribe sessions again.

use turbochat_protocol::frame::ServerFrame;
use turbochat_protocol::ids::{ConversationId, Seq};
use turbochat_protocol::link::{node_frame, router_frame, Redirect, SessionClosed};
use turbochat_protocol::ErrorCode;

use super::{
    subscribe_frame, Links, NodeLink, MAX_REDIRECTS, MAX_SUBSCRIBE_REDIRECTS, REDIRECT_PAUSE,
};
use crate::sessions::Followup;

impl Links {
    /// Handles a frame from a node, whether it came over the node's link
    /// (`from`) or over the fallback bus (`None`).
    pub fn on_node_frame(&self, from: Option<&NodeLink>, frame: Option<node_frame::Frame>) {
        match frame {
            Some(node_frame::Frame::Deliver(deliver)) => {
                for (conversation, followup) in self.inner.sessions.deliver(deliver) {
                    match followup {
                        Followup::Resubscribe {
                            session_id,
                            user_id,
                            since,
                        } => {
                            tracing::debug!(session_id, %conversation, since, "gap seen; re-subscribing");
                            self.resubscribe_one(session_id, &user_id, conversation, since);
                        }
                        Followup::Gone { session_id } => {
                            let node = from
                                .map(|l| l.node.id.clone())
                                .or_else(|| self.owner(&conversation).map(|l| l.node.id.clone()));
                            if let Some(link) = node.and_then(|id| self.node(&id)) {
                                let _ =
                                    link.send(router_frame::Frame::SessionClosed(SessionClosed {
                                        session_id,
                                        user_id: String::new(),
                                        conversation_id: Some(conversation.to_string()),
                                    }));
                            }
                        }
                        Followup::Answered { session_id } => {
                            if let Some(session) = self.inner.sessions.get(session_id) {
                                self.flush(&session, conversation);
                            }
                        }
                        Followup::None => {}
                    }
                }
            }
            Some(node_frame::Frame::Redirect(redirect)) => self.redirect(from, redirect),
            Some(node_frame::Frame::Resubscribe(resubscribe)) => {
                let Ok(conversation) = resubscribe.conversation_id.parse::<ConversationId>() else {
                    return;
                };
                metrics::counter!("turbochat_router_resubscribes_total")
                    .increment(resubscribe.session_ids.len() as u64);
                for session_id in resubscribe.session_ids {
                    let Some(session) = self.inner.sessions.get(session_id) else {
                        continue;
                    };
                    let Some(cursor) = session.cursor(&conversation) else {
                        continue;
                    };
                    // From the last seq forwarded: the owner replays the rest.
                    let since = cursor.last_seq.unwrap_or(0);
                    self.resubscribe_one(session_id, &session.user_id, conversation, since);
                }
            }
            None => {}
        }
    }

    /// Re-subscribes at the node the session's cursor names now (which may
    /// differ from the link the gap was seen on, during a hand-over).
    fn resubscribe_one(
        &self,
        session_id: u64,
        user_id: &str,
        conversation: ConversationId,
        since: Seq,
    ) {
        let Some(session) = self.inner.sessions.get(session_id) else {
            return;
        };
        let Some(cursor) = session.cursor(&conversation) else {
            return;
        };
        if let Some(node) = self.node(&cursor.node) {
            if let Some(frame) =
                subscribe_frame(session_id, user_id, conversation, Some(since)).frame
            {
                let _ = node.send(frame);
            }
        }
    }

    /// A node refused a frame for a conversation it does not own. A send
    /// goes back into its lane (see `lanes.rs`). Other frames go to
    /// the owner our ring names — at once if that is another node; after a
    /// pause if it is the same node (the node's ring is behind or ahead of
    /// ours and will converge). A frame redirected too often is answered
    /// `unavailable`.
    fn redirect(&self, from: Option<&NodeLink>, redirect: Redirect) {
        metrics::counter!("turbochat_router_redirects_total").increment(1);
        let Ok(conversation) = redirect.conversation_id.parse::<ConversationId>() else {
            return;
        };
        let Some(mut frame) = redirect.frame else {
            return;
        };
        let from = from.map(|l| l.node.id.clone()).unwrap_or_default();
        let session_id = redirect.session_id;
        if let Some(router_frame::Frame::Send(send)) = &frame.frame {
            // Sends keep their lane's order: the lane sends it again.
            self.redirect_send(&from, session_id, conversation, &send.client_msg_id);
            return;
        }
        let links = self.clone();
        // A subscription is state the router keeps: it keeps trying (for
        // up to a minute) while views converge. Other frames give up sooner
        // and the client retries.
        let limit = match &frame.frame {
            Some(router_frame::Frame::Subscribe(_)) => MAX_SUBSCRIBE_REDIRECTS,
            _ => MAX_REDIRECTS,
        };
        let tasks = self.inner.tasks.clone();
        tasks.spawn(async move {
            frame.redirects += 1;
            if frame.redirects <= limit {
                let same = links
                    .owner(&conversation)
                    .is_none_or(|owner| owner.node.id == from);
                if same {
                    tokio::time::sleep(REDIRECT_PAUSE).await;
                }
                if let Some(owner) = links.owner(&conversation) {
                    if let Some(router_frame::Frame::Subscribe(_)) = &frame.frame {
                        if let Some(session) = links.inner.sessions.get(session_id) {
                            session.move_cursor(&conversation, &owner.node.id);
                        }
                    }
                    if owner.send_frame(frame.clone()).is_ok() {
                        return;
                    }
                }
            }
            tracing::warn!(%conversation, session_id, "no owner accepted a redirected frame");
            if let Some(session) = links.inner.sessions.get(session_id) {
                let error = ServerFrame::Error {
                    code: ErrorCode::Unavailable,
                    message: "conversation is moving between nodes; retry".into(),
                    client_msg_id: None,
                    conversation_id: Some(conversation),
                    retry_after_ms: None,
                };
                session.push(error.to_json().into());
            }
        });
    }
}
