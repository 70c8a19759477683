//! The fallback bus: Redis pub/sub, one channel per router.
//!
//! When a node cannot hand a frame to a router over its gRPC link (the link
//! is down, or cut for lagging), it publishes the frame on the router's
//! channel instead; every router always listens on its own. Frames are the
//! link's protobuf `NodeFrame`s, so the router treats both paths alike and
//! its per-session cursors drop whatever arrives twice. Without Redis the
//! cluster works over gRPC alone, and a router that reconnects recovers
//! by re-subscribing from its cursors.

use prost::Message;
use redis::AsyncCommands;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use turbochat_protocol::link::NodeFrame;

pub use turbochat_cluster::BusConfig;

/// Frames waiting to be published before new ones are dropped.
const QUEUE: usize = 64 * 1024;

/// Handle on the publishing task. Publishing never blocks the caller.
#[derive(Clone, Debug)]
pub struct Bus {
    tx: mpsc::Sender<(String, Vec<u8>)>,
    config: BusConfig,
}

impl Bus {
    /// Starts the publisher. The connection is made (and remade) in the
    /// background, so a Redis that is down at start only delays the bus.
    pub fn start(
        config: &BusConfig,
        tasks: &TaskTracker,
        shutdown: CancellationToken,
    ) -> Option<Bus> {
        let url = config.url()?.to_string();
        let (tx, rx) = mpsc::channel(QUEUE);
        tasks.spawn(publish_loop(url, rx, shutdown));
        Some(Bus {
            tx,
            config: config.clone(),
        })
    }

    /// Queues `frame` for `router_id`'s channel. Returns false when the
    /// queue is full (Redis too slow or unreachable for long).
    pub fn publish(&self, router_id: &str, frame: &NodeFrame) -> bool {
        let channel = self.config.router_channel(router_id);
        match self.tx.try_send((channel, frame.encode_to_vec())) {
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
            next_attempt = tokio::time::Instant::now() + std::time::Duration::from_secs(1);
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
            tracing::warn!(%err, "cannot reach Redis; frames for unreachable routers are dropped until it is back");
            None
        }
    }
}
