//! The state machine's door, one contract on both backends: the same transitions through
//! `Store::transition` (SQLite, the group-commit writer) and `store::pg::transition` (a real
//! PostgreSQL from `wanbatch::pglocal`) write the same rows and return the same job rows. A
//! guard that no longer holds changes nothing (not even the attempt row); a move the state
//! machine lacks is refused before any SQL; bookkeeping of several statements runs only when the
//! move applied; NULLs keep their type; a runner whose lease was taken over writes nothing.
//! Skipped with a message when PostgreSQL is not installed, unless `WANBATCH_REQUIRE_PG=1`.

use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use wanbatch::sql_args;
use wanbatch::state::{AttemptOutcome, JobState};
use wanbatch::store::{migrate, pg, AttemptKey, Guard, JobRow, Store, Transition};

const SEED: &str = "INSERT INTO jobs (seq, id, params, params_hash, source, state, created_at, updated_at) VALUES
    (1, 'a', '{\"prompt\":\"p\"}', 'h1', 'm.csv:2', 'pending', 0, 0),
    (2, 'b', '{}', 'h2', 'm.csv:3', 'pending', 0, 0)";

/// What a backend wrote that the contract fixes (timestamps aside).
const SNAPSHOT: &str =
    "SELECT j.seq || ' ' || j.state || ' ' || j.attempts || ' ' || COALESCE(j.request_id, '-') || ' '
        || COALESCE(j.output_url, '-') || ' ' || COALESCE(CAST(j.cost AS TEXT), 'null') || ' ' || COALESCE(j.error, '-')
        || ' | ' || COALESCE((SELECT a.outcome || ' ' || COALESCE(a.request_id, '-') || ' ' || COALESCE(a.detail, '-')
                              FROM attempts a WHERE a.job_seq = j.seq AND a.n = 1), 'no attempt')
    FROM jobs j ORDER BY j.seq";

enum Backend {
    // The folder is held so that it outlives the database in it.
    Sqlite(Store, std::path::PathBuf, #[allow(dead_code)] tempfile::TempDir),
    Postgres(PgPool),
}

impl Backend {
    async fn transition(&self, t: Transition<'_>) -> anyhow::Result<Option<JobRow>> {
        match self {
            Backend::Sqlite(store, ..) => store.transition(t).await,
            Backend::Postgres(pool) => pg::transition(pool, t).await,
        }
    }

    async fn exec(&self, sql: &str) {
        match self {
            Backend::Sqlite(_, path, _) => rusqlite::Connection::open(path).unwrap().execute_batch(sql).unwrap(),
            Backend::Postgres(pool) => {
                sqlx::query(sql).execute(pool).await.unwrap();
            }
        }
    }

    async fn strings(&self, sql: &str) -> Vec<String> {
        match self {
            Backend::Sqlite(_, path, _) => {
                let db = rusqlite::Connection::open(path).unwrap();
                let mut q = db.prepare(sql).unwrap();
                q.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect()
            }
            Backend::Postgres(pool) => sqlx::query_scalar(sql).fetch_all(pool).await.unwrap(),
        }
    }
}

/// Every step's result, as text, and what the database holds after it.
async fn drive(b: &Backend) -> Vec<String> {
    use JobState::*;
    let mut log = Vec::new();
    let show = |r: anyhow::Result<Option<JobRow>>| match r {
        Ok(Some(row)) => format!(
            "moved: {} {} attempts {} request {:?} output {:?} completed {:?}",
            row.id, row.state, row.attempts, row.request_id, row.output_url, row.completed_at
        ),
        Ok(None) => "guard did not hold".to_string(),
        Err(e) => format!("refused: {e}"),
    };
    // Claimed: the attempt is opened by bookkeeping, only because the move applied.
    let r = b
        .transition(
            Transition::new(1, &[Pending], Submitting, Guard::State)
                .set("attempts = attempts + 1", vec![])
                .then(
                    "INSERT INTO attempts (job_seq, n, started_at) VALUES (?, ?, ?)",
                    sql_args![1i64, 1i64, 5i64],
                ),
        )
        .await;
    log.push(show(r));
    // Accepted: the attempt learns its outcome and request.
    let r = b
        .transition(
            Transition::new(1, &[Submitting], Running, Guard::Attempt(1))
                .set("request_id = ?, submitted_at = ?", sql_args!["r1", 100i64])
                .attempt(AttemptKey::N(1), AttemptOutcome::Accepted, None)
                .attempt_request("r1"),
        )
        .await;
    log.push(show(r));
    // A stale worker: the job is no longer being submitted, so nothing changes, attempt included.
    let r = b
        .transition(Transition::new(1, &[Submitting], Running, Guard::Attempt(1)).attempt(
            AttemptKey::N(1),
            AttemptOutcome::Refused,
            Some("stale".into()),
        ))
        .await;
    log.push(show(r));
    // Another request's answer changes nothing.
    let r = b
        .transition(Transition::new(1, &[Running], Downloading, Guard::Request("r2")))
        .await;
    log.push(show(r));
    // Its own request's: completed, with a typed NULL for the cost.
    let r = b
        .transition(
            Transition::new(1, &[Running], Downloading, Guard::Request("r1"))
                .set(
                    "output_url = ?, completed_at = ?, cost = ?",
                    sql_args!["https://v.example/1.mp4", 200i64, None::<f64>],
                )
                .attempt(
                    AttemptKey::Request("r1"),
                    AttemptOutcome::Completed,
                    Some("made".into()),
                ),
        )
        .await;
    log.push(show(r));
    // A move the state machine does not have: refused before any SQL.
    let r = b.transition(Transition::new(2, &[Pending], Done, Guard::State)).await;
    log.push(show(r).split(':').next().unwrap().to_string());
    // Bookkeeping of two statements, run only because the move applied.
    let r = b
        .transition(Transition::new(2, &[Pending], Cancelled, Guard::State).then(
            "INSERT INTO counters (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value = counters.value + 1;
             UPDATE jobs SET error = ? WHERE seq = ?",
            sql_args!["cancels", 1i64, "cancelled by the test", 2i64],
        ))
        .await;
    log.push(show(r));
    // And not when it did not: the job is cancelled already.
    let r = b
        .transition(Transition::new(2, &[Pending], Cancelled, Guard::State).then(
            "INSERT INTO counters (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value = counters.value + 1",
            sql_args!["cancels", 1i64],
        ))
        .await;
    log.push(show(r));
    // Leases (several runners): runner A holds job 1 at epoch 1; B takes it over (the epoch moves
    // on); A, unaware, can no longer write it; B can.
    b.exec("UPDATE jobs SET lease_owner = 'A', lease_epoch = 1 WHERE seq = 1")
        .await;
    b.exec("UPDATE jobs SET lease_owner = 'B', lease_epoch = lease_epoch + 1 WHERE seq = 1 AND lease_epoch = 1")
        .await;
    let r = b
        .transition(
            Transition::new(1, &[Downloading], Failed, Guard::Request("r1"))
                .leased("A", 1)
                .set("error = ?", sql_args!["written by a runner that lost its lease"]),
        )
        .await;
    log.push(show(r));
    let r = b
        .transition(
            Transition::new(1, &[Downloading], Done, Guard::Request("r1"))
                .leased("B", 2)
                .set("output_path = ?", sql_args!["/out/a.mp4"]),
        )
        .await;
    log.push(show(r));
    log.extend(b.strings(SNAPSHOT).await);
    log.extend(b.strings("SELECT name || ' ' || value FROM counters").await);
    log
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_door_keeps_one_contract_on_sqlite_and_postgresql() {
    let Some(server) =
        wanbatch::pglocal::shared_for_tests("the_door_keeps_one_contract_on_sqlite_and_postgresql").await
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.db");
    Store::open(&path).await.unwrap().close().await;
    rusqlite::Connection::open(&path).unwrap().execute_batch(SEED).unwrap();
    let sqlite = Backend::Sqlite(Store::open(&path).await.unwrap(), path, dir);
    let url = server.fresh_database("door").await.unwrap();
    let pool = PgPoolOptions::new().max_connections(2).connect(&url).await.unwrap();
    migrate::postgres(&pool).await.unwrap();
    sqlx::query(SEED).execute(&pool).await.unwrap();
    let postgres = Backend::Postgres(pool.clone());

    let on_sqlite = drive(&sqlite).await;
    let on_postgres = drive(&postgres).await;
    let expected = [
        "moved: a submitting attempts 1 request None output None completed None",
        "moved: a running attempts 1 request Some(\"r1\") output None completed None",
        "guard did not hold",
        "guard did not hold",
        "moved: a downloading attempts 1 request Some(\"r1\") output Some(\"https://v.example/1.mp4\") completed Some(200)",
        "refused",
        "moved: b cancelled attempts 0 request None output None completed None",
        "guard did not hold",
        "guard did not hold",
        "moved: a done attempts 1 request Some(\"r1\") output Some(\"https://v.example/1.mp4\") completed Some(200)",
        "1 done 1 r1 https://v.example/1.mp4 null - | completed r1 made",
        "2 cancelled 0 - - null cancelled by the test | no attempt",
        "cancels 1",
    ];
    assert_eq!(on_sqlite, expected, "SQLite");
    assert_eq!(on_postgres, expected, "PostgreSQL");
    if let Backend::Sqlite(store, ..) = sqlite {
        store.close().await;
    }
    pool.close().await;
}

/// Several runners taking jobs from one PostgreSQL queue at once, as `run` does (a window of
/// waiting jobs reserved with `FOR UPDATE SKIP LOCKED`, each then claimed through the door under
/// the runner's lease): every job is claimed exactly once, its attempt opened, and held by the
/// runner that claimed it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn runners_claiming_at_once_never_claim_the_same_job() {
    let Some(server) = wanbatch::pglocal::shared_for_tests("runners_claiming_at_once_never_claim_the_same_job").await
    else {
        return;
    };
    let url = server.fresh_database("claims").await.unwrap();
    let pool = PgPoolOptions::new().max_connections(8).connect(&url).await.unwrap();
    migrate::postgres(&pool).await.unwrap();
    const JOBS: i64 = 300;
    sqlx::query(
        "INSERT INTO jobs (seq, id, params, params_hash, source, state, created_at, updated_at)
         SELECT g, 'j' || g, '{}', 'h' || g, 'm.csv:' || (g + 1), 'pending', 0, 0 FROM generate_series(1, $1) AS g",
    )
    .bind(JOBS)
    .execute(&pool)
    .await
    .unwrap();

    let mut runners = Vec::new();
    for _ in 0..4 {
        let store = Store::open(std::path::Path::new(&url)).await.unwrap();
        let store = store.register_runner("budget", 30_000).await.unwrap();
        runners.push(tokio::spawn(async move {
            let id = store.runner().unwrap().id.clone();
            let (mut mine, mut cursor) = (Vec::new(), 0);
            loop {
                let window = store.pending_after(cursor, 7).await.unwrap();
                let Some(last) = window.last() else {
                    store.close().await;
                    return (id, mine);
                };
                cursor = last.seq;
                for w in window {
                    assert_eq!(store.claim_submit(w.seq).await.unwrap(), Some(1), "job {}", w.seq);
                    mine.push(w.seq);
                }
                tokio::task::yield_now().await;
            }
        }));
    }
    let mut all = Vec::new();
    let mut busy = 0;
    for r in runners {
        let (owner, mine) = r.await.unwrap();
        busy += usize::from(!mine.is_empty());
        let owned: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM jobs WHERE lease_owner = $1 AND state = 'submitting'")
                .bind(&owner)
                .fetch_one(&pool)
                .await
                .unwrap();
        assert_eq!(owned, mine.len() as i64, "runner {owner}'s leases");
        all.extend(mine);
    }
    all.sort();
    let expected: Vec<i64> = (1..=JOBS).collect();
    assert_eq!(all, expected, "every job claimed exactly once");
    assert!(busy >= 2, "the runners worked at the same time ({busy} claimed any)");
    let attempts: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM attempts WHERE n = 1")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(attempts, JOBS);
    pool.close().await;
}
