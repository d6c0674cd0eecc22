//! The store: the one owner of SQL and of the database file, which is the truth about every job.
//!
//! Settings (on the connect options, so every connection has them):
//! - WAL, so `status` and `export` read while a run writes;
//! - `synchronous = FULL`: in WAL mode NORMAL may lose the last commits on power loss, and the
//!   commit that records a request_id must survive power loss, not only a process crash — a lost
//!   request_id is a paid video we can never fetch. FULL costs an fsync per commit; the engine
//!   keeps commits per job few;
//! - `busy_timeout`, foreign keys.
//!
//! The engine's writes go through one writer (`batch`: a thread with its own connection that
//! commits concurrent writes together); the other writes (imports, `retry`, start-up recovery)
//! through one sqlx connection (`write`) and never while the engine runs, so our own writers do
//! not contend for the SQLite lock. Reads use a small separate pool. No transaction is ever
//! held across an HTTP call: the engine claims and commits, calls, then records and commits.

mod assets;
mod batch;
mod direct;
pub mod door;
mod history;
mod import;
mod learnt;
pub mod migrate;
mod money;
mod pages;
pub mod pg;
mod queue;
mod records;
mod report;
mod review;
mod settings;
pub mod sql;
mod staging;
mod transitions;

pub use assets::{LocalFile, UPLOADS, UPLOADS_REPEATED};
pub use direct::{DirectImport, GiveUp};
pub use door::{AttemptKey, Guard, Transition};
pub use history::{Charge, HistoryTally, UnknownWork};
pub use import::{Conflicts, ImportCheck, ImportConflict, ImportSummary};
pub use money::{CostSummary, Oldest, Tally};
pub use pages::JobPages;
pub use records::*;
pub use report::{Histogram, Totals};
pub use review::{Decision, FlagTally, Rejected, ReviewChange, ReviewOf};
pub use settings::peek_settings;
pub use staging::{Batch, Staging};
pub use transitions::{RetryWhich, EXPIRED_SQL};

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};

use crate::state::JobState;

#[derive(Clone)]
pub struct Store {
    write: SqlitePool,
    read: SqlitePool,
    /// The engine's hot-path writes, group-committed (see `batch`).
    batch: batch::Batcher,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Store {
    /// Opens (creating if needed) the database at `path` and applies the migrations.
    pub async fn open(path: &Path) -> anyhow::Result<Store> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        }
        owner_only(path);
        let opts = SqliteConnectOptions::from_str("sqlite://")?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(30))
            .foreign_keys(true);
        // No test on acquire: it is a round trip to the connection's thread for every
        // transaction, and a SQLite connection does not go stale.
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .test_before_acquire(false)
            .connect_with(opts.clone())
            .await
            .with_context(|| format!("cannot open the database {}", path.display()))?;
        migrate::run(&write)
            .await
            .with_context(|| format!("cannot prepare the database {}", path.display()))?;
        let read = SqlitePoolOptions::new()
            .max_connections(4)
            .test_before_acquire(false)
            .connect_with(opts.read_only(true))
            .await?;
        let batch = batch::Batcher::start(path)
            .with_context(|| format!("cannot open the database {} for writing", path.display()))?;
        Ok(Store { write, read, batch })
    }

    /// Opens an existing database for reading only (`status`, `export`): never creates one.
    pub async fn open_existing(path: &Path) -> anyhow::Result<Store> {
        if !path.exists() {
            anyhow::bail!(
                "no database at {} (run `wanbatch import` or `wanbatch run` first)",
                path.display()
            );
        }
        Store::open(path).await
    }

    pub async fn close(&self) {
        self.batch.close().await;
        self.read.close().await;
        self.write.close().await;
    }

    /// Number of jobs in each state (all states listed, zeros included).
    pub async fn counts(&self) -> anyhow::Result<Vec<(JobState, i64)>> {
        let rows: Vec<(String, i64)> = sqlx::query_as("SELECT state, COUNT(*) FROM jobs GROUP BY state")
            .fetch_all(&self.read)
            .await?;
        Ok(JobState::ALL
            .into_iter()
            .map(|st| {
                let n = rows.iter().find(|(s, _)| s == st.as_str()).map_or(0, |(_, n)| *n);
                (st, n)
            })
            .collect())
    }
}

/// The database holds prompts, image URLs and request ids: owner-only (0600), like other
/// secrets-adjacent files (ssh, gpg, netrc). A new database file is *created* 0600 before SQLite
/// opens it — SQLite gives its -wal and -shm the database's mode — so there is no moment when it
/// is readable by others. One left by an older version or another tool is narrowed to 0600, with
/// its journals. Best effort: a database owned by someone else is left as it is.
fn owner_only(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let created = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path);
        if created.is_ok() {
            return;
        }
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let mut p = path.as_os_str().to_owned();
            p.push(suffix);
            if std::fs::metadata(&p).is_ok_and(|m| m.permissions().mode() & 0o077 != 0) {
                let _ = std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600));
            }
        }
    }
}

#[cfg(test)]
mod tests;
