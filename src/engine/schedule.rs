//! When to poll, learnt from every answer, per parameter class, kept across runs; and the
//! backoff for transient trouble.
//!
//! Each class (resolution, frames, go_fast) has a duration model (`model::LogNormal`) fitted to
//! what the polls of its recent jobs said: a job done between its last "pending" answer and its
//! "done" answer, or still running past its last "pending" one. Planned polls go where the
//! model says a poll most likely finds the job done without much delay: the first at its 80 %
//! point, each next one at the 80 % point of what is still running (about 1.2 polls a video).
//! Polls the budget has room for in between (`done_by` chooses which job) bracket ends more
//! narrowly, and so teach faster.
//!
//! Time in QUEUED is learnt apart, over every class (it follows Segmind's load, not the
//! parameters), from the answers that tell QUEUED from PROCESSING. A class never seen starts from
//! the most similar class learnt — its run time scaled by the work (pixels × frames), plus the
//! current queue time — else from `--expected-duration`.
//!
//! No poll is planned later than `POLL_BEFORE` of the record's lifetime: a result must be
//! fetched before its record expires. Learnt models are saved (at most once a second per class,
//! and at the end of the run) and are the next run's priors.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::Rng;

use super::model::{Bracket, LogNormal};
use crate::store::Store;

#[derive(Clone, Debug)]
pub struct Timing {
    /// Expected duration of a class before anything is learnt about it or a similar one (the
    /// seed page's ~54 s; `--expected-duration`).
    pub expected: Duration,
    /// Never re-poll a job more often than this.
    pub min_poll_gap: Duration,
    /// First backoff step for transient errors; doubles, capped at `max_backoff`, full jitter.
    pub base_backoff: Duration,
    pub max_backoff: Duration,
    /// How long Segmind keeps a request's record after submission (an hour; less in rehearsals).
    pub result_lifetime: Duration,
}

impl Default for Timing {
    fn default() -> Timing {
        Timing {
            expected: Duration::from_millis(54_460),
            min_poll_gap: Duration::from_secs(1),
            base_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            result_lifetime: Duration::from_secs(3600),
        }
    }
}

/// What a poll said about a job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    Queued,
    /// Running (or a state we do not know, taken as running).
    Processing,
    Done,
}

/// The share of jobs a planned poll should find done: the first poll, and each next one of
/// those still running.
const Q_PLANNED: f64 = 0.8;
/// A class whose model rests on fewer completed jobs than this is still being explored: polls on
/// idle permits go to its jobs whatever the model says.
const EXPLORE_UNTIL: i64 = 4;
/// Once a class is known, a poll on an idle permit goes to a job at least this likely done.
const EARLY_AT_LEAST: f64 = 0.8;
/// Planned polls come no later than this share of the record's lifetime after the submit.
const POLL_BEFORE: f64 = 0.8;
/// Jobs per class (and for the queue) the fit looks at: recent enough to follow a drifting
/// service, many enough to be steady.
const WINDOW: usize = 64;
/// The log-spread of a prior that knows nothing.
const PRIOR_SIGMA: f64 = 0.3;
/// How much a prior weighs, in jobs: one that knows nothing, one from a similar class, one this
/// class learnt in an earlier run (at most).
const WEIGHT_DEFAULT: f64 = 0.25;
const WEIGHT_SIMILAR: f64 = 0.5;
const WEIGHT_SAVED_MAX: f64 = 16.0;
/// A class is refitted at most this often from answers that are not completions.
const REFIT_EVERY: Duration = Duration::from_millis(20);
/// How often learnt models are saved during a run, per class.
const SAVE_EVERY: Duration = Duration::from_secs(1);
/// The queue model's name in the saved table.
pub const QUEUE: &str = "queue";

/// One class's model and the evidence it is fitted to.
struct Class {
    model: LogNormal,
    prior: LogNormal,
    prior_weight: f64,
    /// Recent jobs' brackets of their duration, oldest first.
    ended: VecDeque<Bracket>,
    /// Jobs still running: the last time (ms after submit) each was seen pending.
    running: HashMap<i64, f64>,
    /// Completions learnt from, in all runs.
    jobs: i64,
    refitted: Option<Instant>,
    saved: Option<Instant>,
    unsaved: bool,
}

impl Class {
    fn new(prior: LogNormal, weight: f64, jobs: i64) -> Class {
        Class {
            model: prior,
            prior,
            prior_weight: weight,
            ended: VecDeque::new(),
            running: HashMap::new(),
            jobs,
            refitted: None,
            saved: None,
            unsaved: false,
        }
    }

    fn refit(&mut self) {
        // Jobs still running count when they are informative: seen pending past the median.
        let median = self.model.median();
        let mut brackets: Vec<Bracket> = self.ended.iter().copied().collect();
        let mut running: Vec<f64> = self.running.values().copied().filter(|lo| *lo > median).collect();
        running.sort_by(|a, b| b.total_cmp(a));
        brackets.extend(running.into_iter().take(WINDOW).map(|lo| Bracket { lo, hi: None }));
        if !brackets.is_empty() {
            self.model = self.model.fit(&brackets, &self.prior, self.prior_weight);
        }
        self.refitted = Some(Instant::now());
    }

    fn end(&mut self, b: Bracket) {
        self.ended.push_back(b);
        while self.ended.len() > WINDOW {
            self.ended.pop_front();
        }
        self.jobs += 1;
        self.unsaved = true;
        self.refit();
    }
}

/// What the queue-time model keeps: the jobs' brackets of their time in QUEUED.
struct Queue {
    class: Class,
    /// Per job still queued as far as known: the last time it was seen QUEUED.
    queued: HashMap<i64, f64>,
}

struct State {
    classes: HashMap<String, Class>,
    queue: Queue,
    /// Saved models read at start-up, by class: priors for classes met later.
    saved: HashMap<String, (LogNormal, i64)>,
    /// A record expired before its result was fetched: polls come no later than this share of
    /// the lifetime from now on.
    poll_before: f64,
}

pub struct Schedule {
    timing: Timing,
    store: Store,
    state: Mutex<State>,
}

impl Schedule {
    pub fn new(store: Store, timing: Timing) -> Schedule {
        let queue_prior = LogNormal::new(timing.expected.as_millis() as f64 * 0.1, PRIOR_SIGMA);
        Schedule {
            state: Mutex::new(State {
                classes: HashMap::new(),
                queue: Queue {
                    class: Class::new(queue_prior, WEIGHT_DEFAULT, 0),
                    queued: HashMap::new(),
                },
                saved: HashMap::new(),
                poll_before: POLL_BEFORE,
            }),
            timing,
            store,
        }
    }

    /// Reads what earlier runs learnt (every class: a class met later may start from a similar
    /// one). A database error leaves the defaults.
    pub async fn load(&self) {
        let saved = match self.store.timing_models().await {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!(error = %e, "could not read learned poll timing");
                return;
            }
        };
        let mut st = self.lock();
        for (class, mu, sigma, jobs) in saved {
            let model = LogNormal { mu, sigma };
            if class == QUEUE {
                st.queue.class = Class::new(model, saved_weight(jobs), jobs);
            } else {
                st.saved.insert(class, (model, jobs));
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The class's model, starting it (from what was saved, a similar class, or the default) if
    /// this run has not met it yet.
    fn class<'a>(&self, st: &'a mut State, class: &str) -> &'a mut Class {
        if !st.classes.contains_key(class) {
            let c = match st.saved.get(class) {
                Some((model, jobs)) => Class::new(*model, saved_weight(*jobs), *jobs),
                None => match similar(st, class) {
                    Some(prior) => Class::new(prior, WEIGHT_SIMILAR, 0),
                    None => Class::new(
                        LogNormal::new(self.timing.expected.as_millis() as f64, PRIOR_SIGMA),
                        WEIGHT_DEFAULT,
                        0,
                    ),
                },
            };
            st.classes.insert(class.to_string(), c);
        }
        st.classes.get_mut(class).expect("just inserted")
    }

    /// The latest a planned poll may come, in ms after the submit.
    fn latest(&self, st: &State) -> f64 {
        self.timing.result_lifetime.as_millis() as f64 * st.poll_before
    }

    /// The first planned poll of a job accepted at `submitted_at`.
    pub fn first_poll_at(&self, class: &str, submitted_at: i64) -> i64 {
        let mut st = self.lock();
        let latest = self.latest(&st);
        let at = self.class(&mut st, class).model.quantile(Q_PLANNED).min(latest);
        submitted_at + at.round() as i64
    }

    /// The next planned poll of a job last seen pending at `pending_at` (epoch ms), answered at `now`.
    pub fn next_poll_at(&self, class: &str, submitted_at: i64, pending_at: i64, now: i64) -> i64 {
        let mut st = self.lock();
        let latest = self.latest(&st);
        let after = (pending_at - submitted_at).max(0) as f64;
        let at = self
            .class(&mut st, class)
            .model
            .quantile_after(after, Q_PLANNED)
            .min(latest.max(after));
        (submitted_at + at.round() as i64).max(now + self.timing.min_poll_gap.as_millis() as i64)
    }

    /// How likely a job last seen pending at `pending_at` is done at `now`.
    pub fn done_by(&self, class: &str, submitted_at: i64, pending_at: Option<i64>, now: i64) -> f64 {
        let mut st = self.lock();
        let after = pending_at.map_or(0.0, |p| (p - submitted_at).max(0) as f64);
        let m = self.class(&mut st, class).model;
        m.done_by((now - submitted_at).max(0) as f64, after)
    }

    /// Whether a poll on an idle permit is worth sending now, and how much (the likelihood the
    /// job is done). While a class has seen few jobs end, any: its model may be a wrong prior,
    /// and only polls tell. Once it knows, only a job at least `EARLY_AT_LEAST` (80 %) likely done —
    /// an idle permit is free, but a poll that finds the job running tells nothing the model did
    /// not expect, and lower thresholds measured no clear gain (docs/benchmarks.md).
    pub fn early_poll(&self, class: &str, submitted_at: i64, pending_at: Option<i64>, now: i64) -> Option<f64> {
        let mut st = self.lock();
        let after = pending_at.map_or(0.0, |p| (p - submitted_at).max(0) as f64);
        let c = self.class(&mut st, class);
        let p = c.model.done_by((now - submitted_at).max(0) as f64, after);
        let exploring = c.jobs < EXPLORE_UNTIL;
        (exploring || p >= EARLY_AT_LEAST).then_some(p)
    }

    /// The expected submit-to-completion time of a class, in ms.
    pub fn expected_ms(&self, class: &str) -> f64 {
        let mut st = self.lock();
        self.class(&mut st, class).model.mean()
    }

    /// Learns from a poll of job `seq` (of `class`, accepted at `submitted_at`) answered at `at`.
    pub async fn observe(&self, class: &str, seq: i64, submitted_at: i64, at: i64, answer: Answer) {
        let t = (at - submitted_at).max(0) as f64;
        let save = {
            let mut st = self.lock();
            let first_answer = !self.class(&mut st, class).running.contains_key(&seq);
            // Queue time: QUEUED at t means longer than t; anything else means no longer. A job
            // gives one bracket, at its first answer that is not QUEUED.
            match answer {
                Answer::Queued => {
                    st.queue.queued.insert(seq, t);
                }
                Answer::Processing | Answer::Done => {
                    let lo = st.queue.queued.remove(&seq);
                    if lo.is_some() || first_answer {
                        st.queue.class.end(Bracket {
                            lo: lo.unwrap_or(0.0),
                            hi: Some(t),
                        });
                    }
                }
            }
            let c = self.class(&mut st, class);
            match answer {
                Answer::Done => {
                    let lo = c.running.remove(&seq).unwrap_or(0.0);
                    c.end(Bracket { lo, hi: Some(t) });
                }
                Answer::Queued | Answer::Processing => {
                    let lo = c.running.entry(seq).or_insert(0.0);
                    *lo = lo.max(t);
                    if t > c.model.median() && c.refitted.is_none_or(|r| r.elapsed() >= REFIT_EVERY) {
                        c.refit();
                    }
                }
            }
            let due = c.unsaved && c.saved.is_none_or(|s| s.elapsed() >= SAVE_EVERY);
            if due {
                c.saved = Some(Instant::now());
                c.unsaved = false;
            }
            due.then_some((c.model, c.jobs))
        };
        if let Some((model, jobs)) = save {
            self.save(class, model, jobs).await;
        }
    }

    /// Job `seq` left without telling its duration (failed, expired, cancelled by a restart).
    pub fn forget(&self, class: &str, seq: i64) {
        let mut st = self.lock();
        st.queue.queued.remove(&seq);
        if let Some(c) = st.classes.get_mut(class) {
            c.running.remove(&seq);
        }
    }

    /// A job's record expired before its result was fetched, `age_ms` after the submit: it was
    /// done by then, and polls must come sooner.
    pub fn on_expired(&self, class: &str, seq: i64, age_ms: i64) {
        let mut st = self.lock();
        st.poll_before = (st.poll_before * 0.75).max(0.25);
        let c = self.class(&mut st, class);
        let lo = c.running.remove(&seq).unwrap_or(0.0);
        c.end(Bracket {
            lo,
            hi: Some(age_ms.max(1) as f64),
        });
    }

    async fn save(&self, class: &str, m: LogNormal, jobs: i64) {
        if let Err(e) = self.store.save_timing_model(class, m.mu, m.sigma, jobs).await {
            tracing::warn!(error = %e, "could not save learned poll timing");
        }
    }

    /// Saves what was learnt and not saved yet (at the end of a run).
    pub async fn flush(&self) {
        let pending: Vec<(String, LogNormal, i64)> = {
            let mut st = self.lock();
            let mut v = Vec::new();
            for (name, c) in st.classes.iter_mut() {
                if c.unsaved {
                    c.unsaved = false;
                    v.push((name.clone(), c.model, c.jobs));
                }
            }
            let q = &mut st.queue.class;
            if q.jobs > 0 {
                v.push((QUEUE.to_string(), q.model, q.jobs));
            }
            v
        };
        for (class, m, jobs) in pending {
            self.save(&class, m, jobs).await;
        }
    }

    /// Full-jitter exponential backoff after `errors` consecutive failures.
    pub fn backoff(&self, errors: i64) -> Duration {
        let exp = self.timing.base_backoff.as_millis() as f64 * 2f64.powi(errors.clamp(0, 20) as i32);
        let cap = exp.min(self.timing.max_backoff.as_millis() as f64).max(1.0);
        Duration::from_millis(rand::thread_rng().gen_range(0.0..=cap) as u64)
    }
}

/// How much a model learnt in an earlier run weighs as this run's prior.
fn saved_weight(jobs: i64) -> f64 {
    (jobs as f64).clamp(WEIGHT_DEFAULT, WEIGHT_SAVED_MAX)
}

/// The prior of a class met for the first time, from the most similar class known (learnt in
/// this run or saved): its run time (its duration less the queue time) scaled by the work, plus
/// the current queue time.
fn similar(st: &State, class: &str) -> Option<LogNormal> {
    let want = Shape::of(class)?;
    let known = st
        .classes
        .iter()
        .filter(|(_, c)| c.jobs > 0)
        .map(|(name, c)| (name.as_str(), c.model))
        .chain(st.saved.iter().map(|(name, (m, _))| (name.as_str(), *m)));
    let (_, shape, model) = known
        .filter_map(|(name, m)| Shape::of(name).map(|s| (name, s, m)))
        .min_by_key(|(name, s, _)| (want.distance(s), *name))?;
    let queue = st.queue.class.model.median();
    let run = (model.median() - queue).max(model.median() * 0.1);
    let median = queue + run * want.work() / shape.work();
    Some(LogNormal::new(median, model.sigma))
}

/// What a class key says about the work: `resolution|num_frames|go_fast`.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Shape {
    pixels: f64,
    frames: f64,
    fast: bool,
    hd: bool,
}

impl Shape {
    fn of(class: &str) -> Option<Shape> {
        let mut parts = class.split('|');
        let res = parts.next()?;
        let frames: f64 = parts.next()?.parse().ok()?;
        let fast = parts.next()? == "true";
        let hd = res == "720p";
        let pixels = if hd { 1280.0 * 720.0 } else { 832.0 * 480.0 };
        Some(Shape {
            pixels,
            frames,
            fast,
            hd,
        })
    }

    fn work(&self) -> f64 {
        self.pixels * self.frames
    }

    /// How unlike another class: speed mode first, then resolution, then frames.
    fn distance(&self, o: &Shape) -> (u8, u8, u64) {
        (
            u8::from(self.fast != o.fast),
            u8::from(self.hd != o.hd),
            (self.frames - o.frames).abs() as u64,
        )
    }
}

#[cfg(test)]
mod tests;
