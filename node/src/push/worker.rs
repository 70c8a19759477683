//! The outbox worker: one per node. It claims due jobs from the shared
//! outbox (as many as it has free slots, up to `push.concurrency`), delivers
//! each in its own task, and claims more as slots free up. Any node's
//! worker may send any job; claims never overlap (see
//! [`Store::claim_push_jobs`]) and a job whose worker dies is claimed again
//! when its lease ends.
//!
//! It polls: every `push.poll_interval` when the outbox had nothing more,
//! at once while claims come back full. Housekeeping (a gauge of pending
//! jobs, deleting finished ones after `push.retain_finished`) runs beside.
//! On shutdown it stops claiming and lets the jobs in flight finish (each
//! bounded by the request timeout).

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use turbochat_store::Store;

use super::job::Deliverer;

/// How often the pending gauge is refreshed and old jobs purged.
const HOUSEKEEPING: Duration = Duration::from_secs(10);
/// Most finished jobs deleted per statement.
const PURGE_BATCH: u32 = 5_000;

/// The worker of one node.
pub struct Worker {
    pub(super) node: String,
    pub(super) store: Arc<dyn Store>,
    pub(super) deliverer: Arc<Deliverer>,
    pub(super) concurrency: usize,
    pub(super) poll_interval: Duration,
    pub(super) lease: Duration,
    pub(super) retain_finished: Duration,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Worker {
    /// Runs until `shutdown`, then waits for the jobs in flight.
    pub async fn run(self, shutdown: CancellationToken) {
        let span = tracing::info_span!("push_worker", node = %self.node);
        let housekeeping = tokio::spawn(
            housekeeping(self.store.clone(), self.retain_finished, shutdown.clone())
                .instrument(span.clone()),
        );
        self.claim_loop(shutdown).instrument(span).await;
        let _ = housekeeping.await;
    }

    async fn claim_loop(self, shutdown: CancellationToken) {
        tracing::info!(concurrency = self.concurrency, "push worker started");
        let mut inflight: JoinSet<()> = JoinSet::new();
        // Under a backlog, wait until a quarter of the slots are free, so
        // one claim statement brings several jobs, not one per finished job.
        let refill = (self.concurrency / 4).max(1);
        let mut next_claim = Instant::now();
        loop {
            let stopping = shutdown.is_cancelled();
            if stopping && inflight.is_empty() {
                break;
            }
            let free = self.concurrency - inflight.len();
            let may_claim = !stopping && free > 0 && (free >= refill || inflight.is_empty());
            if may_claim && Instant::now() >= next_claim {
                match self
                    .store
                    .claim_push_jobs(now_ms(), free as u32, self.lease)
                    .await
                {
                    Ok(jobs) => {
                        let full = jobs.len() == free;
                        metrics::counter!("turbochat_push_jobs_claimed_total")
                            .increment(jobs.len() as u64);
                        for job in jobs {
                            let span = tracing::info_span!("push_job",
                                job = job.id,
                                conversation_id = %job.message.conversation_id,
                                user_id = %job.user_id,
                                attempt = job.attempt);
                            let deliverer = self.deliverer.clone();
                            inflight.spawn(
                                async move { deliverer.deliver(job).await }.instrument(span),
                            );
                        }
                        next_claim = if full {
                            Instant::now()
                        } else {
                            Instant::now() + self.poll_interval
                        };
                    }
                    Err(err) => {
                        metrics::counter!("turbochat_push_store_errors_total").increment(1);
                        tracing::warn!(%err, "cannot claim push jobs");
                        next_claim = Instant::now() + self.poll_interval;
                    }
                }
                continue;
            }
            tokio::select! {
                _ = shutdown.cancelled(), if !stopping => {
                    tracing::info!(inflight = inflight.len(), "push worker stopping");
                }
                Some(done) = inflight.join_next(), if !inflight.is_empty() => {
                    if let Err(err) = done {
                        // A panicking job keeps its lease and is retried.
                        tracing::error!(%err, "push job task failed");
                    }
                }
                _ = tokio::time::sleep_until(next_claim), if may_claim => {}
            }
        }
        tracing::info!("push worker stopped");
    }
}

/// Keeps `turbochat_push_queued_jobs` current and deletes jobs that
/// finished more than `retain` ago.
async fn housekeeping(store: Arc<dyn Store>, retain: Duration, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(HOUSEKEEPING);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        match store.push_jobs_by_state(now_ms()).await {
            Ok(states) => {
                let pending: u64 = states
                    .iter()
                    .filter(|(state, _)| matches!(state.as_str(), "due" | "leased" | "waiting"))
                    .map(|(_, count)| count)
                    .sum();
                metrics::gauge!("turbochat_push_queued_jobs").set(pending as f64);
                for state in ["due", "leased", "waiting", "sent", "failed"] {
                    let count = states
                        .iter()
                        .find(|(s, _)| s == state)
                        .map_or(0, |(_, count)| *count);
                    metrics::gauge!("turbochat_push_jobs", "state" => state).set(count as f64);
                }
            }
            Err(err) => tracing::debug!(%err, "cannot count push jobs"),
        }
        let before = now_ms().saturating_sub(retain.as_millis() as i64);
        loop {
            match store.purge_push_jobs(before, PURGE_BATCH).await {
                Ok(purged) => {
                    if purged > 0 {
                        metrics::counter!("turbochat_push_jobs_purged_total").increment(purged);
                    }
                    if purged < u64::from(PURGE_BATCH) || shutdown.is_cancelled() {
                        break;
                    }
                }
                Err(err) => {
                    tracing::debug!(%err, "cannot purge finished push jobs");
                    break;
                }
            }
        }
    }
}
