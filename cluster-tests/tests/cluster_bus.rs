//! The gRPC path from a node to one router is cut while Redis is up:
//! delivery to that router's clients continues over the fallback bus.

use std::collections::BTreeMap;
use std::time::Duration;

use harness::client::{Api, WsClient};
use harness::cluster::{Cluster, Options};
use harness::proxy::Proxy;
use harness::store::TestStore;
use harness::tokens::valid;

const T: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_continues_over_redis_when_a_link_is_cut() {
    let prefix = format!("tc-test-{}", uuid::Uuid::new_v4().simple());
    let options = Options {
        nodes: 1,
        routers: 1,
        redis_prefix: Some(prefix),
        ..Options::default()
    };
    let mut cluster = Cluster::start(TestStore::postgres().await, options).await;
    // router-2 reaches the node only through a proxy the test can cut.
    let node_grpc = cluster.nodes[0].addr("grpc").parse().unwrap();
    let proxy = Proxy::start(node_grpc).await;
    let nodes = format!("[{{id=\"node-1\",grpc=\"http://{}\"}}]", proxy.addr);
    let r2 = cluster.add_router_with(
        2,
        BTreeMap::from([("TURBOCHAT_ROUTER__NODES".to_string(), nodes)]),
    );
    cluster.wait_ready().await;

    let (alice, bob) = (valid("alice"), valid("bob"));
    let api = Api::new(&cluster.router_url(0));
    let conversation = api.create_direct(&alice, "bob", None).await;
    let mut a = WsClient::connect(&cluster.router_url(0), &alice)
        .await
        .unwrap();
    let mut b = WsClient::connect(&cluster.router_url(r2), &bob)
        .await
        .unwrap();
    b.subscribe(&conversation, Some(0)).await;

    let total = 40u64;
    let mut received = Vec::new();
    for i in 1..=total {
        if i == 11 {
            proxy.cut();
        }
        let ack = a
            .send_message(&conversation, &format!("m{i}"), "over the bus?")
            .await;
        assert_eq!(ack["seq"], i, "{ack}");
    }
    while received.len() < total as usize {
        let frame = b.expect("message", T).await;
        received.push(frame["seq"].as_u64().unwrap());
    }
    println!("[gRPC cut, Redis up] sent {total} acked {total} delivered to the cut router's client {} (in order, no duplicate)", received.len());
    assert_eq!(received, (1..=total).collect::<Vec<_>>());
    let metrics = reqwest::get(format!("{}/metrics", cluster.router_ops_url(r2)))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let over_bus: f64 = metrics
        .lines()
        .find(|l| l.starts_with("turbochat_bus_received_total"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    println!("frames that reached router-2 over Redis: {over_bus}");
    assert!(
        over_bus >= 30.0,
        "the messages after the cut came over the bus: {over_bus}"
    );
    let log = cluster.routers[r2].log();
    assert!(
        log.contains("link failed") || log.contains("link closed"),
        "the link was really cut"
    );
}
