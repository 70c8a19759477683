//! The ban list as this router knows it, read from a node every
//! `router.ban_poll`: a banned user's upgrade is refused (`403 banned`)
//! and their live sessions are closed (1008, reason `banned`). Nodes refuse
//! a banned user's requests on their own as soon as they know of the ban;
//! the router's part is to end the connections.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use turbochat_protocol::ids::UserId;
use turbochat_protocol::safety::BansRequest;

use crate::sessions::{Sessions, CLOSE_POLICY};
use crate::App;

/// Who is banned (as of the last poll).
#[derive(Default)]
pub struct Bans {
    users: RwLock<Arc<HashSet<UserId>>>,
    version: AtomicU64,
}

impl Bans {
    /// Whether `user` is banned.
    pub fn contains(&self, user: &str) -> bool {
        self.users.read().expect("ban lock").contains(user)
    }

    /// Takes a new list; returns who is banned now and was not before.
    fn replace(&self, version: u64, users: HashSet<UserId>) -> Vec<UserId> {
        let mut slot = self.users.write().expect("ban lock");
        let added = users.difference(&slot).cloned().collect();
        *slot = Arc::new(users);
        self.version.store(version, Ordering::Release);
        added
    }
}

/// Closes every session of `user` on this router.
fn close_sessions(sessions: &Sessions, user: &str) -> usize {
    let mut closed = 0;
    for session in sessions.all() {
        if session.user_id == user {
            session.close(CLOSE_POLICY, "banned");
            closed += 1;
        }
    }
    closed
}

/// Polls the ban list until `shutdown`.
pub async fn follow(app: App, poll: Duration, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(poll);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        let bans = &app.inner.bans;
        // Any node has the list; the same one each time while it is up.
        let Ok(mut client) =
            crate::http::safety::client_for(&app, app.inner.links.home("turbochat:bans"))
        else {
            continue;
        };
        let request = BansRequest {
            version: bans.version.load(Ordering::Acquire),
        };
        let reply = match client.bans(request).await {
            Ok(reply) => reply.into_inner(),
            Err(status) => {
                tracing::debug!(%status, "cannot read the ban list");
                continue;
            }
        };
        if !reply.changed {
            continue;
        }
        for user in bans.replace(reply.version, reply.users.into_iter().collect()) {
            let closed = close_sessions(&app.inner.sessions, &user);
            metrics::counter!("turbochat_router_banned_sessions_closed_total")
                .increment(closed as u64);
            tracing::info!(user_id = %user, closed, "banned user's sessions closed");
        }
    }
}
