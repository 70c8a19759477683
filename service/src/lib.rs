//! Process plumbing shared by `turbochat-node` and `turbochat-router`:
//! [`config`] loading with `TURBOCHAT_*` overrides, [`telemetry`] (tracing and
//! Prometheus metrics), the [`ops`] endpoints (`/healthz`, `/readyz`,
//! `/metrics`), the [`shutdown`] signal, and the ready line the launcher reads.

pub mod config;
pub mod ops;
pub mod shutdown;
pub mod telemetry;

use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// What a process's background tasks belong to: the one tracker they are
/// spawned on (joined, within the drain timeout, before the process exits)
/// and the token that tells them to stop. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Background {
    /// Every long-lived task is spawned here; none is detached.
    pub tasks: TaskTracker,
    /// Cancelled when the process stops.
    pub shutdown: CancellationToken,
}

/// The memory allocator of the server binaries (mimalloc: the system
/// allocator's `malloc`/`free` were ~9 % of a co-located process's CPU
/// under load, in many small frames and messages). Each binary declares
/// `#[global_allocator] static ALLOC: turbochat_service::Allocator =
/// turbochat_service::Allocator;`.
pub use mimalloc::MiMalloc as Allocator;

/// The multi-threaded runtime of a `role` process, its worker threads named
/// `{role}-worker` so `top -H`, `perf` and flamegraphs tell the processes
/// of one machine apart (tokio's default name is the same for all).
/// `TOKIO_WORKER_THREADS` sets their number (default: one per CPU).
pub fn runtime(role: &str) -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .thread_name(format!("{role}-worker"))
        .enable_all()
        .build()
}

/// Prints the one JSON line on stdout that tells a launcher or test harness a
/// process is listening and where: `{"event":"ready","role":...,...}`.
/// Logs go to stderr, so stdout carries only this line.
pub fn announce_ready<T: Serialize>(role: &str, details: &T) {
    let mut value = serde_json::to_value(details).unwrap_or(serde_json::Value::Null);
    if let serde_json::Value::Object(map) = &mut value {
        map.insert("event".into(), "ready".into());
        map.insert("role".into(), role.into());
    }
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{value}");
    let _ = out.flush();
}
