//! The SDK against a real router and node: it reconnects by itself, resumes
//! by seq, and every message arrives exactly once, in order.

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use common::{
    assert_exactly, client, client_with, cluster, config, subscribed, CutProxy, Recorder,
};
use turbochat_client::{DevToken, ErrorCode, Event, MessageState, StaticToken};

fn disconnects(events: &[Event]) -> usize {
    events
        .iter()
        .filter(|e| matches!(e, Event::Disconnected { .. }))
        .count()
}

fn connects(events: &[Event]) -> usize {
    events
        .iter()
        .filter(|e| matches!(e, Event::Connected { .. }))
        .count()
}

/// (a) The router is killed (SIGKILL) and restarted on the same port while
/// alice keeps sending. Both clients reconnect by themselves; bob receives
/// every message exactly once and in the order alice sent them, and the
/// store holds each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn router_killed_while_sending_every_message_arrives_once_in_order() {
    let mut cluster = cluster().await;
    let url = cluster.router_url(0);
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let alice = client(&url, "alice", dir_a.path()).await;
    let bob = client(&url, "bob", dir_b.path()).await;
    let (ra, rb) = (Recorder::start(&alice), Recorder::start(&bob));
    let conversation = alice
        .create_direct("bob", Some("car-1"))
        .await
        .unwrap()
        .conversation_id;
    bob.subscribe_from(conversation, 0).await.unwrap();
    rb.wait_for("bob subscribed", |e| subscribed(e, conversation) == 1)
        .await;

    const N: usize = 30;
    let bodies: Vec<String> = (0..N).map(|i| format!("m{i:02}")).collect();
    let mut ids = Vec::new();
    for (i, body) in bodies.iter().enumerate() {
        if i == 10 {
            tokio::task::block_in_place(|| cluster.routers[0].kill9());
        }
        if i == 20 {
            // Respawns on the same port and waits for its ready line.
            tokio::task::block_in_place(|| cluster.routers[0].restart());
        }
        ids.push(alice.send(conversation, body.clone()).await.unwrap());
        tokio::time::sleep(Duration::from_millis(40)).await;
    }

    ra.wait_for("every send acked", |_| {
        ids.iter().all(|id| ra.sent_seq(id).is_some())
    })
    .await;
    rb.wait_messages(conversation, N).await;
    // Give a stray duplicate the chance to show up before checking.
    tokio::time::sleep(Duration::from_millis(300)).await;

    assert_exactly(&rb.messages(conversation), 1, &bodies);
    let acked: Vec<u64> = ids.iter().map(|id| ra.sent_seq(id).unwrap()).collect();
    assert_eq!(
        acked,
        (1..=N as u64).collect::<Vec<_>>(),
        "acked in send order"
    );
    for id in &ids {
        let states = ra.states(id);
        assert_eq!(
            states.first(),
            Some(&MessageState::Pending),
            "{id}: {states:?}"
        );
        assert_eq!(
            states
                .iter()
                .filter(|s| matches!(s, MessageState::Sent { .. }))
                .count(),
            1,
            "{id}: {states:?}"
        );
    }
    for recorder in [&ra, &rb] {
        let events = recorder.all();
        assert!(disconnects(&events) >= 1, "the cut was seen");
        assert!(connects(&events) >= 2, "and healed by a reconnect");
    }
    assert_eq!(alice.stats().queued, 0);

    // The store agrees: N messages, one per client_msg_id, in order.
    let page = bob.history(conversation, None, Some(200)).await.unwrap();
    let mut stored: Vec<_> = page.messages;
    stored.sort_by_key(|m| m.seq);
    assert_exactly(&stored, 1, &bodies);
    let unique: HashSet<&str> = stored.iter().map(|m| m.client_msg_id.as_str()).collect();
    assert_eq!(unique.len(), N);

    alice.close().await;
    bob.close().await;
}

/// (c) Bob's socket is cut (a proxy drops it and refuses reconnects) while
/// alice sends; when the path heals, bob's client resumes from its last
/// seq and gets exactly the missed messages (the server sent no repeats),
/// then the live ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_after_a_cut_socket_delivers_exactly_what_was_missed() {
    let cluster = cluster().await;
    let url = cluster.router_url(0);
    let router: SocketAddr = cluster.routers[0].addr("http").parse().unwrap();
    let proxy = CutProxy::start(router).await;
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let alice = client(&url, "alice", dir_a.path()).await;
    let bob = client(&format!("http://{}", proxy.addr), "bob", dir_b.path()).await;
    let (ra, rb) = (Recorder::start(&alice), Recorder::start(&bob));
    let conversation = alice
        .create_direct("bob", None)
        .await
        .unwrap()
        .conversation_id;
    bob.subscribe_from(conversation, 0).await.unwrap();
    rb.wait_for("bob subscribed", |e| subscribed(e, conversation) == 1)
        .await;

    let bodies: Vec<String> = (1..=15).map(|i| format!("resume-{i}")).collect();
    let send = |range: std::ops::Range<usize>| {
        let (alice, ra, bodies) = (alice.clone(), ra.clone(), bodies.clone());
        async move {
            let mut ids = Vec::new();
            for body in &bodies[range] {
                ids.push(alice.send(conversation, body.clone()).await.unwrap());
            }
            ra.wait_for("acks", |_| ids.iter().all(|id| ra.sent_seq(id).is_some()))
                .await;
        }
    };

    send(0..5).await;
    rb.wait_messages(conversation, 5).await;

    proxy.cut();
    rb.wait_for("bob disconnected", |e| disconnects(e) >= 1)
        .await;
    send(5..10).await;
    assert_eq!(rb.messages(conversation).len(), 5, "bob is cut off");

    proxy.heal();
    rb.wait_messages(conversation, 10).await;
    send(10..15).await;
    rb.wait_messages(conversation, 15).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    assert_exactly(&rb.messages(conversation), 1, &bodies);
    let stats = bob.stats();
    assert_eq!(stats.connects, 2, "one reconnect: {stats:?}");
    assert_eq!(
        stats.duplicates_dropped, 0,
        "the resume replayed only what was missed: {stats:?}"
    );
    let events = rb.all();
    assert_eq!(
        subscribed(&events, conversation),
        2,
        "subscribed, then resumed"
    );
    let resumed_at = events
        .iter()
        .rposition(|e| matches!(e, Event::Subscribed { .. }))
        .unwrap();
    assert_eq!(
        events[resumed_at],
        Event::Subscribed {
            conversation_id: conversation,
            last_seq: 10
        },
        "the resume caught up to seq 10"
    );

    alice.close().await;
    bob.close().await;
}

/// Like the cut above, but the node replays at most 3 messages per
/// subscribe (`owner.max_replay`): the client sees the gap after the
/// capped replay, fetches the rest with `GET /history`, and still delivers
/// every missed message once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_capped_replay_is_completed_from_history() {
    let mut options = harness::cluster::Options::default();
    options
        .node_env
        .insert("TURBOCHAT_OWNER__MAX_REPLAY".into(), "3".into());
    common::logs();
    let cluster =
        harness::cluster::Cluster::start(harness::store::TestStore::sqlite(), options).await;
    let url = cluster.router_url(0);
    let router: SocketAddr = cluster.routers[0].addr("http").parse().unwrap();
    let proxy = CutProxy::start(router).await;
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let alice = client(&url, "alice", dir_a.path()).await;
    let bob = client(&format!("http://{}", proxy.addr), "bob", dir_b.path()).await;
    let (ra, rb) = (Recorder::start(&alice), Recorder::start(&bob));
    let conversation = alice
        .create_direct("bob", None)
        .await
        .unwrap()
        .conversation_id;
    bob.subscribe_from(conversation, 0).await.unwrap();
    rb.wait_for("bob subscribed", |e| subscribed(e, conversation) == 1)
        .await;

    let bodies: Vec<String> = (1..=12).map(|i| format!("capped-{i}")).collect();
    let mut ids = Vec::new();
    for (i, body) in bodies.iter().enumerate() {
        if i == 2 {
            rb.wait_messages(conversation, 2).await;
            proxy.cut();
            rb.wait_for("bob disconnected", |e| disconnects(e) >= 1)
                .await;
        }
        ids.push(alice.send(conversation, body.clone()).await.unwrap());
    }
    ra.wait_for("acks", |_| ids.iter().all(|id| ra.sent_seq(id).is_some()))
        .await;
    proxy.heal();
    rb.wait_messages(conversation, bodies.len()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    assert_exactly(&rb.messages(conversation), 1, &bodies);
    let stats = bob.stats();
    assert_eq!(stats.gaps_filled, 1, "{stats:?}");
    assert_eq!(stats.duplicates_dropped, 0, "{stats:?}");
    alice.close().await;
    bob.close().await;
}

/// A session whose token is about to expire gets a fresh one from the
/// provider (`auth` frame) and stays up; with a token that cannot be
/// refreshed the server closes it at expiry (so the first half means
/// something).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_is_refreshed_before_it_expires() {
    let cluster = cluster().await;
    let url = cluster.router_url(0);
    let short = |user: &str| DevToken {
        ttl: Duration::from_secs(4),
        ..DevToken::new(user)
    };

    let dir = tempfile::tempdir().unwrap();
    let refreshed = client_with(config(&url, dir.path()), short("alice")).await;
    let rr = Recorder::start(&refreshed);
    rr.wait_for("connected", |e| connects(e) == 1).await;

    let dir = tempfile::tempdir().unwrap();
    let fixed = client_with(
        config(&url, dir.path()),
        StaticToken(short("carol").mint().unwrap()),
    )
    .await;
    let rf = Recorder::start(&fixed);
    rf.wait_for("the fixed token's session is closed at expiry", |e| {
        e.iter().any(|e| {
            matches!(
                e,
                Event::Error {
                    code: ErrorCode::TokenExpired,
                    ..
                }
            )
        }) && disconnects(e) >= 1
    })
    .await;

    // Well past two lifetimes of the token, alice's session is the first one.
    tokio::time::sleep(Duration::from_secs(9)).await;
    let events = rr.all();
    assert_eq!(disconnects(&events), 0, "{events:?}");
    assert_eq!(refreshed.stats().connects, 1);
    let conversation = refreshed
        .create_direct("bob", None)
        .await
        .unwrap()
        .conversation_id;
    let id = refreshed.send(conversation, "still here").await.unwrap();
    rr.wait_for("ack", |_| rr.sent_seq(&id).is_some()).await;

    refreshed.close().await;
    fixed.close().await;
}

/// A permanent refusal marks the message failed (with the reason) and
/// removes it from the queue, and does not block what is queued behind it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_message_fails_and_leaves_the_queue() {
    let cluster = cluster().await;
    let url = cluster.router_url(0);
    let dir = tempfile::tempdir().unwrap();
    let alice = client(&url, "alice", dir.path()).await;
    let ra = Recorder::start(&alice);
    let other_dir = tempfile::tempdir().unwrap();
    let bob = client(&url, "bob", other_dir.path()).await;
    let not_hers = bob
        .create_direct("carol", None)
        .await
        .unwrap()
        .conversation_id;
    let hers = alice
        .create_direct("bob", None)
        .await
        .unwrap()
        .conversation_id;

    let forbidden = alice.send(not_hers, "let me in").await.unwrap();
    let empty = alice.send(hers, "").await.unwrap();
    let fine = alice.send(hers, "hello").await.unwrap();
    ra.wait_for("all three settled", |_| {
        [&forbidden, &empty, &fine]
            .iter()
            .all(|id| ra.states(id).len() >= 2)
    })
    .await;

    let failed = |id: &str| {
        ra.states(id).into_iter().find_map(|s| match s {
            MessageState::Failed { code, reason } => Some((code, reason)),
            _ => None,
        })
    };
    let (code, reason) = failed(&forbidden).expect("forbidden send fails");
    assert_eq!(code, ErrorCode::NotFound, "not yours: answered as missing");
    assert!(!reason.is_empty());
    assert_eq!(
        failed(&empty).map(|f| f.0),
        Some(ErrorCode::InvalidArgument)
    );
    assert_eq!(ra.sent_seq(&fine), Some(1), "not blocked by the failed one");
    assert_eq!(alice.stats().queued, 0);

    alice.close().await;
    bob.close().await;
    // Nothing of them is left on disk either.
    let queue = turbochat_client::queue::DiskQueue::open(dir.path()).unwrap();
    assert!(queue.is_empty());
}
