//! The node's publishing end of the fallback bus: Redis pub/sub, one
//! channel per router (what routers send this node while their stream is
//! down arrives on the node's own channel: `link/bus_in.rs`).
//!
//! When a node cannot hand a frame to a router over its gRPC link (the link
//! is down, or cut for lagging), it publishes the frame on the router's
//! channel instead; every router always listens on its own. Frames are the
//! link's protobuf `NodeFrame`s, so the router treats both paths alike and
//! its per-session cursors drop whatever arrives twice. Without Redis the
//! cluster works over gRPC alone, and a router that reconnects recovers
//! by re-subscribing from its cursors.

use prost::Message;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use turbochat_cluster::bus::Publisher;
use turbochat_protocol::link::NodeFrame;

pub use turbochat_cluster::BusConfig;

/// Handle on the publishing task. Publishing never blocks the caller.
#[derive(Clone, Debug)]
pub struct Bus {
    publisher: Publisher,
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
        let url = config.url()?;
        Some(Bus {
            publisher: Publisher::start(url, tasks, shutdown),
            config: config.clone(),
        })
    }

    /// Queues `frame` for `router_id`'s channel. Returns false when the
    /// queue is full (Redis too slow or unreachable for long).
    pub fn publish(&self, router_id: &str, frame: &NodeFrame) -> bool {
        self.publisher
            .publish(self.config.router_channel(router_id), frame.encode_to_vec())
    }
}
