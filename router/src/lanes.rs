//! A session's sends in flight, one lane per conversation: what keeps one
//! session's sends to one conversation stored in the order they were sent,
//! and every send answered, across redirects, ring changes and lost nodes.
//!
//! Every send waits in its lane from the moment the router takes it until
//! the owner answers it (`ack` or `error`). A lane forwards its sends to
//! one node at a time: while any of them is at a node that is not the
//! conversation's owner any more but is still alive, nothing more goes out
//! (that node will either commit them or hand them back as redirects, in
//! order). A send handed back, or at a node that died or whose link broke,
//! goes out again, in lane order, once the owner's link is up. The owner
//! dedupes by `client_msg_id`, so a send that had been committed is answered
//! with its seq, not stored twice. A send that finds no owner within the
//! router's patience is answered `unavailable`, and so is every later
//! waiting send of its lane (storing them would reorder the lane).
//!
//! This module is the bookkeeping only; `forward.rs` moves the frames.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use turbochat_protocol::ids::ConversationId;
use turbochat_protocol::link;

pub use crate::link::Path;

/// A client's second copy of a send that went out this long ago goes out
/// again.
const RESEND_AFTER: Duration = Duration::from_secs(2);

/// What a lane needs to know of the cluster, as this router sees it now.
pub trait Route {
    /// The node the ring names as the conversation's owner.
    fn owner(&self, conversation: &ConversationId) -> Option<String>;
    /// How frames sent to `node` now reach it, if they do: it is on the
    /// ring, and its link is up or the fallback bus is there.
    fn path(&self, node: &str) -> Option<Path>;
}

/// Where one send stands.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Place {
    /// At the router, to go out once the lane may send (not before the
    /// instant: a redirect from a node our ring still names as owner waits
    /// a little for the views to converge).
    Waiting { not_before: Instant },
    /// Forwarded to this node, this way, at this instant; its answer is
    /// awaited.
    Sent {
        node: String,
        path: Path,
        at: Instant,
    },
}

#[derive(Debug)]
struct Entry {
    send: link::Send,
    place: Place,
    /// When it last started waiting at the router.
    waiting_since: Instant,
    redirects: u32,
}

/// Why a send was not taken into its lane.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LaneError {
    /// The session has as many sends in flight as it may have.
    #[error("too many sends in flight on this session")]
    Full,
}

/// What became of a send its node handed back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redirected {
    /// It waits in its lane to go out again.
    Requeued,
    /// Handed back too often: it left its lane and must be answered
    /// `unavailable`.
    GaveUp,
    /// It was no longer in its lane (answered meanwhile): nothing to do.
    Unknown,
}

/// One session's lanes.
#[derive(Debug, Default)]
pub struct Lanes {
    lanes: HashMap<ConversationId, VecDeque<Entry>>,
    in_flight: usize,
}

impl Lanes {
    /// Sends in flight over every lane.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Whether sends of this lane wait at the router.
    pub fn waiting(&self, conversation: &ConversationId) -> bool {
        self.lanes.get(conversation).is_some_and(has_waiting)
    }

    /// The conversations with sends in flight.
    pub fn conversations(&self) -> Vec<ConversationId> {
        self.lanes.keys().copied().collect()
    }

    /// Takes a send into its lane, waiting to go out. At most `limit`
    /// sends are in flight per session. A send already in its lane (same
    /// `client_msg_id`) is not taken twice.
    pub fn push(
        &mut self,
        conversation: ConversationId,
        send: link::Send,
        now: Instant,
        limit: usize,
    ) -> Result<(), LaneError> {
        let lane = self.lanes.entry(conversation).or_default();
        if lane
            .iter()
            .any(|e| e.send.client_msg_id == send.client_msg_id)
        {
            // The client sent it again (its ack timeout, a retry after an
            // error for an earlier send): the copy in flight is answered.
            // If it went out a while ago, it goes again (the owner dedupes):
            // a copy lost on the bus must not stall the lane.
            if let Some(entry) = lane.iter_mut().find(|e| {
                e.send.client_msg_id == send.client_msg_id
                    && matches!(e.place, Place::Sent { at, .. } if now.duration_since(at) >= RESEND_AFTER)
            }) {
                entry.place = Place::Waiting { not_before: now };
                entry.waiting_since = now;
            }
            return Ok(());
        }
        if self.in_flight >= limit {
            if lane.is_empty() {
                self.lanes.remove(&conversation);
            }
            return Err(LaneError::Full);
        }
        lane.push_back(Entry {
            send,
            place: Place::Waiting { not_before: now },
            waiting_since: now,
            redirects: 0,
        });
        self.in_flight += 1;
        Ok(())
    }

    /// Takes out the send `client_msg_id` answers (an ack or an error from
    /// its owner). Returns false if it was not in flight: the answer is a
    /// duplicate (the send went out twice and both copies were answered).
    pub fn answered(&mut self, conversation: &ConversationId, client_msg_id: &str) -> bool {
        let Some(lane) = self.lanes.get_mut(conversation) else {
            return false;
        };
        let Some(at) = lane
            .iter()
            .position(|e| e.send.client_msg_id == client_msg_id)
        else {
            return false;
        };
        lane.remove(at);
        self.in_flight -= 1;
        if lane.is_empty() {
            self.lanes.remove(conversation);
        }
        true
    }

    /// A node handed `client_msg_id` back (it does not own the conversation).
    /// It waits to go out again: at once if our ring names another owner,
    /// after `pause` if it names `from` still. After `max_redirects` it
    /// gives up.
    #[allow(clippy::too_many_arguments)]
    pub fn redirected(
        &mut self,
        conversation: &ConversationId,
        client_msg_id: &str,
        from: &str,
        route: &dyn Route,
        now: Instant,
        pause: Duration,
        max_redirects: u32,
    ) -> Redirected {
        let Some(lane) = self.lanes.get_mut(conversation) else {
            return Redirected::Unknown;
        };
        let Some(at) = lane
            .iter()
            .position(|e| e.send.client_msg_id == client_msg_id)
        else {
            return Redirected::Unknown;
        };
        let entry = &mut lane[at];
        entry.redirects += 1;
        if entry.redirects > max_redirects {
            lane.remove(at);
            self.in_flight -= 1;
            if lane.is_empty() {
                self.lanes.remove(conversation);
            }
            return Redirected::GaveUp;
        }
        let behind = route.owner(conversation).is_none_or(|owner| owner == from);
        let not_before = if behind { now + pause } else { now };
        if !matches!(entry.place, Place::Waiting { .. }) {
            entry.waiting_since = now;
        }
        entry.place = Place::Waiting { not_before };
        Redirected::Requeued
    }

    /// Every send forwarded to `node` waits again (its link broke, or it
    /// left the ring): it goes out again when the lane may send. Returns
    /// the conversations whose lanes now wait.
    pub fn node_lost(&mut self, node: &str, now: Instant) -> Vec<ConversationId> {
        let mut touched = Vec::new();
        for (conversation, lane) in &mut self.lanes {
            let mut any = false;
            for entry in lane.iter_mut() {
                if matches!(&entry.place, Place::Sent { node: at, .. } if at == node) {
                    entry.place = Place::Waiting { not_before: now };
                    entry.waiting_since = now;
                    any = true;
                }
            }
            if any {
                touched.push(*conversation);
            }
        }
        touched
    }

    /// Decides what of one lane goes out now, and to which node; marks it
    /// sent there. Nothing goes out while any of the lane's sends is at a
    /// usable node other than the owner (its answer decides the order), or
    /// while the owner is not usable. A send at a node that is not usable
    /// any more waits again. Returns the node, the sends in lane order, and
    /// whether the lane still has sends waiting.
    pub fn plan(&mut self, conversation: &ConversationId, route: &dyn Route, now: Instant) -> Plan {
        let Some(lane) = self.lanes.get_mut(conversation) else {
            return Plan::default();
        };
        let owner = route.owner(conversation);
        let owner_path = owner.as_deref().and_then(|o| route.path(o));
        let mut blocked = false;
        for entry in lane.iter_mut() {
            if let Place::Sent { node, path, .. } = &entry.place {
                if owner.as_deref() == Some(node.as_str()) && owner_path == Some(*path) {
                    continue;
                }
                if route.path(node).is_some() {
                    blocked = true;
                } else {
                    entry.place = Place::Waiting { not_before: now };
                    entry.waiting_since = now;
                }
            }
        }
        let (Some(owner), Some(path), false) = (owner, owner_path, blocked) else {
            return Plan {
                node: None,
                sends: Vec::new(),
                waiting: has_waiting(lane),
            };
        };
        let mut sends = Vec::new();
        for entry in lane.iter_mut() {
            match entry.place {
                Place::Sent { .. } => continue,
                Place::Waiting { not_before } if not_before > now => break,
                Place::Waiting { .. } => {
                    entry.place = Place::Sent {
                        node: owner.clone(),
                        path,
                        at: now,
                    };
                    sends.push(entry.send.clone());
                }
            }
        }
        Plan {
            waiting: has_waiting(lane),
            node: Some(owner),
            sends,
        }
    }

    /// A send `plan` marked sent could not be queued on its link after all
    /// (it went down meanwhile): it and every later send of the lane at
    /// that node wait again.
    pub fn unsent(&mut self, conversation: &ConversationId, client_msg_id: &str, now: Instant) {
        let Some(lane) = self.lanes.get_mut(conversation) else {
            return;
        };
        let Some(at) = lane
            .iter()
            .position(|e| e.send.client_msg_id == client_msg_id)
        else {
            return;
        };
        for entry in lane.iter_mut().skip(at) {
            if matches!(entry.place, Place::Sent { .. }) {
                entry.place = Place::Waiting { not_before: now };
                entry.waiting_since = now;
            }
        }
    }

    /// Takes out the sends that have waited at the router longer than
    /// `patience`, with every later waiting send of their lanes; they must
    /// be answered `unavailable`.
    pub fn expire(&mut self, now: Instant, patience: Duration) -> Vec<(ConversationId, String)> {
        let mut expired = Vec::new();
        self.lanes.retain(|conversation, lane| {
            let first = lane.iter().position(|e| {
                matches!(e.place, Place::Waiting { .. })
                    && now.duration_since(e.waiting_since) >= patience
            });
            if let Some(first) = first {
                let mut kept = VecDeque::with_capacity(lane.len());
                for (i, entry) in lane.drain(..).enumerate() {
                    if i >= first && matches!(entry.place, Place::Waiting { .. }) {
                        expired.push((*conversation, entry.send.client_msg_id));
                    } else {
                        kept.push_back(entry);
                    }
                }
                *lane = kept;
            }
            !lane.is_empty()
        });
        self.in_flight -= expired.len();
        expired
    }
}

fn has_waiting(lane: &VecDeque<Entry>) -> bool {
    lane.iter()
        .any(|e| matches!(e.place, Place::Waiting { .. }))
}

/// What [`Lanes::plan`] decided.
#[derive(Debug, Default)]
pub struct Plan {
    /// Where `sends` go (the owner), if anything may go out.
    pub node: Option<String>,
    /// The sends to forward now, in lane order.
    pub sends: Vec<link::Send>,
    /// Whether sends still wait at the router afterwards.
    pub waiting: bool,
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::collections::HashSet;

    use super::*;

    const PAUSE: Duration = Duration::from_millis(100);

    #[derive(Default)]
    struct View {
        owner: RefCell<Option<String>>,
        usable: RefCell<HashSet<String>>,
        bus: RefCell<bool>,
    }

    impl View {
        fn new(owner: &str, usable: &[&str]) -> View {
            let view = View::default();
            view.set(owner, usable);
            view
        }
        fn set(&self, owner: &str, usable: &[&str]) {
            *self.owner.borrow_mut() = Some(owner.to_string());
            *self.usable.borrow_mut() = usable.iter().map(|s| s.to_string()).collect();
        }
    }

    impl Route for View {
        fn owner(&self, _: &ConversationId) -> Option<String> {
            self.owner.borrow().clone()
        }
        fn path(&self, node: &str) -> Option<Path> {
            if self.usable.borrow().contains(node) {
                Some(Path::Link)
            } else if *self.bus.borrow() {
                Some(Path::Bus)
            } else {
                None
            }
        }
    }

    fn send(id: &str) -> link::Send {
        link::Send {
            client_msg_id: id.into(),
            ..Default::default()
        }
    }

    fn ids(plan: &Plan) -> Vec<&str> {
        plan.sends
            .iter()
            .map(|s| s.client_msg_id.as_str())
            .collect()
    }

    fn lanes_with(conversation: ConversationId, names: &[&str], now: Instant) -> Lanes {
        let mut lanes = Lanes::default();
        for name in names {
            lanes.push(conversation, send(name), now, 100).unwrap();
        }
        lanes
    }

    #[test]
    fn sends_go_out_in_order_to_the_owner_and_pipeline() {
        let c = ConversationId::new_v4();
        let now = Instant::now();
        let view = View::new("n1", &["n1"]);
        let mut lanes = lanes_with(c, &["a", "b"], now);
        let plan = lanes.plan(&c, &view, now);
        assert_eq!(plan.node.as_deref(), Some("n1"));
        assert_eq!(ids(&plan), ["a", "b"]);
        assert!(!plan.waiting);
        // A third goes out while the first two are unanswered.
        lanes.push(c, send("c"), now, 100).unwrap();
        assert_eq!(ids(&lanes.plan(&c, &view, now)), ["c"]);
        assert!(lanes.answered(&c, "a"));
        assert!(!lanes.answered(&c, "a"), "a second answer is a duplicate");
        assert_eq!(lanes.in_flight(), 2);
    }

    #[test]
    fn a_new_send_does_not_overtake_one_handed_back_by_the_old_owner() {
        // The seen inversion: a went to n1, which released the
        // conversation; our ring still named n1, so a waited; b must not
        // go straight to n2 when the ring changes.
        let c = ConversationId::new_v4();
        let now = Instant::now();
        let view = View::new("n1", &["n1", "n2"]);
        let mut lanes = lanes_with(c, &["a"], now);
        assert_eq!(ids(&lanes.plan(&c, &view, now)), ["a"]);
        let r = lanes.redirected(&c, "a", "n1", &view, now, PAUSE, 30);
        assert_eq!(r, Redirected::Requeued);
        lanes.push(c, send("b"), now, 100).unwrap();
        let plan = lanes.plan(&c, &view, now);
        assert!(
            plan.sends.is_empty() && plan.waiting,
            "a waits out the pause; b behind it"
        );
        view.set("n2", &["n1", "n2"]);
        // The ring moved on; after the pause a goes to n2, then b.
        assert!(lanes.plan(&c, &view, now + PAUSE / 2).sends.is_empty());
        let plan = lanes.plan(&c, &view, now + PAUSE);
        assert_eq!(ids(&plan), ["a", "b"]);
        assert_eq!(plan.node.as_deref(), Some("n2"));
    }

    #[test]
    fn nothing_goes_to_the_new_owner_while_the_old_one_holds_a_send() {
        let c = ConversationId::new_v4();
        let now = Instant::now();
        let view = View::new("n1", &["n1", "n2"]);
        let mut lanes = lanes_with(c, &["a"], now);
        lanes.plan(&c, &view, now);
        view.set("n2", &["n1", "n2"]);
        lanes.push(c, send("b"), now, 100).unwrap();
        let plan = lanes.plan(&c, &view, now);
        assert!(plan.sends.is_empty(), "b waits for n1's answer to a");
        assert!(plan.waiting);
        // n1 committed a after all: b may go to n2.
        assert!(lanes.answered(&c, "a"));
        assert_eq!(ids(&lanes.plan(&c, &view, now)), ["b"]);
    }

    #[test]
    fn sends_at_a_lost_node_go_again_in_order_to_the_next_owner() {
        let c = ConversationId::new_v4();
        let now = Instant::now();
        let view = View::new("n1", &["n1", "n2"]);
        let mut lanes = lanes_with(c, &["a", "b", "c"], now);
        lanes.plan(&c, &view, now);
        assert!(lanes.answered(&c, "a"));
        // n1's link breaks: b and c wait; n1 still owns: nothing goes.
        view.set("n1", &["n2"]);
        assert_eq!(lanes.node_lost("n1", now), vec![c]);
        let plan = lanes.plan(&c, &view, now);
        assert!(plan.sends.is_empty() && plan.waiting);
        // n1 is declared down: n2 takes both, in order.
        view.set("n2", &["n2"]);
        assert_eq!(ids(&lanes.plan(&c, &view, now)), ["b", "c"]);
    }

    #[test]
    fn a_node_that_stops_being_usable_has_its_sends_planned_again() {
        // A frozen node: its link stays up until it leaves the ring.
        let c = ConversationId::new_v4();
        let now = Instant::now();
        let view = View::new("n1", &["n1", "n2"]);
        let mut lanes = lanes_with(c, &["a"], now);
        lanes.plan(&c, &view, now);
        view.set("n2", &["n2"]);
        assert_eq!(ids(&lanes.plan(&c, &view, now)), ["a"]);
    }

    #[test]
    fn a_send_waiting_past_patience_is_given_up_with_everything_behind_it() {
        let c = ConversationId::new_v4();
        let now = Instant::now();
        let view = View::new("n1", &[]);
        let mut lanes = lanes_with(c, &["a", "b"], now);
        assert!(lanes.plan(&c, &view, now).waiting);
        assert!(lanes
            .expire(now + Duration::from_secs(1), Duration::from_secs(5))
            .is_empty());
        let later = now + Duration::from_millis(100);
        lanes.push(c, send("c"), later, 100).unwrap();
        let expired = lanes.expire(now + Duration::from_secs(5), Duration::from_secs(5));
        let names: Vec<&str> = expired.iter().map(|(_, id)| id.as_str()).collect();
        assert_eq!(names, ["a", "b", "c"], "c would be stored before a's retry");
        assert_eq!(lanes.in_flight(), 0);
    }

    #[test]
    fn redirects_are_bounded_and_a_session_bounds_its_sends() {
        let c = ConversationId::new_v4();
        let now = Instant::now();
        let view = View::new("n1", &["n1"]);
        let mut lanes = lanes_with(c, &["a"], now);
        for _ in 0..3 {
            lanes.plan(&c, &view, now + PAUSE * 10);
            assert_eq!(
                lanes.redirected(&c, "a", "n1", &view, now, PAUSE, 3),
                Redirected::Requeued
            );
        }
        assert_eq!(
            lanes.redirected(&c, "a", "n1", &view, now, PAUSE, 3),
            Redirected::GaveUp
        );
        assert_eq!(
            lanes.redirected(&c, "a", "n1", &view, now, PAUSE, 3),
            Redirected::Unknown
        );
        lanes.push(c, send("x"), now, 1).unwrap();
        assert_eq!(lanes.push(c, send("y"), now, 1), Err(LaneError::Full));
        // A client's second copy of a send in flight is not a second send.
        lanes.push(c, send("x"), now, 1).unwrap();
        assert_eq!(lanes.in_flight(), 1);
        assert!(lanes.answered(&c, "x"));
        assert!(!lanes.answered(&c, "x"));
    }

    #[test]
    fn sends_go_over_the_bus_while_a_link_is_down_and_keep_their_order_when_it_is_back() {
        let c = ConversationId::new_v4();
        let now = Instant::now();
        let view = View::new("n1", &["n1"]);
        let mut lanes = lanes_with(c, &["a"], now);
        lanes.plan(&c, &view, now);
        // The link breaks; the bus is there: a goes again, over the bus.
        *view.bus.borrow_mut() = true;
        view.set("n1", &[]);
        lanes.node_lost("n1", now);
        assert_eq!(ids(&lanes.plan(&c, &view, now)), ["a"]);
        lanes.push(c, send("b"), now, 100).unwrap();
        assert_eq!(ids(&lanes.plan(&c, &view, now)), ["b"]);
        // The link is back: c waits until what went over the bus is answered.
        view.set("n1", &["n1"]);
        lanes.push(c, send("c"), now, 100).unwrap();
        assert!(lanes.plan(&c, &view, now).sends.is_empty());
        assert!(lanes.answered(&c, "a"));
        assert!(lanes.answered(&c, "b"));
        assert_eq!(ids(&lanes.plan(&c, &view, now)), ["c"]);
        // A client's copy of c sent long after goes out again.
        lanes.push(c, send("c"), now + RESEND_AFTER, 100).unwrap();
        assert_eq!(ids(&lanes.plan(&c, &view, now + RESEND_AFTER)), ["c"]);
        assert_eq!(lanes.in_flight(), 1);
    }

    #[test]
    fn a_send_that_could_not_be_queued_waits_with_those_behind_it() {
        let c = ConversationId::new_v4();
        let now = Instant::now();
        let view = View::new("n1", &["n1"]);
        let mut lanes = lanes_with(c, &["a", "b"], now);
        lanes.plan(&c, &view, now);
        lanes.unsent(&c, "a", now);
        assert_eq!(ids(&lanes.plan(&c, &view, now)), ["a", "b"]);
    }
}
