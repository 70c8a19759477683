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
    /// Channel names are `{prefix}:{cluster_id}:router:{router_id}`.
    #[serde(default = "default_prefix")]
    pub channel_prefix: String,
    /// This cluster's name on the Redis it shares: required with
    /// `redis_url`, so two clusters on one Redis (staging and production,
    /// two tenants) can never read each other's frames by default.
    #[serde(default)]
    pub cluster_id: Option<String>,
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
        let cluster = self.cluster_id.as_deref().unwrap_or_default();
        format!("{}:{cluster}:router:{router_id}", self.channel_prefix)
    }

    /// Checks what serde cannot: with a Redis, a cluster id of 1–64
    /// characters from `[A-Za-z0-9._-]`. The error names the key.
    pub fn validate(&self) -> Result<(), (&'static str, &'static str)> {
        if self.url().is_none() {
            return Ok(());
        }
        match self.cluster_id.as_deref() {
            None | Some("") => Err((
                "bus.cluster_id",
                "must be set with bus.redis_url: a name no other cluster on that Redis uses",
            )),
            Some(id)
                if id.len() > 64
                    || !id
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)) =>
            {
                Err((
                    "bus.cluster_id",
                    "must be 1 to 64 characters of A-Z a-z 0-9 . _ -",
                ))
            }
            Some(_) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clusters_on_one_redis_never_share_a_channel() {
        let bus = |id: &str| BusConfig {
            redis_url: Some("redis://127.0.0.1:6379".into()),
            channel_prefix: "turbochat".into(),
            cluster_id: Some(id.into()),
        };
        assert_ne!(
            bus("staging").router_channel("router-1"),
            bus("production").router_channel("router-1")
        );
        assert!(bus("production").validate().is_ok());
        assert!(bus("a b").validate().is_err());
        let mut unnamed = bus("x");
        unnamed.cluster_id = None;
        assert_eq!(unnamed.validate().unwrap_err().0, "bus.cluster_id");
        unnamed.redis_url = None;
        assert!(unnamed.validate().is_ok(), "no Redis, no name needed");
    }
}
