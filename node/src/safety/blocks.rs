//! The node's cache of block lists: who each user blocks, read from the
//! store on first use and kept until the list changes (the node that
//! changes it tells every node, [`BlockCache::invalidate`]) or, as a
//! backstop for a notice that was lost, until `safety.block_cache_ttl`.
//!
//! Owners ask it on every send in a direct conversation, so a hit must not
//! touch the store; a stale entry still answers the best-effort paths
//! (typing) while it is refreshed.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use turbochat_protocol::ids::UserId;
use turbochat_store::{Store, StoreError};

/// Entries kept before the cache starts over (a bound on memory: about
/// 100 bytes per entry plus its list).
const MAX_ENTRIES: usize = 100_000;

/// The set of users one user blocks.
pub type BlockSet = Arc<HashSet<UserId>>;

struct Entry {
    blocked: BlockSet,
    loaded: Instant,
}

/// Block lists by blocker.
pub struct BlockCache {
    entries: DashMap<UserId, Entry>,
    /// Bumped by every invalidation: a load that raced with one is not
    /// cached (it may hold the list from before the change).
    epoch: AtomicU64,
    ttl: Duration,
}

impl BlockCache {
    /// An empty cache whose entries are trusted for `ttl`.
    pub fn new(ttl: Duration) -> Self {
        BlockCache {
            entries: DashMap::new(),
            epoch: AtomicU64::new(0),
            ttl,
        }
    }

    /// Who `user` blocks: from the cache when fresh, else from the store.
    pub async fn get(&self, store: &dyn Store, user: &str) -> Result<BlockSet, StoreError> {
        if let Some((set, true)) = self.peek(user) {
            return Ok(set);
        }
        self.load(store, user).await
    }

    /// The cached list and whether it is still fresh, without the store.
    pub fn peek(&self, user: &str) -> Option<(BlockSet, bool)> {
        self.entries
            .get(user)
            .map(|e| (e.blocked.clone(), e.loaded.elapsed() < self.ttl))
    }

    /// Whether `user`'s list is cached and still fresh.
    pub fn is_fresh(&self, user: &str) -> bool {
        matches!(self.peek(user), Some((_, true)))
    }

    /// Reads `user`'s list from the store and caches it.
    pub async fn load(&self, store: &dyn Store, user: &str) -> Result<BlockSet, StoreError> {
        let epoch = self.epoch.load(Ordering::Acquire);
        let blocked: BlockSet = Arc::new(
            store
                .blocks_of(user)
                .await?
                .into_iter()
                .map(|b| b.blocked_id)
                .collect(),
        );
        metrics::counter!("turbochat_block_cache_loads_total").increment(1);
        if self.entries.len() >= MAX_ENTRIES {
            self.entries.clear();
        }
        if self.epoch.load(Ordering::Acquire) == epoch {
            self.entries.insert(
                user.to_string(),
                Entry {
                    blocked: blocked.clone(),
                    loaded: Instant::now(),
                },
            );
        }
        Ok(blocked)
    }

    /// Forgets `user`'s list: the next question reads it again.
    pub fn invalidate(&self, user: &str) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.entries.remove(user);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_change_is_seen_after_invalidation_and_not_before() {
        let store = turbochat_store::open("sqlite::memory:", 1).await.unwrap();
        let cache = BlockCache::new(Duration::from_secs(3600));
        assert!(cache.get(store.as_ref(), "alice").await.unwrap().is_empty());
        store.block("alice", "mallory", 1).await.unwrap();
        assert!(
            cache.get(store.as_ref(), "alice").await.unwrap().is_empty(),
            "cached until told"
        );
        cache.invalidate("alice");
        assert!(cache
            .get(store.as_ref(), "alice")
            .await
            .unwrap()
            .contains("mallory"));
    }

    #[tokio::test]
    async fn an_expired_entry_is_read_again() {
        let store = turbochat_store::open("sqlite::memory:", 1).await.unwrap();
        let cache = BlockCache::new(Duration::ZERO);
        assert!(cache.get(store.as_ref(), "alice").await.unwrap().is_empty());
        store.block("alice", "mallory", 1).await.unwrap();
        assert_eq!(cache.peek("alice").map(|(_, fresh)| fresh), Some(false));
        assert!(cache
            .get(store.as_ref(), "alice")
            .await
            .unwrap()
            .contains("mallory"));
    }
}
