//! Realtime events other than messages reach the SDK as typed events.

mod common;

use common::{client, cluster, subscribed, Recorder};
use turbochat_client::{Event, TypingState};

/// Bob hears about the conversation alice starts with him, her typing, and
/// her read cursor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conversation_typing_and_read_events_arrive() {
    let cluster = cluster().await;
    let url = cluster.router_url(0);
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let alice = client(&url, "alice", dir_a.path()).await;
    let bob = client(&url, "bob", dir_b.path()).await;
    let (ra, rb) = (Recorder::start(&alice), Recorder::start(&bob));
    rb.wait_for("bob connected", |e| {
        e.iter().any(|e| matches!(e, Event::Connected { .. }))
    })
    .await;

    let conversation = alice
        .create_direct("bob", Some("car-3"))
        .await
        .unwrap()
        .conversation_id;
    rb.wait_for("a conversation event", |e| {
        e.iter().any(|e| {
            matches!(e, Event::Conversation(c)
            if c.conversation_id == conversation && c.listing_id.as_deref() == Some("car-3"))
        })
    })
    .await;

    for (who, recorder) in [(&alice, &ra), (&bob, &rb)] {
        who.subscribe(conversation).await.unwrap();
        recorder
            .wait_for("subscribed", |e| subscribed(e, conversation) == 1)
            .await;
    }
    alice
        .typing(conversation, TypingState::Start)
        .await
        .unwrap();
    rb.wait_for("alice typing", |e| {
        e.iter().any(|e| {
            matches!(e, Event::Typing { user_id, state: TypingState::Start, .. } if user_id == "alice")
        })
    })
    .await;

    let id = bob.send(conversation, "yes, still for sale").await.unwrap();
    rb.wait_for("ack", |_| rb.sent_seq(&id).is_some()).await;
    ra.wait_messages(conversation, 1).await;
    alice.read(conversation, 1).await.unwrap();
    rb.wait_for("alice read it", |e| {
        e.iter()
            .any(|e| matches!(e, Event::Read { user_id, seq: 1, .. } if user_id == "alice"))
    })
    .await;

    alice.close().await;
    bob.close().await;
}
