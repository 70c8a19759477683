//! The node's copy of the ban list. Bans are few (operators make them one
//! by one), so every node holds all of them in memory and re-reads the
//! whole list when told it changed (`Safety.BansChanged`) and, as a
//! backstop for a lost notice, every `safety.ban_refresh`.

use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use turbochat_protocol::ids::UserId;
use turbochat_store::{Store, StoreError};

/// The banned users and a version that changes with the list.
#[derive(Default)]
pub struct BanList {
    users: RwLock<Arc<HashSet<UserId>>>,
    version: AtomicU64,
}

impl BanList {
    /// Whether `user` is banned.
    pub fn contains(&self, user: &str) -> bool {
        self.users.read().expect("ban lock").contains(user)
    }

    /// The list and its version (0 before the first load).
    pub fn snapshot(&self) -> (u64, Arc<HashSet<UserId>>) {
        let users = self.users.read().expect("ban lock").clone();
        (self.version.load(Ordering::Acquire), users)
    }

    /// Reads the list from the store. Returns the users banned since the
    /// previous load.
    pub async fn reload(&self, store: &dyn Store) -> Result<Vec<UserId>, StoreError> {
        let mut users: Vec<UserId> = store.bans().await?.into_iter().map(|b| b.user_id).collect();
        users.sort();
        let version = version_of(&users);
        let fresh: HashSet<UserId> = users.into_iter().collect();
        let mut slot = self.users.write().expect("ban lock");
        let added = fresh.difference(&slot).cloned().collect();
        *slot = Arc::new(fresh);
        self.version.store(version, Ordering::Release);
        metrics::gauge!("turbochat_banned_users").set(slot.len() as f64);
        Ok(added)
    }
}

/// A version for a sorted list: equal lists, equal versions; never 0.
fn version_of(sorted: &[UserId]) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    sorted.hash(&mut hasher);
    hasher.finish().max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use turbochat_store::{AuditEntry, Ban};

    #[tokio::test]
    async fn a_reload_says_who_was_banned_since_and_moves_the_version() {
        let store = turbochat_store::open("sqlite::memory:", 1).await.unwrap();
        let bans = BanList::default();
        assert_eq!(
            bans.reload(store.as_ref()).await.unwrap(),
            Vec::<String>::new()
        );
        let empty = bans.snapshot().0;
        let audit = AuditEntry {
            id: 0,
            operator: "ops".into(),
            action: "ban".into(),
            target: "mallory".into(),
            detail: "{}".into(),
            created_at: 1,
        };
        let ban = Ban {
            user_id: "mallory".into(),
            reason: "scam".into(),
            banned_by: "ops".into(),
            created_at: 1,
        };
        store.ban(&ban, &audit).await.unwrap();
        assert_eq!(bans.reload(store.as_ref()).await.unwrap(), ["mallory"]);
        assert!(bans.contains("mallory"));
        assert_ne!(bans.snapshot().0, empty);
        assert!(bans.reload(store.as_ref()).await.unwrap().is_empty());
    }
}
