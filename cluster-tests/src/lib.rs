//! Test harness for turbochat: real `turbochat-node` and `turbochat-router`
//! processes on loopback, on a real store, driven the way clients drive them.
//!
//! - [`admin`]: the node's admin API as an operator calls it.
//! - [`bins`]: finds (building once if needed) the binaries.
//! - [`process`]: one child process: start on port 0, read its ready line,
//!   kill -9 / SIGTERM / SIGSTOP / restart on the same ports.
//! - [`store`]: a fresh SQLite file or PostgreSQL database per test.
//! - [`cluster`]: N nodes + M routers, static or gossip, optional Redis bus.
//! - [`client`]: a WebSocket client and the HTTP API.
//! - [`fake_fcm`]: a fake FCM HTTP v1 server with fault injection.
//! - [`tokens`]: dev JWTs, good and deliberately bad.
//! - [`podman`], [`containers`]: the same cluster as containers (the image
//!   of `deploy/image`), for the container cluster test.

pub mod admin;
pub mod bins;
pub mod client;
pub mod cluster;
pub mod containers;
pub mod fake_fcm;
pub mod gossip_net;
pub mod metrics;
pub mod podman;
pub mod process;
pub mod proxy;
pub mod store;
pub mod tokens;
pub mod workload;

use std::time::{Duration, Instant};

/// Polls `check` until it returns `Some`, or fails after `deadline`.
pub async fn eventually<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
