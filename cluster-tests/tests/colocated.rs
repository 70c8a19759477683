//! The co-located mode (`turbochat-colocated`: a node and a router in one
//! process, linked in process), seen by clients: the same chat, history,
//! resume and guarantees as separate processes; with two such processes,
//! conversations owned by the other one still work (over gRPC).

use std::time::Duration;

use harness::client::{Api, WsClient};
use harness::cluster::{Cluster, Options};
use harness::store::TestStore;
use harness::tokens::valid;

const T: Duration = Duration::from_secs(10);

fn colocated(processes: usize) -> Options {
    Options {
        nodes: processes,
        colocated: true,
        gossip: processes > 1,
        ..Options::default()
    }
}

/// Two users chat through one co-located process; the router's link to
/// its own node is the in-process one; history and resume by seq work.
async fn chat_in_one_process(store: TestStore) {
    let mut cluster = Cluster::start(store, colocated(1)).await;
    let base = cluster.router_url(0);
    let ops = cluster.router_ops_url(0);
    let api = Api::new(&base);
    let (alice, bob) = (valid("alice"), valid("bob"));
    let conversation = api.create_direct(&alice, "bob", Some("car-7")).await;

    let mut a = WsClient::connect(&base, &alice).await.unwrap();
    let mut b = WsClient::connect(&base, &bob).await.unwrap();
    assert_eq!(a.subscribe(&conversation, Some(0)).await, 0);
    assert_eq!(b.subscribe(&conversation, Some(0)).await, 0);
    for i in 1..=20u64 {
        let (sender, id) = if i % 2 == 1 {
            (&mut a, format!("a-{i}"))
        } else {
            (&mut b, format!("b-{i}"))
        };
        let ack = sender
            .send_message(&conversation, &id, &format!("message {i}"))
            .await;
        assert_eq!(ack["type"], "ack", "{ack}");
        assert_eq!(ack["seq"], i);
    }
    for client in [&mut a, &mut b] {
        for i in 1..=20u64 {
            let frame = client.expect_where("message", T, |f| f["seq"] == i).await;
            assert_eq!(frame["body"], format!("message {i}"));
        }
        assert!(client.take_pending("message").is_empty(), "no duplicates");
    }
    assert_eq!(api.all_messages(&alice, &conversation).await.len(), 20);
    assert_eq!(
        harness::metrics::sum(&ops, "turbochat_link_connects_total", "path=\"in_process\"").await,
        1.0,
        "the router attached to its own node in process"
    );
    assert_eq!(
        harness::metrics::sum(&ops, "turbochat_link_connects_total", "path=\"grpc\"").await,
        0.0,
        "and not over gRPC"
    );

    // Killed and started again: bob resumes from the last seq he saw and
    // gets exactly what was sent meanwhile.
    b.close().await;
    a.close().await;
    cluster.routers[0].kill9();
    cluster.routers[0].restart();
    cluster.wait_ready().await;
    let mut a = WsClient::connect(&base, &alice).await.unwrap();
    a.subscribe(&conversation, Some(20)).await;
    let ack = a.send_message(&conversation, "a-21", "after restart").await;
    assert_eq!(ack["seq"], 21, "{ack}");
    let mut b = WsClient::connect(&base, &bob).await.unwrap();
    b.subscribe(&conversation, Some(20)).await;
    let frame = b.expect_where("message", T, |f| f["seq"] == 21).await;
    assert_eq!(frame["body"], "after restart");
    assert!(
        b.take_pending("message").is_empty(),
        "nothing before 21 again"
    );
}

#[tokio::test]
async fn one_colocated_process_serves_chat_on_sqlite() {
    chat_in_one_process(TestStore::sqlite()).await;
}

#[tokio::test]
async fn one_colocated_process_serves_chat_on_postgres() {
    chat_in_one_process(TestStore::postgres().await).await;
}

/// Two co-located processes (gossip): Alice on one, Bob on the other, in
/// conversations owned by either node; each router reaches its own node in
/// process and the other over gRPC.
#[tokio::test]
async fn two_colocated_processes_chat_across_them() {
    let cluster = Cluster::start(TestStore::postgres().await, colocated(2)).await;
    let (base_a, base_b) = (cluster.router_url(0), cluster.router_url(1));
    let api = Api::new(&base_a);
    let node_metrics: Vec<String> = cluster
        .routers
        .iter()
        .map(|p| format!("http://{}", Cluster::node_http(p)))
        .collect();
    let committed = || async {
        let mut counts = Vec::new();
        for url in &node_metrics {
            counts.push(harness::metrics::sum(url, "turbochat_messages_committed_total", "").await);
        }
        counts
    };
    let alice = valid("alice");
    let mut a = WsClient::connect(&base_a, &alice).await.unwrap();
    let mut owners_seen = [false, false];
    let mut conversations = 0;
    // New conversations until each node has owned (committed) one: the
    // ring places them, about half on each.
    while owners_seen != [true, true] {
        conversations += 1;
        assert!(conversations <= 64, "64 conversations all on one node");
        let peer = format!("bob{conversations}");
        let bob = valid(&peer);
        let conversation = api.create_direct(&alice, &peer, None).await;
        let mut b = WsClient::connect(&base_b, &bob).await.unwrap();
        b.subscribe(&conversation, Some(0)).await;
        a.subscribe(&conversation, Some(0)).await;
        let before = committed().await;
        let ack = a.send_message(&conversation, "hi", "Still for sale?").await;
        assert_eq!(ack["type"], "ack", "{ack}");
        let frame = b.expect_where("message", T, |f| f["seq"] == 1).await;
        assert_eq!(frame["body"], "Still for sale?");
        let reply = b.send_message(&conversation, "yes", "Yes").await;
        assert_eq!(reply["seq"], 2, "{reply}");
        a.expect_where("message", T, |f| f["seq"] == 2).await;
        let after = committed().await;
        for (node, seen) in owners_seen.iter_mut().enumerate() {
            if after[node] >= before[node] + 2.0 {
                *seen = true;
            }
        }
        b.close().await;
    }
    for i in 0..2 {
        let ops = cluster.router_ops_url(i);
        assert_eq!(
            harness::metrics::sum(&ops, "turbochat_link_connects_total", "path=\"in_process\"")
                .await,
            1.0,
            "router {i} reaches its own node in process"
        );
        assert!(
            harness::metrics::sum(&ops, "turbochat_link_connects_total", "path=\"grpc\"").await
                >= 1.0,
            "router {i} reaches the other node over gRPC"
        );
    }
}
