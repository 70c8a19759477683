//! Retention, end to end on both stores: with a short
//! `safety.message_retention` the node's background job empties old
//! messages into tombstones in every user's history and in replays (also
//! those the owner held in memory), seqs stay gapless and numbering goes
//! on, and sends keep being acked throughout (the job never stalls
//! commits). Waits are polls with a deadline.

use std::collections::BTreeMap;
use std::time::Duration;

use harness::client::{Api, WsClient};
use harness::cluster::{Cluster, Options};
use harness::store::TestStore;
use harness::tokens::valid;
use serde_json::Value;

const T: Duration = Duration::from_secs(30);

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn seqs_and_kinds(messages: &[Value]) -> Vec<(u64, String)> {
    messages
        .iter()
        .map(|m| {
            (
                m["seq"].as_u64().unwrap(),
                m["kind"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

async fn old_messages_are_removed_by_retention(store: TestStore) {
    let options = Options {
        node_env: env(&[
            ("TURBOCHAT_SAFETY__MESSAGE_RETENTION", "2s"),
            ("TURBOCHAT_SAFETY__RETENTION_INTERVAL", "200ms"),
            ("TURBOCHAT_SAFETY__RETENTION_BATCH", "2"),
        ]),
        ..Options::default()
    };
    let cluster = Cluster::start(store, options).await;
    let base = cluster.router_url(0);
    let api = Api::new(&base);
    let direct = api
        .create_direct(&valid("bob"), "alice", Some("clio-2"))
        .await;
    let mut bob = WsClient::connect(&base, &valid("bob")).await.unwrap();
    for i in 1..=5 {
        let ack = bob
            .send_message(&direct, &format!("b-{i}"), &format!("message {i}"))
            .await;
        assert_eq!(ack["seq"], i, "{ack}");
    }
    // Past 2 s, the job (batches of 2) empties them all; seqs stay.
    let emptied: Vec<(u64, String)> = (1..=5).map(|s| (s, "deleted".to_string())).collect();
    let left = harness::eventually("old messages are emptied", T, || {
        let api = &api;
        let direct = &direct;
        let emptied = &emptied;
        async move {
            let history = api.all_messages(&valid("alice"), direct).await;
            (seqs_and_kinds(&history) == *emptied).then_some(history)
        }
    })
    .await;
    assert!(left.iter().all(|m| m["body"] == ""), "{left:?}");
    // Numbering goes on; the new message stays until it is old.
    let ack = bob.send_message(&direct, "b-6", "still for sale?").await;
    assert_eq!(ack["seq"], 6, "{ack}");
    let history = api.all_messages(&valid("alice"), &direct).await;
    assert_eq!(history.last().unwrap()["body"], "still for sale?");
    let list = api.conversations(&valid("alice")).await;
    assert_eq!(list[0]["last_message"]["seq"], 6);
    // A session resuming from before the purge gets what is left, in order.
    let mut alice = WsClient::connect(&base, &valid("alice")).await.unwrap();
    let last = alice.subscribe(&direct, Some(0)).await;
    assert_eq!(last, 6);
    // (The owner forgot the emptied messages from its replay memory too:
    // the replay shows no old text.)
    let replayed = alice.take_pending("message");
    assert_eq!(
        seqs_and_kinds(&replayed),
        [emptied.clone(), vec![(6, "text".to_string())]].concat()
    );
    let marker = bob.send_message(&direct, "b-7", "marker").await;
    assert_eq!(marker["seq"], 7);
    alice
        .expect_where("message", T, |m| m["client_msg_id"] == "b-7")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_messages_are_removed_by_retention_postgres() {
    let _turn = ONE_AT_A_TIME.lock().await;
    old_messages_are_removed_by_retention(TestStore::postgres().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_messages_are_removed_by_retention_sqlite() {
    let _turn = ONE_AT_A_TIME.lock().await;
    old_messages_are_removed_by_retention(TestStore::sqlite()).await;
}
