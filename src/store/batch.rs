//! Group commit: the engine's state writes, made concurrently by many tasks, share transactions.
//!
//! With `synchronous = FULL` every commit is an fsync, and one fsync per state change caps the
//! engine at a few hundred changes a second however fast the rest is. So the writes of the hot
//! path go through one writer: it takes every write waiting, runs each inside its own SAVEPOINT
//! (a write that fails rolls back alone), commits them all at once, and only then answers each
//! caller. A caller still hears "done" only once its change is durable, so the crash-proof rule
//! — a fact is on disk before anything acts on it — holds as before; the changes merely share
//! the fsync. With one caller at a time a batch is one write, as before.
//!
//! The writer is a thread of its own with its own connection (rusqlite, over the same SQLite
//! library sqlx uses), not a task driving sqlx's connection: sqlx runs each connection on a
//! thread and every statement is a hand-off to it and back, two thread wake-ups. On a 2-core VM
//! those hand-offs, not SQLite, were the cost of a write (0.27 ms each, measured), and the
//! writer, busy 75 % of the time, was the engine's ceiling. Here a write costs its statements:
//! the only wake-ups are the writer's when it was idle and the caller's when answered.
//!
//! Each write is data, not code: SQL statements (a guarded change and its bookkeeping, `?` for
//! each argument) and their arguments in order. Statements are prepared once and cached.

use std::collections::HashMap;
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use rusqlite::types::Value;
use rusqlite::{Connection, OpenFlags};

use super::sql::Arg;
use tokio::sync::oneshot;

/// Most writes in one transaction: enough to amortise the fsync, few enough to keep each
/// transaction short.
const MAX_BATCH: usize = 256;

pub use super::sql::{Args, Row};

/// One write: its statements, their arguments in order, and where its answer goes.
struct Write {
    sql: &'static str,
    args: Args,
    /// Its statements after the first run only if the first returned a row (a transition and
    /// what it records beside the job).
    guarded: bool,
    answer: oneshot::Sender<anyhow::Result<Vec<Row>>>,
}

enum Msg {
    Write(Write),
    /// Finish the writes sent before, close the connection, answer, and end the thread.
    Close(oneshot::Sender<()>),
}

#[derive(Clone, Debug)]
pub(super) struct Batcher {
    tx: mpsc::Sender<Msg>,
}

/// Arguments for [`Batcher::exec`], in the order of the statements' `?`s.
#[macro_export]
#[doc(hidden)]
macro_rules! sql_args {
    ($($v:expr),* $(,)?) => {{
        #[allow(unused_mut)]
        let mut a: $crate::store::sql::Args = Vec::new();
        $( a.push($crate::store::sql::ToArg::arg($v)); )*
        a
    }};
}

impl Batcher {
    /// Opens the writer's connection to the database at `path` (created and migrated already)
    /// and starts its thread; the thread ends, closing the connection, when every `Batcher` is
    /// dropped.
    pub(super) fn start(path: &Path) -> anyhow::Result<Batcher> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        // As the store's sqlx connections: WAL (a property of the file, set when it was made),
        // every commit durable, the same patience with other writers, foreign keys enforced.
        conn.busy_timeout(Duration::from_secs(30))?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.set_prepared_statement_cache_capacity(64);
        let (tx, rx) = mpsc::channel::<Msg>();
        std::thread::Builder::new()
            .name("wanbatch-writer".into())
            .spawn(move || {
                let mut writes = Vec::with_capacity(MAX_BATCH);
                let mut split = HashMap::new();
                let mut closed = None;
                while closed.is_none() {
                    let Ok(first) = rx.recv() else { break };
                    let mut next = Some(first);
                    while let Some(msg) = next.take() {
                        match msg {
                            Msg::Write(w) => writes.push(w),
                            Msg::Close(done) => {
                                closed = Some(done);
                                break;
                            }
                        }
                        if writes.len() < MAX_BATCH {
                            next = rx.try_recv().ok();
                        }
                    }
                    if !writes.is_empty() {
                        run_batch(&conn, &mut writes, &mut split);
                    }
                }
                // Closed (or every sender gone): the connection closes before anyone hears so.
                drop(conn);
                if let Some(done) = closed {
                    let _ = done.send(());
                }
            })?;
        Ok(Batcher { tx })
    }

    /// Runs `sql` (one or more statements; `args` fill their `?`s in order) in the next batch,
    /// and returns the rows they returned (`RETURNING`) once the batch is committed. If a
    /// statement fails, the write's statements are rolled back, and only they.
    pub(super) async fn exec(&self, sql: &'static str, args: Args) -> anyhow::Result<Vec<Row>> {
        self.send(sql, args, false).await
    }

    /// `exec` for a transition: its first statement is the guarded change (`RETURNING` the row
    /// it wrote), and the statements after it run only if it applied.
    pub(super) async fn exec_guarded(&self, sql: &'static str, args: Args) -> anyhow::Result<Vec<Row>> {
        self.send(sql, args, true).await
    }

    async fn send(&self, sql: &'static str, args: Args, guarded: bool) -> anyhow::Result<Vec<Row>> {
        let (answer, heard) = oneshot::channel();
        self.tx
            .send(Msg::Write(Write {
                sql,
                args,
                guarded,
                answer,
            }))
            .map_err(|_| anyhow::anyhow!("the database writer has stopped"))?;
        heard
            .await
            .map_err(|_| anyhow::anyhow!("the database writer stopped before answering"))?
    }

    /// Finishes the writes already sent and closes the writer's connection (later writes fail).
    pub(super) async fn close(&self) {
        let (done, closed) = oneshot::channel();
        if self.tx.send(Msg::Close(done)).is_ok() {
            let _ = closed.await;
        }
    }
}

/// One transaction for all of `writes`; each caller is answered after the commit, or told why
/// its write did not happen.
fn run_batch(conn: &Connection, writes: &mut Vec<Write>, split: &mut HashMap<&'static str, Vec<&'static str>>) {
    let mut results = Vec::with_capacity(writes.len());
    let outcome: rusqlite::Result<()> = (|| {
        if !conn.is_autocommit() {
            // A transaction left open by a failure that even ROLLBACK could not end: end it now.
            conn.execute_batch("ROLLBACK")?;
        }
        conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
        for write in writes.iter() {
            conn.prepare_cached("SAVEPOINT w")?.execute([])?;
            let statements = split.entry(write.sql).or_insert_with(|| statements(write.sql));
            match run_write(conn, statements, &write.args, write.guarded) {
                Ok(rows) => {
                    conn.prepare_cached("RELEASE w")?.execute([])?;
                    results.push(Ok(rows));
                }
                Err(e) => {
                    // This write alone is undone; if even that fails, the batch fails.
                    conn.prepare_cached("ROLLBACK TO w")?.execute([])?;
                    conn.prepare_cached("RELEASE w")?.execute([])?;
                    results.push(Err(e));
                }
            }
        }
        conn.prepare_cached("COMMIT")?.execute([])?;
        Ok(())
    })();
    if outcome.is_err() && !conn.is_autocommit() {
        if let Err(e) = conn.execute_batch("ROLLBACK") {
            tracing::error!(error = %e, "the database writer cannot roll back a failed batch");
        }
    }
    let failed = outcome.err().map(|e| e.to_string());
    let mut results = results.into_iter();
    for write in writes.drain(..) {
        let result = match (&failed, results.next()) {
            (None, Some(r)) => r,
            (Some(e), Some(Ok(_))) => Err(anyhow::anyhow!("database commit failed: {e}")),
            (Some(_), Some(Err(e))) => Err(e),
            // Not run: the batch failed first.
            (Some(e), None) => Err(anyhow::anyhow!("database write failed: {e}")),
            (None, None) => Err(anyhow::anyhow!("internal: a write of the batch was not run")),
        };
        let _ = write.answer.send(result);
    }
}

/// Runs one write's statements, each with its share of the arguments; returns their rows.
fn run_write(conn: &Connection, statements: &[&'static str], args: &[Arg], guarded: bool) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    let mut used = 0;
    for (k, sql) in statements.iter().enumerate() {
        if guarded && k == 1 && rows.is_empty() {
            // The guarded change did not apply: nothing else is written.
            return Ok(rows);
        }
        let mut stmt = conn.prepare_cached(sql)?;
        let n = stmt.parameter_count();
        let Some(mine) = args.get(used..used + n) else {
            anyhow::bail!(
                "internal: a write has {} arguments, its statements want more",
                args.len()
            );
        };
        used += n;
        let columns = stmt.column_count();
        let mut answer = stmt.query(rusqlite::params_from_iter(mine.iter().map(Arg::to_value)))?;
        let first = k == 0;
        while let Some(row) = answer.next()? {
            if guarded && !first {
                // Only the guarded change's rows are the answer.
                continue;
            }
            rows.push(
                (0..columns)
                    .map(|i| row.get::<_, Value>(i))
                    .collect::<rusqlite::Result<Row>>()?,
            );
        }
    }
    if used != args.len() {
        anyhow::bail!(
            "internal: a write has {} arguments, its statements want {used}",
            args.len()
        );
    }
    Ok(rows)
}

/// The statements of `sql`: its `;`-separated parts that hold more than whitespace and
/// comments (SQLite cannot run a part that is only a comment), quotes and comments skipped (the
/// SQL given to the writer is the program's own, never a trigger body).
pub(super) fn statements(sql: &str) -> Vec<&str> {
    let b = sql.as_bytes();
    let (mut out, mut start, mut i, mut content) = (Vec::new(), 0, 0, false);
    while i < b.len() {
        match b[i] {
            q @ (b'\'' | b'"' | b'`') => {
                i += 1;
                while i < b.len() && b[i] != q {
                    i += 1;
                }
                content = true;
            }
            b'[' => {
                while i < b.len() && b[i] != b']' {
                    i += 1;
                }
                content = true;
            }
            b'-' if b.get(i + 1) == Some(&b'-') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i + 1 < b.len() && !(b[i] == b'*' && b[i + 1] == b'/') {
                    i += 1;
                }
                i += 1;
            }
            b';' => {
                if content {
                    out.push(sql[start..i].trim());
                }
                start = i + 1;
                content = false;
            }
            c if c.is_ascii_whitespace() => {}
            _ => content = true,
        }
        i += 1;
    }
    if content {
        out.push(sql[start..].trim());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};
    use std::str::FromStr;

    /// A database with table `t`, as `Store::open` leaves one (made, in WAL mode, by sqlx), a
    /// pool to read it back with, and a writer on it.
    async fn setup() -> (tempfile::TempDir, SqlitePool, Batcher) {
        let dir = tempfile::tempdir().unwrap();
        let opts = SqliteConnectOptions::from_str("sqlite://")
            .unwrap()
            .filename(dir.path().join("b.db"))
            .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
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
        let batcher = Batcher::start(&dir.path().join("b.db")).unwrap();
        (dir, pool, batcher)
    }

    #[test]
    fn statements_are_split_at_semicolons_outside_quotes_and_comments() {
        assert_eq!(
            statements("UPDATE t SET v = 'a;b' WHERE k = ?; -- one; two\n INSERT INTO t VALUES (?, \"x;\"); /* ; */ ;"),
            vec![
                "UPDATE t SET v = 'a;b' WHERE k = ?",
                "-- one; two\n INSERT INTO t VALUES (?, \"x;\")"
            ]
        );
        assert_eq!(statements("SELECT 1"), vec!["SELECT 1"]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writes_share_commits_and_a_failing_one_rolls_back_alone() -> anyhow::Result<()> {
        let (_dir, pool, batcher) = setup().await;
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
        // Each write gets its own RETURNING rows.
        for (k, r) in results.iter().enumerate() {
            if let Ok(rows) = r {
                assert_eq!(rows, &vec![vec![Value::Integer(k as i64)]]);
            }
        }
        Ok(())
    }

    #[tokio::test]
    async fn a_write_answers_only_after_its_commit_and_arguments_keep_their_types() -> anyhow::Result<()> {
        let (_dir, pool, batcher) = setup().await;
        let rows = batcher
            .exec(
                "INSERT INTO t (k, v) VALUES (1, ?) RETURNING k, v, ?, ?, ?",
                sql_args!["a", Some(2.5), None::<i64>, true],
            )
            .await
            .unwrap();
        assert_eq!(
            rows,
            vec![vec![
                Value::Integer(1),
                Value::Text("a".into()),
                Value::Real(2.5),
                Value::Null,
                Value::Integer(1)
            ]]
        );
        // Visible to another connection at once: committed, not merely written.
        let v: String = sqlx::query_scalar("SELECT v FROM t WHERE k = 1")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(v, "a");
        // Too few arguments for the statements: an error for that write, not a panic.
        assert!(batcher
            .exec("INSERT INTO t (k, v) VALUES (?, ?)", sql_args![5])
            .await
            .is_err());
        Ok(())
    }

    #[tokio::test]
    async fn close_finishes_the_writes_sent_and_later_ones_fail() -> anyhow::Result<()> {
        let (_dir, pool, batcher) = setup().await;
        let sent = {
            let b = batcher.clone();
            tokio::spawn(async move { b.exec("INSERT INTO t (k, v) VALUES (7, 'x')", sql_args![]).await })
        };
        tokio::task::yield_now().await;
        batcher.close().await;
        let err = batcher.exec("INSERT INTO t (k, v) VALUES (8, 'y')", sql_args![]).await;
        assert!(err.is_err(), "a write after close must fail");
        // The write sent before close either ran (and is committed) or was never queued.
        let ran = sent.await.unwrap().is_ok();
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM t")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(n, i64::from(ran));
        Ok(())
    }
}
