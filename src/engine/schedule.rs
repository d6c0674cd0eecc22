//! When to poll: expected durations learned from what we observe, per parameter class, kept in
//! the database across runs; and backoff for transient trouble.
//!
//! A job completes somewhere between the last poll that saw it pending and the poll that saw it
//! done; the midpoint is the observation. When the very first poll already finds it done we only
//! know an upper bound, so we learn 90 % of it: the estimate drifts down until a poll lands
//! before completion, which keeps the first poll close to the real completion time.

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

/// Weight of a new observation in the running mean.
const ALPHA: f64 = 0.2;

pub struct Schedule {
    timing: Timing,
    store: Store,
    learned: Mutex<HashMap<String, (i64, f64)>>,
}

impl Schedule {
    pub fn new(store: Store, timing: Timing) -> Schedule {
        Schedule {
            timing,
            store,
            learned: Mutex::new(HashMap::new()),
        }
    }

    pub fn timing(&self) -> &Timing {
        &self.timing
    }

    /// Expected submit-to-completion time for a class, in ms.
    pub async fn expected_ms(&self, class: &str) -> f64 {
        if let Some((_, mean)) = self.learned.lock().expect("schedule lock").get(class) {
            return *mean;
        }
        let loaded = self.store.learned_duration(class).await.ok().flatten();
        let mut map = self.learned.lock().expect("schedule lock");
        let entry = map
            .entry(class.to_string())
            .or_insert_with(|| loaded.unwrap_or((0, self.timing.initial_estimate.as_millis() as f64)));
        entry.1
    }

    /// The first poll after a submit accepted at `submitted_at`.
    pub async fn first_poll_at(&self, class: &str, submitted_at: i64) -> i64 {
        submitted_at + self.expected_ms(class).await.round() as i64
    }

    /// The next poll of a job still pending at `now`.
    pub async fn next_poll_at(&self, class: &str, now: i64) -> i64 {
        let gap = (self.expected_ms(class).await * 0.05).max(self.timing.min_poll_gap.as_millis() as f64);
        now + gap.round() as i64
    }

    /// Records a completion seen at `now` and saves the new mean.
    pub async fn observe(&self, class: &str, submitted_at: i64, last_pending_at: Option<i64>, now: i64) {
        let observed = match last_pending_at {
            Some(p) if p >= submitted_at => ((p + now) / 2 - submitted_at) as f64,
            _ => (now - submitted_at) as f64 * 0.9,
        }
        .max(1.0);
        let _ = self.expected_ms(class).await;
        let (samples, mean) = {
            let mut map = self.learned.lock().expect("schedule lock");
            let e = map.get_mut(class).expect("loaded above");
            e.1 = if e.0 == 0 {
                observed
            } else {
                e.1 + ALPHA * (observed - e.1)
            };
            e.0 += 1;
            *e
        };
        if let Err(e) = self.store.save_duration(class, samples, mean).await {
            tracing::warn!(error = %e, "could not save a learned duration");
        }
    }

    /// Full-jitter exponential backoff after `errors` consecutive failures.
    pub fn backoff(&self, errors: i64) -> Duration {
        let exp = self.timing.base_backoff.as_millis() as f64 * 2f64.powi(errors.clamp(0, 20) as i32);
        let cap = exp.min(self.timing.max_backoff.as_millis() as f64).max(1.0);
        Duration::from_millis(rand::thread_rng().gen_range(0.0..=cap) as u64)
    }
}
