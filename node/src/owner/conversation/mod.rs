//! One conversation's owner task: the single writer of its seqs.
//!
//! The task accepts sends into a queue and keeps at most one batch of them
//! at the store at a time. While a batch commits, new sends queue up and go
//! out together in the next batch, so a busy conversation needs one commit
//! per batch, not per message, and seqs stay gapless: a batch is numbered
//! from the last committed seq, and nothing is numbered past an uncommitted
//! batch. Acks and fan-out happen only after the commit (guarantee 2).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use tokio::sync::mpsc;
use tracing::Instrument;
use turbochat_protocol::ids::{ConversationId, UserId};

mod batch;
mod reads;
mod state;
mod subscribers;
mod typing;

use self::batch::redirect_send;
use self::reads::write_reads;
use self::state::State;
use super::{Backlog, Command, Letter, Owners};
use crate::refusal::Refusal;

/// How long a replay waits for a router to drain before cutting its link.
const REPLAY_PATIENCE: Duration = Duration::from_secs(5);
/// Messages read from the store per replay page.
const REPLAY_PAGE: u32 = 500;
/// A subscribe this soon after the owner read its last seq from the store
/// (loaded, caught up) answers from memory instead of reading it again: a
/// burst of sessions subscribing to a conversation that just loaded (a
/// node restart, a reconnect storm) costs the store one read, not one per
/// session. A freeze counts (the clock runs while a process is stopped),
/// so an owner that was stopped reads the store as before.
const FRESH_READ: Duration = Duration::from_millis(50);
/// Consecutive fencing reloads before the owner gives up on a batch.
const MAX_RELOADS: u32 = 3;

/// What the store said of the batch in flight (its sends wait in
/// `State::inflight_sends`, where a supervisor finds them after a panic).
type BatchResult = turbochat_store::AppendResult;
type Inflight = Pin<Box<dyn Future<Output = BatchResult> + Send>>;

/// The task for one conversation (see module docs). Its mailbox and its
/// hot state are borrowed from [`supervise`], which outlives a panic.
pub(super) struct Owner<'a> {
    id: ConversationId,
    owners: Owners,
    backlog: Arc<Backlog>,
    rx: &'a mut mpsc::UnboundedReceiver<Letter>,
    tx: mpsc::UnboundedSender<Letter>,
}

/// Runs the owner of `id` until it stops, and picks up after it if it
/// panics: the panic is logged at ERROR and counted
/// (`turbochat_owner_panics_total`), the conversation leaves the registry
/// (the next command starts a fresh owner, which reloads from the store),
/// every send it held or had queued is answered `unavailable` (the client
/// retries, idempotently), other queued commands go to the successor, and
/// each router with subscribers is told to subscribe them again.
pub(super) async fn supervise(
    id: ConversationId,
    owners: Owners,
    backlog: Arc<Backlog>,
    mut rx: mpsc::UnboundedReceiver<Letter>,
    tx: mpsc::UnboundedSender<Letter>,
) {
    use futures::FutureExt;
    let span = tracing::info_span!("owner", conversation_id = %id);
    let mut slot: Option<State> = None;
    let owner = Owner {
        id,
        owners: owners.clone(),
        backlog,
        rx: &mut rx,
        tx: tx.clone(),
    };
    let outcome = std::panic::AssertUnwindSafe(owner.run(&mut slot).instrument(span.clone()))
        .catch_unwind()
        .await;
    if let Err(panic) = outcome {
        let _enter = span.enter();
        recover(id, &owners, &mut rx, &tx, slot, panic.as_ref());
    }
    metrics::gauge!("turbochat_owners_active").decrement(1.0);
}

/// See [`supervise`]. The state may be half-updated: only what was queued,
/// in flight and subscribed is read from it.
fn recover(
    id: ConversationId,
    owners: &Owners,
    rx: &mut mpsc::UnboundedReceiver<Letter>,
    tx: &mpsc::UnboundedSender<Letter>,
    slot: Option<State>,
    panic: &(dyn std::any::Any + Send),
) {
    let why = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-text panic".into());
    metrics::counter!("turbochat_owner_panics_total").increment(1);
    tracing::error!(panic = %why, "conversation owner panicked; its state is dropped and reloads on the next command");
    owners.retire(id, tx);
    rx.close();
    let refusal = Refusal::unavailable("the conversation's owner failed; retry");
    let mut answered = 0usize;
    if let Some(mut state) = slot {
        let inflight = state.inflight_sends.take().unwrap_or_default();
        for send in inflight
            .into_iter()
            .chain(std::mem::take(&mut state.queued))
        {
            send.link
                .refuse(send.session_id, id, &refusal, Some(send.client_msg_id));
            answered += 1;
        }
        for subscribers in state.links.values() {
            let sessions: Vec<u64> = subscribers.sessions.keys().copied().collect();
            subscribers.link.resubscribe(id, sessions);
        }
    }
    while let Ok(command) = rx.try_recv() {
        match *command {
            Command::Send(send) => {
                send.link
                    .refuse(send.session_id, id, &refusal, Some(send.client_msg_id));
                answered += 1;
            }
            other => {
                if let Err(err) = owners.dispatch(id, other) {
                    tracing::debug!(%err, "command dropped after an owner panic");
                }
            }
        }
    }
    tracing::info!(answered, "sends of the failed owner answered unavailable");
}

impl Owner<'_> {
    /// Loads the conversation into `slot` and serves commands until the
    /// owner stops.
    async fn run(mut self, slot: &mut Option<State>) {
        // The big futures of rare paths (loads, handlers, commits) are
        // boxed while they run: a task's memory is its largest await
        // point, and an idle owner waits at the smallest, for `rx`.
        let read_at = Instant::now();
        let loaded = match Box::pin(self.owners.store().load_conversation(self.id)).await {
            Ok(Some(loaded)) => {
                // Typing and blocks need these facts next: no second read.
                self.owners.safety().learn(&loaded);
                loaded
            }
            Ok(None) => {
                self.refuse_all(&Refusal::no_conversation());
                return;
            }
            Err(err) => {
                self.refuse_all(&Refusal::from(err));
                return;
            }
        };
        let state = slot.insert(State::from_store(loaded, read_at));
        tracing::debug!(last_seq = state.committed, "owner started");
        let mut inflight: Option<Inflight> = None;
        let shutdown = self.owners.shutdown().clone();
        let idle_timeout = self.owners.config().idle_timeout;

        loop {
            if inflight.is_none() && !state.queued.is_empty() {
                inflight = Some(self.start_batch(state));
            }
            let idle = inflight.is_none() && state.idle();
            let deadline = state.next_deadline();
            tokio::select! {
                biased;
                _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                    self.on_timers(state);
                }
                result = async { inflight.as_mut().expect("guarded").await }, if inflight.is_some() => {
                    inflight = None;
                    Box::pin(self.finish_batch(state, result)).await;
                }
                command = self.rx.recv() => match command.map(|letter| *letter) {
                    Some(Command::Release) => {
                        if let Some(batch) = inflight.take() {
                            let result = batch.await;
                            Box::pin(self.finish_batch(state, result)).await;
                        }
                        Box::pin(self.flush_reads(state)).await;
                        self.release(state);
                        return;
                    }
                    Some(command) => Box::pin(self.handle(state, command)).await,
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
                        Box::pin(self.finish_batch(state, result)).await;
                    }
                    let refusal = Refusal::unavailable("node is shutting down; retry");
                    for send in std::mem::take(&mut state.queued) {
                        self.backlog.sends.fetch_sub(1, Ordering::AcqRel);
                        send.link.refuse(send.session_id, self.id, &refusal, Some(send.client_msg_id));
                    }
                    Box::pin(self.flush_reads(state)).await;
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
            if matches!(*command, Command::Send(_)) {
                self.backlog.sends.fetch_sub(1, Ordering::AcqRel);
            }
            if let Err(err) = self.owners.dispatch(self.id, *command) {
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
            self.backlog.sends.fetch_sub(1, Ordering::AcqRel);
            redirect_send(self.id, send);
        }
        while let Ok(command) = self.rx.try_recv() {
            match *command {
                Command::Send(send) => {
                    self.backlog.sends.fetch_sub(1, Ordering::AcqRel);
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
            match *command {
                Command::Send(send) => {
                    self.backlog.sends.fetch_sub(1, Ordering::AcqRel);
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
                | Command::Tombstoned { .. }
                | Command::Expire { .. }
                | Command::Release
                | Command::CatchUp
                | Command::Poll => {}
            }
        }
    }

    async fn handle(&mut self, state: &mut State, command: Command) {
        if matches!(
            command,
            Command::Subscribe { .. } | Command::Read { .. } | Command::Typing { .. }
        ) {
            self.backlog.others.fetch_sub(1, Ordering::AcqRel);
        }
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
            Command::Expire { before } => self.expire(state, before),
            Command::Tombstoned {
                message,
                deleted_by,
                deleted_at,
            } => self.tombstoned(state, *message, deleted_by, deleted_at),
            Command::Poll => {
                if !state.writing && !state.links.is_empty() {
                    if let Err(err) = self.catch_up(state).await {
                        tracing::debug!(%err, "cannot read others' writes");
                    }
                }
            }
            Command::CatchUp => {
                // With a batch of ours in flight its outcome tells: it
                // commits only if nobody wrote past us, else it catches up.
                if !state.writing {
                    if let Err(err) = self.catch_up(state).await {
                        tracing::warn!(%err, "cannot catch up after a ring change");
                    }
                }
            }
            Command::Refresh => match self.owners.store().load_conversation(self.id).await {
                Ok(Some(loaded)) => {
                    // A read cursor moved here may not be written yet:
                    // the stored one is never newer than ours.
                    state.participants = loaded
                        .participants
                        .into_iter()
                        .map(|mut p| {
                            if let Some(known) = state.participants.get(&p.user_id) {
                                p.last_read_seq = p.last_read_seq.max(known.last_read_seq);
                            }
                            (p.user_id.clone(), p)
                        })
                        .collect();
                    self.drop_non_participants(state);
                }
                Ok(None) => {}
                Err(err) => tracing::warn!(%err, "cannot refresh participants"),
            },
        }
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
}
