//! Storage: one diesel code path over SQLite or PostgreSQL, chosen by the
//! DATABASE_URL scheme, behind an r2d2 pool. Every query runs on actix's
//! blocking thread pool through [`Db::run`], never on an async worker.

pub mod batch;
mod checkpoint;
pub mod models;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use diesel::connection::{AnsiTransactionManager, SimpleConnection, TransactionManager};
use diesel::prelude::*;
use diesel::r2d2::R2D2Connection;
use diesel::{PgConnection, SqliteConnection};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

use crate::config::DatabaseUrl;
use crate::metrics::DbStats;

const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");
/// The PostgreSQL advisory lock nodes take turns on to migrate (any number
/// of CivicPulse's own; "civicpul" in ASCII).
const MIGRATION_LOCK: i64 = 0x6369_7669_6370_756c;

/// A connection to whichever backend is configured. Query code is written
/// once against this type; diesel generates the per-backend dispatch.
#[derive(diesel::MultiConnection)]
pub enum AnyConnection {
    Postgres(PgConnection),
    Sqlite(SqliteConnection),
}

/// Builds connections for the pool, for exactly the configured backend
/// (diesel's own manager would try every backend in turn on any URL).
pub struct Manager {
    url: DatabaseUrl,
    health: Arc<Health>,
}

impl r2d2::ManageConnection for Manager {
    type Connection = AnyConnection;
    type Error = diesel::ConnectionError;

    fn connect(&self) -> Result<AnyConnection, Self::Error> {
        let connected = self.establish();
        match &connected {
            Ok(_) => self.health.answered(),
            Err(e) => self.health.failed(e),
        }
        connected
    }

    /// Run on every checkout. A PostgreSQL connection may have been cut
    /// since it was last used (a restart, a failover), and the ping finds
    /// that before a request does; a SQLite connection is a file handle in
    /// this process and cannot go stale, so it is not pinged.
    fn is_valid(&self, conn: &mut AnyConnection) -> Result<(), Self::Error> {
        match conn {
            AnyConnection::Postgres(_) => {
                conn.ping().map_err(diesel::ConnectionError::CouldntSetupConfiguration)
            }
            AnyConnection::Sqlite(_) => Ok(()),
        }
    }

    fn has_broken(&self, conn: &mut AnyConnection) -> bool {
        conn.is_broken()
    }
}

impl Manager {
    fn establish(&self) -> Result<AnyConnection, diesel::ConnectionError> {
        match &self.url {
            DatabaseUrl::Postgres(url) => PgConnection::establish(url).map(AnyConnection::Postgres),
            DatabaseUrl::Sqlite(path) => {
                let mut conn = SqliteConnection::establish(&path.to_string_lossy())?;
                // WAL lets readers run beside the one writer; the busy timeout
                // makes concurrent writers queue instead of failing. No
                // connection checkpoints on commit: the checkpointer does.
                conn.batch_execute(
                    "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                     PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON; \
                     PRAGMA wal_autocheckpoint = 0;",
                )
                .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
                Ok(AnyConnection::Sqlite(conn))
            }
        }
    }
}

/// Whether the database answers, as the pool last found: the one place an
/// outage is logged, once when it starts and once when it ends, however
/// many requests it refuses meanwhile.
struct Health {
    stats: Arc<DbStats>,
    /// `stats.unavailable` when the outage began.
    refused_before: AtomicU64,
}

impl Health {
    fn failed(&self, cause: &dyn std::fmt::Display) {
        if self.stats.up.swap(0, Ordering::Relaxed) == 1 {
            self.refused_before.store(self.stats.unavailable.load(Ordering::Relaxed), Ordering::Relaxed);
            log::warn!(target: "civicpulse::db", "database unavailable: {cause}; what needs it is answered 503 until it is back");
        }
    }

    fn answered(&self) {
        if self.stats.up.swap(1, Ordering::Relaxed) == 0 {
            let refused = self
                .stats
                .unavailable
                .load(Ordering::Relaxed)
                .saturating_sub(self.refused_before.load(Ordering::Relaxed));
            log::info!(target: "civicpulse::db", "database answers again; {refused} request(s) found no connection meanwhile");
        }
    }

    /// A caller got no connection within the pool's timeout.
    fn refused(&self, e: &r2d2::Error) {
        self.stats.unavailable.fetch_add(1, Ordering::Relaxed);
        self.failed(e);
    }
}

/// r2d2 logs every failed attempt at error level (a line per retry during
/// an outage); the manager reports connection failures to [`Health`]
/// instead, and a pooled connection found dead is simply replaced.
#[derive(Debug)]
struct QuietErrors;

impl r2d2::HandleError<diesel::ConnectionError> for QuietErrors {
    fn handle_error(&self, e: diesel::ConnectionError) {
        log::debug!(target: "civicpulse::db", "pool: {e}");
    }
}

/// How the pool is sized, and how long a caller waits for a connection.
pub struct PoolOptions {
    pub size: u32,
    /// Beyond it the caller is told the database is unavailable (503): a
    /// request must not hang for as long as an outage lasts.
    pub timeout: Duration,
    /// Where the pool's health is counted (the node's `/metrics`).
    pub stats: Arc<DbStats>,
}

impl PoolOptions {
    /// One connection, for the command line.
    pub fn single(timeout: Duration) -> Self {
        Self { size: 1, timeout, stats: Default::default() }
    }
}

/// What storage itself can fail at. Query code above this layer maps it
/// into its own error (the domain: `impl From<DbError> for DomainError`).
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("cannot open the database: {0}")]
    Connect(#[from] r2d2::Error),
    #[error("cannot run migrations: {0}")]
    Migrate(String),
    #[error("cannot start the checkpointer: {0}")]
    Checkpointer(String),
    /// No pooled connection in time: the database is down or saturated.
    #[error("{0}")]
    Unavailable(r2d2::Error),
    #[error("blocking task failed: {0}")]
    Blocking(String),
    #[error(transparent)]
    Query(#[from] diesel::result::Error),
}

#[derive(Clone)]
pub struct Db {
    pool: r2d2::Pool<Manager>,
    health: Arc<Health>,
    /// SQLite only: stops the checkpointer when the last clone is dropped.
    _checkpointer: Option<Arc<checkpoint::Checkpointer>>,
}

impl Db {
    /// Opens the pool (failing fast if the database cannot be reached) and
    /// brings the schema up to date.
    pub fn open(url: &DatabaseUrl, options: PoolOptions) -> Result<Self, DbError> {
        options.stats.up.store(1, Ordering::Relaxed);
        let health = Arc::new(Health { stats: options.stats, refused_before: AtomicU64::new(0) });
        let pool = r2d2::Pool::builder()
            .max_size(options.size)
            .min_idle(Some(1))
            .connection_timeout(options.timeout)
            .error_handler(Box::new(QuietErrors))
            .build(Manager { url: url.clone(), health: health.clone() })?;
        let checkpointer = match url {
            DatabaseUrl::Sqlite(path) => Some(Arc::new(checkpoint::Checkpointer::start(path)?)),
            DatabaseUrl::Postgres(_) => None,
        };
        let db = Self { pool, health, _checkpointer: checkpointer };
        db.migrate()?;
        Ok(db)
    }

    pub fn migrate(&self) -> Result<(), DbError> {
        let mut conn = self.pool.get()?;
        // Nodes of a cluster start together on one database: on PostgreSQL
        // they take turns (an advisory lock, held by this connection until
        // it is released or closes), so that the first migrates and the
        // others find nothing pending. SQLite's write lock does this alone.
        let turns = matches!(&mut *conn, AnyConnection::Postgres(_));
        if turns {
            diesel::sql_query(format!("SELECT pg_advisory_lock({MIGRATION_LOCK})"))
                .execute(&mut *conn)
                .map_err(|e| DbError::Migrate(format!("cannot take the migration lock: {e}")))?;
        }
        let migrated =
            conn.run_pending_migrations(MIGRATIONS).map(|_| ()).map_err(|e| DbError::Migrate(e.to_string()));
        if turns {
            let _ =
                diesel::sql_query(format!("SELECT pg_advisory_unlock({MIGRATION_LOCK})")).execute(&mut *conn);
        }
        migrated
    }

    /// Runs `f` with a pooled connection on the blocking thread pool. `f`
    /// fails in the caller's own error type, so query code keeps its
    /// error; this layer's failures (no connection, the pool thread lost)
    /// are converted into it.
    pub async fn run<T, E>(
        &self,
        f: impl FnOnce(&mut AnyConnection) -> Result<T, E> + Send + 'static,
    ) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<DbError> + Send + 'static,
    {
        let db = self.clone();
        actix_web::web::block(move || {
            let mut conn = db.get().map_err(E::from)?;
            f(&mut conn)
        })
        .await
        .map_err(|e| E::from(DbError::Blocking(e.to_string())))?
    }

    /// Synchronous access, for the command line and the batching writer.
    pub fn get(&self) -> Result<r2d2::PooledConnection<Manager>, DbError> {
        match self.pool.get() {
            Ok(conn) => {
                self.health.answered();
                Ok(conn)
            }
            Err(e) => {
                self.health.refused(&e);
                Err(DbError::Unavailable(e))
            }
        }
    }

    pub async fn ping(&self) -> bool {
        self.run(|conn| conn.ping().map_err(DbError::Query)).await.is_ok()
    }
}

/// A transaction that takes the write lock up front. On SQLite a deferred
/// transaction that reads and then writes can fail with SQLITE_BUSY without
/// waiting; `BEGIN IMMEDIATE` queues on the busy timeout instead. PostgreSQL
/// gets an ordinary transaction.
pub fn write_transaction<T, E, F>(conn: &mut AnyConnection, f: F) -> Result<T, E>
where
    F: FnOnce(&mut AnyConnection) -> Result<T, E>,
    E: From<diesel::result::Error>,
{
    match conn {
        AnyConnection::Postgres(_) => conn.transaction(f),
        AnyConnection::Sqlite(inner) => {
            use diesel::connection::AnsiTransactionManager as Tm;
            Tm::begin_transaction_sql(inner, "BEGIN IMMEDIATE")?;
            let result = f(conn);
            let AnyConnection::Sqlite(inner) = conn else { unreachable!("backend cannot change") };
            match result {
                Ok(value) => {
                    Tm::commit_transaction(inner)?;
                    Ok(value)
                }
                Err(e) => {
                    Tm::rollback_transaction(inner)?;
                    Err(e)
                }
            }
        }
    }
}

/// Why a [`Fence::transaction`] failed.
#[derive(Debug)]
pub enum FencedError<T, E> {
    /// Before COMMIT: nothing of it is stored.
    Failed(E),
    /// COMMIT went out and no answer came back (the connection was cut):
    /// it may or may not be stored. `T` is what the transaction made;
    /// [`Fence::settle`] waits until the outcome is final, after which a
    /// look at the rows tells which it was.
    InDoubt(T, diesel::result::Error),
}

/// The transactions of one writer, made so that the outcome of one whose
/// COMMIT lost its answer can be known for sure. On PostgreSQL each holds a
/// transaction-level advisory lock of the writer's own: the server lets go
/// of it only when that transaction has ended, committed or rolled back, so
/// once the writer holds it again no earlier transaction of its own can
/// still commit (a COMMIT stuck in a partitioned link included). SQLite is
/// a local file: a failed COMMIT there is final at once.
pub struct Fence {
    key: i64,
}

impl Default for Fence {
    fn default() -> Self {
        // One per writer and process; two writers sharing one would wait on
        // each other, and [`Fence::settle`] would end the other's work.
        Self { key: rand::random() }
    }
}

impl Fence {
    /// A write transaction (on SQLite `BEGIN IMMEDIATE`, as
    /// [`write_transaction`]) that says whether a failure happened before
    /// COMMIT or at it.
    pub fn transaction<T, E, F>(&self, conn: &mut AnyConnection, f: F) -> Result<T, FencedError<T, E>>
    where
        F: FnOnce(&mut AnyConnection) -> Result<T, E>,
        E: From<diesel::result::Error>,
    {
        let begun = match conn {
            AnyConnection::Postgres(inner) => {
                let sql = format!("BEGIN; SELECT pg_advisory_xact_lock({})", self.key);
                let begun = AnsiTransactionManager::begin_transaction_sql(inner, &sql);
                if begun.is_err() {
                    // The BEGIN may have run and the lock not: the server
                    // must not keep an open transaction diesel knows
                    // nothing of.
                    let _ = inner.batch_execute("ROLLBACK");
                }
                begun
            }
            AnyConnection::Sqlite(inner) => {
                AnsiTransactionManager::begin_transaction_sql(inner, "BEGIN IMMEDIATE")
            }
        };
        begun.map_err(|e| FencedError::Failed(e.into()))?;
        let result = f(conn);
        let ended = match (conn, &result) {
            (AnyConnection::Postgres(inner), Ok(_)) => AnsiTransactionManager::commit_transaction(inner),
            (AnyConnection::Sqlite(inner), Ok(_)) => AnsiTransactionManager::commit_transaction(inner),
            // A failed rollback leaves the connection broken (the pool
            // drops it); the server rolls back when it closes.
            (AnyConnection::Postgres(inner), Err(_)) => {
                let _ = AnsiTransactionManager::rollback_transaction(inner);
                Ok(())
            }
            (AnyConnection::Sqlite(inner), Err(_)) => {
                let _ = AnsiTransactionManager::rollback_transaction(inner);
                Ok(())
            }
        };
        match (result, ended) {
            (Ok(value), Ok(())) => Ok(value),
            (Ok(value), Err(e)) => Err(FencedError::InDoubt(value, e)),
            (Err(e), _) => Err(FencedError::Failed(e)),
        }
    }

    /// Waits until no earlier transaction of this fence can still commit,
    /// on a connection other than the one that lost its answer; false if
    /// one still can after a few seconds. A backend that still holds the
    /// lock after a second has lost its client without noticing yet: it is
    /// ended.
    pub fn settle(&self, conn: &mut AnyConnection) -> QueryResult<bool> {
        if !matches!(conn, AnyConnection::Postgres(_)) {
            return Ok(true);
        }
        // pg_locks shows a bigint advisory key as two 32-bit halves.
        let (high, low) = ((self.key as u64) >> 32, self.key as u64 & 0xffff_ffff);
        for attempt in 0..50 {
            let taken: bool = conn.transaction(|conn| {
                diesel::select(diesel::dsl::sql::<diesel::sql_types::Bool>(&format!(
                    "pg_try_advisory_xact_lock({})",
                    self.key
                )))
                .get_result(conn)
            })?;
            if taken {
                return Ok(true);
            }
            if attempt == 10 {
                let ended = diesel::sql_query(format!(
                    "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' \
                     AND classid::bigint = {high} AND objid::bigint = {low} AND objsubid = 1 \
                     AND granted AND pid <> pg_backend_pid()"
                ))
                .execute(conn)?;
                log::warn!(target: "civicpulse::db", "ended database session(s) of a write that outlived its connection: {ended}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(false)
    }
}

/// True when `e` is a unique-constraint violation (a duplicate row).
pub fn is_unique_violation(e: &diesel::result::Error) -> bool {
    matches!(e, diesel::result::Error::DatabaseError(diesel::result::DatabaseErrorKind::UniqueViolation, _))
}

/// Runs an insert that may hit a unique key, answering how many rows it
/// added (0 for a duplicate). It runs in a savepoint, so a duplicate leaves
/// an enclosing PostgreSQL transaction usable.
pub fn insert_unless_duplicate(
    conn: &mut AnyConnection,
    insert: impl FnOnce(&mut AnyConnection) -> QueryResult<usize>,
) -> QueryResult<usize> {
    match conn.transaction(insert) {
        Err(e) if is_unique_violation(&e) => Ok(0),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use diesel::prelude::*;
    use diesel::sql_types::Text;

    #[derive(QueryableByName)]
    struct CompileOption {
        #[diesel(sql_type = Text)]
        compile_options: String,
    }

    /// `.cargo/config.toml` builds the bundled SQLite with QPSG: without it,
    /// every query with a bound LIMIT is parsed again on each execution.
    #[test]
    fn sqlite_is_built_with_the_query_planner_stability_guarantee() {
        let mut conn = diesel::SqliteConnection::establish(":memory:").expect("in-memory SQLite");
        let options: Vec<CompileOption> =
            diesel::sql_query("PRAGMA compile_options").load(&mut conn).expect("compile options");
        assert!(
            options.iter().any(|o| o.compile_options == "ENABLE_QPSG"),
            "LIBSQLITE3_FLAGS lost -DSQLITE_ENABLE_QPSG"
        );
    }
}
