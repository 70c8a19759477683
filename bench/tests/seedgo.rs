//! The seedgo peer as a client sees it: two instances on one PostgreSQL
//! database and one Redis, started as the bench starts them. What the bench's
//! figures rely on: a message sent to one instance is stored (seq per
//! conversation), acked, and delivered by the other; a retried send is not
//! stored or delivered twice; the token and the participants are checked.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use bench::system::{ServerEnv, System, Target};
use harness::tokens::{token, Flaw};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

const WAIT: Duration = Duration::from_secs(10);

async fn start() -> System {
    System::start(&Target::SeedGo, &ServerEnv::default())
        .await
        .expect("seedgo starts")
}

async fn connect(url: &str) -> Socket {
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("connects");
    let welcome = next_of(&mut ws, "welcome").await;
    assert!(welcome["user_id"].is_string(), "{welcome}");
    ws
}

async fn send(ws: &mut Socket, frame: Value) {
    ws.send(Message::Text(frame.to_string().into()))
        .await
        .expect("sends");
}

/// The next frame of type `kind`, skipping others; fails after [`WAIT`].
async fn next_of(ws: &mut Socket, kind: &str) -> Value {
    let read = async {
        while let Some(message) = ws.next().await {
            if let Message::Text(text) = message.expect("reads") {
                let frame: Value = serde_json::from_str(&text).expect("JSON frame");
                if frame["type"] == kind {
                    return frame;
                }
            }
        }
        panic!("socket closed while waiting for {kind}");
    };
    tokio::time::timeout(WAIT, read)
        .await
        .unwrap_or_else(|_| panic!("no {kind} within {WAIT:?}"))
}

/// The next `message` frame from `sender` (everyone's own messages come
/// back to them too, as with turbochat).
async fn next_message_from(ws: &mut Socket, sender: &str) -> Value {
    loop {
        let frame = next_of(ws, "message").await;
        if frame["sender_id"] == sender {
            return frame;
        }
    }
}

async fn subscribe(ws: &mut Socket, conversation: &str) -> Value {
    send(
        ws,
        json!({"type": "subscribe", "conversation_id": conversation}),
    )
    .await;
    let frame = next_of(ws, "subscribed").await;
    assert_eq!(frame["conversation_id"], conversation);
    frame
}

fn send_frame(conversation: &str, client_msg_id: &str, body: &str) -> Value {
    json!({"type": "send", "conversation_id": conversation, "client_msg_id": client_msg_id, "body": body})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_sent_to_one_instance_is_stored_acked_and_delivered_by_the_other() {
    let system = start().await;
    assert_eq!(system.endpoints.len(), 2, "two instances");
    let conversation = system
        .create_conversations(&[vec!["alice".to_string(), "bob".to_string()]])
        .await
        .expect("conversation created")
        .remove(0);
    // Clients are spread as the bench spreads them: alice on the first
    // instance, bob on the second.
    let mut alice = connect(&system.ws_url(0, "alice")).await;
    let mut bob = connect(&system.ws_url(1, "bob")).await;
    assert_eq!(subscribe(&mut alice, &conversation).await["last_seq"], 0);
    subscribe(&mut bob, &conversation).await;

    send(&mut alice, send_frame(&conversation, "m1", "hello")).await;
    let ack = next_of(&mut alice, "ack").await;
    assert_eq!(ack["client_msg_id"], "m1");
    assert_eq!(ack["seq"], 1);
    let message = next_message_from(&mut bob, "alice").await;
    assert_eq!(message["client_msg_id"], "m1");
    assert_eq!(message["sender_id"], "alice");
    assert_eq!(message["body"], "hello");
    assert_eq!(message["seq"], 1);
    assert_eq!(message["message_id"], ack["message_id"]);

    // A retry is acked with the stored message and takes no new seq; bob's
    // next message is the one after it, not the retry.
    send(&mut alice, send_frame(&conversation, "m1", "hello")).await;
    let retry = next_of(&mut alice, "ack").await;
    assert_eq!(retry["seq"], 1);
    assert_eq!(retry["message_id"], ack["message_id"]);
    send(&mut bob, send_frame(&conversation, "m2", "hi")).await;
    assert_eq!(next_of(&mut bob, "ack").await["seq"], 2);
    let next = next_message_from(&mut alice, "bob").await;
    assert_eq!(next["client_msg_id"], "m2");
    assert_eq!(next["seq"], 2);
    send(&mut alice, send_frame(&conversation, "m3", "marker")).await;
    let after = next_message_from(&mut bob, "alice").await;
    assert_eq!(after["client_msg_id"], "m3", "m1 was delivered once");
    assert_eq!(after["seq"], 3);

    // A later subscriber is told where the conversation stands.
    let mut bob_again = connect(&system.ws_url(0, "bob")).await;
    assert_eq!(
        subscribe(&mut bob_again, &conversation).await["last_seq"],
        3
    );
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_and_participants_are_checked() {
    let system = start().await;
    let conversation = system
        .create_conversations(&[vec!["alice".to_string(), "bob".to_string()]])
        .await
        .expect("conversation created")
        .remove(0);
    for flaw in [
        Flaw::BadSignature,
        Flaw::Expired,
        Flaw::WrongAudience,
        Flaw::WrongIssuer,
        Flaw::NotYetValid,
        Flaw::AlgNone,
    ] {
        let url = format!(
            "ws://{}/ws?token={}",
            system.endpoints[0],
            token("alice", flaw)
        );
        match tokio_tungstenite::connect_async(&url).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                assert_eq!(response.status(), 401, "{flaw:?}")
            }
            other => panic!("{flaw:?}: expected 401, got {:?}", other.map(|_| ())),
        }
    }

    let mut carol = connect(&system.ws_url(1, "carol")).await;
    send(
        &mut carol,
        json!({"type": "subscribe", "conversation_id": conversation}),
    )
    .await;
    let error = next_of(&mut carol, "error").await;
    assert_eq!(error["code"], "forbidden", "{error}");
    send(&mut carol, send_frame(&conversation, "c1", "let me in")).await;
    let error = next_of(&mut carol, "error").await;
    assert_eq!(error["code"], "forbidden", "{error}");
    assert_eq!(error["client_msg_id"], "c1");
    send(&mut carol, send_frame("not-a-conversation", "c2", "?")).await;
    assert_eq!(next_of(&mut carol, "error").await["code"], "not_found");
    send(&mut carol, json!({"type": "ping", "nonce": "n1"})).await;
    assert_eq!(next_of(&mut carol, "pong").await["nonce"], "n1");
    system.stop().await;
}
