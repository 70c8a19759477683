//! One router's `Attach` stream, read: each frame becomes an owner command
//! (or a redirect when this node does not own the conversation), and the
//! reader remembers which sessions subscribed to what, so that when the
//! stream ends every subscription it made is dropped at the owners — after
//! a grace, in case the router comes back.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use tokio_util::sync::CancellationToken;
use turbochat_protocol::ids::ConversationId;
use turbochat_protocol::link::{node_frame, router_frame, NodeFrame, Redirect, RouterFrame};
use turbochat_protocol::MessageKind;
use uuid::Uuid;

use crate::fanout::{RouterLink, Routers};
use crate::owner::{Command, DispatchError, Owners, SendCommand};
use crate::ownership::Ownership;
use crate::refusal::Refusal;
use crate::user_events::UserEvents;

/// The session and conversation of a frame that only the owner may take.
fn routed_target(frame: &RouterFrame) -> Option<(u64, ConversationId)> {
    let (session_id, conversation) = match frame.frame.as_ref()? {
        router_frame::Frame::Subscribe(f) => (f.session_id, &f.conversation_id),
        router_frame::Frame::Send(f) => (f.session_id, &f.conversation_id),
        router_frame::Frame::Read(f) => (f.session_id, &f.conversation_id),
        router_frame::Frame::Typing(f) => (f.session_id, &f.conversation_id),
        _ => return None,
    };
    Some((session_id, Uuid::parse_str(conversation).ok()?))
}

/// The session, conversation and user of a frame a banned user may not
/// send (a `send` is refused by the owner, which answers its id).
fn banned_target(frame: &router_frame::Frame) -> Option<(u64, ConversationId, &str)> {
    let (session_id, conversation, user) = match frame {
        router_frame::Frame::Subscribe(f) => (f.session_id, &f.conversation_id, &f.user_id),
        router_frame::Frame::Read(f) => (f.session_id, &f.conversation_id, &f.user_id),
        router_frame::Frame::Typing(f) => (f.session_id, &f.conversation_id, &f.user_id),
        _ => return None,
    };
    Some((session_id, Uuid::parse_str(conversation).ok()?, user))
}

/// Reads one router's frames and turns them into owner commands.
pub(super) struct AttachReader {
    pub(super) events: UserEvents,
    /// Sessions of this router registered here as their user's home.
    pub(super) home_sessions: HashMap<u64, String>,
    pub(super) link: RouterLink,
    pub(super) number: u64,
    pub(super) routers: Routers,
    pub(super) grace: Duration,
    pub(super) owners: Owners,
    pub(super) ownership: Ownership,
    /// Which conversations each session of this router subscribed to here.
    pub(super) sessions: HashMap<u64, HashSet<ConversationId>>,
}

impl AttachReader {
    pub(super) async fn run(
        mut self,
        mut inbound: impl Stream<Item = Result<RouterFrame, tonic::Status>> + Unpin,
        cut: CancellationToken,
        shutdown: CancellationToken,
    ) {
        let span =
            tracing::info_span!("attach", router = %self.link.router_id(), link = self.link.id());
        let _enter = span.enter();
        drop(_enter);
        loop {
            tokio::select! {
                frame = inbound.next() => match frame {
                    Some(Ok(frame)) => self.handle(frame),
                    None => break,
                    Some(Err(status)) => {
                        tracing::info!(router = %self.link.router_id(), %status, "router stream failed");
                        break;
                    }
                },
                _ = cut.cancelled() => break,
            }
        }
        cut.cancel();
        self.routers.detach(&self.link, self.number);
        // Frames in flight on the dead stream are lost from that path: the
        // router subscribes its sessions again from their cursors (over the
        // bus at once, if there is one; else when it reconnects), and the
        // owners replay exactly what they missed.
        let detached_at = std::time::Instant::now();
        metrics::gauge!("turbochat_link_routers").decrement(1.0);
        tracing::info!(router = %self.link.router_id(), link = self.link.id(), "router detached");
        // Keep the router's subscriptions for a grace period: owners keep
        // fanning out (over the bus, if any), and a router that comes back
        // re-subscribes from its cursors. One that stays away is purged.
        tokio::select! {
            _ = tokio::time::sleep(self.grace) => {}
            // Stopping: nothing left to purge for.
            _ = shutdown.cancelled() => return,
        }
        if self.link.is_connected() || self.routers.heard_on_bus_since(&self.link, detached_at) {
            // Back, or still with us over the bus: its subscriptions stand.
            return;
        }
        for (session_id, user) in self.home_sessions.drain() {
            self.events
                .session_closed(&user, self.link.id(), session_id);
        }
        let mut purged = 0usize;
        for (session_id, conversations) in self.sessions.drain() {
            for conversation in conversations {
                purged += 1;
                let _ = self.owners.dispatch(
                    conversation,
                    Command::Unsubscribe {
                        link_id: self.link.id(),
                        session_id,
                    },
                );
            }
        }
        tracing::info!(router = %self.link.router_id(), purged, "router stayed away; subscriptions purged");
    }

    pub(super) fn handle(&mut self, frame: RouterFrame) {
        if let Some((session_id, conversation)) = routed_target(&frame) {
            if !self.ownership.owns(&conversation) {
                metrics::counter!("turbochat_node_redirects_total").increment(1);
                self.link.push(NodeFrame {
                    frame: Some(node_frame::Frame::Redirect(Redirect {
                        session_id,
                        conversation_id: conversation.to_string(),
                        frame: Some(frame),
                    })),
                });
                return;
            }
        }
        let Some(frame) = frame.frame else { return };
        if let Some((session_id, conversation, user)) = banned_target(&frame) {
            if self.owners.safety().is_banned(user) {
                // The router closes the session (it polls the ban list);
                // until then nothing it asks is done.
                self.link
                    .refuse(session_id, conversation, &crate::safety::banned(), None);
                return;
            }
        }
        match frame {
            router_frame::Frame::Hello(_) => {}
            router_frame::Frame::SessionOpened(opened) => {
                self.events
                    .session_opened(&opened.user_id, &self.link, opened.session_id);
                self.events
                    .profile_seen(&opened.user_id, &opened.name, &opened.avatar_url);
                self.home_sessions.insert(opened.session_id, opened.user_id);
            }
            router_frame::Frame::Subscribe(sub) => {
                let Some(id) = self.conversation(&sub.conversation_id, sub.session_id) else {
                    return;
                };
                self.sessions.entry(sub.session_id).or_default().insert(id);
                // Typing will follow: know by then whether it may be shown.
                // An owner that is not running yet starts with a load that
                // fills the same caches (Safety::learn): no second read.
                if self.owners.is_running(id) {
                    self.owners.safety().prefetch(id);
                }
                self.dispatch(
                    id,
                    sub.session_id,
                    None,
                    Command::Subscribe {
                        link: self.link.clone(),
                        session_id: sub.session_id,
                        user_id: sub.user_id,
                        since: sub.since,
                    },
                );
            }
            router_frame::Frame::Unsubscribe(unsub) => {
                let Some(id) = self.conversation(&unsub.conversation_id, unsub.session_id) else {
                    return;
                };
                if let Some(set) = self.sessions.get_mut(&unsub.session_id) {
                    set.remove(&id);
                }
                self.dispatch(
                    id,
                    unsub.session_id,
                    None,
                    Command::Unsubscribe {
                        link_id: self.link.id(),
                        session_id: unsub.session_id,
                    },
                );
            }
            router_frame::Frame::Send(send) => {
                let Some(id) = self.conversation(&send.conversation_id, send.session_id) else {
                    return;
                };
                let Some(kind) = MessageKind::parse(&send.kind) else {
                    self.link.refuse(
                        send.session_id,
                        id,
                        &Refusal::invalid("kind must be text or media"),
                        Some(send.client_msg_id),
                    );
                    return;
                };
                let client_msg_id = send.client_msg_id.clone();
                let span = if turbochat_service::telemetry::traces_on() {
                    let span = tracing::info_span!("send", conversation_id = %id,
                        client_msg_id = %send.client_msg_id, router = %self.link.router_id());
                    turbochat_service::telemetry::extract(&span, &send.traceparent);
                    span
                } else {
                    tracing::Span::none()
                };
                self.dispatch(
                    id,
                    send.session_id,
                    Some(client_msg_id),
                    Command::Send(SendCommand {
                        link: self.link.clone(),
                        session_id: send.session_id,
                        user_id: send.user_id,
                        client_msg_id: send.client_msg_id,
                        kind,
                        body: send.body,
                        media_key: send.media_key,
                        received_at: Instant::now(),
                        traceparent: send.traceparent,
                        span,
                        trusted: false,
                    }),
                );
            }
            router_frame::Frame::SessionClosed(closed) => {
                if let Some(one) = closed.conversation_id.as_deref() {
                    // The router no longer has this session (it closed while
                    // the link was down): drop just this subscription.
                    if let Some(id) = self.conversation(one, closed.session_id) {
                        if let Some(set) = self.sessions.get_mut(&closed.session_id) {
                            set.remove(&id);
                        }
                        let _ = self.owners.dispatch(
                            id,
                            Command::Unsubscribe {
                                link_id: self.link.id(),
                                session_id: closed.session_id,
                            },
                        );
                    }
                    return;
                }
                if let Some(user) = self.home_sessions.remove(&closed.session_id) {
                    self.events
                        .session_closed(&user, self.link.id(), closed.session_id);
                }
                for id in self.sessions.remove(&closed.session_id).unwrap_or_default() {
                    let _ = self.owners.dispatch(
                        id,
                        Command::Unsubscribe {
                            link_id: self.link.id(),
                            session_id: closed.session_id,
                        },
                    );
                }
            }
            router_frame::Frame::Read(read) => {
                let Some(id) = self.conversation(&read.conversation_id, read.session_id) else {
                    return;
                };
                self.dispatch(
                    id,
                    read.session_id,
                    None,
                    Command::Read {
                        link: self.link.clone(),
                        session_id: read.session_id,
                        user_id: read.user_id,
                        seq: read.seq,
                    },
                );
            }
            router_frame::Frame::Typing(typing) => {
                let Some(id) = self.conversation(&typing.conversation_id, typing.session_id) else {
                    return;
                };
                if typing.active && !self.owners.safety().typing_allowed(id, &typing.user_id) {
                    // Between blocked users, or not known yet (then fetched).
                    metrics::counter!("turbochat_typing_suppressed_total").increment(1);
                    return;
                }
                self.dispatch(
                    id,
                    typing.session_id,
                    None,
                    Command::Typing {
                        link: self.link.clone(),
                        session_id: typing.session_id,
                        user_id: typing.user_id,
                        active: typing.active,
                    },
                );
            }
        }
    }

    fn conversation(&self, id: &str, session_id: u64) -> Option<ConversationId> {
        match Uuid::parse_str(id) {
            Ok(id) => Some(id),
            Err(_) => {
                tracing::warn!(session_id, "router sent a frame with a bad conversation id");
                None
            }
        }
    }

    fn dispatch(
        &self,
        id: ConversationId,
        session_id: u64,
        client_msg_id: Option<String>,
        command: Command,
    ) {
        if let Err(err) = self.owners.dispatch(id, command) {
            let message = match err {
                DispatchError::Overloaded => "conversation is overloaded; retry",
                DispatchError::ShuttingDown => "node is shutting down; retry",
            };
            self.link.refuse(
                session_id,
                id,
                &Refusal::unavailable(message),
                client_msg_id,
            );
        }
    }
}
