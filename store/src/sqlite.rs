//! SQLite, the embedded default: one file, nothing else to install.
//!
//! Everything but connecting and migrating is the shared SQL of
//! `sql.rs`; `append` writes message by message inside one
//! `BEGIN IMMEDIATE` transaction, which in-process costs little next to the
//! commit's fsync.
//!
//! Durability: the database runs in WAL mode with `synchronous=FULL`, so a
//! commit returns only after the WAL is fsynced. A message acked after
//! `append` returns survives `kill -9` and power loss.

use std::str::FromStr;
use std::time::Duration;

use sqlx::error::DatabaseError;
use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePoolOptions,
    SqliteQueryResult, SqliteSynchronous,
};
use sqlx::Sqlite;

use crate::sql::{
    claimed_job_columns, impl_store_via_sql, is_unique_violation, Backend, SqlStore, WriteError,
};
use crate::{Appended, ConversationBatch, StoreError};

/// How long a connection waits for another one's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// SQLite names no constraint in its errors; it lists the columns:
/// `UNIQUE constraint failed: messages.conversation_id, messages.seq`.
const SEQ_CONFLICT_COLUMNS: &str = "messages.conversation_id, messages.seq";

static MIGRATOR: Migrator = sqlx::migrate!("../migrations/sqlite");

/// The store on an SQLite file. Cheap to share behind an `Arc`; every
/// operation takes a connection from its pool.
pub struct SqliteStore {
    sql: SqlStore<Sqlite>,
}

impl SqliteStore {
    /// Opens the database named by `url` (`sqlite:path/to/file.db`,
    /// `sqlite://path`, `sqlite::memory:`), creating the file (and its directory) if missing,
    /// with a pool of at most `max_connections` (at least 1). An in-memory
    /// database is shared by the pool's connections and lives as long as the
    /// store. Every
    /// connection uses WAL, `synchronous=FULL` (an acked commit is durable
    /// even on power loss), a 5 s busy timeout and enforced foreign keys.
    /// Does not migrate: call [`crate::Store::migrate`] (or use
    /// [`crate::open`], which does).
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str(url)?;
        // A fresh machine has no `data/` yet: the embedded default must
        // just run.
        let file = options.get_filename().to_path_buf();
        if !url.contains(":memory:") && !url.contains("mode=memory") {
            if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| {
                    StoreError::Database(sqlx::Error::Configuration(
                        format!("cannot create {}: {e}", dir.display()).into(),
                    ))
                })?;
            }
        }
        let options = options
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        let mut pool = SqlitePoolOptions::new().max_connections(max_connections.max(1));
        if url.contains(":memory:") || url.contains("mode=memory") {
            // An in-memory database lives only while a connection is open:
            // keep one open for the life of the pool.
            pool = pool
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None);
        }
        let pool = pool.connect_with(options).await?;
        Ok(SqliteStore {
            sql: SqlStore::new(pool),
        })
    }

    /// The embedded migrations of `migrations/sqlite`.
    fn migrator() -> &'static Migrator {
        &MIGRATOR
    }
}

impl_store_via_sql!(SqliteStore);

impl Backend for Sqlite {
    const BEGIN_WRITE: &'static str = "BEGIN IMMEDIATE";

    /// The step-wise path is many statements: it needs the transaction.
    const FAST_WRITE_IS_ONE_STATEMENT: bool = false;

    /// One statement: it holds SQLite's single write lock from the select
    /// to the update, so two claims (two nodes on one file) never overlap.
    const CLAIM_PUSH_JOBS: &'static str = concat!(
        "UPDATE push_outbox SET attempts = attempts + 1, next_attempt_at = $2, \
             locked_until = $2, claim_token = $3 \
         WHERE id IN (SELECT id FROM push_outbox \
             WHERE status = 'pending' AND next_attempt_at <= $1 \
             ORDER BY next_attempt_at, id LIMIT $4) \
         RETURNING ",
        claimed_job_columns!()
    );

    fn is_seq_conflict(err: &dyn DatabaseError) -> bool {
        is_unique_violation(err) && err.message().contains(SEQ_CONFLICT_COLUMNS)
    }

    const UPSERT_DEVICE: &'static str = crate::sql::upsert_device!("(token)");

    const CONTACTS: &'static str = "SELECT DISTINCT user_id FROM conversation_participants \
         WHERE conversation_id IN ( \
             SELECT conversation_id FROM conversation_participants WHERE user_id = $1) \
         AND user_id <> $1 \
         AND user_id NOT IN (SELECT blocked_id FROM user_blocks WHERE blocker_id = $1) \
         AND user_id NOT IN (SELECT blocker_id FROM user_blocks WHERE blocked_id = $1)";

    fn is_bad_data(err: &dyn DatabaseError) -> bool {
        // SQLITE_TOOBIG (18), SQLITE_MISMATCH (20); the code is the
        // extended result code, whose low byte is the primary one.
        err.code()
            .and_then(|code| code.parse::<i32>().ok())
            .is_some_and(|code| matches!(code & 0xff, 18 | 20))
    }

    fn rows_affected(result: &SqliteQueryResult) -> u64 {
        result.rows_affected()
    }

    async fn write_fast(
        conn: &mut SqliteConnection,
        batches: &[ConversationBatch],
    ) -> Result<Option<Vec<Vec<Appended>>>, WriteError> {
        SqlStore::<Sqlite>::write_stepwise(conn, batches)
            .await
            .map(Some)
    }
}
