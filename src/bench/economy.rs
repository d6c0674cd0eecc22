//! The request-economy benchmark: one workload, two schedulers, each against its own fake
//! Segmind with the scenario's durations and rate limit, with time compressed by `scale`.
//!
//! - **wanbatch**: the real engine (`engine::run`) on a temporary database, starting from the
//!   seed page's ~54 s prior like a fresh install.
//! - **baseline**: what the official SDK does — `submit_async`, then `status` every 2 s and
//!   `result` on COMPLETED — with enough jobs in parallel to fill the same request budget, and
//!   the same smooth limiter (a best case for it: the SDK itself does not pace, it gets 429s).
//!
//! Figures are converted back to real time: requests per video, the delay between a job's
//! completion and the first answer reporting it, videos per minute, 429 answers.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::api::{ApiClient, ApiError, ApiKey, Poll};
use crate::engine::{self, download, Budget, EngineConfig, Gate, Timing, UnknownPolicy};
use crate::exit::Outcome;
use crate::fake::{FakeConfig, FakeServer};
use crate::store::Store;

#[derive(Clone, Debug)]
pub struct Scenario {
    pub videos: usize,
    pub rpm: u32,
    /// Mean video duration (real seconds) and its ± spread (fraction).
    pub duration: Duration,
    pub jitter: f64,
    /// Time compression: 60 runs a real minute in a second.
    pub scale: f64,
    pub baseline_interval: Duration,
    pub baseline_concurrency: usize,
    /// Print per-run details (polls per job, learned timing) to stderr.
    pub verbose: bool,
}

#[derive(Clone, Debug)]
pub struct Figures {
    pub name: &'static str,
    pub videos: usize,
    pub requests: usize,
    pub rate_limited: u64,
    /// Mean completion→seen delay, real seconds.
    pub delay_s: f64,
    /// Mean job duration at the fake, real seconds.
    pub duration_s: f64,
    /// Real-time minutes from start to the last video downloaded.
    pub minutes: f64,
    /// API requests in each real-time minute of the run.
    pub per_minute: Vec<usize>,
    /// Videos per real minute between the 10th and 90th percentile completions seen: the rate
    /// at the limit, without the pipeline's fill at the start and drain at the end.
    pub steady_per_minute: f64,
}

impl Figures {
    pub fn requests_per_video(&self) -> f64 {
        self.requests as f64 / self.videos.max(1) as f64
    }
    /// Over the whole run, fill and drain included.
    pub fn videos_per_minute(&self) -> f64 {
        self.videos as f64 / self.minutes.max(1e-9)
    }
}

const KEY: &str = "bench-key";

impl Scenario {
    fn scaled(&self, d: Duration) -> Duration {
        d.div_f64(self.scale)
    }

    fn fake_config(&self) -> FakeConfig {
        let d = self.scaled(self.duration);
        FakeConfig {
            api_key: KEY.into(),
            queue: d.mul_f64(0.1),
            run: d.mul_f64(0.9),
            jitter: self.jitter,
            rate_limit: Some(self.rpm),
            rate_window: self.scaled(Duration::from_secs(60)),
            video_len: 16 * 1024,
            ..FakeConfig::default()
        }
    }

    fn manifest(&self, dir: &Path) -> anyhow::Result<std::path::PathBuf> {
        let path = dir.join("bench.csv");
        let mut text = String::from("id,image,prompt,seed\n");
        for i in 0..self.videos {
            text.push_str(&format!(
                "v{i:05},https://img.example/{i}.jpg,benchmark scene {i},{i}\n"
            ));
        }
        std::fs::write(&path, text)?;
        Ok(path)
    }
}

/// Runs wanbatch's engine on the scenario.
pub async fn run_wanbatch(sc: &Scenario) -> anyhow::Result<Figures> {
    let dir = tempfile::tempdir()?;
    let fake = FakeServer::start(sc.fake_config()).await?;
    let store = Store::open(&dir.path().join("bench.db")).await?;
    let mut rows = Vec::new();
    let errors = crate::manifest::read_files(&[sc.manifest(dir.path())?], |r| rows.push(r));
    anyhow::ensure!(errors.is_empty(), "bench manifest: {errors:?}");
    store.import(&rows).await?.map_err(|c| anyhow::anyhow!("{c:?}"))?;
    let api = ApiClient::new(
        &fake.api_url(),
        &ApiKey::new(KEY.into()).expect("key"),
        Duration::from_secs(30),
    )?;
    let cfg = EngineConfig {
        rpm: sc.rpm,
        rate_window: sc.scaled(Duration::from_secs(60)),
        budget: Budget::default(),
        concurrency: None,
        download_concurrency: 8,
        out_dir: dir.path().join("out"),
        timing: Timing {
            expected: sc.scaled(Duration::from_millis(54_460)),
            result_lifetime: sc.scaled(Duration::from_secs(3600)),
            min_poll_gap: sc.scaled(Duration::from_secs(1)),
            base_backoff: sc.scaled(Duration::from_secs(1)),
            max_backoff: sc.scaled(Duration::from_secs(60)),
        },
        on_unknown: UnknownPolicy::Resubmit,
        grace: Duration::from_secs(2),
        max_video_bytes: 1 << 30,
        poll: engine::PollMode::Auto,
        max_resubmits: 2,
        unreachable_after: Duration::from_secs(120),
        telemetry: Default::default(),
    };
    let started = Instant::now();
    let stop = engine::run(store.clone(), api, cfg, CancellationToken::new()).await?;
    let elapsed = started.elapsed();
    anyhow::ensure!(stop == engine::Stop::Finished, "engine stopped early: {stop:?}");
    let done = store.count_in(crate::state::JobState::Done).await? as usize;
    let figures = figures("wanbatch", sc, &fake, done, elapsed);
    if sc.verbose {
        // Delay by the number of polls each job needed, and the learned timing.
        let polls: std::collections::HashMap<String, i64> = store
            .jobs(None)
            .await?
            .into_iter()
            .filter_map(|j| j.request_id.map(|r| (r, j.polls)))
            .collect();
        let mut by: std::collections::BTreeMap<i64, (usize, f64)> = Default::default();
        for t in fake.timelines() {
            let (Some(seen), Some(p)) = (t.seen_done_ms, polls.get(&t.request_id)) else {
                continue;
            };
            let e = by.entry(*p).or_default();
            e.0 += 1;
            e.1 += seen.saturating_sub(t.done_ms) as f64 * sc.scale / 1000.0;
        }
        for (p, (n, d)) in by {
            eprintln!(
                "  {p} poll(s): {n} jobs, mean completion→seen delay {:.2} s",
                d / n as f64
            );
        }
        // Idle budget: gaps between API requests longer than one permit, by what ended them.
        let slot = 60_000.0 / sc.scale / f64::from(sc.rpm);
        let reqs = fake.stats().api_requests;
        let (mut idle_submit, mut idle_poll) = (0.0, 0.0);
        for w in reqs.windows(2) {
            let gap = (w[1].at_ms.saturating_sub(w[0].at_ms)) as f64 - slot;
            if gap > 0.5 * slot {
                if w[1].method == "POST" {
                    idle_submit += gap;
                } else {
                    idle_poll += gap;
                }
            }
        }
        let span = (reqs.last().map_or(0, |r| r.at_ms) - reqs.first().map_or(0, |r| r.at_ms)) as f64;
        eprintln!(
            "  idle budget: {:.1} % before submits, {:.1} % before polls",
            100.0 * idle_submit / span.max(1.0),
            100.0 * idle_poll / span.max(1.0)
        );
        // Submits per minute, and jobs at Segmind (submitted, not yet seen done) sampled each
        // simulated second: what paced the submits.
        let bucket = 60_000.0 / sc.scale;
        let stats = fake.stats();
        let mut submits = vec![0usize; (elapsed.as_millis() as f64 / bucket) as usize + 1];
        let last = submits.len() - 1;
        for r in &stats.submits {
            submits[((r.at_ms as f64 / bucket) as usize).min(last)] += 1;
        }
        eprintln!("  submits per minute: {submits:?}");
        let timelines = fake.timelines();
        let mut at_segmind = vec![0usize; submits.len()];
        for (i, n) in at_segmind.iter_mut().enumerate() {
            let t = ((i as f64 + 0.5) * bucket) as u64;
            *n = timelines
                .iter()
                .filter(|j| j.submitted_ms <= t && j.seen_done_ms.is_none_or(|s| s > t))
                .count();
        }
        eprintln!("  jobs at Segmind mid-minute: {at_segmind:?}");
        for (class, mu, sigma, n) in store.timing_models().await? {
            let m = crate::engine::model::LogNormal { mu, sigma };
            eprintln!(
                "  learned {class} after {n} videos: median {:.1} s, first poll (80 %) {:.1} s",
                m.median() * sc.scale / 1000.0,
                m.quantile(0.8) * sc.scale / 1000.0
            );
        }
    }
    store.close().await;
    fake.shutdown().await;
    Ok(figures)
}

/// Runs the SDK-style baseline on the scenario.
pub async fn run_baseline(sc: &Scenario) -> anyhow::Result<Figures> {
    let dir = tempfile::tempdir()?;
    let fake = FakeServer::start(sc.fake_config()).await?;
    let api = ApiClient::new(
        &fake.api_url(),
        &ApiKey::new(KEY.into()).expect("key"),
        Duration::from_secs(30),
    )?;
    let gate = Arc::new(Gate::new(
        sc.rpm,
        sc.scaled(Duration::from_secs(60)),
        sc.scaled(Duration::from_secs(5)),
    ));
    let dl = download::client(5)?;
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let interval = sc.scaled(sc.baseline_interval);
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..sc.baseline_concurrency {
        let (api, gate, dl, next, out) = (
            api.clone(),
            gate.clone(),
            dl.clone(),
            next.clone(),
            dir.path().join("out"),
        );
        let videos = sc.videos;
        workers.spawn(async move {
            let mut done = 0usize;
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if i >= videos {
                    return Ok::<usize, anyhow::Error>(done);
                }
                let body =
                    format!(r#"{{"image":"https://img.example/{i}.jpg","prompt":"benchmark scene {i}","seed":{i}}}"#);
                let sub = loop {
                    gate.acquire().await;
                    match api.submit(&body).await {
                        Ok((sub, _)) => break sub,
                        Err(ApiError::RateLimited { until }) => gate.on_rate_limited(until),
                        Err(e) => anyhow::bail!("baseline submit: {e}"),
                    }
                };
                let output = loop {
                    tokio::time::sleep(interval).await;
                    gate.acquire().await;
                    match api.status(&sub.request_id, Some(&sub.status_url)).await {
                        Ok((Poll::Completed(_), _)) => {}
                        Ok((Poll::Pending(_), _)) => continue,
                        Ok((Poll::Failed(e), _)) => anyhow::bail!("baseline job failed: {e}"),
                        Err(ApiError::RateLimited { until }) => {
                            gate.on_rate_limited(until);
                            continue;
                        }
                        Err(e) => anyhow::bail!("baseline status: {e}"),
                    }
                    gate.acquire().await;
                    match api.result(&sub.request_id, Some(&sub.response_url)).await {
                        Ok((Poll::Completed(Some(out)), _)) => break out,
                        Err(ApiError::RateLimited { until }) => gate.on_rate_limited(until),
                        other => anyhow::bail!("baseline result: {other:?}"),
                    }
                };
                download::fetch(
                    &dl,
                    &output.url,
                    &out,
                    &format!("v{i:05}"),
                    &sub.request_id,
                    output.file_size,
                    1 << 30,
                )
                .await?;
                done += 1;
            }
        });
    }
    let mut done = 0;
    while let Some(r) = workers.join_next().await {
        done += r??;
    }
    let elapsed = started.elapsed();
    let figures = figures("SDK-style baseline", sc, &fake, done, elapsed);
    fake.shutdown().await;
    Ok(figures)
}

fn figures(name: &'static str, sc: &Scenario, fake: &FakeServer, videos: usize, elapsed: Duration) -> Figures {
    let stats = fake.stats();
    let timelines = fake.timelines();
    let seen: Vec<&crate::fake::JobTimeline> = timelines.iter().filter(|t| t.seen_done_ms.is_some()).collect();
    let n = seen.len().max(1) as f64;
    let delay_ms = seen
        .iter()
        .map(|t| t.seen_done_ms.unwrap_or(0).saturating_sub(t.done_ms) as f64)
        .sum::<f64>()
        / n;
    let dur_ms = seen.iter().map(|t| (t.done_ms - t.submitted_ms) as f64).sum::<f64>() / n;
    let bucket = (60_000.0 / sc.scale).max(1.0) as u64;
    let mut per_minute = vec![0usize; (elapsed.as_millis() as u64 / bucket + 1) as usize];
    for r in &stats.api_requests {
        let i = ((r.at_ms / bucket) as usize).min(per_minute.len() - 1);
        per_minute[i] += 1;
    }
    let mut seen_at: Vec<u64> = seen.iter().filter_map(|t| t.seen_done_ms).collect();
    seen_at.sort_unstable();
    let steady_per_minute = if seen_at.len() >= 10 {
        let (a, b) = (seen_at.len() / 10, seen_at.len() * 9 / 10);
        let span_min = (seen_at[b] - seen_at[a]) as f64 * sc.scale / 60_000.0;
        (b - a) as f64 / span_min.max(1e-9)
    } else {
        0.0
    };
    Figures {
        steady_per_minute,
        per_minute,
        name,
        videos,
        requests: stats.api_requests.len(),
        rate_limited: stats.rate_limited,
        delay_s: delay_ms * sc.scale / 1000.0,
        duration_s: dur_ms * sc.scale / 1000.0,
        minutes: elapsed.as_secs_f64() * sc.scale / 60.0,
    }
}

/// The comparison table.
pub fn table(sc: &Scenario, ours: &Figures, base: Option<&Figures>) -> String {
    let mut s = format!(
        "scenario: {} videos of {:.0} s ± {:.0} %, {} API requests/min, time compressed {}× (figures in real time)\n\n",
        sc.videos,
        sc.duration.as_secs_f64(),
        sc.jitter * 100.0,
        sc.rpm,
        sc.scale
    );
    let cols: Vec<&Figures> = std::iter::once(ours).chain(base).collect();
    s.push_str(&format!("{:<28}", ""));
    for f in &cols {
        s.push_str(&format!("{:>22}", f.name));
    }
    s.push('\n');
    let mut row = |label: &str, cell: &dyn Fn(&Figures) -> String| {
        s.push_str(&format!("{label:<28}"));
        for f in &cols {
            s.push_str(&format!("{:>22}", cell(f)));
        }
        s.push('\n');
    };
    row("videos done", &|f| f.videos.to_string());
    row("API requests per video", &|f| format!("{:.2}", f.requests_per_video()));
    row("completion→seen delay", &|f| {
        format!(
            "{:.2} s ({:.1} %)",
            f.delay_s,
            100.0 * f.delay_s / f.duration_s.max(1e-9)
        )
    });
    row("videos per minute at limit", &|f| format!("{:.2}", f.steady_per_minute));
    row("videos per minute overall", &|f| {
        format!("{:.2}", f.videos_per_minute())
    });
    row("429 answers", &|f| f.rate_limited.to_string());
    row("wall time (real-time min)", &|f| format!("{:.1}", f.minutes));
    if let Some(b) = base {
        s.push_str(&format!(
            "\nwanbatch / baseline: {:.1}× the videos per minute at the limit ({:.1}× overall), {:.1}× fewer requests per video\n",
            ours.steady_per_minute / b.steady_per_minute.max(1e-9),
            ours.videos_per_minute() / b.videos_per_minute().max(1e-9),
            b.requests_per_video() / ours.requests_per_video().max(1e-9)
        ));
    }
    s
}

// ---- the `wanbatch bench` command ----

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Videos in the workload.
    #[arg(long, default_value_t = 200)]
    pub videos: usize,
    /// The account's API requests per minute (the fake enforces it; both schedulers get it).
    #[arg(long, default_value_t = 50)]
    pub rpm: u32,
    /// Mean video duration in real seconds (the seed page's ~54 s).
    #[arg(long, default_value_t = 54.0)]
    pub duration_secs: f64,
    /// ± spread of durations, as a fraction.
    #[arg(long, default_value_t = 0.1)]
    pub jitter: f64,
    /// Time compression: 20 runs a real minute in three seconds. Much more and timer
    /// granularity (~1 ms) starts to eat a visible share of each scaled permit interval.
    #[arg(long, default_value_t = 20.0)]
    pub scale: f64,
    /// The baseline's poll interval in real seconds (the SDK's `interval=2.0`).
    #[arg(long, default_value_t = 2.0)]
    pub baseline_interval_secs: f64,
    /// Baseline jobs in parallel: 2 is the fewest whose 2-second polls fill a 50 rpm budget.
    #[arg(long, default_value_t = 2)]
    pub baseline_concurrency: usize,
    /// Also print the API requests made in each minute.
    #[arg(long)]
    pub verbose: bool,
    /// Run only wanbatch's scheduler.
    #[arg(long)]
    pub skip_baseline: bool,
}

pub async fn run(args: BenchArgs) -> anyhow::Result<Outcome> {
    let sc = Scenario {
        videos: args.videos,
        rpm: args.rpm,
        duration: Duration::from_secs_f64(args.duration_secs),
        jitter: args.jitter,
        scale: args.scale,
        baseline_interval: Duration::from_secs_f64(args.baseline_interval_secs),
        baseline_concurrency: args.baseline_concurrency.max(1),
        verbose: args.verbose,
    };
    eprintln!("running wanbatch's scheduler…");
    let ours = run_wanbatch(&sc).await?;
    let base = if args.skip_baseline {
        None
    } else {
        eprintln!("running the SDK-style baseline…");
        Some(run_baseline(&sc).await?)
    };
    println!("{}", table(&sc, &ours, base.as_ref()));
    if args.verbose {
        for f in std::iter::once(&ours).chain(base.as_ref()) {
            println!("{} requests per minute: {:?}", f.name, f.per_minute);
        }
    }
    Ok(Outcome::AllDone)
}
