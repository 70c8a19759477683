//! Leaving and membership, end to end through real routers and nodes (two
//! nodes with gossip), asserted from the users' side on both stores:
//!
//! - the creator adds a member (who is told of the conversation and reads
//!   its history) and removes one; nobody else may (`forbidden`);
//! - a member who leaves (or is removed) gets nothing more: their sessions
//!   are answered `not_found` for it, later messages reach neither their
//!   sessions nor their phone, its history and listing are gone for them;
//! - a creator who leaves hands the role to the member who joined first;
//! - every change is a system message that reaches every member's session;
//! - archiving hides a conversation from one's list until a newer message.
//!
//! "Nothing arrived" is shown with a marker sent afterwards on the same
//! path, never with a sleep.

use std::time::Duration;

use harness::client::{Api, WsClient};
use harness::cluster::{Cluster, Options};
use harness::fake_fcm::{self, FakeFcm};
use harness::store::TestStore;
use harness::tokens::valid;
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(20);

/// Scenarios run one at a time: each is several processes on 2 cores.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Waits for the system message `body` in `conversation`.
async fn system(ws: &mut WsClient, conversation: &str, body: &str) -> Value {
    let message = ws
        .expect_where("message", T, |m| {
            m["conversation_id"] == conversation && m["kind"] == "system" && m["body"] == body
        })
        .await;
    assert_eq!(message["sender_id"], "system");
    message
}

async fn members_come_and_go_and_every_change_is_told(store: TestStore, fcm: &FakeFcm) {
    let options = Options {
        nodes: 2,
        gossip: true,
        node_env: fcm.node_env(store.dir.path()),
        ..Options::default()
    };
    let cluster = Cluster::start(store, options).await;
    let base = cluster.router_url(0);
    let api = Api::new(&base);
    let t = |u: &str| valid(u);
    let (status, _) = api
        .put(
            "/devices",
            &t("carol"),
            json!({"token": "carol-phone", "platform": "android"}),
        )
        .await;
    assert_eq!(status, 200);
    let (status, created) = api
        .post(
            "/conversations",
            &t("alice"),
            json!({"kind": "group", "participants": ["bob", "carol"], "title": "Golf club"}),
        )
        .await;
    assert_eq!(status, 200, "{created}");
    let group = created["conversation_id"].as_str().unwrap().to_string();
    let direct = api
        .create_direct(&t("alice"), "carol", Some("golf-7"))
        .await;
    let mut alice = WsClient::connect(&base, &t("alice")).await.unwrap();
    let mut bob = WsClient::connect(&base, &t("bob")).await.unwrap();
    let mut carol = WsClient::connect(&base, &t("carol")).await.unwrap();
    let mut dave = WsClient::connect(&base, &t("dave")).await.unwrap();
    for ws in [&mut alice, &mut bob, &mut carol] {
        ws.subscribe(&group, None).await;
    }
    carol.subscribe(&direct, None).await;
    let hello = alice.send_message(&group, "a-1", "tee time at 9").await;
    assert_eq!(hello["type"], "ack");
    let path = |rest: &str| format!("/conversations/{group}{rest}");

    // Only the creator adds or removes; a direct conversation has no members.
    let (status, body) = api
        .post(&path("/members"), &t("bob"), json!({"user_id": "dave"}))
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("forbidden")),
        "{body}"
    );
    let (status, body) = api.delete(&path("/members/carol"), &t("bob")).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("forbidden")),
        "{body}"
    );
    let (status, body) = api.delete(&path("/members/carol"), &t("eve")).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("not_found")),
        "{body}"
    );
    let (status, body) = api
        .post(
            &format!("/conversations/{direct}/leave"),
            &t("carol"),
            json!({}),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("invalid_argument")),
        "{body}"
    );

    // Alice adds dave: he is told, everyone sees it, he reads the history.
    let (status, body) = api
        .post(&path("/members"), &t("alice"), json!({"user_id": "dave"}))
        .await;
    assert_eq!((status, &body["added"]), (200, &json!(true)), "{body}");
    let told = dave
        .expect_where("conversation", T, |c| {
            c["conversation"]["conversation_id"] == group.as_str()
        })
        .await;
    assert!(told["conversation"]["participants"]
        .as_array()
        .unwrap()
        .contains(&json!("dave")));
    for ws in [&mut alice, &mut bob, &mut carol] {
        system(ws, &group, "alice added dave").await;
    }
    dave.subscribe(&group, Some(0)).await;
    let replayed = dave.take_pending("message");
    let bodies: Vec<&str> = replayed
        .iter()
        .map(|m| m["body"].as_str().unwrap())
        .collect();
    assert_eq!(bodies, ["tee time at 9", "alice added dave"]);

    // Carol leaves: her session is told, the others see it. (What she got
    // before is set aside.)
    carol.take_pending("message");
    let (status, body) = api.post(&path("/leave"), &t("carol"), json!({})).await;
    assert_eq!((status, &body["left"]), (200, &json!(true)), "{body}");
    let gone = carol
        .expect_where("error", T, |e| e["conversation_id"] == group.as_str())
        .await;
    assert_eq!(gone["code"], "not_found");
    for ws in [&mut alice, &mut bob, &mut dave] {
        system(ws, &group, "carol left").await;
    }
    // What follows reaches the members, not carol: alice's next group
    // message, then a marker to carol in their direct conversation.
    alice.send_message(&group, "a-2", "without carol").await;
    bob.expect_where("message", T, |m| m["client_msg_id"] == "a-2")
        .await;
    alice.send_message(&direct, "marker-1", "marker").await;
    carol
        .expect_where("message", T, |m| m["client_msg_id"] == "marker-1")
        .await;
    let leaked: Vec<Value> = carol
        .take_pending("message")
        .into_iter()
        .filter(|m| m["conversation_id"] == group.as_str())
        .collect();
    assert!(
        leaked.is_empty(),
        "carol got messages after leaving: {leaked:?}"
    );
    let (status, _) = api
        .get(
            &format!("/history?conversation_id={group}"),
            Some(&t("carol")),
        )
        .await;
    assert_eq!(status, 404);
    assert!(api
        .conversations(&t("carol"))
        .await
        .iter()
        .all(|c| c["conversation_id"] != group.as_str()));
    // Nor her phone: offline now, she is pushed the direct marker only.
    carol.close().await;
    let deadline = tokio::time::Instant::now() + T;
    let mut attempt = 0;
    while fcm.accepted_for("carol-phone").is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no push reached carol"
        );
        attempt += 1;
        alice
            .send_message(&direct, &format!("away-{attempt}"), "still there?")
            .await;
        // Until the node has seen her session go, the direct messages
        // reach the session rather than the phone: write again until one
        // is pushed (polled, with a deadline).
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while fcm.accepted_for("carol-phone").is_empty() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
    }
    alice
        .send_message(&group, "a-3", "carol must not see this")
        .await;
    alice.send_message(&direct, "marker-2", "marker two").await;
    harness::eventually("the marker is pushed to carol", T, || async {
        fcm.accepted_for("carol-phone")
            .iter()
            .any(|a| a.message["notification"]["body"] == "marker two")
            .then_some(())
    })
    .await;
    let pushed: Vec<Value> = fcm
        .accepted_for("carol-phone")
        .iter()
        .map(|a| a.message["notification"]["body"].clone())
        .collect();
    assert!(
        !pushed.contains(&json!("carol must not see this")),
        "carol was pushed a group message after leaving: {pushed:?}"
    );

    // Alice removes bob: his session is told; the others see it.
    let (status, body) = api.delete(&path("/members/bob"), &t("alice")).await;
    assert_eq!((status, &body["removed"]), (200, &json!(true)), "{body}");
    let gone = bob
        .expect_where("error", T, |e| e["conversation_id"] == group.as_str())
        .await;
    assert_eq!(gone["code"], "not_found");
    for ws in [&mut alice, &mut dave] {
        system(ws, &group, "alice removed bob").await;
    }
    let refused = bob.send_message(&group, "b-1", "let me back").await;
    assert_eq!(refused["code"], "not_found", "{refused}");

    // The creator leaves: dave, who joined first of those left, is the
    // creator now and adds erin.
    let (status, _) = api.post(&path("/leave"), &t("alice"), json!({})).await;
    assert_eq!(status, 200);
    system(&mut dave, &group, "alice left").await;
    let (status, body) = api
        .post(&path("/members"), &t("dave"), json!({"user_id": "erin"}))
        .await;
    assert_eq!((status, &body["added"]), (200, &json!(true)), "{body}");
    system(&mut dave, &group, "dave added erin").await;

    // Archive: carol hides the direct conversation until alice writes again.
    let listed = |list: &[Value]| list.iter().any(|c| c["conversation_id"] == direct.as_str());
    let archive = format!("/conversations/{direct}/archive");
    let (status, body) = api.put(&archive, &t("carol"), json!({})).await;
    assert_eq!((status, &body["archived"]), (200, &json!(true)), "{body}");
    assert!(!listed(&api.conversations(&t("carol")).await));
    assert!(
        listed(&api.conversations(&t("alice")).await),
        "archiving is private"
    );
    alice
        .send_message(&direct, "back-1", "price dropped!")
        .await;
    assert!(listed(&api.conversations(&t("carol")).await));
    let (status, _) = api.put(&archive, &t("carol"), json!({})).await;
    assert_eq!(status, 200);
    let (status, body) = api.delete(&archive, &t("carol")).await;
    assert_eq!((status, &body["archived"]), (200, &json!(false)), "{body}");
    assert!(listed(&api.conversations(&t("carol")).await));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_come_and_go_and_every_change_is_told_postgres() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let fcm = FakeFcm::start(fake_fcm::Options::default()).await;
    members_come_and_go_and_every_change_is_told(TestStore::postgres().await, &fcm).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_come_and_go_and_every_change_is_told_sqlite() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let fcm = FakeFcm::start(fake_fcm::Options::default()).await;
    members_come_and_go_and_every_change_is_told(TestStore::sqlite(), &fcm).await;
}
