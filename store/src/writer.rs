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

use std::sync::Arc;
use std::time::Instant;

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
}

impl Default for WriterConfig {
    fn default() -> Self {
        WriterConfig {
            max_batch_messages: 1024,
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
        let max_batch_messages = config.max_batch_messages.max(1);
        let (requests, queue) = mpsc::channel(queue_capacity(max_batch_messages));
        let task = tokio::spawn(
            run(store, max_batch_messages, queue, shutdown)
                .instrument(tracing::info_span!("store_writer")),
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
            .send(Request { batch, reply })
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

async fn run(
    store: Arc<dyn Store>,
    max_batch_messages: usize,
    mut queue: mpsc::Receiver<Request>,
    shutdown: CancellationToken,
) {
    let mut draining = false;
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
        let mut messages = first.batch.messages.len();
        let mut round = vec![first];
        while messages < max_batch_messages {
            let Ok(request) = queue.try_recv() else {
                break;
            };
            if messages + request.batch.messages.len() > max_batch_messages {
                carried = Some(request);
                break;
            }
            messages += request.batch.messages.len();
            round.push(request);
        }
        commit(store.as_ref(), round, messages).await;
    }
    tracing::debug!("store writer stopped");
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
