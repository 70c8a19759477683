//! Node configuration: the `[node]`, `[store]`, `[owner]`, `[push]`
//! (`crate::push::PushConfig`), `[safety]`, `[moderation]` and `[admin]` sections of the shared config file (see
//! `configs/dev.toml`), with `TURBOCHAT_*` overrides.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;
use turbochat_service::config::ConfigError;
use turbochat_store::WriterConfig;

/// Everything `turbochat-node` reads. One file configures routers and nodes
/// alike, so the routers' sections are passed over; any other section, and
/// any unknown key in a section, is refused by name.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// This node's identity and listeners.
    pub node: NodeSection,
    /// The store of record.
    pub store: StoreSection,
    /// Conversation owners.
    #[serde(default)]
    pub owner: OwnerConfig,
    /// SWIM membership; off means this node owns every conversation it is
    /// asked about (static routing by the routers' node list).
    #[serde(default)]
    pub cluster: turbochat_cluster::ClusterSection,
    /// The Redis fallback bus (off unless `bus.redis_url` is set).
    #[serde(default)]
    pub bus: crate::bus::BusConfig,
    /// Push notifications: how this node's outbox worker sends them.
    #[serde(default)]
    pub push: crate::push::PushConfig,
    /// Blocks: how long block lists are cached.
    #[serde(default)]
    pub safety: crate::safety::SafetyConfig,
    /// Moderation rules applied to every message before it is stored
    /// (none by default).
    #[serde(default)]
    pub moderation: crate::safety::moderation::ModerationConfig,
    /// Operators of the admin API (none by default: it refuses everyone).
    #[serde(default)]
    pub admin: crate::safety::admin::AdminConfig,
    /// The routers' sections (`[router]`, `[auth]`, `[limits]`, `[media]`,
    /// `[web]`).
    #[serde(default, rename = "router")]
    _router: serde::de::IgnoredAny,
    #[serde(default, rename = "auth")]
    _auth: serde::de::IgnoredAny,
    #[serde(default, rename = "limits")]
    _limits: serde::de::IgnoredAny,
    #[serde(default, rename = "media")]
    _media: serde::de::IgnoredAny,
    #[serde(default, rename = "web")]
    _web: serde::de::IgnoredAny,
}

/// `[node]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSection {
    /// Unique, stable id; it names the node on the ring.
    pub id: String,
    /// gRPC link listener (routers connect here). Port 0 picks a free port.
    #[serde(default = "default_grpc_listen")]
    pub grpc_listen: SocketAddr,
    /// The gRPC URL others should use, when it differs from the listener
    /// (NAT, a proxy in tests). Default: `http://{bound grpc address}`.
    #[serde(default)]
    pub grpc_advertise: Option<String>,
    /// HTTP listener for `/healthz`, `/readyz`, `/metrics`.
    #[serde(default = "default_http_listen")]
    pub http_listen: SocketAddr,
    /// Virtual nodes per node on the ring; must match every other process.
    #[serde(default = "default_vnodes")]
    pub vnodes: usize,
    /// How long a router's subscriptions outlive its link (it may come back
    /// and re-subscribe; meanwhile frames go over the bus).
    #[serde(default = "default_link_grace", with = "humantime_serde")]
    pub link_grace: Duration,
    /// How long a graceful shutdown may take before tasks are abandoned.
    #[serde(default = "default_drain", with = "humantime_serde")]
    pub drain_timeout: Duration,
}

/// `[store]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSection {
    /// `sqlite:path/to/file.db` (embedded default) or `postgres://...`.
    pub url: String,
    /// Connection pool size.
    #[serde(default = "default_pool")]
    pub max_connections: u32,
    /// Group commit.
    #[serde(default)]
    pub writer: WriterConfig,
}

/// `[owner]`: how conversation owners hold state.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OwnerConfig {
    /// Recently committed messages kept in memory per conversation for
    /// resume without a store read (about 300 bytes each: 64 cover a
    /// typical reconnect gap at ~20 KiB per active conversation).
    #[serde(default = "default_recent")]
    pub recent_messages: usize,
    /// Most messages replayed on one subscribe; a client further behind
    /// gets the newest `max_replay` and pages older ones over `/history`.
    #[serde(default = "default_max_replay")]
    pub max_replay: u64,
    /// A conversation with no subscriber and no traffic for this long drops
    /// its in-memory state.
    #[serde(default = "default_idle", with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Sends queued at one conversation before new ones are refused with
    /// `unavailable` (the owner is overloaded).
    #[serde(default = "default_max_queued")]
    pub max_queued_sends: usize,
    /// Subscribes, reads and typing waiting at one conversation's owner
    /// before new ones are refused with `unavailable` (the mailbox bound).
    #[serde(default = "default_max_queued")]
    pub max_queued_commands: usize,
    /// Longest message body, in characters.
    #[serde(default = "default_max_body")]
    pub max_body_chars: usize,
    /// How long read cursors are coalesced in memory before one write.
    #[serde(default = "default_read_flush", with = "humantime_serde")]
    pub read_flush_interval: Duration,
    /// A `typing: start` with no `stop` ends by itself after this long.
    #[serde(default = "default_typing_expiry", with = "humantime_serde")]
    pub typing_expiry: Duration,
    /// Repeated `typing: start` within this interval are not re-broadcast.
    #[serde(default = "default_typing_throttle", with = "humantime_serde")]
    pub typing_throttle: Duration,
    /// A user whose last session ended is shown offline after this long
    /// (a quick reconnect does not flicker).
    #[serde(default = "default_presence_grace", with = "humantime_serde")]
    pub presence_grace: Duration,
    /// Write push jobs to the outbox for participants with no live session.
    #[serde(default)]
    pub push_enabled: bool,
}

impl Default for OwnerConfig {
    fn default() -> Self {
        OwnerConfig {
            recent_messages: default_recent(),
            max_replay: default_max_replay(),
            idle_timeout: default_idle(),
            max_queued_sends: default_max_queued(),
            max_queued_commands: default_max_queued(),
            max_body_chars: default_max_body(),
            read_flush_interval: default_read_flush(),
            typing_expiry: default_typing_expiry(),
            typing_throttle: default_typing_throttle(),
            presence_grace: default_presence_grace(),
            push_enabled: false,
        }
    }
}

fn default_grpc_listen() -> SocketAddr {
    "127.0.0.1:7101".parse().expect("static address")
}
fn default_http_listen() -> SocketAddr {
    "127.0.0.1:7100".parse().expect("static address")
}
fn default_vnodes() -> usize {
    turbochat_cluster::ring::DEFAULT_VNODES
}
fn default_link_grace() -> Duration {
    Duration::from_secs(30)
}
fn default_drain() -> Duration {
    Duration::from_secs(10)
}
fn default_pool() -> u32 {
    8
}
fn default_recent() -> usize {
    64
}
fn default_max_replay() -> u64 {
    10_000
}
fn default_idle() -> Duration {
    Duration::from_secs(300)
}
fn default_max_queued() -> usize {
    10_000
}
fn default_read_flush() -> Duration {
    Duration::from_millis(500)
}
fn default_typing_expiry() -> Duration {
    Duration::from_secs(6)
}
fn default_typing_throttle() -> Duration {
    Duration::from_secs(2)
}
fn default_presence_grace() -> Duration {
    Duration::from_secs(3)
}
fn default_max_body() -> usize {
    4_000
}

impl Config {
    /// Loads the file (if any) and environment, then validates.
    pub fn load(path: Option<&std::path::Path>) -> Result<Self, ConfigError> {
        let config: Config = turbochat_service::config::load(path)?;
        config.validate()?;
        Ok(config)
    }

    /// Checks values serde cannot: every bad value names its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.bus
            .validate()
            .map_err(|(key, reason)| ConfigError::key(key, reason))?;
        if self.node.id.trim().is_empty() || self.node.id.len() > 64 {
            return Err(ConfigError::key("node.id", "must be 1 to 64 characters"));
        }
        let url = &self.store.url;
        if !(url.starts_with("sqlite:")
            || url.starts_with("postgres://")
            || url.starts_with("postgresql://"))
        {
            return Err(ConfigError::key(
                "store.url",
                format!("{url:?} is neither sqlite:... nor postgres://..."),
            ));
        }
        if self.store.max_connections == 0 {
            return Err(ConfigError::key(
                "store.max_connections",
                "must be at least 1",
            ));
        }
        if self.owner.recent_messages == 0 {
            return Err(ConfigError::key(
                "owner.recent_messages",
                "must be at least 1",
            ));
        }
        if self.owner.max_body_chars == 0 {
            return Err(ConfigError::key(
                "owner.max_body_chars",
                "must be at least 1",
            ));
        }
        self.push.validate()?;
        self.admin
            .validate()
            .map_err(|(key, reason)| ConfigError::key(&key, reason))?;
        if !(1..=10_000).contains(&self.safety.retention_batch) {
            return Err(ConfigError::key(
                "safety.retention_batch",
                "must be 1 to 10000",
            ));
        }
        if self.safety.retention_interval.is_zero() {
            return Err(ConfigError::key(
                "safety.retention_interval",
                "must be positive",
            ));
        }
        if let Some(hook) = &self.moderation.hook {
            hook.validate()
                .map_err(|(key, reason)| ConfigError::key(key, reason))?;
        }
        if let Err(err) = crate::safety::moderation::Moderator::new(&self.moderation) {
            return Err(ConfigError::key(
                &format!("moderation.rules[{}]", err.index),
                err.reason,
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped(name: &str) -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../configs")
            .join(name)
    }

    #[test]
    #[allow(clippy::result_large_err)]
    fn the_shipped_configs_hold_no_unknown_key() {
        for name in ["dev.toml", "production.toml"] {
            figment::Jail::expect_with(|_| {
                turbochat_service::config::load::<Config>(Some(&shipped(name)))
                    .map_err(|e| format!("{name}: {e}"))?;
                Ok(())
            });
        }
    }

    #[test]
    #[allow(clippy::result_large_err)]
    fn a_misspelt_key_is_refused_by_its_name() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("TURBOCHAT_OWNER__MAX_BODY_CHAR", "10");
            let err = turbochat_service::config::load::<Config>(Some(&shipped("dev.toml")))
                .unwrap_err()
                .to_string();
            assert!(err.contains("owner.max_body_char: unknown key"), "{err}");
            Ok(())
        });
        figment::Jail::expect_with(|jail| {
            jail.set_env("TURBOCHAT_CLUSTER__SEED", "[]");
            let err = turbochat_service::config::load::<Config>(Some(&shipped("dev.toml")))
                .unwrap_err()
                .to_string();
            assert!(err.contains("seed"), "{err}");
            Ok(())
        });
    }
}
