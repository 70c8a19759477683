//! `turbochat-router`: the stateless front.
//!
//! Data path: accept ([`ws::upgrade`], JWT checked first by [`auth`]) →
//! session (read task + write task, [`sessions`]) → client frame → the
//! conversation's owner node, found on the ring, over its [`link`] → the
//! node's answers and fan-out come back on the same link and are written to
//! the sessions they name. [`http`] serves history and conversations.

pub mod auth;
pub mod bus;
pub mod config;
pub mod http;
pub mod link;
pub mod media;
pub mod sessions;
pub mod web;
pub mod ws;

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;

use axum::routing::{get, post};
use axum::serve::ListenerExt;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use turbochat_cluster::{feed_ring, Member, MemberState, Membership, Ring, RingView, Role};
use turbochat_service::ops::Readiness;

use crate::auth::{HasVerifier, Verifier};
use crate::config::{Config, Limits};
use crate::link::Links;
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
    /// The listener could not be bound.
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
    send_limiter: DefaultKeyedRateLimiter<String>,
    shutdown: CancellationToken,
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
    /// HTTP + WebSocket address.
    pub http: SocketAddr,
    /// Gossip address, when gossip is on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gossip: Option<SocketAddr>,
}

/// Runs a router until `shutdown`, then closes sessions (1001) and drains.
pub async fn run(
    config: Config,
    shutdown: CancellationToken,
    metrics: metrics_exporter_prometheus::PrometheusHandle,
    on_ready: impl FnOnce(&Listening),
) -> Result<(), RouterError> {
    let verifier = Verifier::from_config(&config.auth)?;
    let media = media::Media::open(config.media.clone())?;
    let vnodes = config.router.vnodes;
    let ring = RingView::new(Ring::new(config.router.nodes.clone(), vnodes));
    let sessions = Arc::new(Sessions::default());
    let links = Links::start(
        config.router.id.clone(),
        ring.clone(),
        sessions.clone(),
        shutdown.clone(),
    )?;
    tokio::spawn(bus::listen(
        config.bus.clone(),
        config.router.id.clone(),
        links.clone(),
        shutdown.clone(),
    ));
    let per_second = NonZeroU32::new(config.limits.send_per_second).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(config.limits.send_burst).unwrap_or(per_second);
    let app = App {
        inner: Arc::new(AppInner {
            verifier,
            links: links.clone(),
            sessions,
            media,
            limits: config.limits.clone(),
            send_limiter: RateLimiter::keyed(Quota::per_second(per_second).allow_burst(burst)),
            shutdown: shutdown.clone(),
            tracker: TaskTracker::new(),
        }),
    };

    let addr = config.router.listen;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| RouterError::Bind { addr, source })?;
    let http_addr = listener.local_addr()?;
    let membership = if config.cluster.enabled {
        let me = Member {
            id: config.router.id.clone(),
            role: Role::Router,
            gossip: config.cluster.gossip.gossip_listen,
            grpc: None,
            http: Some(http_addr.to_string()),
            state: MemberState::Active,
            generation: 0,
        };
        let membership =
            Membership::start(me, config.cluster.gossip.clone(), shutdown.clone()).await?;
        tokio::spawn(feed_ring(
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
        gossip: membership.as_ref().map(|m| m.gossip_addr()),
    };

    let readiness = Readiness::default();
    let routes = axum::Router::new()
        .route("/ws", get(ws::upgrade))
        .route("/history", get(http::history))
        .route("/devices", axum::routing::put(http::devices::register))
        .route(
            "/devices/{token}",
            axum::routing::delete(http::devices::unregister),
        )
        .route("/media", post(media::upload))
        .route("/media/{conversation_id}/{name}", get(media::fetch))
        .route(
            "/conversations",
            get(http::list_conversations).post(http::create_conversation),
        )
        .route(
            "/cluster",
            get({
                let membership = membership.clone();
                let ring = ring.clone();
                move || {
                    let report =
                        turbochat_cluster::report::ClusterReport::new(membership.as_ref(), &ring.current());
                    async move { axum::Json(report) }
                }
            }),
        )
        .merge(web::routes())
        .fallback(http::not_found)
        .with_state(app.clone())
        .merge(turbochat_service::ops::routes(readiness.clone(), metrics))
        .layer(
            tower_http::trace::TraceLayer::new_for_http().make_span_with(
                // Path only: the query may carry a token, which is never logged.
                |request: &axum::http::Request<_>| {
                    tracing::info_span!("http", method = %request.method(), path = %loggable_path(request.uri().path()))
                },
            ),
        );

    // Ready once every node link is up; re-checked in the background.
    let ready_links = links.clone();
    let ready_flag = readiness.clone();
    let ready_shutdown = shutdown.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(100));
        loop {
            tokio::select! {
                _ = tick.tick() => ready_flag.set(ready_links.all_up()),
                _ = ready_shutdown.cancelled() => { ready_flag.set(false); return; }
            }
        }
    });
    // Forget rate-limit state of users who went quiet.
    let limiter_app = app.clone();
    let limiter_shutdown = shutdown.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
        loop {
            tokio::select! {
                _ = tick.tick() => limiter_app.inner.send_limiter.retain_recent(),
                _ = limiter_shutdown.cancelled() => return,
            }
        }
    });

    tracing::info!(router = %listening.id, http = %listening.http, "router listening");
    on_ready(&listening);
    // Frames to clients are small and latency-bound: without TCP_NODELAY,
    // Nagle holds each one until the client's next packet ACKs the last
    // (measured: p50 = the client's send interval, 19 ms at 50 sends/s).
    let listener = listener.tap_io(|tcp| {
        if let Err(err) = tcp.set_nodelay(true) {
            tracing::debug!(%err, "cannot set TCP_NODELAY on a client socket");
        }
    });
    axum::serve(listener, routes)
        .with_graceful_shutdown(shutdown.clone().cancelled_owned())
        .await?;
    app.inner.tracker.close();
    if tokio::time::timeout(config.router.drain_timeout, app.inner.tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("sessions did not close within the drain timeout");
    }
    tracing::info!("router stopped");
    Ok(())
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
