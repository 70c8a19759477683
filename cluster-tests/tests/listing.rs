//! What a conversation is about: the operator sets a listing's card (title,
//! price, photo) through the admin API, audited; every participant's
//! conversation list shows it; nobody else can set it.

use std::collections::BTreeMap;

use harness::admin::{AdminApi, OPERATOR_SECRET};
use harness::client::Api;
use harness::cluster::{Cluster, Options};
use harness::store::TestStore;
use harness::tokens::valid;
use serde_json::{json, Value};

async fn listing_of(api: &Api, token: &str, conversation: &str) -> Value {
    let list = api.conversations(token).await;
    let view = list
        .iter()
        .find(|c| c["conversation_id"] == conversation)
        .expect("the conversation is in the list");
    assert_eq!(view["listing_id"], "car-7", "the listing id never changes");
    view.get("listing").cloned().unwrap_or(Value::Null)
}

async fn an_operator_sets_the_listing_card(store: TestStore) {
    let operators = harness::admin::operators();
    let options = Options {
        node_env: BTreeMap::from([("TURBOCHAT_ADMIN__OPERATORS".to_string(), operators)]),
        ..Options::default()
    };
    let cluster = Cluster::start(store, options).await;
    let api = Api::new(&cluster.router_url(0));
    let admin = AdminApi::new(&cluster, 0);
    let (alice, bob) = (valid("alice"), valid("bob"));
    let conversation = api.create_direct(&alice, "bob", Some("car-7")).await;
    let path = format!("/admin/conversations/{conversation}/listing");
    let card = json!({
        "title": "Audi A4 Avant 2.0 TDI, 2019",
        "price": {"amount_minor": 1_890_000, "currency": "EUR"},
        "photo_url": "https://img.turbocar.example/car-7/1.jpg",
    });
    let put = |secret: Option<String>, body: Value| {
        let (admin, path) = (&admin, path.clone());
        async move {
            admin
                .call(reqwest::Method::PUT, &path, secret.as_deref(), Some(body))
                .await
        }
    };
    let operator = Some(OPERATOR_SECRET.to_string());

    // Only the operator sets it: not a participant's token, not nobody.
    for secret in [None, Some(alice.clone())] {
        let (status, body) = put(secret, card.clone()).await;
        assert_eq!((status, body["code"].as_str()), (401, Some("unauthorized")));
    }
    // A card that is not one is refused, and names why.
    for (bad, why) in [
        (json!({"title": ""}), "title"),
        (
            json!({"title": "Golf", "photo_url": "http://img.example/1.jpg"}),
            "photo_url",
        ),
        (
            json!({"title": "Golf", "price": {"amount_minor": 100, "currency": "euro"}}),
            "currency",
        ),
        (
            json!({"title": "Golf", "seller_phone": "+49 170 1234567"}),
            "unknown field",
        ),
    ] {
        let (status, body) = put(operator.clone(), bad).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["code"], "invalid_argument");
        assert!(body["message"].as_str().unwrap().contains(why), "{body}");
    }
    assert_eq!(listing_of(&api, &alice, &conversation).await, Value::Null);
    // A conversation that does not exist.
    let (status, body) = admin
        .call(
            reqwest::Method::PUT,
            &format!("/admin/conversations/{}/listing", uuid::Uuid::new_v4()),
            Some(OPERATOR_SECRET),
            Some(card.clone()),
        )
        .await;
    assert_eq!((status, body["code"].as_str()), (404, Some("not_found")));

    let (status, body) = put(operator.clone(), card.clone()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["listing"], card);
    for token in [&alice, &bob] {
        assert_eq!(listing_of(&api, token, &conversation).await, card);
    }
    // Opening the conversation again (as a client does from a listing page)
    // shows the card too.
    let (status, view) = api
        .post(
            "/conversations",
            &bob,
            json!({"kind": "direct", "peer_id": "alice", "listing_id": "car-7"}),
        )
        .await;
    assert!(status == 200 || status == 201, "{status} {view}");
    assert_eq!(view["listing"], card, "{view}");

    let (status, body) = admin.delete(&path).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(listing_of(&api, &bob, &conversation).await, Value::Null);

    // Both changes are audited: who, what, which conversation.
    let (status, audit) = admin.get("/admin/audit").await;
    assert_eq!(status, 200, "{audit}");
    let entries: Vec<(String, String, String)> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["operator"].as_str().unwrap().to_string(),
                e["action"].as_str().unwrap().to_string(),
                e["target"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for action in ["set_listing", "clear_listing"] {
        assert!(
            entries.contains(&("ops-ana".into(), action.into(), conversation.clone())),
            "{action} audited: {entries:?}"
        );
    }
    assert_eq!(
        entries.iter().filter(|e| e.1.ends_with("_listing")).count(),
        2,
        "refused calls are not audited: {entries:?}"
    );
}

#[tokio::test]
async fn an_operator_sets_the_listing_card_on_postgres() {
    an_operator_sets_the_listing_card(TestStore::postgres().await).await;
}

#[tokio::test]
async fn an_operator_sets_the_listing_card_on_sqlite() {
    an_operator_sets_the_listing_card(TestStore::sqlite()).await;
}
