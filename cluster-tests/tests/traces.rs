//! OpenTelemetry traces across processes (issue: deploy): with OTLP
//! configured, a send is one trace — the router's span and the owner
//! node's span share a trace id — and so is an HTTP request the router
//! answers through a node. A small OTLP/HTTP receiver stands in for the
//! collector.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use harness::client::{Api, WsClient};
use harness::cluster::{Cluster, Options};
use harness::store::TestStore;
use harness::tokens::valid;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use prost::Message;

/// One exported span: (service, trace id, span name).
type Span = (String, Vec<u8>, String);

/// An OTLP/HTTP (protobuf) trace receiver on 127.0.0.1.
struct Receiver {
    url: String,
    spans: Arc<Mutex<Vec<Span>>>,
}

impl Receiver {
    async fn start() -> Receiver {
        let spans: Arc<Mutex<Vec<Span>>> = Arc::default();
        let app = axum::Router::new()
            .route("/v1/traces", post(receive))
            .with_state(spans.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver { url, spans }
    }

    fn spans(&self) -> Vec<Span> {
        self.spans.lock().unwrap().clone()
    }

    /// A trace id with a span named `name` from each of `services`.
    fn shared_trace(&self, name: &str, services: &[&str]) -> Option<Vec<u8>> {
        let spans = self.spans();
        spans
            .iter()
            .filter(|(service, _, span)| service == services[0] && span == name)
            .map(|(_, trace, _)| trace.clone())
            .find(|trace| {
                services[1..].iter().all(|other| {
                    spans
                        .iter()
                        .any(|(service, t, _)| service == other && t == trace)
                })
            })
    }
}

async fn receive(State(spans): State<Arc<Mutex<Vec<Span>>>>, body: Bytes) -> &'static str {
    let request = ExportTraceServiceRequest::decode(body).expect("an OTLP protobuf body");
    let mut spans = spans.lock().unwrap();
    for resource_spans in request.resource_spans {
        let service = resource_spans
            .resource
            .iter()
            .flat_map(|r| r.attributes.iter())
            .find(|kv| kv.key == "service.name")
            .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                AnyValue::StringValue(name) => Some(name.clone()),
                _ => None,
            })
            .unwrap_or_default();
        for scope in resource_spans.scope_spans {
            for span in scope.spans {
                spans.push((service.clone(), span.trace_id, span.name));
            }
        }
    }
    ""
}

#[tokio::test]
async fn a_send_is_one_trace_across_router_and_node() {
    let receiver = Receiver::start().await;
    let otel: BTreeMap<String, String> = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let options = Options {
        node_env: otel.clone(),
        router_env: otel,
        ..Options::default()
    };
    let cluster = Cluster::start(TestStore::sqlite(), options).await;
    let base = cluster.router_url(0);
    let api = Api::new(&base);
    let conversation = api.create_direct(&valid("alice"), "bob", None).await;
    let mut alice = WsClient::connect(&base, &valid("alice")).await.unwrap();
    let ack = alice.send_message(&conversation, "traced-1", "hello").await;
    assert_eq!(ack["type"], "ack");
    let (status, _) = api
        .get(
            &format!("/history?conversation_id={conversation}"),
            Some(&valid("alice")),
        )
        .await;
    assert_eq!(status, 200);

    let send = harness::eventually(
        "a send traced on the router and the node",
        Duration::from_secs(15),
        || async { receiver.shared_trace("send", &["turbochat-router", "turbochat-node"]) },
    )
    .await;
    let history = harness::eventually(
        "an HTTP call traced on the router and the node",
        Duration::from_secs(15),
        || async { receiver.shared_trace("http", &["turbochat-router", "turbochat-node"]) },
    )
    .await;
    assert_ne!(send, history, "two requests, two traces");
    assert!(
        receiver
            .spans()
            .iter()
            .any(|(service, trace, name)| service == "turbochat-node"
                && *trace == send
                && name == "send"),
        "the node's span of the send is in the send's trace"
    );
}
