//! Membership over real UDP sockets on loopback: join through a seed, see
//! state changes, detect a member that vanished.

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use turbochat_cluster::{GossipConfig, Member, MemberState, Membership, Role};

fn member(id: &str, role: Role) -> Member {
    Member {
        id: id.into(),
        role,
        gossip: "127.0.0.1:0".parse().unwrap(),
        grpc: (role == Role::Node).then(|| format!("http://{id}:1")),
        http: None,
        state: MemberState::Active,
        generation: 0,
    }
}

fn config(seeds: Vec<std::net::SocketAddr>) -> GossipConfig {
    GossipConfig {
        gossip_listen: "127.0.0.1:0".parse().unwrap(),
        gossip_advertise: None,
        seeds: seeds.into_iter().map(Into::into).collect(),
        seed_refresh: Duration::from_secs(10),
        probe_period: Duration::from_millis(200),
        probe_rtt: Duration::from_millis(80),
        suspect_to_down: Duration::from_millis(800),
        cluster_size_hint: 4,
    }
}

async fn wait_for(what: &str, deadline: Duration, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn members_join_change_state_and_are_detected_down() {
    let seed_stop = CancellationToken::new();
    let seed = Membership::start(
        member("node-1", Role::Node),
        config(vec![]),
        seed_stop.clone(),
    )
    .await
    .unwrap();
    let seeds = vec![seed.gossip_addr()];
    let n2_stop = CancellationToken::new();
    let n2 = Membership::start(
        member("node-2", Role::Node),
        config(seeds.clone()),
        n2_stop.clone(),
    )
    .await
    .unwrap();
    let r1 = Membership::start(
        member("router-1", Role::Router),
        config(seeds.clone()),
        CancellationToken::new(),
    )
    .await
    .unwrap();

    wait_for(
        "all three to see each other",
        Duration::from_secs(5),
        || {
            [&seed, &n2, &r1]
                .iter()
                .all(|m| m.view().members.len() == 3)
        },
    )
    .await;
    let ring = r1.view().ring(64);
    let ids: Vec<&str> = ring.nodes().iter().map(|n| n.id.as_str()).collect();
    assert_eq!(
        ids,
        ["node-1", "node-2"],
        "routers are members but not on the ring"
    );

    n2.set_state(MemberState::Leaving).await.unwrap();
    wait_for(
        "the router to see node-2 leaving",
        Duration::from_secs(5),
        || r1.view().members.get("node-2").map(|m| m.state) == Some(MemberState::Leaving),
    )
    .await;
    assert_eq!(
        r1.view().ring(64).nodes().len(),
        1,
        "a leaving node is off the ring"
    );

    // A member that leaves disappears from everyone's view.
    n2_stop.cancel();
    drop(n2);
    let detect = config(vec![]).failure_detection_time();
    let started = Instant::now();
    wait_for("node-2 to leave the view", detect * 3, || {
        !r1.view().members.contains_key("node-2")
    })
    .await;
    eprintln!(
        "node-2 gone from the view after {:?} (configured detection {:?})",
        started.elapsed(),
        detect
    );
    seed_stop.cancel();
}

/// Probing slowed to once in five minutes: anything declared down within
/// seconds was declared so by a suspicion from outside gossip.
fn without_probes(seeds: Vec<std::net::SocketAddr>) -> GossipConfig {
    GossipConfig {
        probe_period: Duration::from_secs(300),
        ..config(seeds)
    }
}

/// A member whose process vanishes without a word: its membership runs on
/// a runtime of its own, dropped at once (no leave is sent).
fn start_abruptly_stoppable(
    me: Member,
    config: GossipConfig,
) -> (Membership, tokio::runtime::Runtime) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let membership = runtime
        .block_on(Membership::start(me, config, CancellationToken::new()))
        .unwrap();
    (membership, runtime)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspicion_from_outside_declares_a_dead_member_down_and_a_live_one_refutes_it() {
    let stop = CancellationToken::new();
    let seed = Membership::start(
        member("node-1", Role::Node),
        without_probes(vec![]),
        stop.clone(),
    )
    .await
    .unwrap();
    let seeds = vec![seed.gossip_addr()];
    let router = Membership::start(
        member("router-1", Role::Router),
        without_probes(seeds.clone()),
        stop.clone(),
    )
    .await
    .unwrap();
    let (n2, n2_runtime) = tokio::task::spawn_blocking(move || {
        start_abruptly_stoppable(member("node-2", Role::Node), without_probes(seeds))
    })
    .await
    .unwrap();
    wait_for(
        "all three to see each other",
        Duration::from_secs(5),
        || {
            [&seed, &router, &n2]
                .iter()
                .all(|m| m.view().members.len() == 3)
        },
    )
    .await;

    // A live member suspected (e.g. one router's path to it refused) hears
    // of it by gossip and refutes: nobody drops it.
    router.suspect("node-1", "http://node-1:1");
    // Its verdict would fall after 800 ms; give it three times that.
    tokio::time::sleep(Duration::from_millis(2400)).await;
    for m in [&seed, &router] {
        assert!(
            m.view().members.contains_key("node-1"),
            "a live member refutes a suspicion"
        );
    }

    // node-2's process vanishes; nothing probes it for minutes.
    tokio::task::spawn_blocking(move || n2_runtime.shutdown_background())
        .await
        .unwrap();
    drop(n2);

    // A suspicion naming another address (an identity that is gone, e.g.
    // a restarted node's old one) is ignored: node-2 stays for now.
    router.suspect("node-2", "http://elsewhere:1");
    tokio::time::sleep(Duration::from_millis(2400)).await;
    assert!(
        router.view().members.contains_key("node-2"),
        "a suspicion about another address is ignored"
    );
    let started = Instant::now();
    router.suspect("node-2", "http://node-2:1");
    wait_for(
        "node-2 declared down everywhere",
        Duration::from_secs(5),
        || {
            [&seed, &router]
                .iter()
                .all(|m| !m.view().members.contains_key("node-2"))
        },
    )
    .await;
    eprintln!(
        "node-2 down everywhere {:?} after the suspicion (suspect_to_down 800 ms)",
        started.elapsed()
    );
    stop.cancel();
}
