//! Group commit: one task writes the batches of many conversations with one
//! [`Store::append`] call, so throughput is not one fsync per message.
//!
//! There are no timers. The task takes the first queued request, drains
//! whatever else is already queued (up to
//! [`WriterConfig::max_batch_messages`] messages), commits, answers every
//! requester, and starts over. While one commit runs, the next requests
//! queue up, so the batch grows exactly as fast as commits are slow: one
//! message at a time when the system is idle (lowest latency), hundreds per
//! commit under load (highest throughput).
//!
//! Between those, commits are small and each costs the database a round
//! trip and a WAL flush for a couple of messages. With
//! [`WriterConfig::gather_micros`] set, a round whose arrivals say more
//! messages are due within that window waits for them (up to
//! [`WriterConfig::gather_messages`]); no message waits longer than the
//! window for its commit to start, and a message after a pause does not
//! wait. (Bursts within a low average rate still make some rounds wait:
//! docs/architecture.md has the measured cost.)

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::{AppendError, Appended, ConversationBatch, Store, StoreError};

/// `[store.writer]`: how the group-commit writer batches.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[serde(default)]
pub struct WriterConfig {
    /// Most messages in one commit (default 1024; 0 counts as 1). A single
    /// batch larger than this is still committed, alone.
    pub max_batch_messages: usize,
    /// Longest a message may wait, in microseconds, for others to share its
    /// commit (0, the default: never). Only rounds that would be small and
    /// whose recent arrival rate promises at least one more message within
    /// the window wait. Timers tick in milliseconds: a wait ends at the
    /// first tick after the window.
    pub gather_micros: u64,
    /// A waiting round stops waiting once it has this many messages
    /// (default 32).
    pub gather_messages: usize,
}

impl Default for WriterConfig {
    fn default() -> Self {
        WriterConfig {
            max_batch_messages: 1024,
            gather_micros: 0,
            gather_messages: 32,
        }
    }
}

/// What one [`Writer::append`] answers: the store could not be used
/// (outer `Err`), this conversation's batch was refused (inner `Err`), or
/// one [`Appended`] per message, in order.
pub type AppendResult = Result<Result<Vec<Appended>, AppendError>, StoreError>;

struct Request {
    batch: ConversationBatch,
    reply: oneshot::Sender<AppendResult>,
    queued_at: Instant,
}

/// A cloneable handle to the group-commit task. Every clone feeds the same
/// task; the task ends when shutdown is signalled (after answering what was
/// queued) or when the last handle is dropped.
#[derive(Debug, Clone)]
pub struct Writer {
    requests: mpsc::Sender<Request>,
}

impl Writer {
    /// Starts the group-commit task on `store`. Returns the handle and the
    /// task's `JoinHandle`. When `shutdown` is cancelled the writer accepts
    /// no new request ([`StoreError::WriterClosed`]), commits and answers
    /// every request already queued, then the task ends.
    pub fn spawn(
        store: Arc<dyn Store>,
        config: WriterConfig,
        shutdown: CancellationToken,
    ) -> (Writer, JoinHandle<()>) {
        let limits = Limits {
            max_batch_messages: config.max_batch_messages.max(1),
            gather: Duration::from_micros(config.gather_micros),
            gather_messages: config.gather_messages.max(1),
        };
        let (requests, queue) = mpsc::channel(queue_capacity(limits.max_batch_messages));
        let task = tokio::spawn(
            run(store, limits, queue, shutdown).instrument(tracing::info_span!("store_writer")),
        );
        (Writer { requests }, task)
    }

    /// Appends one conversation's batch in the next group commit and waits
    /// until it is durable (or refused). The answer is what
    /// [`Store::append`] says about this batch. If the whole commit failed,
    /// the error is [`StoreError::GroupCommit`] with the shared cause; if the
    /// writer has stopped, [`StoreError::WriterClosed`]. An empty batch is
    /// answered at once with no store access.
    ///
    /// Cancelling this future does not withdraw the batch: once queued it
    /// is committed; only the answer is lost.
    pub async fn append(&self, batch: ConversationBatch) -> AppendResult {
        if batch.messages.is_empty() {
            return Ok(Ok(Vec::new()));
        }
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(Request {
                batch,
                reply,
                queued_at: Instant::now(),
            })
            .await
            .map_err(|_| StoreError::WriterClosed)?;
        answer.await.map_err(|_| StoreError::WriterClosed)?
    }

    /// Requests queued and not yet taken by the task (a snapshot).
    pub fn queued_requests(&self) -> usize {
        self.requests.max_capacity() - self.requests.capacity()
    }
}

/// Requests that may wait for the task before senders wait in
/// [`Writer::append`]: two full rounds, so the next round can gather while
/// one commits, and never fewer than 64.
fn queue_capacity(max_batch_messages: usize) -> usize {
    max_batch_messages.saturating_mul(2).max(64)
}

/// [`WriterConfig`], checked.
#[derive(Debug, Clone, Copy)]
struct Limits {
    max_batch_messages: usize,
    gather: Duration,
    gather_messages: usize,
}

/// The recent arrival rate: exponentially weighted means of the messages
/// per round and of the time between rounds, their ratio the rate (a mean
/// of ratios would overrate it: a round's time is never shorter than the
/// commit before it).
#[derive(Debug, Default)]
struct Pace {
    messages: f64,
    seconds: f64,
    last_round: Option<Instant>,
}

impl Pace {
    /// Weight of the newest round.
    const ALPHA: f64 = 0.2;

    /// A round of `messages` is about to commit at `now`: about what
    /// arrived since the last round.
    fn record(&mut self, messages: usize, now: Instant) {
        if let Some(last) = self.last_round.replace(now) {
            let elapsed = now.duration_since(last).as_secs_f64();
            self.messages += Self::ALPHA * (messages as f64 - self.messages);
            self.seconds += Self::ALPHA * (elapsed - self.seconds);
        }
    }

    /// Messages per second lately.
    fn per_second(&self) -> f64 {
        if self.seconds <= 0.0 {
            return 0.0;
        }
        self.messages / self.seconds
    }

    /// Messages expected to arrive within `window`, when `queued` have
    /// arrived since the last round. After a quiet spell the mean is stale:
    /// the rate is then at most what arrived over the quiet time, so a
    /// lone message after a pause does not wait.
    fn expected(&self, now: Instant, queued: usize, window: Duration) -> f64 {
        let Some(last) = self.last_round else {
            return 0.0;
        };
        let quiet = now.duration_since(last).as_secs_f64().max(1e-6);
        let bound = (queued as f64 + 1.0) / quiet;
        self.per_second().min(bound) * window.as_secs_f64()
    }
}

/// One round being gathered: its requests and their messages.
struct Round {
    requests: Vec<Request>,
    messages: usize,
}

impl Round {
    fn new(first: Request) -> Round {
        Round {
            messages: first.batch.messages.len(),
            requests: vec![first],
        }
    }

    /// Adds `request`, or hands it back when it would pass the limit (it
    /// then starts the next round).
    fn add(&mut self, request: Request, max_messages: usize) -> Result<(), Request> {
        if self.messages + request.batch.messages.len() > max_messages {
            return Err(request);
        }
        self.messages += request.batch.messages.len();
        self.requests.push(request);
        Ok(())
    }
}

async fn run(
    store: Arc<dyn Store>,
    limits: Limits,
    mut queue: mpsc::Receiver<Request>,
    shutdown: CancellationToken,
) {
    let mut draining = false;
    let mut pace = Pace::default();
    // A request taken from the queue that did not fit in the last round.
    let mut carried: Option<Request> = None;
    loop {
        let first = match carried.take() {
            Some(request) => request,
            None => match next_request(&mut queue, &shutdown, &mut draining).await {
                Some(request) => request,
                None => break,
            },
        };
        let mut round = Round::new(first);
        while round.messages < limits.max_batch_messages {
            let Ok(request) = queue.try_recv() else {
                break;
            };
            if let Err(request) = round.add(request, limits.max_batch_messages) {
                carried = Some(request);
                break;
            }
        }
        if carried.is_none() && !draining && !limits.gather.is_zero() {
            carried = gather(&mut round, &mut queue, &pace, limits, &shutdown).await;
        }
        pace.record(round.messages, Instant::now());
        commit(store.as_ref(), round.requests, round.messages).await;
    }
    tracing::debug!("store writer stopped");
}

/// Waits for more requests while the round is smaller than
/// `gather_messages`, its oldest message has waited less than the window,
/// and the arrival rate promises another message before the window ends.
/// Returns a request that did not fit (the next round's first).
async fn gather(
    round: &mut Round,
    queue: &mut mpsc::Receiver<Request>,
    pace: &Pace,
    limits: Limits,
    shutdown: &CancellationToken,
) -> Option<Request> {
    // Requests leave the queue in the order they joined it: the first of
    // the round has waited longest.
    let deadline = round.requests.first()?.queued_at + limits.gather;
    let started = Instant::now();
    let mut waited = false;
    let carried = loop {
        if round.messages >= limits.gather_messages.min(limits.max_batch_messages) {
            break None;
        }
        let now = Instant::now();
        if now >= deadline || pace.expected(now, round.messages, deadline - now) < 1.0 {
            break None;
        }
        waited = true;
        let request = tokio::select! {
            biased;
            () = shutdown.cancelled() => break None,
            () = tokio::time::sleep_until(deadline.into()) => break None,
            request = queue.recv() => request,
        };
        let Some(request) = request else {
            break None;
        };
        if let Err(request) = round.add(request, limits.max_batch_messages) {
            break Some(request);
        }
    };
    if waited {
        metrics::histogram!("turbochat_store_gather_seconds")
            .record(started.elapsed().as_secs_f64());
    }
    carried
}

/// The next queued request; `None` once the queue is closed and empty. On
/// shutdown, closes the queue (new senders fail) but keeps handing out what
/// was already queued.
async fn next_request(
    queue: &mut mpsc::Receiver<Request>,
    shutdown: &CancellationToken,
    draining: &mut bool,
) -> Option<Request> {
    if !*draining {
        // Shutdown first: under steady load the queue is never empty, and
        // a shutdown must still stop new requests from coming in.
        tokio::select! {
            biased;
            () = shutdown.cancelled() => {
                tracing::debug!("store writer draining");
                *draining = true;
                queue.close();
            }
            request = queue.recv() => return request,
        }
    }
    queue.recv().await
}

/// One group commit: one `Store::append` for the whole round, then every
/// requester gets its batch's answer.
async fn commit(store: &dyn Store, round: Vec<Request>, messages: usize) {
    let (batches, replies): (Vec<_>, Vec<_>) =
        round.into_iter().map(|r| (r.batch, r.reply)).unzip();
    let span = tracing::debug_span!("group_commit", batches = batches.len(), messages);
    let started = Instant::now();
    let outcome = store.append(&batches).instrument(span).await;
    metrics::histogram!("turbochat_store_commit_seconds").record(started.elapsed().as_secs_f64());
    metrics::histogram!("turbochat_store_commit_messages").record(messages as f64);
    let outcome = match outcome {
        Ok(results) if results.len() == replies.len() => Ok(results),
        Ok(results) => Err(StoreError::Corrupt(format!(
            "store answered {} results for {} batches",
            results.len(),
            replies.len()
        ))),
        Err(err) => Err(err),
    };
    match outcome {
        Ok(results) => {
            for (reply, result) in replies.into_iter().zip(results) {
                // A requester that stopped waiting no longer needs the answer.
                let _ = reply.send(Ok(result));
            }
        }
        Err(err) => {
            metrics::counter!("turbochat_store_commit_errors_total").increment(1);
            tracing::warn!(error = %err, batches = replies.len(), messages, "group commit failed");
            let err = Arc::new(err);
            for reply in replies {
                let _ = reply.send(Err(StoreError::GroupCommit(Arc::clone(&err))));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pace that has seen `rounds` rounds of `messages`, `gap` apart,
    /// the last at the returned instant.
    fn steady(messages: usize, gap: Duration, rounds: u32) -> (Pace, Instant) {
        let mut pace = Pace::default();
        let start = Instant::now();
        for n in 0..rounds {
            pace.record(messages, start + gap * n);
        }
        (pace, start + gap * (rounds - 1))
    }

    #[test]
    fn no_history_expects_nothing() {
        let pace = Pace::default();
        assert_eq!(
            pace.expected(Instant::now(), 1, Duration::from_millis(1)),
            0.0
        );
    }

    #[test]
    fn a_steady_rate_is_the_messages_over_the_time() {
        // 4 messages every millisecond: 4,000 per second.
        let (pace, last) = steady(4, Duration::from_millis(1), 50);
        assert!(
            (pace.per_second() - 4000.0).abs() < 1.0,
            "{}",
            pace.per_second()
        );
        let expected = pace.expected(
            last + Duration::from_micros(100),
            1,
            Duration::from_millis(1),
        );
        assert!((expected - 4.0).abs() < 0.01, "{expected}");
    }

    #[test]
    fn a_slow_rate_promises_less_than_one_message_in_the_window() {
        // One message every 2 ms: 500 per second, half a message per ms.
        let (pace, last) = steady(1, Duration::from_millis(2), 50);
        let expected = pace.expected(
            last + Duration::from_micros(100),
            1,
            Duration::from_millis(1),
        );
        assert!(expected < 1.0, "{expected}");
    }

    #[test]
    fn after_a_quiet_spell_a_lone_message_does_not_wait() {
        let (pace, last) = steady(8, Duration::from_millis(1), 50);
        let after_pause = last + Duration::from_secs(1);
        assert!(pace.expected(after_pause, 1, Duration::from_millis(1)) < 1.0);
        // Still busy a moment later: the mean stands.
        assert!(
            pace.expected(
                last + Duration::from_micros(500),
                1,
                Duration::from_millis(1)
            ) >= 1.0
        );
    }
}
