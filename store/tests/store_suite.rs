//! The store suite: every test here runs against SQLite (a fresh file in a
//! temporary directory) and against PostgreSQL (a fresh database
//! `tc_test_<random>` on the server at `TURBOCHAT_TEST_POSTGRES_URL`, default
//! `postgres://postgres@127.0.0.1:5432/postgres`, dropped afterwards).
//!
//! PostgreSQL tests are never skipped: without a server they fail and say so.
//!
//! Each test is one `async fn(TestDb)`; `store_suite!` instantiates it once
//! per backend (`sqlite::name`, `postgres::name`). SQLite-only crash tests
//! are at the end.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use sqlx::{Connection, PgPool, SqlitePool};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use turbochat_protocol::http::{ConversationKind, ConversationView, MessageView};
use turbochat_protocol::ids::{ConversationId, Seq, UserId};
use turbochat_protocol::MessageKind;
use turbochat_store::{
    AppendError, AppendResult, Appended, AuditEntry, Ban, Block, ConversationBatch,
    ConversationState, Device, NewConversation, NewMessage, NewReport, PushJob, Report, Store,
    StoreError, Writer, WriterConfig,
};
use uuid::Uuid;

const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

// ---------------------------------------------------------------- harness

/// A fresh, migrated database and a store on it, plus a raw pool for
/// looking at tables the `Store` trait does not read (the outbox).
struct TestDb {
    url: String,
    store: Arc<dyn Store>,
    raw: Raw,
    _dir: Option<tempfile::TempDir>,
}

enum Raw {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// One push job as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
struct OutboxRow {
    message_id: Uuid,
    conversation_id: Uuid,
    seq: i64,
    user_id: String,
    status: String,
    attempts: i64,
    next_attempt_at: i64,
    created_at: i64,
}

impl TestDb {
    /// Every push job, in insertion order.
    async fn outbox(&self) -> Vec<OutboxRow> {
        const SQL: &str = "SELECT CAST(message_id AS TEXT), CAST(conversation_id AS TEXT), seq, \
             user_id, status, CAST(attempts AS BIGINT), next_attempt_at, created_at \
             FROM push_outbox ORDER BY id";
        type Row = (String, String, i64, String, String, i64, i64, i64);
        let rows: Vec<Row> = match &self.raw {
            Raw::Sqlite(pool) => sqlx::query_as(SQL).fetch_all(pool).await,
            Raw::Postgres(pool) => sqlx::query_as(SQL).fetch_all(pool).await,
        }
        .expect("read push_outbox");
        rows.into_iter()
            .map(|r| OutboxRow {
                message_id: r.0.parse().expect("uuid"),
                conversation_id: r.1.parse().expect("uuid"),
                seq: r.2,
                user_id: r.3,
                status: r.4,
                attempts: r.5,
                next_attempt_at: r.6,
                created_at: r.7,
            })
            .collect()
    }

    /// A push job's `(status, attempts, last_error, done_tokens)`.
    async fn push_job(&self, id: i64) -> (String, i64, Option<String>, String) {
        const SQL: &str = "SELECT status, CAST(attempts AS BIGINT), last_error, done_tokens \
             FROM push_outbox WHERE id = $1";
        match &self.raw {
            Raw::Sqlite(pool) => sqlx::query_as(SQL).bind(id).fetch_one(pool).await,
            Raw::Postgres(pool) => sqlx::query_as(SQL).bind(id).fetch_one(pool).await,
        }
        .expect("read push job")
    }

    /// Rows in `messages`.
    async fn message_rows(&self) -> i64 {
        const SQL: &str = "SELECT COUNT(*) FROM messages";
        match &self.raw {
            Raw::Sqlite(pool) => sqlx::query_scalar(SQL).fetch_one(pool).await,
            Raw::Postgres(pool) => sqlx::query_scalar(SQL).fetch_one(pool).await,
        }
        .expect("count messages")
    }

    /// A second, independent store on the same database (another node).
    async fn open_again(&self) -> Arc<dyn Store> {
        turbochat_store::open(&self.url, 2)
            .await
            .expect("open the same database again")
    }
}

async fn run_sqlite<F, Fut>(test: F)
where
    F: FnOnce(TestDb) -> Fut,
    Fut: Future<Output = ()>,
{
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite:{}", dir.path().join("store.db").display());
    let store = turbochat_store::open(&url, 4)
        .await
        .expect("open sqlite store");
    let raw = SqlitePool::connect(&url).await.expect("raw sqlite pool");
    test(TestDb {
        url,
        store,
        raw: Raw::Sqlite(raw),
        _dir: Some(dir),
    })
    .await;
}

fn postgres_base_url() -> String {
    std::env::var("TURBOCHAT_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_POSTGRES_URL.into())
}

/// `base` with its database name replaced by `database`.
fn with_database(base: &str, database: &str) -> String {
    let (without_query, query) = match base.split_once('?') {
        Some((url, query)) => (url, Some(query)),
        None => (base, None),
    };
    let authority_start = without_query.find("://").map_or(0, |i| i + 3);
    let path_start = without_query[authority_start..]
        .find('/')
        .map_or(without_query.len(), |i| authority_start + i);
    let mut url = format!("{}/{database}", &without_query[..path_start]);
    if let Some(query) = query {
        url.push('?');
        url.push_str(query);
    }
    url
}

async fn admin_connection(base: &str) -> sqlx::PgConnection {
    sqlx::PgConnection::connect(base)
        .await
        .unwrap_or_else(|err| {
            panic!(
                "PostgreSQL is required for the store suite and is not reachable at {base} \
             (set TURBOCHAT_TEST_POSTGRES_URL): {err}"
            )
        })
}

async fn run_postgres<F, Fut>(test: F)
where
    F: FnOnce(TestDb) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let base = postgres_base_url();
    let name = format!("tc_test_{}", Uuid::new_v4().simple());
    let mut admin = admin_connection(&base).await;
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .unwrap_or_else(|err| panic!("cannot create test database {name}: {err}"));
    admin.close().await.ok();

    let url = with_database(&base, &name);
    let outcome = async {
        let store = turbochat_store::open(&url, 4).await?;
        let raw = PgPool::connect(&url).await?;
        Ok::<_, anyhow::Error>(TestDb {
            url: url.clone(),
            store,
            raw: Raw::Postgres(raw),
            _dir: None,
        })
    }
    .await;
    // Run the test as its own task so a failing assertion still lets us drop
    // the database below.
    let result = match outcome {
        Ok(db) => tokio::spawn(test(db))
            .await
            .map_err(|err| Some(err.into_panic())),
        Err(err) => {
            eprintln!("cannot open the postgres store on {url}: {err:#}");
            Err(None)
        }
    };

    let mut admin = admin_connection(&base).await;
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&mut admin)
        .await
        .unwrap_or_else(|err| panic!("cannot drop test database {name}: {err}"));
    match result {
        Ok(()) => {}
        Err(Some(panic)) => std::panic::resume_unwind(panic),
        Err(None) => panic!("cannot open the postgres store on {url}"),
    }
}

/// Instantiates every listed `async fn(TestDb)` once per backend.
macro_rules! store_suite {
    ($($test:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::run_sqlite(super::$test).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::run_postgres(super::$test).await;
                }
            )*
        }
    };
}

store_suite!(
    migrations_are_idempotent,
    create_conversation_is_idempotent,
    append_assigns_contiguous_seqs,
    empty_appends_write_nothing,
    duplicate_across_batches_keeps_first_seq_and_renumbers,
    duplicate_within_a_batch_is_a_duplicate_of_the_first,
    duplicate_of_a_duplicate_in_one_batch,
    seq_taken_fails_only_that_batch,
    concurrent_writers_never_share_a_seq,
    unknown_conversation_fails_only_that_batch,
    outbox_rows_are_written_with_messages_not_duplicates,
    history_pages_backwards,
    messages_after_pages_forwards,
    list_conversations_orders_and_counts,
    unread_count_is_capped,
    mark_read_moves_forward_only,
    devices_upsert_move_and_delete,
    device_tokens_of_every_documented_length_are_kept,
    device_tokens_are_pruned_whoever_has_them,
    media_uploads_are_recorded_per_conversation,
    data_the_store_cannot_hold_fails_only_its_batch,
    push_jobs_are_claimed_once_and_finished_with_the_claim,
    push_jobs_are_counted_by_state,
    push_job_lease_expiry_lets_another_worker_take_it,
    push_job_reschedule_keeps_done_tokens,
    concurrent_claims_never_share_a_push_job,
    finished_push_jobs_are_purged,
    contacts_are_everyone_sharing_a_conversation_and_no_block,
    blocks_are_kept_listed_and_lifted,
    reports_keep_their_evidence_and_are_resolved_once_with_their_audit,
    bans_and_their_audit_go_together,
    a_tombstone_replaces_a_message_and_drops_its_pending_pushes,
    members_join_leave_and_archive,
    profiles_settings_mute_and_the_push_context,
    retention_empties_old_messages_in_bounded_batches_keeping_their_seqs,
    a_user_is_exported_then_erased,
    writer_group_commits_concurrent_appends,
    writer_splits_rounds_at_max_batch_messages,
    writer_gathers_a_small_round_when_asked,
    writer_drains_on_shutdown,
    writer_reports_failed_commit_to_every_requester,
);

// ---------------------------------------------------------------- helpers

const ALICE: &str = "alice";
const BOB: &str = "bob";
const CAROL: &str = "carol";

fn message(sender: &str, client_msg_id: &str, created_at: i64) -> NewMessage {
    NewMessage {
        message_id: Uuid::now_v7(),
        sender_id: sender.into(),
        client_msg_id: client_msg_id.into(),
        kind: MessageKind::Text,
        body: format!("{sender} says {client_msg_id}"),
        media_key: None,
        created_at,
        push_to: Vec::new(),
    }
}

fn batch(id: ConversationId, first_seq: Seq, messages: Vec<NewMessage>) -> ConversationBatch {
    ConversationBatch {
        conversation_id: id,
        first_seq,
        messages,
    }
}

async fn group(store: &dyn Store, participants: &[&str], created_at: i64) -> ConversationId {
    let id = Uuid::new_v4();
    store
        .create_conversation(&NewConversation {
            conversation_id: id,
            kind: ConversationKind::Group,
            listing_id: None,
            title: Some("a group".into()),
            participants: participants.iter().map(|p| p.to_string()).collect(),
            created_at,
        })
        .await
        .expect("create conversation");
    id
}

/// Appends one batch that must succeed.
async fn append_ok(store: &dyn Store, batch: ConversationBatch) -> Vec<Appended> {
    let mut results = store.append(&[batch]).await.expect("append");
    assert_eq!(results.len(), 1);
    results.remove(0).expect("batch appended")
}

fn inserted(appended: &Appended) -> &MessageView {
    match appended {
        Appended::Inserted(m) => m,
        Appended::Duplicate(m) => panic!("expected inserted, got duplicate seq {}", m.seq),
    }
}

fn duplicate(appended: &Appended) -> &MessageView {
    match appended {
        Appended::Duplicate(m) => m,
        Appended::Inserted(m) => panic!("expected duplicate, got inserted seq {}", m.seq),
    }
}

fn seqs(messages: &[MessageView]) -> Vec<Seq> {
    messages.iter().map(|m| m.seq).collect()
}

/// Appends `count` messages from `sender`, one batch, from `first_seq`.
async fn fill(store: &dyn Store, id: ConversationId, sender: &str, first_seq: Seq, count: u64) {
    let messages = (0..count)
        .map(|i| message(sender, &format!("fill-{}", first_seq + i), 1_000 + i as i64))
        .collect();
    let appended = append_ok(store, batch(id, first_seq, messages)).await;
    assert_eq!(appended.len() as u64, count);
}

/// Polls `condition` until it holds; panics after 10 s.
async fn eventually(what: &str, condition: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

// ---------------------------------------------------------------- tests

async fn migrations_are_idempotent(db: TestDb) {
    db.store.migrate().await.expect("migrate again");
    let again = db.open_again().await;
    again.migrate().await.expect("migrate a third time");
    let id = group(again.as_ref(), &[ALICE, BOB], 1).await;
    let state = db.store.load_conversation(id).await.unwrap().unwrap();
    assert_eq!(state.participants.len(), 2);
}

async fn create_conversation_is_idempotent(db: TestDb) {
    let store = db.store.as_ref();
    let id = Uuid::new_v4();
    let new = NewConversation {
        conversation_id: id,
        kind: ConversationKind::Direct,
        listing_id: Some("car-42".into()),
        title: None,
        participants: vec![BOB.into(), ALICE.into()],
        created_at: 1_700_000_000_000,
    };
    let created = store.create_conversation(&new).await.unwrap();
    let expected = ConversationState {
        conversation_id: id,
        kind: ConversationKind::Direct,
        listing_id: Some("car-42".into()),
        title: None,
        listing: None,
        created_at: 1_700_000_000_000,
        participants: vec![
            turbochat_store::Participant {
                user_id: BOB.into(),
                role: "owner".into(),
                last_read_seq: 0,
                muted: false,
            },
            turbochat_store::Participant {
                user_id: ALICE.into(),
                role: "member".into(),
                last_read_seq: 0,
                muted: false,
            },
        ],
        last_seq: 0,
    };
    assert_eq!(created, expected);

    // The same id again, with other details: the stored one wins, unchanged.
    let mut other = new.clone();
    other.kind = ConversationKind::Group;
    other.title = Some("ignored".into());
    other.participants = vec![CAROL.into(), ALICE.into(), BOB.into()];
    other.created_at = 5;
    assert_eq!(store.create_conversation(&other).await.unwrap(), expected);
    assert_eq!(store.load_conversation(id).await.unwrap(), Some(expected));

    assert_eq!(store.load_conversation(Uuid::new_v4()).await.unwrap(), None);

    // A participant listed twice joins once.
    let twice = NewConversation {
        conversation_id: Uuid::new_v4(),
        kind: ConversationKind::Group,
        listing_id: None,
        title: None,
        participants: vec![ALICE.into(), BOB.into(), ALICE.into()],
        created_at: 1,
    };
    let state = store.create_conversation(&twice).await.unwrap();
    let users: Vec<_> = state
        .participants
        .iter()
        .map(|p| p.user_id.as_str())
        .collect();
    assert_eq!(users, [ALICE, BOB]);
}

async fn append_assigns_contiguous_seqs(db: TestDb) {
    let store = db.store.as_ref();
    let id = group(store, &[ALICE, BOB], 1).await;
    let first = vec![
        message(ALICE, "a1", 10),
        message(BOB, "b1", 11),
        message(ALICE, "a2", 12),
    ];
    let appended = append_ok(store, batch(id, 1, first.clone())).await;
    let views: Vec<_> = appended.iter().map(inserted).collect();
    assert_eq!(views.iter().map(|m| m.seq).collect::<Vec<_>>(), [1, 2, 3]);
    for (view, sent) in views.iter().zip(&first) {
        assert_eq!(view.conversation_id, id);
        assert_eq!(view.message_id, sent.message_id);
        assert_eq!(view.sender_id, sent.sender_id);
        assert_eq!(view.client_msg_id, sent.client_msg_id);
        assert_eq!(view.body, sent.body);
        assert_eq!(view.created_at, sent.created_at);
    }

    let mut media = message(BOB, "b2", 13);
    media.kind = MessageKind::Media;
    media.media_key = Some("media/abc.jpg".into());
    let appended = append_ok(store, batch(id, 4, vec![media])).await;
    assert_eq!(inserted(&appended[0]).seq, 4);

    let stored = store.messages_after(id, 0, 100).await.unwrap();
    assert_eq!(seqs(&stored), [1, 2, 3, 4]);
    assert_eq!(
        stored[..3],
        views.into_iter().cloned().collect::<Vec<_>>()[..]
    );
    assert_eq!(stored[3].kind, MessageKind::Media);
    assert_eq!(stored[3].media_key.as_deref(), Some("media/abc.jpg"));
    assert_eq!(
        store.load_conversation(id).await.unwrap().unwrap().last_seq,
        4
    );
}

async fn empty_appends_write_nothing(db: TestDb) {
    let store = db.store.as_ref();
    assert!(store.append(&[]).await.unwrap().is_empty());
    let id = group(store, &[ALICE, BOB], 1).await;
    assert_eq!(append_ok(store, batch(id, 1, Vec::new())).await, Vec::new());
    assert_eq!(db.message_rows().await, 0);
}

async fn duplicate_across_batches_keeps_first_seq_and_renumbers(db: TestDb) {
    let store = db.store.as_ref();
    let id = group(store, &[ALICE, BOB], 1).await;
    let original = append_ok(
        store,
        batch(
            id,
            1,
            vec![message(ALICE, "a1", 10), message(BOB, "b1", 11)],
        ),
    )
    .await;
    let b1 = inserted(&original[1]).clone();

    // A retry of b1 (new server id, as the owner would mint) ahead of new messages.
    let mut retry = message(BOB, "b1", 20);
    retry.body = "retried body is ignored".into();
    let appended = append_ok(
        store,
        batch(
            id,
            3,
            vec![retry, message(ALICE, "a2", 21), message(BOB, "b2", 22)],
        ),
    )
    .await;
    assert_eq!(
        duplicate(&appended[0]),
        &b1,
        "the stored message, unchanged"
    );
    assert_eq!(inserted(&appended[1]).seq, 3);
    assert_eq!(inserted(&appended[2]).seq, 4);

    // A duplicate in the middle: later messages take the seq it did not use.
    let appended = append_ok(
        store,
        batch(
            id,
            5,
            vec![
                message(ALICE, "a3", 30),
                message(ALICE, "a1", 31),
                message(BOB, "b3", 32),
            ],
        ),
    )
    .await;
    assert_eq!(inserted(&appended[0]).seq, 5);
    assert_eq!(duplicate(&appended[1]).seq, 1);
    assert_eq!(inserted(&appended[2]).seq, 6);

    let stored = store.messages_after(id, 0, 100).await.unwrap();
    assert_eq!(seqs(&stored), [1, 2, 3, 4, 5, 6], "gapless, no second row");
    assert_eq!(db.message_rows().await, 6);
    // The same client_msg_id from another sender is another message.
    let appended = append_ok(store, batch(id, 7, vec![message(BOB, "a1", 40)])).await;
    assert_eq!(inserted(&appended[0]).seq, 7);
}

async fn duplicate_within_a_batch_is_a_duplicate_of_the_first(db: TestDb) {
    let store = db.store.as_ref();
    let id = group(store, &[ALICE, BOB], 1).await;
    let first = message(ALICE, "a1", 10);
    let mut again = message(ALICE, "a1", 11);
    again.body = "second copy".into();
    let appended = append_ok(
        store,
        batch(id, 1, vec![first.clone(), again, message(BOB, "b1", 12)]),
    )
    .await;
    let stored_first = inserted(&appended[0]).clone();
    assert_eq!(stored_first.seq, 1);
    assert_eq!(stored_first.message_id, first.message_id);
    assert_eq!(duplicate(&appended[1]), &stored_first);
    assert_eq!(inserted(&appended[2]).seq, 2);
    assert_eq!(db.message_rows().await, 2);
}

async fn duplicate_of_a_duplicate_in_one_batch(db: TestDb) {
    let store = db.store.as_ref();
    let id = group(store, &[ALICE, BOB], 1).await;
    let stored = append_ok(store, batch(id, 1, vec![message(ALICE, "a1", 10)])).await;
    let a1 = inserted(&stored[0]).clone();
    let appended = append_ok(
        store,
        batch(
            id,
            2,
            vec![
                message(ALICE, "a1", 20),
                message(BOB, "b1", 21),
                message(ALICE, "a1", 22),
            ],
        ),
    )
    .await;
    assert_eq!(duplicate(&appended[0]), &a1);
    assert_eq!(inserted(&appended[1]).seq, 2);
    assert_eq!(duplicate(&appended[2]), &a1);
    assert_eq!(db.message_rows().await, 2);
}

async fn seq_taken_fails_only_that_batch(db: TestDb) {
    let store = db.store.as_ref();
    let contested = group(store, &[ALICE, BOB], 1).await;
    let calm = group(store, &[ALICE, CAROL], 1).await;
    // Another writer (another node) already stored seqs 1 and 2.
    let other_node = db.open_again().await;
    fill(other_node.as_ref(), contested, BOB, 1, 2).await;

    let mut pushed = message(ALICE, "stale-1", 50);
    pushed.push_to = vec![BOB.into()];
    let results = store
        .append(&[
            batch(contested, 2, vec![pushed, message(ALICE, "stale-2", 51)]),
            batch(
                calm,
                1,
                vec![message(CAROL, "c1", 52), message(ALICE, "a1", 53)],
            ),
        ])
        .await
        .expect("append");
    assert_eq!(
        results[0],
        Err(AppendError::SeqTaken {
            conversation_id: contested,
            seq: 2
        })
    );
    let calm_written = results[1].as_ref().expect("the other batch commits");
    assert_eq!(
        calm_written
            .iter()
            .map(|a| inserted(a).seq)
            .collect::<Vec<_>>(),
        [1, 2]
    );

    let stored = store.messages_after(contested, 0, 10).await.unwrap();
    assert_eq!(seqs(&stored), [1, 2]);
    assert!(
        stored.iter().all(|m| m.sender_id == BOB),
        "nothing of the failed batch"
    );
    assert_eq!(
        seqs(&store.messages_after(calm, 0, 10).await.unwrap()),
        [1, 2]
    );
    assert!(
        db.outbox().await.is_empty(),
        "no push job for a message not written"
    );

    // Caught up, the same messages go in after the other writer's.
    let appended = append_ok(
        store,
        batch(
            contested,
            3,
            vec![message(ALICE, "stale-1", 60), message(ALICE, "stale-2", 61)],
        ),
    )
    .await;
    assert_eq!(
        appended.iter().map(|a| inserted(a).seq).collect::<Vec<_>>(),
        [3, 4]
    );

    // A batch that is a pure retry of stored messages is not fenced: it
    // writes nothing and so takes no seq.
    let appended = append_ok(
        store,
        batch(contested, 1, vec![message(ALICE, "stale-1", 70)]),
    )
    .await;
    assert_eq!(duplicate(&appended[0]).seq, 3);
}

async fn concurrent_writers_never_share_a_seq(db: TestDb) {
    let id = group(db.store.as_ref(), &[ALICE, BOB], 1).await;
    let other = db.open_again().await;
    for round in 0..10u64 {
        let seq = round + 1;
        let a = batch(id, seq, vec![message(ALICE, &format!("a{round}"), 1)]);
        let b = batch(id, seq, vec![message(BOB, &format!("b{round}"), 1)]);
        let (a, b) = ([a], [b]);
        let (ra, rb) = tokio::join!(db.store.append(&a), other.append(&b));
        let outcomes = [ra.unwrap().remove(0), rb.unwrap().remove(0)];
        let won = outcomes.iter().filter(|r| r.is_ok()).count();
        assert_eq!(
            won, 1,
            "round {round}: exactly one writer gets seq {seq}: {outcomes:?}"
        );
        for outcome in &outcomes {
            if let Err(err) = outcome {
                assert_eq!(
                    err,
                    &AppendError::SeqTaken {
                        conversation_id: id,
                        seq
                    }
                );
            }
        }
    }
    assert_eq!(
        seqs(&db.store.messages_after(id, 0, 100).await.unwrap()),
        (1..=10).collect::<Vec<_>>()
    );
}

async fn unknown_conversation_fails_only_that_batch(db: TestDb) {
    let store = db.store.as_ref();
    let known = group(store, &[ALICE, BOB], 1).await;
    let results = store
        .append(&[
            batch(Uuid::new_v4(), 1, vec![message(ALICE, "lost", 1)]),
            batch(known, 1, vec![message(ALICE, "kept", 2)]),
        ])
        .await
        .unwrap();
    assert!(
        matches!(results[0], Err(AppendError::Failed(_))),
        "{:?}",
        results[0]
    );
    assert_eq!(inserted(&results[1].as_ref().unwrap()[0]).seq, 1);
    assert_eq!(db.message_rows().await, 1);
}

async fn outbox_rows_are_written_with_messages_not_duplicates(db: TestDb) {
    let store = db.store.as_ref();
    let id = group(store, &[ALICE, BOB, CAROL], 1).await;
    let mut first = message(ALICE, "a1", 1_000);
    first.push_to = vec![BOB.into(), CAROL.into()];
    let mut quiet = message(BOB, "b1", 1_001);
    quiet.push_to = Vec::new();
    let appended = append_ok(store, batch(id, 1, vec![first.clone(), quiet])).await;
    assert_eq!(inserted(&appended[0]).seq, 1);

    let outbox = db.outbox().await;
    let expected = |message_id, seq, user: &str, at| OutboxRow {
        message_id,
        conversation_id: id,
        seq,
        user_id: user.into(),
        status: "pending".into(),
        attempts: 0,
        next_attempt_at: at,
        created_at: at,
    };
    assert_eq!(
        outbox,
        vec![
            expected(first.message_id, 1, BOB, 1_000),
            expected(first.message_id, 1, CAROL, 1_000),
        ]
    );

    // A retry of a1 with push_to writes no job; the renumbered message after
    // it gets its job with its final seq.
    let mut retry = message(ALICE, "a1", 2_000);
    retry.push_to = vec![BOB.into(), CAROL.into()];
    let mut next = message(CAROL, "c1", 2_001);
    next.push_to = vec![ALICE.into()];
    let appended = append_ok(store, batch(id, 3, vec![retry, next.clone()])).await;
    assert_eq!(duplicate(&appended[0]).seq, 1);
    assert_eq!(inserted(&appended[1]).seq, 3);
    let outbox = db.outbox().await;
    assert_eq!(outbox.len(), 3);
    assert_eq!(outbox[2], expected(next.message_id, 3, ALICE, 2_001));
}

async fn history_pages_backwards(db: TestDb) {
    let store = db.store.as_ref();
    let id = group(store, &[ALICE, BOB], 1).await;
    fill(store, id, ALICE, 1, 10).await;
    assert_eq!(
        seqs(&store.history(id, None, 4).await.unwrap()),
        [10, 9, 8, 7]
    );
    assert_eq!(
        seqs(&store.history(id, Some(7), 4).await.unwrap()),
        [6, 5, 4, 3]
    );
    assert_eq!(seqs(&store.history(id, Some(3), 4).await.unwrap()), [2, 1]);
    assert!(store.history(id, Some(1), 4).await.unwrap().is_empty());
    assert_eq!(
        seqs(&store.history(id, Some(u64::MAX), 2).await.unwrap()),
        [10, 9]
    );
    assert!(store.history(id, None, 0).await.unwrap().is_empty());
    assert!(store
        .history(Uuid::new_v4(), None, 4)
        .await
        .unwrap()
        .is_empty());
}

async fn messages_after_pages_forwards(db: TestDb) {
    let store = db.store.as_ref();
    let id = group(store, &[ALICE, BOB], 1).await;
    fill(store, id, BOB, 1, 10).await;
    assert_eq!(
        seqs(&store.messages_after(id, 0, 3).await.unwrap()),
        [1, 2, 3]
    );
    assert_eq!(
        seqs(&store.messages_after(id, 7, 10).await.unwrap()),
        [8, 9, 10]
    );
    assert!(store.messages_after(id, 10, 10).await.unwrap().is_empty());
    assert!(store
        .messages_after(id, u64::MAX, 10)
        .await
        .unwrap()
        .is_empty());
}

async fn list_conversations_orders_and_counts(db: TestDb) {
    let store = db.store.as_ref();
    let a = group(store, &[ALICE, BOB], 1_000).await;
    let b = group(store, &[BOB, ALICE, CAROL], 2_000).await;
    let c = group(store, &[CAROL, ALICE], 3_000).await;
    let not_alices = group(store, &[BOB, CAROL], 9_000).await;

    // a: last activity 5_000 (bob), b: 4_000 (alice's own), c: created 3_000.
    append_ok(
        store,
        batch(
            a,
            1,
            vec![message(ALICE, "a1", 4_500), message(BOB, "b1", 5_000)],
        ),
    )
    .await;
    append_ok(
        store,
        batch(
            b,
            1,
            vec![message(CAROL, "c1", 3_500), message(ALICE, "a1", 4_000)],
        ),
    )
    .await;
    append_ok(store, batch(not_alices, 1, vec![message(BOB, "x", 10_000)])).await;

    let list = store.list_conversations(ALICE, 50).await.unwrap();
    let order: Vec<_> = list.iter().map(|v| v.conversation_id).collect();
    assert_eq!(order, [a, b, c]);

    let view_a: &ConversationView = &list[0];
    assert_eq!(view_a.kind, ConversationKind::Group);
    assert_eq!(view_a.title.as_deref(), Some("a group"));
    assert_eq!(view_a.participants, [ALICE, BOB]);
    assert_eq!(view_a.created_at, 1_000);
    assert_eq!(view_a.last_seq, 2);
    assert_eq!(view_a.last_read_seq, 0);
    assert_eq!(
        view_a.unread_count, 1,
        "bob's message; alice's own do not count"
    );
    let last = view_a.last_message.as_ref().expect("last message");
    assert_eq!(
        (
            last.seq,
            last.sender_id.as_str(),
            last.client_msg_id.as_str()
        ),
        (2, BOB, "b1")
    );
    assert_eq!(last.conversation_id, a);

    assert_eq!(list[1].participants, [BOB, ALICE, CAROL], "creator first");
    assert_eq!(list[1].unread_count, 1, "carol's message");
    assert_eq!(list[1].last_message.as_ref().unwrap().sender_id, ALICE);
    assert_eq!(list[2].last_seq, 0);
    assert_eq!(list[2].unread_count, 0);
    assert_eq!(list[2].last_message, None);

    // Reading moves the counter; new activity moves the order.
    assert!(store.mark_read(a, ALICE, 2).await.unwrap());
    append_ok(store, batch(c, 1, vec![message(CAROL, "c1", 6_000)])).await;
    let list = store.list_conversations(ALICE, 50).await.unwrap();
    assert_eq!(
        list.iter().map(|v| v.conversation_id).collect::<Vec<_>>(),
        [c, a, b]
    );
    assert_eq!(list[0].unread_count, 1);
    assert_eq!(list[1].unread_count, 0);
    assert_eq!(list[1].last_read_seq, 2);

    let first_two = store.list_conversations(ALICE, 2).await.unwrap();
    assert_eq!(
        first_two
            .iter()
            .map(|v| v.conversation_id)
            .collect::<Vec<_>>(),
        [c, a]
    );
    assert!(store
        .list_conversations("nobody", 50)
        .await
        .unwrap()
        .is_empty());
}

async fn unread_count_is_capped(db: TestDb) {
    let store = db.store.as_ref();
    let id = group(store, &[ALICE, BOB], 1).await;
    fill(store, id, BOB, 1, 1_005).await;
    let list = store.list_conversations(ALICE, 10).await.unwrap();
    assert_eq!(list[0].last_seq, 1_005);
    assert_eq!(list[0].unread_count, 1_000);
    assert!(store.mark_read(id, ALICE, 1_000).await.unwrap());
    assert_eq!(
        store.list_conversations(ALICE, 10).await.unwrap()[0].unread_count,
        5
    );
}

async fn mark_read_moves_forward_only(db: TestDb) {
    let store = db.store.as_ref();
    let id = group(store, &[ALICE, BOB], 1).await;
    fill(store, id, BOB, 1, 8).await;
    let cursor = |state: ConversationState, user: &str| {
        state
            .participants
            .into_iter()
            .find(|p| p.user_id == user)
            .map(|p| p.last_read_seq)
    };
    assert!(store.mark_read(id, ALICE, 5).await.unwrap());
    assert!(!store.mark_read(id, ALICE, 3).await.unwrap(), "never back");
    assert!(
        !store.mark_read(id, ALICE, 5).await.unwrap(),
        "same seq does not move"
    );
    assert_eq!(
        cursor(store.load_conversation(id).await.unwrap().unwrap(), ALICE),
        Some(5)
    );
    assert!(store.mark_read(id, ALICE, 7).await.unwrap());
    assert_eq!(
        cursor(store.load_conversation(id).await.unwrap().unwrap(), ALICE),
        Some(7)
    );
    assert_eq!(
        cursor(store.load_conversation(id).await.unwrap().unwrap(), BOB),
        Some(0)
    );
    assert!(
        !store.mark_read(id, CAROL, 7).await.unwrap(),
        "not a participant"
    );
    assert!(!store.mark_read(Uuid::new_v4(), ALICE, 7).await.unwrap());
}

async fn device_tokens_are_pruned_whoever_has_them(db: TestDb) {
    let store = db.store.as_ref();
    store.upsert_device(ALICE, "android", "dead").await.unwrap();
    store.upsert_device(ALICE, "ios", "alive").await.unwrap();
    // The token moved to bob; FCM then says it is dead: it goes.
    store.upsert_device(BOB, "android", "dead").await.unwrap();
    assert!(store.delete_device_token("dead").await.unwrap());
    assert!(!store.delete_device_token("dead").await.unwrap());
    assert!(store.devices_of(&[BOB.into()]).await.unwrap().is_empty());
    let alice: Vec<String> = store
        .devices_of(&[ALICE.into()])
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.token)
        .collect();
    assert_eq!(alice, ["alive"]);
}

/// A conversation of alice, bob and carol with one message from alice that
/// queues a push job for bob and one for carol (created at 1 000).
async fn message_with_push_jobs(store: &dyn Store) -> (ConversationId, MessageView) {
    let id = group(store, &[ALICE, BOB, CAROL], 1).await;
    let mut hello = message(ALICE, "a1", 1_000);
    hello.push_to = vec![BOB.into(), CAROL.into()];
    let appended = append_ok(store, batch(id, 1, vec![hello])).await;
    (id, inserted(&appended[0]).clone())
}

const LEASE: Duration = Duration::from_millis(1_000);

/// What the operator's "push outbox by state" panel shows.
async fn push_jobs_are_counted_by_state(db: TestDb) {
    let store = db.store.as_ref();
    message_with_push_jobs(store).await;
    let states = |now: i64| async move {
        let mut states = store.push_jobs_by_state(now).await.unwrap();
        states.sort();
        states
    };
    let s = |state: &str, n: u64| (state.to_string(), n);
    assert_eq!(
        states(999).await,
        [s("waiting", 2)],
        "not due before commit"
    );
    assert_eq!(states(1_000).await, [s("due", 2)]);
    let jobs = store.claim_push_jobs(1_000, 1, LEASE).await.unwrap();
    assert_eq!(states(1_001).await, [s("due", 1), s("leased", 1)]);
    assert!(store.complete_push_job(&jobs[0]).await.unwrap());
    let jobs = store.claim_push_jobs(1_001, 1, LEASE).await.unwrap();
    assert!(store.fail_push_job(&jobs[0], "gave up").await.unwrap());
    assert_eq!(states(1_002).await, [s("failed", 1), s("sent", 1)]);
}

/// Unsend and delete: the row stays (its seq stays taken), emptied, read
/// back as kind `deleted` everywhere (by seq, history, replay, the
/// conversation list); its pending pushes go; the audit entry goes with it;
/// a second tombstone changes nothing.
async fn a_tombstone_replaces_a_message_and_drops_its_pending_pushes(db: TestDb) {
    use turbochat_protocol::DeletedBy;
    use turbochat_store::{Tombstone, Tombstoned};
    let store = db.store.as_ref();
    let (id, hello) = message_with_push_jobs(store).await;
    let mut later = message(BOB, "b1", 1_500);
    later.push_to = vec![ALICE.into()];
    append_ok(store, batch(id, 2, vec![later])).await;
    assert_eq!(store.message(id, 1).await.unwrap().as_ref(), Some(&hello));
    assert_eq!(store.message(id, 9).await.unwrap(), None);
    let at = |seq, deleted_at| Tombstone {
        conversation_id: id,
        seq,
        deleted_by: DeletedBy::Operator,
        deleted_at,
    };
    let entry = audit("delete_message", &format!("{id}/1"), 2_000);
    let Tombstoned::Now(gone) = store
        .tombstone_message(&at(1, 2_000), Some(&entry))
        .await
        .unwrap()
    else {
        panic!("a tombstone now");
    };
    assert_eq!(
        (gone.kind, gone.body.as_str(), &gone.media_key, gone.seq),
        (MessageKind::Deleted, "", &None, 1)
    );
    assert_eq!((gone.sender_id.as_str(), gone.created_at), (ALICE, 1_000));
    assert_eq!(store.message(id, 1).await.unwrap(), Some(gone.clone()));
    assert_eq!(store.history(id, None, 10).await.unwrap()[1], gone);
    assert_eq!(store.messages_after(id, 0, 10).await.unwrap()[0], gone);
    // Only the other message's job is left to push.
    let jobs = store.claim_push_jobs(5_000, 10, LEASE).await.unwrap();
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].message.seq, 2);
    assert_eq!(
        store.audit_log(None, 10).await.unwrap()[0].action,
        "delete_message"
    );
    assert_eq!(
        store
            .tombstone_message(&at(1, 3_000), Some(&entry))
            .await
            .unwrap(),
        Tombstoned::Already(gone)
    );
    assert_eq!(store.audit_log(None, 10).await.unwrap().len(), 1);
    assert_eq!(
        store.tombstone_message(&at(7, 3_000), None).await.unwrap(),
        Tombstoned::Missing
    );
    // The last message of the list is the tombstone once it is the last.
    store.tombstone_message(&at(2, 3_000), None).await.unwrap();
    let list = store.list_conversations(ALICE, 10).await.unwrap();
    let last = list[0].last_message.as_ref().expect("a last message");
    assert_eq!(
        (last.seq, last.kind, last.body.as_str()),
        (2, MessageKind::Deleted, "")
    );
}

/// A member added later starts with everything read; one who leaves takes
/// their pending pushes with them; a creator who leaves hands the role on;
/// an archived conversation leaves the list until a newer message.
async fn members_join_leave_and_archive(db: TestDb) {
    let store = db.store.as_ref();
    let (id, _) = message_with_push_jobs(store).await;
    assert!(store.add_member(id, "dave", 2_000).await.unwrap());
    assert!(!store.add_member(id, "dave", 2_001).await.unwrap());
    let state = store.load_conversation(id).await.unwrap().unwrap();
    let dave = state
        .participants
        .iter()
        .find(|p| p.user_id == "dave")
        .unwrap();
    assert_eq!((dave.role.as_str(), dave.last_read_seq), ("member", 1));

    assert!(store.remove_member(id, CAROL).await.unwrap());
    assert!(!store.remove_member(id, CAROL).await.unwrap());
    let jobs = store.claim_push_jobs(5_000, 10, LEASE).await.unwrap();
    assert_eq!(
        jobs.iter().map(|j| j.user_id.as_str()).collect::<Vec<_>>(),
        [BOB]
    );
    assert!(store.remove_member(id, ALICE).await.unwrap());
    let state = store.load_conversation(id).await.unwrap().unwrap();
    let roles: Vec<(&str, &str)> = state
        .participants
        .iter()
        .map(|p| (p.user_id.as_str(), p.role.as_str()))
        .collect();
    assert_eq!(roles, [(BOB, "owner"), ("dave", "member")]);
    assert!(store
        .list_conversations(ALICE, 10)
        .await
        .unwrap()
        .is_empty());

    assert!(store.set_archived(id, BOB, true).await.unwrap());
    assert!(store.list_conversations(BOB, 10).await.unwrap().is_empty());
    assert_eq!(store.list_conversations("dave", 10).await.unwrap().len(), 1);
    append_ok(store, batch(id, 2, vec![message("dave", "d1", 3_000)])).await;
    assert_eq!(store.list_conversations(BOB, 10).await.unwrap().len(), 1);
    assert!(store.set_archived(id, BOB, true).await.unwrap());
    assert!(store.list_conversations(BOB, 10).await.unwrap().is_empty());
    assert!(store.set_archived(id, BOB, false).await.unwrap());
    assert_eq!(store.list_conversations(BOB, 10).await.unwrap().len(), 1);
    assert!(!store.set_archived(id, ALICE, true).await.unwrap());
}

/// Profiles show in conversation lists; settings and mute are kept; a
/// push's context has the sender's name, the card, the settings and the
/// badge (unread from others, over conversations not muted).
async fn profiles_settings_mute_and_the_push_context(db: TestDb) {
    use turbochat_protocol::http::{ListingCard, NotificationSettings, NotifyMode, QuietHours};
    let store = db.store.as_ref();
    let id = group(store, &[ALICE, BOB], 1_000).await;
    let other = group(store, &[ALICE, BOB], 1_001).await;
    store
        .set_profile(
            ALICE,
            Some("Alice Martin"),
            Some("https://img.test/a.png"),
            1,
        )
        .await
        .unwrap();
    store
        .set_profile(ALICE, Some("Alice M."), None, 2)
        .await
        .unwrap();
    let profiles = store.profiles(&[ALICE.into(), BOB.into()]).await.unwrap();
    assert_eq!(profiles[0].name.as_deref(), Some("Alice M."));
    assert_eq!(
        profiles[0].avatar_url, None,
        "the newest profile replaces the older"
    );
    assert_eq!(
        (profiles[1].user_id.as_str(), profiles[1].name.as_deref()),
        (BOB, None)
    );
    let listed = store.list_conversations(BOB, 10).await.unwrap();
    let members: Vec<(&str, Option<&str>)> = listed[0]
        .members
        .iter()
        .map(|m| (m.user_id.as_str(), m.name.as_deref()))
        .collect();
    assert_eq!(members, [(ALICE, Some("Alice M.")), (BOB, None)]);
    assert_eq!(listed[0].participants, [ALICE, BOB]);

    assert_eq!(
        store.notification_settings(BOB).await.unwrap(),
        NotificationSettings::default()
    );
    let settings = NotificationSettings {
        mode: NotifyMode::All,
        hide_text: true,
        quiet_hours: Some(QuietHours {
            start: "22:00".into(),
            end: "07:00".into(),
            time_zone: "Europe/Berlin".into(),
        }),
    };
    store
        .set_notification_settings(BOB, &settings, 3)
        .await
        .unwrap();
    assert_eq!(store.notification_settings(BOB).await.unwrap(), settings);

    fill(store, id, ALICE, 1, 3).await;
    fill(store, other, ALICE, 1, 2).await;
    append_ok(store, batch(id, 4, vec![message(BOB, "b1", 5_000)])).await;
    let card = ListingCard {
        title: "Audi A4".into(),
        price: None,
        photo_url: None,
    };
    let audit = turbochat_store::AuditEntry {
        id: 0,
        operator: "op".into(),
        action: "set_listing".into(),
        target: id.to_string(),
        detail: "{}".into(),
        created_at: 1,
    };
    assert!(store
        .set_listing_card(id, Some(&card), &audit)
        .await
        .unwrap());
    let context = store.push_context(BOB, id, ALICE).await.unwrap().unwrap();
    assert_eq!(context.badge, 5, "3 + 2 from alice; bob's own not counted");
    assert_eq!(context.sender.unwrap().name.as_deref(), Some("Alice M."));
    assert_eq!(context.listing, Some(card));
    assert_eq!(context.settings, settings);
    assert!(!context.muted);

    assert!(store.mark_read(id, BOB, 2).await.unwrap());
    assert!(store.set_muted(other, BOB, true).await.unwrap());
    let context = store.push_context(BOB, id, ALICE).await.unwrap().unwrap();
    assert_eq!(context.badge, 1, "read to 2 of 3; the muted one left out");
    assert!(
        store
            .push_context(BOB, other, ALICE)
            .await
            .unwrap()
            .unwrap()
            .muted
    );
    let listed = store.list_conversations(BOB, 10).await.unwrap();
    assert!(listed.iter().any(|c| c.conversation_id == other && c.muted));
    assert!(!store.set_muted(other, "nobody", true).await.unwrap());
    assert!(store
        .push_context("nobody", id, ALICE)
        .await
        .unwrap()
        .is_none());
}

/// Retention: old messages are emptied in batches of at most `limit`;
/// rows and seqs stay, so histories stay gapless and numbering goes on.
async fn retention_empties_old_messages_in_bounded_batches_keeping_their_seqs(db: TestDb) {
    let store = db.store.as_ref();
    let old = group(store, &[ALICE, BOB], 1).await;
    let mut messages: Vec<NewMessage> = (1..=5)
        .map(|i| message(ALICE, &format!("o{i}"), 1_000 + i))
        .collect();
    messages[0].push_to = vec![BOB.into()];
    append_ok(store, batch(old, 1, messages)).await;
    let recent = group(store, &[ALICE, BOB], 1).await;
    append_ok(
        store,
        batch(
            recent,
            1,
            vec![message(BOB, "r1", 1_001), message(BOB, "r2", 9_000)],
        ),
    )
    .await;

    // Cut-off 5_000: o1..o5 and r1 are old.
    assert_eq!(store.purge_messages(5_000, 4, 10_000).await.unwrap(), 4);
    assert_eq!(store.purge_messages(5_000, 4, 10_000).await.unwrap(), 2);
    assert_eq!(store.purge_messages(5_000, 4, 10_000).await.unwrap(), 0);
    let left = store.messages_after(old, 0, 10).await.unwrap();
    assert_eq!(seqs(&left), [1, 2, 3, 4, 5]);
    assert!(left
        .iter()
        .all(|m| m.kind == MessageKind::Deleted && m.body.is_empty()));
    let other = store.messages_after(recent, 0, 10).await.unwrap();
    assert_eq!(
        other.iter().map(|m| (m.seq, m.kind)).collect::<Vec<_>>(),
        [(1, MessageKind::Deleted), (2, MessageKind::Text)]
    );
    assert!(store
        .claim_push_jobs(20_000, 10, LEASE)
        .await
        .unwrap()
        .is_empty());
    let next = append_ok(store, batch(old, 6, vec![message(ALICE, "o6", 11_000)])).await;
    assert_eq!(inserted(&next[0]).seq, 6);
}

/// Data rights: what is stored about a user, then erasing it.
async fn a_user_is_exported_then_erased(db: TestDb) {
    let store = db.store.as_ref();
    let (id, hello) = message_with_push_jobs(store).await;
    let mut to_alice = message(BOB, "b1", 1_100);
    to_alice.push_to = vec![ALICE.into()];
    append_ok(store, batch(id, 2, vec![to_alice])).await;
    store
        .upsert_device(ALICE, "android", "alice-phone")
        .await
        .unwrap();
    store.block(ALICE, "mallory", 5).await.unwrap();
    store.block("eve", ALICE, 6).await.unwrap();
    let report = NewReport {
        reporter_id: ALICE.into(),
        reported_user_id: "mallory".into(),
        conversation_id: None,
        reported_seq: None,
        reason: "spam".into(),
        note: None,
        evidence: "[]".into(),
        created_at: 7,
    };
    store.insert_report(&report).await.unwrap();

    let joined = store.participations_of(ALICE).await.unwrap();
    assert_eq!((joined.len(), joined[0].role.as_str()), (1, "owner"));
    assert_eq!(store.messages_of(ALICE).await.unwrap(), [hello]);
    assert_eq!(store.reports_involving(ALICE).await.unwrap().len(), 1);

    let erased = store
        .erase_user(ALICE, "erased-1", &audit("erase_user", ALICE, 9))
        .await
        .unwrap();
    assert_eq!(
        (
            erased.messages,
            erased.conversations,
            erased.devices,
            erased.blocks
        ),
        (1, 1, 1, 2)
    );
    assert_eq!((erased.reports_filed, erased.push_jobs), (1, 3));
    let kept = store.message(id, 1).await.unwrap().unwrap();
    assert_eq!(
        (kept.kind, kept.body.as_str(), kept.sender_id.as_str()),
        (MessageKind::Deleted, "", "erased-1")
    );
    assert!(store.messages_of(ALICE).await.unwrap().is_empty());
    assert!(store.participations_of(ALICE).await.unwrap().is_empty());
    assert!(store.devices_of(&[ALICE.into()]).await.unwrap().is_empty());
    assert!(store.block_relations(ALICE).await.unwrap().is_empty());
    assert!(store.reports_involving(ALICE).await.unwrap().is_empty());
    assert_eq!(
        store.audit_log(None, 1).await.unwrap()[0].action,
        "erase_user"
    );
    // No push to her, nor of her messages, is left.
    assert!(store
        .claim_push_jobs(5_000, 10, LEASE)
        .await
        .unwrap()
        .is_empty());
}

async fn push_jobs_are_claimed_once_and_finished_with_the_claim(db: TestDb) {
    let store = db.store.as_ref();
    let (_, hello) = message_with_push_jobs(store).await;
    assert_eq!(store.pending_push_jobs().await.unwrap(), 2);

    // Not due before the message was committed.
    assert!(store
        .claim_push_jobs(999, 10, LEASE)
        .await
        .unwrap()
        .is_empty());
    let jobs = store.claim_push_jobs(1_000, 10, LEASE).await.unwrap();
    let users: Vec<&str> = jobs.iter().map(|j| j.user_id.as_str()).collect();
    assert_eq!(users, [BOB, CAROL]);
    for job in &jobs {
        assert_eq!(job.message, hello);
        assert_eq!(job.attempt, 1);
        assert!(job.done_tokens.is_empty());
        assert_eq!(job.created_at, 1_000);
    }
    // Leased: nobody else gets them, even with a bigger limit.
    assert!(store
        .claim_push_jobs(1_999, 10, LEASE)
        .await
        .unwrap()
        .is_empty());

    let (mut bob, carol) = (jobs[0].clone(), jobs[1].clone());
    bob.done_tokens = vec!["bob-phone".into()];
    assert!(store.complete_push_job(&bob).await.unwrap());
    assert!(store
        .fail_push_job(&carol, "SENDER_ID_MISMATCH")
        .await
        .unwrap());
    // Finished: the claim is spent.
    assert!(!store.complete_push_job(&bob).await.unwrap());
    assert!(!store
        .reschedule_push_job(&carol, 5_000, "late")
        .await
        .unwrap());

    let (status, attempts, error, done) = db.push_job(bob.id).await;
    assert_eq!((status.as_str(), attempts, error), ("sent", 1, None));
    assert_eq!(done, r#"["bob-phone"]"#);
    let (status, _, error, _) = db.push_job(carol.id).await;
    assert_eq!(status, "failed");
    assert_eq!(error.as_deref(), Some("SENDER_ID_MISMATCH"));

    // Finished jobs are never claimed again, however late.
    assert!(store
        .claim_push_jobs(i64::MAX / 2, 10, LEASE)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(store.pending_push_jobs().await.unwrap(), 0);
}

async fn push_job_lease_expiry_lets_another_worker_take_it(db: TestDb) {
    let store = db.store.as_ref();
    let other = db.open_again().await;
    message_with_push_jobs(store).await;

    // The first worker claims one job and dies (never finishes it).
    let dead = store.claim_push_jobs(1_000, 1, LEASE).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].user_id, BOB);
    // Another node sees only the other job until the lease ends.
    let jobs = other.claim_push_jobs(1_999, 10, LEASE).await.unwrap();
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].user_id, CAROL);
    assert!(other.complete_push_job(&jobs[0]).await.unwrap());
    assert!(other
        .claim_push_jobs(1_999, 10, LEASE)
        .await
        .unwrap()
        .is_empty());

    let retaken = other.claim_push_jobs(2_000, 10, LEASE).await.unwrap();
    assert_eq!(retaken.len(), 1);
    assert_eq!(retaken[0].id, dead[0].id);
    assert_eq!(retaken[0].attempt, 2, "the lost claim counts as an attempt");
    assert_ne!(retaken[0].claim, dead[0].claim);

    // The first worker comes back late: its claim no longer holds.
    assert!(!store.complete_push_job(&dead[0]).await.unwrap());
    assert!(!store.fail_push_job(&dead[0], "late").await.unwrap());
    assert_eq!(db.push_job(dead[0].id).await.0, "pending");
    assert!(other.complete_push_job(&retaken[0]).await.unwrap());
    assert_eq!(db.push_job(dead[0].id).await.0, "sent");
}

async fn push_job_reschedule_keeps_done_tokens(db: TestDb) {
    let store = db.store.as_ref();
    message_with_push_jobs(store).await;
    let mut jobs = store.claim_push_jobs(1_000, 1, LEASE).await.unwrap();
    let mut job: PushJob = jobs.remove(0);
    job.done_tokens = vec!["phone".into(), "tablet".into()];
    assert!(store
        .reschedule_push_job(&job, 1_500, "UNAVAILABLE (503)")
        .await
        .unwrap());
    let (status, attempts, error, _) = db.push_job(job.id).await;
    assert_eq!(status, "pending");
    assert_eq!(attempts, 1);
    assert_eq!(error.as_deref(), Some("UNAVAILABLE (503)"));
    assert_eq!(store.pending_push_jobs().await.unwrap(), 2);

    // Due again at 1 500, not before (carol's untouched job is due now).
    let now = store.claim_push_jobs(1_499, 10, LEASE).await.unwrap();
    assert_eq!(now.len(), 1);
    assert_ne!(now[0].id, job.id);
    let again = store.claim_push_jobs(1_500, 10, LEASE).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].id, job.id);
    assert_eq!(again[0].attempt, 2);
    assert_eq!(again[0].done_tokens, ["phone", "tablet"]);
}

async fn concurrent_claims_never_share_a_push_job(db: TestDb) {
    let store = db.store.clone();
    let id = group(store.as_ref(), &[ALICE, BOB], 1).await;
    let messages = (0..60)
        .map(|i| {
            let mut m = message(ALICE, &format!("m{i}"), 1_000);
            m.push_to = vec![BOB.into()];
            m
        })
        .collect();
    append_ok(store.as_ref(), batch(id, 1, messages)).await;

    let stores = [store, db.open_again().await, db.open_again().await];
    let workers = stores.into_iter().map(|store| {
        tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let jobs = store.claim_push_jobs(1_000, 7, LEASE).await.unwrap();
                if jobs.is_empty() {
                    return mine;
                }
                for job in jobs {
                    assert!(store.complete_push_job(&job).await.unwrap());
                    mine.push(job.id);
                }
            }
        })
    });
    let mut all = Vec::new();
    for worker in workers.collect::<Vec<_>>() {
        all.extend(worker.await.unwrap());
    }
    let claimed = all.len();
    all.sort_unstable();
    all.dedup();
    assert_eq!(claimed, 60, "every job claimed once");
    assert_eq!(all.len(), 60);
}

async fn finished_push_jobs_are_purged(db: TestDb) {
    let store = db.store.as_ref();
    message_with_push_jobs(store).await;
    let jobs = store.claim_push_jobs(1_000, 1, LEASE).await.unwrap();
    assert!(store.complete_push_job(&jobs[0]).await.unwrap());
    // Only finished jobs older than the cut-off go; the pending one stays.
    assert_eq!(store.purge_push_jobs(1_000, 100).await.unwrap(), 0);
    assert_eq!(store.purge_push_jobs(i64::MAX, 100).await.unwrap(), 1);
    let left = db.outbox().await;
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].status, "pending");
    assert_eq!(store.pending_push_jobs().await.unwrap(), 1);
}

async fn contacts_are_everyone_sharing_a_conversation_and_no_block(db: TestDb) {
    let store = db.store.as_ref();
    group(store, &[ALICE, BOB], 1_000).await;
    group(store, &[ALICE, BOB, CAROL], 2_000).await;
    group(store, &[BOB, "dave"], 3_000).await;
    assert_eq!(store.contacts(ALICE, 100).await.unwrap(), [BOB, CAROL]);
    assert_eq!(
        store.contacts(BOB, 100).await.unwrap(),
        [ALICE, CAROL, "dave"]
    );
    assert_eq!(store.contacts(BOB, 2).await.unwrap(), [ALICE, CAROL]);
    assert!(store.contacts("nobody", 100).await.unwrap().is_empty());
    // A block, either way round, hides each from the other's contacts.
    assert!(store.block(CAROL, BOB, 4_000).await.unwrap());
    assert!(store.block("dave", "erin", 4_000).await.unwrap());
    assert_eq!(store.contacts(BOB, 100).await.unwrap(), [ALICE, "dave"]);
    assert_eq!(store.contacts(CAROL, 100).await.unwrap(), [ALICE]);
    assert_eq!(store.contacts(ALICE, 100).await.unwrap(), [BOB, CAROL]);
}

async fn blocks_are_kept_listed_and_lifted(db: TestDb) {
    let store = db.store.as_ref();
    assert!(store.block(ALICE, BOB, 1).await.unwrap());
    assert!(!store.block(ALICE, BOB, 2).await.unwrap(), "idempotent");
    assert!(store.block(ALICE, CAROL, 3).await.unwrap());
    assert!(store.block(CAROL, ALICE, 4).await.unwrap());
    let blocks = store.blocks_of(ALICE).await.unwrap();
    assert_eq!(
        blocks
            .iter()
            .map(|b| (b.blocked_id.as_str(), b.created_at))
            .collect::<Vec<_>>(),
        [(BOB, 1), (CAROL, 3)],
        "the first block's time is kept"
    );
    let mut related = store.block_relations(ALICE).await.unwrap();
    related.sort();
    assert_eq!(related, [BOB, CAROL], "each once");
    assert_eq!(store.block_relations(BOB).await.unwrap(), [ALICE]);
    assert!(store.unblock(ALICE, BOB).await.unwrap());
    assert!(!store.unblock(ALICE, BOB).await.unwrap());
    assert_eq!(store.blocks_of(ALICE).await.unwrap().len(), 1);
    assert!(store.block(ALICE, ALICE, 5).await.is_err(), "no self-block");
}

fn audit(action: &str, target: &str, at: i64) -> AuditEntry {
    AuditEntry {
        id: 0,
        operator: "ops".into(),
        action: action.into(),
        target: target.into(),
        detail: "{}".into(),
        created_at: at,
    }
}

async fn reports_keep_their_evidence_and_are_resolved_once_with_their_audit(db: TestDb) {
    let store = db.store.as_ref();
    let conversation = group(store, &[ALICE, BOB], 1_000).await;
    let report = NewReport {
        reporter_id: ALICE.into(),
        reported_user_id: BOB.into(),
        conversation_id: Some(conversation),
        reported_seq: Some(7),
        reason: "scam".into(),
        note: None,
        evidence: r#"[{"seq":7,"body":"pay first"}]"#.into(),
        created_at: 5,
    };
    let first = store.insert_report(&report).await.unwrap();
    let about_user = NewReport {
        conversation_id: None,
        reported_seq: None,
        note: Some("again".into()),
        evidence: "[]".into(),
        ..report.clone()
    };
    let second = store.insert_report(&about_user).await.unwrap();
    assert!(second > first);
    let open = store.reports(Some("open"), 0, 10).await.unwrap();
    assert_eq!(open.len(), 2);
    assert_eq!(open[0].report, report);
    assert_eq!(open[1].report, about_user);
    assert_eq!(store.reports(None, first, 10).await.unwrap().len(), 1);

    assert!(store
        .resolve_report(first, "banned", &audit("resolve_report", "report:1", 9))
        .await
        .unwrap());
    assert!(!store
        .resolve_report(first, "twice", &audit("resolve_report", "report:1", 10))
        .await
        .unwrap());
    let resolved = store.report(first).await.unwrap().unwrap();
    assert_eq!(
        (
            resolved.status.as_str(),
            resolved.resolution.as_deref(),
            resolved.resolved_by.as_deref(),
            resolved.resolved_at
        ),
        ("resolved", Some("banned"), Some("ops"), Some(9))
    );
    assert_eq!(store.reports(Some("open"), 0, 10).await.unwrap().len(), 1);
    let log = store.audit_log(None, 10).await.unwrap();
    assert_eq!(log.len(), 1, "only the resolution that happened is audited");
    assert_eq!(log[0].action, "resolve_report");
    assert!(store.report(9_999).await.unwrap().is_none());
}

async fn bans_and_their_audit_go_together(db: TestDb) {
    let store = db.store.as_ref();
    let ban = |user: &str, at: i64| Ban {
        user_id: user.into(),
        reason: "scam".into(),
        banned_by: "ops".into(),
        created_at: at,
    };
    assert!(store
        .ban(&ban(BOB, 1), &audit("ban", BOB, 1))
        .await
        .unwrap());
    assert!(!store
        .ban(&ban(BOB, 2), &audit("ban", BOB, 2))
        .await
        .unwrap());
    assert!(store
        .ban(&ban(CAROL, 3), &audit("ban", CAROL, 3))
        .await
        .unwrap());
    let bans = store.bans().await.unwrap();
    assert_eq!(
        bans.iter()
            .map(|b| (b.user_id.as_str(), b.created_at))
            .collect::<Vec<_>>(),
        [(BOB, 1), (CAROL, 3)]
    );
    assert!(store.unban(BOB, &audit("unban", BOB, 4)).await.unwrap());
    assert!(!store.unban(BOB, &audit("unban", BOB, 5)).await.unwrap());
    store
        .record_audit(&audit("system_message", "c", 6))
        .await
        .unwrap();
    let log = store.audit_log(None, 100).await.unwrap();
    assert_eq!(
        log.iter()
            .map(|e| (e.action.as_str(), e.created_at))
            .collect::<Vec<_>>(),
        [
            ("system_message", 6),
            ("unban", 5),
            ("unban", 4),
            ("ban", 3),
            ("ban", 2),
            ("ban", 1)
        ],
        "newest first; every attempt is logged"
    );
    let page = store.audit_log(Some(log[2].id), 2).await.unwrap();
    assert_eq!(
        page.iter().map(|e| e.created_at).collect::<Vec<_>>(),
        [3, 2]
    );
}

/// FCM tokens may be up to 4096 bytes (a b-tree entry of PostgreSQL holds
/// ~2,700): every length is stored, upserted, moved and deleted.
async fn device_tokens_of_every_documented_length_are_kept(db: TestDb) {
    let store = db.store.as_ref();
    let token = |len: usize, salt: u8| -> String {
        (0..len)
            .map(|i| char::from(b'!' + ((i * 7 + usize::from(salt)) % 94) as u8))
            .collect()
    };
    for len in [1, 2_700, 4_096] {
        store
            .upsert_device(ALICE, "android", &token(len, 0))
            .await
            .unwrap();
        store
            .upsert_device(ALICE, "ios", &token(len, 0))
            .await
            .unwrap();
    }
    // Two long tokens differing in one late byte are two devices.
    store
        .upsert_device(ALICE, "web", &token(4_096, 1))
        .await
        .unwrap();
    let devices = store.devices_of(&[ALICE.into()]).await.unwrap();
    let mut lengths: Vec<usize> = devices.iter().map(|d| d.token.len()).collect();
    lengths.sort();
    assert_eq!(lengths, [1, 2_700, 4_096, 4_096]);
    store
        .upsert_device(BOB, "web", &token(4_096, 0))
        .await
        .unwrap();
    assert_eq!(store.devices_of(&[ALICE.into()]).await.unwrap().len(), 3);
    assert!(store.delete_device(BOB, &token(4_096, 0)).await.unwrap());
    assert!(store.delete_device_token(&token(2_700, 0)).await.unwrap());
    assert_eq!(store.devices_of(&[ALICE.into()]).await.unwrap().len(), 2);
}

async fn media_uploads_are_recorded_per_conversation(db: TestDb) {
    let store = db.store.as_ref();
    let here = group(store, &[ALICE, BOB], 1).await;
    let there = group(store, &[ALICE, CAROL], 1).await;
    let upload = turbochat_store::MediaUpload {
        media_key: format!("{here}/{}.png", Uuid::now_v7()),
        conversation_id: here,
        uploader_id: ALICE.into(),
        content_type: "image/png".into(),
        size: 12_345,
        created_at: 7,
    };
    store.record_media_upload(&upload).await.unwrap();
    store.record_media_upload(&upload).await.unwrap();
    assert_eq!(
        store.media_upload(here, &upload.media_key).await.unwrap(),
        Some(upload.clone())
    );
    assert_eq!(
        store.media_upload(there, &upload.media_key).await.unwrap(),
        None
    );
    let never = format!("{here}/{}.png", Uuid::now_v7());
    assert_eq!(store.media_upload(here, &never).await.unwrap(), None);
}

/// A value the database cannot hold (PostgreSQL: NUL in text) fails its own
/// batch as `Invalid`; the other batches of the group commit are written.
async fn data_the_store_cannot_hold_fails_only_its_batch(db: TestDb) {
    let store = db.store.as_ref();
    let good = group(store, &[ALICE, BOB], 1).await;
    let bad = group(store, &[ALICE, CAROL], 1).await;
    let mut poisoned = message(CAROL, "c-1", 2);
    poisoned.body = "a\0b".into();
    let results = store
        .append(&[
            batch(good, 1, vec![message(ALICE, "a-1", 2)]),
            batch(bad, 1, vec![message(ALICE, "a-2", 2), poisoned]),
        ])
        .await
        .expect("the store is up");
    assert!(results[0].is_ok(), "{:?}", results[0]);
    match &results[1] {
        // SQLite stores NUL in text; PostgreSQL refuses it (SQLSTATE 22021).
        Ok(written) => assert_eq!(written.len(), 2),
        Err(AppendError::Invalid(_)) => {}
        Err(other) => panic!("expected Invalid, got {other:?}"),
    }
    assert_eq!(seqs(&store.history(good, None, 10).await.unwrap()), [1]);
}

async fn devices_upsert_move_and_delete(db: TestDb) {
    let store = db.store.as_ref();
    let tokens = |devices: Vec<Device>| -> Vec<(String, String, String)> {
        devices
            .into_iter()
            .map(|d| {
                assert!(d.updated_at > 0);
                (d.user_id, d.platform, d.token)
            })
            .collect()
    };
    let t = |user: &str, platform: &str, token: &str| {
        (user.to_string(), platform.to_string(), token.to_string())
    };

    store
        .upsert_device(ALICE, "android", "tok-1")
        .await
        .unwrap();
    store.upsert_device(ALICE, "ios", "tok-2").await.unwrap();
    store.upsert_device(ALICE, "ios", "tok-2").await.unwrap();
    assert_eq!(
        tokens(store.devices_of(&[ALICE.into()]).await.unwrap()),
        [t(ALICE, "android", "tok-1"), t(ALICE, "ios", "tok-2")]
    );

    // Bob logs in on alice's old phone: the token is his now.
    store.upsert_device(BOB, "web", "tok-1").await.unwrap();
    assert_eq!(
        tokens(store.devices_of(&[ALICE.into()]).await.unwrap()),
        [t(ALICE, "ios", "tok-2")]
    );
    assert_eq!(
        tokens(
            store
                .devices_of(&[ALICE.into(), BOB.into(), CAROL.into()])
                .await
                .unwrap()
        ),
        [t(ALICE, "ios", "tok-2"), t(BOB, "web", "tok-1")]
    );

    assert!(
        !store.delete_device(ALICE, "tok-1").await.unwrap(),
        "not hers any more"
    );
    assert!(store.delete_device(BOB, "tok-1").await.unwrap());
    assert!(!store.delete_device(BOB, "tok-1").await.unwrap());
    assert!(store.devices_of(&[BOB.into()]).await.unwrap().is_empty());
    assert!(store.devices_of(&[]).await.unwrap().is_empty());

    // Many users at once (more than one statement's worth of parameters).
    let users: Vec<UserId> = (0..600).map(|i| format!("user-{i:03}")).collect();
    for user in users.iter().step_by(100) {
        store
            .upsert_device(user, "android", &format!("tok-{user}"))
            .await
            .unwrap();
    }
    assert_eq!(store.devices_of(&users).await.unwrap().len(), 6);
}

// ------------------------------------------------------- writer (group commit)

/// A store that records every `append` call, can hold one until released,
/// and can fail one.
struct Recorder {
    inner: Arc<dyn Store>,
    /// Messages per `append` call.
    rounds: Mutex<Vec<usize>>,
    gate: Mutex<Option<oneshot::Receiver<()>>>,
    held: AtomicBool,
    /// Index of the `append` call to fail (`usize::MAX`: none).
    fail_call: AtomicUsize,
    calls: AtomicUsize,
}

impl Recorder {
    fn new(inner: Arc<dyn Store>) -> Arc<Self> {
        Arc::new(Recorder {
            inner,
            rounds: Mutex::new(Vec::new()),
            gate: Mutex::new(None),
            held: AtomicBool::new(false),
            fail_call: AtomicUsize::new(usize::MAX),
            calls: AtomicUsize::new(0),
        })
    }

    /// Makes the next `append` wait until the returned sender fires.
    fn hold_next(&self) -> oneshot::Sender<()> {
        let (release, gate) = oneshot::channel();
        *self.gate.lock().unwrap() = Some(gate);
        release
    }

    fn rounds(&self) -> Vec<usize> {
        self.rounds.lock().unwrap().clone()
    }
}

#[async_trait]
impl Store for Recorder {
    async fn migrate(&self) -> Result<(), StoreError> {
        self.inner.migrate().await
    }
    async fn message(
        &self,
        id: ConversationId,
        seq: Seq,
    ) -> Result<Option<MessageView>, StoreError> {
        self.inner.message(id, seq).await
    }
    async fn add_member(
        &self,
        id: ConversationId,
        user: &str,
        at: i64,
    ) -> Result<bool, StoreError> {
        self.inner.add_member(id, user, at).await
    }
    async fn remove_member(&self, id: ConversationId, user: &str) -> Result<bool, StoreError> {
        self.inner.remove_member(id, user).await
    }
    async fn set_archived(
        &self,
        id: ConversationId,
        user: &str,
        archived: bool,
    ) -> Result<bool, StoreError> {
        self.inner.set_archived(id, user, archived).await
    }
    async fn set_profile(
        &self,
        user: &str,
        name: Option<&str>,
        avatar_url: Option<&str>,
        at: i64,
    ) -> Result<(), StoreError> {
        self.inner.set_profile(user, name, avatar_url, at).await
    }
    async fn profiles(
        &self,
        users: &[UserId],
    ) -> Result<Vec<turbochat_protocol::http::MemberView>, StoreError> {
        self.inner.profiles(users).await
    }
    async fn notification_settings(
        &self,
        user: &str,
    ) -> Result<turbochat_protocol::http::NotificationSettings, StoreError> {
        self.inner.notification_settings(user).await
    }
    async fn set_notification_settings(
        &self,
        user: &str,
        settings: &turbochat_protocol::http::NotificationSettings,
        at: i64,
    ) -> Result<(), StoreError> {
        self.inner
            .set_notification_settings(user, settings, at)
            .await
    }
    async fn set_muted(
        &self,
        id: ConversationId,
        user: &str,
        muted: bool,
    ) -> Result<bool, StoreError> {
        self.inner.set_muted(id, user, muted).await
    }
    async fn push_context(
        &self,
        user: &str,
        id: ConversationId,
        sender: &str,
    ) -> Result<Option<turbochat_store::PushContext>, StoreError> {
        self.inner.push_context(user, id, sender).await
    }
    async fn purge_messages(&self, before: i64, limit: u32, now: i64) -> Result<u64, StoreError> {
        self.inner.purge_messages(before, limit, now).await
    }
    async fn participations_of(
        &self,
        user: &str,
    ) -> Result<Vec<turbochat_store::Participation>, StoreError> {
        self.inner.participations_of(user).await
    }
    async fn messages_of(&self, user: &str) -> Result<Vec<MessageView>, StoreError> {
        self.inner.messages_of(user).await
    }
    async fn reports_involving(
        &self,
        user: &str,
    ) -> Result<Vec<turbochat_store::Report>, StoreError> {
        self.inner.reports_involving(user).await
    }
    async fn erase_user(
        &self,
        user: &str,
        anonymous: &str,
        audit: &AuditEntry,
    ) -> Result<turbochat_store::Erased, StoreError> {
        self.inner.erase_user(user, anonymous, audit).await
    }
    async fn tombstone_message(
        &self,
        tombstone: &turbochat_store::Tombstone,
        audit: Option<&turbochat_store::AuditEntry>,
    ) -> Result<turbochat_store::Tombstoned, StoreError> {
        self.inner.tombstone_message(tombstone, audit).await
    }
    async fn create_conversation(
        &self,
        new: &NewConversation,
    ) -> Result<ConversationState, StoreError> {
        self.inner.create_conversation(new).await
    }
    async fn load_conversation(
        &self,
        id: ConversationId,
    ) -> Result<Option<ConversationState>, StoreError> {
        self.inner.load_conversation(id).await
    }
    async fn append(
        &self,
        batches: &[ConversationBatch],
    ) -> Result<Vec<Result<Vec<Appended>, AppendError>>, StoreError> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst);
        let gate = self.gate.lock().unwrap().take();
        if let Some(gate) = gate {
            self.held.store(true, Ordering::SeqCst);
            gate.await.ok();
        }
        self.rounds
            .lock()
            .unwrap()
            .push(batches.iter().map(|b| b.messages.len()).sum());
        if self.fail_call.load(Ordering::SeqCst) == call {
            return Err(StoreError::Corrupt("injected failure".into()));
        }
        self.inner.append(batches).await
    }
    async fn messages_after(
        &self,
        id: ConversationId,
        after: Seq,
        limit: u32,
    ) -> Result<Vec<MessageView>, StoreError> {
        self.inner.messages_after(id, after, limit).await
    }
    async fn history(
        &self,
        id: ConversationId,
        before: Option<Seq>,
        limit: u32,
    ) -> Result<Vec<MessageView>, StoreError> {
        self.inner.history(id, before, limit).await
    }
    async fn list_conversations(
        &self,
        user: &str,
        limit: u32,
    ) -> Result<Vec<ConversationView>, StoreError> {
        self.inner.list_conversations(user, limit).await
    }
    async fn mark_read(
        &self,
        id: ConversationId,
        user: &str,
        seq: Seq,
    ) -> Result<bool, StoreError> {
        self.inner.mark_read(id, user, seq).await
    }
    async fn upsert_device(
        &self,
        user: &str,
        platform: &str,
        token: &str,
    ) -> Result<(), StoreError> {
        self.inner.upsert_device(user, platform, token).await
    }
    async fn delete_device(&self, user: &str, token: &str) -> Result<bool, StoreError> {
        self.inner.delete_device(user, token).await
    }
    async fn devices_of(&self, users: &[UserId]) -> Result<Vec<Device>, StoreError> {
        self.inner.devices_of(users).await
    }

    async fn contacts(&self, user: &str, limit: u32) -> Result<Vec<UserId>, StoreError> {
        self.inner.contacts(user, limit).await
    }
    async fn delete_device_token(&self, token: &str) -> Result<bool, StoreError> {
        self.inner.delete_device_token(token).await
    }
    async fn record_media_upload(
        &self,
        upload: &turbochat_store::MediaUpload,
    ) -> Result<(), StoreError> {
        self.inner.record_media_upload(upload).await
    }
    async fn media_upload(
        &self,
        conversation: ConversationId,
        media_key: &str,
    ) -> Result<Option<turbochat_store::MediaUpload>, StoreError> {
        self.inner.media_upload(conversation, media_key).await
    }
    async fn claim_push_jobs(
        &self,
        now: i64,
        limit: u32,
        lease: Duration,
    ) -> Result<Vec<PushJob>, StoreError> {
        self.inner.claim_push_jobs(now, limit, lease).await
    }
    async fn complete_push_job(&self, job: &PushJob) -> Result<bool, StoreError> {
        self.inner.complete_push_job(job).await
    }
    async fn fail_push_job(&self, job: &PushJob, reason: &str) -> Result<bool, StoreError> {
        self.inner.fail_push_job(job, reason).await
    }
    async fn reschedule_push_job(
        &self,
        job: &PushJob,
        at: i64,
        reason: &str,
    ) -> Result<bool, StoreError> {
        self.inner.reschedule_push_job(job, at, reason).await
    }
    async fn purge_push_jobs(&self, before: i64, limit: u32) -> Result<u64, StoreError> {
        self.inner.purge_push_jobs(before, limit).await
    }
    async fn pending_push_jobs(&self) -> Result<u64, StoreError> {
        self.inner.pending_push_jobs().await
    }
    async fn push_jobs_by_state(&self, now: i64) -> Result<Vec<(String, u64)>, StoreError> {
        self.inner.push_jobs_by_state(now).await
    }
    async fn block(&self, blocker: &str, blocked: &str, at: i64) -> Result<bool, StoreError> {
        self.inner.block(blocker, blocked, at).await
    }
    async fn unblock(&self, blocker: &str, blocked: &str) -> Result<bool, StoreError> {
        self.inner.unblock(blocker, blocked).await
    }
    async fn blocks_of(&self, blocker: &str) -> Result<Vec<Block>, StoreError> {
        self.inner.blocks_of(blocker).await
    }
    async fn block_relations(&self, user: &str) -> Result<Vec<UserId>, StoreError> {
        self.inner.block_relations(user).await
    }
    async fn insert_report(&self, report: &NewReport) -> Result<i64, StoreError> {
        self.inner.insert_report(report).await
    }
    async fn reports(
        &self,
        status: Option<&str>,
        after_id: i64,
        limit: u32,
    ) -> Result<Vec<Report>, StoreError> {
        self.inner.reports(status, after_id, limit).await
    }
    async fn report(&self, id: i64) -> Result<Option<Report>, StoreError> {
        self.inner.report(id).await
    }
    async fn resolve_report(
        &self,
        id: i64,
        resolution: &str,
        audit: &AuditEntry,
    ) -> Result<bool, StoreError> {
        self.inner.resolve_report(id, resolution, audit).await
    }
    async fn ban(&self, ban: &Ban, audit: &AuditEntry) -> Result<bool, StoreError> {
        self.inner.ban(ban, audit).await
    }
    async fn unban(&self, user: &str, audit: &AuditEntry) -> Result<bool, StoreError> {
        self.inner.unban(user, audit).await
    }
    async fn set_listing_card(
        &self,
        id: ConversationId,
        card: Option<&turbochat_protocol::http::ListingCard>,
        audit: &AuditEntry,
    ) -> Result<bool, StoreError> {
        self.inner.set_listing_card(id, card, audit).await
    }
    async fn bans(&self) -> Result<Vec<Ban>, StoreError> {
        self.inner.bans().await
    }
    async fn record_audit(&self, audit: &AuditEntry) -> Result<(), StoreError> {
        self.inner.record_audit(audit).await
    }
    async fn audit_log(
        &self,
        before_id: Option<i64>,
        limit: u32,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        self.inner.audit_log(before_id, limit).await
    }
}

/// Appends `messages` to `id` (first seq 1) from a task of its own, as a
/// concurrent sender does.
fn spawn_append(
    writer: &Writer,
    id: ConversationId,
    messages: Vec<NewMessage>,
) -> tokio::task::JoinHandle<AppendResult> {
    let writer = writer.clone();
    tokio::spawn(async move { writer.append(batch(id, 1, messages)).await })
}

/// `count` conversations of alice and bob.
async fn conversations(store: &dyn Store, count: usize) -> Vec<ConversationId> {
    let mut ids = Vec::with_capacity(count);
    for _ in 0..count {
        ids.push(group(store, &[ALICE, BOB], 1).await);
    }
    ids
}

async fn writer_group_commits_concurrent_appends(db: TestDb) {
    const REQUESTS: usize = 40;
    let ids = conversations(db.store.as_ref(), REQUESTS).await;
    let recorder = Recorder::new(db.store.clone());
    let shutdown = CancellationToken::new();
    let (writer, task) = Writer::spawn(recorder.clone(), WriterConfig::default(), shutdown.clone());

    // Hold the first commit so the other requests pile up behind it, as they
    // do behind a slow fsync.
    let release = recorder.hold_next();
    let mut requests = Vec::new();
    let first = spawn_append(&writer, ids[0], vec![message(ALICE, "m", 1)]);
    eventually("the first commit to start", || {
        recorder.held.load(Ordering::SeqCst)
    })
    .await;
    for (i, id) in ids.iter().enumerate().skip(1) {
        let messages = vec![message(ALICE, "m1", 1), message(BOB, &format!("m{i}"), 2)];
        requests.push(spawn_append(&writer, *id, messages));
    }
    eventually("every request to queue", || {
        writer.queued_requests() == REQUESTS - 1
    })
    .await;
    release.send(()).unwrap();

    let first = first.await.unwrap().expect("store").expect("batch");
    assert_eq!(inserted(&first[0]).seq, 1);
    for (request, id) in requests.into_iter().zip(&ids[1..]) {
        let appended = request.await.unwrap().expect("store").expect("batch");
        let views: Vec<_> = appended.iter().map(inserted).collect();
        assert_eq!(views.iter().map(|m| m.seq).collect::<Vec<_>>(), [1, 2]);
        assert!(views.iter().all(|m| m.conversation_id == *id));
    }
    assert_eq!(
        recorder.rounds(),
        [1, 2 * (REQUESTS - 1)],
        "one commit for all that queued"
    );
    assert_eq!(db.message_rows().await as usize, 1 + 2 * (REQUESTS - 1));

    shutdown.cancel();
    task.await.unwrap();
}

async fn writer_splits_rounds_at_max_batch_messages(db: TestDb) {
    const REQUESTS: usize = 12;
    let ids = conversations(db.store.as_ref(), REQUESTS + 1).await;
    let recorder = Recorder::new(db.store.clone());
    let config = WriterConfig {
        max_batch_messages: 5,
        ..WriterConfig::default()
    };
    let (writer, task) = Writer::spawn(recorder.clone(), config, CancellationToken::new());

    let release = recorder.hold_next();
    let blocker = spawn_append(&writer, ids[0], vec![message(ALICE, "m", 1)]);
    eventually("the first commit to start", || {
        recorder.held.load(Ordering::SeqCst)
    })
    .await;
    let mut requests = Vec::new();
    // Two messages each, plus one batch bigger than a round by itself.
    for (i, id) in ids[1..].iter().enumerate() {
        let count = if i == 5 { 7 } else { 2 };
        let messages = (0..count)
            .map(|n| message(BOB, &format!("m{n}"), 1))
            .collect();
        requests.push(spawn_append(&writer, *id, messages));
    }
    eventually("every request to queue", || {
        writer.queued_requests() == REQUESTS
    })
    .await;
    release.send(()).unwrap();
    blocker.await.unwrap().unwrap().unwrap();
    for request in requests {
        request.await.unwrap().unwrap().unwrap();
    }
    let rounds = recorder.rounds();
    assert_eq!(rounds.iter().sum::<usize>(), 1 + 2 * (REQUESTS - 1) + 7);
    assert_eq!(rounds[0], 1);
    // Rounds never exceed the cap, except a batch that is bigger alone.
    assert!(rounds.iter().all(|&n| n <= 5 || n == 7), "{rounds:?}");
    assert!(rounds.contains(&7), "{rounds:?}");
    assert!(rounds.len() < REQUESTS + 1, "still grouped: {rounds:?}");

    drop(writer);
    task.await
        .expect("the task ends when the last handle is dropped");
}

async fn writer_gathers_a_small_round_when_asked(db: TestDb) {
    // A long window, so that nothing but the round's size ends the wait.
    let config = WriterConfig {
        gather_micros: 30_000_000,
        gather_messages: 3,
        ..WriterConfig::default()
    };
    let ids = conversations(db.store.as_ref(), 5).await;
    let recorder = Recorder::new(db.store.clone());
    let (writer, task) = Writer::spawn(recorder.clone(), config, CancellationToken::new());

    // Two appends one after the other: the writer learns that messages come
    // (the first rounds have no rate to go by and commit at once).
    for id in &ids[..2] {
        writer
            .append(batch(*id, 1, vec![message(ALICE, "warm", 1)]))
            .await
            .unwrap()
            .unwrap();
    }
    assert_eq!(recorder.rounds(), [1, 1]);

    // One send, taken by the writer with nothing behind it: with gathering
    // off it would commit alone; here it waits for company.
    let first = spawn_append(&writer, ids[2], vec![message(BOB, "a", 1)]);
    eventually("the writer to take the first send", || {
        writer.queued_requests() == 0
    })
    .await;
    let mut later = Vec::new();
    for (n, id) in ids[3..].iter().enumerate() {
        later.push(spawn_append(
            &writer,
            *id,
            vec![message(BOB, &format!("b{n}"), 1)],
        ));
    }
    // The round commits once it holds gather_messages, long before its
    // window ends.
    let appended = tokio::time::timeout(Duration::from_secs(10), first)
        .await
        .expect("a full round does not wait out the window")
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(inserted(&appended[0]).seq, 1);
    for request in later {
        request.await.unwrap().unwrap().unwrap();
    }
    assert_eq!(
        recorder.rounds(),
        [1, 1, 3],
        "one commit for the gathered three"
    );
    assert_eq!(db.message_rows().await, 5);

    drop(writer);
    task.await
        .expect("the task ends when the last handle is dropped");
}

async fn writer_drains_on_shutdown(db: TestDb) {
    let ids = conversations(db.store.as_ref(), 6).await;
    let recorder = Recorder::new(db.store.clone());
    let shutdown = CancellationToken::new();
    let (writer, task) = Writer::spawn(recorder.clone(), WriterConfig::default(), shutdown.clone());

    let release = recorder.hold_next();
    let mut requests = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        requests.push(spawn_append(&writer, *id, vec![message(ALICE, "m", 1)]));
        if i == 0 {
            eventually("the first commit to start", || {
                recorder.held.load(Ordering::SeqCst)
            })
            .await;
        }
    }
    eventually("every request to queue", || {
        writer.queued_requests() == ids.len() - 1
    })
    .await;
    shutdown.cancel();
    release.send(()).unwrap();

    for request in requests {
        let appended = request
            .await
            .unwrap()
            .expect("queued before shutdown: committed");
        assert_eq!(inserted(&appended.unwrap()[0]).seq, 1);
    }
    task.await.unwrap();
    let late = writer
        .append(batch(ids[0], 2, vec![message(ALICE, "late", 1)]))
        .await;
    assert!(matches!(late, Err(StoreError::WriterClosed)), "{late:?}");
    assert_eq!(db.message_rows().await, 6);
}

async fn writer_reports_failed_commit_to_every_requester(db: TestDb) {
    let ids = conversations(db.store.as_ref(), 3).await;
    let recorder = Recorder::new(db.store.clone());
    let (writer, task) = Writer::spawn(
        recorder.clone(),
        WriterConfig::default(),
        CancellationToken::new(),
    );

    // The first round (held) succeeds; the second, with two requests, fails.
    let release = recorder.hold_next();
    recorder.fail_call.store(1, Ordering::SeqCst);
    let mut requests = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        requests.push(spawn_append(&writer, *id, vec![message(ALICE, "m", 1)]));
        if i == 0 {
            eventually("the first commit to start", || {
                recorder.held.load(Ordering::SeqCst)
            })
            .await;
        }
    }
    eventually("every request to queue", || writer.queued_requests() == 2).await;
    release.send(()).unwrap();

    let mut answers = Vec::new();
    for request in requests {
        answers.push(request.await.unwrap());
    }
    assert!(matches!(answers[0], Ok(Ok(_))), "{:?}", answers[0]);
    for answer in &answers[1..] {
        match answer {
            Err(StoreError::GroupCommit(cause)) => {
                assert!(cause.to_string().contains("injected failure"), "{cause}")
            }
            other => panic!("expected the shared commit error, got {other:?}"),
        }
    }
    assert_eq!(recorder.rounds(), [1, 2]);
    assert_eq!(db.message_rows().await, 1);

    // The writer goes on after a failed commit.
    let retried = writer
        .append(batch(ids[1], 1, vec![message(ALICE, "m", 1)]))
        .await;
    assert_eq!(inserted(&retried.unwrap().unwrap()[0]).seq, 1);

    drop(writer);
    task.await.unwrap();
}

// ------------------------------------------- PostgreSQL connection health

/// The pool does not ping a connection it hands out while the connection
/// is in use (that round trip would double a group commit's), only one
/// that sat idle: here every connection of the store is killed by the
/// server after an idle second, and the next append still succeeds on a
/// fresh one instead of failing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_store_replaces_connections_the_server_dropped() {
    run_postgres(|db: TestDb| async move {
        let store = db.store.as_ref();
        let id = group(store, &[ALICE, BOB], 1).await;
        append_ok(store, batch(id, 1, vec![message(ALICE, "a1", 10)])).await;
        // Idle past the store's ping threshold (1 s): what is being tested.
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        let Raw::Postgres(raw) = &db.raw else {
            unreachable!("run_postgres")
        };
        let killed: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid()) AS t",
        )
        .fetch_one(raw)
        .await
        .expect("terminate the store's connections");
        assert!(killed >= 1, "the store had a pooled connection to kill");
        let appended = append_ok(store, batch(id, 2, vec![message(BOB, "b1", 20)])).await;
        assert_eq!(inserted(&appended[0]).seq, 2);
        let stored = store.messages_after(id, 0, 10).await.expect("read back");
        assert_eq!(seqs(&stored), [1, 2]);
    })
    .await;
}

// ------------------------------------------------------ SQLite crash safety

/// Writes through one `SqliteStore`, leaks it (no clean close, no
/// checkpoint), and finds everything in a fresh store on the same file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_data_survives_an_unclean_drop() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("crash.db").display());
    let id;
    {
        let store = turbochat_store::open(&url, 2).await.unwrap();
        id = group(store.as_ref(), &[ALICE, BOB], 1).await;
        fill(store.as_ref(), id, ALICE, 1, 25).await;
        store.upsert_device(BOB, "android", "tok").await.unwrap();
        std::mem::forget(store);
    }
    let store = turbochat_store::open(&url, 2).await.unwrap();
    let state = store
        .load_conversation(id)
        .await
        .unwrap()
        .expect("conversation");
    assert_eq!(state.last_seq, 25);
    assert_eq!(store.messages_after(id, 0, 100).await.unwrap().len(), 25);
    assert_eq!(store.devices_of(&[BOB.into()]).await.unwrap().len(), 1);
}

/// `sqlite::memory:` is one database shared by every pooled connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_in_memory_store_is_shared_by_the_pool() {
    let store = turbochat_store::open("sqlite::memory:", 4).await.unwrap();
    let id = group(store.as_ref(), &[ALICE, BOB], 1).await;
    fill(store.as_ref(), id, BOB, 1, 3).await;
    // Concurrent reads, so the pool opens several connections.
    let reads: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.messages_after(id, 0, 10).await })
        })
        .collect();
    for read in reads {
        assert_eq!(seqs(&read.await.unwrap().unwrap()), [1, 2, 3]);
    }
}

const CRASH_URL_ENV: &str = "TURBOCHAT_CRASH_CHILD_URL";
const CRASH_CONVERSATION_ENV: &str = "TURBOCHAT_CRASH_CHILD_CONVERSATION";

/// Runs `sqlite_crash_child` in a child process, lets it ack messages while
/// it keeps writing, kills it with SIGKILL, and checks that every acked
/// message is stored, in gapless seq order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_acked_messages_survive_kill_9() {
    use tokio::io::AsyncBufReadExt;

    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("kill.db").display());
    let id = {
        let store = turbochat_store::open(&url, 1).await.unwrap();
        group(store.as_ref(), &[ALICE, BOB], 1).await
    };

    let mut child = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "sqlite_crash_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CRASH_URL_ENV, &url)
        .env(CRASH_CONVERSATION_ENV, id.to_string())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the child");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut acked: Seq = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while acked < 200 {
        let line = tokio::time::timeout_at(deadline, lines.next_line())
            .await
            .expect("the child acks in time")
            .unwrap()
            .expect("the child keeps running");
        if let Some(seq) = line.strip_prefix("acked ") {
            acked = seq.parse().unwrap();
        }
    }
    child.start_kill().unwrap();
    let status = child.wait().await.unwrap();
    assert!(!status.success(), "killed, not finished");

    let store = turbochat_store::open(&url, 1).await.unwrap();
    let stored = store.messages_after(id, 0, 100_000).await.unwrap();
    assert!(
        stored.len() as Seq >= acked,
        "acked {acked}, stored {}",
        stored.len()
    );
    assert_eq!(seqs(&stored), (1..=stored.len() as Seq).collect::<Vec<_>>());
}

/// The child of `sqlite_acked_messages_survive_kill_9`: appends messages
/// forever, printing `acked <seq>` after each commit returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a child process of sqlite_acked_messages_survive_kill_9"]
async fn sqlite_crash_child() {
    use std::io::Write;

    let (Ok(url), Ok(id)) = (
        std::env::var(CRASH_URL_ENV),
        std::env::var(CRASH_CONVERSATION_ENV),
    ) else {
        return;
    };
    let id: ConversationId = id.parse().unwrap();
    let store = turbochat_store::open(&url, 2).await.unwrap();
    let (writer, _task) = Writer::spawn(store, WriterConfig::default(), CancellationToken::new());
    let mut next: Seq = 1;
    loop {
        let messages = (0..3)
            .map(|i| message(ALICE, &format!("k{next}-{i}"), 1))
            .collect();
        let appended = writer
            .append(batch(id, next, messages))
            .await
            .unwrap()
            .unwrap();
        next = appended.last().unwrap().message().seq + 1;
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "acked {}", next - 1).unwrap();
        stdout.flush().unwrap();
    }
}
