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
pub mod db;
mod direct;
pub mod door;
mod history;
mod import;
mod learnt;
pub mod migrate;
mod money;
mod outputs;
mod pages;
pub mod pg;
mod queue;
mod records;
mod report;
mod review;
pub mod runner;
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
pub use outputs::ObjectUpload;
pub use pages::JobPages;
pub use records::*;
pub use report::{Histogram, Totals};
pub use review::{Decision, FlagTally, Rejected, ReviewChange, ReviewOf};
pub use runner::{key_hash, RunnerSeen, Taken};
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
    /// Writes and reads: on SQLite one writer connection and a small read-only pool; on
    /// PostgreSQL one pool for both.
    write: db::Db,
    read: db::Db,
    /// SQLite: the engine's hot-path writes, group-committed (see `batch`). PostgreSQL needs no
    /// writer thread (commits from many connections group by themselves).
    batch: Option<batch::Batcher>,
    /// PostgreSQL: this process as a runner of the campaign, once `run` registered it (its
    /// leases; see `runner`).
    runner: Option<std::sync::Arc<runner::Runner>>,
}

/// The database as messages name it: the file, or the URL without its password.
pub fn shown(db: &Path) -> String {
    let text = db.display().to_string();
    if !is_url(db) {
        return text;
    }
    match url::Url::parse(&text) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            }
            u.to_string()
        }
        Err(_) => "(a PostgreSQL URL)".into(),
    }
}

/// Whether a campaign database is there to open: a file that exists, or any PostgreSQL URL (the
/// server is asked when it is opened).
pub fn db_exists(db: &Path) -> bool {
    is_url(db) || db.exists()
}

/// Where a campaign's database is: a SQLite file, or a PostgreSQL URL (`postgres://…`).
pub fn is_url(db: &Path) -> bool {
    db.to_str()
        .is_some_and(|s| s.starts_with("postgres://") || s.starts_with("postgresql://"))
}

/// How long PostgreSQL lets a runner's session sit idle inside a transaction before ending it
/// (releasing its locks).
const IDLE_IN_TRANSACTION: &str = "10s";

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Store {
    /// Opens (creating if needed) the database at `path` and applies the migrations.
    pub async fn open(path: &Path) -> anyhow::Result<Store> {
        if is_url(path) {
            return Store::open_pg(path.to_str().unwrap_or_default()).await;
        }
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
        Ok(Store {
            write: db::Db::Sqlite(write),
            read: db::Db::Sqlite(read),
            batch: Some(batch),
            runner: None,
        })
    }

    /// Opens the campaign in the PostgreSQL database at `url` (creating its tables if need be).
    /// The URL may hold a password: it is never printed (errors name the host and database).
    pub async fn open_pg(url: &str) -> anyhow::Result<Store> {
        // A runner frozen mid-transaction (a stopped process, a paused machine) would hold its
        // rows' locks for as long as it is frozen: PostgreSQL ends such a session after a while.
        // The store's transactions are short (a move, an import's batch), never idle this long.
        let opts = sqlx::postgres::PgConnectOptions::from_str(url)
            .context("the --db URL is not a PostgreSQL URL")?
            .options([("idle_in_transaction_session_timeout", IDLE_IN_TRANSACTION)]);
        let named = format!(
            "the PostgreSQL database {} on {}:{}",
            opts.get_database().unwrap_or("(default)"),
            opts.get_host(),
            opts.get_port()
        );
        let pool = db::ride_through(|| {
            sqlx::postgres::PgPoolOptions::new()
                .max_connections(8)
                .acquire_timeout(Duration::from_secs(30))
                .connect_with(opts.clone())
        })
        .await
        .with_context(|| format!("cannot open {named}"))?;
        migrate::postgres(&pool)
            .await
            .with_context(|| format!("cannot prepare {named}"))?;
        Ok(Store {
            write: db::Db::Pg(pool.clone()),
            read: db::Db::Pg(pool),
            batch: None,
            runner: None,
        })
    }

    /// Whether the campaign is in PostgreSQL.
    pub fn is_pg(&self) -> bool {
        matches!(self.write, db::Db::Pg(_))
    }

    /// The SQLite writer connection, for what only SQLite does (its import paths).
    fn lite(&self) -> anyhow::Result<&SqlitePool> {
        match &self.write {
            db::Db::Sqlite(p) => Ok(p),
            db::Db::Pg(_) => anyhow::bail!("internal: a SQLite-only step on PostgreSQL"),
        }
    }

    /// The PostgreSQL pool.
    fn pg(&self) -> Option<&sqlx::PgPool> {
        match &self.write {
            db::Db::Pg(p) => Some(p),
            db::Db::Sqlite(_) => None,
        }
    }

    /// Opens an existing database for reading only (`status`, `export`): never creates one.
    pub async fn open_existing(path: &Path) -> anyhow::Result<Store> {
        if !is_url(path) && !path.exists() {
            anyhow::bail!(
                "no database at {} (run `wanbatch import` or `wanbatch run` first)",
                path.display()
            );
        }
        Store::open(path).await
    }

    pub async fn close(&self) {
        if let Some(runner) = &self.runner {
            runner.stop(self).await;
        }
        if let Some(batch) = &self.batch {
            batch.close().await;
        }
        self.read.close().await;
        self.write.close().await;
    }

    /// Number of jobs in each state (all states listed, zeros included).
    pub async fn counts(&self) -> anyhow::Result<Vec<(JobState, i64)>> {
        let rows: Vec<(String, i64)> = db::query_as("SELECT state, COUNT(*) FROM jobs GROUP BY state")
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
