//! Logs to stderr, OpenTelemetry traces (when configured), the Prometheus
//! recorder, and the trace context carried from process to process.
//!
//! Traces are on when `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set: spans go by OTLP over HTTP
//! (protobuf) in batches, from a thread of their own. The standard `OTEL_*`
//! variables apply (`OTEL_SERVICE_NAME`, `OTEL_BSP_SCHEDULE_DELAY`,
//! `OTEL_TRACES_SAMPLER`, ...). A router passes each request's context to
//! the node in W3C `traceparent` form ([`inject`], [`extract`]), so one send
//! is one trace across both. With traces off, nothing here costs a thing on
//! the hot path: [`traces_on`] says whether to build the context at all.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

static TRACES_ON: AtomicBool = AtomicBool::new(false);

/// Whether spans are exported (OTLP configured in the environment).
pub fn traces_on() -> bool {
    TRACES_ON.load(Ordering::Relaxed)
}

/// The process's telemetry; [`Telemetry::shutdown`] sends what is buffered.
#[must_use = "call shutdown() before exit, or the last spans are lost"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports the spans still buffered (bounded by the exporter's timeout).
    pub fn shutdown(self) {
        if let Some(provider) = self.provider {
            if let Err(err) = provider.shutdown() {
                eprintln!("telemetry: cannot flush the last spans: {err}");
            }
        }
    }
}

/// Installs the global tracing subscriber: logs to stderr, human-readable by
/// default, JSON lines when `TURBOCHAT_LOG_FORMAT=json`, filter from
/// `RUST_LOG` (default `info`); plus OTLP export of spans as `service` when
/// configured (see the module docs). Safe to call twice (the second call
/// installs nothing).
pub fn init_tracing(service: &str) -> Telemetry {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("TURBOCHAT_LOG_FORMAT").is_ok_and(|v| v == "json");
    use std::io::IsTerminal;
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let fmt = if json {
        fmt.json().with_filter(filter).boxed()
    } else {
        fmt.with_filter(filter).boxed()
    };
    let (otel, provider) = match otlp_provider(service) {
        Some(provider) => {
            let tracer = provider.tracer("turbochat");
            // Spans of this crate's processes at INFO and above; the
            // exporter's own HTTP client is never traced (it would trace
            // itself).
            let filter = EnvFilter::new("info,opentelemetry=off,reqwest=off,hyper=off,h2=off");
            let layer = tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_filter(filter);
            (Some(layer), Some(provider))
        }
        None => (None, None),
    };
    let installed = tracing_subscriber::registry()
        .with(fmt)
        .with(otel)
        .try_init()
        .is_ok();
    if installed && provider.is_some() {
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        TRACES_ON.store(true, Ordering::Relaxed);
        tracing::info!(service, "exporting traces by OTLP");
    }
    Telemetry { provider }
}

fn otlp_provider(service: &str) -> Option<SdkTracerProvider> {
    let configured = [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ]
    .iter()
    .any(|var| std::env::var(var).is_ok_and(|v| !v.is_empty()));
    if !configured {
        return None;
    }
    let exporter = match opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
    {
        Ok(exporter) => exporter,
        Err(err) => {
            eprintln!("telemetry: OTLP is configured but unusable, traces off: {err}");
            return None;
        }
    };
    let name = std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| service.to_string());
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(name)
        .build();
    Some(
        SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource)
            .build(),
    )
}

/// The current span's context as W3C trace-context fields (`traceparent`,
/// maybe `tracestate`); empty when traces are off.
pub fn inject() -> HashMap<String, String> {
    let mut fields = HashMap::new();
    if traces_on() {
        let context = tracing::Span::current().context();
        TraceContextPropagator::new().inject_context(&context, &mut fields);
    }
    fields
}

/// The `traceparent` of the current span, or an empty string when traces
/// are off (for protobuf fields).
pub fn traceparent() -> String {
    inject().remove("traceparent").unwrap_or_default()
}

/// Makes `span` a child of the context in `traceparent` (what [`inject`]
/// made in another process). Nothing happens when traces are off or the
/// value is empty or malformed.
pub fn extract(span: &tracing::Span, traceparent: &str) {
    if !traces_on() || traceparent.is_empty() {
        return;
    }
    let fields = HashMap::from([("traceparent".to_string(), traceparent.to_string())]);
    let parent = TraceContextPropagator::new().extract(&fields);
    // A parent that cannot be set (the span is disabled) is no error here.
    let _ = span.set_parent(parent);
}

/// Puts the current span's context in a gRPC request's metadata.
pub fn inject_metadata(metadata: &mut tonic::metadata::MetadataMap) {
    for (key, value) in inject() {
        if let (Ok(key), Ok(value)) = (
            tonic::metadata::MetadataKey::from_bytes(key.as_bytes()),
            value.parse(),
        ) {
            metadata.insert(key, value);
        }
    }
}

/// Makes `span` a child of the context in a gRPC request's metadata.
pub fn extract_metadata(span: &tracing::Span, metadata: &tonic::metadata::MetadataMap) {
    if let Some(value) = metadata.get("traceparent").and_then(|v| v.to_str().ok()) {
        extract(span, value);
    }
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
