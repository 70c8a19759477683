//! The HTTP listener: accepts TCP connections and serves each with hyper
//! (HTTP/1.1, with upgrades for WebSockets), in the shape of mini-redis's
//! `Listener`: a semaphore caps the connections that are not yet upgraded,
//! accept errors back off instead of spinning, and every connection is a
//! task the caller's tracker owns.
//!
//! Nothing is held for long before authentication: a connection must send a
//! complete request head within `header_read_timeout` — on connect, and
//! again between keep-alive requests — or it is closed (a slowloris client
//! trickling headers, or one that connects and says nothing, costs a socket
//! for that long only). Upgraded WebSockets leave the cap (sessions have
//! their own, `max_sessions`).

use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use turbochat_backoff::Backoff;

/// How a listener treats its connections.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Most connections served at once before their upgrade (or close).
    pub max_connections: usize,
    /// Time a connection has to send a complete request head.
    pub header_read_timeout: Duration,
    /// Whether to set `TCP_NODELAY` (client frames are small and latency-bound).
    pub nodelay: bool,
}

/// Serves `routes` on `listener` until `shutdown`; then stops accepting and
/// lets in-flight requests finish (connections end gracefully). Every
/// connection task is spawned on `tracker`.
pub async fn serve(
    listener: TcpListener,
    routes: axum::Router,
    limits: ConnectionLimits,
    tracker: TaskTracker,
    shutdown: CancellationToken,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let accept_backoff = Backoff {
        initial: Duration::from_millis(5),
        max: Duration::from_secs(1),
        multiplier: 2.0,
    };
    let mut failures = 0u32;
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
            _ = shutdown.cancelled() => return,
        };
        let socket = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((socket, _)) => {
                    failures = 0;
                    socket
                }
                Err(err) => {
                    // Out of file descriptors, a connection reset while
                    // queued, ...: wait a little, never exit.
                    metrics::counter!("turbochat_accept_errors_total").increment(1);
                    let delay = accept_backoff.ceiling(failures);
                    failures = failures.saturating_add(1);
                    tracing::warn!(%err, ?delay, "accept failed");
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => continue,
                        _ = shutdown.cancelled() => return,
                    }
                }
            },
            _ = shutdown.cancelled() => return,
        };
        let service = TowerToHyperService::new(routes.clone());
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            serve_connection(socket, service, limits, shutdown).await;
            drop(permit);
        });
    }
}

async fn serve_connection(
    socket: TcpStream,
    service: TowerToHyperService<axum::Router>,
    limits: ConnectionLimits,
    shutdown: CancellationToken,
) {
    if limits.nodelay {
        if let Err(err) = socket.set_nodelay(true) {
            tracing::debug!(%err, "cannot set TCP_NODELAY");
        }
    }
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    let connection = builder
        .serve_connection(TokioIo::new(socket), service)
        .with_upgrades();
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        _ = shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(err) = result {
        if err.is_timeout() {
            metrics::counter!("turbochat_http_header_timeouts_total").increment(1);
        }
        tracing::debug!(%err, "connection ended with an error");
    }
}
