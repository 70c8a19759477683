//! The connection task: one task per [`crate::Client`] that owns the socket,
//! the offline queue and the per-conversation timelines, and turns
//! everything into [`Event`]s.
//!
//! Its life is a loop of three phases, each of which keeps serving the
//! app's commands (a `send` is queued on disk even while offline):
//! 1. *wait* out the backoff delay;
//! 2. *open*: ask the token provider for a fresh token, connect, read `welcome`;
//! 3. *session*: `resume` every subscribed conversation from its last
//!    delivered seq, flush the queue, then serve frames, commands and
//!    timers (ping, ack timeouts, retries, token refresh) until the socket
//!    dies or the app closes.

use std::collections::HashMap;
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::header::{HeaderValue, AUTHORIZATION};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use turbochat_protocol::frame::{ClientFrame, Cursor, ServerFrame};
use turbochat_protocol::http::MessageView;
use turbochat_protocol::{ConversationId, ErrorCode, Seq, TypingState, UserId};

use crate::backoff::Reconnect;
use crate::client::Stats;
use crate::config::ClientConfig;
use crate::events::{Event, EventHub, MessageState};
use crate::http::{Api, HttpError};
use crate::outbox::Outbox;
use crate::queue::{QueueError, QueuedMessage};
use crate::timeline::Timeline;
use crate::token::{TokenError, TokenProvider};

/// Cursors per `resume` frame, so one frame stays far below the 64 KiB limit.
const RESUME_CHUNK: usize = 200;
/// Largest text frame accepted from the server.
const MAX_INCOMING_FRAME: usize = 16 << 20;

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What the handle asks of the connection task.
#[derive(Debug)]
pub(crate) enum Command {
    /// Queue durably (answer on `reply` once on disk), then send when possible.
    Send {
        message: QueuedMessage,
        reply: oneshot::Sender<Result<(), QueueError>>,
    },
    Subscribe {
        conversation_id: ConversationId,
        since: Option<Seq>,
    },
    Unsubscribe {
        conversation_id: ConversationId,
    },
    Read {
        conversation_id: ConversationId,
        seq: Seq,
    },
    Typing {
        conversation_id: ConversationId,
        state: TypingState,
    },
    Close,
}

/// Results of work the task started in the background.
enum Internal {
    Filled {
        conversation_id: ConversationId,
        range: RangeInclusive<Seq>,
        result: Result<Vec<MessageView>, HttpError>,
    },
    Token(Result<String, TokenError>),
}

/// Why a phase ended.
enum End {
    /// The connection is gone; reconnect.
    Lost(String),
    /// The client is done.
    Stop(String),
}

/// The `welcome` of a session.
struct Welcome {
    user_id: UserId,
    session_id: String,
    token_expires_at: i64,
}

/// One live WebSocket and its timers.
struct Session {
    ws: Socket,
    last_heard: Instant,
    ping_sent: Option<Instant>,
    nonce: u64,
    expires_at: i64,
    refresh_at: Option<Instant>,
    refreshing: bool,
}

impl Session {
    async fn send(&mut self, frame: &ClientFrame) -> Result<(), End> {
        let text = serde_json::to_string(frame).expect("client frames serialize");
        self.ws
            .send(Message::text(text))
            .await
            .map_err(|err| End::Lost(format!("write failed: {err}")))
    }
}

/// The connection task's state.
pub(crate) struct Driver {
    config: ClientConfig,
    ws_url: String,
    tokens: Arc<dyn TokenProvider>,
    api: Api,
    commands: mpsc::UnboundedReceiver<Command>,
    events: Arc<EventHub>,
    stats: Arc<Stats>,
    outbox: Outbox,
    timelines: HashMap<ConversationId, Timeline>,
    /// Read cursors set while offline, sent on connect.
    reads: HashMap<ConversationId, Seq>,
    reconnect: Reconnect,
    internal_tx: mpsc::UnboundedSender<Internal>,
    internal_rx: mpsc::UnboundedReceiver<Internal>,
    done: watch::Sender<bool>,
}

impl Driver {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        config: ClientConfig,
        ws_url: String,
        tokens: Arc<dyn TokenProvider>,
        api: Api,
        commands: mpsc::UnboundedReceiver<Command>,
        events: Arc<EventHub>,
        stats: Arc<Stats>,
        outbox: Outbox,
        done: watch::Sender<bool>,
    ) -> Self {
        let (internal_tx, internal_rx) = mpsc::unbounded_channel();
        let reconnect = Reconnect::new(config.backoff, config.stable_after);
        stats.set_queued(outbox.len());
        Driver {
            config,
            ws_url,
            tokens,
            api,
            commands,
            events,
            stats,
            outbox,
            timelines: HashMap::new(),
            reads: HashMap::new(),
            reconnect,
            internal_tx,
            internal_rx,
            done,
        }
    }

    /// Runs until the app closes the client (or drops every handle).
    pub(crate) async fn run(mut self) {
        let events = self.events.clone();
        let (placeholder, _) = watch::channel(false);
        let done = std::mem::replace(&mut self.done, placeholder);
        let reason = self.life().await;
        tracing::debug!(%reason, "client stopped");
        // Release the queue (and its directory lock) before anyone hears
        // that the client stopped, so the directory can be reopened at once.
        drop(self);
        events.emit(Event::Closed { reason });
        events.close();
        let _ = done.send(true);
    }

    /// The reconnect loop; returns why the client stopped.
    async fn life(&mut self) -> String {
        let mut delay = Duration::ZERO;
        loop {
            if !delay.is_zero() {
                if let Err(reason) = self.wait(delay).await {
                    return reason;
                }
            }
            let lost = match self.open().await {
                Ok(Ok((socket, welcome))) => match self.session(socket, welcome).await {
                    End::Stop(reason) => return reason,
                    End::Lost(reason) => reason,
                },
                Ok(Err(reason)) => reason,
                Err(reason) => return reason,
            };
            self.outbox.disconnected();
            for timeline in self.timelines.values_mut() {
                timeline.disconnected();
            }
            delay = self
                .reconnect
                .next_delay(Instant::now(), rand::random::<f64>());
            tracing::info!(reason = %lost, retry_in = ?delay, "disconnected");
            self.emit(Event::Disconnected {
                reason: lost,
                retry_in_ms: delay.as_millis() as u64,
            });
        }
    }

    fn emit(&self, event: Event) {
        self.events.emit(event);
    }

    /// Sleeps `delay` while serving commands. `Err` when the client stops.
    async fn wait(&mut self, delay: Duration) -> Result<(), String> {
        let sleep = tokio::time::sleep(delay);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = &mut sleep => return Ok(()),
                command = self.commands.recv() => self.offline_command(command).await?,
                Some(internal) = self.internal_rx.recv() => self.on_internal(None, internal).await.map_err(stop_reason)?,
            }
        }
    }

    /// Connects while serving commands. `Ok(Err)` when the attempt failed,
    /// `Err` when the client stops.
    async fn open(&mut self) -> Result<Result<(Socket, Welcome), String>, String> {
        let attempt = connect(
            self.ws_url.clone(),
            self.tokens.clone(),
            self.config.connect_timeout,
        );
        tokio::pin!(attempt);
        loop {
            tokio::select! {
                result = &mut attempt => return Ok(result),
                command = self.commands.recv() => self.offline_command(command).await?,
                Some(internal) = self.internal_rx.recv() => self.on_internal(None, internal).await.map_err(stop_reason)?,
            }
        }
    }

    async fn offline_command(&mut self, command: Option<Command>) -> Result<(), String> {
        match command {
            None => Err("every client handle was dropped".into()),
            Some(command) => self.on_command(None, command).await.map_err(stop_reason),
        }
    }

    /// Serves one live session until it ends.
    async fn session(&mut self, ws: Socket, welcome: Welcome) -> End {
        let now = Instant::now();
        let mut session = Session {
            ws,
            last_heard: now,
            ping_sent: None,
            nonce: 0,
            expires_at: welcome.token_expires_at,
            refresh_at: refresh_at(
                welcome.token_expires_at,
                self.config.token_refresh_margin,
                now,
                unix_now(),
            ),
            refreshing: false,
        };
        if let Err(err) = self.outbox.claim(&welcome.user_id) {
            let _ = session.ws.close(None).await;
            return End::Stop(err.to_string());
        }
        self.reconnect.connected(now);
        self.stats.connected();
        tracing::info!(user_id = %welcome.user_id, session_id = %welcome.session_id, "connected");
        self.emit(Event::Connected {
            user_id: welcome.user_id,
            session_id: welcome.session_id,
        });
        match self.serve(&mut session).await {
            Ok(()) => End::Lost("session ended".into()),
            Err(End::Stop(reason)) => {
                let close = CloseFrame {
                    code: CloseCode::Normal,
                    reason: "client closing".into(),
                };
                let _ = tokio::time::timeout(Duration::from_secs(2), session.ws.close(Some(close)))
                    .await;
                End::Stop(reason)
            }
            Err(lost) => lost,
        }
    }

    async fn serve(&mut self, s: &mut Session) -> Result<(), End> {
        self.on_connected(s).await?;
        loop {
            let deadline = self.next_deadline(s);
            tokio::select! {
                frame = s.ws.next() => {
                    s.last_heard = Instant::now();
                    s.ping_sent = None;
                    match frame {
                        Some(Ok(Message::Text(text))) => self.on_frame(s, &text).await?,
                        Some(Ok(Message::Close(frame))) => {
                            let reason = match frame {
                                Some(f) => format!("closed by the server: {} {}", u16::from(f.code), f.reason),
                                None => "closed by the server".to_string(),
                            };
                            return Err(End::Lost(reason));
                        }
                        Some(Ok(_)) => {}
                        Some(Err(err)) => return Err(End::Lost(format!("read failed: {err}"))),
                        None => return Err(End::Lost("connection closed".into())),
                    }
                }
                command = self.commands.recv() => match command {
                    None => return Err(End::Stop("every client handle was dropped".into())),
                    Some(command) => self.on_command(Some(s), command).await?,
                },
                Some(internal) = self.internal_rx.recv() => self.on_internal(Some(s), internal).await?,
                _ = tokio::time::sleep_until(deadline.into()) => self.on_timers(s).await?,
            }
        }
    }

    /// Right after `welcome`: resume, pending reads, the queue.
    async fn on_connected(&mut self, s: &mut Session) -> Result<(), End> {
        let now = Instant::now();
        let cursors: Vec<Cursor> = self
            .timelines
            .iter_mut()
            .map(|(conversation_id, timeline)| {
                timeline.requested_at = Some(now);
                Cursor {
                    conversation_id: *conversation_id,
                    since: timeline.since(),
                }
            })
            .collect();
        for chunk in cursors.chunks(RESUME_CHUNK) {
            tracing::debug!(conversations = chunk.len(), "resuming");
            s.send(&ClientFrame::Resume {
                conversations: chunk.to_vec(),
            })
            .await?;
        }
        let reads: Vec<(ConversationId, Seq)> = self.reads.drain().collect();
        for (conversation_id, seq) in reads {
            s.send(&ClientFrame::Read {
                conversation_id,
                seq,
            })
            .await?;
        }
        self.pump(s).await
    }

    /// Writes every queued message that is due.
    async fn pump(&mut self, s: &mut Session) -> Result<(), End> {
        for message in self.outbox.due(Instant::now()) {
            s.send(&ClientFrame::Send {
                conversation_id: message.conversation_id,
                client_msg_id: message.client_msg_id,
                kind: message.kind,
                body: message.body,
                media_key: message.media_key,
            })
            .await?;
        }
        Ok(())
    }

    async fn on_command(&mut self, s: Option<&mut Session>, command: Command) -> Result<(), End> {
        match command {
            Command::Send { message, reply } => {
                let (conversation_id, client_msg_id) =
                    (message.conversation_id, message.client_msg_id.clone());
                let queued = self.outbox.push(message);
                let ok = queued.is_ok();
                let _ = reply.send(queued);
                if ok {
                    self.stats.set_queued(self.outbox.len());
                    self.emit(Event::MessageState {
                        conversation_id,
                        client_msg_id,
                        state: MessageState::Pending,
                    });
                    if let Some(s) = s {
                        self.pump(s).await?;
                    }
                }
            }
            Command::Subscribe {
                conversation_id,
                since,
            } => {
                if self.timelines.contains_key(&conversation_id) {
                    return Ok(());
                }
                self.timelines.insert(conversation_id, Timeline::new(since));
                if let Some(s) = s {
                    self.subscribe(s, conversation_id).await?;
                }
            }
            Command::Unsubscribe { conversation_id } => {
                if self.timelines.remove(&conversation_id).is_some() {
                    if let Some(s) = s {
                        s.send(&ClientFrame::Unsubscribe { conversation_id })
                            .await?;
                    }
                }
            }
            Command::Read {
                conversation_id,
                seq,
            } => match s {
                Some(s) => {
                    s.send(&ClientFrame::Read {
                        conversation_id,
                        seq,
                    })
                    .await?
                }
                None => {
                    let cursor = self.reads.entry(conversation_id).or_insert(seq);
                    *cursor = (*cursor).max(seq);
                }
            },
            Command::Typing {
                conversation_id,
                state,
            } => {
                // Typing is ephemeral: offline, it is dropped.
                if let Some(s) = s {
                    s.send(&ClientFrame::Typing {
                        conversation_id,
                        state,
                    })
                    .await?;
                }
            }
            Command::Close => return Err(End::Stop("closed by the app".into())),
        }
        Ok(())
    }

    /// (Re)subscribes `conversation_id` from its cursor.
    async fn subscribe(
        &mut self,
        s: &mut Session,
        conversation_id: ConversationId,
    ) -> Result<(), End> {
        let Some(timeline) = self.timelines.get_mut(&conversation_id) else {
            return Ok(());
        };
        timeline.requested_at = Some(Instant::now());
        timeline.retry_at = None;
        let since = timeline.since();
        s.send(&ClientFrame::Subscribe {
            conversation_id,
            since,
        })
        .await
    }

    async fn on_frame(&mut self, s: &mut Session, text: &str) -> Result<(), End> {
        let frame = match serde_json::from_str::<ServerFrame>(text) {
            Ok(frame) => frame,
            Err(err) => {
                tracing::warn!(%err, "ignoring a frame the client does not understand");
                return Ok(());
            }
        };
        match frame {
            ServerFrame::Welcome {
                token_expires_at, ..
            } => {
                // The answer to our `auth`.
                s.refresh_at = if token_expires_at > s.expires_at {
                    refresh_at(
                        token_expires_at,
                        self.config.token_refresh_margin,
                        Instant::now(),
                        unix_now(),
                    )
                } else {
                    tracing::warn!("the token provider gave no later expiry; the session will end when the token expires");
                    None
                };
                s.expires_at = s.expires_at.max(token_expires_at);
            }
            ServerFrame::Ack {
                conversation_id,
                client_msg_id,
                seq,
                message_id,
                created_at,
            } => {
                match self.outbox.finish(&conversation_id, &client_msg_id) {
                    Ok(Some(_)) => {
                        self.stats.set_queued(self.outbox.len());
                        self.emit(Event::MessageState {
                            conversation_id,
                            client_msg_id,
                            state: MessageState::Sent {
                                seq,
                                message_id,
                                created_at,
                            },
                        });
                    }
                    Ok(None) => {
                        tracing::debug!(%client_msg_id, "ack of a message no longer queued")
                    }
                    // Stays queued: after a restart it is resent and acked
                    // again with the same seq.
                    Err(err) => {
                        tracing::error!(%err, "cannot remove an acked message from the queue")
                    }
                }
                self.pump(s).await?;
            }
            ServerFrame::Message(message) => self.on_message(s, message).await?,
            ServerFrame::Subscribed {
                conversation_id,
                last_seq,
            } => {
                let Some(timeline) = self.timelines.get_mut(&conversation_id) else {
                    return Ok(());
                };
                let deliver = timeline.on_subscribed(last_seq);
                self.deliver(deliver);
                self.emit(Event::Subscribed {
                    conversation_id,
                    last_seq,
                });
                self.fill_gap(conversation_id);
            }
            ServerFrame::Read {
                conversation_id,
                user_id,
                seq,
            } => self.emit(Event::Read {
                conversation_id,
                user_id,
                seq,
            }),
            ServerFrame::Typing {
                conversation_id,
                user_id,
                state,
            } => self.emit(Event::Typing {
                conversation_id,
                user_id,
                state,
            }),
            ServerFrame::Presence { user_id, online } => {
                self.emit(Event::Presence { user_id, online })
            }
            ServerFrame::Conversation { conversation } => {
                self.emit(Event::Conversation(conversation))
            }
            ServerFrame::MessageDeleted {
                conversation_id,
                seq,
                message_id,
                deleted_by,
                ..
            } => self.emit(Event::MessageDeleted {
                conversation_id,
                seq,
                message_id,
                deleted_by,
            }),
            ServerFrame::Pong { .. } => {}
            ServerFrame::Error {
                code,
                message,
                client_msg_id,
                conversation_id,
                retry_after_ms,
            } => {
                self.on_error(
                    s,
                    code,
                    message,
                    client_msg_id,
                    conversation_id,
                    retry_after_ms,
                )
                .await?
            }
        }
        Ok(())
    }

    fn deliver(&self, messages: Vec<MessageView>) {
        for message in messages {
            self.emit(Event::Message(message));
        }
    }

    async fn on_message(&mut self, s: &mut Session, message: MessageView) -> Result<(), End> {
        let conversation_id = message.conversation_id;
        let Some(timeline) = self.timelines.get_mut(&conversation_id) else {
            tracing::debug!(%conversation_id, "message of a conversation not subscribed");
            return Ok(());
        };
        let outcome = timeline.on_message(message);
        let resubscribe = outcome.gap && timeline.requested_at.is_none() && !timeline.filling;
        if outcome.duplicate {
            self.stats.duplicate();
        }
        self.deliver(outcome.deliver);
        if resubscribe {
            tracing::info!(%conversation_id, "gap in the message stream; subscribing again from the cursor");
            self.subscribe(s, conversation_id).await?;
        }
        Ok(())
    }

    /// After `subscribed`: if messages are still missing (the replay was
    /// capped), fetch them with `GET /history`.
    fn fill_gap(&mut self, conversation_id: ConversationId) {
        let Some(timeline) = self.timelines.get_mut(&conversation_id) else {
            return;
        };
        if timeline.requested_at.is_some() || timeline.filling {
            return;
        }
        let Some(range) = timeline.missing() else {
            return;
        };
        tracing::info!(%conversation_id, from = range.start(), to = range.end(), "fetching missed messages from history");
        timeline.filling = true;
        let api = self.api.clone();
        let tx = self.internal_tx.clone();
        tokio::spawn(async move {
            let result = api
                .messages_between(conversation_id, *range.start(), *range.end())
                .await;
            let _ = tx.send(Internal::Filled {
                conversation_id,
                range,
                result,
            });
        });
    }

    async fn on_error(
        &mut self,
        s: &mut Session,
        code: ErrorCode,
        message: String,
        client_msg_id: Option<String>,
        conversation_id: Option<ConversationId>,
        retry_after_ms: Option<u64>,
    ) -> Result<(), End> {
        tracing::debug!(%code, %message, ?client_msg_id, ?conversation_id, "error from the server");
        self.emit(Event::Error {
            code,
            message: message.clone(),
            conversation_id,
            client_msg_id: client_msg_id.clone(),
        });
        let now = Instant::now();
        let backoff = self.config.backoff;
        let retry_after = Duration::from_millis(retry_after_ms.unwrap_or(0));
        match (client_msg_id, conversation_id) {
            (Some(client_msg_id), Some(conversation_id)) => {
                if code.retryable() {
                    let again = self.outbox.retry_later(
                        &conversation_id,
                        &client_msg_id,
                        now,
                        |failures| backoff.jittered(failures).max(retry_after),
                    );
                    if again {
                        self.emit(Event::MessageState {
                            conversation_id,
                            client_msg_id,
                            state: MessageState::Pending,
                        });
                    }
                } else {
                    match self.outbox.finish(&conversation_id, &client_msg_id) {
                        Ok(Some(_)) => {
                            self.stats.set_queued(self.outbox.len());
                            self.emit(Event::MessageState {
                                conversation_id,
                                client_msg_id,
                                state: MessageState::Failed {
                                    reason: message,
                                    code,
                                },
                            });
                        }
                        Ok(None) => {}
                        Err(err) => {
                            tracing::error!(%err, "cannot remove a refused message from the queue")
                        }
                    }
                    self.pump(s).await?;
                }
            }
            (None, Some(conversation_id)) => {
                // A subscribe (or read/typing) of this conversation failed.
                let Some(timeline) = self.timelines.get_mut(&conversation_id) else {
                    return Ok(());
                };
                if timeline.requested_at.is_none() {
                    return Ok(());
                }
                if code.retryable() {
                    timeline.requested_at = None;
                    timeline.retry_at = Some(now + backoff.jittered(2).max(retry_after));
                } else if code == ErrorCode::NotFound {
                    tracing::warn!(%conversation_id, %code, "subscription refused; dropping it");
                    self.timelines.remove(&conversation_id);
                }
            }
            _ => {}
        }
        Ok(())
    }

    async fn on_internal(
        &mut self,
        s: Option<&mut Session>,
        internal: Internal,
    ) -> Result<(), End> {
        match internal {
            Internal::Filled {
                conversation_id,
                range,
                result,
            } => {
                let Some(timeline) = self.timelines.get_mut(&conversation_id) else {
                    return Ok(());
                };
                timeline.filling = false;
                match result {
                    Ok(messages) => {
                        let mut deliver = Vec::new();
                        for message in messages {
                            deliver.extend(timeline.on_message(message).deliver);
                        }
                        if let Some(missing) = timeline.missing() {
                            if missing.start() <= range.end() {
                                let end = (*missing.end()).min(*range.end());
                                tracing::warn!(%conversation_id, from = missing.start(), to = end,
                                    "the server no longer has these messages; skipping them");
                                deliver.extend(timeline.skip(*missing.start()..=end));
                            }
                        }
                        self.stats.gap_filled();
                        self.deliver(deliver);
                    }
                    Err(err) => {
                        tracing::warn!(%conversation_id, %err, "cannot fetch missed messages; will subscribe again");
                        timeline.retry_at = Some(Instant::now() + self.config.backoff.jittered(2));
                    }
                }
            }
            Internal::Token(result) => {
                let Some(s) = s else { return Ok(()) };
                s.refreshing = false;
                match result {
                    Ok(token) => s.send(&ClientFrame::Auth { token }).await?,
                    Err(err) => {
                        tracing::warn!(%err, "cannot refresh the token; trying again");
                        s.refresh_at = Some(Instant::now() + self.config.backoff.ceiling(3));
                    }
                }
            }
        }
        Ok(())
    }

    fn next_deadline(&self, s: &Session) -> Instant {
        let liveness = match s.ping_sent {
            Some(sent) => sent + self.config.pong_timeout,
            None => s.last_heard + self.config.ping_interval,
        };
        let subscriptions = self.timelines.values().filter_map(|t| {
            let timeout = t.requested_at.map(|at| at + self.config.ack_timeout);
            match (timeout, t.retry_at) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            }
        });
        std::iter::once(liveness)
            .chain(s.refresh_at)
            .chain(self.outbox.next_deadline())
            .chain(subscriptions)
            .min()
            .expect("liveness is always there")
    }

    async fn on_timers(&mut self, s: &mut Session) -> Result<(), End> {
        let now = Instant::now();
        match s.ping_sent {
            Some(sent) if now >= sent + self.config.pong_timeout => {
                return Err(End::Lost("no answer to ping".into()));
            }
            None if now >= s.last_heard + self.config.ping_interval => {
                s.nonce += 1;
                s.ping_sent = Some(now);
                s.send(&ClientFrame::Ping {
                    nonce: Some(s.nonce.to_string()),
                })
                .await?;
            }
            _ => {}
        }
        if s.refresh_at.is_some_and(|at| now >= at) && !s.refreshing {
            s.refresh_at = None;
            s.refreshing = true;
            let tokens = self.tokens.clone();
            let tx = self.internal_tx.clone();
            tokio::spawn(async move {
                let _ = tx.send(Internal::Token(tokens.token().await));
            });
        }
        let ack_timeout = self.config.ack_timeout;
        let again: Vec<ConversationId> = self
            .timelines
            .iter()
            .filter(|(_, t)| {
                t.requested_at.is_some_and(|at| now >= at + ack_timeout)
                    || t.retry_at.is_some_and(|at| now >= at)
            })
            .map(|(id, _)| *id)
            .collect();
        for conversation_id in again {
            tracing::debug!(%conversation_id, "subscribing again");
            self.subscribe(s, conversation_id).await?;
        }
        self.pump(s).await
    }
}

fn stop_reason(end: End) -> String {
    match end {
        End::Stop(reason) | End::Lost(reason) => reason,
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// When to ask for a new token: `margin` before `expires_at` (unix
/// seconds), but at most half-way through the remaining life so short
/// tokens are refreshed too. `None` if it already expired.
pub(crate) fn refresh_at(
    expires_at: i64,
    margin: Duration,
    now: Instant,
    now_unix: f64,
) -> Option<Instant> {
    let remaining = expires_at as f64 - now_unix;
    if remaining <= 0.0 {
        return None;
    }
    let lead = margin.as_secs_f64().min(remaining / 2.0);
    Some(now + Duration::from_secs_f64(remaining - lead))
}

/// Gets a token, connects, and reads the `welcome`, within `timeout`.
async fn connect(
    url: String,
    tokens: Arc<dyn TokenProvider>,
    timeout: Duration,
) -> Result<(Socket, Welcome), String> {
    let attempt = async {
        let token = tokens.token().await.map_err(|err| err.to_string())?;
        let mut request = url
            .as_str()
            .into_client_request()
            .map_err(|err| format!("bad url: {err}"))?;
        let bearer = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| "the token is not a valid header value".to_string())?;
        request.headers_mut().insert(AUTHORIZATION, bearer);
        let config = WebSocketConfig::default()
            .max_message_size(Some(MAX_INCOMING_FRAME))
            .max_frame_size(Some(MAX_INCOMING_FRAME));
        let (mut ws, _) = tokio_tungstenite::connect_async_with_config(request, Some(config), true)
            .await
            .map_err(describe)?;
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(text))) => {
                    return match serde_json::from_str::<ServerFrame>(&text) {
                        Ok(ServerFrame::Welcome {
                            user_id,
                            session_id,
                            token_expires_at,
                            ..
                        }) => Ok((
                            ws,
                            Welcome {
                                user_id,
                                session_id,
                                token_expires_at,
                            },
                        )),
                        Ok(_) | Err(_) => Err(format!("expected welcome, got {text}")),
                    };
                }
                Some(Ok(Message::Close(frame))) => {
                    return Err(match frame {
                        Some(f) => {
                            format!("closed before welcome: {} {}", u16::from(f.code), f.reason)
                        }
                        None => "closed before welcome".into(),
                    })
                }
                Some(Ok(_)) => continue,
                Some(Err(err)) => return Err(format!("read failed: {err}")),
                None => return Err("connection closed before welcome".into()),
            }
        }
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .unwrap_or_else(|_| Err(format!("connect timed out after {timeout:?}")))
}

/// A connect error as a reason (an upgrade refusal shows status and body).
fn describe(err: tungstenite::Error) -> String {
    match err {
        tungstenite::Error::Http(response) => {
            let body = response
                .body()
                .as_deref()
                .map(|b| String::from_utf8_lossy(&b[..b.len().min(256)]).into_owned())
                .unwrap_or_default();
            format!("upgrade refused: {} {body}", response.status())
        }
        other => format!("connect failed: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_refresh_is_early_but_not_too_early() {
        let now = Instant::now();
        let margin = Duration::from_secs(60);
        // An hour left: refresh a minute before the end.
        let at = refresh_at(1_000 + 3600, margin, now, 1_000.0).unwrap();
        assert_eq!(at - now, Duration::from_secs(3540));
        // 10 s left: half-way.
        let at = refresh_at(1_010, margin, now, 1_000.0).unwrap();
        assert_eq!(at - now, Duration::from_secs(5));
        assert_eq!(refresh_at(1_000, margin, now, 1_000.5), None);
    }
}
