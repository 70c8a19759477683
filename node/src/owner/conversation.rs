//! One conversation's owner task: the single writer of its seqs.
//!
//! The task accepts sends into a queue and keeps at most one batch of them
//! at the store at a time. While a batch commits, new sends queue up and go
//! out together in the next batch, so a busy conversation needs one commit
//! per batch, not per message, and seqs stay gapless: a batch is numbered
//! from the last committed seq, and nothing is numbered past an uncommitted
//! batch. Acks and fan-out happen only after the commit (guarantee 2).

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

use bytes::Bytes;
use tokio::sync::mpsc;
use tracing::Instrument;
use turbochat_protocol::frame::{ServerFrame, TypingState};
use turbochat_protocol::http::MessageView;
use turbochat_protocol::ids::{ConversationId, Seq, UserId};
use turbochat_protocol::link::DeliverKind;
use turbochat_store::{
    AppendError, Appended, ConversationBatch, ConversationState, NewMessage, Participant,
    StoreError,
};
use uuid::Uuid;

use super::validate::{check_send, SendDraft};
use super::{Command, Owners, SendCommand};
use crate::refusal::Refusal;
use crate::router_link::{Delivery, RouterLink};

/// How long a replay waits for a router to drain before cutting its link.
const REPLAY_PATIENCE: Duration = Duration::from_secs(5);
/// Messages read from the store per replay page.
const REPLAY_PAGE: u32 = 500;
/// Consecutive fencing reloads before the owner gives up on a batch.
const MAX_RELOADS: u32 = 3;

type BatchResult = (
    Vec<SendCommand>,
    Result<Result<Vec<Appended>, AppendError>, StoreError>,
);
type Inflight = Pin<Box<dyn Future<Output = BatchResult> + Send>>;

/// The task for one conversation (see module docs).
pub(super) struct Owner {
    id: ConversationId,
    owners: Owners,
    queued_sends: Arc<AtomicUsize>,
    rx: mpsc::UnboundedReceiver<Command>,
    tx: mpsc::UnboundedSender<Command>,
}

/// The sessions of one router link subscribed to this conversation.
struct LinkSubscribers {
    link: RouterLink,
    sessions: HashMap<u64, UserId>,
}

/// Hot state, loaded from the store when the task starts.
struct State {
    participants: HashMap<UserId, Participant>,
    committed: Seq,
    recent: VecDeque<(Seq, Bytes)>,
    links: HashMap<u64, LinkSubscribers>,
    queued: Vec<SendCommand>,
    /// Whether a batch of ours is being written (its seqs are then in the
    /// store before we know it: a catch-up must not run meanwhile).
    writing: bool,
    reloads: u32,
    /// How many of the next batches carry one send each: the store refused
    /// a batch, and one message's fault must not fail the others with it.
    isolating: usize,
    /// Read cursors moved in memory but not yet written (coalesced).
    unflushed_reads: HashMap<UserId, Seq>,
    /// When the unflushed read cursors are written.
    flush_at: Option<Instant>,
    /// Who is typing: until when, and when we last told the others.
    typing: HashMap<UserId, Typist>,
}

/// One participant's typing indicator.
struct Typist {
    expires: Instant,
    announced: Instant,
}

impl State {
    fn from_store(loaded: ConversationState) -> Self {
        State {
            participants: loaded
                .participants
                .into_iter()
                .map(|p| (p.user_id.clone(), p))
                .collect(),
            committed: loaded.last_seq,
            recent: VecDeque::new(),
            links: HashMap::new(),
            queued: Vec::new(),
            writing: false,
            reloads: 0,
            isolating: 0,
            unflushed_reads: HashMap::new(),
            flush_at: None,
            typing: HashMap::new(),
        }
    }

    fn idle(&self) -> bool {
        self.links.is_empty() && self.queued.is_empty() && self.unflushed_reads.is_empty()
    }

    /// The next timer: read flush or a typing indicator expiring.
    fn next_deadline(&self) -> Option<Instant> {
        let typing = self.typing.values().map(|t| t.expires).min();
        match (self.flush_at, typing) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Users with a session subscribed here (the cluster's knowledge of who
    /// is looking at this conversation right now).
    fn watching(&self, user: &str) -> bool {
        self.links
            .values()
            .any(|l| l.link.is_connected() && l.sessions.values().any(|u| u == user))
    }
}

/// Writes read cursors (forward-only in SQL); failures are logged and
/// counted: the cursor is in memory and re-sent by clients on their next read.
async fn write_reads(
    store: Arc<dyn turbochat_store::Store>,
    conversation: ConversationId,
    reads: HashMap<UserId, Seq>,
) {
    for (user, seq) in reads {
        metrics::counter!("turbochat_read_cursor_writes_total").increment(1);
        if let Err(err) = store.mark_read(conversation, &user, seq).await {
            metrics::counter!("turbochat_read_cursor_errors_total").increment(1);
            tracing::warn!(%err, %conversation, user = %user, "cannot store read cursor");
        }
    }
}

/// Sends a queued send back to its router as a redirect.
fn redirect_send(conversation: ConversationId, send: SendCommand) {
    use turbochat_protocol::link::{node_frame, router_frame, NodeFrame, Redirect};
    let frame = NodeFrame {
        frame: Some(node_frame::Frame::Redirect(Redirect {
            session_id: send.session_id,
            conversation_id: conversation.to_string(),
            frame: Some(turbochat_protocol::link::RouterFrame {
                redirects: 0,
                frame: Some(router_frame::Frame::Send(turbochat_protocol::link::Send {
                    session_id: send.session_id,
                    user_id: send.user_id,
                    conversation_id: conversation.to_string(),
                    client_msg_id: send.client_msg_id,
                    kind: send.kind.as_str().to_string(),
                    body: send.body,
                    media_key: send.media_key,
                    traceparent: send.traceparent,
                })),
            }),
        })),
    };
    send.link.push(frame);
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Owner {
    pub(super) fn new(
        id: ConversationId,
        owners: Owners,
        queued_sends: Arc<AtomicUsize>,
        rx: mpsc::UnboundedReceiver<Command>,
        tx: mpsc::UnboundedSender<Command>,
    ) -> Self {
        Owner {
            id,
            owners,
            queued_sends,
            rx,
            tx,
        }
    }

    pub(super) async fn run(self) {
        let span = tracing::info_span!("owner", conversation_id = %self.id);
        self.run_inner().instrument(span).await;
        metrics::gauge!("turbochat_owners_active").decrement(1.0);
    }

    async fn run_inner(mut self) {
        let loaded = match self.owners.store().load_conversation(self.id).await {
            Ok(Some(loaded)) => loaded,
            Ok(None) => {
                self.refuse_all(&Refusal::no_conversation());
                return;
            }
            Err(err) => {
                self.refuse_all(&Refusal::from(err));
                return;
            }
        };
        let mut state = State::from_store(loaded);
        tracing::debug!(last_seq = state.committed, "owner started");
        let mut inflight: Option<Inflight> = None;
        let shutdown = self.owners.shutdown().clone();
        let idle_timeout = self.owners.config().idle_timeout;

        loop {
            if inflight.is_none() && !state.queued.is_empty() {
                inflight = Some(self.start_batch(&mut state));
            }
            let idle = inflight.is_none() && state.idle();
            let deadline = state.next_deadline();
            tokio::select! {
                biased;
                _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                    self.on_timers(&mut state);
                }
                result = async { inflight.as_mut().expect("guarded").await }, if inflight.is_some() => {
                    inflight = None;
                    self.finish_batch(&mut state, result).await;
                }
                command = self.rx.recv() => match command {
                    Some(Command::Release) => {
                        if let Some(batch) = inflight.take() {
                            let result = batch.await;
                            self.finish_batch(&mut state, result).await;
                        }
                        self.flush_reads(&mut state).await;
                        self.release(&mut state);
                        return;
                    }
                    Some(command) => self.handle(&mut state, command).await,
                    None => break,
                },
                _ = tokio::time::sleep(idle_timeout), if idle => {
                    tracing::debug!("owner idle; dropping state");
                    self.retire();
                    return;
                }
                _ = shutdown.cancelled() => {
                    if let Some(batch) = inflight.take() {
                        let result = batch.await;
                        self.finish_batch(&mut state, result).await;
                    }
                    let refusal = Refusal::unavailable("node is shutting down; retry");
                    for send in std::mem::take(&mut state.queued) {
                        self.queued_sends.fetch_sub(1, Ordering::AcqRel);
                        send.link.refuse(send.session_id, self.id, &refusal, Some(send.client_msg_id));
                    }
                    self.flush_reads(&mut state).await;
                    return;
                }
            }
        }
    }

    /// Leaves the registry, then hands commands that raced with the exit to
    /// the successor task.
    fn retire(&mut self) {
        self.owners.retire(self.id, &self.tx);
        self.rx.close();
        while let Ok(command) = self.rx.try_recv() {
            if matches!(command, Command::Send(_)) {
                self.queued_sends.fetch_sub(1, Ordering::AcqRel);
            }
            if let Err(err) = self.owners.dispatch(self.id, command) {
                tracing::debug!(%err, "command dropped while retiring");
            }
        }
    }

    /// Gives the conversation up: queued sends go back to their routers as
    /// redirects (the router resends them to the new owner), subscribers
    /// are dropped (routers move them on their own ring change), and
    /// commands that arrive meanwhile follow the sends.
    fn release(&mut self, state: &mut State) {
        tracing::info!(queued = state.queued.len(), "releasing conversation");
        metrics::counter!("turbochat_owner_released_total").increment(1);
        self.owners.retire(self.id, &self.tx);
        self.rx.close();
        for send in std::mem::take(&mut state.queued) {
            self.queued_sends.fetch_sub(1, Ordering::AcqRel);
            redirect_send(self.id, send);
        }
        while let Ok(command) = self.rx.try_recv() {
            match command {
                Command::Send(send) => {
                    self.queued_sends.fetch_sub(1, Ordering::AcqRel);
                    redirect_send(self.id, send);
                }
                other => {
                    if let Err(err) = self.owners.dispatch(self.id, other) {
                        tracing::debug!(%err, "command dropped while releasing");
                    }
                }
            }
        }
        state.links.clear();
    }

    /// Answers every queued command with `refusal` and stops (the
    /// conversation does not exist or cannot be loaded).
    fn refuse_all(&mut self, refusal: &Refusal) {
        self.owners.retire(self.id, &self.tx);
        self.rx.close();
        while let Ok(command) = self.rx.try_recv() {
            match command {
                Command::Send(send) => {
                    self.queued_sends.fetch_sub(1, Ordering::AcqRel);
                    send.link
                        .refuse(send.session_id, self.id, refusal, Some(send.client_msg_id));
                }
                Command::Subscribe {
                    link, session_id, ..
                }
                | Command::Read {
                    link, session_id, ..
                }
                | Command::Typing {
                    link, session_id, ..
                } => {
                    link.refuse(session_id, self.id, refusal, None);
                }
                Command::Unsubscribe { .. }
                | Command::Refresh
                | Command::Release
                | Command::CatchUp
                | Command::LinkLost { .. } => {}
            }
        }
    }

    async fn handle(&mut self, state: &mut State, command: Command) {
        match command {
            Command::Send(send) => self.accept_send(state, send).await,
            Command::Subscribe {
                link,
                session_id,
                user_id,
                since,
            } => {
                self.subscribe(state, link, session_id, user_id, since)
                    .await
            }
            Command::Unsubscribe {
                link_id,
                session_id,
            } => {
                let mut gone_user = None;
                if let Some(subs) = state.links.get_mut(&link_id) {
                    gone_user = subs.sessions.remove(&session_id);
                    if subs.sessions.is_empty() {
                        state.links.remove(&link_id);
                    }
                }
                // A typist whose last session left stops typing now.
                if let Some(user) = gone_user {
                    let still_here = state
                        .links
                        .values()
                        .any(|l| l.sessions.values().any(|u| *u == user));
                    if !still_here && state.typing.remove(&user).is_some() {
                        self.announce_typing(state, &user, false);
                    }
                }
            }
            Command::Read {
                link,
                session_id,
                user_id,
                seq,
            } => self.read(state, link, session_id, user_id, seq).await,
            Command::Typing {
                link,
                session_id,
                user_id,
                active,
            } => self.typing(state, link, session_id, user_id, active),
            Command::Release => {}
            Command::CatchUp => {
                // With a batch of ours in flight its outcome tells: it
                // commits only if nobody wrote past us, else it catches up.
                if !state.writing {
                    if let Err(err) = self.catch_up(state).await {
                        tracing::warn!(%err, "cannot catch up after a ring change");
                    }
                }
            }
            Command::LinkLost { link_id } => {
                if let Some(subs) = state.links.get(&link_id) {
                    let sessions: Vec<u64> = subs.sessions.keys().copied().collect();
                    for (seq, payload) in &state.recent {
                        subs.link.deliver(
                            sessions.clone(),
                            self.id,
                            *seq,
                            DeliverKind::Message,
                            payload.clone(),
                        );
                    }
                    metrics::counter!("turbochat_link_lost_resends_total")
                        .increment(state.recent.len() as u64);
                }
            }
            Command::Refresh => match self.owners.store().load_conversation(self.id).await {
                Ok(Some(loaded)) => {
                    state.participants = loaded
                        .participants
                        .into_iter()
                        .map(|p| (p.user_id.clone(), p))
                        .collect();
                }
                Ok(None) => {}
                Err(err) => tracing::warn!(%err, "cannot refresh participants"),
            },
        }
    }

    /// Checks a send and queues it for the next batch.
    async fn accept_send(&mut self, state: &mut State, send: SendCommand) {
        let draft = SendDraft {
            participant: state.participants.contains_key(&send.user_id),
            client_msg_id: &send.client_msg_id,
            kind: send.kind,
            body: &send.body,
            media_key: send.media_key.as_deref(),
        };
        let mut verdict = check_send(self.id, draft, self.owners.config().max_body_chars);
        if let (Ok(()), Some(key)) = (&verdict, send.media_key.as_deref()) {
            verdict = self.check_upload(key).await;
        }
        match verdict {
            Ok(()) => state.queued.push(send),
            Err(refusal) => {
                self.queued_sends.fetch_sub(1, Ordering::AcqRel);
                metrics::counter!("turbochat_sends_refused_total", "code" => refusal.code.as_str())
                    .increment(1);
                send.link
                    .refuse(send.session_id, self.id, &refusal, Some(send.client_msg_id));
            }
        }
    }

    /// A `media_key` must name an upload that really was made to this
    /// conversation (`POST /media` records each one).
    async fn check_upload(&self, key: &str) -> Result<(), Refusal> {
        match self.owners.store().media_upload(self.id, key).await? {
            Some(_) => Ok(()),
            None => Err(Refusal::invalid(
                "media_key is not an upload of this conversation; upload it here first",
            )),
        }
    }

    /// Numbers the queued sends from the last committed seq and hands them
    /// to the group-commit writer: all of them, or only the first while a
    /// refused batch is being retried message by message.
    fn start_batch(&self, state: &mut State) -> Inflight {
        let sends = if state.isolating > 0 {
            state.isolating -= 1;
            state.queued.drain(..1).collect()
        } else {
            std::mem::take(&mut state.queued)
        };
        self.queued_sends.fetch_sub(sends.len(), Ordering::AcqRel);
        state.writing = true;
        let created_at = now_ms();
        let push_enabled = self.owners.config().push_enabled;
        let messages = sends
            .iter()
            .map(|send| NewMessage {
                message_id: Uuid::now_v7(),
                sender_id: send.user_id.clone(),
                client_msg_id: send.client_msg_id.clone(),
                kind: send.kind,
                body: send.body.clone(),
                media_key: send.media_key.clone(),
                created_at,
                push_to: if push_enabled {
                    self.offline_recipients(state, &send.user_id)
                } else {
                    Vec::new()
                },
            })
            .collect();
        let batch = ConversationBatch {
            conversation_id: self.id,
            first_seq: state.committed + 1,
            messages,
        };
        let writer = self.owners.writer().clone();
        Box::pin(async move {
            let result = writer.append(batch).await;
            (sends, result)
        })
    }

    /// Who gets a push for a message from `sender`: every participant but
    /// the sender, not muted, with no live session subscribed to this
    /// conversation. That is the cluster's own knowledge, not a guess:
    /// every router subscribes its sessions at the conversation's single
    /// owner (this task), so `state.links` holds every session in the
    /// cluster that the message will reach. A session behind a router link
    /// that is down counts as gone (its router may be dead): a push too
    /// many beats a missed one.
    fn offline_recipients(&self, state: &State, sender: &str) -> Vec<UserId> {
        state
            .participants
            .values()
            .filter(|p| p.user_id != sender && !p.muted && !state.watching(&p.user_id))
            .map(|p| p.user_id.clone())
            .collect()
    }

    async fn finish_batch(&mut self, state: &mut State, (sends, result): BatchResult) {
        state.writing = false;
        match result {
            Ok(Ok(appended)) => {
                state.reloads = 0;
                for (send, outcome) in sends.into_iter().zip(appended) {
                    match outcome {
                        Appended::Inserted(message) if message.seq <= state.committed => {
                            // Cannot happen while catch-ups wait for our
                            // batches; if it does, the message was already
                            // fanned out: ack only.
                            tracing::error!(
                                seq = message.seq,
                                committed = state.committed,
                                "own write already seen as committed"
                            );
                            self.ack(&send, &message);
                        }
                        Appended::Inserted(message) => {
                            state.committed = message.seq;
                            metrics::histogram!("turbochat_send_commit_seconds")
                                .record(send.received_at.elapsed().as_secs_f64());
                            metrics::counter!("turbochat_messages_committed_total").increment(1);
                            self.ack(&send, &message);
                            self.fan_out(state, &message);
                            if state.typing.remove(&message.sender_id).is_some() {
                                self.announce_typing(state, &message.sender_id, false);
                            }
                        }
                        Appended::Duplicate(message) => {
                            metrics::counter!("turbochat_sends_duplicate_total").increment(1);
                            self.ack(&send, &message);
                        }
                    }
                }
            }
            Ok(Err(AppendError::SeqTaken { seq, .. })) => {
                // Another node wrote this conversation: we were not its only
                // writer. Catch up from the store and renumber the batch.
                tracing::warn!(seq, "seq already taken; reloading from the store");
                metrics::counter!("turbochat_owner_fenced_total").increment(1);
                state.reloads += 1;
                if state.reloads > MAX_RELOADS {
                    self.fail_sends(
                        sends,
                        Refusal::unavailable("conversation is moving between nodes; retry"),
                    );
                    return;
                }
                if let Err(err) = self.catch_up(state).await {
                    tracing::error!(%err, "cannot catch up after fencing");
                    self.fail_sends(sends, Refusal::unavailable("store unavailable; retry"));
                    return;
                }
                self.requeue_front(state, sends);
            }
            Ok(Err(refused @ (AppendError::Failed(_) | AppendError::Invalid(_))))
                if sends.len() > 1 =>
            {
                // One message of the batch may be at fault: write them one
                // by one, so only that one fails.
                tracing::warn!(reason = %refused, sends = sends.len(),
                    "batch refused; retrying its messages one by one");
                metrics::counter!("turbochat_batches_isolated_total").increment(1);
                state.isolating = sends.len();
                self.requeue_front(state, sends);
            }
            Ok(Err(refused)) => {
                let refusal = Refusal::from(refused);
                if refusal.code.retryable() {
                    self.fail_sends(sends, refusal);
                } else {
                    metrics::counter!("turbochat_sends_refused_total", "code" => refusal.code.as_str())
                        .increment(sends.len() as u64);
                    self.refuse_sends(sends, &refusal);
                }
            }
            Err(err) => {
                self.fail_sends(sends, Refusal::from(err));
            }
        }
    }

    /// Puts sends back at the head of the queue, in their order.
    fn requeue_front(&self, state: &mut State, sends: Vec<SendCommand>) {
        self.queued_sends.fetch_add(sends.len(), Ordering::AcqRel);
        let mut requeued = sends;
        requeued.append(&mut state.queued);
        state.queued = requeued;
    }

    fn refuse_sends(&self, sends: Vec<SendCommand>, refusal: &Refusal) {
        for send in sends {
            send.link
                .refuse(send.session_id, self.id, refusal, Some(send.client_msg_id));
        }
    }

    /// Answers sends that were not stored; the client may retry them.
    fn fail_sends(&self, sends: Vec<SendCommand>, refusal: Refusal) {
        metrics::counter!("turbochat_sends_failed_total").increment(sends.len() as u64);
        self.refuse_sends(sends, &refusal);
    }

    /// Reads what other writers committed after our last seq and fans it out.
    /// Never called with a batch of ours in flight (`state.writing`): its
    /// rows would be taken for another writer's.
    async fn catch_up(&self, state: &mut State) -> Result<(), StoreError> {
        loop {
            let page = self
                .owners
                .store()
                .messages_after(self.id, state.committed, REPLAY_PAGE)
                .await?;
            if page.is_empty() {
                return Ok(());
            }
            for message in page {
                if message.seq == state.committed + 1 {
                    state.committed = message.seq;
                    self.fan_out(state, &message);
                }
            }
        }
    }

    fn ack(&self, send: &SendCommand, message: &MessageView) {
        let ack = ServerFrame::Ack {
            conversation_id: self.id,
            client_msg_id: message.client_msg_id.clone(),
            seq: message.seq,
            message_id: message.message_id,
            created_at: message.created_at,
        };
        send.link.to_session(
            send.session_id,
            self.id,
            message.seq,
            DeliverKind::Ack,
            &ack,
        );
    }

    /// Sends a committed message to every subscribed session, one frame per
    /// router, and remembers it for cheap replays.
    fn fan_out(&self, state: &mut State, message: &MessageView) {
        let payload = Bytes::from(ServerFrame::Message(message.clone()).to_json());
        // A router we cannot reach keeps its subscriptions: it re-subscribes
        // from its cursors when back, or they are purged after the link grace.
        for subs in state.links.values() {
            let sessions: Vec<u64> = subs.sessions.keys().copied().collect();
            subs.link.deliver(
                sessions,
                self.id,
                message.seq,
                DeliverKind::Message,
                payload.clone(),
            );
        }
        state.recent.push_back((message.seq, payload));
        while state.recent.len() > self.owners.config().recent_messages {
            state.recent.pop_front();
        }
    }

    async fn subscribe(
        &mut self,
        state: &mut State,
        link: RouterLink,
        session_id: u64,
        user_id: UserId,
        since: Option<Seq>,
    ) {
        if !state.participants.contains_key(&user_id) {
            link.refuse(session_id, self.id, &Refusal::no_conversation(), None);
            return;
        }
        // Our committed seq can be stale if another node wrote meanwhile
        // (we were frozen or cut off): catch up before answering. With a
        // batch of ours in flight, its outcome tells instead: it commits
        // (we were current, and the new subscriber gets its fan-out) or
        // finds its seq taken, and then catches up.
        if !state.writing {
            if let Err(err) = self.catch_up(state).await {
                tracing::warn!(%err, "cannot check the store before a subscribe");
            }
        }
        if let Some(since) = since {
            match self.replay(state, &link, session_id, since).await {
                Ok(Delivery::Queued) => {}
                Ok(Delivery::Gone) => return,
                Err(err) => {
                    tracing::error!(%err, "replay failed");
                    link.refuse(
                        session_id,
                        self.id,
                        &Refusal::unavailable("cannot read history; subscribe again"),
                        None,
                    );
                    return;
                }
            }
        }
        tracing::debug!(session_id, router = %link.router_id(), ?since, last_seq = state.committed, "session subscribed");
        let subscribed = ServerFrame::Subscribed {
            conversation_id: self.id,
            last_seq: state.committed,
        };
        link.to_session(
            session_id,
            self.id,
            state.committed,
            DeliverKind::Subscribed,
            &subscribed,
        );
        state
            .links
            .entry(link.id())
            .or_insert_with(|| LinkSubscribers {
                link: link.clone(),
                sessions: HashMap::new(),
            })
            .sessions
            .insert(session_id, user_id);
    }

    /// Sends the session every committed message after `since` (at most
    /// `max_replay` of the newest), from memory when recent, else the store.
    async fn replay(
        &self,
        state: &State,
        link: &RouterLink,
        session_id: u64,
        since: Seq,
    ) -> Result<Delivery, StoreError> {
        let end = state.committed;
        let max_replay = self.owners.config().max_replay;
        let mut cursor = since.max(end.saturating_sub(max_replay));
        let first_recent = state.recent.front().map(|(seq, _)| *seq);
        let from_store_until = match first_recent {
            Some(first) => first.saturating_sub(1).min(end),
            None => end,
        };
        while cursor < from_store_until {
            let want = (from_store_until - cursor).min(REPLAY_PAGE as u64) as u32;
            let page = self
                .owners
                .store()
                .messages_after(self.id, cursor, want)
                .await?;
            if page.is_empty() {
                break;
            }
            for message in page {
                if message.seq > from_store_until {
                    break;
                }
                cursor = message.seq;
                let payload = Bytes::from(ServerFrame::Message(message).to_json());
                if self.replay_one(link, session_id, cursor, payload).await == Delivery::Gone {
                    return Ok(Delivery::Gone);
                }
            }
        }
        for (seq, payload) in &state.recent {
            if *seq > cursor && *seq <= end {
                cursor = *seq;
                if self
                    .replay_one(link, session_id, *seq, payload.clone())
                    .await
                    == Delivery::Gone
                {
                    return Ok(Delivery::Gone);
                }
            }
        }
        Ok(Delivery::Queued)
    }

    async fn replay_one(
        &self,
        link: &RouterLink,
        session_id: u64,
        seq: Seq,
        payload: Bytes,
    ) -> Delivery {
        metrics::counter!("turbochat_replayed_messages_total").increment(1);
        link.deliver_patiently(
            vec![session_id],
            self.id,
            seq,
            DeliverKind::Message,
            payload,
            REPLAY_PATIENCE,
        )
        .await
    }

    async fn read(
        &mut self,
        state: &mut State,
        link: RouterLink,
        session_id: u64,
        user_id: UserId,
        seq: Seq,
    ) {
        let seq = seq.min(state.committed);
        let Some(participant) = state.participants.get_mut(&user_id) else {
            link.refuse(session_id, self.id, &Refusal::no_conversation(), None);
            return;
        };
        if seq <= participant.last_read_seq {
            return;
        }
        // Move the cursor now, write it with the next flush: a client
        // scrolling fast costs one write per flush interval, not per read.
        participant.last_read_seq = seq;
        state.unflushed_reads.insert(user_id.clone(), seq);
        if state.flush_at.is_none() {
            state.flush_at = Some(Instant::now() + self.owners.config().read_flush_interval);
        }
        let frame = ServerFrame::Read {
            conversation_id: self.id,
            user_id,
            seq,
        };
        self.broadcast(state, &frame, None);
    }

    fn typing(
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

    fn announce_typing(&self, state: &mut State, user_id: &str, active: bool) {
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

    /// Expires typing indicators and starts due read-cursor writes.
    fn on_timers(&self, state: &mut State) {
        let now = Instant::now();
        let expired: Vec<UserId> = state
            .typing
            .iter()
            .filter(|(_, t)| t.expires <= now)
            .map(|(u, _)| u.clone())
            .collect();
        for user in expired {
            state.typing.remove(&user);
            self.announce_typing(state, &user, false);
        }
        if state.flush_at.is_some_and(|at| at <= now) {
            state.flush_at = None;
            let reads = std::mem::take(&mut state.unflushed_reads);
            let store = self.owners.store().clone();
            let id = self.id;
            // Cursors only move forward in SQL, so these writes may land in
            // any order relative to later flushes.
            self.owners
                .spawn_side(async move { write_reads(store, id, reads).await });
        }
    }

    /// Writes pending read cursors now (before the owner stops).
    async fn flush_reads(&self, state: &mut State) {
        state.flush_at = None;
        let reads = std::mem::take(&mut state.unflushed_reads);
        write_reads(self.owners.store().clone(), self.id, reads).await;
    }

    /// Sends an event to every subscribed session, except those of `skip_user`.
    fn broadcast(&self, state: &mut State, frame: &ServerFrame, skip_user: Option<&str>) {
        let payload = Bytes::from(frame.to_json());
        for subs in state.links.values() {
            let sessions: Vec<u64> = subs
                .sessions
                .iter()
                .filter(|(_, user)| Some(user.as_str()) != skip_user)
                .map(|(session, _)| *session)
                .collect();
            if !sessions.is_empty() {
                subs.link
                    .deliver(sessions, self.id, 0, DeliverKind::Event, payload.clone());
            }
        }
    }
}
