//! The router's side of the router ↔ node link: one multiplexed `Attach`
//! stream per node, kept up with exponential backoff.
//!
//! When a stream (re)connects, the router re-subscribes every session whose
//! cursor points at that node, from the session's last forwarded seq, so a
//! node restart or a cut link costs clients nothing but a short pause: the
//! owner replays exactly what they missed (guarantee 4).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use futures::StreamExt;
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::transport::{Channel, Endpoint};
use turbochat_backoff::{Backoff, Reconnect};
use turbochat_cluster::bus::{BusConfig, Publisher};
use turbochat_cluster::{Membership, NodeInfo, RingView};
use turbochat_protocol::ids::{ConversationId, Seq};
use turbochat_protocol::link::link_client::LinkClient;
use turbochat_protocol::link::{
    router_frame, BusRouterFrame, Hello, RouterFrame, Subscribe, Unsubscribe,
};
use turbochat_protocol::local::{LocalNode, NodeFrames};

use crate::sessions::{Session, Sessions};

mod forward;
mod inbound;

pub use forward::{MAX_IN_FLIGHT, SEND_PATIENCE};

/// Frames queued towards one node before sends are refused as `unavailable`.
pub const LINK_QUEUE: usize = 16 * 1024;

/// The link to this node is down (or its queue is full): retry later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("node link unavailable")]
pub struct LinkDown;

/// The way to a node over the fallback bus, when its stream is down.
#[derive(Debug)]
struct BusPath {
    publisher: Publisher,
    channel: String,
    router_id: String,
    incarnation: u64,
}

/// How a frame reaches a node now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// Its `Attach` stream.
    Link,
    /// The fallback bus (the stream is down).
    Bus,
}

/// One node's link.
#[derive(Debug)]
pub struct NodeLink {
    /// The node.
    pub node: NodeInfo,
    channel: Channel,
    outbound: Mutex<Option<mpsc::Sender<RouterFrame>>>,
    bus: Option<BusPath>,
    /// Whether the stream is connected.
    up: tokio::sync::watch::Sender<bool>,
    /// Cut the reconnect backoff short: the node (re)joined, or sends are
    /// waiting for this link.
    wake: tokio::sync::Notify,
    /// Cancelled when the node leaves the ring for good (or on shutdown).
    stop: CancellationToken,
}

impl NodeLink {
    /// Queues a frame on the current stream.
    pub fn send(&self, frame: router_frame::Frame) -> Result<(), LinkDown> {
        self.send_frame(RouterFrame {
            redirects: 0,
            frame: Some(frame),
        })
    }

    /// Queues a whole frame (keeping its redirect count): on the stream,
    /// or, while it is down, on the node's bus channel.
    pub fn send_frame(&self, frame: RouterFrame) -> Result<(), LinkDown> {
        let outbound = self.outbound.lock().expect("link lock").clone();
        match (outbound, &self.bus) {
            (Some(tx), _) => tx.try_send(frame).map_err(|_| LinkDown),
            (None, Some(bus)) => {
                let envelope = BusRouterFrame {
                    router_id: bus.router_id.clone(),
                    incarnation: bus.incarnation,
                    frame: Some(frame),
                };
                bus.publisher
                    .publish(bus.channel.clone(), envelope.encode_to_vec())
                    .then_some(())
                    .ok_or(LinkDown)
            }
            (None, None) => Err(LinkDown),
        }
    }

    /// How frames reach the node now, if they can.
    pub fn path(&self) -> Option<Path> {
        if self.is_up() {
            Some(Path::Link)
        } else if self.bus.is_some() {
            Some(Path::Bus)
        } else {
            None
        }
    }

    /// Whether the stream is connected.
    pub fn is_up(&self) -> bool {
        *self.up.borrow()
    }

    /// A client for unary calls on the same HTTP/2 connection.
    pub fn client(&self) -> LinkClient<Channel> {
        LinkClient::new(self.channel.clone())
    }
}

/// Whether an attempt failed because nothing listens at the node's address
/// (the connection was refused): its process is gone, whatever gossip
/// says yet. A timeout, a reset or a failed handshake is not that.
fn refused(status: &tonic::Status) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    while let Some(err) = cause {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return io.kind() == std::io::ErrorKind::ConnectionRefused;
        }
        cause = err.source();
    }
    false
}

/// Delays between attempts to (re)connect a node link: at most 0.5 s, so a
/// link is back within half a second of its path healing (an attempt at a
/// dead node is a refused connect: cheap; and the link is dropped once the
/// node has left the ring).
pub const LINK_BACKOFF: Backoff = Backoff {
    initial: Duration::from_millis(50),
    max: Duration::from_millis(500),
    multiplier: 2.0,
};

/// All node links of this router, placed by the ring.
#[derive(Clone)]
pub struct Links {
    inner: Arc<Inner>,
}

struct Inner {
    router_id: String,
    /// Random per process: nodes tell a restarted router from a reconnecting one.
    incarnation: u64,
    links: DashMap<String, Arc<NodeLink>>,
    sessions: Arc<Sessions>,
    /// The fallback bus, to reach nodes whose stream is down.
    bus: Option<(Publisher, BusConfig)>,
    /// The node of this process, attached in process (co-located mode).
    local: Option<LocalNode>,
    /// Lanes with sends waiting at the router: (session, conversation).
    waiting: dashmap::DashSet<(u64, ConversationId)>,
    ring: RingView,
    /// Gossip, told when a node's address refuses connections (set once
    /// gossip runs; none without a cluster).
    membership: std::sync::OnceLock<Membership>,
    /// Every task of the links (streams, redirects, delayed unsubscribes).
    tasks: TaskTracker,
    shutdown: CancellationToken,
}

impl Links {
    /// Starts a link task for every node on the ring; every task is spawned
    /// on `tasks` and ends by `shutdown`.
    pub fn start(
        router_id: String,
        ring: RingView,
        sessions: Arc<Sessions>,
        bus: Option<(Publisher, BusConfig)>,
        local: Option<LocalNode>,
        tasks: TaskTracker,
        shutdown: CancellationToken,
    ) -> Result<Self, tonic::transport::Error> {
        let links = Links {
            inner: Arc::new(Inner {
                router_id,
                incarnation: rand::random(),
                links: DashMap::new(),
                sessions,
                waiting: dashmap::DashSet::new(),
                bus,
                local,
                ring: ring.clone(),
                membership: std::sync::OnceLock::new(),
                tasks,
                shutdown,
            }),
        };
        for node in ring.current().nodes() {
            links.add(node.clone())?;
        }
        links.inner.tasks.spawn(links.clone().follow_ring());
        links.inner.tasks.spawn(links.clone().sweep_lanes());
        Ok(links)
    }

    /// From now on a link whose node refuses connections reports it to
    /// gossip as a suspect ([`Membership::suspect`]): a crashed process is
    /// declared down a probe cycle or more sooner.
    pub fn report_refusals_to(&self, membership: Membership) {
        let _ = self.inner.membership.set(membership);
    }

    /// Reacts to every ring change: links to new nodes, and every session
    /// subscription whose owner changed moves to the new owner from its
    /// last forwarded seq (the hand-over, seen from the router).
    async fn follow_ring(self) {
        let mut changes = self.inner.ring.subscribe();
        let shutdown = self.inner.shutdown.clone();
        loop {
            tokio::select! {
                changed = changes.changed() => if changed.is_err() { return },
                _ = shutdown.cancelled() => return,
            }
            let ring = changes.borrow_and_update().clone();
            for node in ring.nodes() {
                let known = self.inner.links.get(&node.id).map(|l| l.node.grpc.clone());
                if known.as_deref() == Some(node.grpc.as_str()) {
                    // Back on the ring at the same address (a restart): do
                    // not wait out the backoff of a link that was down.
                    if let Some(link) = self.inner.links.get(&node.id) {
                        if !link.is_up() {
                            link.wake.notify_one();
                        }
                    }
                }
                if known.as_deref() != Some(node.grpc.as_str()) {
                    if let Some((_, old)) = self.inner.links.remove(&node.id) {
                        old.stop.cancel();
                    }
                    if let Err(err) = self.add(node.clone()) {
                        tracing::error!(node = %node.id, %err, "bad node address");
                    }
                }
            }
            self.move_subscriptions(&ring);
            // Sends at nodes that left the ring go out again to the new
            // owners; sends waiting for an owner may go now.
            self.flush_in_flight();
            let departed: Vec<String> = self
                .inner
                .links
                .iter()
                .map(|link| link.key().clone())
                .filter(|id| !ring.nodes().iter().any(|node| &node.id == id))
                .collect();
            if !departed.is_empty() {
                self.inner
                    .tasks
                    .spawn(self.clone().drop_departed_later(departed));
            }
        }
    }

    fn move_subscriptions(&self, ring: &turbochat_cluster::Ring) {
        let mut moved = 0usize;
        let mut leaving = Vec::new();
        for session in self.inner.sessions.all() {
            if let Some(home) = ring.home_of(&session.user_id) {
                if session.registered_home(&home.id) {
                    if let Some(link) = self.node(&home.id) {
                        let _ =
                            link.send(router_frame::Frame::SessionOpened(session.opened_frame()));
                    }
                }
            }
            for (conversation, _) in session.cursors() {
                let Some(owner) = ring.owner_of(&conversation) else {
                    continue;
                };
                let Some((old_node, since)) = session.move_cursor(&conversation, &owner.id) else {
                    continue;
                };
                leaving.push((old_node, session.id, conversation));
                if let Some(new) = self.node(&owner.id) {
                    // If the new link is not up yet, its connect re-subscribes.
                    if let Some(frame) =
                        subscribe_frame(session.id, &session.user_id, conversation, since).frame
                    {
                        let _ = new.send(frame);
                    }
                }
                moved += 1;
            }
        }
        if moved > 0 {
            tracing::info!(subscriptions = moved, "moved subscriptions to new owners");
            metrics::counter!("turbochat_router_subscriptions_moved_total").increment(moved as u64);
        }
        if !leaving.is_empty() {
            self.inner
                .tasks
                .spawn(self.clone().unsubscribe_later(leaving));
        }
    }

    /// Closes the links to nodes that left the ring, once the old owners'
    /// grace (see [`Links::unsubscribe_later`]) is over, unless they came
    /// back meanwhile.
    async fn drop_departed_later(self, departed: Vec<String>) {
        tokio::select! {
            _ = tokio::time::sleep(OLD_OWNER_GRACE) => {}
            _ = self.inner.shutdown.cancelled() => return,
        }
        let ring = self.inner.ring.current();
        for id in departed {
            if ring.nodes().iter().any(|node| node.id == id) {
                continue;
            }
            if let Some((_, link)) = self.inner.links.remove(&id) {
                link.stop.cancel();
                tracing::info!(node = %id, "node left the ring; link closed");
            }
        }
    }

    /// Drops moved subscriptions at their old owner, after a grace period.
    ///
    /// The old owner may still commit the batch it had in flight when the
    /// ring changed, after the new owner has loaded the conversation: its
    /// fan-out is then the only copy of those messages a live session gets
    /// (the new owner learns of them only at its next write). Staying
    /// subscribed there for a while costs at most duplicates, which the
    /// cursors drop; an old owner that released the conversation has
    /// dropped its subscribers already and ignores the unsubscribe.
    async fn unsubscribe_later(self, leaving: Vec<(String, u64, ConversationId)>) {
        tokio::select! {
            _ = tokio::time::sleep(OLD_OWNER_GRACE) => {}
            _ = self.inner.shutdown.cancelled() => return,
        }
        for (old_node, session_id, conversation) in leaving {
            let back = self
                .inner
                .sessions
                .get(session_id)
                .and_then(|s| s.cursor(&conversation))
                .is_some_and(|c| c.node == old_node);
            if back {
                // The subscription moved back meanwhile: keep it.
                continue;
            }
            if let Some(old) = self.node(&old_node) {
                let _ = old.send(router_frame::Frame::Unsubscribe(Unsubscribe {
                    session_id,
                    conversation_id: conversation.to_string(),
                }));
            }
        }
    }

    fn add(&self, node: NodeInfo) -> Result<(), tonic::transport::Error> {
        let channel = Endpoint::from_shared(node.grpc.clone())?
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5))
            .keep_alive_while_idle(true)
            .connect_lazy();
        let link = Arc::new(NodeLink {
            node: node.clone(),
            channel,
            outbound: Mutex::new(None),
            bus: self.inner.bus.as_ref().map(|(publisher, config)| BusPath {
                publisher: publisher.clone(),
                channel: config.node_channel(&node.id),
                router_id: self.inner.router_id.clone(),
                incarnation: self.inner.incarnation,
            }),
            up: tokio::sync::watch::Sender::new(false),
            wake: tokio::sync::Notify::new(),
            stop: self.inner.shutdown.child_token(),
        });
        self.inner.links.insert(node.id.clone(), link.clone());
        self.inner.tasks.spawn(self.clone().maintain(link));
        Ok(())
    }

    /// The link to the owner of a conversation.
    pub fn owner(&self, conversation: &ConversationId) -> Option<Arc<NodeLink>> {
        let ring = self.inner.ring.current();
        let node = ring.owner_of(conversation)?;
        self.inner.links.get(&node.id).map(|l| l.clone())
    }

    /// The link to a user's home node.
    pub fn home(&self, user: &str) -> Option<Arc<NodeLink>> {
        let ring = self.inner.ring.current();
        let node = ring.home_of(user)?;
        self.inner.links.get(&node.id).map(|l| l.clone())
    }

    /// Registers a session with its user's home node (now, or when that
    /// node's link comes up).
    pub fn register_home(&self, session: &Session) {
        let Some(home) = self.home(&session.user_id) else {
            return;
        };
        session.registered_home(&home.node.id);
        let _ = home.send(router_frame::Frame::SessionOpened(session.opened_frame()));
    }

    /// The link to a node by id.
    pub fn node(&self, id: &str) -> Option<Arc<NodeLink>> {
        self.inner.links.get(id).map(|l| l.clone())
    }

    /// Whether the link to every node on the current ring is up (the
    /// router can reach every conversation's owner). Links to nodes that
    /// left the ring do not count: after a scale-down the router is ready
    /// again as soon as the ring has changed.
    pub fn all_up(&self) -> bool {
        let ring = self.inner.ring.current();
        let nodes = ring.nodes();
        !nodes.is_empty()
            && nodes.iter().all(|node| {
                self.inner
                    .links
                    .get(&node.id)
                    .is_some_and(|link| link.is_up())
            })
    }

    /// Keeps one node's stream connected until shutdown.
    async fn maintain(self, link: Arc<NodeLink>) {
        let mut reconnect = Reconnect::new(LINK_BACKOFF, Duration::ZERO);
        let shutdown = link.stop.clone();
        while !shutdown.is_cancelled() {
            match self.connect_once(&link).await {
                // It was up: the next attempt starts the schedule over.
                Ok(()) => reconnect.connected(Instant::now()),
                Err(status) => {
                    tracing::debug!(node = %link.node.id, %status, "link attempt failed");
                    if let (Some(membership), true) =
                        (self.inner.membership.get(), refused(&status))
                    {
                        membership.suspect(&link.node.id, &link.node.grpc);
                    }
                }
            }
            let was_up = link.up.send_replace(false);
            *link.outbound.lock().expect("link lock") = None;
            if was_up {
                // What was forwarded on the broken stream may never be
                // answered: it goes out again (the owner dedupes) — over
                // the bus, if there is one, with the subscriptions, from
                // their cursors: the owner replays exactly what was lost.
                self.node_lost(&link.node.id);
                if link.bus.is_some() {
                    self.resubscribe_over_bus(&link);
                }
            }
            let delay = reconnect.next_delay(Instant::now(), rand::random());
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                // The node (re)joined, or a send waits for us: try now.
                _ = link.wake.notified() => {}
                _ = shutdown.cancelled() => break,
            }
        }
    }

    /// One connection: attach, re-subscribe, pump node frames until it ends.
    async fn connect_once(&self, link: &Arc<NodeLink>) -> Result<(), tonic::Status> {
        let (tx, rx) = mpsc::channel(LINK_QUEUE);
        let hello = router_frame::Frame::Hello(Hello {
            router_id: self.inner.router_id.clone(),
            incarnation: self.inner.incarnation,
        });
        tx.send(RouterFrame {
            redirects: 0,
            frame: Some(hello),
        })
        .await
        .map_err(|_| tonic::Status::internal("link queue closed"))?;
        let local = self
            .inner
            .local
            .as_ref()
            .and_then(|local| local.attach_for(&link.node.id));
        let in_process = local.is_some();
        let mut inbound: NodeFrames = match local {
            Some(local) => {
                local
                    .attach(Box::pin(ReceiverStream::new(rx).map(Ok)))
                    .await?
            }
            None => Box::pin(
                link.client()
                    .attach(ReceiverStream::new(rx))
                    .await?
                    .into_inner(),
            ),
        };
        *link.outbound.lock().expect("link lock") = Some(tx.clone());
        link.up.send_replace(true);
        tracing::info!(node = %link.node.id, in_process, "link up");
        let path = if in_process { "in_process" } else { "grpc" };
        metrics::counter!("turbochat_link_connects_total", "path" => path).increment(1);
        self.resubscribe(link, &tx).await;
        // What went to this node over the bus meanwhile may have been lost
        // there (a node subscribes to its channel only once it runs): it
        // goes again on the stream, in order (the owner dedupes).
        self.node_lost(&link.node.id);
        self.flush_waiting();

        let shutdown = link.stop.clone();
        loop {
            let frame = tokio::select! {
                frame = inbound.next() => frame,
                _ = shutdown.cancelled() => return Ok(()),
            };
            match frame {
                Some(Ok(frame)) => self.on_node_frame(Some(link), frame.frame),
                None => {
                    tracing::warn!(node = %link.node.id, "link closed by node");
                    return Ok(());
                }
                Some(Err(status)) => {
                    tracing::warn!(node = %link.node.id, %status, "link failed");
                    return Err(status);
                }
            }
        }
    }

    /// Subscribes again, over the bus, every session whose cursor names
    /// this node (its stream just broke), and registers its homes there.
    fn resubscribe_over_bus(&self, link: &NodeLink) {
        let (frames, subscriptions) = self.reattach_frames(&link.node.id);
        for frame in frames {
            let _ = link.send_frame(frame);
        }
        if subscriptions > 0 {
            tracing::info!(node = %link.node.id, subscriptions, "stream down: re-subscribed over the bus");
        }
    }

    /// Re-subscribes every session whose cursor names this node.
    async fn resubscribe(&self, link: &NodeLink, tx: &mpsc::Sender<RouterFrame>) {
        let (frames, subscriptions) = self.reattach_frames(&link.node.id);
        for frame in frames {
            if tx.send(frame).await.is_err() {
                return;
            }
        }
        if subscriptions > 0 {
            tracing::info!(node = %link.node.id, subscriptions, "re-subscribed sessions");
        }
    }

    /// What a node must hear again from this router: every session homed
    /// there (registered as such), and every subscription whose cursor
    /// names it, from the cursor. Returns the frames and how many are
    /// subscriptions.
    fn reattach_frames(&self, node: &str) -> (Vec<RouterFrame>, usize) {
        let ring = self.inner.ring.current();
        let mut frames = Vec::new();
        let mut subscriptions = 0usize;
        for session in self.inner.sessions.all() {
            if ring.home_of(&session.user_id).is_some_and(|h| h.id == node) {
                session.registered_home(node);
                frames.push(RouterFrame {
                    redirects: 0,
                    frame: Some(router_frame::Frame::SessionOpened(session.opened_frame())),
                });
            }
            for (conversation, cursor) in session.cursors() {
                if cursor.node == node {
                    frames.push(subscribe_frame(
                        session.id,
                        &session.user_id,
                        conversation,
                        cursor.last_seq,
                    ));
                    subscriptions += 1;
                }
            }
        }
        (frames, subscriptions)
    }
}

/// How long a moved subscription stays at its old owner (see
/// [`Links::unsubscribe_later`]).
const OLD_OWNER_GRACE: Duration = Duration::from_secs(5);
/// Most redirects one frame may take while ring views converge.
const MAX_REDIRECTS: u32 = 30;
/// Most redirects of a subscribe (about a minute at one per pause).
const MAX_SUBSCRIBE_REDIRECTS: u32 = 600;
/// Pause between redirect attempts.
const REDIRECT_PAUSE: Duration = Duration::from_millis(100);

fn subscribe_frame(
    session_id: u64,
    user_id: &str,
    conversation: ConversationId,
    since: Option<Seq>,
) -> RouterFrame {
    RouterFrame {
        redirects: 0,
        frame: Some(router_frame::Frame::Subscribe(Subscribe {
            session_id,
            user_id: user_id.to_string(),
            conversation_id: conversation.to_string(),
            since,
        })),
    }
}
