//! The hot state of one conversation, loaded from the store when its owner
//! task starts: participants, the committed seq, the recent tail, the
//! subscribers per router link, queued sends, read cursors not yet written,
//! typists.

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;
use tokio::time::Instant;
use turbochat_protocol::ids::{Seq, UserId};
use turbochat_store::{ConversationState, Participant};

use crate::fanout::RouterLink;
use crate::owner::SendCommand;

/// The sessions of one router link subscribed to this conversation.
pub(super) struct LinkSubscribers {
    pub(super) link: RouterLink,
    pub(super) sessions: HashMap<u64, UserId>,
}

/// Hot state, loaded from the store when the task starts.
pub(super) struct State {
    pub(super) participants: HashMap<UserId, Participant>,
    pub(super) committed: Seq,
    /// When `committed` was last read from the store (the load, a
    /// catch-up): taken before the read, so never later than it.
    pub(super) read_at: Instant,
    /// The newest committed messages as sent (seq, created_at, frame), for
    /// replays from memory.
    pub(super) recent: VecDeque<(Seq, i64, Bytes)>,
    pub(super) links: HashMap<u64, LinkSubscribers>,
    pub(super) queued: Vec<SendCommand>,
    /// Whether a batch of ours is being written (its seqs are then in the
    /// store before we know it: a catch-up must not run meanwhile).
    pub(super) writing: bool,
    /// The sends of the batch in flight, answered when it is.
    pub(super) inflight_sends: Option<Vec<SendCommand>>,
    pub(super) reloads: u32,
    /// How many of the next batches carry one send each: the store refused
    /// a batch, and one message's fault must not fail the others with it.
    pub(super) isolating: usize,
    /// Read cursors moved in memory but not yet written (coalesced).
    pub(super) unflushed_reads: HashMap<UserId, Seq>,
    /// When the unflushed read cursors are written.
    pub(super) flush_at: Option<Instant>,
    /// Who is typing: until when, and when we last told the others.
    pub(super) typing: HashMap<UserId, Typist>,
}

/// One participant's typing indicator.
pub(super) struct Typist {
    pub(super) expires: Instant,
    pub(super) announced: Instant,
}

impl State {
    /// `loaded` as read by a store query that started at `read_at`.
    pub(super) fn from_store(loaded: ConversationState, read_at: Instant) -> Self {
        State {
            participants: loaded
                .participants
                .into_iter()
                .map(|p| (p.user_id.clone(), p))
                .collect(),
            committed: loaded.last_seq,
            read_at,
            recent: VecDeque::new(),
            links: HashMap::new(),
            queued: Vec::new(),
            writing: false,
            inflight_sends: None,
            reloads: 0,
            isolating: 0,
            unflushed_reads: HashMap::new(),
            flush_at: None,
            typing: HashMap::new(),
        }
    }

    pub(super) fn idle(&self) -> bool {
        self.links.is_empty() && self.queued.is_empty() && self.unflushed_reads.is_empty()
    }

    /// The next timer: read flush or a typing indicator expiring.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        let typing = self.typing.values().map(|t| t.expires).min();
        match (self.flush_at, typing) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Users with a session subscribed here (the cluster's knowledge of who
    /// is looking at this conversation right now).
    pub(super) fn watching(&self, user: &str) -> bool {
        self.links
            .values()
            .any(|l| l.link.is_connected() && l.sessions.values().any(|u| u == user))
    }
}
