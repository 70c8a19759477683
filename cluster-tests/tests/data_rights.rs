//! Data rights through the admin API, end to end on both stores (two nodes
//! with gossip): an operator exports everything stored about a user, then
//! erases the user — their messages disappear from every other user's
//! history and live sessions (tombstones under an anonymous sender), their
//! devices, cursors and blocks go, and an export afterwards finds nothing.

use std::collections::BTreeMap;
use std::time::Duration;

use harness::admin::AdminApi;
use harness::client::{Api, WsClient};
use harness::cluster::{Cluster, Options};
use harness::store::TestStore;
use harness::tokens::valid;
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(20);

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

async fn a_user_is_exported_then_erased(store: TestStore) {
    let operators = harness::admin::operators();
    let options = Options {
        nodes: 2,
        gossip: true,
        node_env: env(&[("TURBOCHAT_ADMIN__OPERATORS", &operators)]),
        ..Options::default()
    };
    let cluster = Cluster::start(store, options).await;
    let base = cluster.router_url(0);
    let api = Api::new(&base);
    let admin = AdminApi::new(&cluster, 1);
    let (alice_t, bob_t) = (valid("alice"), valid("bob"));
    let direct = api.create_direct(&alice_t, "bob", Some("polo-9")).await;
    let (status, _) = api
        .put(
            "/devices",
            &alice_t,
            json!({"token": "alice-phone", "platform": "ios"}),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = api
        .post("/blocks", &alice_t, json!({"user_id": "mallory"}))
        .await;
    assert_eq!(status, 200);
    let mut alice = WsClient::connect(&base, &alice_t).await.unwrap();
    alice.subscribe(&direct, None).await;
    let mut bob = WsClient::connect(&base, &bob_t).await.unwrap();
    bob.subscribe(&direct, None).await;
    for (id, body) in [("a-1", "I live at 3 rue Haute"), ("a-2", "call me")] {
        assert_eq!(alice.send_message(&direct, id, body).await["type"], "ack");
    }
    assert_eq!(bob.send_message(&direct, "b-1", "ok").await["type"], "ack");

    // Export: everything stored about alice.
    let path = "/admin/users/alice/export";
    let (status, body) = admin
        .call(reqwest::Method::GET, path, Some("wrong"), None)
        .await;
    assert_eq!((status, body["code"].as_str()), (401, Some("unauthorized")));
    let (status, export) = admin.get(path).await;
    assert_eq!(status, 200, "{export}");
    assert_eq!(export["user_id"], "alice");
    assert_eq!(
        export["conversations"][0]["conversation_id"],
        direct.as_str()
    );
    let bodies: Vec<&Value> = export["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| &m["body"])
        .collect();
    assert_eq!(bodies, [&json!("I live at 3 rue Haute"), &json!("call me")]);
    assert_eq!(export["devices"][0]["token"], "alice-phone");
    assert_eq!(export["blocks"][0]["user_id"], "mallory");

    // Erase: bob's live session is told of both messages; his history keeps
    // only tombstones under an anonymous sender; his own message stays.
    let (status, erased) = admin.post("/admin/users/alice/erase", json!({})).await;
    assert_eq!(status, 200, "{erased}");
    assert_eq!(erased["tombstoned"], 2);
    assert_eq!(erased["erased"]["devices"], 1);
    assert_eq!(erased["erased"]["blocks"], 1);
    let anonymous = erased["anonymous_id"].as_str().unwrap().to_string();
    for seq in [1, 2] {
        bob.expect_where("message_deleted", T, |f| f["seq"] == seq)
            .await;
    }
    // Her own session's subscription ends: the conversation is not hers.
    let gone = alice
        .expect_where("error", T, |e| e["conversation_id"] == direct.as_str())
        .await;
    assert_eq!(gone["code"], "not_found");
    let history = api.all_messages(&bob_t, &direct).await;
    let seen: Vec<(&Value, &Value, &Value)> = history
        .iter()
        .map(|m| (&m["kind"], &m["body"], &m["sender_id"]))
        .collect();
    assert_eq!(
        seen,
        [
            (&json!("deleted"), &json!(""), &json!(anonymous)),
            (&json!("deleted"), &json!(""), &json!(anonymous)),
            (&json!("text"), &json!("ok"), &json!("bob")),
        ]
    );
    // Nothing is left about alice; the audit log says who did both.
    let (_, after) = admin.get(path).await;
    for key in ["conversations", "messages", "devices", "blocks", "reports"] {
        assert_eq!(after[key], json!([]), "{key}: {after}");
    }
    let (_, audit) = AdminApi::new(&cluster, 0).get("/admin/audit").await;
    let actions: Vec<&Value> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["action"])
        .collect();
    assert_eq!(
        actions[..3],
        [
            &json!("export_user"),
            &json!("erase_user"),
            &json!("export_user")
        ]
    );
    // Again: nothing more to erase.
    let (status, again) = admin.post("/admin/users/alice/erase", json!({})).await;
    assert_eq!((status, &again["tombstoned"]), (200, &json!(0)), "{again}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_is_exported_then_erased_postgres() {
    let _turn = ONE_AT_A_TIME.lock().await;
    a_user_is_exported_then_erased(TestStore::postgres().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_is_exported_then_erased_sqlite() {
    let _turn = ONE_AT_A_TIME.lock().await;
    a_user_is_exported_then_erased(TestStore::sqlite()).await;
}
