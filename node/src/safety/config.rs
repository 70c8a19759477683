//! `[safety]`: how the node keeps block lists and the ban list, and how
//! long a sender may unsend.

use std::time::Duration;

use serde::Deserialize;

/// `[safety]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SafetyConfig {
    /// How long a cached block list is trusted without being told of a
    /// change. Changes are announced to every node at once; this only
    /// bounds how long a node that missed the announcement (unreachable at
    /// that moment, or static routing with several nodes) keeps the old list.
    #[serde(default = "default_ttl", with = "humantime_serde")]
    pub block_cache_ttl: Duration,
    /// How often the ban list is read again. A ban is announced to every
    /// node at once; this bounds how long a node that missed the notice
    /// lets a banned user act.
    #[serde(default = "default_ban_refresh", with = "humantime_serde")]
    pub ban_refresh: Duration,
    /// How long after sending a sender may unsend a message
    /// (`DELETE /conversations/{id}/messages/{seq}`); `0s` turns unsending
    /// off. Operators delete at any time.
    #[serde(default = "default_unsend_window", with = "humantime_serde")]
    pub unsend_window: Duration,
    /// Messages older than this are emptied into tombstones by a
    /// background job (rows and seqs stay); `0s`, the default: kept.
    #[serde(default, with = "humantime_serde")]
    pub message_retention: Duration,
    /// How often the retention job runs.
    #[serde(default = "default_retention_interval", with = "humantime_serde")]
    pub retention_interval: Duration,
    /// Most messages one retention transaction empties.
    #[serde(default = "default_retention_batch")]
    pub retention_batch: u32,
}

impl Default for SafetyConfig {
    fn default() -> Self {
        SafetyConfig {
            block_cache_ttl: default_ttl(),
            ban_refresh: default_ban_refresh(),
            unsend_window: default_unsend_window(),
            message_retention: Duration::ZERO,
            retention_interval: default_retention_interval(),
            retention_batch: default_retention_batch(),
        }
    }
}

fn default_retention_interval() -> Duration {
    Duration::from_secs(3600)
}

fn default_retention_batch() -> u32 {
    500
}

fn default_unsend_window() -> Duration {
    Duration::from_secs(15 * 60)
}

fn default_ban_refresh() -> Duration {
    Duration::from_secs(10)
}

fn default_ttl() -> Duration {
    Duration::from_secs(60)
}
