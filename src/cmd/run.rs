//! `wanbatch run`: import manifests (if any), recover what an earlier run left, and work every
//! unfinished job until each is done or failed — or until the run must stop, leaving the rest
//! resumable by running the same command again.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::api::{ApiClient, ApiKey, DEFAULT_BASE_URL};
use crate::engine::{self, download, Budget, EngineConfig, Stop, Timing, UnknownPolicy};
use crate::exit::{Failure, Left, Outcome};
use crate::progress::{Budgeting, Mode, Reporter, Telemetry};
use crate::state::JobState;
use crate::store::Store;

#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
    /// Manifest files to import first (.csv, .jsonl, .ndjson). None: resume what the database holds.
    pub manifests: Vec<PathBuf>,
    /// The database file (the truth about every job; keep it with the outputs).
    #[arg(long, default_value = "wanbatch.db", env = "WANBATCH_DB")]
    pub db: PathBuf,
    /// Folder for the videos: OUT/<id>.mp4.
    #[arg(long, default_value = "outputs", env = "WANBATCH_OUT")]
    pub out: PathBuf,
    /// API requests per minute, all calls together (submit, status, result). Pro accounts: 50.
    #[arg(long, default_value_t = 50, env = "WANBATCH_RPM", value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub rpm: u32,
    /// Jobs in flight at Segmind at once. Default: automatic, by Little's law — the budget
    /// sustains rpm / 2.3 videos a minute (a submit and ~1.3 well-timed polls each), each at
    /// Segmind for the learned duration (~54 s at first), plus 25 % headroom: about 25 at 50 rpm.
    /// More only makes polls queue (later results); fewer leaves the budget unused.
    #[arg(long, env = "WANBATCH_CONCURRENCY", value_parser = clap::value_parser!(u32).range(1..))]
    pub concurrency: Option<u32>,
    /// What to do with a submit whose answer was lost (it may or may not have created a job):
    /// submit again (counted, flagged as possibly billed twice) or hold it for `retry`.
    #[arg(long, value_enum, default_value = "resubmit", env = "WANBATCH_ON_UNKNOWN")]
    pub on_unknown: UnknownPolicy,
    /// Stop submitting before the spend (API-reported `metrics.cost`, else --price per video)
    /// would pass this many dollars; paid work is still collected. Needs --price.
    #[arg(long, env = "WANBATCH_MAX_COST")]
    pub max_cost: Option<f64>,
    /// Dollars per video, for --max-cost (and estimates) where the API reports no cost.
    #[arg(long, env = "WANBATCH_PRICE")]
    pub price: Option<f64>,
    /// Stop submitting when the account's remaining credits (as the API reports them) fall below this.
    #[arg(long, env = "WANBATCH_MIN_CREDITS")]
    pub min_credits: Option<f64>,
    /// Validate the manifests and print the jobs to do, the API requests and wall-clock time
    /// expected at --rpm, and the cost at --price; submit nothing, write nothing, need no key.
    #[arg(long)]
    pub dry_run: bool,
    /// Parallel video downloads (from the video host; they use no API requests).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub download_concurrency: u32,
    /// Refuse videos larger than this many bytes.
    #[arg(long, default_value_t = 2 * 1024 * 1024 * 1024)]
    pub max_video_bytes: u64,
    /// Poll the status endpoint (then fetch the result) instead of polling the result endpoint.
    #[arg(long)]
    pub poll_status_endpoint: bool,
    /// No progress display (the final summary is still printed).
    #[arg(long, short)]
    pub quiet: bool,
    /// Seconds between progress lines when stderr is not a terminal (on a terminal the display
    /// redraws in place instead).
    #[arg(long, default_value_t = 30.0)]
    pub progress_interval: f64,
    /// The window --rpm counts in, in milliseconds (tests and benchmarks scale time with it).
    #[arg(long, default_value_t = 60_000, hide = true, value_parser = clap::value_parser!(u64).range(1..))]
    pub rate_window_ms: u64,
    /// Expected seconds per video before any are observed (learned afterwards).
    #[arg(long, default_value_t = 54.46, hide = true)]
    pub initial_estimate_secs: f64,
    /// Shortest gap between two polls of one job, in milliseconds.
    #[arg(long, default_value_t = 1000, hide = true)]
    pub min_poll_gap_ms: u64,
    /// First backoff step after a transient error, in milliseconds.
    #[arg(long, default_value_t = 1000, hide = true)]
    pub backoff_ms: u64,
    /// Seconds in-flight calls may finish after Ctrl-C.
    #[arg(long, default_value_t = 5.0, hide = true)]
    pub grace_secs: f64,
    /// Timeout of one API request, in seconds.
    #[arg(long, default_value_t = 60.0, hide = true)]
    pub request_timeout_secs: f64,
}

/// Where to reach Segmind and with which key (from the environment, or the demo's fake).
pub struct Endpoint {
    pub base_url: String,
    pub key: ApiKey,
}

impl Endpoint {
    pub fn from_env() -> anyhow::Result<Endpoint> {
        let key = std::env::var("SEGMIND_API_KEY").unwrap_or_default();
        let key = ApiKey::new(key).ok_or_else(|| {
            Failure::Usage(
                "SEGMIND_API_KEY is not set: export your Segmind API key (it is never taken on the command line)"
                    .into(),
            )
        })?;
        let base_url = std::env::var("SEGMIND_BASE_URL")
            .ok()
            .filter(|s| !s.trim().is_empty())
            .unwrap_or_else(|| DEFAULT_BASE_URL.to_string());
        Ok(Endpoint { base_url, key })
    }
}

pub async fn run(args: RunArgs) -> anyhow::Result<Outcome> {
    if args.dry_run {
        return super::estimate::dry_run_of_run(&args).await;
    }
    let endpoint = Endpoint::from_env()?;
    run_with(args, endpoint).await
}

pub async fn run_with(args: RunArgs, endpoint: Endpoint) -> anyhow::Result<Outcome> {
    if args.max_cost.is_some() && args.price.is_none() {
        return Err(Failure::Usage(
            "--max-cost needs --price (or WANBATCH_PRICE, or price in wanbatch.toml): dollars per video".into(),
        )
        .into());
    }
    let timing = Timing {
        initial_estimate: secs(args.initial_estimate_secs)?,
        min_poll_gap: Duration::from_millis(args.min_poll_gap_ms),
        base_backoff: Duration::from_millis(args.backoff_ms.max(1)),
        max_backoff: Duration::from_secs(60),
    };
    let api = ApiClient::new(&endpoint.base_url, &endpoint.key, secs(args.request_timeout_secs)?)
        .map_err(|e| Failure::Usage(e.to_string()))?;
    // Validate manifests before touching the database.
    let staged = if args.manifests.is_empty() {
        None
    } else {
        Some(super::import::stage_manifests(&args.manifests, &args.db).await?)
    };
    let store = Store::open(&args.db).await?;
    let _lock = RunLock::acquire(&args.db)?;
    if let Some(staging) = staged {
        super::import::import_staged(&store, &staging, &args.db).await?;
    }

    // Recover what an earlier run left behind.
    let interrupted = store.recover_interrupted_submits().await?;
    if interrupted > 0 {
        eprintln!("{interrupted} job(s) were being submitted when the last run stopped: Segmind may or may not have created them");
    }
    if args.on_unknown == UnknownPolicy::Resubmit {
        let n = store.resubmit_unknown().await?;
        if n > 0 {
            eprintln!("resubmitting {n} job(s) whose submit answer was lost (counted; see `status` for possible double charges)");
        }
    }
    let repoll = store.poll_all_now().await?;
    if repoll > 0 {
        tracing::info!(jobs = repoll, "re-polling saved request ids");
    }
    let keep: std::collections::HashSet<(String, String)> = store
        .jobs(Some(JobState::Downloading))
        .await?
        .into_iter()
        .filter_map(|j| j.request_id.map(|r| (j.id, r)))
        .collect();
    download::clean_stray_parts(&args.out, |id, rid| keep.contains(&(id.to_string(), rid.to_string())))
        .await
        .ok();

    for (name, v) in [
        ("--max-cost", args.max_cost),
        ("--price", args.price),
        ("--min-credits", args.min_credits),
    ] {
        if v.is_some_and(|v| !v.is_finite() || v < 0.0) {
            return Err(Failure::Usage(format!("{name} must be a number ≥ 0")).into());
        }
    }
    let telemetry = Arc::new(Telemetry::new());
    let cfg = EngineConfig {
        rpm: args.rpm,
        rate_window: Duration::from_millis(args.rate_window_ms),
        budget: Budget {
            max_cost: args.max_cost,
            price: args.price,
            min_credits: args.min_credits,
        },
        concurrency: args.concurrency.map(|c| c as usize),
        download_concurrency: args.download_concurrency as usize,
        out_dir: args.out.clone(),
        timing,
        on_unknown: args.on_unknown,
        grace: secs(args.grace_secs)?,
        max_video_bytes: args.max_video_bytes,
        poll_status_endpoint: args.poll_status_endpoint,
        telemetry: telemetry.clone(),
    };
    let cancel = CancellationToken::new();
    let signals = tokio::spawn(watch_signals(cancel.clone()));
    let display = Reporter::start(
        store.clone(),
        telemetry,
        Budgeting {
            requests_per_minute: f64::from(args.rpm) * 60_000.0 / args.rate_window_ms as f64,
            price: args.price,
        },
        Mode::detect(args.quiet, secs(args.progress_interval)?),
    );
    let stop = engine::run(store.clone(), api, cfg, cancel).await;
    display.finish().await;
    signals.abort();
    let stop = stop?;
    let outcome = report(&store, &stop, &args).await?;
    store.close().await;
    Ok(outcome)
}

fn secs(s: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(s).map_err(|_| Failure::Usage(format!("{s} is not a usable number of seconds")).into())
}

/// First SIGINT/SIGTERM: stop taking work and let in-flight calls record their answers.
/// Second: exit at once — nothing is lost, the database already holds every fact.
async fn watch_signals(cancel: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).ok();
    for round in 0..2 {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async {
                match term.as_mut() {
                    Some(t) => { t.recv().await; }
                    None => std::future::pending::<()>().await,
                }
            } => {}
        }
        if round == 0 {
            eprintln!(
                "stopping: finishing calls in flight (press Ctrl-C again to quit now; nothing is lost either way)"
            );
            cancel.cancel();
        }
    }
    eprintln!("quitting now; run the same command again to resume");
    crate::exit::interrupted_now();
}

/// Prints the run's summary and turns the stop into an outcome.
async fn report(store: &Store, stop: &Stop, args: &RunArgs) -> anyhow::Result<Outcome> {
    let counts = store.counts().await?;
    let n = |s: JobState| counts.iter().find(|(st, _)| *st == s).map_or(0, |(_, n)| *n);
    let total: i64 = counts.iter().map(|(_, c)| c).sum();
    let (done, failed, unknown) = (n(JobState::Done), n(JobState::Failed), n(JobState::Unknown));
    let cancelled = n(JobState::Cancelled);
    let waiting = total - done - failed - cancelled;
    // Sums in SQL and one page of failures: the summary costs the same at a million jobs.
    let tally = store.tally(i64::MAX).await?;
    let (resub_unknown, resub_expired) = (tally.resubmits_unknown, tally.resubmits_expired);
    let failures = store.job_pages(Some(JobState::Failed), false).await?.next(20).await?;
    println!(
        "{total} jobs: {done} done, {failed} failed, {waiting} waiting; videos in {}",
        args.out.display()
    );
    if cancelled > 0 {
        println!("{cancelled} job(s) cancelled (not counted as failed)");
    }
    if resub_unknown + resub_expired > 0 {
        println!("resubmitted: {resub_unknown} after a lost submit answer (may be billed twice), {resub_expired} after the result expired");
    }
    for (j, _) in &failures {
        println!("  failed {}: {}", j.id, j.error.as_deref().unwrap_or("(no message)"));
    }
    if failed > 20 {
        println!("  … {} more failed; see `wanbatch export --state failed`", failed - 20);
    }
    let resume = format!("wanbatch run --db {}", args.db.display());
    match stop {
        Stop::Refused(msg) => {
            eprintln!("stopped: {msg}. No job was marked failed; {waiting} job(s) wait. Fix it and run `{resume}`.")
        }
        Stop::NoCredits(_) => eprintln!("out of credits: {waiting} jobs waiting; top up and run again (`{resume}`)"),
        Stop::Budget(msg) => {
            let spent = tally.cost;
            eprintln!(
                "stopped submitting: {msg}. Reported cost so far ${spent:.2}; {done} done, {waiting} job(s) waiting; \
                 raise the limit and run `{resume}` to go on."
            );
        }
        Stop::Local(msg) => {
            eprintln!("stopped: {msg}. {waiting} job(s) wait, nothing is lost; fix it and run `{resume}`.")
        }
        Stop::Interrupted => eprintln!("interrupted: {waiting} job(s) wait; run `{resume}` to resume."),
        Stop::Finished if unknown > 0 => eprintln!(
            "{unknown} job(s) held: their submit answer was lost and Segmind may have created them. \
             Run again with --on-unknown resubmit to submit them again."
        ),
        Stop::Finished => {}
    }
    Ok(stop.outcome(Left {
        failed,
        waiting,
        held: unknown,
    }))
}

/// An exclusive lock beside the database: two runs must never work one database at once (they
/// would both submit the same pending jobs). The OS releases it if the process dies.
pub struct RunLock {
    _file: std::fs::File,
}

impl RunLock {
    pub fn acquire(db: &Path) -> anyhow::Result<RunLock> {
        let mut path = db.as_os_str().to_owned();
        path.push(".lock");
        let mut opts = std::fs::OpenOptions::new();
        opts.create(true).truncate(false).write(true);
        // Owner-only, like the database it guards.
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let file = opts.open(&path)?;
        match file.try_lock() {
            Ok(()) => Ok(RunLock { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => Err(anyhow::anyhow!(
                "another `wanbatch run` is working {} (lock {}); wait for it or stop it first",
                db.display(),
                PathBuf::from(path).display()
            )),
            Err(std::fs::TryLockError::Error(e)) => Err(e.into()),
        }
    }
}
