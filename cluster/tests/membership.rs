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
