//! `turbochat-router`: the stateless front.
//!
//! Data path: accept ([`ws::upgrade`], JWT checked first by [`auth`]) →
//! session (read task + write task, [`sessions`]) → client frame → the
//! conversation's owner node, found on the ring, over its [`link`] → the
//! node's answers and fan-out come back on the same link and are written to
//! the sessions they name. [`http`] serves history and conversations.

pub mod auth;
pub mod bans;
pub mod bus;
pub mod config;
pub mod http;
pub mod lanes;
pub mod limits;
pub mod link;
pub mod listener;
pub mod media;
pub mod outbox;
pub mod sessions;
pub mod web;
pub mod web_push;
pub mod ws;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::routing::{get, post};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_http::trace::{DefaultOnFailure, DefaultOnResponse, TraceLayer};
use tracing::Level;
use turbochat_cluster::{feed_ring, Member, MemberState, Membership, Ring, RingView, Role};
use turbochat_service::ops::Readiness;

use crate::auth::{HasVerifier, Verifier};
use crate::config::{Config, Limits};
use crate::limits::UserLimits;
use crate::link::Links;
use crate::listener::ConnectionLimits;
use crate::sessions::Sessions;

/// Why the router could not start or stopped badly.
#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    /// `[auth]` is unusable.
    #[error("auth: {0}")]
    Auth(#[from] auth::AuthConfigError),
    /// A node address is unusable.
    #[error("node link: {0}")]
    Link(#[from] tonic::transport::Error),
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The server failed while running.
    #[error("server: {0}")]
    Serve(#[from] std::io::Error),
    /// Gossip could not start.
    #[error("membership: {0}")]
    Membership(#[from] turbochat_cluster::membership::MembershipError),
    /// `[media]` is unusable.
    #[error("media: {0}")]
    Media(#[from] media::MediaError),
}

/// Shared state of the router's handlers. Cheap to clone.
#[derive(Clone)]
pub struct App {
    inner: Arc<AppInner>,
}

struct AppInner {
    verifier: Verifier,
    links: Links,
    sessions: Arc<Sessions>,
    media: media::Media,
    limits: Limits,
    users: UserLimits,
    /// Clients of the nodes' `Safety` service (blocks, reports, bans).
    safety: http::safety::SafetyClients,
    /// Banned users (polled from the nodes).
    bans: bans::Bans,
    shutdown: CancellationToken,
    /// Sessions (each WebSocket's tasks), joined on shutdown.
    tracker: TaskTracker,
}

impl HasVerifier for App {
    fn verifier(&self) -> &Verifier {
        &self.inner.verifier
    }
}

/// Where a started router listens.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Listening {
    /// Router id.
    pub id: String,
    /// HTTP + WebSocket address (clients).
    pub http: SocketAddr,
    /// Operator address: `/metrics`, `/cluster`, `/healthz`, `/readyz`.
    pub ops: SocketAddr,
    /// Gossip address, when gossip is on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gossip: Option<SocketAddr>,
}

/// Runs a router until `shutdown`, then closes sessions (1001) and drains.
/// `on_ready` is called once the router can serve: listeners bound, and
/// its links to the nodes up (or after `router.ready_timeout`, with the
/// router still answering `/readyz` 503 until they are).
pub async fn run(
    config: Config,
    shutdown: CancellationToken,
    metrics: metrics_exporter_prometheus::PrometheusHandle,
    on_ready: impl FnOnce(&Listening),
) -> Result<(), RouterError> {
    run_with_local(config, shutdown, metrics, None, on_ready).await
}

/// [`run`], attaching to the node of this process (`local`, once it
/// serves) in process instead of over gRPC: the co-located mode. Links to
/// every other node are gRPC streams as always.
pub async fn run_with_local(
    config: Config,
    shutdown: CancellationToken,
    metrics: metrics_exporter_prometheus::PrometheusHandle,
    local: Option<turbochat_protocol::local::LocalNode>,
    on_ready: impl FnOnce(&Listening),
) -> Result<(), RouterError> {
    // Background tasks of this process: joined before it returns.
    let tasks = TaskTracker::new();
    let verifier = Verifier::from_config(&config.auth)?;
    if config.auth.secret.as_deref() == Some(auth::DEVELOPMENT_SECRET) {
        tracing::warn!(
            "auth.secret is the public development secret of configs/dev.toml: anyone can \
             mint tokens this router accepts; never use it beyond a development machine"
        );
    }
    let media = media::Media::open(config.media.clone())?;
    let vnodes = config.router.vnodes;
    // With gossip the ring comes from the cluster alone: a static node list
    // (the shared config file's, for static routing) is not used.
    let static_nodes = if config.cluster.enabled {
        if !config.router.nodes.is_empty() {
            tracing::warn!(
                nodes = config.router.nodes.len(),
                "cluster.enabled: router.nodes is ignored (gossip finds the nodes)"
            );
        }
        Vec::new()
    } else {
        config.router.nodes.clone()
    };
    let ring = RingView::new(Ring::new(static_nodes, vnodes));
    let sessions = Arc::new(Sessions::default());
    let bus_out = config.bus.url().map(|url| {
        (
            turbochat_cluster::bus::Publisher::start(url, &tasks, shutdown.clone()),
            config.bus.clone(),
        )
    });
    let links = Links::start(
        config.router.id.clone(),
        ring.clone(),
        sessions.clone(),
        bus_out,
        local,
        tasks.clone(),
        shutdown.clone(),
    )?;
    tasks.spawn(bus::listen(
        config.bus.clone(),
        config.router.id.clone(),
        links.clone(),
        shutdown.clone(),
    ));
    let app = App {
        inner: Arc::new(AppInner {
            verifier,
            links: links.clone(),
            sessions,
            media,
            limits: config.limits.clone(),
            users: UserLimits::new(&config.limits),
            safety: Default::default(),
            bans: Default::default(),
            shutdown: shutdown.clone(),
            tracker: TaskTracker::new(),
        }),
    };

    let bind = |addr: SocketAddr| async move {
        tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| RouterError::Bind { addr, source })
    };
    let listener = bind(config.router.listen).await?;
    let ops_listener = bind(config.router.ops_listen).await?;
    let http_addr = listener.local_addr()?;
    let ops_addr = ops_listener.local_addr()?;
    let membership = if config.cluster.enabled {
        let me = Member {
            id: config.router.id.clone(),
            role: Role::Router,
            gossip: config.cluster.gossip.gossip_listen,
            grpc: None,
            http: Some(ops_addr.to_string()),
            state: MemberState::Active,
            generation: 0,
        };
        let membership =
            Membership::start(me, config.cluster.gossip.clone(), shutdown.clone()).await?;
        links.report_refusals_to(membership.clone());
        tasks.spawn(feed_ring(
            membership.subscribe(),
            ring.clone(),
            vnodes,
            shutdown.clone(),
        ));
        Some(membership)
    } else {
        None
    };
    let listening = Listening {
        id: config.router.id.clone(),
        http: http_addr,
        ops: ops_addr,
        gossip: membership.as_ref().map(|m| m.gossip_addr()),
    };

    let readiness = Readiness::default();
    let client_routes = axum::Router::new()
        .route("/ws", get(ws::upgrade))
        .route("/history", get(http::history))
        .route(
            "/devices",
            get(http::devices::list).put(http::devices::register),
        )
        .route(
            "/devices/{token}",
            axum::routing::delete(http::devices::unregister),
        )
        .route("/blocks", get(http::safety::list).post(http::safety::block))
        .route(
            "/blocks/{user_id}",
            axum::routing::delete(http::safety::unblock),
        )
        .route("/reports", post(http::safety::report))
        .route(
            "/conversations/{conversation_id}/leave",
            post(http::membership::leave),
        )
        .route(
            "/conversations/{conversation_id}/members",
            post(http::membership::add),
        )
        .route(
            "/conversations/{conversation_id}/members/{user_id}",
            axum::routing::delete(http::membership::remove),
        )
        .route(
            "/conversations/{conversation_id}/archive",
            axum::routing::put(http::membership::archive).delete(http::membership::unarchive),
        )
        .route(
            "/conversations/{conversation_id}/mute",
            axum::routing::put(http::membership::mute).delete(http::membership::unmute),
        )
        .route(
            "/settings/notifications",
            get(http::settings::get).put(http::settings::put),
        )
        .route(
            "/conversations/{conversation_id}/messages/{seq}",
            axum::routing::delete(http::safety::unsend),
        )
        .route("/media", post(media::upload))
        .route("/media/{conversation_id}/{name}", get(media::fetch))
        .route(
            "/conversations",
            get(http::list_conversations).post(http::create_conversation),
        )
        .merge(web::routes(&config.web))
        .fallback(http::not_found)
        .with_state(app.clone())
        .merge(turbochat_service::ops::probes(readiness.clone()))
        .layer(trace_layer());
    let ops_routes = axum::Router::new()
        .route(
            "/cluster",
            get({
                let membership = membership.clone();
                let ring = ring.clone();
                move || {
                    let report = turbochat_cluster::report::ClusterReport::new(
                        membership.as_ref(),
                        &ring.current(),
                    );
                    async move { axum::Json(report) }
                }
            }),
        )
        .merge(turbochat_service::ops::routes(readiness.clone(), metrics))
        .fallback(http::not_found);

    // Ready while every node link on the ring is up; re-checked in the background.
    tasks.spawn(follow_readiness(
        links.clone(),
        readiness.clone(),
        shutdown.clone(),
    ));
    tasks.spawn(bans::follow(
        app.clone(),
        config.router.ban_poll,
        shutdown.clone(),
    ));
    // Forget rate-limit state of users who went quiet.
    tasks.spawn({
        let app = app.clone();
        let shutdown = shutdown.clone();
        async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            loop {
                tokio::select! {
                    _ = tick.tick() => app.inner.users.retain_recent(),
                    _ = shutdown.cancelled() => return,
                }
            }
        }
    });

    let connections = TaskTracker::new();
    let client_limits = ConnectionLimits {
        max_connections: config.limits.max_connections,
        header_read_timeout: config.limits.header_read_timeout,
        // Frames to clients are small and latency-bound: without
        // TCP_NODELAY, Nagle holds each one until the client's next packet
        // ACKs the last (measured: p50 = the client's send interval, 19 ms
        // at 50 sends/s).
        nodelay: true,
    };
    let ops_limits = ConnectionLimits {
        max_connections: 64,
        header_read_timeout: config.limits.header_read_timeout,
        nodelay: false,
    };
    let serving = tasks.spawn(listener::serve(
        listener,
        client_routes,
        client_limits,
        connections.clone(),
        shutdown.clone(),
    ));
    tasks.spawn(listener::serve(
        ops_listener,
        ops_routes,
        ops_limits,
        connections.clone(),
        shutdown.clone(),
    ));

    // Announce readiness once the links are up (a launcher waiting for the
    // ready line can then use the router at once), or after a bound: a
    // router with a node down still serves the rest of the ring.
    let ready_by = tokio::time::Instant::now() + config.router.ready_timeout;
    while !readiness.get() && tokio::time::Instant::now() < ready_by && !shutdown.is_cancelled() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if readiness.get() {
        tracing::info!(router = %listening.id, http = %listening.http, ops = %listening.ops, "router ready");
    } else {
        tracing::warn!(router = %listening.id, http = %listening.http, ops = %listening.ops,
            "router listening, but not every node link is up yet; /readyz says 503 until they are");
    }
    on_ready(&listening);

    let _ = serving.await;
    shutdown.cancel();
    tasks.close();
    connections.close();
    app.inner.tracker.close();
    let drained = async {
        app.inner.tracker.wait().await;
        connections.wait().await;
        tasks.wait().await;
    };
    if tokio::time::timeout(config.router.drain_timeout, drained)
        .await
        .is_err()
    {
        tracing::warn!("sessions and tasks did not finish within the drain timeout");
    }
    tracing::info!("router stopped");
    Ok(())
}

/// Keeps `readiness` true exactly while every node link of the current
/// ring is up; false from shutdown on.
async fn follow_readiness(links: Links, readiness: Readiness, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = tick.tick() => readiness.set(links.all_up()),
            _ = shutdown.cancelled() => {
                readiness.set(false);
                return;
            }
        }
    }
}

/// The HTTP trace span (path only: the query may carry a token, which is
/// never logged) and response logs at DEBUG: a 4xx or 5xx a client caused
/// (a refused token, a node briefly unreachable, a not-ready `/readyz`) is
/// no operator's business; what an operator must act on is logged where it
/// is found, at WARN or ERROR.
fn trace_layer() -> TraceLayer<
    tower_http::classify::SharedClassifier<tower_http::classify::ServerErrorsAsFailures>,
    impl Fn(&axum::http::Request<axum::body::Body>) -> tracing::Span + Clone,
> {
    TraceLayer::new_for_http()
        .make_span_with(|request: &axum::http::Request<axum::body::Body>| {
            tracing::info_span!("http", method = %request.method(), path = %loggable_path(request.uri().path()))
        })
        .on_response(DefaultOnResponse::new().level(Level::DEBUG))
        .on_failure(DefaultOnFailure::new().level(Level::DEBUG))
}

/// The request path as logged: a device token in `/devices/{token}` (a
/// push credential) is replaced by `…`.
fn loggable_path(path: &str) -> &str {
    match path.strip_prefix("/devices/") {
        Some(rest) if !rest.is_empty() => "/devices/…",
        _ => path,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn device_tokens_stay_out_of_logs() {
        assert_eq!(
            super::loggable_path("/devices/fcm-secret-token"),
            "/devices/…"
        );
        assert_eq!(super::loggable_path("/devices"), "/devices");
        assert_eq!(super::loggable_path("/history"), "/history");
    }
}
