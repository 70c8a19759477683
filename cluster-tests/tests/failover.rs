//! Failover as a user sees it (issue 17): 3 nodes + 2 routers with gossip on
//! PostgreSQL, 12 conversations — half with a pipelined sender (3 messages
//! in flight at each tick), half with an SDK-like sender (one in flight,
//! 10 s ack timeout) — through one fault each. Every scenario prints its
//! figures and checks: 0 lost, 0 duplicates, 0 per-sender order
//! inversions, every send answered before the client's timeout, and the
//! longest time any one conversation went without an ack during the fault
//! (and, across a gossip partition, how long a message took from its ack
//! to its receiver). The gRPC cut runs with the Redis bus, which then
//! carries sends and subscriptions both ways.

use std::time::{Duration, Instant};

use harness::cluster::{Cluster, Options};
use harness::store::TestStore;
use harness::workload::{Figures, Shape, Traffic};

/// One scenario at a time: their timings mean little when they share 2 cores.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn options() -> Options {
    Options {
        nodes: 3,
        routers: 2,
        gossip: true,
        ..Options::default()
    }
}

fn routers(cluster: &Cluster) -> Vec<String> {
    (0..cluster.routers.len())
        .map(|i| cluster.router_url(i))
        .collect()
}

async fn ring_becomes(cluster: &Cluster, expected: usize, deadline: Duration) -> Duration {
    let started = Instant::now();
    for i in 0..cluster.routers.len() {
        if cluster.routers[i].pid().is_none() {
            continue;
        }
        harness::eventually("ring change", deadline, || async {
            (cluster.ring(i).await.len() == expected).then_some(())
        })
        .await;
    }
    started.elapsed()
}

/// The bound a pause is checked against: the target, with a
/// quarter more for a loaded 2-core machine (detection alone measured
/// 1.1–1.8 s here); the figures printed are what the closing note reports.
fn bound(target: Duration) -> Duration {
    target * 5 / 4
}

/// The checks every scenario makes; `pauses` are (step, longest
/// conversation pause, bound).
fn report(scenario: &str, figures: &Figures, pauses: &[(&str, Duration, Duration)]) {
    let steps: Vec<String> = pauses
        .iter()
        .map(|(step, pause, bound)| format!("{step}-pause {pause:?} (bound {bound:?})"))
        .collect();
    println!("[{scenario}] {figures} {}", steps.join(" "));
    check(scenario, figures);
    for (step, pause, bound) in pauses {
        assert!(
            pause <= bound,
            "{scenario}: {step} paused a conversation {pause:?}"
        );
    }
}

/// Loss, order and answers.
fn check(scenario: &str, figures: &Figures) {
    assert_eq!(figures.lost, 0, "{scenario}: lost messages");
    assert_eq!(figures.acked, figures.sent, "{scenario}: every send acked");
    assert_eq!(figures.stored, figures.acked, "{scenario}: stored once");
    assert_eq!(
        figures.delivered, figures.stored,
        "{scenario}: delivered all"
    );
    assert_eq!(figures.inversions, 0, "{scenario}: a sender's order kept");
    assert_eq!(
        figures.timeouts, 0,
        "{scenario}: every send answered within the client's timeout"
    );
}

async fn start() -> (Cluster, Traffic) {
    let cluster = Cluster::start(TestStore::postgres().await, options()).await;
    let traffic = Traffic::start(&routers(&cluster), Shape::pipelined_and_sdk()).await;
    traffic.wait_for_acks(100, Duration::from_secs(20)).await;
    (cluster, traffic)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_then_restarted() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let (mut cluster, traffic) = start().await;
    let t = Instant::now();
    cluster.nodes[1].kill9();
    let detected = ring_becomes(&cluster, 2, Duration::from_secs(10)).await;
    traffic.wait_for_acks(150, Duration::from_secs(20)).await;
    let crash = traffic.longest_conversation_pause_since(t);

    let t = Instant::now();
    cluster.nodes[1].restart();
    ring_becomes(&cluster, 3, Duration::from_secs(20)).await;
    traffic.wait_for_acks(150, Duration::from_secs(20)).await;
    let restart = traffic.longest_conversation_pause_since(t);
    let figures = traffic.finish(Duration::from_secs(60)).await;
    println!("[kill -9] detected-down-after {detected:?}");
    report(
        "kill -9 and restart",
        &figures,
        &[
            ("crash", crash, bound(Duration::from_secs(2))),
            ("restart", restart, bound(Duration::from_secs(1))),
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_frozen_for_eight_seconds() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let (cluster, traffic) = start().await;
    let t = Instant::now();
    cluster.nodes[1].freeze();
    let detected = ring_becomes(&cluster, 2, Duration::from_secs(10)).await;
    traffic.wait_for_acks(100, Duration::from_secs(20)).await;
    // The freeze lasts 8 s in all, whatever the detection took.
    tokio::time::sleep(Duration::from_secs(8).saturating_sub(t.elapsed())).await;
    cluster.nodes[1].thaw();
    ring_becomes(&cluster, 3, Duration::from_secs(20)).await;
    traffic.wait_for_acks(150, Duration::from_secs(20)).await;
    let freeze = traffic.longest_conversation_pause_since(t);
    let figures = traffic.finish(Duration::from_secs(60)).await;
    println!("[SIGSTOP 8 s] detected-down-after {detected:?}");
    report(
        "SIGSTOP 8 s",
        &figures,
        &[("freeze", freeze, bound(Duration::from_secs(2)))],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_right_after_joining() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let (mut cluster, traffic) = start().await;
    let t = Instant::now();
    let added = cluster.add_node();
    ring_becomes(&cluster, 4, Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    cluster.nodes[added].kill9();
    let detected = ring_becomes(&cluster, 3, Duration::from_secs(10)).await;
    traffic.wait_for_acks(150, Duration::from_secs(20)).await;
    let pause = traffic.longest_conversation_pause_since(t);
    let figures = traffic.finish(Duration::from_secs(60)).await;
    println!("[killed 300 ms after joining] detected-down-after {detected:?}");
    report(
        "killed 300 ms after joining",
        &figures,
        &[("join-and-kill", pause, bound(Duration::from_secs(2)))],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_stopped_with_sigterm() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let (mut cluster, traffic) = start().await;
    let t = Instant::now();
    let code = cluster.nodes[1].terminate(Duration::from_secs(30));
    assert_eq!(code, Some(0));
    ring_becomes(&cluster, 2, Duration::from_secs(10)).await;
    traffic.wait_for_acks(150, Duration::from_secs(20)).await;
    let pause = traffic.longest_conversation_pause_since(t);
    let figures = traffic.finish(Duration::from_secs(60)).await;
    report(
        "SIGTERM",
        &figures,
        &[("drain", pause, bound(Duration::from_secs(1)))],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_killed() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let (mut cluster, traffic) = start().await;
    let t = Instant::now();
    cluster.routers[0].kill9();
    traffic.wait_for_acks(150, Duration::from_secs(20)).await;
    let pause = traffic.longest_conversation_pause_since(t);
    let figures = traffic.finish(Duration::from_secs(60)).await;
    report(
        "router killed",
        &figures,
        &[("router-loss", pause, bound(Duration::from_secs(1)))],
    );
}

/// Bus frames published by every process so far.
async fn bus_frames(cluster: &Cluster) -> f64 {
    let mut urls: Vec<String> = (0..cluster.routers.len())
        .map(|i| cluster.router_ops_url(i))
        .collect();
    urls.extend(
        cluster
            .nodes
            .iter()
            .map(|n| format!("http://{}", n.addr("http"))),
    );
    let mut total = 0.0;
    for url in urls {
        let Ok(reply) = reqwest::get(format!("{url}/metrics")).await else {
            continue;
        };
        let text = reply.text().await.unwrap_or_default();
        total += text
            .lines()
            .filter(|l| l.starts_with("turbochat_bus_published_total"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>();
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_nodes_grpc_cut_for_five_seconds() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let options = Options {
        proxied_grpc: true,
        redis_prefix: Some(format!("tc-failover-{}", uuid::Uuid::new_v4().simple())),
        ..options()
    };
    let cluster = Cluster::start(TestStore::postgres().await, options).await;
    let traffic = Traffic::start(&routers(&cluster), Shape::pipelined_and_sdk()).await;
    traffic.wait_for_acks(100, Duration::from_secs(20)).await;
    let before = bus_frames(&cluster).await;
    let t = Instant::now();
    cluster.grpc_proxy("node-1").cut();
    tokio::time::sleep(Duration::from_secs(5)).await;
    cluster.grpc_proxy("node-1").heal();
    traffic.wait_for_acks(150, Duration::from_secs(20)).await;
    let pause = traffic.longest_conversation_pause_since(t);
    let carried = bus_frames(&cluster).await - before;
    let figures = traffic.finish(Duration::from_secs(60)).await;
    println!("[gRPC cut 5 s] bus-frames-published {carried}");
    report(
        "gRPC cut 5 s, sends over the bus",
        &figures,
        &[("cut", pause, bound(Duration::from_secs(2)))],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gossip_partition_of_one_node_and_one_router() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let net = harness::gossip_net::GossipNet::new();
    let options = Options {
        gossip_net: Some(net.clone()),
        ..options()
    };
    let cluster = Cluster::start(TestStore::postgres().await, options).await;
    let traffic = Traffic::start(&routers(&cluster), Shape::pipelined_and_sdk()).await;
    traffic.wait_for_acks(100, Duration::from_secs(20)).await;
    let t = Instant::now();
    net.partition(&["node-1", "router-1"], &["node-2", "node-3", "router-2"]);
    tokio::time::sleep(Duration::from_secs(6)).await;
    net.heal();
    ring_becomes(&cluster, 3, Duration::from_secs(30)).await;
    traffic.wait_for_acks(150, Duration::from_secs(20)).await;
    let pause = traffic.longest_conversation_pause_since(t);
    let figures = traffic.finish(Duration::from_secs(60)).await;
    // Both sides own the vanished side's conversations; each reads the
    // other's writes from the store for its subscribers.
    report(
        "gossip partition 6 s",
        &figures,
        &[
            ("partition", pause, bound(Duration::from_secs(2))),
            (
                "delivery-across",
                figures.longest_delivery_lag,
                bound(Duration::from_secs(2)),
            ),
        ],
    );
}

/// A crashed node's address refuses connections: the routers' links see it
/// at once and suspect it, so it is declared down after the suspicion
/// timeout (800 ms) with no probe needed. Probing is slowed here to once
/// in five minutes, so only that path can drop the node within seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_node_is_suspected_by_the_routers_links() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let slow_probes = || {
        [(
            "TURBOCHAT_CLUSTER__PROBE_PERIOD".to_string(),
            "300s".to_string(),
        )]
        .into_iter()
        .collect()
    };
    let options = Options {
        nodes: 2,
        routers: 1,
        node_env: slow_probes(),
        router_env: slow_probes(),
        ..options()
    };
    let mut cluster = Cluster::start(TestStore::postgres().await, options).await;
    ring_becomes(&cluster, 2, Duration::from_secs(20)).await;
    let t = Instant::now();
    cluster.nodes[1].kill9();
    let detected = ring_becomes(&cluster, 1, Duration::from_secs(5)).await;
    println!(
        "[crash, probes off] down after {:?} (suspect_to_down 800 ms)",
        t.elapsed().max(detected)
    );
}
