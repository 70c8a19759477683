//! When each queued message is (re)sent: the scheduling half of the offline
//! queue, over the [`DiskQueue`] that makes it durable.
//!
//! One message per conversation is in flight at a time, the oldest. That is
//! what keeps a conversation's messages in the order the app sent them even
//! when one attempt fails and is retried: with a window of several, a
//! retried message would land after ones sent behind it. The server limits
//! a user to about 20 sends a second anyway, well below what one round
//! trip per message allows. Different conversations proceed in parallel.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use turbochat_protocol::ConversationId;

use crate::queue::{DiskQueue, QueueError, QueuedMessage};

type Key = (ConversationId, String);

#[derive(Debug, Default, Clone)]
struct Attempts {
    /// When the current attempt was written to the socket.
    sent_at: Option<Instant>,
    /// Retryable failures so far.
    failures: u32,
    /// Not before this instant (after a retryable error).
    not_before: Option<Instant>,
}

/// The queue plus the in-memory state of each entry's attempts.
#[derive(Debug)]
pub(crate) struct Outbox {
    queue: DiskQueue,
    attempts: HashMap<Key, Attempts>,
    ack_timeout: Duration,
}

impl Outbox {
    pub(crate) fn new(queue: DiskQueue, ack_timeout: Duration) -> Self {
        Outbox {
            queue,
            attempts: HashMap::new(),
            ack_timeout,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.queue.len()
    }

    /// Queues a message durably.
    pub(crate) fn push(&mut self, message: QueuedMessage) -> Result<(), QueueError> {
        self.queue.push(message)
    }

    /// See [`DiskQueue::claim`].
    pub(crate) fn claim(&mut self, user: &str) -> Result<(), QueueError> {
        self.queue.claim(user)
    }

    /// The oldest entry of every conversation, in queue order.
    fn heads(&self) -> impl Iterator<Item = &QueuedMessage> {
        let mut seen = HashSet::new();
        self.queue
            .entries()
            .iter()
            .filter(move |m| seen.insert(m.conversation_id))
    }

    /// The messages to write to the socket now, marked as in flight: each
    /// conversation's head unless it is in flight (and not yet past the ack
    /// timeout, after which it is resent: the server dedupes) or waiting
    /// out a retry delay.
    pub(crate) fn due(&mut self, now: Instant) -> Vec<QueuedMessage> {
        let due: Vec<QueuedMessage> = self
            .heads()
            .filter(|m| {
                let Some(a) = self.attempts.get(&key(m)) else {
                    return true;
                };
                match a.sent_at {
                    Some(sent) => now >= sent + self.ack_timeout,
                    None => a.not_before.is_none_or(|t| now >= t),
                }
            })
            .cloned()
            .collect();
        for m in &due {
            let a = self.attempts.entry(key(m)).or_default();
            if a.sent_at.is_some() {
                tracing::debug!(client_msg_id = %m.client_msg_id, "no ack in time; sending again");
            }
            a.sent_at = Some(now);
            a.not_before = None;
        }
        due
    }

    /// The next instant at which [`Outbox::due`] may return something new
    /// without any other event (a retry delay or an ack timeout ending).
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.heads()
            .filter_map(|m| {
                let a = self.attempts.get(&key(m))?;
                match a.sent_at {
                    Some(sent) => Some(sent + self.ack_timeout),
                    None => a.not_before,
                }
            })
            .min()
    }

    /// The entry is done (acked, or refused for good): off the disk.
    pub(crate) fn finish(
        &mut self,
        conversation_id: &ConversationId,
        client_msg_id: &str,
    ) -> Result<Option<QueuedMessage>, QueueError> {
        self.attempts
            .remove(&(*conversation_id, client_msg_id.to_string()));
        self.queue.remove(conversation_id, client_msg_id)
    }

    /// A retryable failure: try again after `delay(failures so far)`.
    /// Returns false if the entry is not queued.
    pub(crate) fn retry_later(
        &mut self,
        conversation_id: &ConversationId,
        client_msg_id: &str,
        now: Instant,
        delay: impl FnOnce(u32) -> Duration,
    ) -> bool {
        let queued = self
            .queue
            .entries()
            .iter()
            .any(|m| m.conversation_id == *conversation_id && m.client_msg_id == client_msg_id);
        if !queued {
            return false;
        }
        let a = self
            .attempts
            .entry((*conversation_id, client_msg_id.to_string()))
            .or_default();
        let wait = delay(a.failures);
        a.failures = a.failures.saturating_add(1);
        a.sent_at = None;
        a.not_before = Some(now + wait);
        true
    }

    /// The connection is gone: nothing is in flight any more (whatever was
    /// may or may not have been stored; it is resent with the same id).
    pub(crate) fn disconnected(&mut self) {
        for a in self.attempts.values_mut() {
            a.sent_at = None;
        }
    }
}

fn key(m: &QueuedMessage) -> Key {
    (m.conversation_id, m.client_msg_id.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use turbochat_protocol::MessageKind;
    use uuid::Uuid;

    fn message(conversation: ConversationId, id: &str) -> QueuedMessage {
        QueuedMessage {
            conversation_id: conversation,
            client_msg_id: id.to_string(),
            kind: MessageKind::Text,
            body: id.to_string(),
            media_key: None,
            queued_at: 0,
        }
    }

    fn ids(messages: &[QueuedMessage]) -> Vec<&str> {
        messages.iter().map(|m| m.client_msg_id.as_str()).collect()
    }

    fn outbox(dir: &std::path::Path) -> Outbox {
        Outbox::new(DiskQueue::open(dir).unwrap(), Duration::from_secs(10))
    }

    #[test]
    fn one_in_flight_per_conversation_in_queue_order() {
        let dir = tempfile::tempdir().unwrap();
        let (c1, c2) = (Uuid::now_v7(), Uuid::now_v7());
        let mut outbox = outbox(dir.path());
        for (c, id) in [(c1, "a1"), (c1, "a2"), (c2, "b1"), (c1, "a3")] {
            outbox.push(message(c, id)).unwrap();
        }
        let now = Instant::now();
        assert_eq!(ids(&outbox.due(now)), ["a1", "b1"]);
        assert!(outbox.due(now).is_empty(), "heads are in flight");
        outbox.finish(&c1, "a1").unwrap();
        assert_eq!(ids(&outbox.due(now)), ["a2"]);
        outbox.finish(&c1, "a2").unwrap();
        outbox.finish(&c2, "b1").unwrap();
        assert_eq!(ids(&outbox.due(now)), ["a3"]);
    }

    #[test]
    fn a_retryable_failure_waits_and_keeps_its_place() {
        let dir = tempfile::tempdir().unwrap();
        let c = Uuid::now_v7();
        let mut outbox = outbox(dir.path());
        outbox.push(message(c, "a")).unwrap();
        outbox.push(message(c, "b")).unwrap();
        let t0 = Instant::now();
        assert_eq!(ids(&outbox.due(t0)), ["a"]);
        let mut seen = Vec::new();
        assert!(outbox.retry_later(&c, "a", t0, |failures| {
            seen.push(failures);
            Duration::from_secs(2)
        }));
        assert!(
            outbox.due(t0 + Duration::from_secs(1)).is_empty(),
            "b waits behind a"
        );
        assert_eq!(outbox.next_deadline(), Some(t0 + Duration::from_secs(2)));
        assert_eq!(ids(&outbox.due(t0 + Duration::from_secs(2))), ["a"]);
        outbox.retry_later(&c, "a", t0, |failures| {
            seen.push(failures);
            Duration::ZERO
        });
        assert_eq!(seen, [0, 1], "failures are counted for the backoff");
        assert!(!outbox.retry_later(&c, "zzz", t0, |_| Duration::ZERO));
    }

    #[test]
    fn no_ack_in_time_or_a_reconnect_resends_the_same_entry() {
        let dir = tempfile::tempdir().unwrap();
        let c = Uuid::now_v7();
        let mut outbox = outbox(dir.path());
        outbox.push(message(c, "a")).unwrap();
        let t0 = Instant::now();
        assert_eq!(ids(&outbox.due(t0)), ["a"]);
        assert_eq!(outbox.next_deadline(), Some(t0 + Duration::from_secs(10)));
        assert!(outbox.due(t0 + Duration::from_secs(9)).is_empty());
        assert_eq!(ids(&outbox.due(t0 + Duration::from_secs(10))), ["a"]);
        outbox.disconnected();
        assert_eq!(ids(&outbox.due(t0 + Duration::from_secs(11))), ["a"]);
    }

    #[test]
    fn entries_outlive_the_outbox() {
        let dir = tempfile::tempdir().unwrap();
        let c = Uuid::now_v7();
        {
            let mut outbox = outbox(dir.path());
            outbox.push(message(c, "a")).unwrap();
            outbox.push(message(c, "b")).unwrap();
            outbox.due(Instant::now());
        }
        let mut outbox = outbox(dir.path());
        assert_eq!(outbox.len(), 2);
        assert_eq!(ids(&outbox.due(Instant::now())), ["a"]);
    }
}
