//! The single-owner message path, end to end: real router and node
//! processes on port 0, talked to as clients do (issue: foundation).

use std::time::Duration;

use harness::client::{Api, Event, Refused, WsClient};
use harness::cluster::{Cluster, Options};
use harness::store::TestStore;
use harness::tokens::{token, valid, Flaw};
use serde_json::json;

const T: Duration = Duration::from_secs(10);

fn seqs(frames: &[serde_json::Value]) -> Vec<u64> {
    frames.iter().map(|f| f["seq"].as_u64().unwrap()).collect()
}

/// Two users on their own sockets create a conversation, chat both ways,
/// see both messages in seq order; history and the list agree.
async fn two_users_chat(store: TestStore) {
    let cluster = Cluster::start(store, Options::default()).await;
    let base = cluster.router_url(0);
    let api = Api::new(&base);
    let (alice, bob) = (valid("alice"), valid("bob"));
    let conversation = api.create_direct(&alice, "bob", Some("car-42")).await;
    // Creating it again, from the other side, is the same conversation.
    assert_eq!(
        api.create_direct(&bob, "alice", Some("car-42")).await,
        conversation
    );

    let mut a = WsClient::connect(&base, &alice).await.unwrap();
    let mut b = WsClient::connect(&base, &bob).await.unwrap();
    assert_eq!(a.welcome["user_id"], "alice");
    assert_eq!(a.subscribe(&conversation, Some(0)).await, 0);
    assert_eq!(b.subscribe(&conversation, Some(0)).await, 0);

    let ack = a
        .send_message(&conversation, "a-1", "Is the Audi still for sale?")
        .await;
    assert_eq!(ack["type"], "ack", "{ack}");
    assert_eq!(ack["seq"], 1);
    let ack = b
        .send_message(&conversation, "b-1", "Yes, come by Saturday")
        .await;
    assert_eq!(ack["seq"], 2);

    for client in [&mut a, &mut b] {
        let first = client.expect_where("message", T, |f| f["seq"] == 1).await;
        let second = client.expect_where("message", T, |f| f["seq"] == 2).await;
        assert_eq!(first["sender_id"], "alice");
        assert_eq!(first["body"], "Is the Audi still for sale?");
        assert_eq!(second["sender_id"], "bob");
        assert!(client.take_pending("message").is_empty(), "no duplicates");
    }

    let (status, page) = api
        .get(
            &format!("/history?conversation_id={conversation}"),
            Some(&alice),
        )
        .await;
    assert_eq!(status, 200);
    let history = page["messages"].as_array().unwrap();
    assert_eq!(seqs(history), [2, 1], "newest first");
    assert_eq!(history[1]["client_msg_id"], "a-1");

    let list = api.conversations(&bob).await;
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["conversation_id"], conversation.as_str());
    assert_eq!(list[0]["last_message"]["seq"], 2);
    assert_eq!(
        list[0]["unread_count"], 1,
        "bob has not read alice's message"
    );
}

#[tokio::test]
async fn two_users_chat_on_sqlite() {
    two_users_chat(TestStore::sqlite()).await;
}

#[tokio::test]
async fn two_users_chat_on_postgres() {
    two_users_chat(TestStore::postgres().await).await;
}

#[tokio::test]
async fn a_retried_send_is_one_message_with_one_seq() {
    let cluster = Cluster::start(TestStore::postgres().await, Options::default()).await;
    let base = cluster.router_url(0);
    let api = Api::new(&base);
    let alice = valid("alice");
    let conversation = api.create_direct(&alice, "bob", None).await;
    let mut a = WsClient::connect(&base, &alice).await.unwrap();
    let first = a.send_message(&conversation, "same-id", "hello").await;
    let again = a.send_message(&conversation, "same-id", "hello").await;
    assert_eq!(first["type"], "ack");
    assert_eq!(again["type"], "ack");
    assert_eq!(first["seq"], again["seq"]);
    assert_eq!(first["message_id"], again["message_id"]);
    // After a reconnect, too.
    a.close().await;
    let mut a = WsClient::connect(&base, &alice).await.unwrap();
    let third = a.send_message(&conversation, "same-id", "hello").await;
    assert_eq!(third["seq"], first["seq"]);
    let next = a.send_message(&conversation, "other-id", "second").await;
    assert_eq!(next["seq"], 2, "the retry consumed no seq");
    assert_eq!(seqs(&api.all_messages(&alice, &conversation).await), [1, 2]);
}

/// Sessions that subscribe while the owner is writing each get every
/// message once, in order. (The owner once took its own batch, already in
/// the store but not yet answered, for another node's write during a
/// subscribe; the conversation's task died and its subscribers heard
/// nothing more.)
#[tokio::test]
async fn subscribing_while_messages_are_being_written_misses_nothing() {
    const PER_SENDER: u64 = 60;
    const READERS: usize = 20;
    let cluster = Cluster::start(TestStore::postgres().await, Options::default()).await;
    let base = cluster.router_url(0);
    let api = Api::new(&base);
    let conversation = api.create_direct(&valid("alice"), "bob", None).await;

    // Both participants send at their sustained rate limit (20/s), so the
    // owner almost always has a batch in flight.
    let mut senders = Vec::new();
    for user in ["alice", "bob"] {
        let mut client = WsClient::connect(&base, &valid(user)).await.unwrap();
        let conversation = conversation.clone();
        senders.push(tokio::spawn(async move {
            for i in 0..PER_SENDER {
                client
                    .send(json!({"type": "send", "conversation_id": conversation,
                        "client_msg_id": format!("{user}-{i}"), "body": "vroom"}))
                    .await;
                tokio::time::sleep(Duration::from_millis(55)).await;
            }
            for i in 0..PER_SENDER {
                let answer = client.answer(&format!("{user}-{i}"), T).await;
                assert_eq!(answer["type"], "ack", "{answer}");
            }
        }));
    }
    // Readers join one after another while that goes on.
    let total = 2 * PER_SENDER;
    let mut readers = Vec::new();
    for _ in 0..READERS {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let mut reader = WsClient::connect(&base, &valid("bob")).await.unwrap();
        let conversation = conversation.clone();
        readers.push(tokio::spawn(async move {
            reader.subscribe(&conversation, Some(0)).await;
            let mut got = Vec::new();
            while got.len() < total as usize {
                got.push(reader.expect("message", T).await["seq"].as_u64().unwrap());
            }
            assert_eq!(got, (1..=total).collect::<Vec<_>>(), "once each, in order");
            while let Some(Event::Frame(frame)) = reader.next(Duration::from_millis(200)).await {
                assert_ne!(frame["type"], "message", "duplicate: {frame}");
            }
        }));
    }
    for task in senders.into_iter().chain(readers) {
        task.await.unwrap();
    }
}

#[tokio::test]
async fn acked_messages_survive_kill_9_and_resume_delivers_exactly_the_gap() {
    let mut cluster = Cluster::start(TestStore::postgres().await, Options::default()).await;
    let base = cluster.router_url(0);
    let api = Api::new(&base);
    let (alice, bob) = (valid("alice"), valid("bob"));
    let conversation = api.create_direct(&alice, "bob", None).await;

    let mut a = WsClient::connect(&base, &alice).await.unwrap();
    let mut stays = WsClient::connect(&base, &bob).await.unwrap();
    stays.subscribe(&conversation, Some(0)).await;
    let mut leaves = WsClient::connect(&base, &bob).await.unwrap();
    leaves.subscribe(&conversation, Some(0)).await;

    let ack = a.send_message(&conversation, "m1", "one").await;
    assert_eq!(ack["seq"], 1);
    cluster.nodes[0].kill9();
    assert_eq!(seqs(&[leaves.expect("message", T).await]), [1]);
    assert_eq!(seqs(&[stays.expect("message", T).await]), [1]);
    leaves.close().await;
    cluster.nodes[0].restart();
    cluster.wait_ready().await;

    // The acked message is in history after the crash.
    assert_eq!(seqs(&api.all_messages(&alice, &conversation).await), [1]);

    // Alice keeps talking (her sends may race the router's reconnect: retry).
    for (i, id) in ["m2", "m3", "m4"].iter().enumerate() {
        let mut answer = a.send_message(&conversation, id, "more").await;
        while answer["type"] == "error" {
            assert_eq!(answer["code"], "unavailable", "{answer}");
            tokio::time::sleep(Duration::from_millis(100)).await;
            answer = a.send_message(&conversation, id, "more").await;
        }
        assert_eq!(answer["seq"], i as u64 + 2);
    }

    // A client that resumes from its last seq gets exactly what it missed.
    let mut back = WsClient::connect(&base, &bob).await.unwrap();
    back.send(
        json!({"type": "resume", "conversations": [{"conversation_id": conversation, "since": 1}]}),
    )
    .await;
    back.expect("subscribed", T).await;
    let replayed = back.take_pending("message");
    assert_eq!(seqs(&replayed), [2, 3, 4]);

    // The client that stayed on the router through the node restart was
    // re-subscribed by the router from its last seq: no gap, no duplicate.
    let mut got = Vec::new();
    while got.len() < 3 {
        got.push(stays.expect("message", T).await);
    }
    assert_eq!(seqs(&got), [2, 3, 4]);
    // (It may also see `subscribed` again: the router's re-subscribe.)
    while let Some(event) = stays.next(Duration::from_millis(300)).await {
        match event {
            Event::Frame(frame) => assert_ne!(frame["type"], "message", "duplicate: {frame}"),
            Event::Closed(code) => panic!("closed: {code:?}"),
        }
    }
}

#[tokio::test]
async fn bad_tokens_are_refused_before_the_upgrade() {
    let cluster = Cluster::start(TestStore::sqlite(), Options::default()).await;
    let base = cluster.router_url(0);
    let api = Api::new(&base);
    match WsClient::connect_anonymous(&base).await {
        Err(Refused::Status(status)) => assert_eq!(status, 401, "no token"),
        other => panic!("no token: {:?}", other.map(|c| c.welcome)),
    }
    for flaw in [
        Flaw::BadSignature,
        Flaw::AlgNone,
        Flaw::Expired,
        Flaw::WrongAudience,
        Flaw::WrongIssuer,
        Flaw::NotYetValid,
    ] {
        let bad = token("mallory", flaw);
        match WsClient::connect(&base, &bad).await {
            Err(Refused::Status(status)) => assert_eq!(status, 401, "{flaw:?}"),
            other => panic!(
                "{flaw:?} was not refused with 401: {:?}",
                other.map(|c| c.welcome)
            ),
        }
        let (status, body) = api.get("/conversations", Some(&bad)).await;
        assert_eq!(status, 401, "{flaw:?} on HTTP");
        assert_eq!(body["code"], "unauthorized");
    }
    let ok = WsClient::connect_bearer(&base, &valid("alice"))
        .await
        .unwrap();
    assert_eq!(ok.welcome["user_id"], "alice");
    let log = cluster.routers[0].log();
    assert!(
        !log.contains(&valid("alice")[..40]),
        "tokens never reach the log"
    );
}

#[tokio::test]
async fn bad_input_gets_clear_errors_and_writes_nothing() {
    let mut options = Options::default();
    options
        .router_env
        .insert("TURBOCHAT_LIMITS__SEND_PER_SECOND".into(), "5".into());
    options
        .router_env
        .insert("TURBOCHAT_LIMITS__SEND_BURST".into(), "5".into());
    let cluster = Cluster::start(TestStore::sqlite(), options).await;
    let base = cluster.router_url(0);
    let api = Api::new(&base);
    let (alice, mallory) = (valid("alice"), valid("mallory"));
    let conversation = api.create_direct(&alice, "bob", None).await;

    let mut m = WsClient::connect(&base, &mallory).await.unwrap();
    m.send_text("this is not json".into()).await;
    let error = m.expect("error", T).await;
    assert_eq!(error["code"], "malformed_frame");
    m.send(json!({"type": "launch_missiles"})).await;
    assert_eq!(m.expect("error", T).await["code"], "malformed_frame");
    m.send(json!({"type": "ping", "nonce": "still-here"})).await;
    assert_eq!(
        m.expect("pong", T).await["nonce"],
        "still-here",
        "the connection stays"
    );

    // A non-participant's send: answered as for a missing conversation
    // (ids are derivable: nobody learns who talks), nothing written.
    let answer = m.send_message(&conversation, "x-1", "let me in").await;
    assert_eq!(answer["type"], "error");
    assert_eq!(answer["code"], "not_found");
    let (status, _) = api
        .get(
            &format!("/history?conversation_id={conversation}"),
            Some(&mallory),
        )
        .await;
    assert_eq!(status, 404, "nor can they read it");
    assert!(api.all_messages(&alice, &conversation).await.is_empty());

    // Flooding: beyond the per-user rate, rate_limited with a delay.
    let mut a = WsClient::connect(&base, &alice).await.unwrap();
    for i in 0..20 {
        a.send(json!({"type": "send", "conversation_id": conversation,
            "client_msg_id": format!("f-{i}"), "body": "spam"}))
            .await;
    }
    let mut acked = 0;
    let mut limited = 0;
    for i in 0..20 {
        let answer = a.answer(&format!("f-{i}"), T).await;
        match answer["type"].as_str() {
            Some("ack") => acked += 1,
            _ => {
                assert_eq!(answer["code"], "rate_limited", "{answer}");
                assert!(answer["retry_after_ms"].as_u64().unwrap() > 0);
                limited += 1;
            }
        }
    }
    assert!(limited > 0, "some sends were limited");
    assert_eq!(acked + limited, 20);
    assert_eq!(api.all_messages(&alice, &conversation).await.len(), acked);

    // A frame over the limit closes the socket with 1009.
    let mut big = WsClient::connect(&base, &alice).await.unwrap();
    big.send_text(format!(
        r#"{{"type":"ping","nonce":"{}"}}"#,
        "x".repeat(70 * 1024)
    ))
    .await;
    loop {
        match big.next(T).await {
            Some(Event::Closed(code)) => {
                assert_eq!(code, Some(1009));
                break;
            }
            Some(Event::Frame(_)) => continue,
            None => panic!("no close after an oversized frame"),
        }
    }
}

#[tokio::test]
async fn sigterm_on_the_router_closes_sessions_with_1001() {
    let mut cluster = Cluster::start(TestStore::sqlite(), Options::default()).await;
    let base = cluster.router_url(0);
    let mut a = WsClient::connect(&base, &valid("alice")).await.unwrap();
    let code = cluster.routers[0].terminate(Duration::from_secs(10));
    assert_eq!(code, Some(0), "clean exit");
    loop {
        match a.next(T).await {
            Some(Event::Closed(code)) => {
                assert_eq!(code, Some(1001));
                break;
            }
            Some(Event::Frame(_)) => continue,
            None => panic!("session not closed on shutdown"),
        }
    }
}
