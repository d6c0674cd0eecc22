//! `wanbatch run`: import manifests (if any), recover what an earlier run left, and work every
//! unfinished job until each is done or failed — or until the run must stop, leaving the rest
//! resumable by running the same command again.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::flags::{DbFlag, RunFlags};
use crate::api::history::HistoryClient;
use crate::api::hosts::{self, Hosts};
use crate::api::upload::UploadClient;
use crate::api::{ApiClient, ApiKey};
use crate::engine::{self, recover, Budget, Clients, EngineConfig, Stop, Timing};
use crate::exit::{Failure, Left, Outcome};
use crate::figures::{self, Money};
use crate::progress::{Budgeting, Mode, Reporter, Telemetry};
use crate::settings::{Resolved, RunSettings};
use crate::state::JobState;
use crate::store::{now_ms, Store};

#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
    /// Manifest files to import first (.csv, .jsonl, .ndjson). None: resume what the database holds.
    pub manifests: Vec<PathBuf>,
    #[command(flatten)]
    pub db: DbFlag,
    #[command(flatten)]
    pub settings: RunFlags,
    /// Validate the manifests and print the jobs to do, the API requests and wall-clock time
    /// expected at --rpm, and the cost at --price; submit nothing, write nothing, need no key.
    #[arg(long)]
    pub dry_run: bool,
    /// No progress display (the final summary is still printed).
    #[arg(long, short)]
    pub quiet: bool,
    /// Seconds between progress lines when stderr is not a terminal (on a terminal the display
    /// redraws in place instead).
    #[arg(long, default_value_t = 30.0)]
    pub progress_interval: f64,
    #[command(flatten)]
    pub tuning: Tuning,
}

/// Knobs for tests, benchmarks and rehearsals (hidden from `--help`): they compress time.
#[derive(clap::Args, Debug, Clone)]
pub struct Tuning {
    /// The window --rpm counts in, in milliseconds (tests and benchmarks scale time with it).
    #[arg(long, default_value_t = 60_000, hide = true, value_parser = clap::value_parser!(u64).range(1..))]
    pub rate_window_ms: u64,
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
    /// Several runners (PostgreSQL): how long a runner's jobs stay its own without a heartbeat,
    /// in milliseconds; then another runner takes them over.
    #[arg(long, default_value_t = 30_000, hide = true, value_parser = clap::value_parser!(u64).range(200..))]
    pub lease_ms: u64,
}

impl Default for Tuning {
    fn default() -> Tuning {
        Tuning {
            rate_window_ms: 60_000,
            min_poll_gap_ms: 1000,
            backoff_ms: 1000,
            grace_secs: 5.0,
            request_timeout_secs: 60.0,
            lease_ms: 30_000,
        }
    }
}

/// How `run` shows its progress.
#[derive(Clone, Copy, Debug)]
pub struct Display {
    pub quiet: bool,
    pub progress_interval: f64,
}

/// Where to reach Segmind (its API, request history and upload: the only hosts the key goes
/// to) and with which key — from the environment, or the demo's fake.
pub struct Endpoint {
    pub hosts: Hosts,
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
        let hosts = hosts::from_env().map_err(Failure::Usage)?;
        Ok(Endpoint { hosts, key })
    }

    /// The clients of the three services (checked: a usage error if a URL cannot be used).
    pub fn clients(&self, timeout: Duration) -> anyhow::Result<Clients> {
        let usage = |e: anyhow::Error| Failure::Usage(format!("{e:#}"));
        Ok(Clients {
            api: ApiClient::new(&self.hosts.api, &self.key, timeout).map_err(usage)?,
            history: Some(HistoryClient::new(&self.hosts.history, &self.key, timeout).map_err(usage)?),
            upload: Some(UploadClient::new(&self.hosts.upload, &self.key, timeout).map_err(usage)?),
        })
    }
}

pub async fn run(args: RunArgs, resolved: Resolved) -> anyhow::Result<Outcome> {
    let settings = RunSettings::from(&resolved).map_err(Failure::Usage)?;
    if args.dry_run {
        return super::estimate::dry_run_of_run(&args, &settings).await;
    }
    if args.manifests.is_empty() && !crate::store::is_url(&settings.db) && !settings.db.exists() {
        return Err(Failure::Usage(format!(
            "nothing to do: no manifest was given and there is no campaign database at {}. \
             Give a manifest (`wanbatch run jobs.csv`), or point --db at a campaign's database",
            crate::store::shown(&settings.db)
        ))
        .into());
    }
    let endpoint = Endpoint::from_env()?;
    let display = Display {
        quiet: args.quiet,
        progress_interval: args.progress_interval,
    };
    run_with(settings, &args.manifests, &args.tuning, display, endpoint).await
}

/// Runs a campaign with settings already resolved (the demo comes in here too).
pub async fn run_with(
    settings: RunSettings,
    manifests: &[PathBuf],
    tuning: &Tuning,
    display: Display,
    endpoint: Endpoint,
) -> anyhow::Result<Outcome> {
    // Everything is checked before anything is changed.
    let timing = Timing {
        expected: settings.expected_duration,
        result_lifetime: settings.result_lifetime,
        min_poll_gap: Duration::from_millis(tuning.min_poll_gap_ms),
        base_backoff: Duration::from_millis(tuning.backoff_ms.max(1)),
        max_backoff: Duration::from_secs(60),
    };
    let grace = secs("--grace-secs", tuning.grace_secs)?;
    let progress_interval = secs("--progress-interval", display.progress_interval)?;
    let clients = endpoint.clients(secs("--request-timeout-secs", tuning.request_timeout_secs)?)?;
    // An output bucket must exist and take our writes before anything is paid for.
    let bucket = match &settings.bucket {
        Some(url) => {
            let b = crate::output::Bucket::open(url, settings.unreachable_after)?;
            b.check_writable()
                .await
                .map_err(crate::output::StoreError::into_failure)?;
            Some(Arc::new(b))
        }
        None => None,
    };
    let key_hash = endpoint.key.budget_name();
    // Manifests are validated before the database is touched.
    let staged = if manifests.is_empty() {
        None
    } else {
        let opts = crate::manifest::LoadOptions {
            max_image_bytes: settings.max_image_bytes,
        };
        Some(super::import::stage_manifests(manifests, &settings.db, &opts).await?)
    };
    let db = settings.db.clone();
    let store = Store::open(&db).await?;
    // SQLite: one run at a time. PostgreSQL: any number of runners, each holding its jobs under
    // a lease (`store::runner`).
    let _lock = RunLock::acquire(&db)?;
    let store = store.register_runner(&key_hash, tuning.lease_ms as i64).await?;
    if let Some((staging, images)) = staged {
        super::import::import_staged(&store, &staging, &db).await?;
        store.record_local_files(&images).await?;
    }
    store.save_settings(&settings.to_store.to_json(true)).await?;

    // Recover what an earlier run left behind.
    let r = recover::recover(&store, &settings.out).await?;
    if r.interrupted > 0 {
        eprintln!(
            "{} job(s) were being submitted when the last run stopped: looking them up in Segmind's request history",
            r.interrupted
        );
    }
    if r.uploads_repeated > 0 {
        tracing::warn!(
            uploads = r.uploads_repeated,
            "uploads under way when the last run stopped will be made again"
        );
    }
    // Multipart uploads a dead run left are aborted (never completed): their jobs upload again.
    let aborted = crate::output::recover_uploads(&store, bucket.as_deref(), settings.unreachable_after).await?;
    if aborted > 0 {
        eprintln!("{aborted} upload(s) under way when the last run stopped were aborted; their videos go up again");
    }
    if r.repolled > 0 {
        tracing::info!(jobs = r.repolled, "re-polling saved request ids");
    }

    let telemetry = Arc::new(Telemetry::new());
    let cfg = EngineConfig {
        rpm: settings.rpm,
        rate_window: Duration::from_millis(tuning.rate_window_ms),
        budget: Budget {
            max_cost: settings.max_cost,
            price: settings.price,
            min_credits: settings.min_credits,
        },
        concurrency: settings.concurrency.map(|c| c as usize),
        download_concurrency: settings.download_concurrency as usize,
        out_dir: settings.out.clone(),
        bucket,
        timing,
        on_unknown: settings.on_unknown,
        grace,
        max_video_bytes: settings.max_video_bytes,
        poll: settings.poll,
        max_resubmits: settings.max_resubmits,
        unreachable_after: settings.unreachable_after,
        history_lag: settings.history_lag,
        telemetry: telemetry.clone(),
    };
    let cancel = CancellationToken::new();
    let signals = tokio::spawn(watch_signals(cancel.clone(), telemetry.clone()));
    let reporter = Reporter::start(
        store.clone(),
        telemetry,
        Budgeting {
            requests: settings.rpm,
            window: Duration::from_millis(tuning.rate_window_ms),
            price: settings.price,
        },
        Mode::detect(display.quiet, progress_interval),
    );
    let stop = engine::run(store.clone(), clients, cfg, cancel).await;
    reporter.finish().await;
    signals.abort();
    let stop = stop?;
    let outcome = report(&store, &stop, &settings).await?;
    store.close().await;
    Ok(outcome)
}

fn secs(name: &str, s: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(s)
        .map_err(|_| Failure::Usage(format!("{name} {s}: expected a number of seconds ≥ 0")).into())
}

/// First SIGINT/SIGTERM: stop taking work and let in-flight calls record their answers.
/// Second: exit at once — nothing is lost, the database already holds every fact.
async fn watch_signals(cancel: CancellationToken, telemetry: Arc<Telemetry>) {
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
            // Above the progress bar, which says so too: its next redraw must not hide it.
            crate::progress::notice(
                "stopping: finishing calls in flight (press Ctrl-C again to quit now; nothing is lost either way)",
            );
            telemetry.set_stopping();
            cancel.cancel();
        }
    }
    crate::progress::notice("quitting now; run the same command again to resume");
    crate::exit::interrupted_now();
}

/// Prints the run's summary and turns the stop into an outcome. Its figures are those of the
/// live display and `status` (see `figures`).
async fn report(store: &Store, stop: &Stop, settings: &RunSettings) -> anyhow::Result<Outcome> {
    let counts = store.counts().await?;
    let n = |s: JobState| counts.iter().find(|(st, _)| *st == s).map_or(0, |(_, n)| *n);
    let total: i64 = counts.iter().map(|(_, c)| c).sum();
    let (done, failed, unknown) = (n(JobState::Done), n(JobState::Failed), n(JobState::Unknown));
    let (pending, downloading, cancelled) = (n(JobState::Pending), n(JobState::Downloading), n(JobState::Cancelled));
    let waiting = total - done - failed - cancelled;
    // Sums in SQL and one page of failures: the summary costs the same at a million jobs.
    let tally = store.tally(i64::MAX).await?;
    let money = Money {
        cost: store.cost_summary().await?,
        price: settings.price,
    };
    let (submitted, oldest) = store.submitted_unfinished().await?;
    let failures = store.job_pages(Some(JobState::Failed), false).await?.next(20).await?;
    println!(
        "{total} jobs: {done} done, {failed} failed{}; videos in {}",
        if cancelled > 0 {
            format!(", {cancelled} cancelled")
        } else {
            String::new()
        },
        settings.out.display()
    );
    println!("{}", money.long());
    let (resub_unknown, resub_expired) = (tally.resubmits_unknown, tally.resubmits_expired);
    if resub_unknown + resub_expired > 0 {
        println!(
            "resubmitted: {resub_unknown} after a lost submit answer (may be billed twice), {resub_expired} after the result expired"
        );
    }
    for (j, _) in &failures {
        println!("  failed {}: {}", j.id, j.error.as_deref().unwrap_or("(no message)"));
    }
    if failed > 20 {
        println!("  … {} more failed; see `wanbatch export --state failed`", failed - 20);
    }
    let resume = format!("wanbatch run --db {}", crate::store::shown(&settings.db));
    if waiting > 0 {
        // What is left, by what it needs: submitted jobs are best collected while their records
        // live (--result-lifetime); the others can wait.
        let mut left = Vec::new();
        if submitted > 0 {
            let expiry = oldest.map(|t| {
                let at = t + settings.result_lifetime.as_millis() as i64;
                format!(
                    ", the first result expires in {} (at {} UTC)",
                    figures::span((at - now_ms()) / 1000),
                    crate::clock::rfc3339(at).get(11..16).unwrap_or("?")
                )
            });
            left.push(format!(
                "{submitted} submitted: collect them by running `{resume}` soon{} (after that they are \
                 recovered from the request history, or bought again)",
                expiry.unwrap_or_default()
            ));
        }
        if downloading > 0 {
            left.push(format!(
                "{downloading} made, to download (Segmind keeps the files 7 days)"
            ));
        }
        if unknown > 0 {
            left.push(format!("{unknown} held: their submit answer was lost"));
        }
        if pending > 0 {
            left.push(format!("{pending} not yet submitted (nothing paid)"));
        }
        println!("left: {}", left.join("; "));
    }
    match stop {
        Stop::Refused(msg) => {
            eprintln!("stopped: {msg}. No job was marked failed; {waiting} job(s) wait. Fix it and run `{resume}`.")
        }
        Stop::NoCredits(_) => eprintln!("out of credits: {waiting} jobs waiting; top up and run again (`{resume}`)"),
        Stop::Budget(msg) => eprintln!(
            "stopped submitting: {msg}; {done} done, {waiting} job(s) waiting; raise the limit and run `{resume}` to go on."
        ),
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

/// An exclusive lock beside a SQLite database: two runs must never work one database at once
/// (they would both submit the same pending jobs). The OS releases it if the process dies. A
/// campaign in PostgreSQL takes none: its runners hold their jobs under leases instead.
pub struct RunLock {
    _file: Option<std::fs::File>,
}

impl RunLock {
    pub fn acquire(db: &Path) -> anyhow::Result<RunLock> {
        if crate::store::is_url(db) {
            return Ok(RunLock { _file: None });
        }
        let mut path = db.as_os_str().to_owned();
        path.push(".lock");
        let mut opts = std::fs::OpenOptions::new();
        opts.create(true).truncate(false).write(true);
        // Owner-only, like the database it guards.
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let file = opts.open(&path)?;
        match file.try_lock() {
            Ok(()) => Ok(RunLock { _file: Some(file) }),
            Err(std::fs::TryLockError::WouldBlock) => Err(anyhow::anyhow!(
                "another `wanbatch run` is working {} (lock {}); wait for it or stop it first",
                crate::store::shown(db),
                PathBuf::from(path).display()
            )),
            Err(std::fs::TryLockError::Error(e)) => Err(e.into()),
        }
    }
}
