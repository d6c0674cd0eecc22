//! The direct import: rows go from the reader straight into `jobs`, inside one `BEGIN IMMEDIATE`
//! transaction, while the reader parses the next batch (two cores: parsing on one, SQLite on the
//! other). No staging file, no second copy of the rows.
//!
//! It is optimistic: it only ever completes an import that has no problem at all. At the first
//! sign of one — an id that may be used twice, an id that exists with other parameters, a
//! manifest error — it rolls back (nothing was ever committed) and the caller imports the
//! staged way, which finds and words every problem (`staging.rs`, `import.rs`). So every error
//! message, and the all-or-nothing rule, are the staged import's; this path only makes the clean
//! import fast.
//!
//! - Ids used twice: a set of 64-bit hashes of every id, lower-cased (`A` and `a` are one file on
//!   macOS and Windows), about 20 bytes per row. A repeat — or, once in billions of rows, two
//!   ids sharing a hash — gives up to the staged import, which decides.
//! - Ids that exist: when the database already has jobs, each batch is first looked up by id;
//!   one with other parameters gives up; one with the same parameters is left as it is (the
//!   insert skips it: `ON CONFLICT (id) DO NOTHING`).
//! - Crash safety: one transaction, committed once (synchronous FULL, like every commit).

use std::collections::HashSet;
use std::hash::{BuildHasher, Hasher};

use sqlx::pool::PoolConnection;
use sqlx::Sqlite;

use super::{now_ms, Batch, ImportSummary, Store};

/// Rows per INSERT statement (6 values each; SQLite allows 32766 variables).
const ROWS_PER_STATEMENT: usize = 256;

/// Page cache of the import's connection while it inserts (KiB). The `id` index takes rows in
/// random order; beyond ~16 MB more cache did not measurably help, and memory is bounded.
const IMPORT_CACHE_KIB: i64 = 16 * 1024;

/// Why the direct import gave up. It wrote nothing; the staged import decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GiveUp {
    /// An id may be used twice in this import (or two ids share a 64-bit hash).
    MaybeUsedTwice,
    /// An id exists in the database with other parameters.
    Conflict,
    /// The manifests have errors.
    ManifestErrors,
}

/// A direct import in progress: holds the write connection inside `BEGIN IMMEDIATE`.
pub struct DirectImport {
    conn: Option<PoolConnection<Sqlite>>,
    /// The largest `seq` before this import: rows at or below it existed before.
    base: i64,
    /// The database had no jobs: nothing to look up, and nothing can conflict.
    empty: bool,
    now: i64,
    ids: HashSet<u64, Spread>,
    rows: u64,
    inserted: u64,
    /// SQL text per statement size (the last statement of an import is shorter).
    insert_sql: Vec<(usize, String)>,
    probe_sql: Vec<(usize, String)>,
}

impl Store {
    /// Takes the write lock and begins a direct import.
    pub async fn begin_direct_import(&self) -> anyhow::Result<DirectImport> {
        let mut conn = self.lite()?.acquire().await?;
        sqlx::query(&format!("PRAGMA main.cache_size = -{IMPORT_CACHE_KIB}"))
            .execute(&mut *conn)
            .await?;
        // Each INSERT after the first keeps a statement journal (the pages it changes, to undo it
        // alone); past 64 KiB SQLite spills it to a temporary file. In memory it costs a few
        // hundred KiB per statement and no system calls.
        sqlx::query("PRAGMA temp_store = MEMORY").execute(&mut *conn).await?;
        sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await?;
        let mut import = DirectImport {
            conn: Some(conn),
            base: 0,
            empty: true,
            now: now_ms(),
            ids: HashSet::default(),
            rows: 0,
            inserted: 0,
            insert_sql: Vec::new(),
            probe_sql: Vec::new(),
        };
        let base: Option<i64> = sqlx::query_scalar("SELECT MAX(seq) FROM main.jobs")
            .fetch_one(import.conn())
            .await?;
        import.base = base.unwrap_or(0);
        import.empty = base.is_none();
        Ok(import)
    }
}

impl DirectImport {
    fn conn(&mut self) -> &mut sqlx::SqliteConnection {
        self.conn
            .as_mut()
            .expect("a direct import in progress has its connection")
    }

    /// Adds a batch of rows (in manifest order). `Ok(Err(_))`: gave up; call [`Self::rollback`].
    pub async fn add(&mut self, batch: &Batch) -> anyhow::Result<Result<(), GiveUp>> {
        for i in 0..batch.len() {
            let [id, ..] = batch.row(i);
            if !self.ids.insert(id_key(id)) {
                return Ok(Err(GiveUp::MaybeUsedTwice));
            }
        }
        let mut start = 0;
        while start < batch.len() {
            let n = ROWS_PER_STATEMENT.min(batch.len() - start);
            let rows = start..start + n;
            start += n;
            if !self.empty {
                // Ids already in the database: same parameters (left as they are) or a conflict.
                let sql = statement(&mut self.probe_sql, n, probe_sql);
                let mut query = sqlx::query_as::<_, (i64, i64)>(sql);
                for i in rows.clone() {
                    let [id, _, hash, _] = batch.row(i);
                    query = query.bind(id).bind(hash);
                }
                query = query.bind(self.base);
                let conn = self.conn.as_mut().expect("connection");
                let (found, bad) = query.fetch_one(&mut **conn).await?;
                if bad > 0 {
                    return Ok(Err(GiveUp::Conflict));
                }
                if found == n as i64 {
                    continue; // all there already, unchanged (a re-import)
                }
            }
            let sql = statement(&mut self.insert_sql, n, insert_sql);
            let mut query = sqlx::query(sql);
            for i in rows {
                let [id, json, hash, source] = batch.row(i);
                query = query
                    .bind(id)
                    .bind(json)
                    .bind(hash)
                    .bind(source)
                    .bind(self.now)
                    .bind(self.now);
            }
            let conn = self.conn.as_mut().expect("connection");
            let done = query.execute(&mut **conn).await?;
            self.inserted += done.rows_affected();
            if self.empty && done.rows_affected() != n as u64 {
                // Nothing existed before, so a skipped row repeats an id of this import.
                return Ok(Err(GiveUp::MaybeUsedTwice));
            }
        }
        self.rows += batch.len() as u64;
        Ok(Ok(()))
    }

    /// Commits (one fsync): the import is done.
    pub async fn commit(mut self) -> anyhow::Result<ImportSummary> {
        sqlx::query("COMMIT").execute(self.conn()).await?;
        self.release().await;
        Ok(ImportSummary {
            inserted: self.inserted,
            unchanged: self.rows - self.inserted,
        })
    }

    /// Rolls back: the database is as it was.
    pub async fn rollback(mut self) -> anyhow::Result<()> {
        sqlx::query("ROLLBACK").execute(self.conn()).await?;
        self.release().await;
        Ok(())
    }

    async fn release(&mut self) {
        if let Some(mut conn) = self.conn.take() {
            let reset = sqlx::query("PRAGMA main.cache_size = -2000; PRAGMA temp_store = DEFAULT");
            if reset.execute(&mut *conn).await.is_err() {
                conn.close_on_drop();
            }
        }
    }
}

impl Drop for DirectImport {
    fn drop(&mut self) {
        // Dropped mid-transaction (an error): close the connection rather than return it to the
        // pool inside a transaction; closing rolls the transaction back.
        if let Some(conn) = self.conn.as_mut() {
            conn.close_on_drop();
        }
    }
}

/// The SQL for `n` rows, written once per size.
fn statement(cache: &mut Vec<(usize, String)>, n: usize, write: fn(usize) -> String) -> &str {
    let at = match cache.iter().position(|(m, _)| *m == n) {
        Some(at) => at,
        None => {
            cache.push((n, write(n)));
            cache.len() - 1
        }
    };
    &cache[at].1
}

/// Per row: id, params, hash, source, and the time twice. Anonymous parameters only: looking up
/// a numbered one (`?NNN`) by index walks SQLite's list of names, quadratic per statement.
fn insert_sql(n: usize) -> String {
    let mut sql = String::from(
        "INSERT OR IGNORE INTO main.jobs (id, params, params_hash, source, state, created_at, updated_at) VALUES ",
    );
    for i in 0..n {
        if i > 0 {
            sql.push(',');
        }
        sql.push_str("(?,?,?,?,'pending',?,?)");
    }
    sql
}

/// How many of `n` (id, hash) pairs exist, and how many of those with other parameters or added
/// by this import (`seq` above the last parameter, the largest before it: cannot happen once the
/// id set passed them).
fn probe_sql(n: usize) -> String {
    let mut sql = String::from("WITH b (id, hash) AS (VALUES ");
    for i in 0..n {
        if i > 0 {
            sql.push(',');
        }
        sql.push_str("(?,?)");
    }
    sql.push_str(
        ") SELECT COUNT(*), COALESCE(SUM(j.params_hash <> b.hash OR j.seq > ?), 0) FROM b JOIN main.jobs j ON j.id = b.id",
    );
    sql
}

/// 64 bits of an id, lower-cased: equal ids (and ids equal but for case) have equal keys.
fn id_key(id: &str) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    for b in id.bytes() {
        h.write_u8(b.to_ascii_lowercase());
    }
    h.finish()
}

/// The keys are hashes already: the set uses them as they are, spread over the word.
#[derive(Default, Clone, Copy)]
struct Spread;

impl BuildHasher for Spread {
    type Hasher = SpreadHasher;
    fn build_hasher(&self) -> SpreadHasher {
        SpreadHasher(0)
    }
}

struct SpreadHasher(u64);

impl Hasher for SpreadHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}
