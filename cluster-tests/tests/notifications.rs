//! Notifications a car marketplace ships (issue 13), end to end through a
//! real node and router, read where a phone would get them: the fake FCM
//! (PostgreSQL) and the embedded default's push file (SQLite).
//!
//! - names: the `name` and `picture` claims of a user's token become their
//!   profile: the other participant's conversation view lists it, and the
//!   push title and data carry it;
//! - the listing's card (set by the operator) is in the title, the image
//!   and the data;
//! - the badge is the recipient's unread total (`aps.badge`, Android's
//!   `notification_count`, `data.badge`), lower after they read on another
//!   device, without muted conversations;
//! - hidden text says "New message"; quiet hours (in the user's time zone)
//!   send a data-only, silent push; `mode: "none"` sends nothing; a muted
//!   conversation sends nothing;
//! - a chat opened gets where the others have read to (a `read` frame after
//!   `subscribed`), and a session that opens learns which contacts are
//!   online (a `presence` frame).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use harness::admin::{AdminApi, OPERATOR_SECRET};
use harness::client::{Api, WsClient};
use harness::cluster::{Cluster, Options};
use harness::fake_fcm::{self, FakeFcm};
use harness::store::TestStore;
use harness::tokens::{valid, with_profile};
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(20);
const PICTURE: &str = "https://img.turbocar.test/u/alice.png";
const PHOTO: &str = "https://img.turbocar.test/car-7/1.jpg";

/// Where the pushes land.
enum Pushes {
    Fcm(FakeFcm),
    File(PathBuf),
}

impl Pushes {
    /// Every push to `token` so far (the FCM v1 `message` objects).
    fn to(&self, token: &str) -> Vec<Value> {
        match self {
            Pushes::Fcm(fcm) => fcm
                .accepted_for(token)
                .into_iter()
                .map(|a| a.message)
                .collect(),
            Pushes::File(path) => std::fs::read_to_string(path)
                .unwrap_or_default()
                .lines()
                .map(|l| serde_json::from_str::<Value>(l).expect("a JSON line"))
                .map(|line| line["message"].clone())
                .filter(|m| m["token"] == token)
                .collect(),
        }
    }

    /// The push of message `message_id` to `token`, once it arrived.
    async fn of(&self, token: &str, message_id: &Value) -> Value {
        let id = message_id.as_str().unwrap().to_string();
        harness::eventually(&format!("the push of {id} to {token}"), T, || async {
            self.to(token)
                .into_iter()
                .find(|m| m["data"]["message_id"] == id.as_str())
        })
        .await
    }
}

async fn start(store: TestStore, pushes: &str) -> (Cluster, Pushes) {
    let mut node_env = BTreeMap::from([
        (
            "TURBOCHAT_ADMIN__OPERATORS".to_string(),
            harness::admin::operators(),
        ),
        // Reads reach the store (where the badge is counted) quickly.
        (
            "TURBOCHAT_OWNER__READ_FLUSH_INTERVAL".to_string(),
            "50ms".to_string(),
        ),
    ]);
    let sink = match pushes {
        "fcm" => {
            let fcm = FakeFcm::start(fake_fcm::Options::default()).await;
            node_env.extend(fcm.node_env(store.dir.path()));
            Pushes::Fcm(fcm)
        }
        _ => {
            let path = store.dir.path().join("notifications-push.jsonl");
            node_env.insert(
                "TURBOCHAT_PUSH__FILE__PATH".into(),
                path.display().to_string(),
            );
            node_env.insert("TURBOCHAT_PUSH__POLL_INTERVAL".into(), "50ms".into());
            Pushes::File(path)
        }
    };
    let options = Options {
        node_env,
        ..Options::default()
    };
    (Cluster::start(store, options).await, sink)
}

/// `PUT /settings/notifications` that must succeed.
async fn set_settings(api: &Api, token: &str, settings: Value) {
    let (status, body) = api.put("/settings/notifications", token, settings).await;
    assert_eq!(status, 200, "{body}");
}

/// "HH:MM" of `unix_ms` plus `offset_minutes`, wrapped to a day.
fn hh_mm(unix_ms: i64, offset_minutes: i64) -> String {
    let minutes = (unix_ms / 60_000 + offset_minutes).rem_euclid(24 * 60);
    format!("{:02}:{:02}", minutes / 60, minutes % 60)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

async fn pushes_carry_names_listing_badge_and_settings(store: TestStore, backend: &str) {
    let (cluster, pushes) = start(store, backend).await;
    let base = cluster.router_url(0);
    let api = Api::new(&base);
    let alice = with_profile("alice", "Alice Martin", Some(PICTURE));
    // Bob's token names him too; his picture claim is not https: not kept.
    let bob = with_profile("bob", "  Bob\u{7} Stone ", Some("http://img.test/b.png"));

    let (status, body) = api
        .put(
            "/devices",
            &bob,
            json!({"token": "bob-phone", "platform": "ios"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let conversation = api.create_direct(&alice, "bob", Some("car-7")).await;
    let admin = AdminApi::new(&cluster, 0);
    let (status, body) = admin
        .call(
            reqwest::Method::PUT,
            &format!("/admin/conversations/{conversation}/listing"),
            Some(OPERATOR_SECRET),
            Some(json!({
                "title": "Audi A4 Avant 2.0 TDI, 2019",
                "price": {"amount_minor": 1_890_000, "currency": "EUR"},
                "photo_url": PHOTO,
            })),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    // A session of each stores their profile at their home node.
    let bob_ws = WsClient::connect(&base, &bob).await.unwrap();
    bob_ws.close().await;
    let mut alice_ws = WsClient::connect(&base, &alice).await.unwrap();
    alice_ws.subscribe(&conversation, None).await;
    let members = harness::eventually("both names in bob's list", T, || async {
        let list = api.conversations(&bob).await;
        let view = list.iter().find(|c| c["conversation_id"] == conversation)?;
        let members = view["members"].clone();
        (members[0]["name"].is_string() && members[1]["name"].is_string()).then_some(members)
    })
    .await;
    assert_eq!(
        members,
        json!([
            {"user_id": "alice", "name": "Alice Martin", "avatar_url": PICTURE},
            {"user_id": "bob", "name": "Bob Stone"},
        ]),
        "participants' order; a name cleaned of control characters and spaces"
    );

    // Bob is offline: each message is a push with names, card and badge.
    let first = alice_ws
        .send_message(&conversation, "m1", "Is the Audi still for sale?")
        .await;
    let push = pushes.of("bob-phone", &first["message_id"]).await;
    assert_eq!(
        push["notification"],
        json!({
            "title": "Alice Martin · Audi A4 Avant 2.0 TDI, 2019",
            "body": "Is the Audi still for sale?",
            "image": PHOTO,
        })
    );
    let data = &push["data"];
    assert_eq!(data["sender_name"], "Alice Martin");
    assert_eq!(data["sender_avatar_url"], PICTURE);
    assert_eq!(data["listing_title"], "Audi A4 Avant 2.0 TDI, 2019");
    assert_eq!(data["listing_price_minor"], "1890000");
    assert_eq!(data["listing_currency"], "EUR");
    assert_eq!(data["listing_photo_url"], PHOTO);
    assert_eq!(data["link"], format!("/#/c/{conversation}"));
    assert_eq!(data["badge"], "1");
    assert_eq!(data["silent"], "false");
    assert_eq!(push["apns"]["payload"]["aps"]["badge"], 1);
    assert_eq!(push["android"]["notification"]["notification_count"], 1);

    let second = alice_ws.send_message(&conversation, "m2", "Price?").await;
    let push = pushes.of("bob-phone", &second["message_id"]).await;
    assert_eq!(push["data"]["badge"], "2", "unread total");
    assert_eq!(push["apns"]["payload"]["aps"]["badge"], 2);

    // Bob reads both on another device: the next badge counts one.
    let mut bob_tablet = WsClient::connect(&base, &bob).await.unwrap();
    bob_tablet.subscribe(&conversation, None).await;
    bob_tablet
        .send(json!({"type": "read", "conversation_id": conversation, "seq": second["seq"]}))
        .await;
    alice_ws
        .expect_where("read", T, |f| f["user_id"] == "bob")
        .await;
    bob_tablet.close().await;
    // Bob is offline again (his tablet's session is gone from the router,
    // which told the node before anything alice sends next).
    let router_ops = cluster.router_ops_url(0);
    harness::eventually("only alice's session left", T, || async {
        (harness::metrics::sum(&router_ops, "turbochat_sessions", "").await == 1.0).then_some(())
    })
    .await;
    harness::eventually("bob's read cursor stored", T, || async {
        let list = api.conversations(&bob).await;
        let view = list.iter().find(|c| c["conversation_id"] == conversation)?;
        (view["unread_count"] == 0).then_some(())
    })
    .await;
    let third = alice_ws.send_message(&conversation, "m3", "Hello?").await;
    let push = pushes.of("bob-phone", &third["message_id"]).await;
    assert_eq!(push["data"]["badge"], "1", "read on another device");

    // Hidden text.
    set_settings(&api, &bob, json!({"hide_text": true})).await;
    let (status, settings) = api.get("/settings/notifications", Some(&bob)).await;
    assert_eq!(
        (status, settings),
        (200, json!({"mode": "all", "hide_text": true}))
    );
    let hidden = alice_ws
        .send_message(&conversation, "m4", "My number is 0170 1234567")
        .await;
    let push = pushes.of("bob-phone", &hidden["message_id"]).await;
    assert_eq!(push["notification"]["body"], "New message");
    assert_eq!(push["data"]["body"], "New message");
    assert!(
        !push.to_string().contains("0170"),
        "the text is nowhere in the push: {push}"
    );
    assert_eq!(
        push["notification"]["title"],
        "Alice Martin · Audi A4 Avant 2.0 TDI, 2019"
    );

    // Quiet hours now, in Kolkata (UTC+05:30, no DST): a silent push.
    let now = now_ms();
    set_settings(
        &api,
        &bob,
        json!({"quiet_hours": {
            "start": hh_mm(now, 330 - 60),
            "end": hh_mm(now, 330 + 60),
            "time_zone": "Asia/Kolkata",
        }}),
    )
    .await;
    let late = alice_ws
        .send_message(&conversation, "m5", "Sorry, late")
        .await;
    let push = pushes.of("bob-phone", &late["message_id"]).await;
    assert!(push.get("notification").is_none(), "data only: {push}");
    assert_eq!(push["data"]["silent"], "true");
    assert_eq!(push["data"]["body"], "Sorry, late");
    assert_eq!(push["apns"]["headers"]["apns-push-type"], "background");
    assert_eq!(push["apns"]["payload"]["aps"]["content-available"], 1);
    assert_eq!(push["apns"]["payload"]["aps"]["badge"], 3);
    assert_eq!(push["android"]["priority"], "normal");
    // The same window in New York is not now: loud again.
    set_settings(
        &api,
        &bob,
        json!({"quiet_hours": {
            "start": hh_mm(now, 330 - 60),
            "end": hh_mm(now, 330 + 60),
            "time_zone": "America/New_York",
        }}),
    )
    .await;
    let loud = alice_ws.send_message(&conversation, "m6", "Hi again").await;
    let push = pushes.of("bob-phone", &loud["message_id"]).await;
    assert_eq!(push["data"]["silent"], "false");
    assert_eq!(push["notification"]["body"], "Hi again");

    // Settings that are not settings are refused, and say why.
    for (bad, why) in [
        (json!({"mode": "loud"}), "`loud`"),
        (json!({"sound": true}), "unknown field"),
        (
            json!({"quiet_hours": {"start": "22:00", "end": "07:00", "time_zone": "Mars/Base"}}),
            "IANA",
        ),
        (
            json!({"quiet_hours": {"start": "10pm", "end": "07:00", "time_zone": "UTC"}}),
            "HH:MM",
        ),
    ] {
        let (status, body) = api.put("/settings/notifications", &bob, bad).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (400, Some("invalid_argument"))
        );
        assert!(body["message"].as_str().unwrap().contains(why), "{body}");
    }

    // Mode "none": nothing, until "all" again.
    let ops = format!("http://{}", Cluster::node_http(&cluster.nodes[0]));
    let suppressed = || async {
        harness::metrics::sum(
            &ops,
            "turbochat_push_suppressed_total",
            "reason=\"mode_none\"",
        )
        .await
    };
    let before = suppressed().await;
    set_settings(&api, &bob, json!({"mode": "none"})).await;
    let unheard = alice_ws.send_message(&conversation, "m7", "Anyone?").await;
    harness::eventually("the push of m7 suppressed", T, || async {
        (suppressed().await > before).then_some(())
    })
    .await;
    set_settings(&api, &bob, json!({})).await;

    // Muted: nothing from this conversation, until unmuted.
    let (status, body) = api
        .put(
            &format!("/conversations/{conversation}/mute"),
            &bob,
            json!({}),
        )
        .await;
    assert_eq!(
        (status, body),
        (200, json!({"conversation_id": conversation, "muted": true}))
    );
    let list = api.conversations(&bob).await;
    let view = list
        .iter()
        .find(|c| c["conversation_id"] == conversation)
        .unwrap();
    assert_eq!(view["muted"], true);
    let muted = alice_ws
        .send_message(&conversation, "m8", "Still there?")
        .await;
    let (status, body) = api
        .delete(&format!("/conversations/{conversation}/mute"), &bob)
        .await;
    assert_eq!(
        (status, body),
        (
            200,
            json!({"conversation_id": conversation, "muted": false})
        )
    );
    let after = alice_ws.send_message(&conversation, "m9", "Last one").await;
    let push = pushes.of("bob-phone", &after["message_id"]).await;
    assert_eq!(push["notification"]["body"], "Last one");
    let heard: Vec<Value> = pushes
        .to("bob-phone")
        .iter()
        .map(|m| m["data"]["message_id"].clone())
        .collect();
    assert!(
        !heard.contains(&unheard["message_id"]),
        "mode none: {heard:?}"
    );
    assert!(!heard.contains(&muted["message_id"]), "muted: {heard:?}");
    assert_eq!(heard.len(), 7, "one push per message heard: {heard:?}");
    // A stranger cannot mute it (nor learn that it exists).
    let (status, _) = api
        .put(
            &format!("/conversations/{conversation}/mute"),
            &valid("mallory"),
            json!({}),
        )
        .await;
    assert_eq!(status, 404);

    // Snapshots: a session opened learns who is online; a chat opened
    // learns where the other has read to.
    let mut bob_ws = WsClient::connect(&base, &bob).await.unwrap();
    let presence = bob_ws
        .expect_where("presence", T, |f| f["user_id"] == "alice")
        .await;
    assert_eq!(presence["online"], true, "alice has a session: {presence}");
    let mut alice_again = WsClient::connect(&base, &alice).await.unwrap();
    alice_again.subscribe(&conversation, None).await;
    let read = alice_again
        .expect_where("read", T, |f| f["user_id"] == "bob")
        .await;
    assert_eq!(read["seq"], second["seq"], "bob read to m2: {read}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_through_fcm_carry_names_listing_badge_and_settings() {
    pushes_carry_names_listing_badge_and_settings(TestStore::postgres().await, "fcm").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_to_the_file_sink_carry_names_listing_badge_and_settings() {
    pushes_carry_names_listing_badge_and_settings(TestStore::sqlite(), "file").await;
}
