//! gRPC channels to other nodes, one per address, shared by everything
//! that calls a peer (user events to a user's home, safety notices), so a
//! node holds one HTTP/2 connection to each peer, not one per caller.

use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use tonic::transport::{Channel, Endpoint};

/// The channels, by gRPC address. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct Peers {
    channels: Arc<DashMap<String, Channel>>,
}

impl Peers {
    /// The channel to the node at `grpc` (made on first use, connected
    /// lazily); `None` if the address is not a valid URI.
    pub fn channel(&self, grpc: &str) -> Option<Channel> {
        if let Some(channel) = self.channels.get(grpc) {
            return Some(channel.clone());
        }
        let channel = Endpoint::from_shared(grpc.to_string())
            .ok()?
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(5))
            .connect_lazy();
        self.channels.insert(grpc.to_string(), channel.clone());
        Some(channel)
    }
}
