//! The moderation hook, end to end: real routers and nodes call an HTTP
//! service of the test's own on 127.0.0.1 before storing each message.
//! It refuses ("scam"), masks ("badword") or allows; when it does not
//! answer in time the configured policy decides: fail-open stores the
//! message, fail-closed refuses it with `unavailable`. Asserted from the
//! users' side (acks, errors, what others receive, history), both stores.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::routing::post;
use axum::Json;
use harness::client::{Api, WsClient};
use harness::cluster::{Cluster, Options};
use harness::store::TestStore;
use harness::tokens::valid;
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(20);

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The operator's moderation service: what it was asked, and its rules.
#[derive(Clone, Default)]
struct Service {
    asked: Arc<Mutex<Vec<Value>>>,
}

impl Service {
    /// Serves on 127.0.0.1:0; returns its URL.
    async fn start(&self) -> String {
        let asked = self.asked.clone();
        let app = axum::Router::new().route(
            "/moderate",
            post(
                move |headers: axum::http::HeaderMap, Json(request): Json<Value>| {
                    let asked = asked.clone();
                    async move {
                        assert_eq!(
                            headers.get("authorization").and_then(|v| v.to_str().ok()),
                            Some("Bearer hook-secret")
                        );
                        asked.lock().unwrap().push(request.clone());
                        let body = request["body"].as_str().unwrap_or("").to_string();
                        if body.contains("slow") {
                            // Longer than the node's timeout: a failure.
                            tokio::time::sleep(Duration::from_secs(3)).await;
                        }
                        Json(if body.contains("scam") {
                            json!({"action": "refuse", "message": "Payments stay on the platform"})
                        } else if body.contains("badword") {
                            json!({"action": "mask", "body": body.replace("badword", "•••")})
                        } else {
                            json!({"action": "allow"})
                        })
                    }
                },
            ),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        format!("http://{addr}/moderate")
    }
}

fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

async fn the_hook_refuses_masks_and_allows_and_its_failure_follows_the_policy(
    store: TestStore,
    on_failure: &str,
) {
    let service = Service::default();
    let url = service.start().await;
    let options = Options {
        node_env: env(&[
            ("TURBOCHAT_MODERATION__HOOK__URL", &url),
            ("TURBOCHAT_MODERATION__HOOK__TIMEOUT", "300ms"),
            ("TURBOCHAT_MODERATION__HOOK__ON_FAILURE", on_failure),
            ("TURBOCHAT_MODERATION__HOOK__SECRET", "hook-secret"),
        ]),
        ..Options::default()
    };
    let cluster = Cluster::start(store, options).await;
    let base = cluster.router_url(0);
    let api = Api::new(&base);
    let direct = api
        .create_direct(&valid("mallory"), "alice", Some("golf-7"))
        .await;
    let mut alice = WsClient::connect(&base, &valid("alice")).await.unwrap();
    let mut mallory = WsClient::connect(&base, &valid("mallory")).await.unwrap();
    alice.subscribe(&direct, None).await;

    let refused = mallory
        .send_message(&direct, "m-1", "pay me outside, it is no scam")
        .await;
    assert_eq!(
        (refused["code"].as_str(), refused["message"].as_str()),
        (
            Some("content_refused"),
            Some("Payments stay on the platform")
        ),
        "{refused}"
    );
    let masked = mallory
        .send_message(&direct, "m-2", "what a badword car")
        .await;
    assert_eq!(masked["type"], "ack", "{masked}");
    let seen = alice
        .expect_where("message", T, |m| m["client_msg_id"] == "m-2")
        .await;
    assert_eq!(seen["body"], "what a ••• car");
    let fine = mallory
        .send_message(&direct, "m-3", "is it still for sale?")
        .await;
    assert_eq!(fine["type"], "ack", "{fine}");

    // The hook does not answer in time.
    let late = mallory
        .send_message(&direct, "m-4", "a slow question")
        .await;
    let stored: Vec<String> = api
        .all_messages(&valid("alice"), &direct)
        .await
        .iter()
        .map(|m| m["body"].as_str().unwrap().to_string())
        .collect();
    if on_failure == "allow" {
        assert_eq!(late["type"], "ack", "fail-open stores it: {late}");
        assert_eq!(
            stored,
            ["what a ••• car", "is it still for sale?", "a slow question"]
        );
    } else {
        assert_eq!(
            late["code"], "unavailable",
            "fail-closed refuses it: {late}"
        );
        assert_eq!(stored, ["what a ••• car", "is it still for sale?"]);
    }
    let asked = service.asked.lock().unwrap().clone();
    assert_eq!(asked.len(), 4, "{asked:?}");
    assert_eq!(asked[0]["sender_id"], "mallory");
    assert_eq!(asked[0]["conversation_id"], direct.as_str());
    assert_eq!(asked[0]["client_msg_id"], "m-1");
    assert_eq!(asked[0]["kind"], "text");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hook_fails_open_postgres() {
    let _turn = ONE_AT_A_TIME.lock().await;
    the_hook_refuses_masks_and_allows_and_its_failure_follows_the_policy(
        TestStore::postgres().await,
        "allow",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hook_fails_closed_sqlite() {
    let _turn = ONE_AT_A_TIME.lock().await;
    the_hook_refuses_masks_and_allows_and_its_failure_follows_the_policy(
        TestStore::sqlite(),
        "refuse",
    )
    .await;
}
