//! The fallback bus's shared settings: both nodes (publishers) and routers
//! (listeners) read `[bus]` and must agree on channel names.

use serde::{Deserialize, Serialize};

/// `[bus]` configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BusConfig {
    /// `redis://host:port`; empty or absent turns the fallback bus off.
    #[serde(default)]
    pub redis_url: Option<String>,
    /// Channel names are `{prefix}:router:{router_id}`.
    #[serde(default = "default_prefix")]
    pub channel_prefix: String,
}

fn default_prefix() -> String {
    "turbochat".into()
}

impl BusConfig {
    /// The Redis URL when the bus is on.
    pub fn url(&self) -> Option<&str> {
        self.redis_url.as_deref().filter(|u| !u.is_empty())
    }

    /// The channel router `router_id` listens on.
    pub fn router_channel(&self, router_id: &str) -> String {
        format!("{}:router:{router_id}", self.channel_prefix)
    }
}
