//! The router's end of the fallback bus: it always listens on its own Redis
//! channel and handles what arrives exactly like frames from a node link.
//! Session cursors drop anything that also came over gRPC.

use std::time::Duration;

use futures::StreamExt;
use prost::Message;
use tokio_util::sync::CancellationToken;
use turbochat_backoff::{Backoff, Reconnect};
use turbochat_protocol::link::NodeFrame;

use crate::link::Links;

pub use turbochat_cluster::BusConfig;

/// Listens on `{prefix}:router:{router_id}` until shutdown, reconnecting
/// with backoff when Redis goes away.
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
                    match NodeFrame::decode(message.get_payload_bytes()) {
                        Ok(frame) => {
                            metrics::counter!("turbochat_bus_received_total").increment(1);
                            links.on_node_frame(None, frame.frame);
                        }
                        Err(err) => tracing::warn!(%err, "undecodable frame on the bus"),
                    }
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
