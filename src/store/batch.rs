//! Group commit: the engine's state writes, made concurrently by many tasks, share transactions.
//!
//! With `synchronous = FULL` every commit is an fsync, and one fsync per state change caps the
//! engine at a few hundred changes a second however fast the rest is. So the writes of the hot
//! path go through one writer task: it takes every write waiting, runs each inside its own
//! SAVEPOINT (a write that fails rolls back alone), commits them all at once, and only then
//! answers each caller. A caller still hears "done" only once its change is durable, so the
//! crash-proof rule — a fact is on disk before anything acts on it — holds as before; the
//! changes merely share the fsync. With one caller at a time a batch is one write, as before.

//!
//! Each write is data, not code: SQL statements (a guarded change and its bookkeeping) and their
//! arguments, sent to SQLite in one call wrapped in the write's own SAVEPOINT
//! (`SAVEPOINT w; …; RELEASE w`). Every call to the connection is a hand-off between threads,
//! so a write costs one, not one per statement plus two for its savepoint.

use std::collections::HashMap;

use sqlx::sqlite::{SqliteArguments, SqliteRow};
use sqlx::{Connection, SqlitePool};
use tokio::sync::{mpsc, oneshot};

/// Most writes in one transaction: enough to amortise the fsync, few enough to keep each
/// transaction short.
const MAX_BATCH: usize = 256;

/// One write: its statements, their arguments in order, and where its answer goes.
struct Write {
    sql: &'static str,
    args: SqliteArguments<'static>,
    answer: oneshot::Sender<anyhow::Result<Vec<SqliteRow>>>,
}

#[derive(Clone, Debug)]
pub(super) struct Batcher {
    tx: mpsc::UnboundedSender<Write>,
}

/// Arguments for [`Batcher::exec`], in the order of the statements' `?`s.
#[macro_export]
#[doc(hidden)]
macro_rules! sql_args {
    ($($v:expr),* $(,)?) => {{
        #[allow(unused_mut)]
        let mut a = ::sqlx::sqlite::SqliteArguments::default();
        $( ::sqlx::Arguments::add(&mut a, $v).map_err(|e| ::anyhow::anyhow!("argument: {e}"))?; )*
        a
    }};
}

impl Batcher {
    /// Starts the writer task on the current runtime; it ends when every `Batcher` is dropped.
    pub(super) fn start(pool: SqlitePool) -> Batcher {
        let (tx, mut rx) = mpsc::unbounded_channel::<Write>();
        tokio::spawn(async move {
            let mut writes = Vec::with_capacity(MAX_BATCH);
            let mut wrapped = HashMap::new();
            while let Some(first) = rx.recv().await {
                writes.push(first);
                while writes.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(w) => writes.push(w),
                        Err(_) => break,
                    }
                }
                run_batch(&pool, &mut writes, &mut wrapped).await;
            }
        });
        Batcher { tx }
    }

    /// Runs `sql` (one or more statements; `args` fill their `?`s in order) in the next batch,
    /// and returns the rows they returned (`RETURNING`) once the batch is committed. If a
    /// statement fails, the write's statements are rolled back, and only they.
    pub(super) async fn exec(
        &self,
        sql: &'static str,
        args: SqliteArguments<'static>,
    ) -> anyhow::Result<Vec<SqliteRow>> {
        let (answer, heard) = oneshot::channel();
        self.tx
            .send(Write { sql, args, answer })
            .map_err(|_| anyhow::anyhow!("the database writer has stopped"))?;
        heard
            .await
            .map_err(|_| anyhow::anyhow!("the database writer stopped before answering"))?
    }

    /// `exec` for a guarded change that says `RETURNING 1`: whether it applied.
    pub(super) async fn applied(&self, sql: &'static str, args: SqliteArguments<'static>) -> anyhow::Result<bool> {
        Ok(!self.exec(sql, args).await?.is_empty())
    }
}

/// One transaction for all of `writes`; each caller is answered after the commit.
async fn run_batch(pool: &SqlitePool, writes: &mut Vec<Write>, wrapped: &mut HashMap<&'static str, String>) {
    let mut results = Vec::with_capacity(writes.len());
    let outcome: anyhow::Result<()> = async {
        let mut conn = pool.acquire().await?;
        let mut tx = conn.begin().await?;
        for write in writes.drain(..) {
            let sql = wrapped
                .entry(write.sql)
                .or_insert_with(|| format!("SAVEPOINT w; {}; RELEASE w", write.sql.trim().trim_end_matches(';')));
            match sqlx::query_with(sql.as_str(), write.args).fetch_all(&mut *tx).await {
                Ok(rows) => results.push((write.answer, Ok(rows))),
                Err(e) => {
                    // This write alone is undone; if even that fails, the batch fails.
                    sqlx::query("ROLLBACK TO w; RELEASE w").execute(&mut *tx).await?;
                    results.push((write.answer, Err(anyhow::Error::from(e))));
                }
            }
        }
        tx.commit().await?;
        Ok(())
    }
    .await;
    // Writes never started (an error came first) are dropped: their callers hear that the
    // writer stopped before answering.
    writes.clear();
    let failed = outcome.err().map(|e| format!("{e:#}"));
    for (answer, result) in results {
        let result = match (&failed, result) {
            (Some(e), Ok(_)) => Err(anyhow::anyhow!("database commit failed: {e}")),
            (_, r) => r,
        };
        let _ = answer.send(result);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
    use std::str::FromStr;

    async fn pool(dir: &std::path::Path) -> SqlitePool {
        let opts = SqliteConnectOptions::from_str("sqlite://")
            .unwrap()
            .filename(dir.join("b.db"))
            .create_if_missing(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(opts)
            .await
            .unwrap();
        sqlx::query("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)")
            .execute(&pool)
            .await
            .unwrap();
        pool
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writes_share_commits_and_a_failing_one_rolls_back_alone() -> anyhow::Result<()> {
        let dir = tempfile::tempdir().unwrap();
        let pool = pool(dir.path()).await;
        let batcher = Batcher::start(pool.clone());
        let writes = (0..200i64).map(|k| {
            let b = batcher.clone();
            async move {
                if k % 50 == 7 {
                    // A write that fails after changing something: its change must go.
                    b.exec(
                        "INSERT INTO t (k, v) VALUES (?, 'x'); INSERT INTO t (k, v) VALUES (?, 'dup')",
                        sql_args![k, k],
                    )
                    .await
                } else {
                    b.exec("INSERT INTO t (k, v) VALUES (?, 'x') RETURNING k", sql_args![k])
                        .await
                }
            }
        });
        let results = futures_util::future::join_all(writes).await;
        let failed: Vec<usize> = results
            .iter()
            .enumerate()
            .filter(|(_, r)| r.is_err())
            .map(|(i, _)| i)
            .collect();
        assert_eq!(failed, vec![7, 57, 107, 157]);
        // Every answered write is durable (read back on another connection) and only those.
        let rows: Vec<(i64,)> = sqlx::query_as("SELECT k FROM t ORDER BY k")
            .fetch_all(&pool)
            .await
            .unwrap();
        let expect: Vec<(i64,)> = (0..200).filter(|k| k % 50 != 7).map(|k| (k,)).collect();
        assert_eq!(rows, expect);
        let returned = results
            .iter()
            .filter_map(|r| r.as_ref().ok())
            .filter(|rows| rows.len() == 1)
            .count();
        assert_eq!(returned, 196, "each write gets its own RETURNING rows");
        Ok(())
    }

    #[tokio::test]
    async fn a_write_answers_only_after_its_commit() -> anyhow::Result<()> {
        let dir = tempfile::tempdir().unwrap();
        let pool = pool(dir.path()).await;
        let batcher = Batcher::start(pool.clone());
        let rows = batcher
            .exec("INSERT INTO t (k, v) VALUES (1, 'a') RETURNING k", sql_args![])
            .await
            .unwrap();
        assert_eq!(rows.len(), 1);
        // Visible to a fresh connection at once: committed, not merely written.
        let other = SqliteConnectOptions::from_str("sqlite://")
            .unwrap()
            .filename(dir.path().join("b.db"));
        let mut conn = sqlx::SqliteConnection::connect_with(&other).await.unwrap();
        let v: String = sqlx::query_scalar("SELECT v FROM t WHERE k = 1")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(v, "a");
        Ok(())
    }
}
