//! SQLite's WAL checkpoints, on a thread of their own. By default the commit
//! that takes the WAL past 1,000 pages copies it back into the database and
//! fsyncs both files before it returns; every chat message queued behind
//! the batch writer then waits for that fsync, which on a busy disk takes
//! tens of milliseconds (the rooms benchmark's p99). Here no connection
//! checkpoints on commit (`wal_autocheckpoint = 0`, see `Manager`), and this
//! thread runs a PASSIVE checkpoint every [`INTERVAL`]: it waits for no
//! reader or writer, so commits carry on while it copies and syncs.

use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use diesel::prelude::*;
use diesel::sql_types::Integer;
use diesel::{QueryableByName, SqliteConnection};

use super::DbError;

/// Short enough that the WAL stays small under a write burst (a few
/// thousand pages at most), long enough that an idle server does nothing.
const INTERVAL: Duration = Duration::from_millis(250);

/// Dropping it ends the thread.
pub struct Checkpointer {
    _stop: mpsc::Sender<()>,
}

#[derive(QueryableByName)]
struct Outcome {
    #[diesel(sql_type = Integer)]
    busy: i32,
    #[diesel(sql_type = Integer)]
    log: i32,
    #[diesel(sql_type = Integer)]
    checkpointed: i32,
}

impl Checkpointer {
    pub fn start(path: &Path) -> Result<Self, DbError> {
        let mut conn = SqliteConnection::establish(&path.to_string_lossy())
            .map_err(|e| DbError::Checkpointer(e.to_string()))?;
        let (stop, stopped) = mpsc::channel::<()>();
        std::thread::Builder::new()
            .name("civicpulse-checkpoint".into())
            .spawn(move || {
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(INTERVAL) {
                    match diesel::sql_query("PRAGMA wal_checkpoint(PASSIVE)").get_result::<Outcome>(&mut conn) {
                        Ok(o) => log::trace!(target: "civicpulse::db", "checkpoint: busy={} wal={} copied={}", o.busy, o.log, o.checkpointed),
                        // Next time, then: a failed checkpoint loses nothing.
                        Err(e) => log::debug!(target: "civicpulse::db", "checkpoint: {e}"),
                    }
                }
            })
            .map_err(|e| DbError::Checkpointer(e.to_string()))?;
        Ok(Self { _stop: stop })
    }
}
