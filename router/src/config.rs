//! Router configuration: the `[router]`, `[auth]`, `[limits]`, `[media]`
//! and `[web]` sections of the shared config file, with `TURBOCHAT_*`
//! overrides.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use turbochat_cluster::NodeInfo;
use turbochat_service::config::ConfigError;

/// Everything `turbochat-router` reads. One file configures routers and
/// nodes alike, so the nodes' sections are passed over; any other section,
/// and any unknown key in a section, is refused by name.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Identity, listener, nodes.
    pub router: RouterSection,
    /// JWT verification.
    pub auth: AuthConfig,
    /// Per-session and per-user limits.
    #[serde(default)]
    pub limits: Limits,
    /// SWIM membership; off means the static `router.nodes` list.
    #[serde(default)]
    pub cluster: turbochat_cluster::ClusterSection,
    /// The Redis fallback bus (off unless `bus.redis_url` is set).
    #[serde(default)]
    pub bus: crate::bus::BusConfig,
    /// Media uploads (a local directory unless configured).
    #[serde(default)]
    pub media: crate::media::MediaConfig,
    /// The browser client's settings (web push; none by default).
    #[serde(default)]
    pub web: crate::web_push::WebConfig,
    /// The nodes' sections (`[node]`, `[store]`, `[owner]`, `[push]`,
    /// `[safety]`, `[moderation]`, `[admin]`).
    #[serde(default, rename = "node")]
    _node: serde::de::IgnoredAny,
    #[serde(default, rename = "store")]
    _store: serde::de::IgnoredAny,
    #[serde(default, rename = "owner")]
    _owner: serde::de::IgnoredAny,
    #[serde(default, rename = "push")]
    _push: serde::de::IgnoredAny,
    #[serde(default, rename = "safety")]
    _safety: serde::de::IgnoredAny,
    #[serde(default, rename = "moderation")]
    _moderation: serde::de::IgnoredAny,
    #[serde(default, rename = "admin")]
    _admin: serde::de::IgnoredAny,
}

/// `[router]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouterSection {
    /// Unique, stable id (nodes use it to recognise a reconnecting router).
    pub id: String,
    /// HTTP + WebSocket listener for clients. Port 0 picks a free port.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Operator listener: `/metrics`, `/cluster`, `/healthz`, `/readyz`
    /// (never on the client listener). Port 0 picks a free port.
    #[serde(default = "default_ops_listen")]
    pub ops_listen: SocketAddr,
    /// The nodes to route to when gossip is off (static membership).
    #[serde(default)]
    pub nodes: Vec<NodeInfo>,
    /// Virtual nodes per node on the ring; must match every other process.
    #[serde(default = "default_vnodes")]
    pub vnodes: usize,
    /// How long sessions get to close on shutdown.
    #[serde(default = "default_drain", with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// How long the router waits at start for its node links before it
    /// announces itself anyway (`/readyz` stays 503 until they are up).
    #[serde(default = "default_ready_timeout", with = "humantime_serde")]
    pub ready_timeout: Duration,
    /// How often the router reads the ban list from a node: a banned
    /// user's sessions close, and their upgrades are refused, within this.
    #[serde(default = "default_ban_poll", with = "humantime_serde")]
    pub ban_poll: Duration,
}

/// `[auth]`: how tokens are verified. The algorithm is pinned: a token
/// signed with any other (including `none`) is refused.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// `HS256`, `HS384`, `HS512`, `RS256`, `ES256`, ...
    pub algorithm: String,
    /// Shared secret for HS*.
    #[serde(default)]
    pub secret: Option<String>,
    /// PEM public key file for RS*/ES*/PS*/EdDSA.
    #[serde(default)]
    pub public_key_file: Option<PathBuf>,
    /// PEM public key inline (alternative to the file).
    #[serde(default)]
    pub public_key_pem: Option<String>,
    /// Required `iss`.
    pub issuer: String,
    /// Required `aud`.
    pub audience: String,
    /// Clock skew tolerated on `exp` and `nbf`, in seconds.
    #[serde(default = "default_leeway")]
    pub leeway_secs: u64,
}

/// `[limits]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Largest WebSocket frame a client may send; larger closes with 1009.
    #[serde(default = "default_max_frame")]
    pub max_frame_bytes: usize,
    /// Frames queued for one session before it is closed as a slow consumer.
    #[serde(default = "default_session_queue")]
    pub session_queue: usize,
    /// Sustained sends per second per user (on this router).
    #[serde(default = "default_send_rate")]
    pub send_per_second: u32,
    /// Burst of sends allowed above the sustained rate.
    #[serde(default = "default_send_burst")]
    pub send_burst: u32,
    /// Sustained frames of any kind per second per session.
    #[serde(default = "default_frame_rate")]
    pub frames_per_second: u32,
    /// Most WebSocket sessions this router holds.
    #[serde(default = "default_max_sessions")]
    pub max_sessions: usize,
    /// Most conversations one session may subscribe to.
    #[serde(default = "default_max_subscriptions")]
    pub max_subscriptions: usize,
    /// Sustained `POST /conversations` per user per minute (on this router).
    #[serde(default = "default_conversations_per_minute")]
    pub conversations_per_minute: u32,
    /// Burst of conversation creations allowed above the sustained rate.
    #[serde(default = "default_conversations_burst")]
    pub conversations_burst: u32,
    /// Sustained blocks, unblocks and reports per user per minute (on this
    /// router): a report copies messages, a block is announced to every node.
    #[serde(default = "default_safety_per_minute")]
    pub safety_per_minute: u32,
    /// Burst of blocks, unblocks and reports above the sustained rate.
    #[serde(default = "default_safety_burst")]
    pub safety_burst: u32,
    /// Most HTTP connections served at once before they are upgraded to a
    /// WebSocket or closed (sessions count under `max_sessions`).
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Time a connection has to send a complete request head (on connect
    /// and between keep-alive requests); slower ones are closed.
    #[serde(default = "default_header_read_timeout", with = "humantime_serde")]
    pub header_read_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame_bytes: default_max_frame(),
            session_queue: default_session_queue(),
            send_per_second: default_send_rate(),
            send_burst: default_send_burst(),
            frames_per_second: default_frame_rate(),
            max_sessions: default_max_sessions(),
            max_subscriptions: default_max_subscriptions(),
            conversations_per_minute: default_conversations_per_minute(),
            conversations_burst: default_conversations_burst(),
            safety_per_minute: default_safety_per_minute(),
            safety_burst: default_safety_burst(),
            max_connections: default_max_connections(),
            header_read_timeout: default_header_read_timeout(),
        }
    }
}

fn default_listen() -> SocketAddr {
    "127.0.0.1:8080".parse().expect("static address")
}
fn default_ops_listen() -> SocketAddr {
    "127.0.0.1:9091".parse().expect("static address")
}
fn default_ready_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_max_connections() -> usize {
    10_000
}
fn default_header_read_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_vnodes() -> usize {
    turbochat_cluster::ring::DEFAULT_VNODES
}
fn default_ban_poll() -> Duration {
    Duration::from_secs(1)
}
fn default_drain() -> Duration {
    Duration::from_secs(5)
}
fn default_leeway() -> u64 {
    30
}
fn default_max_frame() -> usize {
    64 * 1024
}
fn default_session_queue() -> usize {
    1024
}
fn default_send_rate() -> u32 {
    20
}
fn default_send_burst() -> u32 {
    40
}
fn default_frame_rate() -> u32 {
    100
}
fn default_max_sessions() -> usize {
    200_000
}
fn default_max_subscriptions() -> usize {
    1_000
}
fn default_conversations_per_minute() -> u32 {
    20
}
fn default_conversations_burst() -> u32 {
    10
}
fn default_safety_per_minute() -> u32 {
    10
}
fn default_safety_burst() -> u32 {
    10
}

impl Config {
    /// Loads the file (if any) and environment, then validates.
    pub fn load(path: Option<&std::path::Path>) -> Result<Self, ConfigError> {
        let config: Config = turbochat_service::config::load(path)?;
        config.validate()?;
        Ok(config)
    }

    /// Checks values serde cannot; each error names its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.bus
            .validate()
            .map_err(|(key, reason)| ConfigError::key(key, reason))?;
        if self.router.id.trim().is_empty() || self.router.id.len() > 64 {
            return Err(ConfigError::key("router.id", "must be 1 to 64 characters"));
        }
        if self.router.nodes.is_empty() && !self.cluster.enabled {
            return Err(ConfigError::key(
                "router.nodes",
                "name at least one node, or set cluster.enabled = true",
            ));
        }
        for (i, node) in self.router.nodes.iter().enumerate() {
            if !(node.grpc.starts_with("http://") || node.grpc.starts_with("https://")) {
                return Err(ConfigError::key(
                    &format!("router.nodes[{i}].grpc"),
                    "must be an http:// or https:// URL",
                ));
            }
        }
        if self.limits.max_frame_bytes < 1024 {
            return Err(ConfigError::key(
                "limits.max_frame_bytes",
                "must be at least 1024",
            ));
        }
        if self.limits.session_queue == 0 {
            return Err(ConfigError::key(
                "limits.session_queue",
                "must be at least 1",
            ));
        }
        if self.limits.header_read_timeout.is_zero() {
            return Err(ConfigError::key(
                "limits.header_read_timeout",
                "must be more than 0",
            ));
        }
        if self.limits.send_per_second == 0 || self.limits.frames_per_second == 0 {
            return Err(ConfigError::key(
                "limits.send_per_second",
                "rates must be at least 1",
            ));
        }
        crate::auth::Verifier::from_config(&self.auth).map_err(|e| ConfigError::key("auth", e))?;
        self.web.validate()?;
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
    fn web_push_comes_from_the_environment_and_refuses_unknown_keys() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("TURBOCHAT_WEB__PUSH__VAPID_KEY", "BKey_0123-abc");
            jail.set_env("TURBOCHAT_WEB__PUSH__FIREBASE__API_KEY", "AIza-test");
            jail.set_env("TURBOCHAT_WEB__PUSH__FIREBASE__PROJECT_ID", "turbocar");
            // Digits only: the environment hands it over as a number.
            jail.set_env(
                "TURBOCHAT_WEB__PUSH__FIREBASE__MESSAGING_SENDER_ID",
                "905412345678",
            );
            jail.set_env(
                "TURBOCHAT_WEB__PUSH__FIREBASE__APP_ID",
                "1:905412345678:web:abc",
            );
            let config: Config = turbochat_service::config::load(Some(&shipped("dev.toml")))
                .map_err(|e| e.to_string())?;
            config.validate().map_err(|e| e.to_string())?;
            let push = config.web.push.expect("configured");
            assert_eq!(push.firebase.messaging_sender_id, "905412345678");
            assert_eq!(push.sdk_url, crate::web_push::DEFAULT_SDK_URL);
            jail.set_env("TURBOCHAT_WEB__PUSH__VAPID", "BKey");
            let err = turbochat_service::config::load::<Config>(Some(&shipped("dev.toml")))
                .unwrap_err()
                .to_string();
            assert!(err.contains("web.push.vapid: unknown key"), "{err}");
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)]
    fn a_misspelt_key_is_refused_by_its_name() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("TURBOCHAT_LIMITS__MAX_FRAME_BYTE", "10");
            let err = turbochat_service::config::load::<Config>(Some(&shipped("dev.toml")))
                .unwrap_err()
                .to_string();
            assert!(err.contains("limits.max_frame_byte: unknown key"), "{err}");
            Ok(())
        });
    }
}
