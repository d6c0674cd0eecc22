//! `wanbatch demo`: the whole product in ten seconds, with no key and no network. Starts the
//! fake Segmind in-process with short durations and runs `jobs.example.csv` through the real
//! `run` path into a local folder.

use std::path::PathBuf;
use std::time::Duration;

use crate::api::ApiKey;
use crate::cmd::run::{self, Endpoint, RunArgs};
use crate::engine::UnknownPolicy;
use crate::exit::Outcome;
use crate::fake::{FakeConfig, FakeServer};

/// The example manifest, built in so the demo works from any folder.
const EXAMPLE: &str = include_str!("../../jobs.example.csv");

#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// Folder for the demo's database and videos (emptied first).
    #[arg(long, default_value = "demo-output")]
    pub dir: PathBuf,
}

pub async fn run(args: DemoArgs) -> anyhow::Result<Outcome> {
    let key = "demo-key";
    let fake = FakeServer::start(FakeConfig {
        api_key: key.into(),
        queue: Duration::from_millis(400),
        run: Duration::from_millis(1600),
        jitter: 0.2,
        ..FakeConfig::default()
    })
    .await?;
    if args.dir.exists() {
        std::fs::remove_dir_all(&args.dir)?;
    }
    std::fs::create_dir_all(&args.dir)?;
    let manifest = args.dir.join("jobs.example.csv");
    let example = std::fs::read_to_string("jobs.example.csv").unwrap_or_else(|_| EXAMPLE.to_string());
    std::fs::write(&manifest, example)?;
    let out = args.dir.join("videos");
    let db = args.dir.join("demo.db");
    println!(
        "demo: fake Segmind at {} (videos served from {})",
        fake.api_url(),
        fake.cdn_url()
    );
    let run_args = RunArgs {
        manifests: vec![manifest],
        db: db.clone(),
        out: out.clone(),
        rpm: 600,
        rate_window_ms: 60_000,
        max_cost: None,
        price: None,
        min_credits: None,
        dry_run: false,
        concurrency: None,
        on_unknown: UnknownPolicy::Resubmit,
        download_concurrency: 4,
        max_video_bytes: 1 << 30,
        poll_status_endpoint: false,
        initial_estimate_secs: 1.5,
        min_poll_gap_ms: 100,
        backoff_ms: 200,
        grace_secs: 2.0,
        request_timeout_secs: 10.0,
        quiet: false,
        progress_interval: 1.0,
    };
    let started = std::time::Instant::now();
    let endpoint = Endpoint {
        base_url: fake.api_url(),
        key: ApiKey::new(key.into()).expect("demo key"),
    };
    let outcome = run::run_with(run_args, endpoint).await?;
    let stats = fake.stats();
    fake.shutdown().await;
    let requests = stats.api_requests.len();
    println!(
        "demo: {} submits, {} API requests in all, {:.1}s; videos in {}/ (database {})",
        stats.submits.len(),
        requests,
        started.elapsed().as_secs_f64(),
        out.display(),
        db.display()
    );
    Ok(outcome)
}
