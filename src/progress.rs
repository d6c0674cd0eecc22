//! The live progress of `run`: how far, how fast, how much spent, what went wrong, when it ends.
//!
//! The engine counts into a [`Telemetry`] (lock-free counters and the last error); a reporter task
//! reads it and the database's counts once a second and shows them (money as `figures` defines
//! it, so the display, the summary and `status` agree; API requests as the limiter counts them,
//! over its own window, against the budget):
//! - on a terminal, an indicatif bar that redraws in place (log lines are printed above it);
//! - otherwise (CI, nohup, a pipe), one plain line every `--progress-interval` seconds, with no
//!   escape codes, so a log file stays readable;
//! - with `--quiet`, nothing.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio_util::sync::CancellationToken;

use crate::state::JobState;
use crate::store::Store;

/// What the engine tells the display. Cheap to update from any task.
#[derive(Default, Debug)]
pub struct Telemetry {
    api_requests: AtomicU64,
    last_error: Mutex<Option<(std::time::SystemTime, String)>>,
    /// Remaining credits as the API last reported them, as f64 bits (u64::MAX: unknown).
    credits: AtomicU64,
    /// API requests sent within the rate limiter's last window, as it counts them.
    window_sent: AtomicU64,
    /// The run is stopping (Ctrl-C): finishing calls in flight.
    stopping: std::sync::atomic::AtomicBool,
}

impl Telemetry {
    pub fn new() -> Telemetry {
        Telemetry {
            credits: AtomicU64::new(u64::MAX),
            ..Telemetry::default()
        }
    }

    /// One API request sent (it took a permit).
    pub fn request(&self) {
        self.api_requests.fetch_add(1, Ordering::Relaxed);
    }

    pub fn requests(&self) -> u64 {
        self.api_requests.load(Ordering::Relaxed)
    }

    /// Something went wrong that the operator may want to know about (retried or not).
    pub fn error(&self, what: impl std::fmt::Display) {
        let mut msg = what.to_string();
        if msg.len() > 200 {
            let cut = (0..=200).rev().find(|i| msg.is_char_boundary(*i)).unwrap_or(0);
            msg.truncate(cut);
            msg.push('…');
        }
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some((std::time::SystemTime::now(), msg));
    }

    pub fn last_error(&self) -> Option<(std::time::SystemTime, String)> {
        self.last_error.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn set_credits(&self, credits: f64) {
        self.credits.store(credits.to_bits(), Ordering::Relaxed);
    }

    pub fn credits(&self) -> Option<f64> {
        let bits = self.credits.load(Ordering::Relaxed);
        (bits != u64::MAX).then(|| f64::from_bits(bits))
    }

    /// The limiter's count of requests in its last window.
    pub fn set_window_sent(&self, n: u64) {
        self.window_sent.store(n, Ordering::Relaxed);
    }

    pub fn window_sent(&self) -> u64 {
        self.window_sent.load(Ordering::Relaxed)
    }

    /// The run was asked to stop: the display says so.
    pub fn set_stopping(&self) {
        self.stopping.store(true, Ordering::Relaxed);
    }

    pub fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }
}

/// How progress is shown.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Mode {
    /// Nothing (`--quiet`).
    Off,
    /// A bar redrawn in place (stderr is a terminal).
    Bar,
    /// A plain line every so often (stderr is not a terminal).
    Lines(Duration),
}

impl Mode {
    /// The mode for this process: a bar on a terminal, lines elsewhere, nothing when quiet.
    pub fn detect(quiet: bool, interval: Duration) -> Mode {
        use std::io::IsTerminal;
        if quiet {
            Mode::Off
        } else if std::io::stderr().is_terminal() {
            Mode::Bar
        } else {
            Mode::Lines(interval)
        }
    }
}

/// What the display needs to know about the run's configuration.
#[derive(Clone, Debug)]
pub struct Budgeting {
    /// API requests allowed per `window` (the limiter's own count and window).
    pub requests: u32,
    pub window: Duration,
    /// Dollars per video where the API reports no cost.
    pub price: Option<f64>,
}

/// When the run should end.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum Eta {
    /// Not enough finished in this run to tell.
    #[default]
    Estimating,
    In(Duration),
    /// Every job has ended.
    Now,
}

/// One reading of the run.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    pub elapsed: Duration,
    pub total: i64,
    pub done: i64,
    pub failed: i64,
    /// Withdrawn with `wanbatch cancel`: finished, like done and failed.
    pub cancelled: i64,
    /// Not yet submitted (or waiting to be submitted again).
    pub waiting: i64,
    /// Submitted and not yet finished at Segmind (includes answers not yet known).
    pub at_segmind: i64,
    pub downloading: i64,
    pub videos_per_minute: Option<f64>,
    /// API requests in the limiter's last window, the budget per window, and the window.
    pub window_sent: u64,
    pub budget: u32,
    pub window: Duration,
    pub money: crate::figures::Money,
    pub credits: Option<f64>,
    pub eta: Eta,
    pub last_error: Option<String>,
    /// Ctrl-C was pressed: calls in flight are finishing.
    pub stopping: bool,
}

impl Snapshot {
    /// The plain one-line form (no escape codes).
    pub fn line(&self) -> String {
        let mut s = format!(
            "progress [{}] {}{}/{} done, {} failed, {} at Segmind, {} downloading, {} waiting",
            clock(self.elapsed),
            if self.stopping { "stopping: " } else { "" },
            self.done,
            self.total,
            self.failed,
            self.at_segmind,
            self.downloading,
            self.waiting
        );
        if self.cancelled > 0 {
            s.push_str(&format!(", {} cancelled", self.cancelled));
        }
        s.push_str(" | ");
        s.push_str(&self.rates());
        s.push_str(" | ");
        s.push_str(&self.spend());
        s.push_str(" | ETA ");
        s.push_str(&self.eta_text());
        if let Some(e) = &self.last_error {
            s.push_str(" | last error: ");
            s.push_str(e);
        }
        s
    }

    fn rates(&self) -> String {
        let videos = self
            .videos_per_minute
            .map_or_else(|| "…".to_string(), |v| format!("{v:.1}"));
        // The limiter's own count over its own window: never more than the budget.
        let window = if self.window == Duration::from_secs(60) {
            "the last minute".to_string()
        } else {
            format!("the last {:.1} s", self.window.as_secs_f64())
        };
        format!(
            "{videos} videos/min, API {}/{} requests in {window}",
            self.window_sent, self.budget
        )
    }

    fn spend(&self) -> String {
        match self.credits {
            Some(c) => format!("{}, {c} credits left", self.money.short()),
            None => self.money.short(),
        }
    }

    fn eta_text(&self) -> String {
        match self.eta {
            Eta::Now => "now".into(),
            Eta::In(d) => clock(d),
            Eta::Estimating => "estimating".into(),
        }
    }
}

/// h:mm:ss
fn clock(d: Duration) -> String {
    let s = d.as_secs();
    format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

/// The rate of finished jobs over the last minute, from samples of the cumulative count, and
/// the ETA it gives.
struct Rates {
    samples: VecDeque<(Instant, i64)>,
    /// Jobs finished before this run's first sample, and when this run first saw one finish.
    at_start: Option<i64>,
    first_finish: Option<Instant>,
}

impl Rates {
    const SPAN: Duration = Duration::from_secs(60);
    /// Below this much history a rate is not shown.
    const MIN: Duration = Duration::from_secs(3);
    /// Jobs this run must see finish before it guesses when the rest will.
    const ETA_AFTER: i64 = 3;

    fn new() -> Rates {
        Rates {
            samples: VecDeque::new(),
            at_start: None,
            first_finish: None,
        }
    }

    /// Adds a sample (`finished` jobs at `at`) and gives the rate per minute over the last
    /// minute, and the ETA of `left` jobs.
    fn add(&mut self, at: Instant, finished: i64, left: i64) -> (Option<f64>, Eta) {
        let start = *self.at_start.get_or_insert(finished);
        if finished > start && self.first_finish.is_none() {
            self.first_finish = Some(at);
        }
        self.samples.push_back((at, finished));
        while self.samples.len() > 2 && at.duration_since(self.samples[1].0) >= Self::SPAN {
            self.samples.pop_front();
        }
        let (t0, f0) = self.samples[0];
        let span = at.duration_since(t0);
        let rate = (span >= Self::MIN).then(|| (finished - f0) as f64 / (span.as_secs_f64() / 60.0));
        if left <= 0 {
            return (rate, Eta::Now);
        }
        // The ETA waits for this run's own evidence: a few jobs finished, measured from the first
        // of them (the time before it is each job's own duration, not the pace).
        let eta = match self.first_finish {
            Some(first) if finished - start >= Self::ETA_AFTER => {
                let since = at.duration_since(first).as_secs_f64().max(1.0);
                let pace = (finished - start - 1) as f64 / since;
                if pace > 0.0 {
                    Eta::In(Duration::from_secs_f64((left as f64 / pace).min(1e9)))
                } else {
                    Eta::Estimating
                }
            }
            _ => Eta::Estimating,
        };
        (rate, eta)
    }
}

/// Reads the run's state once.
async fn read(
    store: &Store,
    tele: &Telemetry,
    budgeting: &Budgeting,
    started: Instant,
    rates: &mut Rates,
) -> anyhow::Result<Snapshot> {
    let counts = store.counts().await?;
    let n = |s: JobState| counts.iter().find(|(st, _)| *st == s).map_or(0, |(_, n)| *n);
    let now = Instant::now();
    let (done, failed, cancelled) = (n(JobState::Done), n(JobState::Failed), n(JobState::Cancelled));
    let total: i64 = counts.iter().map(|(_, c)| c).sum();
    let left = total - done - failed - cancelled;
    let (videos_per_minute, eta) = rates.add(now, done + failed + cancelled, left);
    let money = crate::figures::Money {
        cost: store.cost_summary().await?,
        price: budgeting.price,
    };
    Ok(Snapshot {
        elapsed: now.duration_since(started),
        total,
        done,
        failed,
        cancelled,
        waiting: n(JobState::Pending),
        at_segmind: n(JobState::Submitting) + n(JobState::Unknown) + n(JobState::Running),
        downloading: n(JobState::Downloading),
        videos_per_minute,
        window_sent: tele.window_sent(),
        budget: budgeting.requests,
        window: budgeting.window,
        money,
        credits: tele.credits(),
        eta,
        last_error: tele.last_error().map(|(at, msg)| {
            let ms = at
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64);
            let stamp = crate::clock::rfc3339(ms);
            // HH:MM:SS of the RFC 3339 stamp is enough on a live display.
            format!("{} {msg}", stamp.get(11..19).unwrap_or(&stamp))
        }),
        stopping: tele.stopping(),
    })
}

/// The running display; `finish` stops it and leaves its last state on screen.
pub struct Reporter {
    stop: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// The bar in use, so that log lines can be printed above it instead of through it.
static BAR: Mutex<Option<ProgressBar>> = Mutex::new(None);

impl Reporter {
    pub fn start(store: Store, tele: Arc<Telemetry>, budgeting: Budgeting, mode: Mode) -> Reporter {
        let stop = CancellationToken::new();
        if mode == Mode::Off {
            return Reporter { stop, task: None };
        }
        let token = stop.clone();
        let task = tokio::spawn(async move {
            let started = Instant::now();
            let mut rates = Rates::new();
            let bar = (mode == Mode::Bar).then(|| {
                let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr_with_hz(4));
                bar.set_style(
                    ProgressStyle::with_template("{spinner} [{bar:32}] {pos}/{len} ended: {msg}")
                        .expect("template")
                        .progress_chars("=> "),
                );
                bar.enable_steady_tick(Duration::from_millis(250));
                *BAR.lock().unwrap_or_else(|e| e.into_inner()) = Some(bar.clone());
                bar
            });
            let tick = match mode {
                Mode::Lines(every) => every.max(Duration::from_millis(50)),
                _ => Duration::from_secs(1),
            };
            // Rates need samples more often than a slow line interval.
            let sample = tick.min(Duration::from_secs(1));
            let mut next_line = Instant::now() + tick;
            let mut last_line: Option<String> = None;
            loop {
                let stopping = tokio::select! {
                    _ = tokio::time::sleep(sample) => false,
                    _ = token.cancelled() => true,
                };
                let Ok(snap) = read(&store, &tele, &budgeting, started, &mut rates).await else {
                    if stopping {
                        break;
                    }
                    continue;
                };
                match &bar {
                    Some(bar) => {
                        bar.set_length(snap.total.max(0) as u64);
                        bar.set_position((snap.done + snap.failed + snap.cancelled).max(0) as u64);
                        bar.set_message(bar_message(&snap));
                    }
                    None if stopping || Instant::now() >= next_line => {
                        next_line = Instant::now() + tick;
                        let line = snap.line();
                        // The last line is not repeated when nothing changed since it.
                        if last_line.as_deref() != Some(line.as_str()) {
                            let mut err = std::io::stderr().lock();
                            let _ = writeln!(err, "{line}");
                            last_line = Some(line);
                        }
                    }
                    None => {}
                }
                if stopping {
                    break;
                }
            }
            if let Some(bar) = bar {
                bar.abandon();
                *BAR.lock().unwrap_or_else(|e| e.into_inner()) = None;
            }
        });
        Reporter { stop, task: Some(task) }
    }

    /// Stops the display after one last reading.
    pub async fn finish(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
    }
}

fn bar_message(s: &Snapshot) -> String {
    let mut m = format!(
        "{}{} done · {} failed · {} at Segmind · {} downloading · {} waiting · ETA {}\n  {}",
        if s.stopping {
            "STOPPING (finishing calls in flight) · "
        } else {
            ""
        },
        s.done,
        s.failed,
        s.at_segmind,
        s.downloading,
        s.waiting,
        s.eta_text(),
        s.rates()
    );
    m.push_str(" · ");
    m.push_str(&s.spend());
    if let Some(e) = &s.last_error {
        m.push_str("\n  last error: ");
        m.push_str(e);
    }
    m
}

/// A tracing writer for stderr that prints above the progress bar when one is shown.
#[derive(Clone, Copy, Default)]
pub struct LogWriter;

/// One log record, written out whole when dropped.
pub struct LogLine(Vec<u8>);

impl Write for LogLine {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LogLine {
    fn drop(&mut self) {
        let bar = BAR.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let out = |buf: &[u8]| {
            let _ = std::io::stderr().lock().write_all(buf);
        };
        match bar {
            Some(bar) => bar.suspend(|| out(&self.0)),
            None => out(&self.0),
        }
    }
}

/// Prints a line for the user on stderr, above the progress bar if one is shown, so that the bar's
/// next redraw does not cover it.
pub fn notice(msg: &str) {
    let bar = BAR.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let out = || {
        let _ = writeln!(std::io::stderr().lock(), "{msg}");
    };
    match bar {
        Some(bar) => bar.suspend(out),
        None => out(),
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogLine;
    fn make_writer(&'a self) -> LogLine {
        LogLine(Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap() -> Snapshot {
        Snapshot {
            elapsed: Duration::from_secs(3723),
            total: 100,
            done: 40,
            failed: 2,
            cancelled: 0,
            waiting: 30,
            at_segmind: 25,
            downloading: 3,
            videos_per_minute: Some(20.0),
            window_sent: 48,
            budget: 50,
            window: Duration::from_secs(60),
            money: crate::figures::Money {
                cost: crate::store::CostSummary {
                    reported: 2.0,
                    reported_jobs: 40,
                    at_segmind: 25,
                    ..Default::default()
                },
                price: None,
            },
            credits: None,
            eta: Eta::In(Duration::from_secs(174)),
            last_error: Some("12:00:01 poll: 502 Bad Gateway".into()),
            stopping: false,
        }
    }

    #[test]
    fn the_line_says_how_far_how_fast_how_much_when_and_what_went_wrong() {
        let line = snap().line();
        assert_eq!(
            line,
            "progress [1:02:03] 40/100 done, 2 failed, 25 at Segmind, 3 downloading, 30 waiting | \
             20.0 videos/min, API 48/50 requests in the last minute | $2.00 spent · ~$1.25 at Segmind | \
             ETA 0:02:54 | last error: 12:00:01 poll: 502 Bad Gateway"
        );
        assert!(!line.contains('\x1b'));
        let bar = bar_message(&snap());
        assert!(bar.starts_with("40 done · 2 failed · 25 at Segmind"), "{bar}");
        let stopping = Snapshot {
            stopping: true,
            ..snap()
        };
        assert!(stopping.line().starts_with("progress [1:02:03] stopping: 40/100 done"));
        assert!(bar_message(&stopping).starts_with("STOPPING"));
    }

    #[test]
    fn unknown_rates_and_eta_are_said_so() {
        let s = Snapshot {
            videos_per_minute: None,
            eta: Eta::Estimating,
            credits: Some(120.0),
            last_error: None,
            window: Duration::from_millis(3000),
            ..snap()
        };
        assert!(
            s.line()
                .contains("… videos/min, API 48/50 requests in the last 3.0 s | $2.00 spent · ~$1.25 at Segmind, 120 credits left | ETA estimating"),
            "{}",
            s.line()
        );
    }

    #[test]
    fn the_eta_waits_for_this_runs_own_finishes() {
        let mut r = Rates::new();
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        // 10 jobs finished in an earlier run; 30 left.
        assert_eq!(r.add(at(0), 10, 30).1, Eta::Estimating);
        // The first finish of this run comes after a whole video's duration: not a pace.
        assert_eq!(r.add(at(54), 11, 29).1, Eta::Estimating);
        assert_eq!(r.add(at(56), 12, 28).1, Eta::Estimating);
        // Three finished, two of them 4 s after the first: 0.5 per second.
        let (_, eta) = r.add(at(58), 13, 27);
        assert_eq!(eta, Eta::In(Duration::from_secs(54)));
        assert_eq!(r.add(at(60), 40, 0).1, Eta::Now);
    }

    #[test]
    fn the_video_rate_covers_the_last_minute() {
        let mut r = Rates::new();
        let t0 = Instant::now();
        assert_eq!(r.add(t0, 0, 100).0, None);
        assert_eq!(r.add(t0 + Duration::from_secs(30), 10, 90).0, Some(20.0));
        // Two minutes in, the first minute's samples no longer count.
        r.add(t0 + Duration::from_secs(90), 20, 80);
        assert_eq!(r.add(t0 + Duration::from_secs(150), 50, 50).0, Some(30.0));
    }

    #[test]
    fn telemetry_keeps_the_last_error_short_and_the_credits() {
        let t = Telemetry::new();
        assert_eq!(t.credits(), None);
        t.set_credits(0.0);
        assert_eq!(t.credits(), Some(0.0));
        t.error("x".repeat(500));
        let (_, msg) = t.last_error().expect("an error");
        assert!(msg.chars().count() <= 201 && msg.ends_with('…'));
        t.request();
        t.request();
        assert_eq!(t.requests(), 2);
    }
}
