//! Shared state of the fake: jobs and their timelines, counters, credits, the
//! sliding rate-limit window and the fault queue. One `std::sync::Mutex`, never
//! held across an `.await`.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use super::{FakeConfig, FakeStats, Fault, FaultKind, FaultTarget, SubmitRecord};

/// Reported as remaining credits when credits are unlimited.
pub(super) const UNLIMITED_CREDITS: u64 = 1_000_000;

pub(super) struct Shared {
    pub cfg: FakeConfig,
    pub started: Instant,
    pub started_sys: SystemTime,
    pub api_url: String,
    pub cdn_url: String,
    inner: Mutex<Inner>,
}

pub(super) struct Inner {
    pub jobs: HashMap<String, Job>,
    pub stats: FakeStats,
    pub faults: VecDeque<Fault>,
    pub credits: Option<u64>,
    pub rate_limit: Option<u32>,
    pub forbidden: bool,
    /// Arrival instants of admitted API requests, oldest first.
    window: VecDeque<Instant>,
}

pub(super) struct Job {
    pub submitted: Instant,
    pub queue: Duration,
    pub run: Duration,
    /// Set when the job will end FAILED.
    pub error: Option<String>,
    /// When an API answer first told a client the job had ended (COMPLETED or FAILED).
    pub seen_done: Option<Instant>,
}

#[derive(Clone, Debug, PartialEq)]
pub(super) enum Phase {
    Queued,
    Processing,
    Completed,
    Failed(String),
    /// Unknown id, or the record's lifetime is over.
    NotFound,
}

impl Phase {
    pub fn name(&self) -> &'static str {
        match self {
            Phase::Queued => "QUEUED",
            Phase::Processing => "PROCESSING",
            Phase::Completed => "COMPLETED",
            Phase::Failed(_) => "FAILED",
            Phase::NotFound => "NOT_FOUND",
        }
    }
}

impl Shared {
    pub fn new(cfg: FakeConfig, api_url: String, cdn_url: String) -> Self {
        let inner = Inner {
            jobs: HashMap::new(),
            stats: FakeStats::default(),
            faults: VecDeque::new(),
            credits: cfg.credits,
            rate_limit: cfg.rate_limit,
            forbidden: cfg.forbidden,
            window: VecDeque::new(),
        };
        Shared {
            cfg,
            started: Instant::now(),
            started_sys: SystemTime::now(),
            api_url,
            cdn_url,
            inner: Mutex::new(inner),
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn ms_since_start(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.started).as_millis() as u64
    }

    /// Wall-clock time of a monotonic instant.
    pub fn system_time(&self, t: Instant) -> SystemTime {
        self.started_sys + t.saturating_duration_since(self.started)
    }

    pub fn push_fault(&self, fault: Fault) {
        if fault.count > 0 {
            self.lock().faults.push_back(fault);
        }
    }

    /// Takes one use of the first queued fault matching `target`.
    pub fn take_fault(&self, target: FaultTarget) -> Option<FaultKind> {
        let mut g = self.lock();
        let pos = g.faults.iter().position(|f| f.target.matches(target))?;
        let fault = &mut g.faults[pos];
        let kind = fault.kind;
        fault.count = fault.count.saturating_sub(1);
        if fault.count == 0 {
            g.faults.remove(pos);
        }
        Some(kind)
    }

    pub fn remaining_credits(&self) -> u64 {
        self.lock().credits.unwrap_or(UNLIMITED_CREDITS)
    }

    /// Admits one API request into the sliding window, or answers the instant at
    /// which the oldest admitted request leaves it (and counts the 429).
    pub fn rate_admit(&self, now: Instant) -> Result<(), Instant> {
        let window = self.cfg.rate_window;
        let mut g = self.lock();
        while let Some(&front) = g.window.front() {
            if now.saturating_duration_since(front) >= window {
                g.window.pop_front();
            } else {
                break;
            }
        }
        if let Some(limit) = g.rate_limit {
            if g.window.len() >= limit as usize {
                g.stats.rate_limited += 1;
                let reset = g.window.front().map_or(now, |&f| f) + window;
                return Err(reset);
            }
        }
        g.window.push_back(now);
        Ok(())
    }

    /// Creates a job (credits must have been checked by the caller under the same lock).
    pub fn create_job(&self, g: &mut Inner, body: serde_json::Value, error: Option<String>, now: Instant) -> String {
        let id = uuid::Uuid::new_v4().to_string();
        let factor = jitter_factor(&id, self.cfg.jitter);
        let job = Job {
            submitted: now,
            queue: self.cfg.queue.mul_f64(factor),
            run: self.cfg.run.mul_f64(factor),
            error,
            seen_done: None,
        };
        g.jobs.insert(id.clone(), job);
        if let Some(c) = g.credits.as_mut() {
            *c = c.saturating_sub(1);
        }
        g.stats.submits.push(SubmitRecord {
            request_id: id.clone(),
            body,
            at_ms: self.ms_since_start(now),
        });
        id
    }

    /// Phase of a job as seen by the API (`expire`) or the CDN (files outlive records).
    pub fn phase(&self, id: &str, now: Instant, expire: bool) -> (Phase, Option<(u64, u64)>) {
        let mut g = self.lock();
        let Some(job) = g.jobs.get_mut(id) else {
            return (Phase::NotFound, None);
        };
        let elapsed = now.saturating_duration_since(job.submitted);
        let times = Some((job.queue.as_millis() as u64, job.run.as_millis() as u64));
        if expire && elapsed >= self.cfg.result_lifetime {
            return (Phase::NotFound, None);
        }
        let phase = if elapsed < job.queue {
            Phase::Queued
        } else if elapsed < job.queue + job.run {
            Phase::Processing
        } else {
            if expire && job.seen_done.is_none() {
                job.seen_done = Some(now);
            }
            match &job.error {
                Some(e) => Phase::Failed(e.clone()),
                None => Phase::Completed,
            }
        };
        (phase, times)
    }
}

/// 64-bit FNV-1a hash of a string (seeds per-id randomness without extra crates).
pub(super) fn fnv1a(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// splitmix64 step.
pub(super) fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Per-job duration factor in [1-jitter, 1+jitter], derived from the request id.
pub(super) fn jitter_factor(id: &str, jitter: f64) -> f64 {
    let jitter = jitter.clamp(0.0, 1.0);
    if jitter == 0.0 {
        return 1.0;
    }
    let mut s = fnv1a(id);
    let u = (splitmix64(&mut s) >> 11) as f64 / (1u64 << 53) as f64;
    1.0 + jitter * (2.0 * u - 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_in_range_and_is_deterministic() {
        for i in 0..200 {
            let id = format!("id-{i}");
            let f = jitter_factor(&id, 0.3);
            assert!((0.7..=1.3).contains(&f), "{f}");
            assert_eq!(f, jitter_factor(&id, 0.3));
        }
        assert_eq!(jitter_factor("x", 0.0), 1.0);
    }

    #[test]
    fn faults_are_consumed_in_order_of_matching() {
        let sh = Shared::new(FakeConfig::default(), String::new(), String::new());
        sh.push_fault(Fault {
            target: FaultTarget::Download,
            kind: FaultKind::Drop,
            count: 1,
        });
        sh.push_fault(Fault {
            target: FaultTarget::AnyApi,
            kind: FaultKind::Status(500),
            count: 2,
        });
        assert_eq!(sh.take_fault(FaultTarget::Status), Some(FaultKind::Status(500)));
        assert_eq!(sh.take_fault(FaultTarget::Submit), Some(FaultKind::Status(500)));
        assert_eq!(sh.take_fault(FaultTarget::Result), None);
        assert_eq!(sh.take_fault(FaultTarget::Download), Some(FaultKind::Drop));
        assert_eq!(sh.take_fault(FaultTarget::Download), None);
    }
}

/// One job's timeline, in ms since the server started.
#[derive(Clone, Debug, serde::Serialize)]
pub struct JobTimeline {
    pub request_id: String,
    pub submitted_ms: u64,
    /// When the job ended (COMPLETED or FAILED) at the fake.
    pub done_ms: u64,
    /// When an API answer first reported the end to a client, if one has.
    pub seen_done_ms: Option<u64>,
}

impl Shared {
    pub fn timelines(&self) -> Vec<JobTimeline> {
        let g = self.lock();
        let mut v: Vec<JobTimeline> = g
            .jobs
            .iter()
            .map(|(id, j)| JobTimeline {
                request_id: id.clone(),
                submitted_ms: self.ms_since_start(j.submitted),
                done_ms: self.ms_since_start(j.submitted + j.queue + j.run),
                seen_done_ms: j.seen_done.map(|t| self.ms_since_start(t)),
            })
            .collect();
        v.sort_by_key(|t| t.submitted_ms);
        v
    }
}
