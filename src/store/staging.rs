//! The staging database: where one import's rows wait, on disk, until every row has been read
//! and checked, so a million-row import holds one batch in memory and writes nothing to the
//! jobs database unless the whole input is good.
//!
//! A scratch SQLite file in a private temporary directory (beside the database, so it uses the
//! same disk, not a RAM-backed /tmp). It is throwaway, so it runs without journal or fsync.
//! Rows are appended in manifest order (`ord` is that order); after the last row an index on
//! `id` finds ids used twice in one sort, instead of a set of every id in memory. The jobs
//! database then ATTACHes the file and copies the rows in one `INSERT … SELECT` (see
//! `import.rs`), so the rows never travel through Rust a second time.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::Context;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqliteSynchronous};
use sqlx::{Connection, QueryBuilder, Sqlite};

use crate::manifest::{ManifestError, RowRef};

/// Rows per INSERT statement: 4 values each, well under SQLite's 32766 variables. Multi-row
/// statements because each sqlx call is a round trip to the connection's worker thread; a
/// prepared single-row loop was not measured against it (see the report of issue 6).
const ROWS_PER_STATEMENT: usize = 256;

pub struct Staging {
    path: PathBuf,
    conn: Option<SqliteConnection>,
    staged: u64,
    // Last, so the directory is removed after the connection is closed.
    _dir: tempfile::TempDir,
}

/// Where the first occurrence of an id used twice was, for the error message.
#[derive(sqlx::FromRow)]
struct Duplicate {
    id: String,
    source: String,
    first: String,
    first_id: String,
}

impl Staging {
    /// An empty staging database in a new private directory under `near` (or the system's
    /// temporary directory if `near` does not exist).
    pub async fn create(near: &Path) -> anyhow::Result<Staging> {
        let base = if near.is_dir() {
            near.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        let dir = tempfile::Builder::new()
            .prefix(".wanbatch-import-")
            .tempdir_in(&base)
            .with_context(|| format!("cannot create a staging directory in {}", base.display()))?;
        let path = dir.path().join("staging.db");
        let opts = SqliteConnectOptions::from_str("sqlite://")?
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Off)
            .synchronous(SqliteSynchronous::Off)
            .pragma("cache_size", "-8192");
        let mut conn = SqliteConnection::connect_with(&opts).await?;
        sqlx::query(
            "CREATE TABLE rows (
                 ord    INTEGER PRIMARY KEY,
                 id     TEXT NOT NULL COLLATE NOCASE, -- `A` and `a` are one file on macOS and Windows
                 params TEXT NOT NULL,
                 hash   TEXT NOT NULL,
                 source TEXT NOT NULL
             )",
        )
        .execute(&mut conn)
        .await?;
        sqlx::query("BEGIN").execute(&mut conn).await?;
        Ok(Staging {
            path,
            conn: Some(conn),
            staged: 0,
            _dir: dir,
        })
    }

    /// Appends a batch of rows, in manifest order.
    pub async fn add(&mut self, batch: &Batch) -> anyhow::Result<()> {
        let conn = self.conn.as_mut().context("staging already finished")?;
        let rows: Vec<[&str; 4]> = (0..batch.len()).map(|i| batch.row(i)).collect();
        for chunk in rows.chunks(ROWS_PER_STATEMENT) {
            let mut insert: QueryBuilder<Sqlite> = QueryBuilder::new("INSERT INTO rows (id, params, hash, source) ");
            insert.push_values(chunk, |mut b, row| {
                for field in row {
                    b.push_bind(*field);
                }
            });
            insert.build().persistent(true).execute(&mut *conn).await?;
        }
        self.staged += batch.len() as u64;
        Ok(())
    }

    /// Ends staging and finds ids used twice: returns the first `limit` (in manifest order, each
    /// naming both places) and how many there are in all.
    pub async fn finish(&mut self, limit: usize) -> anyhow::Result<(Vec<ManifestError>, u64)> {
        let mut conn = self.conn.take().context("staging already finished")?;
        sqlx::query("COMMIT").execute(&mut conn).await?;
        // One sort builds the index; if it can be unique, no id is used twice (the usual case).
        match sqlx::query("CREATE UNIQUE INDEX rows_id ON rows (id)")
            .execute(&mut conn)
            .await
        {
            Ok(_) => {
                conn.close().await?;
                return Ok((Vec::new(), 0));
            }
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {}
            Err(e) => return Err(e.into()),
        }
        sqlx::query("CREATE INDEX rows_id ON rows (id)")
            .execute(&mut conn)
            .await?;
        let total: i64 = sqlx::query_scalar(
            "SELECT COALESCE(SUM(n - 1), 0) FROM (SELECT COUNT(*) AS n FROM rows GROUP BY id HAVING n > 1)",
        )
        .fetch_one(&mut conn)
        .await?;
        let mut listed = Vec::new();
        if total > 0 {
            let dups: Vec<Duplicate> = sqlx::query_as(
                "SELECT r.id, r.source, f.source AS first, f.id AS first_id
                 FROM (SELECT id, MIN(ord) AS first_ord FROM rows GROUP BY id HAVING COUNT(*) > 1) d
                 JOIN rows r ON r.id = d.id AND r.ord > d.first_ord
                 JOIN rows f ON f.ord = d.first_ord
                 ORDER BY r.ord LIMIT ?",
            )
            .bind(limit as i64)
            .fetch_all(&mut conn)
            .await?;
            for d in dups {
                let (file, line) = split_source(&d.source);
                listed.push(ManifestError {
                    file: file.to_string(),
                    line,
                    field: Some("id".into()),
                    message: if d.id == d.first_id {
                        format!("{:?} is used twice: here and at {}", d.id, d.first)
                    } else {
                        format!(
                            "{:?} is {:?} of {} but for case, and they would share one file",
                            d.id, d.first_id, d.first
                        )
                    },
                });
            }
        }
        conn.close().await?;
        Ok((listed, total as u64))
    }

    /// Rows staged so far.
    pub fn len(&self) -> u64 {
        self.staged
    }

    pub fn is_empty(&self) -> bool {
        self.staged == 0
    }

    /// The staging file, for ATTACH.
    pub(super) fn path(&self) -> &Path {
        &self.path
    }
}

/// Rows on their way to the staging database, packed into one buffer: the reader thread packs
/// (and frees each parsed row itself, so the two threads never contend for the allocator), and a
/// batch in flight costs about the size of its text.
#[derive(Default)]
pub struct Batch {
    text: String,
    // Per row, where its id, params, hash and source end in `text`.
    ends: Vec<[usize; 4]>,
}

impl Batch {
    pub fn with_capacity(rows: usize) -> Batch {
        Batch {
            text: String::with_capacity(rows * 400),
            ends: Vec::with_capacity(rows),
        }
    }

    pub fn push(&mut self, row: &RowRef) {
        let mut ends = [0; 4];
        for (end, field) in ends.iter_mut().zip([row.id, row.json, row.hash, row.source]) {
            self.text.push_str(field);
            *end = self.text.len();
        }
        self.ends.push(ends);
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Row `i`: id, params, hash, source.
    pub(super) fn row(&self, i: usize) -> [&str; 4] {
        let mut start = if i == 0 { 0 } else { self.ends[i - 1][3] };
        self.ends[i].map(|end| {
            let field = &self.text[start..end];
            start = end;
            field
        })
    }
}

/// `file:line` back into its parts (the line is after the last colon).
fn split_source(source: &str) -> (&str, u64) {
    match source.rsplit_once(':') {
        Some((file, line)) => (file, line.parse().unwrap_or(0)),
        None => (source, 0),
    }
}
