//! Users' live sessions, kept by each user's home node (the node the ring
//! places the user on). Routers register every session with its user's home
//! node; user-level events (a new conversation, presence) are sent to the
//! home node, which hands them to the routers holding the user's sessions.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;
use dashmap::DashMap;
use turbochat_protocol::ids::UserId;
use turbochat_protocol::link::DeliverKind;
use uuid::Uuid;

use crate::fanout::RouterLink;

/// Sessions of one user on one router.
#[derive(Debug)]
struct OnRouter {
    link: RouterLink,
    sessions: HashSet<u64>,
}

/// Every user homed here with a live session.
#[derive(Debug, Clone, Default)]
pub struct Homes {
    users: Arc<DashMap<UserId, HashMap<u64, OnRouter>>>,
}

impl Homes {
    /// Records a live session.
    pub fn open(&self, user: &str, link: &RouterLink, session_id: u64) {
        self.users
            .entry(user.to_string())
            .or_default()
            .entry(link.id())
            .or_insert_with(|| OnRouter {
                link: link.clone(),
                sessions: HashSet::new(),
            })
            .sessions
            .insert(session_id);
        // The entry guard is dropped above: `len` locks every shard.
        metrics::gauge!("turbochat_home_users").set(self.users.len() as f64);
    }

    /// Forgets a session.
    pub fn close(&self, user: &str, link_id: u64, session_id: u64) {
        if let Some(mut routers) = self.users.get_mut(user) {
            if let Some(on) = routers.get_mut(&link_id) {
                on.sessions.remove(&session_id);
                if on.sessions.is_empty() {
                    routers.remove(&link_id);
                }
            }
        }
        self.users.remove_if(user, |_, routers| routers.is_empty());
        metrics::gauge!("turbochat_home_users").set(self.users.len() as f64);
    }

    /// Whether the user has a live session anywhere.
    pub fn online(&self, user: &str) -> bool {
        self.users.get(user).is_some_and(|r| !r.is_empty())
    }

    /// Hands `payload` to every live session of `user`; returns how many.
    pub fn deliver(&self, user: &str, payload: Bytes) -> usize {
        let Some(routers) = self.users.get(user) else {
            return 0;
        };
        let mut count = 0;
        for on in routers.values() {
            count += on.sessions.len();
            on.link.deliver(
                on.sessions.iter().copied().collect(),
                Uuid::nil(),
                0,
                DeliverKind::Event,
                payload.clone(),
            );
        }
        count
    }
}
