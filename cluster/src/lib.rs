//! The cluster view shared by nodes and routers.
//!
//! [`ring::Ring`] places conversations and users on the active nodes by
//! consistent hashing; [`ring::RingView`] publishes the current ring to every
//! task that routes by it. Membership (SWIM gossip) feeds the view; until it
//! lands the view is built from the static node list in configuration.

pub mod bus;
pub mod membership;
pub mod report;
pub mod ring;
pub mod seeds;

pub use bus::BusConfig;
pub use membership::{
    feed_ring, ClusterSection, ClusterView, GossipConfig, Member, MemberState, Membership, Role,
};
pub use ring::{NodeInfo, Ring, RingView};
pub use seeds::Seed;
