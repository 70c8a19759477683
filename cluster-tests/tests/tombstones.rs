//! Unsend and delete, end to end through real routers and nodes (two
//! nodes with gossip, so the caller's router, the admin node and the
//! conversation's owner need not be one process), asserted from the users'
//! side on both stores:
//!
//! - a sender unsends their own message: it becomes a tombstone (kind
//!   `deleted`, body gone) in history, replays and the conversation list,
//!   every live session of the conversation gets `message_deleted`, and the
//!   push not yet sent for it is never sent;
//! - nobody else can unsend it (`forbidden`), a stranger cannot even see it
//!   (`not_found`), and after the unsend window its sender cannot either;
//! - an operator deletes any message through the admin API, audited with
//!   the reason, through the same tombstone path.

use std::time::Duration;

use harness::admin::AdminApi;
use harness::client::{Api, WsClient};
use harness::cluster::{Cluster, Options};
use harness::fake_fcm::{self, FakeFcm, Fault, Faults};
use harness::store::TestStore;
use harness::tokens::valid;
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(20);

/// Scenarios run one at a time: each is several processes on 2 cores.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn kinds_and_bodies(messages: &[Value]) -> Vec<(String, String)> {
    messages
        .iter()
        .map(|m| {
            (
                m["kind"].as_str().unwrap_or("").to_string(),
                m["body"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

fn kb(kind: &str, body: &str) -> (String, String) {
    (kind.to_string(), body.to_string())
}

async fn unsend_and_delete_go_through_one_tombstone_path(store: TestStore, fcm: &FakeFcm) {
    let mut node_env = fcm.node_env(store.dir.path());
    node_env.insert(
        "TURBOCHAT_ADMIN__OPERATORS".into(),
        harness::admin::operators(),
    );
    let options = Options {
        nodes: 2,
        gossip: true,
        node_env,
        ..Options::default()
    };
    let cluster = Cluster::start(store, options).await;
    let base = cluster.router_url(0);
    let api = Api::new(&base);
    let (alice_t, bob_t, carol_t) = (valid("alice"), valid("bob"), valid("carol"));
    // Carol is offline: alice's messages are pushed to her phone. FCM is
    // down at first (503, retry later), so her pushes wait in the outbox.
    let (status, _) = api
        .put(
            "/devices",
            &carol_t,
            json!({"token": "carol-phone", "platform": "android"}),
        )
        .await;
    assert_eq!(status, 200);
    fcm.set_faults(Faults {
        rate: 1.0,
        kinds: vec![Fault::Unavailable(Some(1))],
    });
    let (status, created) = api
        .post(
            "/conversations",
            &alice_t,
            json!({"kind": "group", "participants": ["bob", "carol"]}),
        )
        .await;
    assert_eq!(status, 200, "{created}");
    let group = created["conversation_id"].as_str().unwrap().to_string();
    let mut alice = WsClient::connect(&base, &alice_t).await.unwrap();
    let mut bob = WsClient::connect(&base, &bob_t).await.unwrap();
    alice.subscribe(&group, None).await;
    bob.subscribe(&group, None).await;

    for (id, body) in [
        ("a-1", "call me on 0612345678"),
        ("a-2", "the car is in Lyon"),
        ("a-3", "price is firm"),
    ] {
        let ack = alice.send_message(&group, id, body).await;
        assert_eq!(ack["type"], "ack", "{ack}");
        bob.expect_where("message", T, |m| m["client_msg_id"] == id)
            .await;
    }
    // Carol's push of a-1 was tried and is waiting for its retry.
    harness::eventually("carol's push was attempted", T, || async {
        (fcm.attempts_for("carol-phone") > 0).then_some(())
    })
    .await;

    // Nobody but its sender unsends it; a stranger does not even see it.
    let path = |seq: u64| format!("/conversations/{group}/messages/{seq}");
    let (status, body) = api.delete(&path(1), &bob_t).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("forbidden")),
        "{body}"
    );
    let (status, body) = api.delete(&path(1), &valid("eve")).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("not_found")),
        "{body}"
    );
    let (status, body) = api.delete(&path(99), &alice_t).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("not_found")),
        "{body}"
    );

    // Alice unsends a-1: bob's live session is told.
    let (status, body) = api.delete(&path(1), &alice_t).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (&body["deleted_by"], &body["already"]),
        (&json!("sender"), &json!(false))
    );
    let told = bob
        .expect_where("message_deleted", T, |f| f["seq"] == 1)
        .await;
    assert_eq!(told["conversation_id"], group.as_str());
    assert_eq!(told["deleted_by"], "sender");
    // Its push is gone from the outbox: it is never sent.
    let jobs = cluster
        .store
        .rows(&format!(
            "SELECT CAST(seq AS TEXT) FROM push_outbox WHERE conversation_id = '{group}' AND seq = 1"
        ))
        .await;
    assert!(
        jobs.is_empty(),
        "the push of an unsent message is dropped: {jobs:?}"
    );
    // Again: nothing more to do.
    let (status, body) = api.delete(&path(1), &alice_t).await;
    assert_eq!((status, &body["already"]), (200, &json!(true)), "{body}");

    // History, a replay and the list show the tombstone.
    let history = api.all_messages(&bob_t, &group).await;
    assert_eq!(
        kinds_and_bodies(&history),
        [
            kb("deleted", ""),
            kb("text", "the car is in Lyon"),
            kb("text", "price is firm")
        ]
    );
    assert_eq!(history[0]["sender_id"], "alice");
    assert!(history[0].get("media_key").is_none());
    let mut bob_again = WsClient::connect(&cluster.router_url(0), &bob_t)
        .await
        .unwrap();
    bob_again.subscribe(&group, Some(0)).await;
    let replayed = bob_again.take_pending("message");
    assert_eq!(
        kinds_and_bodies(&replayed)[0],
        kb("deleted", ""),
        "{replayed:?}"
    );

    // After the unsend window, not even its sender (a-2 made old).
    cluster
        .store
        .execute(&format!(
            "UPDATE messages SET created_at = 1000 WHERE conversation_id = '{group}' AND seq = 2"
        ))
        .await;
    let (status, body) = api.delete(&path(2), &alice_t).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("forbidden")),
        "{body}"
    );

    // An operator deletes a-3 (through either node: the owner does it),
    // with a reason, audited; every live session is told.
    let admin = AdminApi::new(&cluster, 1);
    let (status, body) = admin
        .post(
            &format!("/admin/conversations/{group}/messages/3/delete"),
            json!({}),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("invalid_argument"))
    );
    let (status, body) = admin
        .post(
            &format!("/admin/conversations/{group}/messages/3/delete"),
            json!({"reason": "off-platform payment"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["deleted_by"], "operator");
    for session in [&mut bob, &mut alice] {
        let told = session
            .expect_where("message_deleted", T, |f| f["seq"] == 3)
            .await;
        assert_eq!(told["deleted_by"], "operator");
    }
    let (_, audit) = AdminApi::new(&cluster, 0).get("/admin/audit").await;
    let entry = &audit["entries"][0];
    assert_eq!(
        (
            &entry["operator"],
            &entry["action"],
            &entry["detail"]["reason"]
        ),
        (
            &json!("ops-ana"),
            &json!("delete_message"),
            &json!("off-platform payment")
        ),
        "{audit}"
    );
    assert_eq!(entry["target"], format!("{group}/3"));
    // The conversation list's last message is the tombstone.
    let list = api.conversations(&bob_t).await;
    let last = &list[0]["last_message"];
    assert_eq!(
        (&last["seq"], &last["kind"], &last["body"]),
        (&json!(3), &json!("deleted"), &json!(""))
    );

    // FCM is back: carol's phone gets a-2's push (and a marker's), never
    // a-1's nor a-3's.
    fcm.set_faults(Faults::default());
    let marker = alice.send_message(&group, "a-4", "marker").await;
    assert_eq!(marker["type"], "ack");
    harness::eventually("the marker is pushed", T, || async {
        fcm.accepted_for("carol-phone")
            .iter()
            .any(|a| a.message["notification"]["body"] == "marker")
            .then_some(())
    })
    .await;
    let pushed: Vec<Value> = fcm
        .accepted_for("carol-phone")
        .iter()
        .map(|a| a.message["notification"]["body"].clone())
        .collect();
    assert!(
        !pushed.contains(&json!("call me on 0612345678"))
            && !pushed.contains(&json!("price is firm")),
        "a deleted message was pushed: {pushed:?}"
    );
    // Clients cannot send a tombstone.
    alice
        .send(
            json!({"type": "send", "conversation_id": group, "client_msg_id": "fake",
                     "kind": "deleted", "body": ""}),
        )
        .await;
    let refused = alice.answer("fake", T).await;
    assert_eq!(refused["code"], "invalid_argument", "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsend_and_delete_go_through_one_tombstone_path_postgres() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let fcm = FakeFcm::start(fake_fcm::Options::default()).await;
    unsend_and_delete_go_through_one_tombstone_path(TestStore::postgres().await, &fcm).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsend_and_delete_go_through_one_tombstone_path_sqlite() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let fcm = FakeFcm::start(fake_fcm::Options::default()).await;
    unsend_and_delete_go_through_one_tombstone_path(TestStore::sqlite(), &fcm).await;
}
