//! The live progress of `run`: how far, how fast, how much spent, what went wrong, when it ends.
//!
//! The engine counts into a [`Telemetry`] (lock-free counters and the last error); a reporter task
//! reads it and the database's counts once a second and shows them:
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
    /// API requests allowed per minute (already converted from the rate window).
    pub requests_per_minute: f64,
    /// Dollars per video where the API reports no cost.
    pub price: Option<f64>,
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
    pub requests_per_minute: Option<f64>,
    pub budget_per_minute: f64,
    /// Reported cost plus `--price` for jobs the API did not price.
    pub spent: Option<f64>,
    pub credits: Option<f64>,
    pub eta: Option<Duration>,
    pub last_error: Option<String>,
}

impl Snapshot {
    /// The plain one-line form (no escape codes).
    pub fn line(&self) -> String {
        let mut s = format!(
            "progress [{}] {}/{} done, {} failed, {} at Segmind, {} downloading, {} waiting",
            clock(self.elapsed),
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
        if let Some(spend) = self.spend() {
            s.push_str(" | ");
            s.push_str(&spend);
        }
        s.push_str(" | ETA ");
        s.push_str(&self.eta_text());
        if let Some(e) = &self.last_error {
            s.push_str(" | last error: ");
            s.push_str(e);
        }
        s
    }

    fn rates(&self) -> String {
        let per_min = |v: Option<f64>| v.map_or_else(|| "…".to_string(), |v| format!("{v:.1}"));
        format!(
            "{} videos/min, API {}/{:.0} req/min",
            per_min(self.videos_per_minute),
            per_min(self.requests_per_minute),
            self.budget_per_minute
        )
    }

    fn spend(&self) -> Option<String> {
        match (self.spent, self.credits) {
            (Some(d), Some(c)) => Some(format!("${d:.2} spent, {c} credits left")),
            (Some(d), None) => Some(format!("${d:.2} spent")),
            (None, Some(c)) => Some(format!("{c} credits left")),
            (None, None) => None,
        }
    }

    fn eta_text(&self) -> String {
        if self.done + self.failed + self.cancelled >= self.total {
            return "now".into();
        }
        self.eta.map_or_else(|| "unknown".into(), clock)
    }
}

/// h:mm:ss
fn clock(d: Duration) -> String {
    let s = d.as_secs();
    format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

/// Rates over the last minute from samples of cumulative counts.
struct Rates {
    samples: VecDeque<(Instant, i64, u64)>,
}

impl Rates {
    const SPAN: Duration = Duration::from_secs(60);
    /// Below this much history a rate is not shown.
    const MIN: Duration = Duration::from_secs(3);

    fn add(&mut self, at: Instant, finished: i64, requests: u64) -> (Option<f64>, Option<f64>) {
        self.samples.push_back((at, finished, requests));
        while self.samples.len() > 2 && at.duration_since(self.samples[1].0) >= Self::SPAN {
            self.samples.pop_front();
        }
        let (t0, f0, r0) = self.samples[0];
        let span = at.duration_since(t0);
        if span < Self::MIN {
            return (None, None);
        }
        let minutes = span.as_secs_f64() / 60.0;
        (
            Some((finished - f0) as f64 / minutes),
            Some(requests.saturating_sub(r0) as f64 / minutes),
        )
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
    let (videos_per_minute, requests_per_minute) = rates.add(now, done + failed, tele.requests());
    let total: i64 = counts.iter().map(|(_, c)| c).sum();
    let left = total - done - failed - cancelled;
    let eta = videos_per_minute
        .filter(|v| *v > 0.0)
        .map(|v| Duration::from_secs_f64((left as f64 / v * 60.0).min(1e9)));
    let cost = store.cost_summary().await?;
    let spent = match budgeting.price {
        Some(p) => Some(cost.reported + cost.unpriced as f64 * p),
        None => (cost.reported_jobs > 0).then_some(cost.reported),
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
        requests_per_minute,
        budget_per_minute: budgeting.requests_per_minute,
        spent,
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
            let mut rates = Rates {
                samples: VecDeque::new(),
            };
            let bar = (mode == Mode::Bar).then(|| {
                let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr_with_hz(4));
                bar.set_style(
                    ProgressStyle::with_template("{spinner} [{bar:32}] {pos}/{len} {msg}")
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
        "done · {} failed · {} at Segmind · {} downloading · {} waiting · ETA {}\n  {}",
        s.failed,
        s.at_segmind,
        s.downloading,
        s.waiting,
        s.eta_text(),
        s.rates()
    );
    if let Some(spend) = s.spend() {
        m.push_str(" · ");
        m.push_str(&spend);
    }
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
            requests_per_minute: Some(48.5),
            budget_per_minute: 50.0,
            spent: Some(12.5),
            credits: None,
            eta: Some(Duration::from_secs(174)),
            last_error: Some("12:00:01 poll: 502 Bad Gateway".into()),
        }
    }

    #[test]
    fn the_line_says_how_far_how_fast_how_much_when_and_what_went_wrong() {
        let line = snap().line();
        assert_eq!(
            line,
            "progress [1:02:03] 40/100 done, 2 failed, 25 at Segmind, 3 downloading, 30 waiting | \
             20.0 videos/min, API 48.5/50 req/min | $12.50 spent | ETA 0:02:54 | last error: 12:00:01 poll: 502 Bad Gateway"
        );
        assert!(!line.contains('\x1b'));
    }

    #[test]
    fn unknown_rates_and_eta_are_said_so() {
        let s = Snapshot {
            videos_per_minute: None,
            requests_per_minute: None,
            eta: None,
            spent: None,
            credits: Some(120.0),
            last_error: None,
            ..snap()
        };
        assert!(
            s.line()
                .contains("… videos/min, API …/50 req/min | 120 credits left | ETA unknown"),
            "{}",
            s.line()
        );
        let finished = Snapshot { done: 98, ..s };
        assert!(finished.line().ends_with("ETA now"), "{}", finished.line());
    }

    #[test]
    fn rates_cover_the_last_minute() {
        let mut r = Rates {
            samples: VecDeque::new(),
        };
        let t0 = Instant::now();
        assert_eq!(r.add(t0, 0, 0), (None, None));
        assert_eq!(r.add(t0 + Duration::from_secs(30), 10, 25), (Some(20.0), Some(50.0)));
        // Two minutes in, the first minute's samples no longer count.
        r.add(t0 + Duration::from_secs(90), 20, 50);
        let (v, q) = r.add(t0 + Duration::from_secs(150), 50, 100);
        assert_eq!((v, q), (Some(30.0), Some(50.0)));
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
