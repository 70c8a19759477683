//! A conversation owner that panics is supervised (issue: failover, point
//! 5): the sends it held are answered `unavailable`, its subscribers hear
//! the conversation again without doing anything, the next command reloads
//! the conversation from the store, the panic is counted and logged, and
//! the node still stops promptly. The panic is injected by a test-only
//! build feature (`turbochat-node/fault-injection`, which the harness turns
//! on): a send whose body is `__turbochat_owner_panic__`.

use std::time::{Duration, Instant};

use harness::client::{Api, WsClient};
use harness::cluster::{Cluster, Options};
use harness::store::TestStore;
use harness::tokens::valid;
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(10);
const POISON: &str = "__turbochat_owner_panic__";

fn send(conversation: &str, id: &str, body: &str) -> Value {
    json!({"type": "send", "conversation_id": conversation, "client_msg_id": id, "body": body})
}

#[tokio::test]
async fn an_owner_that_panics_answers_its_sends_and_its_subscribers_hear_again() {
    let mut cluster = Cluster::start(TestStore::postgres().await, Options::default()).await;
    let base = cluster.router_url(0);
    let api = Api::new(&base);
    let conversation = api.create_direct(&valid("alice"), "bob", None).await;
    let mut bob = WsClient::connect(&base, &valid("bob")).await.unwrap();
    bob.subscribe(&conversation, Some(0)).await;
    let mut alice = WsClient::connect(&base, &valid("alice")).await.unwrap();
    let first = alice.send_message(&conversation, "a-1", "before").await;
    assert_eq!(first["seq"], 1);
    assert_eq!(bob.expect("message", T).await["body"], "before");

    // The poison, with sends queued behind it in the same owner.
    alice.send(send(&conversation, "boom", POISON)).await;
    for i in 2..=4 {
        alice
            .send(send(
                &conversation,
                &format!("a-{i}"),
                &format!("after {i}"),
            ))
            .await;
    }
    let boom = alice.answer("boom", T).await;
    assert_eq!(
        boom["code"], "unavailable",
        "the held send is answered: {boom}"
    );
    // The others were answered too: acked by the fresh owner, or refused
    // as retryable by the failed one — then a retry (same id) is acked.
    for i in 2..=4 {
        let id = format!("a-{i}");
        let mut answer = alice.answer(&id, T).await;
        if answer["type"] == "error" {
            assert_eq!(answer["code"], "unavailable", "{answer}");
            alice
                .send(send(&conversation, &id, &format!("after {i}")))
                .await;
            answer = alice.answer(&id, T).await;
        }
        assert_eq!(answer["type"], "ack", "{answer}");
    }

    // Bob did nothing, and hears every later message, in seq order, once.
    let stored = api.all_messages(&valid("bob"), &conversation).await;
    let seqs: Vec<u64> = stored.iter().map(|m| m["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, [1, 2, 3, 4], "the poison was never stored");
    let mut heard = Vec::new();
    while heard.len() < 3 {
        let message = bob.expect("message", T).await;
        heard.push((message["seq"].as_u64().unwrap(), message["body"].clone()));
    }
    let expected: Vec<(u64, Value)> = stored[1..]
        .iter()
        .map(|m| (m["seq"].as_u64().unwrap(), m["body"].clone()))
        .collect();
    assert_eq!(heard, expected);
    assert!(bob.take_pending("message").is_empty(), "no duplicate");

    let node = format!("http://{}", cluster.nodes[0].addr("http"));
    assert_eq!(
        harness::metrics::sum(&node, "turbochat_owner_panics_total", "").await,
        1.0
    );
    let log = cluster.nodes[0].log();
    assert!(
        log.contains("ERROR") && log.contains("conversation owner panicked"),
        "logged at ERROR: {log}"
    );

    // The node still stops promptly (nothing waits for the dead task).
    let stopping = Instant::now();
    let code = cluster.nodes[0].terminate(Duration::from_secs(30));
    assert_eq!(code, Some(0));
    assert!(
        stopping.elapsed() < Duration::from_secs(5),
        "stopped in {:?}",
        stopping.elapsed()
    );
}
