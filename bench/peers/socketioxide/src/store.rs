//! Storage: sqlx on one SQLite file in WAL mode with synchronous=NORMAL and
//! a busy timeout, the Node peer's schema. Cluster nodes open the same file
//! (as the Node peer's do); SQLite's busy handler makes a writer wait for
//! another process's commit.

use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqliteSynchronous};
use sqlx::{FromRow, Row};
use ulid::Generator;

const SCHEMA: &str = "
  CREATE TABLE IF NOT EXISTS users (id TEXT PRIMARY KEY, email TEXT UNIQUE, password_hash TEXT,
    display_name TEXT, city TEXT, role TEXT, created_at TEXT);
  CREATE TABLE IF NOT EXISTS issues (id TEXT PRIMARY KEY, title TEXT, description TEXT, city TEXT,
    category TEXT, priority TEXT, status TEXT, upvotes INTEGER DEFAULT 0, reported_by TEXT,
    assigned_to TEXT, created_at TEXT, updated_at TEXT);
  CREATE TABLE IF NOT EXISTS upvotes (issue_id TEXT, user_id TEXT, PRIMARY KEY (issue_id, user_id));
  CREATE TABLE IF NOT EXISTS messages (id TEXT PRIMARY KEY, issue_id TEXT, author_id TEXT,
    author_name TEXT, content TEXT, created_at TEXT);
";

#[derive(Debug, Clone, Serialize, FromRow)]
#[serde(rename_all = "camelCase")]
pub struct Issue {
    #[sqlx(rename = "id")]
    pub issue_id: String,
    pub title: Option<String>,
    pub description: Option<String>,
    pub city: Option<String>,
    pub category: Option<String>,
    pub priority: Option<String>,
    pub status: Option<String>,
    pub upvotes: i64,
    pub reported_by: Option<String>,
    pub assigned_to: Option<String>,
    pub created_at: Option<String>,
    pub updated_at: Option<String>,
}

pub struct NewUser<'a> {
    pub id: &'a str,
    pub email: &'a str,
    pub password_hash: &'a str,
    pub display_name: &'a str,
    pub city: Option<&'a str>,
    pub role: &'a str,
    pub created_at: &'a str,
}

pub struct NewMessage<'a> {
    pub id: &'a str,
    pub issue_id: &'a str,
    pub author_id: &'a str,
    pub author_name: &'a str,
    pub content: &'a str,
    pub created_at: &'a str,
}

/// The pool, and ULIDs that grow within a millisecond (as the Node peer's
/// monotonic factory) so that `ORDER BY id DESC` is newest first.
pub struct Db {
    pool: SqlitePool,
    ids: Mutex<Generator>,
}

impl Db {
    pub async fn open(path: &str) -> Result<Self, sqlx::Error> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePool::connect_with(options).await?;
        sqlx::raw_sql(SCHEMA).execute(&pool).await?;
        Ok(Self { pool, ids: Mutex::new(Generator::new()) })
    }

    pub fn new_id(&self, prefix: &str) -> String {
        let mut ids = self.ids.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        // Overflow needs 2^80 ids in one millisecond; fall back to a fresh one.
        let id = ids.generate().unwrap_or_else(|_| ulid::Ulid::generate());
        format!("{prefix}{id}")
    }

    /// False when the e-mail is taken.
    pub async fn insert_user(&self, user: &NewUser<'_>) -> Result<bool, sqlx::Error> {
        let result = sqlx::query("INSERT INTO users VALUES (?, ?, ?, ?, ?, ?, ?)")
            .bind(user.id)
            .bind(user.email)
            .bind(user.password_hash)
            .bind(user.display_name)
            .bind(user.city)
            .bind(user.role)
            .bind(user.created_at)
            .execute(&self.pool)
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Ok(false),
            Err(e) => Err(e),
        }
    }

    pub async fn insert_issue(&self, issue: &Issue) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO issues (id, title, description, city, category, priority, status, upvotes,
              reported_by, assigned_to, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, 'open', 0, ?, NULL, ?, ?)",
        )
        .bind(&issue.issue_id)
        .bind(&issue.title)
        .bind(&issue.description)
        .bind(&issue.city)
        .bind(&issue.category)
        .bind(&issue.priority)
        .bind(&issue.reported_by)
        .bind(&issue.created_at)
        .bind(&issue.updated_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn issue_exists(&self, id: &str) -> Result<bool, sqlx::Error> {
        Ok(sqlx::query("SELECT 1 FROM issues WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .is_some())
    }

    pub async fn issue(&self, id: &str) -> Result<Option<Issue>, sqlx::Error> {
        sqlx::query_as("SELECT * FROM issues WHERE id = ?").bind(id).fetch_optional(&self.pool).await
    }

    /// Newest first; `limit` + 1 rows so the caller knows if more follow.
    pub async fn issues(&self, limit: u32) -> Result<Vec<Issue>, sqlx::Error> {
        sqlx::query_as("SELECT * FROM issues ORDER BY id DESC LIMIT ?")
            .bind(i64::from(limit) + 1)
            .fetch_all(&self.pool)
            .await
    }

    /// One transaction: the upvote if new, the counter bumped with it, and
    /// the count. Returns (changed, upvotes).
    pub async fn upvote(&self, issue_id: &str, user_id: &str) -> Result<(bool, i64), sqlx::Error> {
        // The first statement writes, so the transaction takes the write
        // lock at once (waiting in the busy handler), as BEGIN IMMEDIATE.
        let mut tx = self.pool.begin().await?;
        let changed = sqlx::query("INSERT OR IGNORE INTO upvotes VALUES (?, ?)")
            .bind(issue_id)
            .bind(user_id)
            .execute(&mut *tx)
            .await?
            .rows_affected()
            == 1;
        if changed {
            sqlx::query("UPDATE issues SET upvotes = upvotes + 1 WHERE id = ?")
                .bind(issue_id)
                .execute(&mut *tx)
                .await?;
        }
        let upvotes: i64 = sqlx::query("SELECT upvotes FROM issues WHERE id = ?")
            .bind(issue_id)
            .fetch_one(&mut *tx)
            .await?
            .try_get(0)?;
        tx.commit().await?;
        Ok((changed, upvotes))
    }

    pub async fn insert_message(&self, m: &NewMessage<'_>) -> Result<(), sqlx::Error> {
        sqlx::query("INSERT INTO messages VALUES (?, ?, ?, ?, ?, ?)")
            .bind(m.id)
            .bind(m.issue_id)
            .bind(m.author_id)
            .bind(m.author_name)
            .bind(m.content)
            .bind(m.created_at)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

/// An ISO 8601 time with milliseconds, as JavaScript's `toISOString`.
pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
