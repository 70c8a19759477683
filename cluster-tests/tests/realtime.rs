//! Read receipts, typing indicators, presence and new-conversation events,
//! seen from real clients (issue: realtime).

use std::time::{Duration, Instant};

use harness::client::{Api, WsClient};
use harness::cluster::{Cluster, Options};
use harness::store::TestStore;
use harness::tokens::valid;
use serde_json::json;

const T: Duration = Duration::from_secs(10);

async fn start() -> Cluster {
    Cluster::start(TestStore::sqlite(), Options::default()).await
}

#[tokio::test]
async fn a_read_reaches_the_sender_and_every_device_of_the_reader() {
    let cluster = start().await;
    let base = cluster.router_url(0);
    let api = Api::new(&base);
    let (alice, bob) = (valid("alice"), valid("bob"));
    let conversation = api.create_direct(&alice, "bob", None).await;
    let mut a = WsClient::connect(&base, &alice).await.unwrap();
    let mut b1 = WsClient::connect(&base, &bob).await.unwrap();
    let mut b2 = WsClient::connect(&base, &bob).await.unwrap();
    for c in [&mut a, &mut b1, &mut b2] {
        c.subscribe(&conversation, None).await;
    }
    for i in 1..=3 {
        a.send_message(&conversation, &format!("m{i}"), "hi").await;
    }
    assert_eq!(api.conversations(&bob).await[0]["unread_count"], 3);

    b1.send(json!({"type": "read", "conversation_id": conversation, "seq": 3}))
        .await;
    let receipt = a.expect("read", T).await;
    assert_eq!(
        (receipt["user_id"].as_str(), receipt["seq"].as_u64()),
        (Some("bob"), Some(3))
    );
    assert_eq!(
        b2.expect("read", T).await["seq"],
        3,
        "bob's other device sees it"
    );
    // A stale read changes nothing.
    b2.send(json!({"type": "read", "conversation_id": conversation, "seq": 1}))
        .await;
    harness::eventually("unread 0 for bob", T, || async {
        let list = api.conversations(&bob).await;
        (list[0]["unread_count"] == 0 && list[0]["last_read_seq"] == 3).then_some(())
    })
    .await;
    assert!(
        a.next(Duration::from_millis(300))
            .await
            .is_none_or(|e| !matches!(e,
            harness::client::Event::Frame(ref f) if f["type"] == "read")),
        "no receipt for a stale read"
    );
}

#[tokio::test]
async fn typing_stops_when_the_typist_vanishes_or_goes_quiet() {
    let mut options = Options::default();
    options
        .node_env
        .insert("TURBOCHAT_OWNER__TYPING_EXPIRY".into(), "1500ms".into());
    let cluster = Cluster::start(TestStore::sqlite(), options).await;
    let base = cluster.router_url(0);
    let api = Api::new(&base);
    let (alice, bob) = (valid("alice"), valid("bob"));
    let conversation = api.create_direct(&alice, "bob", None).await;
    let mut b = WsClient::connect(&base, &bob).await.unwrap();
    b.subscribe(&conversation, None).await;

    let mut a = WsClient::connect(&base, &alice).await.unwrap();
    a.subscribe(&conversation, None).await;
    a.send(json!({"type": "typing", "conversation_id": conversation, "state": "start"}))
        .await;
    assert_eq!(b.expect("typing", T).await["state"], "start");
    a.close().await;
    let stop = b.expect("typing", T).await;
    assert_eq!(
        (stop["user_id"].as_str(), stop["state"].as_str()),
        (Some("alice"), Some("stop"))
    );

    // Still connected but silent: the start expires by itself.
    let mut a = WsClient::connect(&base, &alice).await.unwrap();
    a.subscribe(&conversation, None).await;
    a.send(json!({"type": "typing", "conversation_id": conversation, "state": "start"}))
        .await;
    assert_eq!(b.expect("typing", T).await["state"], "start");
    let started = Instant::now();
    assert_eq!(b.expect("typing", T).await["state"], "stop");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1200) && waited < Duration::from_secs(4),
        "{waited:?}"
    );
}

#[tokio::test]
async fn presence_waits_for_the_last_device_and_a_grace_period() {
    let mut options = Options::default();
    options
        .node_env
        .insert("TURBOCHAT_OWNER__PRESENCE_GRACE".into(), "1s".into());
    let cluster = Cluster::start(TestStore::sqlite(), options).await;
    let base = cluster.router_url(0);
    let api = Api::new(&base);
    let (alice, bob) = (valid("alice"), valid("bob"));
    api.create_direct(&alice, "bob", None).await;
    let mut a = WsClient::connect(&base, &alice).await.unwrap();

    let b1 = WsClient::connect(&base, &bob).await.unwrap();
    let online = a.expect("presence", T).await;
    assert_eq!(
        (online["user_id"].as_str(), online["online"].as_bool()),
        (Some("bob"), Some(true))
    );
    let b2 = WsClient::connect(&base, &bob).await.unwrap();
    b2.close().await;
    // (Alice's own presence snapshot may name bob online again: a state,
    // not a change. Only "offline" would be wrong.)
    let deadline = Instant::now() + Duration::from_millis(1800);
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        let event = a.next(left).await;
        assert!(
            !matches!(event, Some(harness::client::Event::Frame(ref f))
                if f["type"] == "presence" && f["online"] == false),
            "a second device leaving does not show bob offline"
        );
        if event.is_none() {
            break;
        }
    }
    let left = Instant::now();
    b1.close().await;
    let offline = a
        .expect_where("presence", T, |f| f["online"] == false)
        .await;
    assert_eq!(offline["online"], false);
    assert!(
        left.elapsed() >= Duration::from_millis(900),
        "after the grace period"
    );
}

#[tokio::test]
async fn a_new_conversation_reaches_the_other_participant_live() {
    let cluster = start().await;
    let base = cluster.router_url(0);
    let api = Api::new(&base);
    let mut seller = WsClient::connect(&base, &valid("seller")).await.unwrap();
    let id = api
        .create_direct(&valid("buyer"), "seller", Some("bmw-320d"))
        .await;
    let event = seller.expect("conversation", T).await;
    assert_eq!(event["conversation"]["conversation_id"], id.as_str());
    assert_eq!(event["conversation"]["listing_id"], "bmw-320d");
}
