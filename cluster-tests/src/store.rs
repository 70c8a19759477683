//! A fresh store per test: a SQLite file in a temp dir, or a new database
//! on the real PostgreSQL server (dropped afterwards).

use sqlx::Connection;

/// Where the PostgreSQL server is; tests never skip when it is missing.
pub fn postgres_admin_url() -> String {
    std::env::var("TURBOCHAT_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A store for one test.
pub struct TestStore {
    /// `sqlite:...` or `postgres://...`.
    pub url: String,
    /// Temp dir holding logs (and the SQLite file).
    pub dir: tempfile::TempDir,
    postgres_db: Option<String>,
}

impl TestStore {
    /// A SQLite file in a new temp dir.
    pub fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite:{}", dir.path().join("chat.db").display());
        TestStore {
            url,
            dir,
            postgres_db: None,
        }
    }

    /// A new, empty database on the PostgreSQL server.
    pub async fn postgres() -> Self {
        let admin = postgres_admin_url();
        let name = format!("tc_e2e_{}", uuid::Uuid::new_v4().simple());
        let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap_or_else(|e| {
            panic!("PostgreSQL is required and not reachable at {admin} (set TURBOCHAT_TEST_POSTGRES_URL): {e}")
        });
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .expect("create test database");
        let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin);
        TestStore {
            url: format!("{base}/{name}"),
            dir: tempfile::tempdir().expect("temp dir"),
            postgres_db: Some(name),
        }
    }
}

impl TestStore {
    /// Whether this is the PostgreSQL store.
    pub fn is_postgres(&self) -> bool {
        self.postgres_db.is_some()
    }

    /// Runs SQL statements against the store, as an operator would (e.g. to
    /// install a fault in a test's own database).
    pub async fn execute(&self, sql: &str) {
        use sqlx::Executor;
        if self.is_postgres() {
            let mut conn = sqlx::PgConnection::connect(&self.url)
                .await
                .expect("connect to the test database");
            conn.execute(sql).await.expect("test SQL runs");
        } else {
            let mut conn = sqlx::SqliteConnection::connect(&self.url)
                .await
                .expect("open the test database");
            conn.execute(sql).await.expect("test SQL runs");
        }
    }
}

impl TestStore {
    /// Runs one query whose columns are all text and returns its rows.
    pub async fn rows(&self, sql: &str) -> Vec<Vec<String>> {
        use sqlx::Row;
        if self.is_postgres() {
            let mut conn = sqlx::PgConnection::connect(&self.url)
                .await
                .expect("connect to the test database");
            sqlx::query(sql)
                .fetch_all(&mut conn)
                .await
                .expect("test SQL runs")
                .iter()
                .map(|row| (0..row.len()).map(|i| row.get::<String, _>(i)).collect())
                .collect()
        } else {
            let mut conn = sqlx::SqliteConnection::connect(&self.url)
                .await
                .expect("open the test database");
            sqlx::query(sql)
                .fetch_all(&mut conn)
                .await
                .expect("test SQL runs")
                .iter()
                .map(|row| (0..row.len()).map(|i| row.get::<String, _>(i)).collect())
                .collect()
        }
    }
}

impl Drop for TestStore {
    fn drop(&mut self) {
        if std::env::var_os("TURBOCHAT_KEEP_LOGS").is_some() {
            eprintln!("logs kept in {}", self.dir.path().display());
            let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("temp dir"));
            let _ = dir.keep();
        }
        let Some(name) = self.postgres_db.take() else {
            return;
        };
        // Drop runs outside any runtime we can block on: use a thread.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async {
                if let Ok(mut conn) = sqlx::PgConnection::connect(&postgres_admin_url()).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&mut conn)
                        .await;
                }
            });
        })
        .join();
    }
}
