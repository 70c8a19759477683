//! `turbochat-node`: owns the conversations the ring places on it.
//!
//! Data path: a router's frame arrives on the [`link`] stream → an owner
//! [`owner::Command`] → the conversation's [`owner`] task (single writer:
//! seq, participants, subscribers) → the store's group-commit writer → ack
//! and fan-out back over each subscribed router's link.

pub mod bus;
pub mod config;
pub mod fanout;
pub mod homes;
pub mod link;
pub mod owner;
pub mod ownership;
pub mod peers;
pub mod push;
pub mod refusal;
pub mod safety;
pub mod user_events;

use std::net::SocketAddr;
use std::sync::Arc;

use std::future::IntoFuture;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use turbochat_cluster::{feed_ring, Member, MemberState, Membership, Ring, RingView, Role};
use turbochat_protocol::link::link_server::LinkServer;
use turbochat_service::ops::Readiness;
use turbochat_store::{Store, StoreError, Writer};

use crate::config::Config;
use crate::link::LinkService;
use crate::owner::Owners;
use crate::ownership::Ownership;

/// Why the node could not start or stopped badly.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The store could not be opened or migrated.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// A server failed while running.
    #[error("server: {0}")]
    Serve(String),
    /// Push could not start (e.g. an unusable FCM key).
    #[error(transparent)]
    Push(#[from] crate::push::PushError),
    /// Blocks or moderation could not start (e.g. a bad rule).
    #[error(transparent)]
    Safety(#[from] crate::safety::SafetyError),
}

/// Where a started node listens.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Listening {
    /// Node id.
    pub id: String,
    /// gRPC link address.
    pub grpc: SocketAddr,
    /// Operator HTTP address.
    pub http: SocketAddr,
    /// Gossip address, when gossip is on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gossip: Option<SocketAddr>,
}

/// Runs a node until `signal` is cancelled, then leaves gracefully: with
/// gossip it announces `leaving` (it drops off every ring, routers move
/// their sessions away, owners release their conversations) and waits for
/// its owners to finish, up to `node.drain_timeout`; then links close, the
/// writer commits what it holds, and the node leaves the cluster.
/// `on_ready` is called once the listeners are bound.
pub async fn run(
    config: Config,
    signal: CancellationToken,
    metrics: metrics_exporter_prometheus::PrometheusHandle,
    on_ready: impl FnOnce(&Listening),
) -> Result<(), NodeError> {
    run_with_local(config, signal, metrics, None, on_ready).await
}

/// [`run`], also serving the link in process through `local` (the
/// co-located mode: a router of this process attaches there instead of
/// over gRPC; routers of other processes still attach over gRPC).
pub async fn run_with_local(
    config: Config,
    signal: CancellationToken,
    metrics: metrics_exporter_prometheus::PrometheusHandle,
    local: Option<turbochat_protocol::local::LocalNode>,
    on_ready: impl FnOnce(&Listening),
) -> Result<(), NodeError> {
    let readiness = Readiness::default();
    let shutdown = CancellationToken::new();
    // Every background task of this process but the owners (which have
    // their own tracker) and the writer: joined before `run` returns.
    let tasks = TaskTracker::new();
    let store: Arc<dyn Store> =
        turbochat_store::open(&config.store.url, config.store.max_connections).await?;
    tracing::info!(store = %redact_url(&config.store.url), "store open and migrated");
    let push_worker = crate::push::worker(&config.push, &config.node.id, store.clone())?;
    match (config.owner.push_enabled, push_worker.is_some()) {
        (false, true) => tracing::info!(
            "owner.push_enabled is off: this node queues no push jobs, but sends those others queue"
        ),
        (true, false) => tracing::warn!(
            "push.backend is off: push jobs queued here wait for a node that sends them"
        ),
        _ => {}
    }

    // The writer outlives the owners so their last batches can commit.
    let writer_shutdown = CancellationToken::new();
    let (writer, writer_task) = Writer::spawn(
        store.clone(),
        config.store.writer.clone(),
        writer_shutdown.clone(),
    );
    let ring = RingView::new(Ring::empty());
    let peers = crate::peers::Peers::default();
    let safety = crate::safety::Safety::new(
        config.node.id.clone(),
        &config.safety,
        &config.moderation,
        store.clone(),
        config.cluster.enabled.then(|| ring.clone()),
        peers.clone(),
        tasks.clone(),
    )?;
    // Refused from the first request on: the ban list is read before the
    // node serves, then kept current.
    safety.reload_bans().await?;
    tasks.spawn(safety.clone().follow_bans(shutdown.clone()));
    let owners = Owners::new(
        store.clone(),
        writer,
        config.owner.clone(),
        safety.clone(),
        shutdown.clone(),
    );
    tasks.spawn(crate::safety::retention::run(
        store.clone(),
        owners.clone(),
        config.safety.message_retention,
        config.safety.retention_interval,
        config.safety.retention_batch,
        shutdown.clone(),
    ));

    let grpc_listener = bind(config.node.grpc_listen).await?;
    let http_listener = bind(config.node.http_listen).await?;
    let grpc_addr = grpc_listener
        .local_addr()
        .map_err(|e| NodeError::Serve(e.to_string()))?;
    let http_addr = http_listener
        .local_addr()
        .map_err(|e| NodeError::Serve(e.to_string()))?;

    let (ownership, membership) = if config.cluster.enabled {
        let me = Member {
            id: config.node.id.clone(),
            role: Role::Node,
            gossip: config.cluster.gossip.gossip_listen,
            grpc: Some(
                config
                    .node
                    .grpc_advertise
                    .clone()
                    .unwrap_or_else(|| format!("http://{grpc_addr}")),
            ),
            http: Some(http_addr.to_string()),
            state: MemberState::Active,
            generation: 0,
        };
        let membership = Membership::start(me, config.cluster.gossip.clone(), shutdown.clone())
            .await
            .map_err(|e| NodeError::Serve(e.to_string()))?;
        tasks.spawn(feed_ring(
            membership.subscribe(),
            ring.clone(),
            config.node.vnodes,
            shutdown.clone(),
        ));
        tasks.spawn(release_on_change(
            membership.subscribe(),
            ring.clone(),
            owners.clone(),
            Ownership::by_ring(config.node.id.clone(), ring.clone()),
            shutdown.clone(),
        ));
        (
            Ownership::by_ring(config.node.id.clone(), ring.clone()),
            Some(membership),
        )
    } else {
        (Ownership::everything(config.node.id.clone()), None)
    };
    let listening = Listening {
        id: config.node.id.clone(),
        grpc: grpc_addr,
        http: http_addr,
        gossip: membership.as_ref().map(|m| m.gossip_addr()),
    };

    let bus = crate::bus::Bus::start(&config.bus, &tasks, shutdown.clone());
    if bus.is_some() {
        tracing::info!("fallback bus on (Redis)");
    }
    let routers = crate::fanout::Routers::new(bus);
    let events = crate::user_events::UserEvents::new(
        config.node.id.clone(),
        membership.as_ref().map(|_| ring.clone()),
        store.clone(),
        peers,
        config.owner.presence_grace,
        tasks.clone(),
    );
    safety.set_user_events(events.clone());
    safety.set_system_post(crate::safety::system::SystemPost::start(
        owners.clone(),
        ownership.clone(),
        &routers,
        &tasks,
        shutdown.clone(),
    ));
    let link = LinkService::new(
        owners.clone(),
        events,
        ownership,
        routers,
        config.node.link_grace,
        store.clone(),
        turbochat_service::Background {
            tasks: tasks.clone(),
            shutdown: shutdown.clone(),
        },
    );
    if let Some(local) = &local {
        local.serve(config.node.id.clone(), Arc::new(link.clone()));
    }
    tasks.spawn(
        link.clone()
            .listen_bus(config.bus.clone(), config.node.id.clone()),
    );
    let grpc = tasks.spawn(
        tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(std::time::Duration::from_secs(10)))
            .http2_keepalive_timeout(Some(std::time::Duration::from_secs(5)))
            .add_service(LinkServer::new(link))
            .add_service(
                turbochat_protocol::safety::safety_server::SafetyServer::new(safety.clone()),
            )
            // tonic applies its own `tcp_nodelay` only to listeners it binds
            // itself; without it, Nagle holds a small fan-out or ack frame
            // back until the router acks the previous one (up to its 40 ms
            // delayed ACK).
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(grpc_listener).with_nodelay(Some(true)),
                shutdown.clone().cancelled_owned(),
            ),
    );
    let report_membership = membership.clone();
    let report_ring = ring.clone();
    let static_me = config.node.id.clone();
    let http_app = axum::Router::new()
        .route(
            "/cluster",
            axum::routing::get(move || {
                let mut report = turbochat_cluster::report::ClusterReport::new(
                    report_membership.as_ref(),
                    &report_ring.current(),
                );
                report.me.get_or_insert(static_me.clone());
                async move { axum::Json(report) }
            }),
        )
        .merge(crate::safety::admin::Admin::new(safety.clone(), &config.admin).routes())
        .merge(turbochat_service::ops::routes(readiness.clone(), metrics));
    let http = tasks.spawn(
        axum::serve(http_listener, http_app)
            .with_graceful_shutdown(shutdown.clone().cancelled_owned())
            .into_future(),
    );

    // Stopped with the rest (after the drain); it finishes the jobs in
    // flight, and a job it cannot finish is retried after its lease.
    let push_task = push_worker.map(|worker| tasks.spawn(worker.run(shutdown.clone())));

    readiness.set(true);
    tracing::info!(node = %listening.id, grpc = %listening.grpc, http = %listening.http, "node ready");
    on_ready(&listening);

    signal.cancelled().await;
    readiness.set(false);
    if let Some(membership) = &membership {
        tracing::info!("leaving: announcing, letting routers move sessions away");
        let _ = membership.set_state(MemberState::Leaving).await;
        let deadline = tokio::time::Instant::now() + config.node.drain_timeout;
        while owners.active() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        tracing::info!(remaining = owners.active(), "drained");
    }
    shutdown.cancel();
    let grpc_result = grpc.await;
    let http_result = http.await;
    tracing::info!("listeners closed; draining owners");
    owners.wait_stopped().await;
    if let Some(task) = push_task {
        let _ = task.await;
    }
    writer_shutdown.cancel();
    let _ = writer_task.await;
    tasks.close();
    if tokio::time::timeout(config.node.drain_timeout, tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!("background tasks did not finish within the drain timeout");
    }
    tracing::info!("node stopped");
    match grpc_result {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(NodeError::Serve(e.to_string())),
        Err(e) => return Err(NodeError::Serve(e.to_string())),
    }
    match http_result {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(NodeError::Serve(e.to_string())),
        Err(e) => Err(NodeError::Serve(e.to_string())),
    }
}

/// How long after a node vanished without leaving (a crash, or a split)
/// the owners with subscribers read others' writes from the store.
const SPLIT_WATCH: std::time::Duration = std::time::Duration::from_secs(30);
/// How often they read them meanwhile.
const SPLIT_POLL: std::time::Duration = std::time::Duration::from_millis(250);

/// Releases owner tasks whose conversations moved away on a ring change,
/// and every owner task when the cluster declared this node down (its hot
/// state may be stale: others owned its conversations meanwhile).
///
/// When views of the membership disagree (a gossip-only partition), both
/// sides own the vanished side's conversations: availability first, with
/// the store's `(conversation, seq)` uniqueness fencing the writes, so no
/// seq is shared and nothing acked is lost. Fan-out then reaches only the
/// writer's own subscribers, so for [`SPLIT_WATCH`] after a node vanished
/// without leaving (or we were declared down) every owner with subscribers
/// reads what others wrote every [`SPLIT_POLL`] and fans it out: receivers
/// on either side see every message within about that. A crash costs the
/// same reads, for nothing, for a while.
async fn release_on_change(
    mut view: tokio::sync::watch::Receiver<turbochat_cluster::ClusterView>,
    ring: RingView,
    owners: Owners,
    ownership: Ownership,
    shutdown: CancellationToken,
) {
    let mut rings = ring.subscribe();
    let mut declared_down = view.borrow().times_declared_down;
    let mut nodes = active_nodes(&view.borrow());
    let mut watch_until: Option<tokio::time::Instant> = None;
    let mut poll = tokio::time::interval(SPLIT_POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let watching = watch_until.is_some_and(|until| tokio::time::Instant::now() < until);
        tokio::select! {
            _ = poll.tick(), if watching => {
                owners.poll_all();
            }
            changed = rings.changed() => {
                if changed.is_err() { return }
                let released = owners.release_unless(|c| ownership.owns(c));
                let kept = owners.catch_up_all();
                if released > 0 {
                    tracing::info!(released, kept, "ring changed; released conversations owned elsewhere now");
                }
            }
            changed = view.changed() => {
                if changed.is_err() { return }
                let current = view.borrow_and_update().clone();
                let now_nodes = active_nodes(&current);
                let vanished: Vec<&String> = nodes.difference(&now_nodes).collect();
                let now = current.times_declared_down;
                let vanished_without_leaving = vanished
                    .iter()
                    .any(|id| !current.members.contains_key(id.as_str()));
                if vanished_without_leaving || now != declared_down {
                    if !watching {
                        tracing::info!(?vanished, "a node vanished without leaving: owners read others' writes for a while");
                        metrics::counter!("turbochat_split_watches_total").increment(1);
                    }
                    watch_until = Some(tokio::time::Instant::now() + SPLIT_WATCH);
                }
                nodes = now_nodes;
                if now != declared_down {
                    declared_down = now;
                    // Others took our conversations meanwhile: give up those
                    // we no longer own, catch the others up with what was
                    // written while we were away. (Dropping those too would
                    // strand the subscriptions of routers that never saw us
                    // down, as on one side of a partition.)
                    let released = owners.release_unless(|c| ownership.owns(c));
                    let kept = owners.catch_up_all();
                    tracing::warn!(released, kept, "declared down by the cluster; caught up with the store");
                }
            }
            _ = shutdown.cancelled() => return,
        }
    }
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, NodeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| NodeError::Bind { addr, source })
}

/// The store URL without its password, for logs.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}://{}:***@{}", &url[..scheme], user, &url[at + 1..])
        }
        _ => url.to_string(),
    }
}

/// Ids of the active nodes in a view.
fn active_nodes(view: &turbochat_cluster::ClusterView) -> std::collections::BTreeSet<String> {
    view.members
        .values()
        .filter(|m| {
            m.role == turbochat_cluster::Role::Node
                && m.state == turbochat_cluster::MemberState::Active
        })
        .map(|m| m.id.clone())
        .collect()
}
