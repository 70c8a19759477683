//! The handle the app holds: [`connect`] starts the connection task and
//! returns a [`Client`]; every method talks to that task (or, for the HTTP
//! helpers, straight to the router).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, oneshot, watch};
use turbochat_protocol::http::{ConversationView, HistoryPage};
use turbochat_protocol::ids::valid_client_msg_id;
use turbochat_protocol::{ConversationId, MessageKind, Seq, TypingState, UserId};
use uuid::Uuid;

use crate::config::ClientConfig;
use crate::connection::{Command, Driver};
use crate::error::ClientError;
use crate::events::{EventHub, Events};
use crate::http::{Api, HttpError};
use crate::outbox::Outbox;
use crate::queue::{DiskQueue, QueuedMessage};
use crate::token::TokenProvider;

/// Opens the offline queue in `config.data_dir` and starts the connection
/// task, which connects (and keeps reconnecting) in the background. Returns
/// at once, online or not: messages sent while offline wait on disk.
///
/// Fails if the config is invalid or the queue cannot be opened (for
/// instance because another process has it).
pub async fn connect(
    config: ClientConfig,
    tokens: impl TokenProvider,
) -> Result<Client, ClientError> {
    config.validate()?;
    let ws_url = config.ws_url()?;
    let tokens: Arc<dyn TokenProvider> = Arc::new(tokens);
    let queue = {
        let dir = config.data_dir.clone();
        tokio::task::spawn_blocking(move || DiskQueue::open(&dir))
            .await
            .map_err(|_| ClientError::Closed)??
    };
    let api = Api::with_provider(&config.http_url(), tokens.clone(), config.request_timeout);
    let events = EventHub::new();
    let stats = Arc::new(Stats::default());
    let (commands, commands_rx) = mpsc::unbounded_channel();
    let (done_tx, done) = watch::channel(false);
    let outbox = Outbox::new(queue, config.ack_timeout);
    let driver = Driver::new(
        config,
        ws_url,
        tokens,
        api.clone(),
        commands_rx,
        events.clone(),
        stats.clone(),
        outbox,
        done_tx,
    );
    tokio::spawn(driver.run());
    Ok(Client {
        inner: Arc::new(Inner {
            commands,
            events,
            api,
            stats,
            done: Mutex::new(done),
        }),
    })
}

/// A connected (or reconnecting) chat client. Cheap to clone; the
/// connection task stops when [`Client::close`] is called or every clone is
/// dropped.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    commands: mpsc::UnboundedSender<Command>,
    events: Arc<EventHub>,
    api: Api,
    stats: Arc<Stats>,
    done: Mutex<watch::Receiver<bool>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("api", &self.inner.api)
            .finish()
    }
}

impl Client {
    /// The event stream. The first call gets every event since
    /// [`connect`]; later calls get events from then on. Read it: events
    /// are buffered until read.
    pub fn events(&self) -> Events {
        self.inner.events.subscribe()
    }

    fn command(&self, command: Command) -> Result<(), ClientError> {
        self.inner
            .commands
            .send(command)
            .map_err(|_| ClientError::Closed)
    }

    /// Queues a text message and returns its `client_msg_id`. When this
    /// returns, the message is on disk: it is sent now if connected, else
    /// after the next connect, and retried until the server acks or
    /// refuses it ([`crate::Event::MessageState`] tells which). Costs one
    /// fsync, done on the connection task.
    pub async fn send(
        &self,
        conversation_id: ConversationId,
        body: impl Into<String>,
    ) -> Result<String, ClientError> {
        self.enqueue(conversation_id, MessageKind::Text, body.into(), None, None)
            .await
    }

    /// Like [`Client::send`] for media already uploaded (`media_key` from
    /// `POST /media`), with an optional caption.
    pub async fn send_media(
        &self,
        conversation_id: ConversationId,
        media_key: impl Into<String>,
        caption: impl Into<String>,
    ) -> Result<String, ClientError> {
        self.enqueue(
            conversation_id,
            MessageKind::Media,
            caption.into(),
            Some(media_key.into()),
            None,
        )
        .await
    }

    /// Like [`Client::send`] with a caller-chosen `client_msg_id` (1–64
    /// bytes, unique per conversation): sending the same id twice stores
    /// one message.
    pub async fn send_with_id(
        &self,
        conversation_id: ConversationId,
        client_msg_id: impl Into<String>,
        body: impl Into<String>,
    ) -> Result<String, ClientError> {
        self.enqueue(
            conversation_id,
            MessageKind::Text,
            body.into(),
            None,
            Some(client_msg_id.into()),
        )
        .await
    }

    async fn enqueue(
        &self,
        conversation_id: ConversationId,
        kind: MessageKind,
        body: String,
        media_key: Option<String>,
        client_msg_id: Option<String>,
    ) -> Result<String, ClientError> {
        let client_msg_id = client_msg_id.unwrap_or_else(|| Uuid::now_v7().to_string());
        if !valid_client_msg_id(&client_msg_id) {
            return Err(ClientError::InvalidArgument(
                "client_msg_id must be 1 to 64 bytes without control characters".into(),
            ));
        }
        let queued_at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        let message = QueuedMessage {
            conversation_id,
            client_msg_id: client_msg_id.clone(),
            kind,
            body,
            media_key,
            queued_at,
        };
        let (reply, queued) = oneshot::channel();
        self.command(Command::Send { message, reply })?;
        queued.await.map_err(|_| ClientError::Closed)??;
        Ok(client_msg_id)
    }

    /// Receives `conversation_id`'s messages from now on. Kept across
    /// reconnects (resumed from the last delivered seq). A no-op if already
    /// subscribed.
    pub async fn subscribe(&self, conversation_id: ConversationId) -> Result<(), ClientError> {
        self.command(Command::Subscribe {
            conversation_id,
            since: None,
        })
    }

    /// Receives every message after `since`, then live ones. A no-op if
    /// already subscribed.
    pub async fn subscribe_from(
        &self,
        conversation_id: ConversationId,
        since: Seq,
    ) -> Result<(), ClientError> {
        self.command(Command::Subscribe {
            conversation_id,
            since: Some(since),
        })
    }

    /// Stops receiving `conversation_id`.
    pub async fn unsubscribe(&self, conversation_id: ConversationId) -> Result<(), ClientError> {
        self.command(Command::Unsubscribe { conversation_id })
    }

    /// Moves the read cursor to `seq` (sent on the next connect if offline).
    pub async fn read(&self, conversation_id: ConversationId, seq: Seq) -> Result<(), ClientError> {
        self.command(Command::Read {
            conversation_id,
            seq,
        })
    }

    /// Typing indicator (dropped while offline: it would be stale).
    pub async fn typing(
        &self,
        conversation_id: ConversationId,
        state: TypingState,
    ) -> Result<(), ClientError> {
        self.command(Command::Typing {
            conversation_id,
            state,
        })
    }

    /// The HTTP API with the same router and token provider.
    pub fn api(&self) -> &Api {
        &self.inner.api
    }

    /// `GET /conversations` (see [`Api::conversations`]).
    pub async fn conversations(&self) -> Result<Vec<ConversationView>, HttpError> {
        self.inner.api.conversations(None).await
    }

    /// `GET /history` (see [`Api::history`]).
    pub async fn history(
        &self,
        conversation_id: ConversationId,
        before_seq: Option<Seq>,
        limit: Option<u32>,
    ) -> Result<HistoryPage, HttpError> {
        self.inner
            .api
            .history(conversation_id, before_seq, limit)
            .await
    }

    /// `POST /conversations`, direct (see [`Api::create_direct`]).
    pub async fn create_direct(
        &self,
        peer: &str,
        listing_id: Option<&str>,
    ) -> Result<ConversationView, HttpError> {
        self.inner.api.create_direct(peer, listing_id).await
    }

    /// `POST /conversations`, group (see [`Api::create_group`]).
    pub async fn create_group(
        &self,
        participants: Vec<UserId>,
        title: Option<String>,
    ) -> Result<ConversationView, HttpError> {
        self.inner.api.create_group(participants, title).await
    }

    /// Counters about this client (for tests and operators).
    pub fn stats(&self) -> ClientStats {
        self.inner.stats.snapshot()
    }

    /// Closes the connection and stops the task; returns once it stopped.
    /// Queued messages stay on disk for the next [`connect`]. Idempotent.
    pub async fn close(&self) {
        let _ = self.inner.commands.send(Command::Close);
        let mut done = self.inner.done.lock().expect("done lock").clone();
        let _ = done.wait_for(|stopped| *stopped).await;
    }
}

/// A snapshot of [`Client::stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// Sessions established (welcome received).
    pub connects: u64,
    /// Messages dropped because their seq was already delivered.
    pub duplicates_dropped: u64,
    /// Gaps filled from `GET /history` after a capped replay.
    pub gaps_filled: u64,
    /// Messages in the disk queue.
    pub queued: u64,
}

/// Live counters, written by the connection task.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    connects: AtomicU64,
    duplicates: AtomicU64,
    gaps_filled: AtomicU64,
    queued: AtomicU64,
}

impl Stats {
    pub(crate) fn connected(&self) {
        self.connects.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn duplicate(&self) {
        self.duplicates.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn gap_filled(&self) {
        self.gaps_filled.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn set_queued(&self, n: usize) {
        self.queued.store(n as u64, Ordering::Relaxed);
    }

    fn snapshot(&self) -> ClientStats {
        ClientStats {
            connects: self.connects.load(Ordering::Relaxed),
            duplicates_dropped: self.duplicates.load(Ordering::Relaxed),
            gaps_filled: self.gaps_filled.load(Ordering::Relaxed),
            queued: self.queued.load(Ordering::Relaxed),
        }
    }
}
