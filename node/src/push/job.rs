//! One claimed push job: the recipient's devices that this job has not
//! handled yet each get the push, at once; their answers decide the job.
//!
//! - accepted: the device is done;
//! - dead token (`UNREGISTERED`, 404, invalid token): the device is
//!   deleted from `user_devices` and done;
//! - rejected for good: the device is done, and the job ends `failed`
//!   with the reason;
//! - transient (429, 5xx, timeout): the job is rescheduled with backoff
//!   and jitter, not before `Retry-After`; only the devices not done yet
//!   are tried again. After `push.max_attempts` it ends `failed`.
//!
//! A store error leaves the job to its lease: it is retried when the lease
//! ends, like a job whose node died.

use std::sync::Arc;
use std::time::Duration;

use turbochat_store::{Device, PushJob, Store};

use super::backoff::Backoff;
use super::fcm::SendError;
use super::payload::{self, Extras, Style};
use super::settings;
use super::sink::Sink;
use turbochat_protocol::http::NotifyMode;

/// Delivers claimed jobs. Cheap to share.
pub struct Deliverer {
    pub(super) store: Arc<dyn Store>,
    pub(super) sink: Arc<Sink>,
    pub(super) style: Style,
    pub(super) backoff: Backoff,
    pub(super) max_attempts: u32,
}

/// What one attempt at a job came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every device handled (possibly none: the user has no device).
    Done,
    /// Some device must be tried again, after `delay`.
    Retry {
        /// How long to wait.
        delay: Duration,
        /// The last transient error.
        reason: String,
    },
    /// The job failed for good.
    Failed {
        /// Why.
        reason: String,
        /// `gave_up` (transient errors until `max_attempts`) or `rejected`.
        kind: &'static str,
    },
}

/// Decides a job's fate from its devices' answers (pure: unit-tested).
/// `transient` holds the retryable errors (reason, `Retry-After`),
/// `rejected` the permanent ones.
pub fn verdict(
    attempt: u32,
    max_attempts: u32,
    backoff: &Backoff,
    transient: &[(String, Option<Duration>)],
    rejected: &[String],
) -> Verdict {
    if let Some((reason, _)) = transient.last() {
        if attempt >= max_attempts {
            return Verdict::Failed {
                reason: format!("gave up after {attempt} attempts: {reason}"),
                kind: "gave_up",
            };
        }
        let retry_after = transient.iter().filter_map(|(_, after)| *after).max();
        return Verdict::Retry {
            delay: backoff.delay(attempt, retry_after),
            reason: reason.clone(),
        };
    }
    if !rejected.is_empty() {
        return Verdict::Failed {
            reason: rejected.join("; "),
            kind: "rejected",
        };
    }
    Verdict::Done
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Deliverer {
    /// Runs one attempt of `job` and records its outcome with the claim.
    pub async fn deliver(&self, mut job: PushJob) {
        if job.message.kind == turbochat_protocol::MessageKind::Deleted {
            // Unsent or deleted after it was claimed: nothing is sent.
            metrics::counter!("turbochat_push_dropped_deleted_total").increment(1);
            if let Err(err) = self.store.complete_push_job(&job).await {
                tracing::warn!(%err, "cannot finish the job of a deleted message");
            }
            return;
        }
        let context = match self
            .store
            .push_context(
                &job.user_id,
                job.message.conversation_id,
                &job.message.sender_id,
            )
            .await
        {
            Ok(context) => context,
            Err(err) => {
                metrics::counter!("turbochat_push_store_errors_total").increment(1);
                tracing::warn!(%err, "cannot read the recipient's settings; the job is retried after its lease");
                return;
            }
        };
        let suppressed = match &context {
            None => Some("not_participant"),
            Some(c) if c.muted => Some("muted"),
            Some(c) if c.settings.mode == NotifyMode::None => Some("mode_none"),
            Some(_) => None,
        };
        let (Some(context), None) = (context, suppressed) else {
            let reason = suppressed.unwrap_or("not_participant");
            metrics::counter!("turbochat_push_suppressed_total", "reason" => reason).increment(1);
            tracing::debug!(reason, "push not sent");
            if let Err(err) = self.store.complete_push_job(&job).await {
                tracing::warn!(%err, "cannot finish a suppressed push job");
            }
            return;
        };
        let silent = settings::is_quiet(&context.settings, now_ms());
        if silent {
            metrics::counter!("turbochat_push_silent_total").increment(1);
        }
        let extras = Extras {
            sender: context.sender.as_ref(),
            listing: context.listing.as_ref(),
            badge: context.badge,
            hide_text: context.settings.hide_text,
            silent,
        };
        let devices = match self
            .store
            .devices_of(std::slice::from_ref(&job.user_id))
            .await
        {
            Ok(devices) => devices,
            Err(err) => {
                metrics::counter!("turbochat_push_store_errors_total").increment(1);
                tracing::warn!(%err, "cannot read devices; the job is retried after its lease");
                return;
            }
        };
        let pending: Vec<Device> = devices
            .into_iter()
            .filter(|d| !job.done_tokens.contains(&d.token))
            .collect();
        if pending.is_empty() && job.done_tokens.is_empty() {
            metrics::counter!("turbochat_push_no_device_total").increment(1);
        }
        let sends = pending.iter().map(|device| {
            let message = payload::build(&job.message, &device.token, &self.style, &extras);
            async move { self.sink.send(&message).await }
        });
        let answers = futures::future::join_all(sends).await;

        let mut transient = Vec::new();
        let mut rejected = Vec::new();
        for (device, answer) in pending.iter().zip(answers) {
            match answer {
                Ok(()) => {
                    metrics::counter!("turbochat_push_sent_total").increment(1);
                    let latency = (now_ms() - job.created_at).max(0) as f64 / 1000.0;
                    metrics::histogram!("turbochat_push_delivery_seconds").record(latency);
                    tracing::debug!(platform = %device.platform, "push accepted");
                    job.done_tokens.push(device.token.clone());
                }
                Err(SendError::DeadToken(reason)) => {
                    self.prune(device, &reason).await;
                    job.done_tokens.push(device.token.clone());
                }
                Err(SendError::Rejected(reason)) => {
                    tracing::warn!(platform = %device.platform, %reason, "push rejected for good");
                    job.done_tokens.push(device.token.clone());
                    rejected.push(reason);
                }
                Err(SendError::Retry {
                    label,
                    reason,
                    retry_after,
                }) => {
                    metrics::counter!("turbochat_push_retried_total", "reason" => label)
                        .increment(1);
                    tracing::debug!(%reason, ?retry_after, "push to retry");
                    transient.push((reason, retry_after));
                }
            }
        }

        let verdict = verdict(
            job.attempt,
            self.max_attempts,
            &self.backoff,
            &transient,
            &rejected,
        );
        let recorded = match &verdict {
            Verdict::Done => self.store.complete_push_job(&job).await,
            Verdict::Retry { delay, reason } => {
                let at = now_ms().saturating_add(delay.as_millis() as i64);
                self.store.reschedule_push_job(&job, at, reason).await
            }
            Verdict::Failed { reason, kind } => {
                metrics::counter!("turbochat_push_failed_total", "reason" => *kind).increment(1);
                tracing::warn!(%reason, "push job failed for good");
                self.store.fail_push_job(&job, reason).await
            }
        };
        match recorded {
            Ok(true) => tracing::debug!(?verdict, "push job attempt recorded"),
            Ok(false) => {
                // Our lease ran out and another worker took the job over:
                // its outcome stands (the devices may get this push twice).
                metrics::counter!("turbochat_push_lease_lost_total").increment(1);
                tracing::warn!(
                    ?verdict,
                    "push job lease lost before its outcome was recorded"
                );
            }
            Err(err) => {
                metrics::counter!("turbochat_push_store_errors_total").increment(1);
                tracing::warn!(%err, "cannot record the push job; retried after its lease");
            }
        }
    }

    /// Deletes a token FCM says is dead (whoever has it now).
    async fn prune(&self, device: &Device, reason: &str) {
        match self.store.delete_device_token(&device.token).await {
            Ok(existed) => {
                if existed {
                    metrics::counter!("turbochat_push_tokens_pruned_total").increment(1);
                }
                tracing::info!(platform = %device.platform, %reason, "device token pruned");
            }
            Err(err) => {
                // The next push to this device meets the same answer and
                // tries again.
                metrics::counter!("turbochat_push_store_errors_total").increment(1);
                tracing::warn!(%err, "cannot prune a dead device token");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BACKOFF: Backoff = Backoff {
        base: Duration::from_millis(100),
        max: Duration::from_secs(10),
        max_retry_after: Duration::from_secs(60),
    };

    #[test]
    fn all_handled_is_done() {
        assert_eq!(verdict(1, 5, &BACKOFF, &[], &[]), Verdict::Done);
    }

    #[test]
    fn transient_errors_retry_with_the_longest_retry_after() {
        let transient = vec![
            ("503".to_string(), Some(Duration::from_secs(2))),
            ("429".to_string(), Some(Duration::from_secs(5))),
            ("timeout".to_string(), None),
        ];
        match verdict(1, 5, &BACKOFF, &transient, &["SENDER_ID_MISMATCH".into()]) {
            Verdict::Retry { delay, reason } => {
                assert_eq!(delay, Duration::from_secs(5));
                assert_eq!(reason, "timeout");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_last_attempt_gives_up() {
        let transient = vec![("UNAVAILABLE (503)".to_string(), None)];
        assert_eq!(
            verdict(5, 5, &BACKOFF, &transient, &[]),
            Verdict::Failed {
                reason: "gave up after 5 attempts: UNAVAILABLE (503)".into(),
                kind: "gave_up",
            }
        );
    }

    #[test]
    fn rejections_fail_the_job_once_nothing_is_left_to_retry() {
        assert_eq!(
            verdict(1, 5, &BACKOFF, &[], &["a".into(), "b".into()]),
            Verdict::Failed {
                reason: "a; b".into(),
                kind: "rejected",
            }
        );
    }
}
