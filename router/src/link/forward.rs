//! Forwarding sends through their lanes (see `lanes.rs`): the router
//! answers for every send it took, in order, whatever happens to the node
//! it went to.
//!
//! A lane is planned again whenever something it may wait on changes: a
//! new send, an answer, a redirect, a link that breaks or comes up, a ring
//! change. Lanes with sends waiting at the router are also swept every
//! [`SWEEP`]: they go out when they may, and are answered `unavailable`
//! after [`SEND_PATIENCE`] without an owner to take them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use turbochat_cluster::Ring;
use turbochat_protocol::frame::ServerFrame;
use turbochat_protocol::ids::ConversationId;
use turbochat_protocol::link::{self, router_frame};
use turbochat_protocol::ErrorCode;

use super::{Links, Path, MAX_REDIRECTS, REDIRECT_PAUSE};
use crate::lanes::{LaneError, Lanes, Redirected, Route};
use crate::sessions::Session;

/// How long a send may wait at the router for an owner to take it before
/// it is answered `unavailable`: failure detection (~2 s) plus the new
/// owner's link, with room to spare, and well inside a client's ack
/// timeout (the SDK's is 10 s).
pub const SEND_PATIENCE: Duration = Duration::from_secs(5);
/// Sends one session may have in flight over all its conversations.
pub const MAX_IN_FLIGHT: usize = 256;
/// How often lanes with sends waiting at the router are looked at.
const SWEEP: Duration = Duration::from_millis(50);

/// The cluster as this router sees it now.
struct Now<'a> {
    ring: Arc<Ring>,
    links: &'a Links,
}

impl Route for Now<'_> {
    fn owner(&self, conversation: &ConversationId) -> Option<String> {
        self.ring.owner_of(conversation).map(|n| n.id.clone())
    }

    fn path(&self, node: &str) -> Option<Path> {
        if !self.ring.nodes().iter().any(|n| n.id == node) {
            return None;
        }
        self.links.node(node)?.path()
    }
}

impl Links {
    fn now(&self) -> Now<'_> {
        Now {
            ring: self.inner.ring.current(),
            links: self,
        }
    }

    /// Takes a session's send into its lane and forwards what may go now.
    pub fn forward_send(
        &self,
        session: &Session,
        conversation: ConversationId,
        send: link::Send,
    ) -> Result<(), LaneError> {
        let mut lanes = session.lanes();
        lanes.push(conversation, send, Instant::now(), MAX_IN_FLIGHT)?;
        self.flush_locked(session.id, &mut lanes, conversation);
        Ok(())
    }

    /// Plans one lane again (an answer came, or its owner changed).
    pub(super) fn flush(&self, session: &Session, conversation: ConversationId) {
        let mut lanes = session.lanes();
        self.flush_locked(session.id, &mut lanes, conversation);
    }

    /// Sends what the lane's plan says, with the session's lanes locked so
    /// two flushes of one lane cannot pass each other on the way out.
    fn flush_locked(&self, session_id: u64, lanes: &mut Lanes, conversation: ConversationId) {
        let now = Instant::now();
        let view = self.now();
        let plan = lanes.plan(&conversation, &view, now);
        let mut waiting = plan.waiting;
        if let Some(link) = plan.node.as_deref().and_then(|node| self.node(node)) {
            for send in plan.sends {
                let client_msg_id = send.client_msg_id.clone();
                if link.send(router_frame::Frame::Send(send)).is_err() {
                    lanes.unsent(&conversation, &client_msg_id, now);
                    waiting = true;
                    break;
                }
            }
        }
        if waiting {
            self.inner.waiting.insert((session_id, conversation));
            // An owner whose link is down is asked to reconnect now.
            if let Some(owner) = view.owner(&conversation).and_then(|id| self.node(&id)) {
                if !owner.is_up() {
                    owner.wake.notify_one();
                }
            }
        } else {
            self.inner.waiting.remove(&(session_id, conversation));
        }
    }

    /// A node handed a send back: it goes out again through its lane.
    pub(super) fn redirect_send(
        &self,
        from: &str,
        session_id: u64,
        conversation: ConversationId,
        client_msg_id: &str,
    ) {
        let Some(session) = self.inner.sessions.get(session_id) else {
            return;
        };
        let mut lanes = session.lanes();
        let view = self.now();
        let outcome = lanes.redirected(
            &conversation,
            client_msg_id,
            from,
            &view,
            Instant::now(),
            REDIRECT_PAUSE,
            MAX_REDIRECTS,
        );
        drop(view);
        match outcome {
            Redirected::Requeued => self.flush_locked(session_id, &mut lanes, conversation),
            Redirected::GaveUp => {
                tracing::warn!(%conversation, session_id, "no owner accepted a redirected send");
                answer_unavailable(
                    &session,
                    conversation,
                    client_msg_id,
                    "conversation is moving between nodes; retry",
                );
            }
            Redirected::Unknown => {}
        }
    }

    /// Sends forwarded to `node` may never be answered (its link broke, or
    /// it left the ring): they wait again, and go out again in order to
    /// whichever node owns their conversation once its link is up.
    pub(super) fn node_lost(&self, node: &str) {
        let now = Instant::now();
        let mut rerouted = 0usize;
        for session in self.inner.sessions.all() {
            let mut lanes = session.lanes();
            if lanes.in_flight() == 0 {
                continue;
            }
            for conversation in lanes.node_lost(node, now) {
                rerouted += 1;
                self.flush_locked(session.id, &mut lanes, conversation);
            }
        }
        if rerouted > 0 {
            tracing::info!(
                node,
                lanes = rerouted,
                "sends in flight at a lost node go out again"
            );
            metrics::counter!("turbochat_router_lanes_rerouted_total").increment(rerouted as u64);
        }
    }

    /// Plans every lane with sends waiting at the router (a link came up,
    /// the ring changed).
    pub(super) fn flush_waiting(&self) {
        let waiting: Vec<(u64, ConversationId)> =
            self.inner.waiting.iter().map(|e| *e.key()).collect();
        for (session_id, conversation) in waiting {
            match self.inner.sessions.get(session_id) {
                Some(session) => self.flush(&session, conversation),
                None => {
                    self.inner.waiting.remove(&(session_id, conversation));
                }
            }
        }
    }

    /// Plans every lane with sends in flight (the ring changed: sends at
    /// nodes that left it go out again).
    pub(super) fn flush_in_flight(&self) {
        for session in self.inner.sessions.all() {
            let mut lanes = session.lanes();
            if lanes.in_flight() == 0 {
                continue;
            }
            for conversation in lanes.conversations() {
                self.flush_locked(session.id, &mut lanes, conversation);
            }
        }
    }

    /// Every [`SWEEP`]: answers sends that waited past [`SEND_PATIENCE`]
    /// and sends what may go out. Ends on shutdown.
    pub(super) async fn sweep_lanes(self) {
        let shutdown = self.inner.shutdown.clone();
        let mut tick = tokio::time::interval(SWEEP);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.cancelled() => return,
            }
            if self.inner.waiting.is_empty() {
                continue;
            }
            let now = Instant::now();
            let waiting: Vec<(u64, ConversationId)> =
                self.inner.waiting.iter().map(|e| *e.key()).collect();
            for (session_id, conversation) in waiting {
                let Some(session) = self.inner.sessions.get(session_id) else {
                    self.inner.waiting.remove(&(session_id, conversation));
                    continue;
                };
                let mut lanes = session.lanes();
                let expired = lanes.expire(now, SEND_PATIENCE);
                if !expired.is_empty() {
                    metrics::counter!("turbochat_sends_unavailable_total")
                        .increment(expired.len() as u64);
                    tracing::info!(
                        session_id,
                        sends = expired.len(),
                        "sends found no owner in time; answered unavailable"
                    );
                }
                for (conversation, client_msg_id) in &expired {
                    answer_unavailable(
                        &session,
                        *conversation,
                        client_msg_id,
                        "conversation owner unreachable; retry",
                    );
                }
                self.flush_locked(session_id, &mut lanes, conversation);
            }
        }
    }
}

fn answer_unavailable(
    session: &Session,
    conversation: ConversationId,
    client_msg_id: &str,
    message: &str,
) {
    metrics::counter!("turbochat_client_errors_total", "code" => ErrorCode::Unavailable.as_str())
        .increment(1);
    let error = ServerFrame::Error {
        code: ErrorCode::Unavailable,
        message: message.into(),
        client_msg_id: Some(client_msg_id.to_string()),
        conversation_id: Some(conversation),
        retry_after_ms: None,
    };
    session.push(error.to_json().into());
}
