//! `wanbatch bench-runners`: several runners on one campaign in PostgreSQL.
//!
//! One campaign of N jobs is run three times against an in-process fake whose accounts (keys)
//! each allow `--rpm` requests per `--window-ms` (time compressed: the default window is 6 s,
//! a tenth of a minute), each time in a fresh database of a private PostgreSQL
//! (`wanbatch::pglocal`, or `--pg-url`'s server):
//! 1. one runner;
//! 2. three runners on the same key: they share one budget, so the same videos per minute;
//! 3. three runners on three keys: three budgets, so about three times as many.
//!
//! Each runner is this executable as a child process (`wanbatch run --db postgres://…`). Printed:
//! the wall time, videos per (compressed) minute, requests per window at the busiest, and 429s.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::exit::Outcome;
use crate::fake::{FakeConfig, FakeServer};

#[derive(clap::Args, Debug)]
pub struct BenchRunnersArgs {
    /// Jobs in the campaign.
    #[arg(long, default_value_t = 240)]
    pub jobs: usize,
    /// Requests each key allows per window (and each runner's --rpm).
    #[arg(long, default_value_t = 60)]
    pub rpm: u32,
    /// The rate window, in milliseconds (60000 is real time; the default compresses it tenfold).
    #[arg(long, default_value_t = 6000)]
    pub window_ms: u64,
    /// A PostgreSQL server to use (its URL, with a user allowed to create databases); default:
    /// a private one, started and stopped by the benchmark.
    #[arg(long)]
    pub pg_url: Option<String>,
}

const KEYS: [&str; 3] = ["bench-runners-key-a", "bench-runners-key-b", "bench-runners-key-c"];

pub async fn run(args: BenchRunnersArgs) -> anyhow::Result<Outcome> {
    let own = match &args.pg_url {
        Some(_) => None,
        None => Some(crate::pglocal::PgServer::start().await?),
    };
    let fake = FakeServer::start(FakeConfig {
        api_key: KEYS[0].into(),
        extra_keys: KEYS[1..].iter().map(|k| k.to_string()).collect(),
        queue: Duration::from_millis(100),
        run: Duration::from_millis(400),
        video_len: 64 * 1024,
        rate_limit: Some(args.rpm),
        rate_window: Duration::from_millis(args.window_ms),
        ..FakeConfig::default()
    })
    .await?;
    let dir = tempfile::tempdir()?;
    let manifest = dir.path().join("jobs.csv");
    let mut text = String::from("id,image,prompt\n");
    for i in 0..args.jobs {
        text.push_str(&format!("j{i},https://img.example/{i}.jpg,bench scene {i}\n"));
    }
    std::fs::write(&manifest, text)?;
    println!(
        "bench-runners: {} jobs, each key allows {} requests per {} ms (fake: 0.5 s per video)",
        args.jobs, args.rpm, args.window_ms
    );
    println!(
        "{:<28} {:>8} {:>14} {:>16} {:>6}",
        "runners", "wall s", "videos/minute", "busiest window", "429s"
    );
    let cases: [(&str, &[usize]); 3] = [
        ("1 runner, 1 key", &[0]),
        ("3 runners, 1 key", &[0, 0, 0]),
        ("3 runners, 3 keys", &[0, 1, 2]),
    ];
    let mut rates = Vec::new();
    for (n, (name, keys)) in cases.iter().enumerate() {
        let url = match (&own, &args.pg_url) {
            (Some(server), _) => server.fresh_database(&format!("bench_runners_{n}")).await?,
            (None, Some(url)) => fresh_on(url, n).await?,
            (None, None) => unreachable!(),
        };
        let before = fake.stats().api_requests.len();
        let limited_before = fake.stats().rate_limited;
        let out = dir.path().join(format!("out{n}"));
        let exe = std::env::current_exe()?;
        let common = |cmd: &mut Command| {
            cmd.args(["--db", &url, "--out"])
                .arg(&out)
                .env("SEGMIND_BASE_URL", fake.api_url())
                .env_remove("WANBATCH_DB")
                .stdout(Stdio::null())
                .stderr(Stdio::null());
        };
        let mut import = Command::new(&exe);
        import
            .arg("import")
            .arg(&manifest)
            .args(["--db", &url])
            .stdout(Stdio::null());
        let imported = import.status()?;
        anyhow::ensure!(imported.success(), "import failed");
        let started = Instant::now();
        let mut children = Vec::new();
        for k in keys.iter() {
            let mut cmd = Command::new(&exe);
            cmd.arg("run")
                .args([
                    "--rpm",
                    &args.rpm.to_string(),
                    "--rate-window-ms",
                    &args.window_ms.to_string(),
                ])
                .args([
                    "--expected-duration",
                    "0.5s",
                    "--min-poll-gap-ms",
                    "100",
                    "--lease-ms",
                    "5000",
                ])
                .env("SEGMIND_API_KEY", KEYS[*k]);
            common(&mut cmd);
            children.push(cmd.spawn()?);
        }
        for mut c in children {
            let status = c.wait()?;
            anyhow::ensure!(status.success(), "{name}: a runner failed ({status})");
        }
        let wall = started.elapsed();
        let stats = fake.stats();
        let busiest = (0..KEYS.len())
            .map(|key| {
                let at: Vec<u64> = stats.api_requests[before..]
                    .iter()
                    .filter(|r| r.key_index == Some(key) && r.status != 429)
                    .map(|r| r.at_ms)
                    .collect();
                busiest_window(&at, args.window_ms)
            })
            .max()
            .unwrap_or(0);
        let per_window_minute = args.jobs as f64 / (wall.as_secs_f64() * 1000.0 / args.window_ms as f64);
        rates.push(per_window_minute);
        println!(
            "{:<28} {:>8.1} {:>14.1} {:>16} {:>6}",
            name,
            wall.as_secs_f64(),
            per_window_minute,
            format!("{busiest}/{}", args.rpm),
            stats.rate_limited - limited_before
        );
    }
    println!(
        "3 runners on 1 key: {:.2}× one runner; 3 runners on 3 keys: {:.2}× one runner",
        rates[1] / rates[0],
        rates[2] / rates[0]
    );
    println!("(videos/minute: per window of --window-ms, i.e. per minute at the real rate)");
    if let Some(server) = own {
        server.stop().await?;
    }
    Ok(Outcome::AllDone)
}

/// The most of `at` (sorted arrival times) inside any window of `window_ms`.
fn busiest_window(at: &[u64], window_ms: u64) -> usize {
    let (mut most, mut j) = (0, 0);
    for i in 0..at.len() {
        while at[j] + window_ms <= at[i] {
            j += 1;
        }
        most = most.max(i - j + 1);
    }
    most
}

/// A new database on the server at `url`.
async fn fresh_on(url: &str, n: usize) -> anyhow::Result<String> {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(url).await?;
    let name = format!("wanbatch_bench_runners_{n}_{}", std::process::id());
    sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\""))
        .execute(&mut conn)
        .await?;
    sqlx::query(&format!("CREATE DATABASE \"{name}\""))
        .execute(&mut conn)
        .await?;
    conn.close().await?;
    let mut u = url::Url::parse(url)?;
    u.set_path(&name);
    Ok(u.to_string())
}
