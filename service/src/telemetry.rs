//! Tracing to stderr and the Prometheus recorder.

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

/// Installs the global tracing subscriber: human-readable by default, JSON
/// lines when `TURBOCHAT_LOG_FORMAT=json`; filter from `RUST_LOG`
/// (default `info`). Safe to call twice (the second call does nothing).
pub fn init_tracing() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("TURBOCHAT_LOG_FORMAT").is_ok_and(|v| v == "json");
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// Installs the global metrics recorder and returns the handle that renders
/// the Prometheus text format. Latency histograms get buckets suited to a
/// chat system (50 µs to 10 s).
pub fn init_metrics() -> PrometheusHandle {
    let buckets = [
        0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
        1.0, 2.5, 5.0, 10.0,
    ];
    let builder = PrometheusBuilder::new()
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Suffix("_seconds".into()),
            &buckets,
        )
        .expect("static buckets are valid");
    match builder.install_recorder() {
        Ok(handle) => handle,
        // A recorder is already installed (tests in one process): render from
        // a detached recorder rather than fail.
        Err(_) => PrometheusBuilder::new().build_recorder().handle(),
    }
}
