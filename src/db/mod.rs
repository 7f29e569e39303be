//! Storage: one diesel code path over SQLite or PostgreSQL, chosen by the
//! DATABASE_URL scheme, behind an r2d2 pool. Every query runs on actix's
//! blocking thread pool through [`Db::run`], never on an async worker.

pub mod batch;
pub mod models;

use std::time::Duration;

use diesel::connection::{SimpleConnection, TransactionManager};
use diesel::prelude::*;
use diesel::r2d2::R2D2Connection;
use diesel::{PgConnection, SqliteConnection};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

use crate::config::DatabaseUrl;

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
}

impl r2d2::ManageConnection for Manager {
    type Connection = AnyConnection;
    type Error = diesel::ConnectionError;

    fn connect(&self) -> Result<AnyConnection, Self::Error> {
        match &self.url {
            DatabaseUrl::Postgres(url) => PgConnection::establish(url).map(AnyConnection::Postgres),
            DatabaseUrl::Sqlite(path) => {
                let mut conn = SqliteConnection::establish(&path.to_string_lossy())?;
                // WAL lets readers run beside the one writer; the busy timeout
                // makes concurrent writers queue instead of failing.
                conn.batch_execute(
                    "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                     PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON;",
                )
                .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
                Ok(AnyConnection::Sqlite(conn))
            }
        }
    }

    fn is_valid(&self, conn: &mut AnyConnection) -> Result<(), Self::Error> {
        conn.ping().map_err(diesel::ConnectionError::CouldntSetupConfiguration)
    }

    fn has_broken(&self, conn: &mut AnyConnection) -> bool {
        conn.is_broken()
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
}

impl Db {
    /// Opens the pool (failing fast if the database cannot be reached) and
    /// brings the schema up to date.
    pub fn open(url: &DatabaseUrl, pool_size: u32) -> Result<Self, DbError> {
        let pool = r2d2::Pool::builder()
            .max_size(pool_size)
            .min_idle(Some(1))
            .connection_timeout(Duration::from_secs(10))
            .build(Manager { url: url.clone() })?;
        let db = Self { pool };
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
        let pool = self.pool.clone();
        actix_web::web::block(move || {
            let mut conn = pool.get().map_err(|e| E::from(DbError::Unavailable(e)))?;
            f(&mut conn)
        })
        .await
        .map_err(|e| E::from(DbError::Blocking(e.to_string())))?
    }

    /// Synchronous access, for the command line and the batching writer.
    pub fn get(&self) -> Result<r2d2::PooledConnection<Manager>, DbError> {
        self.pool.get().map_err(DbError::Unavailable)
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
