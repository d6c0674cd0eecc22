//! Importing staged manifest rows as `pending` jobs, all or nothing.
//!
//! A row whose id already exists with the same parameters is skipped (re-running a manifest
//! creates nothing); the same id with different parameters is a conflict, and an import with
//! any conflict writes nothing at all.
//!
//! The rows come from a [`Staging`] file, ATTACHed to the write connection for the length of
//! one transaction: the conflict check and the `INSERT … SELECT` run inside SQLite, in one
//! `BEGIN IMMEDIATE` (so no other writer can slip a row in between the check and the insert),
//! committed with one fsync. A conflict rolls the transaction back before anything is written.

use sqlx::pool::PoolConnection;
use sqlx::sqlite::SqliteConnection;
use sqlx::{Connection, Sqlite};

use super::{now_ms, Staging, Store};
use crate::manifest::Row;

#[derive(Debug, Default, Clone, PartialEq)]
pub struct ImportSummary {
    pub inserted: u64,
    pub unchanged: u64,
}

/// An id that exists in the database with other parameters.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct ImportConflict {
    pub id: String,
    pub source: String,
    pub existing_source: String,
}

impl std::fmt::Display for ImportConflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: id: {:?} already exists in the database with different parameters (imported from {}); \
             give this row another id, or use another --db",
            self.source, self.id, self.existing_source
        )
    }
}

/// The conflicts of an import: the first few in manifest order, and how many in all.
#[derive(Debug, Clone, PartialEq)]
pub struct Conflicts {
    pub listed: Vec<ImportConflict>,
    pub total: u64,
}

/// How the staged rows compare with the database.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportCheck {
    pub summary: ImportSummary,
    pub conflicts: Conflicts,
}

impl ImportCheck {
    /// The check of `staging`'s rows, given how many the database has unchanged and how many
    /// with other parameters (the first few `listed`).
    fn of(staging: &Staging, unchanged: i64, conflicting: i64, listed: Vec<ImportConflict>) -> ImportCheck {
        let unchanged = unchanged as u64;
        ImportCheck {
            summary: ImportSummary {
                inserted: staging.len() - unchanged - conflicting as u64,
                unchanged,
            },
            conflicts: Conflicts {
                listed,
                total: conflicting as u64,
            },
        }
    }
}

/// The rows an import's insert made, which must be the new rows its check counted.
fn as_checked(inserted: u64, expected: u64) -> anyhow::Result<u64> {
    anyhow::ensure!(
        inserted == expected,
        "import inserted {inserted} rows, expected {expected}"
    );
    Ok(inserted)
}

impl Store {
    /// Compares staged rows with the database without writing (`import --dry-run`).
    pub async fn check_staged(&self, staging: &Staging, limit: usize) -> anyhow::Result<ImportCheck> {
        if let Some(pool) = self.pg() {
            let mut tx = pool.begin().await?;
            let check = pg_stage(&mut tx, staging).await;
            let check = match check {
                Ok(()) => pg_compare(&mut tx, staging, limit).await,
                Err(e) => Err(e),
            };
            tx.rollback().await?;
            return check;
        }
        let mut conn = self.lite()?.acquire().await?;
        attach(&mut conn, staging).await?;
        let check = compare(&mut conn, staging, limit).await;
        detach(conn).await;
        check
    }

    /// Inserts the staged rows. Returns the conflicts instead (and writes nothing) if any id
    /// exists with other parameters.
    pub async fn import_staged(
        &self,
        staging: &Staging,
        limit: usize,
    ) -> anyhow::Result<Result<ImportSummary, Conflicts>> {
        if let Some(pool) = self.pg() {
            return pg_import(pool, staging, limit).await;
        }
        let mut conn = self.lite()?.acquire().await?;
        attach(&mut conn, staging).await?;
        // A bigger page cache for the bulk insert only: the `id` index takes rows in random order,
        // and a page evicted mid-transaction is written to the WAL again. Memory, not durability.
        sqlx::query("PRAGMA main.cache_size = -49152")
            .execute(&mut *conn)
            .await?;
        let result = insert_staged(&mut conn, staging, limit).await;
        let _ = sqlx::query("PRAGMA main.cache_size = -2000").execute(&mut *conn).await;
        detach(conn).await;
        result
    }

    /// Stages `rows` and imports them: for tests and benches that hold their rows already.
    pub async fn import(&self, rows: &[Row]) -> anyhow::Result<Result<ImportSummary, Vec<ImportConflict>>> {
        let mut staging = Staging::create(&std::env::temp_dir()).await?;
        let mut batch = super::Batch::with_capacity(rows.len());
        rows.iter().for_each(|r| batch.push(&r.as_ref()));
        staging.add(&batch).await?;
        let (dups, _) = staging.finish(1).await?;
        anyhow::ensure!(dups.is_empty(), "{}", dups[0]);
        Ok(self.import_staged(&staging, 1000).await?.map_err(|c| c.listed))
    }
}

async fn attach(conn: &mut PoolConnection<Sqlite>, staging: &Staging) -> anyhow::Result<()> {
    sqlx::query("ATTACH DATABASE ? AS stage")
        .bind(staging.path().to_string_lossy().into_owned())
        .execute(&mut **conn)
        .await?;
    Ok(())
}

/// Detaches the staging file; a connection that cannot is closed rather than reused.
async fn detach(mut conn: PoolConnection<Sqlite>) {
    if sqlx::query("DETACH DATABASE stage").execute(&mut *conn).await.is_err() {
        conn.close_on_drop();
    }
}

async fn compare(conn: &mut SqliteConnection, staging: &Staging, limit: usize) -> anyhow::Result<ImportCheck> {
    let (unchanged, conflicting): (i64, i64) = sqlx::query_as(
        "SELECT COALESCE(SUM(j.params_hash = s.hash), 0), COALESCE(SUM(j.params_hash <> s.hash), 0)
         FROM stage.rows s JOIN main.jobs j ON j.id = s.id",
    )
    .fetch_one(&mut *conn)
    .await?;
    let listed = if conflicting > 0 {
        sqlx::query_as(
            "SELECT s.id, s.source, j.source AS existing_source
             FROM stage.rows s JOIN main.jobs j ON j.id = s.id
             WHERE j.params_hash <> s.hash ORDER BY s.ord LIMIT ?",
        )
        .bind(limit as i64)
        .fetch_all(&mut *conn)
        .await?
    } else {
        Vec::new()
    };
    Ok(ImportCheck::of(staging, unchanged, conflicting, listed))
}

async fn insert_staged(
    conn: &mut PoolConnection<Sqlite>,
    staging: &Staging,
    limit: usize,
) -> anyhow::Result<Result<ImportSummary, Conflicts>> {
    // IMMEDIATE: take the write lock before the check, so the check still holds at the insert.
    let started = std::time::Instant::now();
    let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
    let check = compare(&mut tx, staging, limit).await?;
    tracing::info!(elapsed = ?started.elapsed(), "staged rows compared with the database");
    if check.conflicts.total > 0 {
        tx.rollback().await?;
        return Ok(Err(check.conflicts));
    }
    let mut summary = check.summary;
    if summary.inserted > 0 {
        let now = now_ms();
        // Rows whose id exists are the unchanged ones (the check found no conflict); `WHERE true`
        // is SQLite's required disambiguation of INSERT … SELECT … ON CONFLICT.
        let done = sqlx::query(
            "INSERT INTO main.jobs (id, params, params_hash, source, state, created_at, updated_at)
             SELECT id, params, hash, source, 'pending', ?1, ?1 FROM stage.rows WHERE true ORDER BY ord
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(now)
        .execute(&mut *tx)
        .await?;
        summary.inserted = as_checked(done.rows_affected(), summary.inserted)?;
    }
    tracing::info!(elapsed = ?started.elapsed(), "staged rows inserted");
    tx.commit().await?;
    tracing::info!(elapsed = ?started.elapsed(), "import committed");
    Ok(Ok(summary))
}

/// PostgreSQL: the staged rows copied into a temporary table of the import's transaction, a
/// thousand rows per statement, in manifest order.
async fn pg_stage(tx: &mut sqlx::PgConnection, staging: &Staging) -> anyhow::Result<()> {
    sqlx::query(
        "CREATE TEMPORARY TABLE stage_rows (ord BIGINT PRIMARY KEY, id TEXT NOT NULL, params TEXT NOT NULL,
             hash TEXT NOT NULL, source TEXT NOT NULL) ON COMMIT DROP",
    )
    .execute(&mut *tx)
    .await?;
    let opts = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(staging.path())
        .read_only(true);
    let mut lite = SqliteConnection::connect_with(&opts).await?;
    let mut after = 0i64;
    loop {
        let rows: Vec<(i64, String, String, String, String)> =
            sqlx::query_as("SELECT ord, id, params, hash, source FROM rows WHERE ord > ? ORDER BY ord LIMIT 1000")
                .bind(after)
                .fetch_all(&mut lite)
                .await?;
        let Some(last) = rows.last() else { break };
        after = last.0;
        let mut insert =
            sqlx::QueryBuilder::<sqlx::Postgres>::new("INSERT INTO stage_rows (ord, id, params, hash, source) ");
        insert.push_values(rows, |mut b, (ord, id, params, hash, source)| {
            b.push_bind(ord)
                .push_bind(id)
                .push_bind(params)
                .push_bind(hash)
                .push_bind(source);
        });
        insert.build().execute(&mut *tx).await?;
    }
    lite.close().await?;
    Ok(())
}

async fn pg_compare(tx: &mut sqlx::PgConnection, staging: &Staging, limit: usize) -> anyhow::Result<ImportCheck> {
    let (unchanged, conflicting): (i64, i64) = sqlx::query_as(
        "SELECT COUNT(*) FILTER (WHERE j.params_hash = s.hash), COUNT(*) FILTER (WHERE j.params_hash <> s.hash)
         FROM stage_rows s JOIN jobs j ON j.id = s.id",
    )
    .fetch_one(&mut *tx)
    .await?;
    let listed = if conflicting > 0 {
        sqlx::query_as(
            "SELECT s.id, s.source, j.source AS existing_source
             FROM stage_rows s JOIN jobs j ON j.id = s.id
             WHERE j.params_hash <> s.hash ORDER BY s.ord LIMIT $1",
        )
        .bind(limit as i64)
        .fetch_all(&mut *tx)
        .await?
    } else {
        Vec::new()
    };
    Ok(ImportCheck::of(staging, unchanged, conflicting, listed))
}

/// The advisory lock imports into a PostgreSQL campaign take (one key per database).
const IMPORT_LOCK: i64 = 0x7761_6e62_6174_6368; // "wanbatch"

/// PostgreSQL: the import in one transaction, under a lock only imports take (runners still
/// read and move jobs), so the check still holds at the insert. New jobs are numbered after the
/// last, in manifest order.
async fn pg_import(
    pool: &sqlx::PgPool,
    staging: &Staging,
    limit: usize,
) -> anyhow::Result<Result<ImportSummary, Conflicts>> {
    let mut tx = pool.begin().await?;
    // Imports one at a time (the check must still hold at the insert, and new jobs are numbered
    // after the last): a lock of the transaction's, taken by imports only, so runners moving
    // jobs meanwhile are not held up.
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(IMPORT_LOCK)
        .execute(&mut *tx)
        .await?;
    pg_stage(&mut tx, staging).await?;
    let check = pg_compare(&mut tx, staging, limit).await?;
    if check.conflicts.total > 0 {
        tx.rollback().await?;
        return Ok(Err(check.conflicts));
    }
    let mut summary = check.summary;
    if summary.inserted > 0 {
        let done = sqlx::query(
            "INSERT INTO jobs (seq, id, params, params_hash, source, state, created_at, updated_at)
             SELECT (SELECT COALESCE(MAX(seq), 0) FROM jobs) + ROW_NUMBER() OVER (ORDER BY ord),
                    id, params, hash, source, 'pending', $1, $1
             FROM stage_rows s WHERE NOT EXISTS (SELECT 1 FROM jobs j WHERE j.id = s.id) ORDER BY ord",
        )
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        summary.inserted = as_checked(done.rows_affected(), summary.inserted)?;
    }
    tx.commit().await?;
    Ok(Ok(summary))
}
