//! Fan-out to routers: a stable address per router process, and the
//! registry that carries owners' frames (deliveries, acks, errors) to it.
//!
//! A [`RouterLink`] names one router *process* (its id and the incarnation
//! it announced in `hello`), not one gRPC stream: when the router's stream
//! drops and comes back, the same `RouterLink` reaches it again, so owners
//! keep its subscriptions across the gap. A frame goes over the current
//! stream when there is one; otherwise (or when the stream's queue is full,
//! which cuts it) it goes over the fallback bus (Redis) when configured.
//! Owners never wait on a router.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use dashmap::DashMap;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use turbochat_protocol::frame::ServerFrame;
use turbochat_protocol::ids::{ConversationId, Seq};
use turbochat_protocol::link::{node_frame, Deliver, DeliverKind, NodeFrame};

use crate::bus::Bus;
use crate::refusal::Refusal;

/// What the gRPC response stream carries.
pub type LinkItem = Result<NodeFrame, tonic::Status>;

/// Whether a frame left for the router.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Queued on the stream or published on the bus.
    Queued,
    /// No way to reach the router right now; it recovers by re-subscribing.
    Gone,
}

/// One live gRPC stream to a router.
#[derive(Debug)]
struct Stream {
    number: u64,
    tx: mpsc::Sender<LinkItem>,
    cut: CancellationToken,
}

/// The outbound half of one router stream as tonic polls it. When tonic
/// drops it (the connection died, or the link was cut), frames still queued
/// are handed to the fallback bus instead of being lost with the stream.
pub struct Outbound {
    rx: mpsc::Receiver<LinkItem>,
    router_id: Arc<str>,
    routers: Routers,
}

impl Outbound {
    /// Wraps the receiver of a stream registered with [`Routers::attach`].
    pub fn new(rx: mpsc::Receiver<LinkItem>, link: &RouterLink) -> Self {
        Outbound {
            rx,
            router_id: link.router_id.clone(),
            routers: link.routers.clone(),
        }
    }
}

impl futures::Stream for Outbound {
    type Item = LinkItem;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<LinkItem>> {
        self.rx.poll_recv(cx)
    }
}

impl Drop for Outbound {
    fn drop(&mut self) {
        self.rx.close();
        let Some(bus) = &self.routers.inner.bus else {
            return;
        };
        let mut rescued = 0u64;
        while let Ok(Ok(frame)) = self.rx.try_recv() {
            if bus.publish(&self.router_id, &frame) {
                rescued += 1;
            }
        }
        if rescued > 0 {
            metrics::counter!("turbochat_bus_rescued_total").increment(rescued);
            tracing::info!(router = %self.router_id, rescued, "frames of a dead link sent over the bus");
        }
    }
}

/// Every router this node has heard from, and how to reach each.
#[derive(Clone, Debug)]
pub struct Routers {
    inner: Arc<RoutersInner>,
}

#[derive(Debug)]
struct RoutersInner {
    slots: DashMap<(String, u64), u64>,
    streams: DashMap<u64, Stream>,
    /// When each router was last heard on the bus (by slot).
    heard_on_bus: DashMap<u64, std::time::Instant>,
    next: AtomicU64,
    bus: Option<Bus>,
}

impl Routers {
    /// A registry that falls back to `bus` when a stream is missing.
    pub fn new(bus: Option<Bus>) -> Self {
        Routers {
            inner: Arc::new(RoutersInner {
                slots: DashMap::new(),
                streams: DashMap::new(),
                heard_on_bus: DashMap::new(),
                next: AtomicU64::new(1),
                bus,
            }),
        }
    }

    /// Registers a new stream for router `(id, incarnation)` (replacing an
    /// older one) and returns the router's address and the stream's number.
    pub fn attach(
        &self,
        router_id: &str,
        incarnation: u64,
        tx: mpsc::Sender<LinkItem>,
        cut: CancellationToken,
    ) -> (RouterLink, u64) {
        let slot = self.slot(router_id, incarnation);
        let number = self.inner.next.fetch_add(1, Ordering::Relaxed);
        if let Some(old) = self.inner.streams.insert(slot, Stream { number, tx, cut }) {
            old.cut.cancel();
        }
        let link = RouterLink {
            slot,
            router_id: Arc::from(router_id),
            routers: self.clone(),
        };
        (link, number)
    }

    /// The stable address of router process `(id, incarnation)`.
    fn slot(&self, router_id: &str, incarnation: u64) -> u64 {
        *self
            .inner
            .slots
            .entry((router_id.to_string(), incarnation))
            .or_insert_with(|| self.inner.next.fetch_add(1, Ordering::Relaxed))
    }

    /// The address of router `(id, incarnation)` when it speaks over the
    /// bus: the same as its stream's, so subscriptions made either way are
    /// one; answers go by its stream if any, else by the bus.
    pub fn heard_on_bus(&self, router_id: &str, incarnation: u64) -> RouterLink {
        let slot = self.slot(router_id, incarnation);
        self.inner
            .heard_on_bus
            .insert(slot, std::time::Instant::now());
        RouterLink {
            slot,
            router_id: Arc::from(router_id),
            routers: self.clone(),
        }
    }

    /// Whether the router of `link` spoke over the bus after `since`.
    pub fn heard_on_bus_since(&self, link: &RouterLink, since: std::time::Instant) -> bool {
        self.inner
            .heard_on_bus
            .get(&link.slot)
            .is_some_and(|at| *at > since)
    }

    /// Forgets stream `number` of `link` if it is still the current one.
    pub fn detach(&self, link: &RouterLink, number: u64) {
        self.inner
            .streams
            .remove_if(&link.slot, |_, stream| stream.number == number);
    }

    fn connected(&self, slot: u64) -> bool {
        self.inner
            .streams
            .get(&slot)
            .is_some_and(|s| !s.cut.is_cancelled())
    }

    fn send(&self, slot: u64, router_id: &str, frame: NodeFrame) -> Delivery {
        let frame = match self.inner.streams.get(&slot) {
            Some(stream) if !stream.cut.is_cancelled() => match stream.tx.try_send(Ok(frame)) {
                Ok(()) => return Delivery::Queued,
                Err(mpsc::error::TrySendError::Full(Ok(frame))) => {
                    tracing::warn!(router = %router_id,
                        "router link queue full; cutting the link so the router resubscribes");
                    metrics::counter!("turbochat_link_overflows_total").increment(1);
                    stream.cut.cancel();
                    frame
                }
                Err(mpsc::error::TrySendError::Full(Err(_)))
                | Err(mpsc::error::TrySendError::Closed(Err(_))) => return Delivery::Gone,
                Err(mpsc::error::TrySendError::Closed(Ok(frame))) => frame,
            },
            _ => frame,
        };
        match &self.inner.bus {
            Some(bus) if bus.publish(router_id, &frame) => Delivery::Queued,
            _ => Delivery::Gone,
        }
    }

    async fn send_patiently(
        &self,
        slot: u64,
        router_id: &str,
        frame: NodeFrame,
        patience: std::time::Duration,
    ) -> Delivery {
        let stream = self
            .inner
            .streams
            .get(&slot)
            .filter(|s| !s.cut.is_cancelled())
            .map(|s| (s.tx.clone(), s.cut.clone()));
        let Some((tx, cut)) = stream else {
            return self.send(slot, router_id, frame);
        };
        match tokio::time::timeout(patience, tx.send(Ok(frame))).await {
            Ok(Ok(())) => Delivery::Queued,
            Ok(Err(_)) => Delivery::Gone,
            Err(_) => {
                tracing::warn!(router = %router_id,
                    "router did not drain its link during a replay; cutting the link");
                metrics::counter!("turbochat_link_overflows_total").increment(1);
                cut.cancel();
                Delivery::Gone
            }
        }
    }
}

/// The address of one router process. Cheap to clone; frames sent through
/// it take the router's current stream, or the bus.
#[derive(Clone, Debug)]
pub struct RouterLink {
    slot: u64,
    router_id: Arc<str>,
    routers: Routers,
}

/// A `Deliver`; `client_msg_id` names the send it answers, if any.
fn deliver_frame(
    session_ids: Vec<u64>,
    conversation_id: ConversationId,
    seq: Seq,
    kind: DeliverKind,
    payload: Bytes,
    client_msg_id: String,
) -> NodeFrame {
    NodeFrame {
        frame: Some(node_frame::Frame::Deliver(Deliver {
            session_ids,
            conversation_id: conversation_id.to_string(),
            seq,
            kind: kind as i32,
            payload,
            client_msg_id,
        })),
    }
}

impl RouterLink {
    /// Process-unique id of the router process (stable across its reconnects).
    pub fn id(&self) -> u64 {
        self.slot
    }

    /// The router's id (from its `hello`).
    pub fn router_id(&self) -> &str {
        &self.router_id
    }

    /// Whether the router has a live stream to this node now.
    pub fn is_connected(&self) -> bool {
        self.routers.connected(self.slot)
    }

    /// Sends a `Deliver` of `payload` to `session_ids`.
    pub fn deliver(
        &self,
        session_ids: Vec<u64>,
        conversation_id: ConversationId,
        seq: Seq,
        kind: DeliverKind,
        payload: Bytes,
    ) -> Delivery {
        self.push(deliver_frame(
            session_ids,
            conversation_id,
            seq,
            kind,
            payload,
            String::new(),
        ))
    }

    /// Like [`RouterLink::deliver`] but waits (up to `patience`) for room on
    /// the stream instead of cutting it: for replays, which may be long and
    /// are sent by a task that can afford to wait.
    pub async fn deliver_patiently(
        &self,
        session_ids: Vec<u64>,
        conversation_id: ConversationId,
        seq: Seq,
        kind: DeliverKind,
        payload: Bytes,
        patience: std::time::Duration,
    ) -> Delivery {
        let frame = deliver_frame(
            session_ids,
            conversation_id,
            seq,
            kind,
            payload,
            String::new(),
        );
        self.routers
            .send_patiently(self.slot, &self.router_id, frame, patience)
            .await
    }

    /// Sends a raw frame.
    pub fn push(&self, frame: NodeFrame) -> Delivery {
        self.routers.send(self.slot, &self.router_id, frame)
    }

    /// Sends one server frame to one session.
    pub fn to_session(
        &self,
        session_id: u64,
        conversation_id: ConversationId,
        seq: Seq,
        kind: DeliverKind,
        frame: &ServerFrame,
    ) -> Delivery {
        self.answer(session_id, conversation_id, seq, kind, frame, String::new())
    }

    /// Asks the router to subscribe `session_ids` to `conversation_id`
    /// again, from their cursors (this node lost the subscriptions).
    pub fn resubscribe(&self, conversation_id: ConversationId, session_ids: Vec<u64>) -> Delivery {
        self.push(NodeFrame {
            frame: Some(node_frame::Frame::Resubscribe(
                turbochat_protocol::link::Resubscribe {
                    conversation_id: conversation_id.to_string(),
                    session_ids,
                },
            )),
        })
    }

    /// Sends `refusal` as an `error` frame to one session (naming the
    /// `send` it answers, if any).
    pub fn refuse(
        &self,
        session_id: u64,
        conversation_id: ConversationId,
        refusal: &Refusal,
        client_msg_id: Option<String>,
    ) -> Delivery {
        metrics::counter!("turbochat_client_errors_total", "code" => refusal.code.as_str())
            .increment(1);
        let answers = client_msg_id.clone().unwrap_or_default();
        let frame = refusal.frame(Some(conversation_id), client_msg_id);
        self.answer(
            session_id,
            conversation_id,
            0,
            DeliverKind::Error,
            &frame,
            answers,
        )
    }

    /// Sends one server frame to one session; for the answer to a send
    /// (its `ack` or `error`), `client_msg_id` names the send, so the router
    /// answers each send once (empty otherwise).
    pub fn answer(
        &self,
        session_id: u64,
        conversation_id: ConversationId,
        seq: Seq,
        kind: DeliverKind,
        frame: &ServerFrame,
        client_msg_id: String,
    ) -> Delivery {
        self.push(deliver_frame(
            vec![session_id],
            conversation_id,
            seq,
            kind,
            Bytes::from(frame.to_json()),
            client_msg_id,
        ))
    }
}
