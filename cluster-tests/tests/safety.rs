//! Trust and safety, end to end through real routers and nodes, asserted
//! from the users' side:
//!
//! - a blocked user's messages and typing never reach the blocker's session
//!   and no push reaches the blocker's device; the blocked user's send gets
//!   `blocked` and is not stored; neither can start a new direct
//!   conversation with the other; lifting the block restores it all;
//! - blocks are listed and lifted over HTTP, and a change made through one
//!   node's home is enforced by the owner on another node at once;
//! - presence is not shown between blocked users;
//! - moderation rules refuse a phone number (`content_refused`, not stored),
//!   store an e-mail address masked, and flag a listed word for review;
//! - a report keeps a copy of the reported message and the ones before it,
//!   also after the messages are deleted from the conversation;
//! - the admin API (an operator's secret only) lists and resolves reports,
//!   posts a system message, bans (the session closes, the upgrade is
//!   refused, requests are refused) and unbans, all in the audit log.
//!
//! "Nothing arrived" is never a sleep: a marker sent afterwards on the same
//! path (same router link, same session queue) arrives first, and what was
//! received before it is inspected.

use std::collections::BTreeMap;
use std::time::Duration;

use harness::admin::AdminApi;
use harness::client::{Api, WsClient};
use harness::cluster::{Cluster, Options};
use harness::fake_fcm::{self, FakeFcm};
use harness::store::TestStore;
use harness::tokens::valid;
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(20);

/// Scenarios run one at a time: each is several processes on 2 cores.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Polls `check` until it holds or `patience` ends; says whether it held.
async fn within(patience: Duration, check: impl Fn() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + patience;
    while !check() {
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

async fn create_group(api: &Api, creator: &str, others: &[&str]) -> String {
    let (status, body) = api
        .post(
            "/conversations",
            &valid(creator),
            json!({"kind": "group", "participants": others}),
        )
        .await;
    assert_eq!(status, 200, "create group: {body}");
    body["conversation_id"].as_str().expect("id").to_string()
}

fn send_frame(conversation: &str, client_msg_id: &str, body: &str) -> Value {
    json!({"type": "send", "conversation_id": conversation,
           "client_msg_id": client_msg_id, "body": body})
}

fn typing(conversation: &str) -> Value {
    json!({"type": "typing", "conversation_id": conversation, "state": "start"})
}

fn bodies(messages: &[Value]) -> Vec<&str> {
    messages
        .iter()
        .map(|m| m["body"].as_str().unwrap_or(""))
        .collect()
}

/// Alice sells a car; mallory, a buyer, turns out to be a scammer. Alice
/// blocks him. Two nodes and gossip: alice's home, mallory's home and the
/// conversation's owner need not be one node.
async fn a_blocked_user_reaches_the_blocker_through_no_channel(store: TestStore, fcm: &FakeFcm) {
    let options = Options {
        nodes: 2,
        gossip: true,
        node_env: fcm.node_env(store.dir.path()),
        ..Options::default()
    };
    let cluster = Cluster::start(store, options).await;
    let base = cluster.router_url(0);
    let api = Api::new(&base);
    let (alice_t, mallory_t, carol_t) = (valid("alice"), valid("mallory"), valid("carol"));
    let (status, _) = api
        .put(
            "/devices",
            &alice_t,
            json!({"token": "alice-phone", "platform": "android"}),
        )
        .await;
    assert_eq!(status, 200);

    let direct = api
        .create_direct(&mallory_t, "alice", Some("audi-a4"))
        .await;
    // A group of the three, and one of alice and carol for markers.
    let group = create_group(&api, "alice", &["mallory", "carol"]).await;
    let marker_room = create_group(&api, "carol", &["alice"]).await;

    let mut alice = WsClient::connect(&base, &alice_t).await.unwrap();
    let mut mallory = WsClient::connect(&base, &mallory_t).await.unwrap();
    let mut carol = WsClient::connect(&base, &carol_t).await.unwrap();
    for c in [&direct, &group, &marker_room] {
        alice.subscribe(c, None).await;
    }
    mallory.subscribe(&direct, None).await;
    mallory.subscribe(&group, None).await;

    // Before the block, everything gets through: typing and messages.
    // (An indicator may be dropped while the node first reads who blocks
    // whom: clients repeat them, and so does this test, until one shows.)
    let deadline = tokio::time::Instant::now() + T;
    let typed = loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "alice never saw mallory typing"
        );
        mallory.send(typing(&direct)).await;
        let shown = tokio::time::timeout(
            Duration::from_millis(500),
            alice.expect_where("typing", T, |f| f["user_id"] == "mallory"),
        )
        .await;
        if let Ok(frame) = shown {
            break frame;
        }
    };
    assert_eq!(typed["conversation_id"], direct.as_str());
    let hello = mallory
        .send_message(&direct, "m-1", "Is the Audi still for sale?")
        .await;
    assert_eq!(hello["type"], "ack", "{hello}");
    alice
        .expect_where("message", T, |m| m["client_msg_id"] == "m-1")
        .await;
    // His message ended his typing: the owner says so after the message.
    alice
        .expect_where("typing", T, |f| {
            f["user_id"] == "mallory" && f["state"] == "stop"
        })
        .await;
    alice.take_pending("typing");

    // Alice blocks mallory, and sees him in her list.
    let (status, body) = api
        .post("/blocks", &alice_t, json!({"user_id": "mallory"}))
        .await;
    assert_eq!(
        (status, &body),
        (200, &json!({"user_id": "mallory", "blocked": true}))
    );
    let (status, listed) = api.get("/blocks", Some(&alice_t)).await;
    assert_eq!(status, 200);
    assert_eq!(listed["blocks"][0]["user_id"], "mallory", "{listed}");
    let (status, body) = api
        .post("/blocks", &alice_t, json!({"user_id": "alice"}))
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("invalid_argument"))
    );

    // Mallory types and writes: his send is refused with `blocked`, and
    // alice gets neither the typing nor the message. The marker (carol, on
    // the same router link and alice's same session queue) comes after.
    for round in 0..3 {
        mallory.send(typing(&direct)).await;
        let id = format!("blocked-{round}");
        mallory
            .send(send_frame(
                &direct,
                &id,
                "Pay by gift card: www.safe-deal.com",
            ))
            .await;
        let refused = mallory.answer(&id, T).await;
        assert_eq!(refused["type"], "error", "{refused}");
        assert_eq!(refused["code"], "blocked", "{refused}");
        let marker = format!("marker-{round}");
        carol.send_message(&marker_room, &marker, "marker").await;
        alice
            .expect_where("message", T, |m| m["client_msg_id"] == marker.as_str())
            .await;
        let leaked: Vec<Value> = alice
            .take_pending("message")
            .into_iter()
            .chain(alice.take_pending("typing"))
            .filter(|f| f["user_id"] == "mallory" || f["sender_id"] == "mallory")
            .collect();
        assert!(leaked.is_empty(), "alice received from mallory: {leaked:?}");
    }
    // The blocker cannot write into the blocked conversation either.
    let own = alice.send_message(&direct, "a-1", "no").await;
    assert_eq!(own["code"], "blocked", "{own}");
    // Nothing of it was stored.
    let history = api.all_messages(&alice_t, &direct).await;
    assert_eq!(bodies(&history), ["Is the Audi still for sale?"]);

    // Neither can start a new direct conversation with the other.
    for (token, peer) in [(&mallory_t, "alice"), (&alice_t, "mallory")] {
        let (status, body) = api
            .post(
                "/conversations",
                token,
                json!({"kind": "direct", "peer_id": peer, "listing_id": "bmw-3"}),
            )
            .await;
        assert_eq!(
            (status, body["code"].as_str()),
            (403, Some("blocked")),
            "{body}"
        );
    }

    // Groups are shared rooms: the block does not silence mallory there.
    let in_group = mallory.send_message(&group, "g-1", "hi all").await;
    assert_eq!(in_group["type"], "ack", "{in_group}");
    alice
        .expect_where("message", T, |m| m["client_msg_id"] == "g-1")
        .await;

    // Alice goes offline: mallory's attempt makes no push; carol's does.
    alice.close().await;
    // Until the node has seen alice's session go, carol's messages reach her
    // session rather than her phone: write until one is pushed.
    let deadline = tokio::time::Instant::now() + T;
    let mut attempt = 0;
    while fcm.accepted_for("alice-phone").is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no push reached alice"
        );
        attempt += 1;
        carol
            .send_message(&marker_room, &format!("away-{attempt}"), "are you there?")
            .await;
        within(Duration::from_secs(2), || {
            !fcm.accepted_for("alice-phone").is_empty()
        })
        .await;
    }
    let before = fcm.accepted_for("alice-phone").len();
    let refused = mallory
        .send_message(&direct, "blocked-offline", "call me 0612345678")
        .await;
    assert_eq!(refused["code"], "blocked", "{refused}");
    carol
        .send_message(&marker_room, "offline-marker", "marker")
        .await;
    harness::eventually("the marker's push arrives", T, || async {
        fcm.accepted_for("alice-phone")
            .iter()
            .any(|a| a.message["notification"]["body"] == "marker")
            .then_some(())
    })
    .await;
    let pushes = fcm.accepted_for("alice-phone");
    assert!(
        pushes[before..]
            .iter()
            .all(|a| a.message["notification"]["title"] != "mallory"),
        "no push from mallory reached alice: {:?}",
        pushes.iter().map(|a| &a.message).collect::<Vec<_>>()
    );

    // Lifted: mallory writes again, and reaches alice.
    let (status, body) = api.delete("/blocks/mallory", &alice_t).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["existed"], true);
    let (_, listed) = api.get("/blocks", Some(&alice_t)).await;
    assert_eq!(listed, json!({"blocks": []}));
    let again = mallory
        .send_message(&direct, "after-unblock", "sorry, wrong number")
        .await;
    assert_eq!(again["type"], "ack", "{again}");
    let mut alice = WsClient::connect(&base, &alice_t).await.unwrap();
    alice.subscribe(&direct, Some(1)).await;
    let back = alice
        .expect_where("message", T, |m| m["client_msg_id"] == "after-unblock")
        .await;
    assert_eq!(back["sender_id"], "mallory");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_user_reaches_the_blocker_through_no_channel_postgres() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let fcm = FakeFcm::start(fake_fcm::Options::default()).await;
    a_blocked_user_reaches_the_blocker_through_no_channel(TestStore::postgres().await, &fcm).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_user_reaches_the_blocker_through_no_channel_sqlite() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let fcm = FakeFcm::start(fake_fcm::Options::default()).await;
    a_blocked_user_reaches_the_blocker_through_no_channel(TestStore::sqlite(), &fcm).await;
}

/// Presence is user-level (every contact is told), so a block hides it
/// everywhere, both ways. One node: a user's presence is published to all
/// contacts in one go, so carol seeing mallory come online means alice's
/// copy, had there been one, was already queued to her session before
/// carol's marker message.
async fn presence_is_not_shown_between_blocked_users(store: TestStore) {
    let cluster = Cluster::start(store, Options::default()).await;
    let base = cluster.router_url(0);
    let api = Api::new(&base);
    let (alice_t, carol_t) = (valid("alice"), valid("carol"));
    create_group(&api, "alice", &["mallory", "carol", "dave"]).await;
    let marker_room = create_group(&api, "carol", &["alice"]).await;
    let (status, _) = api
        .post("/blocks", &alice_t, json!({"user_id": "mallory"}))
        .await;
    assert_eq!(status, 200);
    let mut alice = WsClient::connect(&base, &alice_t).await.unwrap();
    let mut carol = WsClient::connect(&base, &carol_t).await.unwrap();
    alice.subscribe(&marker_room, None).await;

    // Dave, not blocked: alice sees him come online.
    let _dave = WsClient::connect(&base, &valid("dave")).await.unwrap();
    alice
        .expect_where("presence", T, |p| {
            p["user_id"] == "dave" && p["online"] == true
        })
        .await;

    // Mallory, blocked: carol sees him, alice does not.
    let _mallory = WsClient::connect(&base, &valid("mallory")).await.unwrap();
    carol
        .expect_where("presence", T, |p| {
            p["user_id"] == "mallory" && p["online"] == true
        })
        .await;
    carol
        .send_message(&marker_room, "presence-marker", "marker")
        .await;
    alice
        .expect_where("message", T, |m| m["client_msg_id"] == "presence-marker")
        .await;
    let leaked: Vec<Value> = alice
        .take_pending("presence")
        .into_iter()
        .filter(|p| p["user_id"] == "mallory")
        .collect();
    assert!(
        leaked.is_empty(),
        "alice saw mallory's presence: {leaked:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_is_not_shown_between_blocked_users_sqlite() {
    let _turn = ONE_AT_A_TIME.lock().await;
    presence_is_not_shown_between_blocked_users(TestStore::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_is_not_shown_between_blocked_users_postgres() {
    let _turn = ONE_AT_A_TIME.lock().await;
    presence_is_not_shown_between_blocked_users(TestStore::postgres().await).await;
}

/// The operator's rules: phone numbers refused, e-mail addresses masked,
/// "western union" flagged for review.
const RULES: &str = r#"[{name="no-phone", detect="phone", action="refuse", message="For your safety, phone numbers cannot be shared"}, {name="no-email", detect="email", action="mask", mask="[e-mail hidden]"}, {name="payment-scam", detect="words", action="flag", words=["western union", "gift card"]}]"#;

async fn moderation_refuses_masks_and_flags(store: TestStore) {
    let options = Options {
        node_env: env(&[("TURBOCHAT_MODERATION__RULES", RULES)]),
        ..Options::default()
    };
    let cluster = Cluster::start(store, options).await;
    let base = cluster.router_url(0);
    let api = Api::new(&base);
    let (bob_t, alice_t) = (valid("bob"), valid("alice"));
    let direct = api.create_direct(&bob_t, "alice", Some("golf-7")).await;
    let mut bob = WsClient::connect(&base, &bob_t).await.unwrap();
    let mut alice = WsClient::connect(&base, &alice_t).await.unwrap();
    alice.subscribe(&direct, None).await;

    let refused = bob
        .send_message(&direct, "phone", "call me on +33 6 12 34 56 78")
        .await;
    assert_eq!(refused["type"], "error", "{refused}");
    assert_eq!(refused["code"], "content_refused");
    assert_eq!(
        refused["message"],
        "For your safety, phone numbers cannot be shared"
    );

    let masked = bob
        .send_message(&direct, "email", "write to bob.seller@example.com instead")
        .await;
    assert_eq!(masked["type"], "ack", "{masked}");
    let live = alice
        .expect_where("message", T, |m| m["client_msg_id"] == "email")
        .await;
    assert_eq!(live["body"], "write to [e-mail hidden] instead");

    let flagged = bob
        .send_message(&direct, "scam", "I only take Western Union")
        .await;
    assert_eq!(flagged["type"], "ack", "{flagged}");
    let live = alice
        .expect_where("message", T, |m| m["client_msg_id"] == "scam")
        .await;
    assert_eq!(live["body"], "I only take Western Union");

    // History holds the masked text and the flagged one, never the refused one.
    let history = api.all_messages(&alice_t, &direct).await;
    assert_eq!(
        bodies(&history),
        [
            "write to [e-mail hidden] instead",
            "I only take Western Union"
        ]
    );
    // The flag is a report for review, opened by the rules.
    let flags = harness::eventually("the flag is stored", T, || {
        let store = &cluster.store;
        async move {
            let found = store
                .rows("SELECT reporter_id, reported_user_id, reason, note, evidence FROM reports")
                .await;
            (!found.is_empty()).then_some(found)
        }
    })
    .await;
    assert_eq!(flags.len(), 1, "{flags:?}");
    assert_eq!(
        flags[0][..4],
        [
            "system:moderation",
            "bob",
            "moderation",
            "rules: payment-scam"
        ]
    );
    let evidence: Value = serde_json::from_str(&flags[0][4]).unwrap();
    assert_eq!(evidence[0]["client_msg_id"], "scam");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moderation_refuses_masks_and_flags_postgres() {
    let _turn = ONE_AT_A_TIME.lock().await;
    moderation_refuses_masks_and_flags(TestStore::postgres().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moderation_refuses_masks_and_flags_sqlite() {
    let _turn = ONE_AT_A_TIME.lock().await;
    moderation_refuses_masks_and_flags(TestStore::sqlite()).await;
}

async fn a_report_keeps_the_message_after_it_is_deleted(store: TestStore) {
    let cluster = Cluster::start(store, Options::default()).await;
    let base = cluster.router_url(0);
    let api = Api::new(&base);
    let (alice_t, mallory_t) = (valid("alice"), valid("mallory"));
    let direct = api.create_direct(&mallory_t, "alice", Some("clio-4")).await;
    let mut mallory = WsClient::connect(&base, &mallory_t).await.unwrap();
    for i in 1..=7 {
        let ack = mallory
            .send_message(&direct, &format!("m-{i}"), &format!("message {i}"))
            .await;
        assert_eq!(ack["seq"], i, "{ack}");
    }

    // Bad reports are refused with the usual codes.
    for (body, code) in [
        (
            json!({"conversation_id": direct, "seq": 7, "reason": "nope"}),
            "invalid_argument",
        ),
        (
            json!({"conversation_id": direct, "seq": 99, "reason": "scam"}),
            "not_found",
        ),
        (json!({"reason": "scam"}), "invalid_argument"),
        (
            json!({"user_id": "alice", "reason": "spam"}),
            "invalid_argument",
        ),
    ] {
        let (_, answer) = api.post("/reports", &alice_t, body.clone()).await;
        assert_eq!(answer["code"], code, "{body} -> {answer}");
    }
    let (status, answer) = api
        .post(
            "/reports",
            &valid("eve"),
            json!({"conversation_id": direct, "seq": 7, "reason": "scam"}),
        )
        .await;
    assert_eq!((status, answer["code"].as_str()), (404, Some("not_found")));

    let (status, filed) = api
        .post(
            "/reports",
            &alice_t,
            json!({"conversation_id": direct, "seq": 7, "reason": "scam",
                   "note": "asks for a deposit by wire"}),
        )
        .await;
    assert_eq!(status, 200, "{filed}");
    assert_eq!(filed["reported_user_id"], "mallory");
    assert_eq!(filed["evidence_messages"], 6, "the message and 5 before it");
    let id = filed["report_id"].as_i64().unwrap();

    // A report about the user, too.
    let (status, about_user) = api
        .post(
            "/reports",
            &alice_t,
            json!({"user_id": "mallory", "conversation_id": direct, "reason": "harassment"}),
        )
        .await;
    assert_eq!(status, 200, "{about_user}");
    assert_eq!(about_user["evidence_messages"], 7);

    // The messages go (as an erasure or a retention purge would take them).
    cluster
        .store
        .execute(&format!(
            "DELETE FROM messages WHERE conversation_id = '{direct}'"
        ))
        .await;
    assert!(api.all_messages(&alice_t, &direct).await.is_empty());
    let kept = cluster
        .store
        .rows(&format!(
            "SELECT reason, note, evidence FROM reports WHERE id = {id}"
        ))
        .await;
    assert_eq!(kept[0][..2], ["scam", "asks for a deposit by wire"]);
    let evidence: Value = serde_json::from_str(&kept[0][2]).unwrap();
    let evidence = evidence.as_array().unwrap();
    assert_eq!(
        bodies(evidence),
        [
            "message 2",
            "message 3",
            "message 4",
            "message 5",
            "message 6",
            "message 7"
        ]
    );
    assert_eq!(evidence[5]["seq"], 7);
    assert_eq!(evidence[5]["sender_id"], "mallory");

    // Reports (and blocks) are rate-limited per user: 10 a minute, burst 10.
    let mut limited = None;
    for _ in 0..11 {
        let (status, body) = api
            .post(
                "/reports",
                &alice_t,
                json!({"user_id": "mallory", "reason": "spam"}),
            )
            .await;
        if status == 429 {
            limited = Some(body);
            break;
        }
    }
    let limited = limited.expect("a burst of reports is cut");
    assert_eq!(limited["code"], "rate_limited");
    assert!(limited["retry_after_ms"].as_u64().unwrap() > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_keeps_the_message_after_it_is_deleted_postgres() {
    let _turn = ONE_AT_A_TIME.lock().await;
    a_report_keeps_the_message_after_it_is_deleted(TestStore::postgres().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_keeps_the_message_after_it_is_deleted_sqlite() {
    let _turn = ONE_AT_A_TIME.lock().await;
    a_report_keeps_the_message_after_it_is_deleted(TestStore::sqlite()).await;
}

/// An operator reviews a report, posts "sold" into the conversation (and
/// again through the other node: idempotent), bans
/// the scammer (his session closes, he cannot come back) and lifts the ban;
/// the audit log says who did what.
async fn the_admin_api_reviews_bans_and_posts_all_audited(store: TestStore) {
    let operators = harness::admin::operators();
    // Two nodes: the ban is made on one and enforced by both, and one of
    // the two calls for the system message goes to the owner through the
    // other (whichever owns the conversation).
    let options = Options {
        nodes: 2,
        gossip: true,
        node_env: env(&[("TURBOCHAT_ADMIN__OPERATORS", &operators)]),
        router_env: env(&[("TURBOCHAT_ROUTER__BAN_POLL", "100ms")]),
        ..Options::default()
    };
    let mut cluster = Cluster::start(store, options).await;
    // A router that reads the ban list once, at start: its sessions stay
    // open after a ban, which shows the nodes refusing on their own.
    let slow = cluster.add_router_with(2, env(&[("TURBOCHAT_ROUTER__BAN_POLL", "1h")]));
    cluster.wait_ready().await;
    let slow_base = cluster.router_url(slow);
    let base = cluster.router_url(0);
    let api = Api::new(&base);
    let admin = AdminApi::new(&cluster, 0);
    let (alice_t, mallory_t) = (valid("alice"), valid("mallory"));

    // Only an operator's secret opens the API: not none, not a wrong one,
    // not a user's token.
    for secret in [None, Some("wrong"), Some(alice_t.as_str())] {
        let (status, body) = admin
            .call(reqwest::Method::GET, "/admin/reports", secret, None)
            .await;
        assert_eq!((status, body["code"].as_str()), (401, Some("unauthorized")));
    }

    let direct = api.create_direct(&mallory_t, "alice", Some("passat")).await;
    let mut alice = WsClient::connect(&base, &alice_t).await.unwrap();
    let mut mallory = WsClient::connect(&base, &mallory_t).await.unwrap();
    let mut mallory_elsewhere = WsClient::connect(&slow_base, &mallory_t).await.unwrap();
    alice.subscribe(&direct, None).await;
    let ack = mallory
        .send_message(&direct, "m-1", "send the deposit first")
        .await;
    assert_eq!(ack["type"], "ack");
    let (status, filed) = api
        .post(
            "/reports",
            &alice_t,
            json!({"conversation_id": direct, "seq": 1, "reason": "scam"}),
        )
        .await;
    assert_eq!(status, 200, "{filed}");
    let report_id = filed["report_id"].as_i64().unwrap();

    // Review: the open report with its evidence, then resolved (once).
    let (status, open) = admin.get("/admin/reports?status=open").await;
    assert_eq!(status, 200, "{open}");
    let report = &open["reports"][0];
    assert_eq!(report["report_id"], report_id);
    assert_eq!(report["reported_user_id"], "mallory");
    assert_eq!(report["evidence"][0]["body"], "send the deposit first");
    let path = format!("/admin/reports/{report_id}/resolve");
    let (status, resolved) = admin
        .post(&path, json!({"resolution": "scam confirmed; banned"}))
        .await;
    assert_eq!(status, 200, "{resolved}");
    let (status, _) = admin.post(&path, json!({"resolution": "again"})).await;
    assert_eq!(status, 404);
    let (_, closed) = admin.get("/admin/reports?status=resolved").await;
    assert_eq!(closed["reports"][0]["resolved_by"], "ops-ana");

    // "Sold": a system message every participant's session gets.
    let (status, ack) = admin
        .post(
            &format!("/admin/conversations/{direct}/messages"),
            json!({"body": "This car has been sold", "client_msg_id": "sold-1"}),
        )
        .await;
    assert_eq!(status, 200, "{ack}");
    assert_eq!(ack["seq"], 2);
    let live = alice
        .expect_where("message", T, |m| m["client_msg_id"] == "sold-1")
        .await;
    assert_eq!(
        (live["kind"].as_str(), live["sender_id"].as_str()),
        (Some("system"), Some("system"))
    );
    let (status, again) = AdminApi::new(&cluster, 1)
        .post(
            &format!("/admin/conversations/{direct}/messages"),
            json!({"body": "This car has been sold", "client_msg_id": "sold-1"}),
        )
        .await;
    assert_eq!(
        (status, &again["seq"]),
        (200, &json!(2)),
        "idempotent: {again}"
    );
    let (status, _) = admin
        .post(
            &format!("/admin/conversations/{}/messages", uuid::Uuid::new_v4()),
            json!({"body": "x"}),
        )
        .await;
    assert_eq!(status, 404);

    // Ban: mallory's live session is closed, he cannot reconnect, and
    // the nodes refuse his requests.
    let (status, banned) = admin
        .post(
            "/admin/bans",
            json!({"user_id": "mallory", "reason": "deposit scam"}),
        )
        .await;
    assert_eq!(status, 200, "{banned}");
    let deadline = tokio::time::Instant::now() + T;
    let close = loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match mallory.next(left).await {
            Some(harness::client::Event::Closed(code)) => break code,
            Some(harness::client::Event::Frame(_)) => continue,
            None => panic!("mallory's session was not closed"),
        }
    };
    assert_eq!(close, Some(1008));
    // Where the session is still open, every request is refused by the node.
    let refused = mallory_elsewhere
        .send_message(&direct, "after-ban", "one more try")
        .await;
    assert_eq!(refused["code"], "banned", "{refused}");
    mallory_elsewhere
        .send(json!({"type": "subscribe", "conversation_id": direct}))
        .await;
    let refused = mallory_elsewhere.expect("error", T).await;
    assert_eq!(refused["code"], "banned", "{refused}");
    match WsClient::connect(&base, &mallory_t).await {
        Err(harness::client::Refused::Status(403)) => {}
        other => panic!(
            "a banned user's upgrade must be refused with 403: {:?}",
            other.err()
        ),
    }
    let (status, body) = api
        .post(
            "/conversations",
            &mallory_t,
            json!({"kind": "direct", "peer_id": "bob"}),
        )
        .await;
    assert_eq!((status, body["code"].as_str()), (403, Some("banned")));
    let (_, bans) = admin.get("/admin/bans").await;
    assert_eq!(bans["bans"][0]["user_id"], "mallory");
    assert_eq!(bans["bans"][0]["banned_by"], "ops-ana");

    // Lifted: he is back.
    let (status, _) = admin.delete("/admin/bans/mallory").await;
    assert_eq!(status, 200);
    let mallory = harness::eventually("mallory may connect again", T, || {
        let (base, token) = (base.clone(), mallory_t.clone());
        async move { WsClient::connect(&base, &token).await.ok() }
    })
    .await;
    let mut mallory = mallory;
    // Every node re-reads the list at once when it changes here; write
    // until the owner has (a refused send is answered `banned`).
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let id = uuid::Uuid::new_v4().to_string();
        let answer = mallory.send_message(&direct, &id, "sorry").await;
        if answer["type"] == "ack" {
            break;
        }
        assert_eq!(answer["code"], "banned", "{answer}");
        assert!(tokio::time::Instant::now() < deadline, "still banned");
    }

    // The audit log, newest first: who did what, on what.
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
    let ana = |action: &str, target: &str| {
        (
            "ops-ana".to_string(),
            action.to_string(),
            target.to_string(),
        )
    };
    assert_eq!(
        entries,
        [
            ana("unban", "mallory"),
            ana("ban", "mallory"),
            ana("system_message", &direct),
            ana("system_message", &direct),
            ana("resolve_report", &format!("report:{report_id}")),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_reviews_bans_and_posts_all_audited_postgres() {
    let _turn = ONE_AT_A_TIME.lock().await;
    the_admin_api_reviews_bans_and_posts_all_audited(TestStore::postgres().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_reviews_bans_and_posts_all_audited_sqlite() {
    let _turn = ONE_AT_A_TIME.lock().await;
    the_admin_api_reviews_bans_and_posts_all_audited(TestStore::sqlite()).await;
}
