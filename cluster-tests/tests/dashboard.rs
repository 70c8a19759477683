//! The Grafana dashboard (`deploy/grafana/turbochat.json`) queries only
//! metrics that exist. A real cluster — nodes and a router with gossip, on
//! PostgreSQL — is driven through what operators watch: sessions and
//! messages, push jobs that are sent, that find no device and that fail,
//! refused and rate-limited sends, malformed and oversized frames, a bad
//! token, a node joining (conversations and subscriptions handed over) and
//! a node killed. Then every series a panel's query names must be on the
//! `/metrics` of some node or router.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use harness::client::{Api, Refused, WsClient};
use harness::cluster::{Cluster, Options};
use harness::process::Process;
use harness::store::TestStore;
use harness::tokens::{token, valid, Flaw};
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(30);

/// Every series name in the dashboard's queries (`turbochat_..._bucket`
/// included as written).
fn dashboard_series() -> BTreeSet<String> {
    let path = harness::bins::workspace_root().join("deploy/grafana/turbochat.json");
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("dashboard file"))
            .expect("dashboard is JSON");
    let mut exprs = Vec::new();
    collect_exprs(&dashboard, &mut exprs);
    assert!(!exprs.is_empty(), "the dashboard has queries");
    let mut names = BTreeSet::new();
    for expr in exprs {
        let mut rest = expr.as_str();
        while let Some(at) = rest.find("turbochat_") {
            let name: String = rest[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            rest = &rest[at + name.len()..];
            names.insert(name);
        }
    }
    names
}

fn collect_exprs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("expr", Value::String(expr)) => out.push(expr.clone()),
                    _ => collect_exprs(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_exprs(v, out)),
        _ => {}
    }
}

/// Series names on one process's `/metrics` (Prometheus text format).
async fn series(base: &str) -> BTreeSet<String> {
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .expect("metrics endpoint")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(String::from)
        .collect()
}

/// The sum of one metric's samples on one process (0 when absent).
async fn value(base: &str, name: &str) -> f64 {
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .expect("metrics endpoint")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .filter(|l| l.split(['{', ' ']).next() == Some(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Push jobs claimed by all the nodes so far.
async fn claimed(bases: &[String]) -> f64 {
    let mut total = 0.0;
    for base in bases {
        total += value(base, "turbochat_push_jobs_claimed_total").await;
    }
    total
}

/// Where a process serves `/metrics`: a router's ops listener when it has
/// one, else its HTTP listener.
fn metrics_base(process: &Process) -> String {
    let addr = process.ready["ops"]
        .as_str()
        .map(String::from)
        .unwrap_or_else(|| process.addr("http"));
    format!("http://{addr}")
}

async fn wait_for_series(process: &Process, name: &str) {
    let base = metrics_base(process);
    harness::eventually(&format!("{name} on {}", process.id), T, || {
        let base = base.clone();
        async move { series(&base).await.contains(name).then_some(()) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_dashboard_queries_exists() {
    let wanted = dashboard_series();
    let store = TestStore::postgres().await;
    // node-1's push sink is a directory: every push to a device fails, and
    // with one attempt allowed the job fails for good at once.
    let broken_sink = store.dir.path().display().to_string();
    let mut options = Options {
        nodes: 1,
        routers: 1,
        gossip: true,
        ..Options::default()
    };
    options.node_env.extend([
        ("TURBOCHAT_OWNER__PUSH_ENABLED".to_string(), "true".into()),
        ("TURBOCHAT_PUSH__BACKEND".into(), "file".into()),
        ("TURBOCHAT_PUSH__FILE__PATH".into(), broken_sink),
        ("TURBOCHAT_PUSH__MAX_ATTEMPTS".into(), "1".into()),
        ("TURBOCHAT_PUSH__POLL_INTERVAL".into(), "50ms".into()),
    ]);
    let mut cluster = Cluster::start(store, options).await;
    let router = cluster.router_url(0);
    let api = Api::new(&router);
    let run = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let alice = format!("alice-{run}");
    let bob = format!("bob-{run}");
    let carol = format!("carol-{run}");

    // Sessions and messages; bob is offline with a device, carol without.
    let mut ws = WsClient::connect(&router, &valid(&alice)).await.unwrap();
    let device = json!({"token": format!("device-{run}"), "platform": "android"});
    let (status, body) = api.put("/devices", &valid(&bob), device).await;
    assert_eq!(status, 200, "device registered: {body}");
    let to_bob = api.create_direct(&valid(&alice), &bob, None).await;
    let to_carol = api.create_direct(&valid(&alice), &carol, None).await;
    ws.subscribe(&to_bob, None).await;
    let ack = ws.send_message(&to_bob, &format!("b-{run}-0"), "hi").await;
    assert_eq!(ack["type"], "ack", "{ack}");
    let ack = ws
        .send_message(&to_carol, &format!("c-{run}-0"), "hi")
        .await;
    assert_eq!(ack["type"], "ack", "{ack}");
    for name in [
        "turbochat_push_retried_total",
        "turbochat_push_failed_total",
        "turbochat_push_no_device_total",
    ] {
        wait_for_series(&cluster.nodes[0], name).await;
    }

    // Refused by the owner: too long a body.
    let refused = ws
        .send_message(&to_bob, &format!("b-{run}-long"), &"x".repeat(5000))
        .await;
    assert_eq!(refused["type"], "error", "{refused}");
    // Refused by the router: a malformed frame, a flood, a bad token, an
    // oversized frame (which closes the session: last). Mallory's own
    // session, so that the rate limit spares alice.
    let mallory = format!("mallory-{run}");
    let to_alice = api.create_direct(&valid(&mallory), &alice, None).await;
    let mut rogue = WsClient::connect(&router, &valid(&mallory)).await.unwrap();
    rogue.send_text("not json".into()).await;
    for i in 0..80 {
        rogue
            .send(json!({"type": "send", "conversation_id": to_alice,
                "client_msg_id": format!("flood-{run}-{i}"), "body": "flood"}))
            .await;
    }
    assert!(matches!(
        WsClient::connect(&router, &token(&alice, Flaw::BadSignature)).await,
        Err(Refused::Status(401))
    ));
    wait_for_series(&cluster.routers[0], "turbochat_sends_rate_limited_total").await;

    // Hand-over: alice's session holds many subscriptions; a second node
    // joins and takes about half the conversations.
    let mut conversations = Vec::new();
    for i in 0..16 {
        let peer = format!("peer{i}-{run}");
        // Created by the peer: creations are rate limited per user.
        let conversation = api.create_direct(&valid(&peer), &alice, None).await;
        ws.subscribe(&conversation, None).await;
        let ack = ws
            .send_message(&conversation, &format!("h-{run}-{i}"), "hi")
            .await;
        assert_eq!(ack["type"], "ack", "{ack}");
        conversations.push(conversation);
    }
    // node-2's push sink works.
    cluster
        .options
        .node_env
        .remove("TURBOCHAT_PUSH__FILE__PATH");
    cluster.add_node();
    harness::eventually("the router to see 2 nodes", T, || async {
        (cluster.ring(0).await.len() == 2).then_some(())
    })
    .await;
    wait_for_series(&cluster.nodes[0], "turbochat_owner_released_total").await;
    wait_for_series(
        &cluster.routers[0],
        "turbochat_router_subscriptions_moved_total",
    )
    .await;

    // Pushes to bob until node-2's worker has taken one of them (each job
    // goes to whichever worker looks first).
    let bases: Vec<String> = cluster.nodes.iter().map(metrics_base).collect();
    let deadline = std::time::Instant::now() + T;
    for i in 1.. {
        if series(&bases[1])
            .await
            .contains("turbochat_push_sent_total")
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "node-2 sent no push within {T:?}"
        );
        let before = claimed(&bases).await;
        let ack = ws
            .send_message(&to_bob, &format!("b-{run}-{i}"), "hi")
            .await;
        assert_eq!(ack["type"], "ack", "{ack}");
        harness::eventually("the push job claimed", T, || {
            let bases = bases.clone();
            async move { (claimed(&bases).await > before).then_some(()) }
        })
        .await;
    }

    let mut found: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for process in cluster.nodes.iter().chain(cluster.routers.iter()) {
        found.insert(process.id.clone(), series(&metrics_base(process)).await);
    }

    // A node killed: the others declare it down.
    cluster.nodes[1].kill9();
    wait_for_series(&cluster.routers[0], "turbochat_members_down_total").await;
    // An oversized frame closes mallory's session.
    rogue.send_text("x".repeat(70_000)).await;
    wait_for_series(&cluster.routers[0], "turbochat_frames_too_large_total").await;
    for process in [&cluster.nodes[0], &cluster.routers[0]] {
        found
            .entry(process.id.clone())
            .or_default()
            .extend(series(&metrics_base(process)).await);
    }

    let missing: Vec<&String> = wanted
        .iter()
        .filter(|name| !found.values().any(|s| s.contains(*name)))
        .collect();
    println!(
        "dashboard queries {} series; found on: {}",
        wanted.len(),
        found
            .iter()
            .map(|(id, s)| format!("{id} {}", wanted.iter().filter(|w| s.contains(*w)).count()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    assert!(
        missing.is_empty(),
        "the dashboard queries series no process exposes: {missing:?}"
    );
}
