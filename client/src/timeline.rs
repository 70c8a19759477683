//! One subscribed conversation as this client sees it: the last seq handed
//! to the app, and the messages that arrived ahead of a gap.
//!
//! The server sends a session each message once and in order, but a
//! reconnect, a re-subscribe or an owner hand-over can repeat or skip:
//! duplicates (seq at or below the cursor) are dropped, and messages after a
//! gap wait here until the gap is filled (by a re-subscribe's replay, or by
//! `GET /history` when the replay was capped).

use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use std::time::Instant;

use turbochat_protocol::http::MessageView;
use turbochat_protocol::Seq;

/// What a message did to the timeline.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Outcome {
    /// Messages to hand to the app now, in seq order.
    pub deliver: Vec<MessageView>,
    /// It was a repeat of one already delivered (or buffered).
    pub duplicate: bool,
    /// Messages are missing before the buffered ones.
    pub gap: bool,
}

/// A subscribed conversation.
#[derive(Debug)]
pub(crate) struct Timeline {
    /// Highest seq delivered to the app (the `since` of the next resume).
    /// `None` until known: subscribed "from now" and no `subscribed` yet.
    last: Option<Seq>,
    /// Messages above `last + 1`, waiting for the gap before them.
    ahead: BTreeMap<Seq, MessageView>,
    /// The server's last seq in its latest `subscribed`.
    server_last: Seq,
    /// When the pending (re)subscribe was sent; `None` when live.
    pub requested_at: Option<Instant>,
    /// Not before this instant may a failed subscribe be retried.
    pub retry_at: Option<Instant>,
    /// A history fetch for a gap is running.
    pub filling: bool,
}

impl Timeline {
    /// A timeline that resumes after `since` (`None`: from now on).
    pub(crate) fn new(since: Option<Seq>) -> Self {
        Timeline {
            last: since,
            ahead: BTreeMap::new(),
            server_last: 0,
            requested_at: None,
            retry_at: None,
            filling: false,
        }
    }

    /// The cursor to subscribe or resume with.
    pub(crate) fn since(&self) -> Option<Seq> {
        self.last
    }

    /// Takes a message from the server.
    pub(crate) fn on_message(&mut self, message: MessageView) -> Outcome {
        let mut outcome = Outcome::default();
        let seq = message.seq;
        match self.last {
            Some(last) if seq <= last => {
                outcome.duplicate = true;
                return outcome;
            }
            Some(last) if seq > last + 1 => {
                outcome.duplicate = self.ahead.insert(seq, message).is_some();
                outcome.gap = true;
                return outcome;
            }
            _ => {}
        }
        self.last = Some(seq);
        outcome.deliver.push(message);
        self.drain(&mut outcome.deliver);
        outcome.gap = !self.ahead.is_empty();
        outcome
    }

    /// Hands over every buffered message that now follows `last`.
    fn drain(&mut self, deliver: &mut Vec<MessageView>) {
        while let Some(entry) = self.ahead.first_entry() {
            let last = self.last.unwrap_or(0);
            if *entry.key() <= last {
                entry.remove();
            } else if *entry.key() == last + 1 {
                let message = entry.remove();
                self.last = Some(message.seq);
                deliver.push(message);
            } else {
                break;
            }
        }
    }

    /// The server's `subscribed`: the replay is complete up to `last_seq`.
    /// Returns buffered messages it made deliverable (when the cursor was
    /// unknown, it becomes `last_seq`).
    pub(crate) fn on_subscribed(&mut self, last_seq: Seq) -> Vec<MessageView> {
        self.requested_at = None;
        self.retry_at = None;
        self.server_last = self.server_last.max(last_seq);
        if self.last.is_none() {
            self.last = Some(last_seq);
        }
        let mut deliver = Vec::new();
        self.drain(&mut deliver);
        deliver
    }

    /// Seqs known to exist but neither delivered nor buffered, right after
    /// the cursor. Only meaningful once the subscription is live.
    pub(crate) fn missing(&self) -> Option<RangeInclusive<Seq>> {
        let from = self.last? + 1;
        let to = match self.ahead.first_key_value() {
            Some((first, _)) => first - 1,
            None => self.server_last,
        };
        (from <= to).then_some(from..=to)
    }

    /// Gives up on `range` (the server has no such messages any more):
    /// moves the cursor past it and returns what became deliverable.
    pub(crate) fn skip(&mut self, range: RangeInclusive<Seq>) -> Vec<MessageView> {
        if self.last.is_some_and(|last| last < *range.end()) {
            self.last = Some(*range.end());
        }
        let mut deliver = Vec::new();
        self.drain(&mut deliver);
        deliver
    }

    /// The connection dropped: buffered messages will be replayed by the
    /// resume, and no request is pending on a dead socket.
    pub(crate) fn disconnected(&mut self) {
        self.ahead.clear();
        self.requested_at = None;
        self.retry_at = None;
        self.filling = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use turbochat_protocol::MessageKind;
    use uuid::Uuid;

    fn m(seq: Seq) -> MessageView {
        MessageView {
            conversation_id: Uuid::nil(),
            seq,
            message_id: Uuid::nil(),
            sender_id: "alice".into(),
            client_msg_id: format!("c{seq}"),
            kind: MessageKind::Text,
            body: format!("m{seq}"),
            media_key: None,
            created_at: 0,
        }
    }

    fn seqs(messages: &[MessageView]) -> Vec<Seq> {
        messages.iter().map(|m| m.seq).collect()
    }

    #[test]
    fn in_order_messages_pass_and_repeats_are_dropped() {
        let mut t = Timeline::new(Some(0));
        assert_eq!(seqs(&t.on_message(m(1)).deliver), [1]);
        assert_eq!(seqs(&t.on_message(m(2)).deliver), [2]);
        let again = t.on_message(m(1));
        assert!(again.duplicate && again.deliver.is_empty());
        assert!(t.on_message(m(2)).duplicate);
        assert_eq!(t.since(), Some(2));
    }

    #[test]
    fn messages_after_a_gap_wait_for_it() {
        let mut t = Timeline::new(Some(3));
        let early = t.on_message(m(6));
        assert!(early.gap && early.deliver.is_empty());
        assert!(t.on_message(m(6)).duplicate, "buffered twice is a repeat");
        assert!(t.on_message(m(5)).gap);
        assert_eq!(t.missing(), Some(4..=4));
        let filled = t.on_message(m(4));
        assert_eq!(seqs(&filled.deliver), [4, 5, 6]);
        assert!(!filled.gap);
        assert_eq!(t.since(), Some(6));
        assert_eq!(t.missing(), None);
    }

    #[test]
    fn subscribed_sets_an_unknown_cursor_and_reports_what_is_missing() {
        let mut t = Timeline::new(None);
        assert_eq!(t.since(), None);
        assert!(t.on_subscribed(7).is_empty());
        assert_eq!(t.since(), Some(7));
        assert_eq!(seqs(&t.on_message(m(8)).deliver), [8]);

        // A capped replay: subscribed says 20, only 15..=20 came.
        let mut t = Timeline::new(Some(2));
        for seq in 15..=20 {
            assert!(t.on_message(m(seq)).gap);
        }
        assert!(t.on_subscribed(20).is_empty());
        assert_eq!(t.missing(), Some(3..=14));
        let mut delivered = Vec::new();
        for seq in 3..=14 {
            delivered.extend(t.on_message(m(seq)).deliver);
        }
        assert_eq!(seqs(&delivered), (3..=20).collect::<Vec<_>>());

        // Nothing buffered, but the server is ahead: that is missing too.
        let mut t = Timeline::new(Some(1));
        t.on_subscribed(4);
        assert_eq!(t.missing(), Some(2..=4));
    }

    #[test]
    fn skipping_a_lost_range_releases_what_follows() {
        let mut t = Timeline::new(Some(1));
        t.on_message(m(5));
        t.on_subscribed(5);
        assert_eq!(t.missing(), Some(2..=4));
        assert_eq!(seqs(&t.skip(2..=4)), [5]);
        assert_eq!(t.since(), Some(5));
    }

    #[test]
    fn a_disconnect_drops_the_buffer_but_keeps_the_cursor() {
        let mut t = Timeline::new(Some(1));
        t.on_message(m(2));
        t.on_message(m(4));
        t.disconnected();
        assert_eq!(t.since(), Some(2));
        assert_eq!(seqs(&t.on_message(m(3)).deliver), [3]);
    }
}
