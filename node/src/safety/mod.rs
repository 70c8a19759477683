//! Trust and safety on the node: blocks, reports and moderation, enforced
//! where messages are ordered, stored and fanned out (the owner), so no
//! path — live frame, replay, history, push — can go around them.
//!
//! - [`Safety::screen_send`] runs in the owner before a send may join a
//!   batch: a send in a direct conversation where one participant blocks
//!   the other is refused (`blocked`), and the moderation rules refuse,
//!   mask or flag its text. A refused message is never stored, so it is in
//!   no history, no replay and no push.
//! - [`Safety::typing_allowed`] drops typing indicators between blocked
//!   users in direct conversations (see `link/attach.rs`).
//! - [`Safety::check_new_direct`] refuses a new direct conversation between
//!   users one of whom blocks the other.
//! - Block lists are cached per node ([`blocks::BlockCache`]); the node that
//!   changes one tells every node on the ring ([`Safety::blocks_changed`]).
//! - Reports copy their evidence (the reported message and the ones before
//!   it) into the report, so deleting a message later does not erase it.
//!
//! Decisions (documented in `docs/protocol.md`): a blocked sender gets a
//! clear `blocked` error rather than silent non-delivery, and blocks apply
//! to direct conversations only (a group is a shared room: one member
//! cannot silence another for everyone; the blocker may leave it).

pub mod admin;
pub mod bans;
pub mod blocks;
pub mod config;
mod data_rights;
pub mod hook;
mod listing;
mod membership;
pub mod moderation;
mod reports;
pub mod retention;
pub mod service;
pub mod system;
mod tombstones;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use tokio_util::task::TaskTracker;
use tonic::transport::Channel;
use turbochat_cluster::RingView;
use turbochat_protocol::http::ConversationKind;
use turbochat_protocol::ids::{ConversationId, UserId};
use turbochat_protocol::safety::safety_client::SafetyClient;
use turbochat_protocol::safety::BlocksChangedRequest;
use turbochat_protocol::{ErrorCode, MessageKind};
use turbochat_store::{ConversationState, Store, StoreError};

use crate::peers::Peers;

use self::bans::BanList;
use self::blocks::BlockCache;
use self::moderation::{Moderator, Verdict};
use crate::owner::SendCommand;
use crate::refusal::Refusal;

pub use self::config::SafetyConfig;
pub use self::membership::MembershipChange;
pub use self::tombstones::Deleter;

/// How long a change waits for the other nodes to acknowledge its notice.
const NOTICE_PATIENCE: Duration = Duration::from_secs(2);
/// Conversations whose kind is remembered before the memo starts over.
const MAX_FACTS: usize = 100_000;

/// What safety needs to know of a conversation; it never changes once
/// the conversation exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Facts {
    /// A direct conversation between these two users.
    Direct([UserId; 2]),
    /// A group: blocks do not apply.
    Group,
}

impl Facts {
    /// The facts of a conversation as the store holds it now.
    fn of(state: &ConversationState) -> Facts {
        match (state.kind, state.participants.as_slice()) {
            (ConversationKind::Direct, [a, b]) => {
                Facts::Direct([a.user_id.clone(), b.user_id.clone()])
            }
            _ => Facts::Group,
        }
    }

    /// The other participant of a direct conversation `user` is in.
    fn peer_of(&self, user: &str) -> Option<&str> {
        match self {
            Facts::Direct([a, b]) if a == user => Some(b),
            Facts::Direct([a, b]) if b == user => Some(a),
            _ => None,
        }
    }
}

/// Handle on the node's safety state. Cheap to clone.
#[derive(Clone)]
pub struct Safety {
    inner: Arc<Inner>,
}

struct Inner {
    me: String,
    store: Arc<dyn Store>,
    blocks: BlockCache,
    bans: BanList,
    ban_refresh: Duration,
    /// How long a sender may unsend (`safety.unsend_window`).
    unsend_window: Duration,
    facts: DashMap<ConversationId, Facts>,
    moderator: Moderator,
    /// The moderation hook, if configured.
    hook: Option<hook::Hook>,
    ring: Option<RingView>,
    peers: Peers,
    /// Set once the owners exist (they hold this handle).
    system: std::sync::OnceLock<system::SystemPost>,
    /// Set once the user events exist (they hold this handle).
    events: std::sync::OnceLock<crate::user_events::UserEvents>,
    tasks: TaskTracker,
}

/// Why the safety state could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SafetyError {
    /// A moderation rule is unusable.
    #[error(transparent)]
    Rule(#[from] moderation::RuleError),
}

impl Safety {
    /// Safety for node `me`, reading `store`; with `ring` (gossip on) block
    /// changes are announced to every node on it. Side tasks (announcements,
    /// flags, cache refreshes) run on `tasks`.
    pub fn new(
        me: String,
        config: &SafetyConfig,
        moderation: &moderation::ModerationConfig,
        store: Arc<dyn Store>,
        ring: Option<RingView>,
        peers: Peers,
        tasks: TaskTracker,
    ) -> Result<Self, SafetyError> {
        let moderator = Moderator::new(moderation)?;
        if moderator.is_active() {
            tracing::info!(rules = moderation.rules.len(), "moderation rules active");
        }
        Ok(Safety {
            inner: Arc::new(Inner {
                me,
                store,
                blocks: BlockCache::new(config.block_cache_ttl),
                bans: BanList::default(),
                ban_refresh: config.ban_refresh,
                unsend_window: config.unsend_window,
                facts: DashMap::new(),
                moderator,
                hook: moderation.hook.as_ref().map(hook::Hook::new),
                ring,
                peers,
                system: std::sync::OnceLock::new(),
                events: std::sync::OnceLock::new(),
                tasks,
            }),
        })
    }

    /// Checks a send before it joins a batch: blocks in a direct
    /// conversation, then the moderation rules. May mask `send.body`. A
    /// `flag` match opens a review report in the background.
    pub async fn screen_send(
        &self,
        conversation: ConversationId,
        send: &mut SendCommand,
    ) -> Result<(), Refusal> {
        if self.is_banned(&send.user_id) {
            return Err(banned());
        }
        if let Some(peer) = self.facts(conversation).await?.peer_of(&send.user_id) {
            if let Some(refusal) = self.between(&send.user_id, peer).await? {
                return Err(refusal);
            }
        }
        if send.kind == MessageKind::System || send.body.is_empty() {
            return Ok(());
        }
        let (body, flagged) = match self.inner.moderator.screen(&send.body) {
            Verdict::Refuse { rule, message } => {
                tracing::info!(%rule, user_id = %send.user_id, "moderation refused a message");
                return Err(Refusal::new(ErrorCode::ContentRefused, message));
            }
            Verdict::Store { body, flagged } => (
                match body {
                    std::borrow::Cow::Owned(masked) => Some(masked),
                    std::borrow::Cow::Borrowed(_) => None,
                },
                flagged,
            ),
        };
        if let Some(masked) = body {
            metrics::counter!("turbochat_moderation_masked_total").increment(1);
            send.body = masked;
        }
        if let Some(hook) = &self.inner.hook {
            let verdict = hook
                .screen(&hook::HookRequest {
                    conversation_id: conversation,
                    sender_id: &send.user_id,
                    client_msg_id: &send.client_msg_id,
                    kind: send.kind.as_str(),
                    body: &send.body,
                })
                .await;
            match verdict {
                hook::HookVerdict::Allow => {}
                hook::HookVerdict::Mask(body) => {
                    metrics::counter!("turbochat_moderation_masked_total").increment(1);
                    send.body = body;
                }
                hook::HookVerdict::Refuse(message) => {
                    tracing::info!(user_id = %send.user_id, "moderation hook refused a message");
                    return Err(Refusal::new(ErrorCode::ContentRefused, message));
                }
                hook::HookVerdict::Unavailable => {
                    return Err(Refusal::unavailable(
                        "the message could not be checked; retry",
                    ));
                }
            }
        }
        if !flagged.is_empty() {
            self.flag(conversation, send, flagged);
        }
        Ok(())
    }

    /// Whether a `typing: start` of `user` in `conversation` may be shown.
    /// Answers from memory only (the link reader cannot wait): when what it
    /// needs is not cached yet, the indicator is dropped and the cache
    /// filled, so the next one (clients repeat them every few seconds)
    /// passes. Indicators are ephemeral; a lost one costs nothing, a leaked
    /// one would tell a blocker that the user they blocked is writing.
    pub fn typing_allowed(&self, conversation: ConversationId, user: &str) -> bool {
        let Some(facts) = self.inner.facts.get(&conversation).map(|f| f.clone()) else {
            self.fetch(conversation);
            return false;
        };
        let Some(peer) = facts.peer_of(user) else {
            return true;
        };
        let mut allowed = true;
        let mut missing = false;
        for (blocker, blocked) in [(peer, user), (user, peer)] {
            match self.inner.blocks.peek(blocker) {
                Some((set, fresh)) => {
                    allowed &= !set.contains(blocked);
                    missing |= !fresh;
                }
                None => {
                    allowed = false;
                    missing = true;
                }
            }
        }
        if missing {
            self.fetch(conversation);
        }
        allowed
    }

    /// Fills the caches for `conversation` in the background (a session
    /// subscribed to it: typing will follow). Nothing to do when they hold it.
    pub fn prefetch(&self, conversation: ConversationId) {
        let cached = self.inner.facts.get(&conversation).map(|f| f.clone());
        match cached {
            Some(Facts::Group) => return,
            Some(Facts::Direct(users)) if users.iter().all(|u| self.inner.blocks.is_fresh(u)) => {
                return
            }
            _ => {}
        }
        self.fetch(conversation);
    }

    /// Fills the caches from a conversation just read by someone else (its
    /// owner starting, its creation): the facts without a second read, and
    /// the block lists of a direct pair in the background when missing.
    pub fn learn(&self, state: &ConversationState) {
        let facts = self.remember(state.conversation_id, Facts::of(state));
        if let Facts::Direct(users) = facts {
            if users.iter().any(|u| !self.inner.blocks.is_fresh(u)) {
                let safety = self.clone();
                self.inner
                    .tasks
                    .spawn(async move { safety.load_blocks(&users).await });
            }
        }
    }

    /// Reads the facts and block lists of `conversation` into the caches,
    /// in the background.
    fn fetch(&self, conversation: ConversationId) {
        let safety = self.clone();
        self.inner.tasks.spawn(async move {
            let facts = match safety.facts(conversation).await {
                Ok(facts) => facts,
                Err(err) => {
                    tracing::debug!(%err, "cannot prefetch conversation facts");
                    return;
                }
            };
            if let Facts::Direct(users) = facts {
                safety.load_blocks(&users).await;
            }
        });
    }

    /// Reads the block lists of `users` that are not cached and fresh.
    async fn load_blocks(&self, users: &[UserId]) {
        for user in users {
            if !self.inner.blocks.is_fresh(user) {
                let _ = self
                    .inner
                    .blocks
                    .load(self.inner.store.as_ref(), user)
                    .await;
            }
        }
    }

    /// Refuses a new direct conversation between `creator` and `peer` when
    /// one of them blocks the other.
    pub async fn check_new_direct(&self, creator: &str, peer: &str) -> Result<(), Refusal> {
        match self.between(creator, peer).await? {
            Some(refusal) => Err(refusal),
            None => Ok(()),
        }
    }

    /// The refusal for `sender` writing to `peer`, if either blocks the other.
    async fn between(&self, sender: &str, peer: &str) -> Result<Option<Refusal>, Refusal> {
        let store = self.inner.store.as_ref();
        if self.inner.blocks.get(store, peer).await?.contains(sender) {
            metrics::counter!("turbochat_blocked_sends_total").increment(1);
            return Ok(Some(Refusal::new(
                ErrorCode::Blocked,
                "this user does not accept your messages",
            )));
        }
        if self.inner.blocks.get(store, sender).await?.contains(peer) {
            return Ok(Some(Refusal::new(
                ErrorCode::Blocked,
                "you blocked this user; unblock them to write to them",
            )));
        }
        Ok(None)
    }

    /// The conversation's facts, remembered after the first read. An
    /// unknown conversation counts as a group here (the owner refuses it
    /// as `not_found` anyway) and is not remembered.
    pub async fn facts(&self, conversation: ConversationId) -> Result<Facts, StoreError> {
        if let Some(facts) = self.inner.facts.get(&conversation) {
            return Ok(facts.clone());
        }
        let Some(state) = self.inner.store.load_conversation(conversation).await? else {
            return Ok(Facts::Group);
        };
        Ok(self.remember(conversation, Facts::of(&state)))
    }

    fn remember(&self, conversation: ConversationId, facts: Facts) -> Facts {
        if self.inner.facts.len() >= MAX_FACTS {
            self.inner.facts.clear();
        }
        self.inner.facts.insert(conversation, facts.clone());
        facts
    }

    /// The ban list and its version (0 before the first load).
    pub fn ban_snapshot(&self) -> (u64, Arc<HashSet<UserId>>) {
        self.inner.bans.snapshot()
    }

    /// Whether an operator banned `user` (as of the last reload).
    pub fn is_banned(&self, user: &str) -> bool {
        self.inner.bans.contains(user)
    }

    /// Reads the ban list again; returns who was banned since the last read.
    pub async fn reload_bans(&self) -> Result<Vec<UserId>, StoreError> {
        let added = self.inner.bans.reload(self.store()).await?;
        if !added.is_empty() {
            tracing::info!(banned = ?added, "ban list reloaded");
        }
        Ok(added)
    }

    /// Re-reads the ban list every `safety.ban_refresh` until `shutdown`
    /// (the backstop for a lost `BansChanged` notice).
    pub async fn follow_bans(self, shutdown: tokio_util::sync::CancellationToken) {
        let mut tick = tokio::time::interval(self.inner.ban_refresh);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    if let Err(err) = self.reload_bans().await {
                        tracing::warn!(%err, "cannot read the ban list");
                    }
                }
                _ = shutdown.cancelled() => return,
            }
        }
    }

    /// Gives safety the way to tell users of a conversation they joined.
    pub fn set_user_events(&self, events: crate::user_events::UserEvents) {
        let _ = self.inner.events.set(events);
    }

    /// Gives safety the way to post system messages at this node's owners.
    pub fn set_system_post(&self, post: system::SystemPost) {
        let _ = self.inner.system.set(post);
    }

    /// Stores a system message in `conversation`, at its owner (this node
    /// or another, over gRPC). Returns the `ack` frame as JSON.
    pub(crate) async fn post_system(
        &self,
        conversation: ConversationId,
        client_msg_id: String,
        body: String,
    ) -> Result<serde_json::Value, Refusal> {
        match self.remote_owner(conversation) {
            None => {
                let ack = self
                    .post_system_here(conversation, client_msg_id, body)
                    .await?;
                Ok(serde_json::to_value(ack).unwrap_or_default())
            }
            Some(grpc) => {
                let mut client = self
                    .peer(&grpc)
                    .ok_or_else(|| Refusal::unavailable("the owner cannot be reached; retry"))?;
                let reply = client
                    .post_system_message(turbochat_protocol::safety::SystemMessageRequest {
                        conversation_id: conversation.to_string(),
                        client_msg_id,
                        body,
                    })
                    .await
                    .map_err(|s| {
                        Refusal::new(ErrorCode::from_status(&s), s.message().to_string())
                    })?;
                serde_json::from_slice(&reply.into_inner().json)
                    .map_err(|e| Refusal::new(ErrorCode::Internal, e.to_string()))
            }
        }
    }

    /// The gRPC address of the conversation's owner when it is another
    /// node (`None`: this node, or no gossip).
    fn remote_owner(&self, conversation: ConversationId) -> Option<String> {
        self.inner.ring.as_ref().and_then(|ring| {
            ring.current()
                .owner_of(&conversation)
                .filter(|node| node.id != self.inner.me)
                .map(|node| node.grpc.clone())
        })
    }

    /// Stores a system message in a conversation owned here.
    pub(crate) async fn post_system_here(
        &self,
        conversation: ConversationId,
        client_msg_id: String,
        body: String,
    ) -> Result<turbochat_protocol::ServerFrame, Refusal> {
        let post = self
            .inner
            .system
            .get()
            .ok_or_else(|| Refusal::unavailable("the node is starting; retry"))?;
        post.post(conversation, client_msg_id, body).await
    }

    /// The ban list changed here: read it again, and tell the other nodes.
    pub(crate) async fn bans_changed(&self) -> Result<(), Refusal> {
        self.reload_bans().await?;
        self.announce_bans_changed().await;
        Ok(())
    }

    /// Tells every other node on the ring that the ban list changed, and
    /// waits for them (see [`Safety::await_notices`]).
    async fn announce_bans_changed(&self) {
        let notices = self.other_nodes().into_iter().map(|mut client| {
            self.inner.tasks.spawn(async move {
                if let Err(status) = client
                    .bans_changed(turbochat_protocol::safety::BansChangedRequest {})
                    .await
                {
                    tracing::warn!(%status, "cannot tell a node that the ban list changed");
                }
            })
        });
        self.await_notices(notices.collect()).await;
    }

    /// Waits for notices to other nodes, at most [`NOTICE_PATIENCE`], so the
    /// change is in force on every reachable node when the caller answers.
    /// The notices are tasks of their own: a caller that gives up does not
    /// cancel them. A node that cannot be told catches up by itself.
    async fn await_notices(&self, notices: Vec<tokio::task::JoinHandle<()>>) {
        if notices.is_empty() {
            return;
        }
        if tokio::time::timeout(NOTICE_PATIENCE, futures::future::join_all(notices))
            .await
            .is_err()
        {
            tracing::warn!("a node did not acknowledge a safety notice in time");
        }
    }

    /// Clients of every other node on the ring (none without gossip).
    fn other_nodes(&self) -> Vec<SafetyClient<Channel>> {
        let Some(ring) = &self.inner.ring else {
            return Vec::new();
        };
        ring.current()
            .nodes()
            .iter()
            .filter(|node| node.id != self.inner.me)
            .filter_map(|node| self.peer(&node.grpc))
            .collect()
    }

    /// `user`'s block list changed (here or on another node): forget it.
    pub fn blocks_changed(&self, user: &str) {
        self.inner.blocks.invalidate(user);
    }

    /// Tells every other node on the ring that `user`'s block list changed,
    /// and waits for them (see [`Safety::await_notices`]). A node that
    /// cannot be told serves its cached copy until `safety.block_cache_ttl`
    /// at most.
    async fn announce_blocks_changed(&self, user: &str) {
        let notices = self.other_nodes().into_iter().map(|mut client| {
            let request = BlocksChangedRequest {
                user_id: user.to_string(),
            };
            self.inner.tasks.spawn(async move {
                if let Err(status) = client.blocks_changed(request).await {
                    metrics::counter!("turbochat_block_notices_failed_total").increment(1);
                    tracing::warn!(%status, "cannot tell a node that a block list changed");
                }
            })
        });
        self.await_notices(notices.collect()).await;
    }

    fn peer(&self, grpc: &str) -> Option<SafetyClient<Channel>> {
        self.inner.peers.channel(grpc).map(SafetyClient::new)
    }

    fn store(&self) -> &dyn Store {
        self.inner.store.as_ref()
    }
}

/// The refusal of every request of a banned user.
pub fn banned() -> Refusal {
    Refusal::new(ErrorCode::Banned, "this account is banned")
}
