//! PostgreSQL, the store of record in production.
//!
//! Everything but connecting, migrating and the fast path of `append` is the
//! shared SQL of `sql.rs`. The fast path writes every message of every
//! batch of a group commit, and their push jobs, with one statement (`UNNEST`
//! arrays into a multi-row `INSERT ... RETURNING`, the outbox fed from its
//! `RETURNING` in the same statement). One statement is atomic on its own,
//! so a group commit is that statement alone, in autocommit: one round trip
//! whatever its size, instead of `BEGIN`, the statement, `COMMIT`. When some
//! message turns out to be a duplicate (a retried send), the statement fails
//! on the `(conversation, sender, client_msg_id)` constraint and writes
//! nothing, and the batches are written message by message in a transaction
//! instead, which renumbers the messages after a duplicate.

use std::str::FromStr;
use std::time::Duration;

use sqlx::error::DatabaseError;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPoolOptions, PgQueryResult};
use sqlx::{Connection, Postgres};
use uuid::Uuid;

use crate::sql::{
    claimed_job_columns, has_repeated_client_msg_id, impl_store_via_sql, inserted_view,
    is_unique_violation, seq_to_store, Backend, SqlStore, WriteError,
};
use crate::{Appended, ConversationBatch, StoreError};

/// Name of the `UNIQUE (conversation_id, seq)` constraint in
/// `migrations/postgres`.
const SEQ_CONSTRAINT: &str = "messages_seq_key";

/// Name of the `UNIQUE (conversation_id, sender_id, client_msg_id)`
/// constraint: a retried send.
const CLIENT_MSG_ID_CONSTRAINT: &str = "messages_client_msg_id_key";

/// A pooled connection idle at least this long is pinged before use.
const PING_IF_IDLE_FOR: Duration = Duration::from_secs(1);

static MIGRATOR: Migrator = sqlx::migrate!("../migrations/postgres");

/// The store on PostgreSQL. Cheap to share behind an `Arc`; every operation
/// takes a connection from its pool.
pub struct PgStore {
    sql: SqlStore<Postgres>,
}

impl PgStore {
    /// Connects a pool of at most `max_connections` (at least 1) to `url`
    /// (`postgres://user@host:port/db?...`). Fails if the server cannot be
    /// reached now. Does not migrate: call [`crate::Store::migrate`] (or use
    /// [`crate::open`], which does).
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, StoreError> {
        let options = PgConnectOptions::from_str(url)?;
        let pool = PgPoolOptions::new()
            .max_connections(max_connections.max(1))
            // sqlx pings every connection it hands out by default: a round
            // trip as long as the group commit's one statement. Only a
            // connection that sat idle may have been dropped by the server
            // (restart, idle timeout, proxy); a hot one is proven by use.
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for < PING_IF_IDLE_FOR {
                        return Ok(true);
                    }
                    // A failed ping makes the pool close it and try another.
                    Ok(conn.ping().await.is_ok())
                })
            })
            .connect_with(options)
            .await?;
        Ok(PgStore {
            sql: SqlStore::new(pool),
        })
    }

    /// The embedded migrations of `migrations/postgres`.
    fn migrator() -> &'static Migrator {
        &MIGRATOR
    }
}

impl_store_via_sql!(PgStore);

/// The fast path: one statement writes the messages and their push jobs
/// (in `push_to` order, as the step-wise path does) and counts the messages
/// it inserted. It inserts every message or, when one is a duplicate of a
/// stored one (or takes a taken seq), fails and inserts none.
const FAST_INSERT: &str = "WITH ins AS ( \
         INSERT INTO messages \
             (id, conversation_id, seq, sender_id, client_msg_id, kind, body, media_key, created_at) \
         SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::int8[], $4::text[], $5::text[], \
                              $6::text[], $7::text[], $8::text[], $9::int8[]) \
         RETURNING id, conversation_id, seq, created_at \
     ), outbox AS ( \
         INSERT INTO push_outbox \
             (message_id, conversation_id, seq, user_id, next_attempt_at, created_at) \
         SELECT ins.id, ins.conversation_id, ins.seq, push.user_id, ins.created_at, ins.created_at \
         FROM UNNEST($10::uuid[], $11::text[]) WITH ORDINALITY AS push (message_id, user_id, n) \
         JOIN ins ON ins.id = push.message_id \
         ORDER BY push.n \
     ) \
     SELECT COUNT(*) FROM ins";

impl Backend for Postgres {
    const BEGIN_WRITE: &'static str = "BEGIN";

    /// [`FAST_INSERT`] writes everything or nothing.
    const FAST_WRITE_IS_ONE_STATEMENT: bool = true;

    /// `ARRAY(subquery)` is computed once (an init plan), and
    /// `conversation_id = ANY($0)` can only be an index probe of the primary
    /// key: no join for the planner to get wrong, even in a generic plan
    /// without statistics. No `ORDER BY ... LIMIT` either: that makes a
    /// walk of the whole `user_id` index look cheap.
    const CONTACTS: &'static str = "SELECT DISTINCT user_id FROM conversation_participants \
         WHERE conversation_id = ANY (ARRAY( \
             SELECT conversation_id FROM conversation_participants WHERE user_id = $1)) \
         AND user_id <> $1 \
         AND user_id <> ALL (ARRAY( \
             SELECT blocked_id FROM user_blocks WHERE blocker_id = $1 \
             UNION ALL SELECT blocker_id FROM user_blocks WHERE blocked_id = $1))";

    /// `SKIP LOCKED`: concurrent workers each take rows nobody else is
    /// claiming right now instead of queueing behind each other; a row
    /// another claim just moved past `now` is re-checked and skipped.
    const CLAIM_PUSH_JOBS: &'static str = concat!(
        "UPDATE push_outbox SET attempts = attempts + 1, next_attempt_at = $2, \
             locked_until = $2, claim_token = $3 \
         WHERE id IN (SELECT id FROM push_outbox \
             WHERE status = 'pending' AND next_attempt_at <= $1 \
             ORDER BY next_attempt_at, id LIMIT $4 FOR UPDATE SKIP LOCKED) \
         RETURNING ",
        claimed_job_columns!()
    );

    fn is_seq_conflict(err: &dyn DatabaseError) -> bool {
        is_unique_violation(err) && err.constraint() == Some(SEQ_CONSTRAINT)
    }

    /// Tokens are unique by their SHA-256 (`migrations/postgres/0003`): a
    /// b-tree cannot hold a 4 KiB token.
    const UPSERT_DEVICE: &'static str = crate::sql::upsert_device!("(token_key)");

    fn is_bad_data(err: &dyn DatabaseError) -> bool {
        // SQLSTATE class 22: data exception (invalid byte sequence, value
        // too long, numeric out of range, ...).
        err.code().is_some_and(|code| code.starts_with("22"))
    }

    fn rows_affected(result: &PgQueryResult) -> u64 {
        result.rows_affected()
    }

    async fn write_fast(
        conn: &mut PgConnection,
        batches: &[ConversationBatch],
    ) -> Result<Option<Vec<Vec<Appended>>>, WriteError> {
        if has_repeated_client_msg_id(batches) {
            return Ok(None);
        }
        let total: usize = batches.iter().map(|b| b.messages.len()).sum();
        let mut ids = Vec::with_capacity(total);
        let mut conversations = Vec::with_capacity(total);
        let mut seqs = Vec::with_capacity(total);
        let mut senders = Vec::with_capacity(total);
        let mut client_msg_ids = Vec::with_capacity(total);
        let mut kinds = Vec::with_capacity(total);
        let mut bodies = Vec::with_capacity(total);
        let mut media_keys = Vec::with_capacity(total);
        let mut created_ats = Vec::with_capacity(total);
        let mut push_messages = Vec::<Uuid>::new();
        let mut push_users = Vec::<&str>::new();
        let mut written = Vec::with_capacity(batches.len());
        for batch in batches {
            let mut appended = Vec::with_capacity(batch.messages.len());
            for (message, seq) in batch.messages.iter().zip(batch.first_seq..) {
                ids.push(message.message_id);
                conversations.push(batch.conversation_id);
                seqs.push(seq_to_store(seq).map_err(WriteError::Rejected)?);
                senders.push(message.sender_id.as_str());
                client_msg_ids.push(message.client_msg_id.as_str());
                kinds.push(message.kind.as_str());
                bodies.push(message.body.as_str());
                media_keys.push(message.media_key.as_deref());
                created_ats.push(message.created_at);
                for user in &message.push_to {
                    push_messages.push(message.message_id);
                    push_users.push(user.as_str());
                }
                appended.push(Appended::Inserted(inserted_view(
                    batch.conversation_id,
                    message,
                    seq,
                )));
            }
            written.push(appended);
        }
        if total == 0 {
            return Ok(Some(written));
        }
        let inserted: Result<i64, _> = sqlx::query_scalar(FAST_INSERT)
            .bind(ids)
            .bind(conversations)
            .bind(seqs)
            .bind(senders)
            .bind(client_msg_ids)
            .bind(kinds)
            .bind(bodies)
            .bind(media_keys)
            .bind(created_ats)
            .bind(push_messages)
            .bind(push_users)
            .fetch_one(conn)
            .await;
        match inserted {
            Ok(inserted) if usize::try_from(inserted).ok() == Some(total) => Ok(Some(written)),
            Ok(inserted) => Err(WriteError::Store(StoreError::Corrupt(format!(
                "group commit inserted {inserted} of {total} messages"
            )))),
            // A retried send: nothing was written; the step-wise path finds
            // the stored message.
            Err(sqlx::Error::Database(db))
                if is_unique_violation(db.as_ref())
                    && db.constraint() == Some(CLIENT_MSG_ID_CONSTRAINT) =>
            {
                Ok(None)
            }
            Err(err) => {
                // Which batch and seq is unknown here; the caller retries
                // batch by batch, which pins it down.
                let first = &batches[0];
                Err(WriteError::classify::<Postgres>(
                    err,
                    first.conversation_id,
                    first.first_seq,
                ))
            }
        }
    }
}
