//! A router's frames over the fallback bus: while its stream to this node
//! is down, a router publishes its frames (sends, subscribes, reads,
//! typing, sessions) on this node's channel, each with the router's id and
//! incarnation. They are read exactly like the stream's frames, under the
//! same router address, so subscriptions made either way are one and
//! answers go back by the stream when it is up again, by the bus until then.

use std::collections::HashMap;

use prost::Message;
use turbochat_cluster::BusConfig;
use turbochat_protocol::link::BusRouterFrame;

use super::attach::AttachReader;
use super::LinkService;

impl LinkService {
    /// Listens on this node's bus channel until shutdown (nothing to do
    /// without a bus).
    pub async fn listen_bus(self, config: BusConfig, node_id: String) {
        let Some(url) = config.url().map(str::to_string) else {
            return;
        };
        let channel = config.node_channel(&node_id);
        let shutdown = self.shutdown.clone();
        // One reader per router process heard from.
        let mut readers: HashMap<(String, u64), AttachReader> = HashMap::new();
        turbochat_cluster::bus::listen(url, channel, shutdown, |payload| {
            let envelope = match BusRouterFrame::decode(payload) {
                Ok(envelope) => envelope,
                Err(err) => {
                    tracing::warn!(%err, "undecodable router frame on the bus");
                    return;
                }
            };
            let Some(frame) = envelope.frame else { return };
            if envelope.router_id.is_empty() {
                return;
            }
            let link = self
                .routers
                .heard_on_bus(&envelope.router_id, envelope.incarnation);
            let reader = readers
                .entry((envelope.router_id, envelope.incarnation))
                .or_insert_with(|| self.reader(link, 0));
            reader.handle(frame);
        })
        .await;
    }
}
