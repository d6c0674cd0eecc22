//! When to poll, learned from what we observe, per parameter class, kept across runs; and the
//! backoff for transient trouble.
//!
//! Polls are throughput (every API request comes out of one budget), so the aim is one poll that
//! finds the job done, seldom two, and a short delay between completion and our seeing it. Both
//! the first and the second poll of a job answer a yes/no question exactly — "did it take less
//! than this?" — so each poll time is a *tracked quantile* of the duration, learnt by stochastic
//! approximation (`θ ← θ·e^{s(q − done)}` moves θ to where a share q of answers is "done"):
//!
//! - **first poll** at `θ₁ = first_ms` after the submit, target q₁ = 75 % done;
//! - **second poll** at `θ₁·(1 + spread)`, target 90 % of the remaining ones done (so about 97 %
//!   of all jobs are seen by the second poll): about 1.3 polls per video. The spread is learnt
//!   relative to θ₁, so a change of θ₁ carries the second poll along;
//! - **later polls** every half spread (the rare slow tail).
//!
//! Step sizes follow Kesten's rule: they stay at `MAX_STEP` while answers keep going the same way
//! (a wrong prior is corrected within a few dozen answers) and shrink each time the direction
//! flips, down to `MIN_STEP` (steady state). A poll teaches if it was *scheduled* within 10 % of
//! its quantile's current place, whatever it answers: answers to polls scheduled under a slightly
//! older θ are delayed observations, stable with small steps, while polls far from θ (a
//! restart's immediate re-polls, backoff retries) would bias it and are left out. The time a poll
//! waits for the budget is part of what the tracker learns to allow for. Before anything is
//! learnt the seed page's ~54 s is the prior.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use rand::Rng;

use crate::store::Store;

#[derive(Clone, Debug)]
pub struct Timing {
    /// Expected duration before anything is learned (the seed page's ~54 s).
    pub initial_estimate: Duration,
    /// Never re-poll a job more often than this.
    pub min_poll_gap: Duration,
    /// First backoff step for transient errors; doubles, capped at `max_backoff`, full jitter.
    pub base_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for Timing {
    fn default() -> Timing {
        Timing {
            initial_estimate: Duration::from_millis(54_460),
            min_poll_gap: Duration::from_secs(1),
            base_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
        }
    }
}

/// Share of jobs the first poll should find done.
const FIRST_Q: f64 = 0.75;
/// Share of the jobs still running at the first poll that the second poll should find done.
const SECOND_Q: f64 = 0.9;
/// Relative steps of the quantile trackers.
const MAX_STEP: f64 = 0.12;
const MIN_STEP: f64 = 0.03;
/// A flip of direction shrinks the step by this factor.
const SHRINK: f64 = 0.7;
/// Bounds of the second poll's spread above the first.
const SPREAD_MIN: f64 = 0.005;
const SPREAD_MAX: f64 = 0.5;
/// The spread's tracker moves up 9× as far as down (target 90 %): it starts with smaller steps
/// so that a few "pending" answers while θ₁ is still settling cannot inflate it for long.
const SPREAD_MAX_STEP: f64 = 0.1;

#[derive(Clone, Copy, Debug)]
struct Class {
    samples: i64,
    first_ms: f64,
    spread: f64,
    first: Tracker,
    second: Tracker,
}

/// Step state of one quantile tracker (not persisted: a restart starts careful but not slow).
#[derive(Clone, Copy, Debug)]
struct Tracker {
    step: f64,
    last_done: Option<bool>,
}

impl Tracker {
    fn new(samples: i64, max_step: f64) -> Tracker {
        Tracker {
            step: if samples >= 20 { MIN_STEP * 2.0 } else { max_step },
            last_done: None,
        }
    }

    /// The log-factor to apply for an answer, `q` being the target share of "done".
    fn update(&mut self, q: f64, done: bool) -> f64 {
        // No growth on runs of one answer: at a 75 % target long runs of "done" are normal,
        // and growing on them made the tracker oscillate (measured).
        if self.last_done.is_some_and(|d| d != done) {
            self.step = (self.step * SHRINK).max(MIN_STEP);
        }
        self.last_done = Some(done);
        self.step * if done { q - 1.0 } else { q }
    }
}

pub struct Schedule {
    timing: Timing,
    store: Store,
    learned: Mutex<HashMap<String, Class>>,
    /// When each class was last saved, and the classes learnt since.
    saved: Mutex<HashMap<String, std::time::Instant>>,
    unsaved: Mutex<std::collections::HashSet<String>>,
    /// First polls planned and not answered yet, per class.
    awaited: Mutex<HashMap<String, u64>>,
}

/// How often learnt timing is saved during a run, per class.
const SAVE_EVERY: Duration = Duration::from_secs(1);

impl Schedule {
    pub fn new(store: Store, timing: Timing) -> Schedule {
        Schedule {
            timing,
            store,
            learned: Mutex::new(HashMap::new()),
            saved: Mutex::new(HashMap::new()),
            unsaved: Mutex::new(Default::default()),
            awaited: Mutex::new(HashMap::new()),
        }
    }

    async fn class(&self, class: &str) -> Class {
        if let Some(c) = self.learned.lock().expect("schedule lock").get(class) {
            return *c;
        }
        let loaded = self.store.learned_timing(class).await.ok().flatten();
        let c = match loaded {
            Some((samples, first_ms, spread)) => Class {
                samples,
                first_ms,
                spread,
                first: Tracker::new(samples, MAX_STEP),
                second: Tracker::new(samples, SPREAD_MAX_STEP),
            },
            None => Class {
                samples: 0,
                first_ms: self.timing.initial_estimate.as_millis() as f64,
                spread: 0.08,
                first: Tracker::new(0, MAX_STEP),
                second: Tracker::new(0, SPREAD_MAX_STEP),
            },
        };
        *self
            .learned
            .lock()
            .expect("schedule lock")
            .entry(class.to_string())
            .or_insert(c)
    }

    /// The expected submit-to-completion time for a class, in ms (for estimates).
    pub async fn expected_ms(&self, class: &str) -> f64 {
        let c = self.class(class).await;
        c.first_ms * (1.0 + c.spread * 0.3)
    }

    /// The first poll after a submit accepted at `submitted_at`.
    pub async fn first_poll_at(&self, class: &str, submitted_at: i64) -> i64 {
        let at = submitted_at + self.class(class).await.first_ms.round() as i64;
        *self
            .awaited
            .lock()
            .expect("schedule lock")
            .entry(class.to_string())
            .or_default() += 1;
        at
    }

    /// The next poll of a job seen pending `pending_polls` times (≥ 1), the last at `now`.
    pub async fn next_poll_at(&self, class: &str, submitted_at: i64, pending_polls: i64, now: i64) -> i64 {
        let c = self.class(class).await;
        let min = self.timing.min_poll_gap.as_millis() as i64;
        let at = if pending_polls <= 1 {
            submitted_at + (c.first_ms * (1.0 + c.spread)).round() as i64
        } else {
            now + (c.first_ms * c.spread * 0.5).round() as i64
        };
        at.max(now + min)
    }

    /// Records what a poll learnt: it was the attempt's `nth` poll (1 = first), scheduled
    /// `scheduled_ms` after the submit, and the job had (`done`) or had not ended.
    pub async fn observe(&self, class: &str, nth: i64, done: bool, scheduled_ms: i64) {
        let mut c = self.class(class).await;
        let at = scheduled_ms as f64;
        let on_time = |target: f64| at >= target * 0.9 && at <= target * 1.1;
        let mut changed = false;
        // Answers teach whichever way they go: accepting only some (say a late "pending" but not
        // a late "done") would bias the quantile.
        if nth == 1 && on_time(c.first_ms) {
            // Answers arrive a whole duration after their poll was planned, many at once: with
            // n first polls planned and not yet answered, each answer moves the estimate
            // 1/√n as far. Without this, the first few "pending" answers of a busy run
            // (the prior is the median) pushed it up 9 % each before any correction could
            // arrive, and the overshoot took the rest of a 200-video run to unwind (measured:
            // first poll learnt at 60 s for jobs of at most 59 s).
            let lag = {
                let mut awaited = self.awaited.lock().expect("schedule lock");
                let n = awaited.entry(class.to_string()).or_default();
                // At most halved: a prior that is too high must still be unlearnt quickly.
                let lag = (*n).clamp(1, 4);
                *n = n.saturating_sub(1);
                lag
            };
            c.first_ms *= (c.first.update(FIRST_Q, done) / (lag as f64).sqrt()).exp();
            changed = true;
        } else if nth == 2 {
            let second = c.first_ms * (1.0 + c.spread);
            if on_time(second) {
                c.spread = (c.spread * c.second.update(SECOND_Q, done).exp()).clamp(SPREAD_MIN, SPREAD_MAX);
                changed = true;
            }
        }
        if done {
            c.samples += 1;
        }
        if !changed && !done {
            return;
        }
        self.learned.lock().expect("schedule lock").insert(class.to_string(), c);
        if done {
            // Saved with the first completions, then at most once a second per class (and at the
            // end of the run, see `flush`): a crash forgets a second of learning at most, and a
            // fast run does not pay a database write per video for it.
            let now = std::time::Instant::now();
            let save = {
                let mut saved = self.saved.lock().expect("schedule lock");
                let due = c.samples <= 10 || saved.get(class).is_none_or(|t| now.duration_since(*t) >= SAVE_EVERY);
                if due {
                    saved.insert(class.to_string(), now);
                } else {
                    self.unsaved.lock().expect("schedule lock").insert(class.to_string());
                }
                due
            };
            if save {
                self.unsaved.lock().expect("schedule lock").remove(class);
                self.save(class, c).await;
            }
        }
    }

    async fn save(&self, class: &str, c: Class) {
        if let Err(e) = self.store.save_timing(class, c.samples, c.first_ms, c.spread).await {
            tracing::warn!(error = %e, "could not save learned poll timing");
        }
    }

    /// Saves what was learnt and not saved yet (at the end of a run).
    pub async fn flush(&self) {
        let classes: Vec<String> = self.unsaved.lock().expect("schedule lock").drain().collect();
        for class in classes {
            let c = self.learned.lock().expect("schedule lock").get(&class).copied();
            if let Some(c) = c {
                self.save(&class, c).await;
            }
        }
    }

    /// Full-jitter exponential backoff after `errors` consecutive failures.
    pub fn backoff(&self, errors: i64) -> Duration {
        let exp = self.timing.base_backoff.as_millis() as f64 * 2f64.powi(errors.clamp(0, 20) as i32);
        let cap = exp.min(self.timing.max_backoff.as_millis() as f64).max(1.0);
        Duration::from_millis(rand::thread_rng().gen_range(0.0..=cap) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    async fn schedule(prior_ms: u64) -> (tempfile::TempDir, Schedule) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db")).await.unwrap();
        let timing = Timing {
            initial_estimate: Duration::from_millis(prior_ms),
            min_poll_gap: Duration::from_millis(10),
            ..Timing::default()
        };
        (dir, Schedule::new(store, timing))
    }

    /// Runs jobs of the given durations through the schedule, one at a time; returns
    /// (polls per job, mean delay between completion and the poll that saw it).
    async fn simulate(s: &Schedule, durations: &[f64]) -> (f64, f64) {
        let (mut polls, mut delay) = (0.0, 0.0);
        for &d in durations {
            let mut t = s.first_poll_at("c", 0).await;
            let mut nth = 1;
            loop {
                polls += 1.0;
                let done = t as f64 >= d;
                s.observe("c", nth, done, t).await;
                if done {
                    delay += t as f64 - d;
                    break;
                }
                t = s.next_poll_at("c", 0, nth, t).await;
                nth += 1;
            }
        }
        (polls / durations.len() as f64, delay / durations.len() as f64)
    }

    #[tokio::test]
    async fn learns_a_wrong_prior_quickly_and_meets_the_targets() {
        // Prior 54 s; real jobs 20 s ± 10 %.
        let (_d, s) = schedule(54_000).await;
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut jobs = |n| (0..n).map(|_| 20_000.0 * rng.gen_range(0.9..1.1)).collect::<Vec<f64>>();
        let (warm_polls, _) = simulate(&s, &jobs(40)).await;
        assert!(warm_polls < 2.0, "even while learning: {warm_polls}");
        let (polls, delay) = simulate(&s, &jobs(400)).await;
        eprintln!("after learning: {polls:.3} polls per job, mean delay {delay:.0} ms");
        assert!(polls <= 1.5, "polls per job {polls}");
        assert!(delay <= 2_000.0, "mean delay {delay} ms (10 % of 20 s is 2000)");
    }

    #[tokio::test]
    async fn a_few_pending_answers_before_any_completion_do_not_run_away() {
        let (_d, s) = schedule(10_000).await;
        for _ in 0..3 {
            let t = s.first_poll_at("c", 0).await;
            s.observe("c", 1, false, t).await;
        }
        let after = s.first_poll_at("c", 0).await;
        assert!(after < 20_000, "three pending answers moved θ to {after}");
        for _ in 0..20 {
            let t = s.first_poll_at("c", 0).await;
            s.observe("c", 1, true, t).await;
        }
        assert!(s.first_poll_at("c", 0).await < 10_000, "and it comes back down");
    }

    #[tokio::test]
    async fn answers_to_many_polls_planned_at_once_move_the_estimate_gently() {
        // A busy run: 20 first polls planned before any answer, then the first answers say
        // "pending" (the prior is the median, so half of them will).
        let (_d, s) = schedule(54_000).await;
        for _ in 0..20 {
            s.first_poll_at("c", 0).await;
        }
        for _ in 0..5 {
            s.observe("c", 1, false, 54_000).await;
        }
        let after = s.first_poll_at("c", 0).await;
        // One answer at a time would have moved it 9 % each (+54 %); 20 awaited, ≈ 2 % each.
        assert!(after < 62_000, "{after}");
        assert!(after > 54_000, "it still learns: {after}");
    }

    #[tokio::test]
    async fn late_or_early_polls_teach_nothing() {
        let (_d, s) = schedule(10_000).await;
        s.observe("c", 1, true, 30_000).await; // a poll delayed by the budget
        s.observe("c", 1, false, 100).await; // a restart's immediate re-poll
        assert_eq!(s.first_poll_at("c", 0).await, 10_000);
    }

    #[tokio::test]
    async fn learned_timing_survives_a_restart() {
        let (dir, s) = schedule(54_000).await;
        for _ in 0..30 {
            let t = s.first_poll_at("c", 0).await;
            s.observe("c", 1, true, t).await;
        }
        let learned = s.first_poll_at("c", 0).await;
        assert!(learned < 40_000, "{learned}");
        // Saved as it learns (the first completions at once, then once a second) …
        let store = Store::open(&dir.path().join("s.db")).await.unwrap();
        let saved = store.learned_timing("c").await.unwrap().expect("saved during the run");
        assert!(saved.0 >= 10, "{saved:?}");
        // … and all of it when the run ends.
        s.flush().await;
        let again = Schedule::new(store, Timing::default());
        assert_eq!(again.first_poll_at("c", 0).await, learned);
    }

    #[tokio::test]
    async fn backoff_is_capped_full_jitter() {
        let (_d, s) = schedule(1000).await;
        for errors in 0..30 {
            assert!(s.backoff(errors) <= Duration::from_secs(60));
        }
        let samples: Vec<Duration> = (0..200).map(|_| s.backoff(3)).collect();
        assert!(
            samples.iter().any(|d| *d < Duration::from_secs(2)),
            "full jitter reaches low values"
        );
    }
}
