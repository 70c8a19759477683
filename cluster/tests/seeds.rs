//! Seeds given as `host:port` over real UDP sockets on loopback: a name is
//! resolved at every join attempt, so a member finds pods that appear after
//! it started, and groups that formed apart merge once the name covers both.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use turbochat_cluster::seeds::Resolver;
use turbochat_cluster::{GossipConfig, Member, MemberState, Membership, Role, Seed};

fn member(id: &str) -> Member {
    Member {
        id: id.into(),
        role: Role::Node,
        gossip: "127.0.0.1:0".parse().unwrap(),
        grpc: Some(format!("http://{id}:1")),
        http: None,
        state: MemberState::Active,
        generation: 0,
    }
}

fn config(listen: SocketAddr, seeds: &[&str]) -> GossipConfig {
    GossipConfig {
        gossip_listen: listen,
        seeds: seeds.iter().map(|s| s.parse::<Seed>().unwrap()).collect(),
        seed_refresh: Duration::from_millis(300),
        probe_period: Duration::from_millis(200),
        probe_rtt: Duration::from_millis(80),
        suspect_to_down: Duration::from_millis(800),
        cluster_size_hint: 4,
        ..GossipConfig::default()
    }
}

fn any_port() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// A UDP address nothing listens on (bound, then released).
fn free_udp_addr() -> SocketAddr {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .unwrap()
}

async fn wait_for(what: &str, deadline: Duration, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A DNS record the test moves: every lookup of any name answers its
/// current addresses, and lookups are counted.
#[derive(Clone, Default)]
struct Record {
    addrs: Arc<Mutex<Vec<SocketAddr>>>,
    lookups: Arc<AtomicUsize>,
}

impl Record {
    fn set(&self, addrs: &[SocketAddr]) {
        *self.addrs.lock().unwrap() = addrs.to_vec();
    }

    fn lookups(&self) -> usize {
        self.lookups.load(Ordering::SeqCst)
    }

    fn resolver(&self) -> Resolver {
        let record = self.clone();
        Arc::new(move |_seed: &Seed| {
            record.lookups.fetch_add(1, Ordering::SeqCst);
            let addrs = record.addrs.lock().unwrap().clone();
            Box::pin(async move { Ok(addrs) })
        })
    }
}

#[tokio::test]
async fn a_seed_given_by_name_is_joined_once_it_starts() {
    let stop = CancellationToken::new();
    // The seed's address is chosen, and nothing listens there yet.
    let seed_addr = free_udp_addr();
    let name = format!("localhost:{}", seed_addr.port());
    let joiner = Membership::start(member("node-2"), config(any_port(), &[&name]), stop.clone())
        .await
        .unwrap();
    let seed = Membership::start(member("node-1"), config(seed_addr, &[]), stop.clone())
        .await
        .unwrap();
    wait_for(
        "the joiner to find the seed through its name",
        Duration::from_secs(5),
        || joiner.view().members.len() == 2 && seed.view().members.len() == 2,
    )
    .await;
    stop.cancel();
}

#[tokio::test]
async fn a_seed_name_is_resolved_again_at_every_attempt() {
    let stop = CancellationToken::new();
    let record = Record::default();
    // The name first stands for a pod that is gone.
    record.set(&[free_udp_addr()]);
    let joiner = Membership::start_with_resolver(
        member("node-2"),
        config(any_port(), &["turbochat-node-gossip:7200"]),
        record.resolver(),
        stop.clone(),
    )
    .await
    .unwrap();
    wait_for(
        "the joiner to look the name up again",
        Duration::from_secs(5),
        || record.lookups() >= 3,
    )
    .await;
    assert_eq!(joiner.view().members.len(), 1, "nobody answered yet");

    // A new pod behind the name.
    let live = Membership::start(member("node-1"), config(any_port(), &[]), stop.clone())
        .await
        .unwrap();
    record.set(&[live.gossip_addr()]);
    wait_for(
        "the joiner to find the new pod",
        Duration::from_secs(5),
        || joiner.view().members.len() == 2 && live.view().members.len() == 2,
    )
    .await;
    stop.cancel();
}

#[tokio::test]
async fn groups_that_formed_apart_merge_through_the_name() {
    let stop = CancellationToken::new();
    let record = Record::default();
    let seeds = ["turbochat-node-gossip:7200"];
    // `a` started while the name stood for nothing else: it is alone.
    let a = Membership::start(member("node-a"), config(any_port(), &[]), stop.clone())
        .await
        .unwrap();
    let b = Membership::start_with_resolver(
        member("node-b"),
        config(any_port(), &seeds),
        record.resolver(),
        stop.clone(),
    )
    .await
    .unwrap();
    let c = Membership::start_with_resolver(
        member("node-c"),
        config(any_port(), &seeds),
        record.resolver(),
        stop.clone(),
    )
    .await
    .unwrap();
    record.set(&[b.gossip_addr()]);
    wait_for("b and c to form a group", Duration::from_secs(5), || {
        b.view().members.len() == 2 && c.view().members.len() == 2
    })
    .await;
    assert_eq!(a.view().members.len(), 1);

    // DNS now lists every pod: b and c, no longer alone, still look again.
    record.set(&[a.gossip_addr(), b.gossip_addr(), c.gossip_addr()]);
    wait_for("one cluster of three", Duration::from_secs(5), || {
        [&a, &b, &c].iter().all(|m| m.view().members.len() == 3)
    })
    .await;
    stop.cancel();
}
