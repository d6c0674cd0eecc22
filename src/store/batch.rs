//! Group commit: the engine's state writes, made concurrently by many tasks, share transactions.
//!
//! With `synchronous = FULL` every commit is an fsync, and one fsync per state change caps the
//! engine at a few hundred changes a second however fast the rest is. So the writes of the hot
//! path go through one writer task: it takes every write waiting, runs each inside its own
//! SAVEPOINT (a write that fails rolls back alone), commits them all at once, and only then
//! answers each caller. A caller still hears "done" only once its change is durable, so the
//! crash-proof rule — a fact is on disk before anything acts on it — holds as before; the
//! changes merely share the fsync. With one caller at a time a batch is one write, as before.

use futures_util::future::BoxFuture;
use sqlx::{Connection, SqliteConnection, SqlitePool};
use tokio::sync::{mpsc, oneshot};

/// Hands the write's result to its caller once the batch's fate is known (`Some`: the commit
/// failed with that message).
type Deliver = Box<dyn FnOnce(Option<&str>) + Send>;
/// One write: runs on the batch's connection, says whether it succeeded, and how to answer.
type Write = Box<dyn for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, (bool, Deliver)> + Send>;

/// Most writes in one transaction: enough to amortise the fsync, few enough to keep each
/// transaction short.
const MAX_BATCH: usize = 256;

#[derive(Clone, Debug)]
pub(super) struct Batcher {
    tx: mpsc::UnboundedSender<Write>,
}

impl Batcher {
    /// Starts the writer task on the current runtime; it ends when every `Batcher` is dropped.
    pub(super) fn start(pool: SqlitePool) -> Batcher {
        let (tx, mut rx) = mpsc::unbounded_channel::<Write>();
        tokio::spawn(async move {
            let mut writes = Vec::with_capacity(MAX_BATCH);
            while let Some(first) = rx.recv().await {
                writes.push(first);
                while writes.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(w) => writes.push(w),
                        Err(_) => break,
                    }
                }
                run_batch(&pool, &mut writes).await;
            }
        });
        Batcher { tx }
    }

    /// Runs `f` in the next batch and returns its result once it is committed.
    pub(super) async fn write<T, F>(&self, f: F) -> anyhow::Result<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, anyhow::Result<T>> + Send + 'static,
    {
        let (answer, heard) = oneshot::channel::<anyhow::Result<T>>();
        let write: Write = Box::new(move |conn| {
            Box::pin(async move {
                let result = f(conn).await;
                let ok = result.is_ok();
                let deliver: Deliver = Box::new(move |commit_failed| {
                    let result = match commit_failed {
                        Some(e) if ok => Err(anyhow::anyhow!("database commit failed: {e}")),
                        _ => result,
                    };
                    let _ = answer.send(result);
                });
                (ok, deliver)
            })
        });
        self.tx
            .send(write)
            .map_err(|_| anyhow::anyhow!("the database writer has stopped"))?;
        heard
            .await
            .map_err(|_| anyhow::anyhow!("the database writer stopped before answering"))?
    }
}

/// One transaction for all of `writes`; each caller is answered after the commit.
async fn run_batch(pool: &SqlitePool, writes: &mut Vec<Write>) {
    let mut delivers: Vec<Deliver> = Vec::with_capacity(writes.len());
    let outcome: anyhow::Result<()> = async {
        let mut conn = pool.acquire().await?;
        let mut tx = conn.begin().await?;
        for write in writes.drain(..) {
            let mut savepoint = tx.begin().await?;
            let (ok, deliver) = write(&mut savepoint).await;
            delivers.push(deliver);
            if ok {
                savepoint.commit().await?;
            } else {
                savepoint.rollback().await?;
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
    for deliver in delivers {
        deliver(failed.as_deref());
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
    async fn concurrent_writes_share_commits_and_a_failing_one_rolls_back_alone() {
        let dir = tempfile::tempdir().unwrap();
        let pool = pool(dir.path()).await;
        let batcher = Batcher::start(pool.clone());
        let writes = (0..200i64).map(|k| {
            let b = batcher.clone();
            async move {
                b.write(move |c| {
                    Box::pin(async move {
                        sqlx::query("INSERT INTO t (k, v) VALUES (?, 'x')")
                            .bind(k)
                            .execute(&mut *c)
                            .await?;
                        if k % 50 == 7 {
                            // A write that fails after changing something: its change must go.
                            sqlx::query("INSERT INTO t (k, v) VALUES (?, 'dup')")
                                .bind(k)
                                .execute(&mut *c)
                                .await?;
                        }
                        Ok(k)
                    })
                })
                .await
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
    }

    #[tokio::test]
    async fn a_write_answers_only_after_its_commit() {
        let dir = tempfile::tempdir().unwrap();
        let pool = pool(dir.path()).await;
        let batcher = Batcher::start(pool.clone());
        let n = batcher
            .write(|c| {
                Box::pin(async move {
                    sqlx::query("INSERT INTO t (k, v) VALUES (1, 'a')")
                        .execute(&mut *c)
                        .await?;
                    Ok(1)
                })
            })
            .await
            .unwrap();
        assert_eq!(n, 1);
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
    }
}
