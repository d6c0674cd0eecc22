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
//! Writes go through a single connection (`write`), so our own writers never contend for the
//! SQLite lock; reads use a small separate pool. No transaction is ever held across an HTTP call:
//! the engine claims and commits, calls, then records and commits.

mod import;
mod jobs;
mod staging;

pub use import::{Conflicts, ImportCheck, ImportConflict, ImportSummary};
pub use jobs::*;
pub use staging::{Batch, Staging};

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
        let opts = SqliteConnectOptions::from_str("sqlite://")?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(30))
            .foreign_keys(true);
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(opts.clone())
            .await
            .with_context(|| format!("cannot open the database {}", path.display()))?;
        sqlx::migrate!("./migrations")
            .run(&write)
            .await
            .with_context(|| format!("cannot prepare the database {}", path.display()))?;
        restrict_permissions(path);
        let read = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(opts.read_only(true))
            .await?;
        Ok(Store { write, read })
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

/// The database holds prompts and request ids: owner-only, like other secrets-adjacent files.
fn restrict_permissions(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for suffix in ["", "-wal", "-shm"] {
            let mut p = path.as_os_str().to_owned();
            p.push(suffix);
            let _ = std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600));
        }
    }
}

#[cfg(test)]
mod tests;
