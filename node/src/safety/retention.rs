//! Retention: messages older than `safety.message_retention` are emptied
//! into tombstones by a background task, in batches of at most
//! `safety.retention_batch`, each its own short transaction, with a yield
//! between them, so commits are never held behind a long purge.
//!
//! Rows and seqs stay (body and media key go): every history and replay
//! stays gapless, so clients' cursors and the routers' gap checks hold,
//! and the owner numbers on as before. After each round this node's
//! running owners forget the expired messages from their replay memory
//! (every node runs the job, so every node's owners are told within
//! `retention_interval`). Reports keep their own copies; unsent push jobs
//! of emptied messages are dropped.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use turbochat_store::Store;

use crate::owner::Owners;

use super::service::now_ms;

/// Runs the purge every `every` until `shutdown`; `max_age` zero: never.
pub async fn run(
    store: Arc<dyn Store>,
    owners: Owners,
    max_age: Duration,
    every: Duration,
    batch: u32,
    shutdown: CancellationToken,
) {
    if max_age.is_zero() {
        return;
    }
    tracing::info!(?max_age, ?every, batch, "message retention on");
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        let cutoff =
            now_ms().saturating_sub(i64::try_from(max_age.as_millis()).unwrap_or(i64::MAX));
        let mut removed = 0u64;
        loop {
            if shutdown.is_cancelled() {
                return;
            }
            match store.purge_messages(cutoff, batch, now_ms()).await {
                Ok(n) => {
                    removed += n;
                    metrics::counter!("turbochat_retention_messages_total").increment(n);
                    if n < u64::from(batch) {
                        break;
                    }
                    // Let commits waiting for the store go first.
                    tokio::task::yield_now().await;
                }
                Err(err) => {
                    tracing::warn!(%err, "retention purge failed; retried at the next round");
                    break;
                }
            }
        }
        owners.expire_all(cutoff);
        if removed > 0 {
            tracing::info!(removed, "retention emptied old messages");
        }
    }
}
