//! The fallback bus: Redis pub/sub between nodes and routers, used when
//! their gRPC link is down. Both read `[bus]` and must agree on channel
//! names; both publish ([`Publisher`]) and listen ([`listen`]) on it:
//! nodes to routers' channels, routers to nodes' channels.

use std::time::Duration;

use futures::StreamExt;
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use turbochat_backoff::{Backoff, Reconnect};

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

    /// The channel node `node_id` listens on.
    pub fn node_channel(&self, node_id: &str) -> String {
        let cluster = self.cluster_id.as_deref().unwrap_or_default();
        format!("{}:{cluster}:node:{node_id}", self.channel_prefix)
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

/// Frames waiting to be published before new ones are dropped.
const QUEUE: usize = 64 * 1024;

/// Handle on a publishing task: publishes in the order given, never
/// blocking the caller.
#[derive(Clone, Debug)]
pub struct Publisher {
    tx: mpsc::Sender<(String, Vec<u8>)>,
}

impl Publisher {
    /// Starts the publisher on `tasks`. The connection is made (and remade)
    /// in the background, so a Redis that is down at start only delays
    /// the bus.
    pub fn start(url: &str, tasks: &TaskTracker, shutdown: CancellationToken) -> Publisher {
        let (tx, rx) = mpsc::channel(QUEUE);
        tasks.spawn(publish_loop(url.to_string(), rx, shutdown));
        Publisher { tx }
    }

    /// Queues `payload` for `channel`. Returns false when the queue is
    /// full (Redis too slow or unreachable for long).
    pub fn publish(&self, channel: String, payload: Vec<u8>) -> bool {
        match self.tx.try_send((channel, payload)) {
            Ok(()) => {
                metrics::counter!("turbochat_bus_published_total").increment(1);
                true
            }
            Err(_) => {
                metrics::counter!("turbochat_bus_dropped_total").increment(1);
                false
            }
        }
    }
}

async fn publish_loop(
    url: String,
    mut rx: mpsc::Receiver<(String, Vec<u8>)>,
    shutdown: CancellationToken,
) {
    let mut connection = None;
    let mut next_attempt = tokio::time::Instant::now();
    loop {
        let (channel, payload) = tokio::select! {
            item = rx.recv() => match item { Some(item) => item, None => return },
            _ = shutdown.cancelled() => return,
        };
        if connection.is_none() && tokio::time::Instant::now() >= next_attempt {
            connection = connect(&url).await;
            next_attempt = tokio::time::Instant::now() + Duration::from_secs(1);
        }
        let Some(conn) = connection.as_mut() else {
            metrics::counter!("turbochat_bus_errors_total").increment(1);
            continue;
        };
        let result: redis::RedisResult<()> = conn.publish(&channel, payload).await;
        if let Err(err) = result {
            tracing::warn!(%err, "bus publish failed");
            metrics::counter!("turbochat_bus_errors_total").increment(1);
        }
    }
}

async fn connect(url: &str) -> Option<redis::aio::ConnectionManager> {
    let client = match redis::Client::open(url) {
        Ok(client) => client,
        Err(err) => {
            tracing::error!(%err, "bad bus.redis_url");
            return None;
        }
    };
    match redis::aio::ConnectionManager::new(client).await {
        Ok(conn) => Some(conn),
        Err(err) => {
            tracing::warn!(%err, "cannot reach Redis; frames for unreachable peers are dropped until it is back");
            None
        }
    }
}

/// Listens on `channel` until shutdown, handing every payload to
/// `on_message`, reconnecting with backoff when Redis goes away.
pub async fn listen(
    url: String,
    channel: String,
    shutdown: CancellationToken,
    mut on_message: impl FnMut(&[u8]),
) {
    let mut reconnect = Reconnect::new(
        Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(5),
            multiplier: 2.0,
        },
        Duration::ZERO,
    );
    while !shutdown.is_cancelled() {
        match subscribe(&url, &channel).await {
            Ok(mut pubsub) => {
                tracing::info!(%channel, "listening on the fallback bus");
                reconnect.connected(std::time::Instant::now());
                let mut messages = pubsub.on_message();
                loop {
                    let message = tokio::select! {
                        message = messages.next() => message,
                        _ = shutdown.cancelled() => return,
                    };
                    let Some(message) = message else { break };
                    metrics::counter!("turbochat_bus_received_total").increment(1);
                    on_message(message.get_payload_bytes());
                }
                tracing::warn!(%channel, "fallback bus connection lost");
            }
            Err(err) => tracing::warn!(%err, "cannot subscribe to the fallback bus"),
        }
        tokio::select! {
            _ = tokio::time::sleep(reconnect.next_delay(std::time::Instant::now(), rand::random())) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

async fn subscribe(url: &str, channel: &str) -> redis::RedisResult<redis::aio::PubSub> {
    let client = redis::Client::open(url)?;
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.subscribe(channel).await?;
    Ok(pubsub)
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
