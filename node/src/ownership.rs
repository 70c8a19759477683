//! Which conversations this node owns right now.
//!
//! With gossip on, the ring of active nodes decides; a frame for a
//! conversation placed elsewhere is answered with a redirect. With gossip
//! off, the routers' static node list decides and the node owns whatever it
//! is sent.

use turbochat_cluster::RingView;
use turbochat_protocol::ids::ConversationId;

/// The node's view of its own share.
#[derive(Clone)]
pub struct Ownership {
    me: String,
    ring: Option<RingView>,
}

impl Ownership {
    /// Owns everything (static routing).
    pub fn everything(me: String) -> Self {
        Ownership { me, ring: None }
    }

    /// Owns what `ring` places on `me`.
    pub fn by_ring(me: String, ring: RingView) -> Self {
        Ownership {
            me,
            ring: Some(ring),
        }
    }

    /// Whether this node owns `conversation` now.
    pub fn owns(&self, conversation: &ConversationId) -> bool {
        match &self.ring {
            None => true,
            Some(ring) => ring
                .current()
                .owner_of(conversation)
                .is_some_and(|owner| owner.id == self.me),
        }
    }
}
