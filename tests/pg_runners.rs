//! Several runners on one campaign in PostgreSQL, through the real binary: they share the jobs
//! (each job submitted once), one budget per API key (the fake's log never holds more than the
//! limit in any window), take over the jobs of a runner that died or froze (its saved request
//! ids polled again, never resubmitted blindly), and a runner whose jobs were taken over writes
//! nothing more. The chaos test is the issue's: three runners, 300 jobs, one runner killed with
//! `kill -9` and restarted again and again, PostgreSQL itself restarted once.
//! Skipped with a message when PostgreSQL is not installed, unless `WANBATCH_REQUIRE_PG=1`.

mod common;

/// These tests run several runners each, a heavy load for a small machine: one at a time, so
/// that none measures another's load.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use wanbatch::fake::FakeConfig;

/// A `wanbatch run` for the campaign in `env`'s PostgreSQL database, with key `key`, sharing
/// `rpm` requests per `window_ms`, leases of `lease_ms`.
fn runner(env: &Env, key: &str, rpm: u32, window_ms: u64, lease_ms: u64, extra: &[&str]) -> tokio::process::Command {
    let mut cmd = env.bin();
    cmd.env("SEGMIND_API_KEY", key);
    cmd.arg("run");
    cmd.args(extra);
    cmd.args(["--db", env.db().to_str().unwrap(), "--out", env.out().to_str().unwrap()]);
    cmd.args(["--rpm", &rpm.to_string(), "--rate-window-ms", &window_ms.to_string()]);
    cmd.args(["--lease-ms", &lease_ms.to_string()]);
    cmd.args(FAST).args(["--history-lag", "1s"]);
    cmd.kill_on_drop(true);
    cmd
}

/// `cmd` started in the background, its output discarded (nobody reads it: a pipe would fill).
fn spawn_quiet(mut cmd: tokio::process::Command) -> tokio::process::Child {
    cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap()
}

/// The most requests of key `key` that reached the fake in any window of `window_ms` (those it
/// refused with a 429 included, when `refused_too`).
fn busiest_window(env: &Env, key: usize, window_ms: u64, refused_too: bool) -> usize {
    let stats = env.fake.stats();
    let at: Vec<u64> = stats
        .requests_of_key(key)
        .filter(|r| refused_too || r.status != 429)
        .map(|r| r.at_ms)
        .collect();
    let mut most = 0;
    let mut j = 0;
    for i in 0..at.len() {
        while at[j] + window_ms <= at[i] {
            j += 1;
        }
        most = most.max(i - j + 1);
    }
    most
}

async fn import(env: &Env, m: &std::path::Path) {
    let out = cmd(
        env,
        &["import", m.to_str().unwrap(), "--db", env.db().to_str().unwrap()],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

fn fake_with_limit(rpm: u32, window_ms: u64) -> FakeConfig {
    FakeConfig {
        rate_limit: Some(rpm),
        rate_window: Duration::from_millis(window_ms),
        ..fast_fake()
    }
}

/// Who holds each job now (its lease owner), from the database.
async fn owners(env: &Env) -> Vec<Option<String>> {
    let pool = sqlx::PgPool::connect(env.db().to_str().unwrap()).await.unwrap();
    let v = sqlx::query_scalar("SELECT lease_owner FROM jobs ORDER BY seq")
        .fetch_all(&pool)
        .await
        .unwrap();
    pool.close().await;
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_runners_share_the_jobs_and_one_budget() {
    const TEST: &str = "three_runners_share_the_jobs_and_one_budget";
    let Some(server) = wanbatch::pglocal::shared_for_tests(TEST).await else {
        return;
    };
    let _one_at_a_time = ONE_AT_A_TIME.lock().await;
    let (rpm, window) = (60, 3000);
    let env = Env::with_pg(fake_with_limit(rpm, window), server.fresh_database(TEST).await.unwrap()).await;
    let m = env.write("m.csv", &manifest(60));
    import(&env, &m).await;
    let runs: Vec<_> = (0..3)
        .map(|_| finish(runner(&env, KEY, rpm, window, 2000, &[])))
        .collect();
    for out in futures_util::future::join_all(runs).await {
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    }
    let jobs = env.export().await;
    assert!(jobs.iter().all(|j| j["state"] == "done"), "{jobs:#?}");
    env.assert_videos_match(&jobs);
    assert!(
        submits_by_prompt(&env.fake).values().all(|n| *n == 1) && env.fake.stats().submits.len() == 60,
        "each job submitted once"
    );
    // One budget for the three: never more than the limit sent in any window, and no 429.
    let most = busiest_window(&env, 0, window, true);
    assert!(
        most <= rpm as usize,
        "{most} requests in one window, the limit is {rpm}"
    );
    let refused: Vec<_> = env
        .fake
        .stats()
        .api_requests
        .iter()
        .filter(|r| r.status == 429)
        .map(|r| format!("{} {} at {}", r.method, r.path, r.at_ms))
        .collect();
    assert!(
        refused.is_empty(),
        "the shared budget kept under the limit: {refused:?}"
    );
    // All three worked.
    let mut by: std::collections::HashMap<String, usize> = Default::default();
    for o in owners(&env).await.into_iter().flatten() {
        *by.entry(o).or_default() += 1;
    }
    assert_eq!(by.len(), 3, "every runner worked some jobs: {by:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_runners_jobs_are_taken_over_and_it_writes_nothing_after() {
    const TEST: &str = "a_frozen_runners_jobs_are_taken_over";
    let Some(server) = wanbatch::pglocal::shared_for_tests(TEST).await else {
        return;
    };
    let _one_at_a_time = ONE_AT_A_TIME.lock().await;
    // Slow jobs, so the frozen runner holds them at Segmind when it freezes.
    let cfg = FakeConfig {
        run: Duration::from_millis(1500),
        ..fast_fake()
    };
    let env = Env::with_pg(cfg, server.fresh_database("frozen").await.unwrap()).await;
    let m = env.write("m.csv", &manifest(6));
    import(&env, &m).await;
    let mut a = runner(&env, KEY, 6000, 60_000, 1000, &["--concurrency", "6"])
        .spawn()
        .unwrap();
    // Wait until A has submitted all six (each held under A's lease), then freeze it.
    let started = Instant::now();
    while env.fake.stats().submits.len() < 6 {
        assert!(started.elapsed() < Duration::from_secs(20), "runner A never submitted");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let pid = a.id().unwrap().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-STOP", &pid])
        .status()
        .unwrap()
        .success());
    // B takes them over once A's lease expires, polls the saved request ids and fetches them.
    let out = finish(runner(&env, KEY, 6000, 60_000, 1000, &[])).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let after_b = env.export().await;
    assert!(after_b.iter().all(|j| j["state"] == "done"), "{after_b:#?}");
    env.assert_videos_match(&after_b);
    assert_eq!(env.fake.stats().submits.len(), 6, "taken over, not submitted again");
    // A wakes up: every transition it tries is refused (its epoch moved on); it writes nothing.
    assert!(std::process::Command::new("kill")
        .args(["-CONT", &pid])
        .status()
        .unwrap()
        .success());
    let status = tokio::time::timeout(Duration::from_secs(30), a.wait())
        .await
        .expect("A ends")
        .unwrap();
    assert!(status.success(), "{status:?}");
    let after_a = env.export().await;
    assert_eq!(
        after_a, after_b,
        "the runner whose lease was taken over changed nothing"
    );
    assert_eq!(env.fake.stats().submits.len(), 6);
}

/// The chaos test: three runners on one key, 300 jobs; runner 0 is killed with
/// `kill -9` and restarted again and again, PostgreSQL is restarted once mid-campaign.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_three_runners_kill_9_and_a_postgres_restart_lose_nothing() {
    const TEST: &str = "chaos_three_runners";
    let Some(mut server) = wanbatch::pglocal::for_tests(TEST).await else {
        return;
    };
    let _one_at_a_time = ONE_AT_A_TIME.lock().await;
    let (rpm, window) = (300, 3000);
    let env = Env::with_pg(
        fake_with_limit(rpm, window),
        server.fresh_database("chaos").await.unwrap(),
    )
    .await;
    const N: usize = 300;
    let m = env.write("m.csv", &manifest(N));
    import(&env, &m).await;
    let spawn = || spawn_quiet(runner(&env, KEY, rpm, window, 1500, &[]));
    let mut error_codes = Vec::new();
    let mut runners: Vec<tokio::process::Child> = (0..3).map(|_| spawn()).collect();
    let (mut kills, mut restarts, mut pg_restarted) = (0, 0, false);
    let started = Instant::now();
    let mut next_kill = started + Duration::from_millis(700);
    let pg_restart_at = started + Duration::from_millis(2500);
    let mut done = [false; 3];
    while !done.iter().all(|d| *d) {
        assert!(
            started.elapsed() < Duration::from_secs(150),
            "the campaign did not finish"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = Instant::now();
        if kills < 5 && now >= next_kill && !done[0] {
            runners[0].start_kill().unwrap();
            runners[0].wait().await.unwrap();
            kills += 1;
            runners[0] = spawn();
            next_kill = now + Duration::from_millis(900);
        }
        if !pg_restarted && now >= pg_restart_at {
            server.restart().await.unwrap();
            pg_restarted = true;
        }
        for (i, r) in runners.iter_mut().enumerate() {
            if done[i] {
                continue;
            }
            if let Some(status) = r.try_wait().unwrap() {
                if status.success() {
                    done[i] = true;
                } else {
                    // A runner that lost its database stops (exit 4), everything resumable:
                    // started again, as an operator's supervisor would.
                    restarts += 1;
                    error_codes.push(status.code());
                    *r = spawn();
                }
            }
        }
    }
    eprintln!("chaos: {kills} kills, {restarts} restarts after an error, postgres restarted: {pg_restarted}");
    assert!(kills >= 3 && pg_restarted);
    assert!(
        error_codes.iter().all(|c| *c == Some(4)),
        "a runner that lost its database stops with exit 4: {error_codes:?}"
    );

    let jobs = env.export().await;
    assert_eq!(jobs.len(), N);
    assert!(jobs.iter().all(|j| j["state"] == "done"), "every job done");
    env.assert_videos_match(&jobs);
    // Submits beyond one per job only from submit windows, each counted by the runners.
    let seen = submits_by_prompt(&env.fake);
    let (mut extra_total, mut reported_total) = (0, 0);
    for j in &jobs {
        let extra = seen.get(j["prompt"].as_str().unwrap()).copied().unwrap_or(0) as i64 - 1;
        let reported = j["resubmits_unknown"].as_i64().unwrap();
        assert!(extra >= 0);
        assert!(
            extra <= reported,
            "{}: {extra} extra submits, {reported} reported",
            j["id"]
        );
        extra_total += extra;
        reported_total += reported;
    }
    eprintln!("chaos: {extra_total} extra submits billed, {reported_total} reported");
    // The shared budget held through it all: the fake admitted no more than the limit in any
    // window (a request it refused, had there been one, paused every runner).
    let most = busiest_window(&env, 0, window, false);
    assert!(
        most <= rpm as usize,
        "{most} requests in one window, the limit is {rpm}"
    );
    eprintln!(
        "chaos: busiest window {most}/{rpm} admitted, {} sent, {} refused",
        busiest_window(&env, 0, window, true),
        env.fake.stats().rate_limited
    );
    server.stop().await.unwrap();
}

/// A runner killed inside its jobs' submit windows: the runner that takes its jobs over looks
/// each up in the request history — two Segmind made (adopted, not bought again), two it never
/// received (proven absent once the history's lag has passed, then submitted) — so every job is
/// billed exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_runners_submits_in_flight_are_looked_up_never_bought_twice() {
    use wanbatch::fake::{FaultKind, FaultTarget};
    const TEST: &str = "a_dead_runners_submits_in_flight";
    let Some(server) = wanbatch::pglocal::shared_for_tests(TEST).await else {
        return;
    };
    let _one_at_a_time = ONE_AT_A_TIME.lock().await;
    let env = Env::with_pg(fast_fake(), server.fresh_database("inflight").await.unwrap()).await;
    let m = env.write("m.csv", &manifest(4));
    import(&env, &m).await;
    // The first two submits are made at once and their answers held; the next two are held
    // before anything is made.
    env.fake
        .push_fault(fault(FaultTarget::Submit, FaultKind::AcceptThenDelay(20_000), 2));
    env.fake
        .push_fault(fault(FaultTarget::Submit, FaultKind::Delay(20_000), 2));
    let mut a = spawn_quiet(runner(&env, KEY, 6000, 60_000, 1000, &["--concurrency", "4"]));
    let pool = sqlx::PgPool::connect(env.db().to_str().unwrap()).await.unwrap();
    let started = Instant::now();
    loop {
        let submitting: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM jobs WHERE state = 'submitting'")
            .fetch_one(&pool)
            .await
            .unwrap();
        if submitting == 4 && env.fake.stats().submits.len() == 2 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "runner A never got its submits out"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    a.start_kill().unwrap();
    a.wait().await.unwrap();
    pool.close().await;

    let out = finish(runner(&env, KEY, 6000, 60_000, 1000, &[])).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let jobs = env.export().await;
    assert!(jobs.iter().all(|j| j["state"] == "done"), "{jobs:#?}");
    env.assert_videos_match(&jobs);
    assert!(
        submits_by_prompt(&env.fake).values().all(|n| *n == 1) && env.fake.stats().submits.len() == 4,
        "every job billed once: {:?}",
        submits_by_prompt(&env.fake)
    );
    let sum = |k: &str| jobs.iter().map(|j| j[k].as_i64().unwrap()).sum::<i64>();
    assert_eq!(sum("unknown_adopted"), 2, "the two Segmind made were adopted");
    assert_eq!(sum("unknown_absent"), 2, "the two it never received were proven absent");
    assert_eq!(sum("resubmits_unknown"), 0, "nothing was submitted on a guess");
}
