//! The router's end of the fallback bus: it always listens on its own Redis
//! channel and handles what arrives exactly like frames from a node link.
//! Session cursors drop anything that also came over gRPC. (What the router
//! sends a node whose link is down goes out on the node's channel: see
//! `NodeLink::send_frame`.)

use prost::Message;
use tokio_util::sync::CancellationToken;
use turbochat_protocol::link::NodeFrame;

use crate::link::Links;

pub use turbochat_cluster::BusConfig;

/// Listens on `{prefix}:{cluster_id}:router:{router_id}` until shutdown,
/// reconnecting with backoff when Redis goes away.
pub async fn listen(
    config: BusConfig,
    router_id: String,
    links: Links,
    shutdown: CancellationToken,
) {
    let Some(url) = config.url().map(str::to_string) else {
        return;
    };
    let channel = config.router_channel(&router_id);
    turbochat_cluster::bus::listen(url, channel, shutdown, |payload| {
        match NodeFrame::decode(payload) {
            Ok(frame) => links.on_node_frame(None, frame.frame),
            Err(err) => tracing::warn!(%err, "undecodable frame on the bus"),
        }
    })
    .await;
}
