//! The link between a router and a node that run in one process (the
//! co-located mode): the router hands its [`RouterFrame`]s to the node's
//! attach as they are, and reads the node's [`NodeFrame`]s back, with no
//! protobuf encoding, no HTTP/2 and no socket in between. The frames, their
//! order and what either side does with them are those of the gRPC
//! `Attach` stream; only the transport differs.

use std::sync::{Arc, OnceLock};

use tonic::codegen::{BoxFuture, BoxStream};
use tonic::Status;

use crate::link::{NodeFrame, RouterFrame};

/// A router's frames towards the node, in order.
pub type RouterFrames = BoxStream<RouterFrame>;
/// The node's frames towards the router, in order.
pub type NodeFrames = BoxStream<NodeFrame>;

/// A node's `Attach`, callable in process.
pub trait LocalAttach: Send + Sync + 'static {
    /// Attaches a router's stream of frames (the first one is its hello),
    /// as the gRPC `Attach` call does, and returns the node's frames.
    fn attach(&self, frames: RouterFrames) -> BoxFuture<NodeFrames, Status>;
}

/// The node running in this process, once it serves: shared by the node
/// (which fills it when its link service exists) and the router (which
/// attaches there instead of dialling the node's gRPC address).
#[derive(Clone, Default)]
pub struct LocalNode {
    slot: Arc<OnceLock<(String, Arc<dyn LocalAttach>)>>,
}

impl LocalNode {
    /// Says that node `id` of this process serves its link by `attach`.
    /// A second call is ignored (one node per process).
    pub fn serve(&self, id: String, attach: Arc<dyn LocalAttach>) {
        let _ = self.slot.set((id, attach));
    }

    /// The in-process attach of node `id`, if that node runs here and serves.
    pub fn attach_for(&self, id: &str) -> Option<Arc<dyn LocalAttach>> {
        self.slot
            .get()
            .filter(|(local, _)| local == id)
            .map(|(_, attach)| attach.clone())
    }

    /// The id of the node of this process, once it serves.
    pub fn id(&self) -> Option<&str> {
        self.slot.get().map(|(id, _)| id.as_str())
    }
}

impl std::fmt::Debug for LocalNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalNode").field("id", &self.id()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Nothing;

    impl LocalAttach for Nothing {
        fn attach(&self, _frames: RouterFrames) -> BoxFuture<NodeFrames, Status> {
            Box::pin(async { Err(Status::unavailable("test")) })
        }
    }

    #[test]
    fn only_the_node_of_this_process_is_attached_in_process() {
        let local = LocalNode::default();
        assert!(local.attach_for("node-1").is_none(), "nothing serves yet");
        local.serve("node-1".into(), Arc::new(Nothing));
        assert!(local.attach_for("node-1").is_some());
        assert!(local.attach_for("node-2").is_none());
        assert_eq!(local.id(), Some("node-1"));
        local.serve("node-2".into(), Arc::new(Nothing));
        assert_eq!(local.id(), Some("node-1"), "one node per process");
    }
}
