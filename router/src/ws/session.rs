//! One WebSocket session: a read task (this function) and a write task,
//! with a bounded queue between the write task and everything that produces
//! frames for the client (this session, and the node links).
//!
//! Frame → command: each client frame is checked (size by the socket, shape
//! by serde, rate by limiters) and forwarded to the conversation's owner
//! node. Errors go back as `error` frames and the connection stays, except
//! an oversized frame (close 1009), an expired token (close 1008), a slow
//! consumer (close 1008), and shutdown (close 1001).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures::{SinkExt, StreamExt};
use tracing::Instrument;
use turbochat_protocol::frame::{ClientFrame, Cursor as WireCursor, ServerFrame};
use turbochat_protocol::ids::{valid_client_msg_id, ConversationId, Seq};
use turbochat_protocol::link::{self, router_frame};
use turbochat_protocol::{ErrorCode, TypingState};

use crate::auth::{now_secs, Claims};
use crate::limits::{frame_limiter, wait_ms, FrameLimiter};
use crate::outbox::Outbox;
use crate::sessions::{Cursor, Outgoing, Session, CLOSE_POLICY};
use crate::App;

/// Close codes (RFC 6455).
const CLOSE_NORMAL: u16 = 1000;
const CLOSE_GOING_AWAY: u16 = 1001;
const CLOSE_TOO_BIG: u16 = 1009;

/// How long a closing session's socket is kept for the client to read its
/// close frame (behind whatever it had not read yet). Then the socket is
/// dropped, read or not: a client that stopped reading holds no file
/// descriptor and no kernel buffer for longer.
pub const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Runs a session until the client leaves, misbehaves, or the router stops.
pub async fn run(app: App, claims: Claims, socket: WebSocket) {
    let session = app.inner.sessions.open(
        claims.sub.clone(),
        crate::sessions::Profile::from_claims(&claims),
        app.inner.limits.session_queue,
    );
    let span = tracing::info_span!("session", session_id = session.id, user_id = %claims.sub);
    async move {
        tracing::debug!("session opened");
        let (sink, stream) = socket.split();
        let mut writer = app
            .inner
            .tracker
            .spawn(write_task(sink, session.clone()).in_current_span());
        let mut reader = Reader::new(app.clone(), session.clone(), claims);
        reader.welcome();
        app.inner.links.register_home(&session);
        if reader.run(stream).await == End::ClientLeft {
            // Nothing was asked to close: answer the client's close (or the
            // broken socket) and let the writer go.
            session.close_now(CLOSE_NORMAL, "");
        }
        reader.release_subscriptions();
        drop(reader);
        // The session (and its socket) counts against `max_sessions` until
        // the writer is done with the socket.
        if tokio::time::timeout(CLOSE_GRACE, &mut writer)
            .await
            .is_err()
        {
            writer.abort();
            metrics::counter!("turbochat_sessions_dropped_total").increment(1);
            tracing::debug!("client did not read its close frame; socket dropped");
        }
        app.inner.sessions.close(session.id);
        tracing::debug!("session closed");
    }
    .instrument(span)
    .await
}

/// Most queued frames written to the socket in one go (one flush, one
/// `write` system call on the socket for what the client has waiting).
const MAX_BURST: usize = 64;

/// Writes queued frames to the socket in order, everything already queued
/// in one write. An ordered close ([`Outgoing::Close`]) goes out after what
/// was queued before it; a close now ([`Session::close_now`], e.g. a slow
/// consumer) skips the queue, even when a write is stuck on a client that
/// does not read. Once it ends, nothing more is queued for the socket.
async fn write_task(sink: futures::stream::SplitSink<WebSocket, Message>, session: Arc<Session>) {
    write_all(sink, &session).await;
    session.outgoing().close();
}

async fn write_all(mut sink: futures::stream::SplitSink<WebSocket, Message>, session: &Session) {
    let out = session.outgoing();
    let closing = session.closing.clone();
    // A close taken off the queue behind a burst of frames.
    let mut held: Option<Outgoing> = None;
    loop {
        let item = match held.take() {
            Some(item) => Some(item),
            None => tokio::select! {
                biased;
                _ = closing.cancelled() => break,
                item = out.pop() => item,
            },
        };
        match item {
            Some(Outgoing::Text(text)) => {
                let sent = tokio::select! {
                    biased;
                    _ = closing.cancelled() => break,
                    sent = Box::pin(write_burst(&mut sink, text, out, &mut held)) => sent,
                };
                if sent.is_err() {
                    return;
                }
            }
            Some(Outgoing::Close(code, reason)) => {
                Box::pin(close(&mut sink, code, reason)).await;
                return;
            }
            None => {
                let _ = sink.close().await;
                return;
            }
        }
    }
    let (code, reason) = session
        .close_reason()
        .unwrap_or((CLOSE_POLICY, "closing".to_string()));
    Box::pin(close(&mut sink, code, reason)).await;
}

/// Buffers `first` and every text frame queued behind it (up to
/// [`MAX_BURST`]), then flushes them to the socket at once. A close met in
/// the queue is left in `held`, to go out after the burst.
async fn write_burst(
    sink: &mut futures::stream::SplitSink<WebSocket, Message>,
    first: Utf8Bytes,
    out: &Outbox<Outgoing>,
    held: &mut Option<Outgoing>,
) -> Result<(), axum::Error> {
    sink.feed(Message::Text(first)).await?;
    for _ in 1..MAX_BURST {
        match out.try_pop() {
            Some(Outgoing::Text(text)) => sink.feed(Message::Text(text)).await?,
            Some(close) => {
                *held = Some(close);
                break;
            }
            None => break,
        }
    }
    sink.flush().await
}

async fn close(
    sink: &mut futures::stream::SplitSink<WebSocket, Message>,
    code: u16,
    reason: String,
) {
    let frame = CloseFrame {
        code,
        reason: Utf8Bytes::from(reason),
    };
    let _ = sink.send(Message::Close(Some(frame))).await;
    let _ = sink.close().await;
}

/// Why the read loop ended.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// The client closed, or the socket broke.
    ClientLeft,
    /// The session asked for a close (queued, or at once).
    Closing,
}

struct Reader {
    app: App,
    session: Arc<Session>,
    user_id: String,
    expires_at: i64,
    frames: FrameLimiter,
}

impl Reader {
    fn new(app: App, session: Arc<Session>, claims: Claims) -> Self {
        let frames = frame_limiter(&app.inner.limits);
        Reader {
            user_id: claims.sub,
            expires_at: claims.exp,
            app,
            session,
            frames,
        }
    }

    fn push(&self, frame: &ServerFrame) {
        if let ServerFrame::Error { code, .. } = frame {
            metrics::counter!("turbochat_client_errors_total", "code" => code.as_str())
                .increment(1);
        }
        self.session.push(Utf8Bytes::from(frame.to_json()));
    }

    fn error(&self, code: ErrorCode, message: &str) {
        self.push(&ServerFrame::error(code, message));
    }

    fn welcome(&self) {
        self.push(&ServerFrame::Welcome {
            user_id: self.user_id.clone(),
            session_id: self.session.id.to_string(),
            token_expires_at: self.expires_at,
            max_frame_bytes: self.app.inner.limits.max_frame_bytes,
        });
    }

    /// Reads frames until the client leaves or the session must close.
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
                            tracing::debug!("frame over the limit; closing with 1009");
                            self.session.close(CLOSE_TOO_BIG, "frame too large");
                            return End::Closing;
                        }
                        tracing::debug!(%err, "socket error");
                        return End::ClientLeft;
                    }
                },
                _ = tokio::time::sleep(until_expiry) => {
                    self.error(ErrorCode::TokenExpired, "token expired; reconnect with a fresh token");
                    self.session.close(CLOSE_POLICY, "token expired");
                    return End::Closing;
                }
                // The writer sends the close frame.
                _ = closing.cancelled() => return End::Closing,
                _ = shutdown.cancelled() => {
                    self.session.close(CLOSE_GOING_AWAY, "server shutting down");
                    return End::Closing;
                }
            }
        }
    }

    fn on_text(&mut self, text: &str) {
        metrics::counter!("turbochat_frames_received_total").increment(1);
        if let Err(not_until) = self.frames.check() {
            metrics::counter!("turbochat_frames_rate_limited_total").increment(1);
            // Name what was refused, when it can be read.
            let (conversation_id, client_msg_id) = match ClientFrame::parse(text) {
                Ok(frame) => (
                    frame.conversation_id(),
                    frame.client_msg_id().map(str::to_string),
                ),
                Err(_) => (None, None),
            };
            self.push(&ServerFrame::Error {
                code: ErrorCode::RateLimited,
                message: "too many frames; slow down".into(),
                client_msg_id,
                conversation_id,
                retry_after_ms: Some(wait_ms(&not_until)),
            });
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
        if let Err(not_until) = self.app.inner.users.sends.check_key(&self.user_id) {
            metrics::counter!("turbochat_sends_rate_limited_total").increment(1);
            return refuse(
                ErrorCode::RateLimited,
                "sending too fast; retry later",
                Some(wait_ms(&not_until)),
            );
        }
        let Some(owner) = self.app.inner.links.owner(&conversation_id) else {
            return refuse(ErrorCode::Unavailable, "no node is available", None);
        };
        // With traces on, this send's span is the root of its trace; the
        // owner node joins it through `traceparent`.
        let traceparent = if turbochat_service::telemetry::traces_on() {
            let span = tracing::info_span!("send", %conversation_id, %client_msg_id, node = %owner.node.id);
            span.in_scope(turbochat_service::telemetry::traceparent)
        } else {
            String::new()
        };
        let send = link::Send {
            session_id: self.session.id,
            user_id: self.user_id.clone(),
            conversation_id: conversation_id.to_string(),
            client_msg_id: client_msg_id.clone(),
            kind: kind.to_string(),
            body,
            media_key,
            traceparent,
        };
        // Its lane forwards it in order, and answers for it whatever
        // happens to the node it goes to (see `lanes.rs`).
        if let Err(err) = self
            .app
            .inner
            .links
            .forward_send(&self.session, conversation_id, send)
        {
            refuse(ErrorCode::RateLimited, &err.to_string(), Some(100));
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
                claimed: since.is_some(),
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
