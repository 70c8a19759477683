//! Consistent-hash placement of conversations and users on active nodes.
//!
//! Placement must be identical in every process (routers route by it, nodes
//! check ownership by it), so it depends only on the set of node ids and the
//! number of virtual nodes: `hashring` with its SipHash-2-4 (zero key)
//! hasher over explicit byte strings, never on `std`'s per-process hasher or
//! on the order nodes were learned in.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use hashring::HashRing;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use turbochat_protocol::ids::ConversationId;

/// Virtual nodes per node unless configured otherwise: enough that each of
/// 3-10 nodes gets within a few percent of its fair share.
pub const DEFAULT_VNODES: usize = 256;

/// A node as routers and peers need to know it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Unique, stable node id (`node.id` in its config).
    pub id: String,
    /// Its gRPC link endpoint, e.g. `http://127.0.0.1:7101`.
    pub grpc: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct VNode {
    node: usize,
    key: Vec<u8>,
}

impl Hash for VNode {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write(&self.key);
    }
}

/// A point key with an explicit byte encoding (see module docs).
struct Key<'a>(&'a [u8]);

impl Hash for Key<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write(self.0);
    }
}

/// An immutable ring over a set of nodes. Build a new one when the set changes.
#[derive(Clone)]
pub struct Ring {
    nodes: Vec<NodeInfo>,
    ring: HashRing<VNode>,
    vnodes: usize,
}

impl std::fmt::Debug for Ring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring")
            .field("nodes", &self.nodes)
            .field("vnodes", &self.vnodes)
            .finish()
    }
}

impl Ring {
    /// A ring over `nodes` (duplicates by id collapse to one) with `vnodes`
    /// virtual nodes each. The order of `nodes` does not matter.
    pub fn new(nodes: impl IntoIterator<Item = NodeInfo>, vnodes: usize) -> Self {
        let by_id: BTreeMap<String, NodeInfo> =
            nodes.into_iter().map(|n| (n.id.clone(), n)).collect();
        let nodes: Vec<NodeInfo> = by_id.into_values().collect();
        let vnodes = vnodes.max(1);
        let mut ring = HashRing::new();
        let mut points = Vec::with_capacity(nodes.len() * vnodes);
        for (index, node) in nodes.iter().enumerate() {
            for replica in 0..vnodes {
                points.push(VNode {
                    node: index,
                    key: format!("{}#{replica}", node.id).into_bytes(),
                });
            }
        }
        ring.batch_add(points);
        Ring {
            nodes,
            ring,
            vnodes,
        }
    }

    /// An empty ring: nothing is placed until a node is active.
    pub fn empty() -> Self {
        Ring::new([], DEFAULT_VNODES)
    }

    /// The nodes, sorted by id.
    pub fn nodes(&self) -> &[NodeInfo] {
        &self.nodes
    }

    /// Whether no node is active.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The node that owns a conversation.
    pub fn owner_of(&self, conversation: &ConversationId) -> Option<&NodeInfo> {
        let mut key = *b"conv:________________";
        key[5..].copy_from_slice(conversation.as_bytes());
        self.place(&key)
    }

    /// The node that is home to a user: it tracks the user's live sessions
    /// and routes user-level events.
    pub fn home_of(&self, user: &str) -> Option<&NodeInfo> {
        let mut key = Vec::with_capacity(user.len() + 5);
        key.extend_from_slice(b"user:");
        key.extend_from_slice(user.as_bytes());
        self.place(&key)
    }

    /// Looks a node up by id.
    pub fn node(&self, id: &str) -> Option<&NodeInfo> {
        self.nodes
            .binary_search_by(|n| n.id.as_str().cmp(id))
            .ok()
            .map(|i| &self.nodes[i])
    }

    fn place(&self, key: &[u8]) -> Option<&NodeInfo> {
        self.ring.get(&Key(key)).map(|v| &self.nodes[v.node])
    }
}

/// The current ring, shared by every task that routes: readers get the
/// latest `Arc<Ring>` cheaply and can wait for changes.
#[derive(Clone)]
pub struct RingView {
    tx: Arc<watch::Sender<Arc<Ring>>>,
}

impl RingView {
    /// A view starting at `ring`.
    pub fn new(ring: Ring) -> Self {
        let (tx, _) = watch::channel(Arc::new(ring));
        RingView { tx: Arc::new(tx) }
    }

    /// The current ring.
    pub fn current(&self) -> Arc<Ring> {
        self.tx.borrow().clone()
    }

    /// Replaces the ring; subscribers wake up.
    pub fn publish(&self, ring: Ring) {
        self.tx.send_replace(Arc::new(ring));
    }

    /// A receiver that sees every later ring.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Ring>> {
        self.tx.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn node(id: &str) -> NodeInfo {
        NodeInfo {
            id: id.into(),
            grpc: format!("http://{id}"),
        }
    }

    #[test]
    fn placement_ignores_order() {
        let a = Ring::new([node("n1"), node("n2"), node("n3")], 64);
        let b = Ring::new([node("n3"), node("n1"), node("n2")], 64);
        for i in 0..1000u128 {
            let c = Uuid::from_u128(i * 7919);
            assert_eq!(a.owner_of(&c), b.owner_of(&c));
        }
        assert_eq!(a.home_of("alice"), b.home_of("alice"));
    }

    #[test]
    fn placement_is_pinned() {
        // Guards against a hasher change silently moving every conversation.
        let ring = Ring::new([node("n1"), node("n2"), node("n3")], DEFAULT_VNODES);
        let owners: Vec<&str> = (0..6u128)
            .map(|i| ring.owner_of(&Uuid::from_u128(i)).unwrap().id.as_str())
            .collect();
        assert_eq!(owners, PINNED_OWNERS);
    }

    const PINNED_OWNERS: [&str; 6] = ["n3", "n2", "n2", "n2", "n3", "n2"];

    #[test]
    fn a_fourth_node_moves_about_a_quarter() {
        let three = Ring::new([node("n1"), node("n2"), node("n3")], DEFAULT_VNODES);
        let four = Ring::new(
            [node("n1"), node("n2"), node("n3"), node("n4")],
            DEFAULT_VNODES,
        );
        let total = 20_000u128;
        let mut moved = 0;
        for i in 0..total {
            let c = Uuid::from_u128(i.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            let before = three.owner_of(&c).unwrap();
            let after = four.owner_of(&c).unwrap();
            if before != after {
                assert_eq!(after.id, "n4", "moves only go to the new node");
                moved += 1;
            }
        }
        let share = moved as f64 / total as f64;
        assert!((0.18..0.32).contains(&share), "moved {share}");
    }

    #[test]
    fn empty_ring_places_nothing() {
        assert!(Ring::empty().owner_of(&Uuid::nil()).is_none());
    }
}
