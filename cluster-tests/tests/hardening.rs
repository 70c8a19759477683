//! Bad input from outside — an attacker's, or a client written from the
//! docs alone — gets a clear error and harms no one else (issue:
//! hardening). Real routers and nodes, talked to as clients do.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use harness::client::{Api, WsClient};
use harness::cluster::{Cluster, Options};
use harness::store::TestStore;
use harness::tokens::{expiring, valid};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

const T: Duration = Duration::from_secs(10);

fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn send_frame(conversation: &str, id: &str, body: &str) -> Value {
    json!({"type": "send", "conversation_id": conversation, "client_msg_id": id, "body": body})
}

// ---------------------------------------------------------------------------
// High: one bad message fails nobody else's.

/// A text with NUL (which PostgreSQL cannot store in `text`) is refused as
/// `invalid_argument` before it reaches a batch; the other participant's 30
/// messages, in flight with it, are all stored.
async fn a_nul_in_one_message_fails_no_other(store: TestStore) {
    let cluster = Cluster::start(store, Options::default()).await;
    let base = cluster.router_url(0);
    let api = Api::new(&base);
    let conversation = api.create_direct(&valid("alice"), "bob", None).await;
    let mut alice = WsClient::connect(&base, &valid("alice")).await.unwrap();
    let mut bob = WsClient::connect(&base, &valid("bob")).await.unwrap();
    for i in 0..30 {
        if i % 10 == 5 {
            bob.send(send_frame(&conversation, &format!("nul-{i}"), "a\u{0}b"))
                .await;
        }
        alice
            .send(send_frame(
                &conversation,
                &format!("a-{i}"),
                &format!("m{i}"),
            ))
            .await;
    }
    for i in 0..30 {
        let answer = alice.answer(&format!("a-{i}"), T).await;
        assert_eq!(answer["type"], "ack", "a-{i}: {answer}");
    }
    for i in [5, 15, 25] {
        let answer = bob.answer(&format!("nul-{i}"), T).await;
        assert_eq!(answer["code"], "invalid_argument", "{answer}");
        assert_eq!(answer["conversation_id"], conversation.as_str());
    }
    let stored = api.all_messages(&valid("alice"), &conversation).await;
    let bodies: Vec<&str> = stored.iter().map(|m| m["body"].as_str().unwrap()).collect();
    let sent: Vec<String> = (0..30).map(|i| format!("m{i}")).collect();
    assert_eq!(bodies, sent, "all 30, in the order sent, nothing else");

    // The same on a conversation's title and listing: 400, not 503.
    for body in [
        json!({"kind": "group", "participants": ["bob"], "title": "a\u{0}b"}),
        json!({"kind": "direct", "peer_id": "bob", "listing_id": "car\u{0}1"}),
    ] {
        let (status, answer) = api.post("/conversations", &valid("alice"), body).await;
        assert_eq!(status, 400, "{answer}");
        assert_eq!(answer["code"], "invalid_argument");
    }
}

#[tokio::test]
async fn a_nul_in_one_message_fails_no_other_on_postgres() {
    a_nul_in_one_message_fails_no_other(TestStore::postgres().await).await;
}

#[tokio::test]
async fn a_nul_in_one_message_fails_no_other_on_sqlite() {
    a_nul_in_one_message_fails_no_other(TestStore::sqlite()).await;
}

/// Whatever the store refuses of one message (here a trigger the test puts
/// in its own database refuses the body "poison"), only that message fails:
/// the owner retries a refused batch message by message. On PostgreSQL the
/// trigger raises a data exception (the client's fault: `invalid_argument`);
/// on SQLite a plain abort (`internal`, retryable).
async fn a_store_refusal_of_one_message_fails_only_that_one(store: TestStore) {
    let postgres = store.is_postgres();
    let cluster = Cluster::start(store, Options::default()).await;
    let base = cluster.router_url(0);
    let api = Api::new(&base);
    let conversation = api.create_direct(&valid("alice"), "bob", None).await;
    if postgres {
        cluster
            .store
            .execute(
                "CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
                   IF NEW.body = 'poison' THEN \
                     RAISE EXCEPTION 'poisoned' USING ERRCODE = '22023'; \
                   END IF; RETURN NEW; END $$; \
                 CREATE TRIGGER poison BEFORE INSERT ON messages \
                   FOR EACH ROW EXECUTE FUNCTION poison();",
            )
            .await;
    } else {
        cluster
            .store
            .execute(
                "CREATE TRIGGER poison BEFORE INSERT ON messages WHEN NEW.body = 'poison' \
                 BEGIN SELECT RAISE(ABORT, 'poisoned'); END;",
            )
            .await;
    }
    let mut alice = WsClient::connect(&base, &valid("alice")).await.unwrap();
    let mut bob = WsClient::connect(&base, &valid("bob")).await.unwrap();
    // Pipelined, so that most of them share batches with the poison.
    for i in 0..20 {
        let body = if i == 10 {
            "poison".to_string()
        } else {
            format!("a{i}")
        };
        alice
            .send(send_frame(&conversation, &format!("a-{i}"), &body))
            .await;
        bob.send(send_frame(
            &conversation,
            &format!("b-{i}"),
            &format!("b{i}"),
        ))
        .await;
    }
    for i in 0..20 {
        let answer = alice.answer(&format!("a-{i}"), T).await;
        if i == 10 {
            let expected = if postgres {
                "invalid_argument"
            } else {
                "internal"
            };
            assert_eq!(answer["code"], expected, "{answer}");
        } else {
            assert_eq!(answer["type"], "ack", "a-{i}: {answer}");
        }
        let answer = bob.answer(&format!("b-{i}"), T).await;
        assert_eq!(answer["type"], "ack", "b-{i}: {answer}");
    }
    let stored = api.all_messages(&valid("alice"), &conversation).await;
    let seqs: Vec<u64> = stored.iter().map(|m| m["seq"].as_u64().unwrap()).collect();
    assert_eq!(
        seqs,
        (1..=39).collect::<Vec<u64>>(),
        "gapless, nothing lost"
    );
    let alices: Vec<&str> = stored
        .iter()
        .filter(|m| m["sender_id"] == "alice")
        .map(|m| m["body"].as_str().unwrap())
        .collect();
    let expected: Vec<String> = (0..20)
        .filter(|&i| i != 10)
        .map(|i| format!("a{i}"))
        .collect();
    assert_eq!(alices, expected, "in the order sent");
    let node_ops = format!("http://{}", cluster.nodes[0].addr("http"));
    assert!(
        harness::metrics::sum(&node_ops, "turbochat_batches_isolated_total", "").await >= 1.0,
        "the poison shared a batch with others (else this test proves nothing)"
    );
}

#[tokio::test]
async fn a_store_refusal_of_one_message_fails_only_that_one_on_postgres() {
    a_store_refusal_of_one_message_fails_only_that_one(TestStore::postgres().await).await;
}

#[tokio::test]
async fn a_store_refusal_of_one_message_fails_only_that_one_on_sqlite() {
    a_store_refusal_of_one_message_fails_only_that_one(TestStore::sqlite()).await;
}

// ---------------------------------------------------------------------------
// Medium: device tokens as long as the docs allow.

async fn device_tokens_up_to_4096_bytes_are_stored(store: TestStore) {
    let cluster = Cluster::start(store, Options::default()).await;
    let api = Api::new(&cluster.router_url(0));
    let alice = valid("alice");
    let token = |len: usize| -> String {
        // Printable ASCII, varied, as FCM tokens are.
        (0..len)
            .map(|i| char::from(b'!' + (i * 7 % 94) as u8))
            .collect()
    };
    for len in [1, 2_700, 4_096] {
        let (status, answer) = api
            .put(
                "/devices",
                &alice,
                json!({"token": token(len), "platform": "android"}),
            )
            .await;
        assert_eq!(status, 200, "{len} bytes: {answer}");
        // Registering again is an upsert, not an error.
        let (status, _) = api
            .put(
                "/devices",
                &alice,
                json!({"token": token(len), "platform": "ios"}),
            )
            .await;
        assert_eq!(status, 200, "{len} bytes again");
    }
    let (status, answer) = api
        .put(
            "/devices",
            &alice,
            json!({"token": token(4_097), "platform": "android"}),
        )
        .await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["code"], "invalid_argument");

    let (status, listed) = api.get("/devices", Some(&alice)).await;
    assert_eq!(status, 200, "{listed}");
    let mut lengths: Vec<usize> = listed["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            assert_eq!(d["platform"], "ios");
            d["token"].as_str().unwrap().len()
        })
        .collect();
    lengths.sort();
    assert_eq!(lengths, [1, 2_700, 4_096]);
    // A long token moves to another user like a short one does.
    let bob = valid("bob");
    let (status, _) = api
        .put(
            "/devices",
            &bob,
            json!({"token": token(4_096), "platform": "web"}),
        )
        .await;
    assert_eq!(status, 200);
    let (_, listed) = api.get("/devices", Some(&alice)).await;
    assert_eq!(listed["devices"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn device_tokens_up_to_4096_bytes_are_stored_on_postgres() {
    device_tokens_up_to_4096_bytes_are_stored(TestStore::postgres().await).await;
}

#[tokio::test]
async fn device_tokens_up_to_4096_bytes_are_stored_on_sqlite() {
    device_tokens_up_to_4096_bytes_are_stored(TestStore::sqlite()).await;
}

// ---------------------------------------------------------------------------
// Medium: no input panics the router; slowloris; slow consumers.

/// Sends a raw request head and returns the status line (or what ended it).
async fn raw_request(addr: &str, head: &[u8]) -> String {
    let mut socket = TcpStream::connect(addr).await.unwrap();
    socket.write_all(head).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(T, socket.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer)
        .lines()
        .next()
        .unwrap_or("(closed without an answer)")
        .to_string()
}

#[tokio::test]
async fn a_bad_percent_escape_before_a_multibyte_character_is_refused_not_a_panic() {
    let cluster = Cluster::start(TestStore::sqlite(), Options::default()).await;
    let addr = cluster.routers[0].addr("http");
    for path in ["/ws", "/history", "/conversations", "/devices"] {
        for query in [
            "token=%a\u{e9}",
            "token=%a<\u{e9}>",
            "token=%\u{e9}",
            "token=%",
        ] {
            let head = format!(
                "GET {path}?{query} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
            );
            let status = raw_request(&addr, head.as_bytes()).await;
            assert!(
                status.starts_with("HTTP/1.1 401") || status.starts_with("HTTP/1.1 400"),
                "{path}?{query}: {status}"
            );
        }
    }
    let log = cluster.routers[0].log();
    assert!(!log.contains("panicked"), "router log: {log}");
    let status = raw_request(
        &addr,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
}

/// Half-sent requests and connections that say nothing are closed after
/// `limits.header_read_timeout`, before any authentication.
#[tokio::test]
async fn slow_and_silent_connections_are_closed_after_the_header_timeout() {
    let options = Options {
        router_env: env(&[("TURBOCHAT_LIMITS__HEADER_READ_TIMEOUT", "1s")]),
        ..Options::default()
    };
    let cluster = Cluster::start(TestStore::sqlite(), options).await;
    let addr = cluster.routers[0].addr("http");
    let started = Instant::now();
    let mut sockets = Vec::new();
    for i in 0..40 {
        let mut socket = TcpStream::connect(&addr).await.unwrap();
        if i % 2 == 0 {
            socket
                .write_all(b"GET /history?conversation_id=x HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                .await
                .unwrap();
        }
        sockets.push(socket);
    }
    for mut socket in sockets {
        let mut buf = [0u8; 256];
        let left = Duration::from_secs(6).saturating_sub(started.elapsed());
        match tokio::time::timeout(left, socket.read(&mut buf)).await {
            Ok(Ok(_)) | Ok(Err(_)) => {} // closed (EOF, an error status, or a reset)
            Err(_) => panic!("a connection was still open after {:?}", started.elapsed()),
        }
    }
    let closed_after = started.elapsed();
    println!("40 slow or silent connections closed after {closed_after:?}");
    // Trickling keeps no connection alive either: a byte per 300 ms.
    let mut socket = TcpStream::connect(&addr).await.unwrap();
    let trickle = Instant::now();
    let mut closed = false;
    for byte in b"GET /history HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: aaaaaaaaaaaaaaaa" {
        if socket.write_all(&[*byte]).await.is_err() {
            closed = true;
            break;
        }
        let mut buf = [0u8; 64];
        if let Ok(Ok(0)) =
            tokio::time::timeout(Duration::from_millis(300), socket.read(&mut buf)).await
        {
            closed = true;
            break;
        }
    }
    assert!(closed, "a trickling request is cut off");
    assert!(
        trickle.elapsed() < Duration::from_secs(5),
        "{:?}",
        trickle.elapsed()
    );
}

/// Raw WebSocket for a client that stops reading.
type Raw = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

async fn raw_subscriber(base: &str, user: &str, conversation: &str) -> Raw {
    let url = format!(
        "{}/ws?token={}",
        base.replacen("http://", "ws://", 1),
        valid(user)
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    ws.send(Message::Text(
        json!({"type": "subscribe", "conversation_id": conversation})
            .to_string()
            .into(),
    ))
    .await
    .unwrap();
    loop {
        let Some(Ok(Message::Text(text))) = ws.next().await else {
            panic!("subscribe failed");
        };
        if text.contains("\"subscribed\"") {
            return ws;
        }
    }
}

fn local_port(ws: &Raw) -> u16 {
    match ws.get_ref() {
        tokio_tungstenite::MaybeTlsStream::Plain(tcp) => tcp.local_addr().unwrap().port(),
        _ => unreachable!("plain TCP in tests"),
    }
}

/// The kernel's state of the router's end of a connection to `client_port`
/// (`/proc/net/tcp`: 01 is ESTABLISHED); `None` once it is gone.
fn server_side_state(router_port: u16, client_port: u16) -> Option<String> {
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    let local = format!(":{router_port:04X}");
    let remote = format!(":{client_port:04X}");
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        (fields.get(1)?.ends_with(&local) && fields.get(2)?.ends_with(&remote))
            .then(|| fields[3].to_string())
    })
}

/// Sends big messages until the router's slow-consumer count reaches
/// `target` (each message ~4 KB, so kernel buffers fill fast).
async fn flood_until_slow(
    cluster: &Cluster,
    sender: &mut WsClient,
    conversation: &str,
    target: f64,
    tag: &str,
) {
    let ops = cluster.router_ops_url(0);
    let body = "v".repeat(3_900);
    let mut i = 0u64;
    let deadline = Instant::now() + Duration::from_secs(60);
    while harness::metrics::sum(&ops, "turbochat_sessions_slow_total", "").await < target {
        assert!(
            Instant::now() < deadline,
            "no slow consumer after {i} messages"
        );
        // Fewer than the session queue holds: the sender's own acks
        // come back in bursts of a group commit.
        for _ in 0..40 {
            sender
                .send(send_frame(conversation, &format!("{tag}-{i}"), &body))
                .await;
            i += 1;
        }
        // Keep our own queue drained: we are a fast reader.
        sender.answer(&format!("{tag}-{}", i - 1), T).await;
        let _ = sender.take_pending("message");
        let _ = sender.take_pending("ack");
    }
}

/// A session that stops reading is closed with 1008 `slow_consumer` — a
/// client that reads again gets that close frame after what it had not
/// read — and its socket is released within the close grace, read or not.
#[tokio::test]
async fn a_slow_consumer_gets_1008_and_its_socket_is_released() {
    let options = Options {
        router_env: env(&[
            ("TURBOCHAT_LIMITS__SESSION_QUEUE", "64"),
            ("TURBOCHAT_LIMITS__SEND_PER_SECOND", "5000"),
            ("TURBOCHAT_LIMITS__SEND_BURST", "5000"),
            ("TURBOCHAT_LIMITS__FRAMES_PER_SECOND", "5000"),
        ]),
        ..Options::default()
    };
    let cluster = Cluster::start(TestStore::postgres().await, options).await;
    let base = cluster.router_url(0);
    let api = Api::new(&base);
    let (status, group) = api
        .post(
            "/conversations",
            &valid("alice"),
            json!({"kind": "group", "participants": ["carol", "dave"]}),
        )
        .await;
    assert_eq!(status, 200, "{group}");
    let conversation = group["conversation_id"].as_str().unwrap().to_string();
    // Alice only sends (and reads her acks); she is not subscribed.
    let mut alice = WsClient::connect(&base, &valid("alice")).await.unwrap();

    // Dave stops reading, is found slow, then reads again.
    let mut dave = raw_subscriber(&base, "dave", &conversation).await;
    flood_until_slow(&cluster, &mut alice, &conversation, 1.0, "d").await;
    let mut close = None;
    let read_until = Instant::now() + T;
    while Instant::now() < read_until {
        match tokio::time::timeout(T, dave.next()).await {
            Ok(Some(Ok(Message::Close(frame)))) => {
                close = frame.map(|f| (u16::from(f.code), f.reason.to_string()));
                break;
            }
            Ok(Some(Ok(_))) => continue,
            other => panic!("no close frame: {other:?}"),
        }
    }
    assert_eq!(close, Some((1008, "slow_consumer".to_string())));

    // Carol stops reading for good: the router lets go of her socket.
    let carol = raw_subscriber(&base, "carol", &conversation).await;
    let router_port: u16 = cluster.routers[0]
        .addr("http")
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let carol_port = local_port(&carol);
    assert_eq!(
        server_side_state(router_port, carol_port).as_deref(),
        Some("01")
    );
    flood_until_slow(&cluster, &mut alice, &conversation, 2.0, "c").await;
    let slow_at = Instant::now();
    harness::eventually(
        "carol's socket released",
        Duration::from_secs(10),
        || async {
            (server_side_state(router_port, carol_port).as_deref() != Some("01")).then_some(())
        },
    )
    .await;
    println!(
        "stalled socket released {:?} after the slow-consumer close",
        slow_at.elapsed()
    );
    drop(carol);
    // The router is fine: alice still chats.
    let ack = alice
        .send_message(&conversation, "after", "still here")
        .await;
    assert_eq!(ack["type"], "ack");
}

// ---------------------------------------------------------------------------
// Low.

#[tokio::test]
async fn a_frame_flood_is_refused_with_when_and_what() {
    let options = Options {
        router_env: env(&[("TURBOCHAT_LIMITS__FRAMES_PER_SECOND", "2")]),
        ..Options::default()
    };
    let cluster = Cluster::start(TestStore::sqlite(), options).await;
    let base = cluster.router_url(0);
    let conversation = Api::new(&base)
        .create_direct(&valid("alice"), "bob", None)
        .await;
    let mut alice = WsClient::connect(&base, &valid("alice")).await.unwrap();
    for i in 0..8 {
        alice
            .send(send_frame(&conversation, &format!("f-{i}"), "hi"))
            .await;
    }
    let refused = alice
        .expect_where("error", T, |f| f["code"] == "rate_limited")
        .await;
    assert!(refused["retry_after_ms"].as_u64().unwrap() > 0, "{refused}");
    assert!(
        refused["client_msg_id"].as_str().unwrap().starts_with("f-"),
        "{refused}"
    );
    assert_eq!(refused["conversation_id"], conversation.as_str());
}

#[tokio::test]
async fn creating_conversations_is_rate_limited_per_user() {
    let cluster = Cluster::start(TestStore::sqlite(), Options::default()).await;
    let base = cluster.router_url(0);
    let http = reqwest::Client::new();
    let mut limited = None;
    for i in 0..30 {
        let response = http
            .post(format!("{base}/conversations"))
            .bearer_auth(valid("spammer"))
            .json(&json!({"kind": "group", "participants": [format!("victim-{i}")]}))
            .send()
            .await
            .unwrap();
        if response.status().as_u16() == 429 {
            let retry_after = response.headers()["retry-after"]
                .to_str()
                .unwrap()
                .to_string();
            let body: Value = response.json().await.unwrap();
            limited = Some((i, retry_after, body));
            break;
        }
        assert_eq!(response.status().as_u16(), 200);
    }
    let (after, retry_after, body) = limited.expect("a burst of creations is limited");
    assert_eq!(after, 10, "the default burst is 10");
    assert_eq!(body["code"], "rate_limited");
    assert!(body["retry_after_ms"].as_u64().unwrap() > 0);
    assert!(retry_after.parse::<u64>().unwrap() >= 1);
    // Another user is not affected.
    let api = Api::new(&base);
    api.create_direct(&valid("alice"), "bob", None).await;
}

/// Direct conversation ids are derivable: someone who is not in one gets
/// the very answer a conversation that does not exist gets.
#[tokio::test]
async fn outsiders_cannot_tell_a_conversation_from_a_missing_one() {
    let cluster = Cluster::start(TestStore::sqlite(), Options::default()).await;
    let base = cluster.router_url(0);
    let api = Api::new(&base);
    let existing = api
        .create_direct(&valid("alice"), "bob", Some("car-9"))
        .await;
    let missing = uuid::Uuid::new_v4().to_string();
    let mallory = valid("mallory");
    let mut answers = Vec::new();
    for id in [&existing, &missing] {
        let (status, body) = api
            .get(&format!("/history?conversation_id={id}"), Some(&mallory))
            .await;
        answers.push((status, body));
    }
    assert_eq!(answers[0], answers[1]);
    assert_eq!(answers[0].0, 404);
    let mut ws = WsClient::connect(&base, &mallory).await.unwrap();
    let mut frames = Vec::new();
    for id in [&existing, &missing] {
        ws.send(json!({"type": "subscribe", "conversation_id": id}))
            .await;
        let mut error = ws.expect("error", T).await;
        error["conversation_id"] = Value::Null;
        frames.push(error);
        ws.send(send_frame(id, "m-1", "hello?")).await;
        let mut error = ws.answer("m-1", T).await;
        error["conversation_id"] = Value::Null;
        frames.push(error);
    }
    assert_eq!(frames[0], frames[2], "subscribe");
    assert_eq!(frames[1], frames[3], "send");
    assert_eq!(frames[0]["code"], "not_found");
}

/// A `since` past the conversation's end (2^63 here) does not hide later
/// messages: the owner's `subscribed` sets the session's cursor.
#[tokio::test]
async fn a_since_from_the_future_hides_no_later_message() {
    let cluster = Cluster::start(TestStore::postgres().await, Options::default()).await;
    let base = cluster.router_url(0);
    let conversation = Api::new(&base)
        .create_direct(&valid("alice"), "bob", None)
        .await;
    let mut alice = WsClient::connect(&base, &valid("alice")).await.unwrap();
    alice.send_message(&conversation, "a-1", "first").await;
    let mut bob = WsClient::connect(&base, &valid("bob")).await.unwrap();
    let last = bob.subscribe(&conversation, Some(1 << 63)).await;
    assert_eq!(last, 1, "subscribed says where the conversation is");
    alice.send_message(&conversation, "a-2", "second").await;
    let message = bob.expect("message", T).await;
    assert_eq!(message["seq"], 2);
    assert_eq!(message["body"], "second");
}

#[tokio::test]
async fn operator_endpoints_are_only_on_the_operator_listener() {
    let cluster = Cluster::start(TestStore::sqlite(), Options::default()).await;
    let client = cluster.router_url(0);
    let ops = cluster.router_ops_url(0);
    for path in ["/metrics", "/cluster"] {
        let status = reqwest::get(format!("{client}{path}"))
            .await
            .unwrap()
            .status();
        assert_eq!(status.as_u16(), 404, "{path} on the client listener");
        let status = reqwest::get(format!("{ops}{path}")).await.unwrap().status();
        assert_eq!(status.as_u16(), 200, "{path} on the operator listener");
    }
    for path in ["/healthz", "/readyz"] {
        for base in [&client, &ops] {
            let status = reqwest::get(format!("{base}{path}"))
                .await
                .unwrap()
                .status();
            assert_eq!(status.as_u16(), 200, "{base}{path}");
        }
    }
    // And the session id a JavaScript client reads is exact: a string.
    let ws = WsClient::connect(&client, &valid("alice")).await.unwrap();
    let id = ws.welcome["session_id"].as_str().expect("a string");
    assert!(id.parse::<u64>().is_ok(), "{id}");
}

// ---------------------------------------------------------------------------
// The error table: every code it lists is one the server really sends, and
// it lists every code there is.

/// The codes of the error table in docs/protocol.md.
fn documented_codes() -> BTreeSet<String> {
    let docs = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/protocol.md"))
        .expect("docs/protocol.md");
    let table = docs
        .split("### Errors")
        .nth(1)
        .expect("an Errors section")
        .split("\n#")
        .next()
        .unwrap();
    table
        .lines()
        .filter_map(|line| {
            let cell = line.strip_prefix("| `")?;
            Some(cell.split('`').next()?.to_string())
        })
        .collect()
}

#[tokio::test]
async fn every_documented_error_code_is_one_the_server_sends() {
    let all: BTreeSet<String> = turbochat_protocol::ErrorCode::ALL
        .iter()
        .map(|c| c.as_str().to_string())
        .collect();
    assert_eq!(
        documented_codes(),
        all,
        "the docs' table and ErrorCode agree"
    );

    let options = Options {
        router_env: env(&[
            ("TURBOCHAT_LIMITS__SESSION_QUEUE", "64"),
            ("TURBOCHAT_LIMITS__FRAMES_PER_SECOND", "5000"),
            ("TURBOCHAT_LIMITS__SEND_PER_SECOND", "5000"),
            ("TURBOCHAT_LIMITS__SEND_BURST", "5000"),
            ("TURBOCHAT_MEDIA__MAX_BYTES", "2000"),
        ]),
        node_env: env(&[
            (
                "TURBOCHAT_MODERATION__RULES",
                r#"[{name="no-phone", detect="phone", action="refuse"}]"#,
            ),
            (
                "TURBOCHAT_ADMIN__OPERATORS",
                r#"[{name="ops", secret="an-operator-secret-of-at-least-32-bytes"}]"#,
            ),
        ]),
        ..Options::default()
    };
    let mut cluster = Cluster::start(TestStore::sqlite(), options).await;
    cluster
        .store
        .execute(
            "CREATE TRIGGER poison BEFORE INSERT ON messages WHEN NEW.body = 'poison' \
             BEGIN SELECT RAISE(ABORT, 'poisoned'); END;",
        )
        .await;
    let base = cluster.router_url(0);
    let api = Api::new(&base);
    let conversation = api.create_direct(&valid("alice"), "bob", None).await;
    let mut seen = BTreeSet::new();
    let mut alice = WsClient::connect(&base, &valid("alice")).await.unwrap();

    alice.send_text("{not json".into()).await;
    seen.insert(
        alice.expect("error", T).await["code"]
            .as_str()
            .unwrap()
            .to_string(),
    );
    alice.send(send_frame(&conversation, "e-1", "   ")).await;
    seen.insert(
        alice.answer("e-1", T).await["code"]
            .as_str()
            .unwrap()
            .to_string(),
    );
    alice
        .send(send_frame(&uuid::Uuid::new_v4().to_string(), "e-2", "hi"))
        .await;
    seen.insert(
        alice.answer("e-2", T).await["code"]
            .as_str()
            .unwrap()
            .to_string(),
    );
    alice.send(send_frame(&conversation, "e-3", "poison")).await;
    seen.insert(
        alice.answer("e-3", T).await["code"]
            .as_str()
            .unwrap()
            .to_string(),
    );
    alice
        .send(json!({"type": "auth", "token": "not-a-token"}))
        .await;
    seen.insert(
        alice.expect("error", T).await["code"]
            .as_str()
            .unwrap()
            .to_string(),
    );
    let (status, body) = api
        .post(
            "/conversations",
            &valid("alice"),
            json!({"kind": "group", "participants": []}),
        )
        .await;
    assert_eq!(status, 400);
    seen.insert(body["code"].as_str().unwrap().to_string());

    let mut late = WsClient::connect(&base, &expiring("alice", -5))
        .await
        .unwrap();
    seen.insert(
        late.expect("error", T).await["code"]
            .as_str()
            .unwrap()
            .to_string(),
    );

    for _ in 0..11 {
        let (status, body) = api
            .post(
                "/conversations",
                &valid("carol"),
                json!({"kind": "group", "participants": ["bob"]}),
            )
            .await;
        if status == 429 {
            seen.insert(body["code"].as_str().unwrap().to_string());
        }
    }

    let http = reqwest::Client::new();
    for (bytes, status) in [(vec![0x89u8; 4_000], 413), (b"plain text".to_vec(), 415)] {
        let response = http
            .post(format!("{base}/media?conversation_id={conversation}"))
            .bearer_auth(valid("alice"))
            .body(bytes)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), status);
        let body: Value = response.json().await.unwrap();
        seen.insert(body["code"].as_str().unwrap().to_string());
    }

    // Safety: a moderation rule, a block, a ban.
    alice
        .send(send_frame(&conversation, "e-5", "call 0612345678"))
        .await;
    seen.insert(
        alice.answer("e-5", T).await["code"]
            .as_str()
            .unwrap()
            .to_string(),
    );
    let with_dave = api.create_direct(&valid("alice"), "dave", None).await;
    let (status, _) = api
        .post("/blocks", &valid("dave"), json!({"user_id": "alice"}))
        .await;
    assert_eq!(status, 200);
    alice.send(send_frame(&with_dave, "e-6", "hello?")).await;
    seen.insert(
        alice.answer("e-6", T).await["code"]
            .as_str()
            .unwrap()
            .to_string(),
    );
    let (status, _) = http
        .post(format!(
            "http://{}/admin/bans",
            cluster.nodes[0].addr("http")
        ))
        .bearer_auth("an-operator-secret-of-at-least-32-bytes")
        .json(&json!({"user_id": "erin", "reason": "spam"}))
        .send()
        .await
        .map(|r| (r.status().as_u16(), ()))
        .unwrap();
    assert_eq!(status, 200);
    let (status, body) = api
        .post(
            "/conversations",
            &valid("erin"),
            json!({"kind": "direct", "peer_id": "bob"}),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    seen.insert(body["code"].as_str().unwrap().to_string());

    // Unsending someone else's message.
    let ack = alice.send_message(&conversation, "e-7", "mine").await;
    let (status, body) = api
        .delete(
            &format!("/conversations/{conversation}/messages/{}", ack["seq"]),
            &valid("bob"),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    seen.insert(body["code"].as_str().unwrap().to_string());

    let mut bob = raw_subscriber(&base, "bob", &conversation).await;
    flood_until_slow(&cluster, &mut alice, &conversation, 1.0, "s").await;
    loop {
        match tokio::time::timeout(T, bob.next()).await {
            Ok(Some(Ok(Message::Close(Some(frame))))) => {
                seen.insert(frame.reason.to_string());
                break;
            }
            Ok(Some(Ok(_))) => continue,
            other => panic!("no close frame: {other:?}"),
        }
    }

    // Last: the node is gone (and the router knows: its link is down).
    cluster.nodes[0].kill9();
    let ops = cluster.router_ops_url(0);
    harness::eventually("the router sees its node gone", T, || async {
        let ready = reqwest::get(format!("{ops}/readyz")).await.ok()?;
        (ready.status().as_u16() == 503).then_some(())
    })
    .await;
    alice
        .send(send_frame(&conversation, "e-4", "anyone?"))
        .await;
    seen.insert(
        alice.answer("e-4", T).await["code"]
            .as_str()
            .unwrap()
            .to_string(),
    );

    assert_eq!(seen, all, "every code was sent");
}
