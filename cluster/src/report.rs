//! `GET /cluster`: what this process believes about the cluster.

use serde::Serialize;
use uuid::Uuid;

use crate::membership::{Member, Membership};
use crate::ring::Ring;

/// Keys sampled to estimate each node's share of the ring.
const SAMPLES: u128 = 4096;

/// One member as reported.
#[derive(Debug, Clone, Serialize)]
pub struct MemberReport {
    /// The member.
    #[serde(flatten)]
    pub member: Member,
    /// Share of conversations it owns (nodes on the ring), 0..1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ring_share: Option<f64>,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterReport {
    /// Whether membership comes from gossip (else static configuration).
    pub gossip: bool,
    /// Id of the reporting process, when gossiping.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub me: Option<String>,
    /// Members believed alive (with gossip), or the static node list.
    pub members: Vec<MemberReport>,
    /// Node ids on the ring, sorted.
    pub ring: Vec<String>,
    /// A digest of who owns each of 4096 sample conversations: equal
    /// digests in two processes mean they place conversations identically.
    pub placement_digest: String,
}

impl ClusterReport {
    /// Builds the report from the membership (if any) and the current ring.
    pub fn new(membership: Option<&Membership>, ring: &Ring) -> Self {
        let shares = ring_shares(ring);
        let share_of = |id: &str| shares.iter().find(|(n, _)| n == id).map(|(_, s)| *s);
        let members = match membership {
            Some(m) => m
                .view()
                .members
                .into_values()
                .map(|member| MemberReport {
                    ring_share: share_of(&member.id),
                    member,
                })
                .collect(),
            None => ring
                .nodes()
                .iter()
                .map(|n| MemberReport {
                    ring_share: share_of(&n.id),
                    member: Member {
                        id: n.id.clone(),
                        role: crate::Role::Node,
                        gossip: ([0, 0, 0, 0], 0).into(),
                        grpc: Some(n.grpc.clone()),
                        http: None,
                        state: crate::MemberState::Active,
                        generation: 0,
                    },
                })
                .collect(),
        };
        ClusterReport {
            gossip: membership.is_some(),
            me: membership.map(|m| m.view().me.id),
            members,
            ring: ring.nodes().iter().map(|n| n.id.clone()).collect(),
            placement_digest: placement_digest(ring),
        }
    }
}

fn sample(i: u128) -> Uuid {
    Uuid::from_u128(i.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835))
}

/// FNV-1a over the owner ids of the sample conversations, in order.
pub fn placement_digest(ring: &Ring) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for i in 0..SAMPLES {
        let owner = ring
            .owner_of(&sample(i))
            .map(|n| n.id.as_str())
            .unwrap_or("-");
        for byte in owner.bytes().chain(std::iter::once(0)) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    format!("{hash:016x}")
}

/// Each node's share of the ring, estimated over evenly spread keys.
pub fn ring_shares(ring: &Ring) -> Vec<(String, f64)> {
    let mut counts: Vec<(String, u64)> = ring.nodes().iter().map(|n| (n.id.clone(), 0)).collect();
    for i in 0..SAMPLES {
        let key = sample(i);
        if let Some(owner) = ring.owner_of(&key) {
            if let Some(entry) = counts.iter_mut().find(|(id, _)| *id == owner.id) {
                entry.1 += 1;
            }
        }
    }
    counts
        .into_iter()
        .map(|(id, c)| (id, c as f64 / SAMPLES as f64))
        .collect()
}
