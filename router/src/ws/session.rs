//! One WebSocket session: a read task (this function) and a write task,
//! with a bounded queue between the write task and everything that produces
//! frames for the client (this session, and the node links).
//!
//! Frame → command: each client frame is checked (size by the socket, shape
//! by serde, rate by limiters) and forwarded to the conversation's owner
//! node. Errors go back as `error` frames and the connection stays, except
//! an oversized frame (close 1009), an expired token (close 1008), a slow
//! consumer (close 1008), and shutdown (close 1001).

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures::{SinkExt, StreamExt};
use governor::{Quota, RateLimiter};
use tokio::sync::mpsc;
use tracing::Instrument;
use turbochat_protocol::frame::{ClientFrame, Cursor as WireCursor, ServerFrame};
use turbochat_protocol::ids::{valid_client_msg_id, ConversationId, Seq};
use turbochat_protocol::link::{self, router_frame};
use turbochat_protocol::{ErrorCode, TypingState};

use crate::auth::{now_secs, Claims};
use crate::sessions::{Cursor, Outgoing, Session};
use crate::App;

/// Close codes (RFC 6455).
const CLOSE_GOING_AWAY: u16 = 1001;
const CLOSE_POLICY: u16 = 1008;
const CLOSE_TOO_BIG: u16 = 1009;

/// Runs a session until the client leaves, misbehaves, or the router stops.
pub async fn run(app: App, claims: Claims, socket: WebSocket) {
    let (out_tx, out_rx) = mpsc::channel(app.inner.limits.session_queue);
    let session = app.inner.sessions.open(claims.sub.clone(), out_tx);
    let span = tracing::info_span!("session", session_id = session.id, user_id = %claims.sub);
    async move {
        tracing::debug!("session opened");
        let (sink, stream) = socket.split();
        let writer = tokio::spawn(write_task(sink, out_rx));
        let mut reader = Reader::new(app.clone(), session.clone(), claims);
        reader.welcome();
        app.inner.links.register_home(&session);
        reader.run(stream).await;

        app.inner.sessions.close(session.id);
        reader.release_subscriptions();
        // Let the writer flush a close frame, but never hang on a dead client.
        drop(reader);
        drop(session);
        if tokio::time::timeout(Duration::from_secs(2), writer)
            .await
            .is_err()
        {
            tracing::debug!("writer did not finish; dropping the socket");
        }
        tracing::debug!("session closed");
    }
    .instrument(span)
    .await
}

async fn write_task(
    mut sink: futures::stream::SplitSink<WebSocket, Message>,
    mut out: mpsc::Receiver<Outgoing>,
) {
    while let Some(item) = out.recv().await {
        match item {
            Outgoing::Text(text) => {
                if sink.send(Message::Text(text)).await.is_err() {
                    return;
                }
            }
            Outgoing::Close(code, reason) => {
                let frame = CloseFrame {
                    code,
                    reason: Utf8Bytes::from(reason),
                };
                let _ = sink.send(Message::Close(Some(frame))).await;
                let _ = sink.close().await;
                return;
            }
        }
    }
    let _ = sink.close().await;
}

type DirectLimiter = RateLimiter<
    governor::state::NotKeyed,
    governor::state::InMemoryState,
    governor::clock::DefaultClock,
>;

struct Reader {
    app: App,
    session: Arc<Session>,
    user_id: String,
    expires_at: i64,
    frames: DirectLimiter,
}

/// Why the read loop ended.
enum End {
    ClientLeft,
    Closed,
}

impl Reader {
    fn new(app: App, session: Arc<Session>, claims: Claims) -> Self {
        let per_second =
            NonZeroU32::new(app.inner.limits.frames_per_second).unwrap_or(NonZeroU32::MIN);
        let frames = RateLimiter::direct(
            Quota::per_second(per_second)
                .allow_burst(per_second.saturating_mul(NonZeroU32::new(2).expect("non-zero"))),
        );
        Reader {
            user_id: claims.sub,
            expires_at: claims.exp,
            app,
            session,
            frames,
        }
    }

    fn push(&self, frame: &ServerFrame) {
        self.session.push(Utf8Bytes::from(frame.to_json()));
    }

    fn error(&self, code: ErrorCode, message: &str) {
        self.push(&ServerFrame::error(code, message));
    }

    fn welcome(&self) {
        self.push(&ServerFrame::Welcome {
            user_id: self.user_id.clone(),
            session_id: self.session.id,
            token_expires_at: self.expires_at,
            max_frame_bytes: self.app.inner.limits.max_frame_bytes,
        });
    }

    async fn run(&mut self, mut stream: futures::stream::SplitStream<WebSocket>) -> End {
        let shutdown = self.app.inner.shutdown.clone();
        let closing = self.session.closing.clone();
        loop {
            let until_expiry = Duration::from_secs((self.expires_at - now_secs()).max(0) as u64);
            tokio::select! {
                message = stream.next() => match message {
                    Some(Ok(Message::Text(text))) => self.on_text(&text),
                    Some(Ok(Message::Binary(_))) => {
                        self.error(ErrorCode::MalformedFrame, "binary frames are not supported; send JSON text");
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                    Some(Ok(Message::Close(_))) | None => return End::ClientLeft,
                    Some(Err(err)) => {
                        if is_too_big(&err) {
                            metrics::counter!("turbochat_frames_too_large_total").increment(1);
                            tracing::info!("frame over the limit; closing with 1009");
                            self.session.close(CLOSE_TOO_BIG, "frame too large").await;
                            return End::Closed;
                        }
                        tracing::debug!(%err, "socket error");
                        return End::ClientLeft;
                    }
                },
                _ = tokio::time::sleep(until_expiry) => {
                    self.error(ErrorCode::TokenExpired, "token expired; reconnect with a fresh token");
                    self.session.close(CLOSE_POLICY, "token expired").await;
                    return End::Closed;
                }
                _ = closing.cancelled() => {
                    // The queue is full, so the close may not fit: bounded wait.
                    let _ = tokio::time::timeout(Duration::from_secs(1),
                        self.session.close(CLOSE_POLICY, "slow_consumer")).await;
                    return End::Closed;
                }
                _ = shutdown.cancelled() => {
                    self.session.close(CLOSE_GOING_AWAY, "server shutting down").await;
                    return End::Closed;
                }
            }
        }
    }

    fn on_text(&mut self, text: &str) {
        metrics::counter!("turbochat_frames_received_total").increment(1);
        if self.frames.check().is_err() {
            self.error(ErrorCode::RateLimited, "too many frames; slow down");
            return;
        }
        let frame = match ClientFrame::parse(text) {
            Ok(frame) => frame,
            Err(err) => {
                metrics::counter!("turbochat_frames_malformed_total").increment(1);
                self.error(
                    ErrorCode::MalformedFrame,
                    &format!("cannot parse frame: {err}"),
                );
                return;
            }
        };
        match frame {
            ClientFrame::Send {
                conversation_id,
                client_msg_id,
                kind,
                body,
                media_key,
            } => self.send(
                conversation_id,
                client_msg_id,
                kind.as_str(),
                body,
                media_key,
            ),
            ClientFrame::Subscribe {
                conversation_id,
                since,
            } => self.subscribe(conversation_id, since),
            ClientFrame::Unsubscribe { conversation_id } => self.unsubscribe(conversation_id),
            ClientFrame::Resume { conversations } => {
                for WireCursor {
                    conversation_id,
                    since,
                } in conversations
                {
                    self.subscribe(conversation_id, since);
                }
            }
            ClientFrame::Read {
                conversation_id,
                seq,
            } => self.forward(
                conversation_id,
                router_frame::Frame::Read(link::Read {
                    session_id: self.session.id,
                    user_id: self.user_id.clone(),
                    conversation_id: conversation_id.to_string(),
                    seq,
                }),
            ),
            ClientFrame::Typing {
                conversation_id,
                state,
            } => self.forward(
                conversation_id,
                router_frame::Frame::Typing(link::Typing {
                    session_id: self.session.id,
                    user_id: self.user_id.clone(),
                    conversation_id: conversation_id.to_string(),
                    active: state == TypingState::Start,
                }),
            ),
            ClientFrame::Ping { nonce } => self.push(&ServerFrame::Pong { nonce }),
            ClientFrame::Auth { token } => self.reauthenticate(&token),
        }
    }

    fn send(
        &self,
        conversation_id: ConversationId,
        client_msg_id: String,
        kind: &str,
        body: String,
        media_key: Option<String>,
    ) {
        let refuse = |code: ErrorCode, message: &str, retry_after_ms: Option<u64>| {
            self.push(&ServerFrame::Error {
                code,
                message: message.to_string(),
                client_msg_id: Some(client_msg_id.clone()),
                conversation_id: Some(conversation_id),
                retry_after_ms,
            });
        };
        if !valid_client_msg_id(&client_msg_id) {
            return refuse(
                ErrorCode::InvalidArgument,
                "client_msg_id must be 1 to 64 bytes",
                None,
            );
        }
        if let Err(not_until) = self.app.inner.send_limiter.check_key(&self.user_id) {
            let wait = not_until.wait_time_from(governor::clock::Clock::now(
                &governor::clock::DefaultClock::default(),
            ));
            metrics::counter!("turbochat_sends_rate_limited_total").increment(1);
            return refuse(
                ErrorCode::RateLimited,
                "sending too fast; retry later",
                Some(wait.as_millis() as u64 + 1),
            );
        }
        let Some(owner) = self.app.inner.links.owner(&conversation_id) else {
            return refuse(ErrorCode::Unavailable, "no node is available", None);
        };
        let frame = router_frame::Frame::Send(link::Send {
            session_id: self.session.id,
            user_id: self.user_id.clone(),
            conversation_id: conversation_id.to_string(),
            client_msg_id: client_msg_id.clone(),
            kind: kind.to_string(),
            body,
            media_key,
        });
        if owner.send(frame).is_err() {
            metrics::counter!("turbochat_sends_unavailable_total").increment(1);
            refuse(
                ErrorCode::Unavailable,
                "conversation owner unreachable; retry",
                None,
            );
        }
    }

    fn subscribe(&self, conversation_id: ConversationId, since: Option<Seq>) {
        if self.session.subscriptions() >= self.app.inner.limits.max_subscriptions {
            self.push(&ServerFrame::Error {
                code: ErrorCode::InvalidArgument,
                message: "too many subscriptions on one session".into(),
                client_msg_id: None,
                conversation_id: Some(conversation_id),
                retry_after_ms: None,
            });
            return;
        }
        let Some(owner) = self.app.inner.links.owner(&conversation_id) else {
            self.error(ErrorCode::Unavailable, "no node is available");
            return;
        };
        self.session.subscribe(
            conversation_id,
            Cursor {
                last_seq: since,
                node: owner.node.id.clone(),
            },
        );
        let frame = router_frame::Frame::Subscribe(link::Subscribe {
            session_id: self.session.id,
            user_id: self.user_id.clone(),
            conversation_id: conversation_id.to_string(),
            since,
        });
        // If the link is down, the subscription is made when it comes back
        // (the link re-subscribes every cursor that names its node).
        let _ = owner.send(frame);
    }

    fn unsubscribe(&self, conversation_id: ConversationId) {
        let Some(node) = self.session.unsubscribe(&conversation_id) else {
            return;
        };
        if let Some(link) = self.app.inner.links.node(&node) {
            let _ = link.send(router_frame::Frame::Unsubscribe(link::Unsubscribe {
                session_id: self.session.id,
                conversation_id: conversation_id.to_string(),
            }));
        }
    }

    fn forward(&self, conversation_id: ConversationId, frame: router_frame::Frame) {
        let sent = self
            .app
            .inner
            .links
            .owner(&conversation_id)
            .map(|owner| owner.send(frame).is_ok())
            .unwrap_or(false);
        if !sent {
            self.push(&ServerFrame::Error {
                code: ErrorCode::Unavailable,
                message: "conversation owner unreachable; retry".into(),
                client_msg_id: None,
                conversation_id: Some(conversation_id),
                retry_after_ms: None,
            });
        }
    }

    fn reauthenticate(&mut self, token: &str) {
        match self.app.inner.verifier.verify(token) {
            Ok(claims) if claims.sub == self.user_id => {
                self.expires_at = claims.exp;
                self.welcome();
            }
            Ok(_) => self.error(ErrorCode::Unauthorized, "token is for another user"),
            Err(err) => self.error(ErrorCode::Unauthorized, &err.to_string()),
        }
    }

    /// Tells every node this session subscribed at that it is gone.
    fn release_subscriptions(&self) {
        for node in self.session.nodes() {
            if let Some(link) = self.app.inner.links.node(&node) {
                let _ = link.send(router_frame::Frame::SessionClosed(link::SessionClosed {
                    session_id: self.session.id,
                    user_id: self.user_id.clone(),
                    conversation_id: None,
                }));
            }
        }
    }
}

/// Whether a socket error is the frame size limit.
fn is_too_big(err: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        if let Some(tungstenite::Error::Capacity(_)) = e.downcast_ref::<tungstenite::Error>() {
            return true;
        }
        source = e.source();
    }
    false
}
