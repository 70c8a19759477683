//! Operator endpoints every process serves: `/healthz` (the process runs),
//! `/readyz` (it can do its job: store reachable, links up), `/metrics`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;

/// Whether the process is ready to serve; flipped by its owner.
#[derive(Debug, Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    /// Marks the process ready (or not).
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Release);
    }

    /// Whether it is ready.
    pub fn get(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// The `/healthz`, `/readyz` and `/metrics` routes, to merge into a
/// process's operator listener (never a client-facing one: metrics name
/// the cluster's shape and load).
pub fn routes<S: Clone + Send + Sync + 'static>(
    readiness: Readiness,
    metrics: PrometheusHandle,
) -> Router<S> {
    probes(readiness).route("/metrics", get(render_metrics).with_state(metrics))
}

/// Only `/healthz` and `/readyz`: what a load balancer in front of a
/// client-facing listener may ask, and all it learns.
pub fn probes<S: Clone + Send + Sync + 'static>(readiness: Readiness) -> Router<S> {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz).with_state(readiness))
}

async fn readyz(State(readiness): State<Readiness>) -> (StatusCode, &'static str) {
    if readiness.get() {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

async fn render_metrics(State(metrics): State<PrometheusHandle>) -> String {
    metrics.run_upkeep();
    metrics.render()
}
