//! Shared state of the fake: the live configuration, jobs and their timelines, stored assets,
//! counters, credits, the per-key sliding rate-limit windows and the fault queue. One
//! `std::sync::Mutex`, never held across an `.await`. Jobs are never removed: the v2 record
//! "expires" by age only, so history by id keeps finding them.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;

use super::dates::epoch_ms;
use super::upload::Asset;
use super::{FakeConfig, FakeStats, Fault, FaultKind, FaultTarget, JobTimeline, SubmitRecord};

/// Reported as remaining credits when credits are unlimited.
pub(super) const UNLIMITED_CREDITS: u64 = 1_000_000;

/// Frames of the model's default video; `run_by_frames` scales `run` relative to it.
const BASE_FRAMES: f64 = 81.0;

pub(super) struct Shared {
    pub started: Instant,
    pub started_sys: SystemTime,
    pub api_url: String,
    pub cdn_url: String,
    inner: Mutex<Inner>,
}

pub(super) struct Inner {
    /// The live configuration (setters change it at run time).
    pub cfg: FakeConfig,
    pub jobs: HashMap<String, Job>,
    /// Uploaded assets by file name (`{uuid}.{ext}`).
    pub assets: HashMap<String, Asset>,
    pub stats: FakeStats,
    pub faults: VecDeque<Fault>,
    pub credits: Option<u64>,
    /// Arrival instants of admitted API requests per key index, oldest first.
    windows: HashMap<usize, VecDeque<Instant>>,
    /// Jobs created so far (a job's `seq` is its 1-based rank).
    seq: u64,
}

pub(super) struct Job {
    /// The account (key index) that created it.
    pub key: usize,
    /// 1-based creation rank over all keys.
    pub seq: u64,
    pub model: String,
    /// The body as sent.
    pub body: Value,
    /// `cost_per_video` when it was created.
    pub cost: f64,
    pub submitted: Instant,
    /// Added to the real age (planted requests dated in the past).
    pub backdate: Duration,
    pub queue: Duration,
    pub run: Duration,
    /// Set when the job will end FAILED.
    pub error: Option<String>,
    /// When a v2 answer first told a client the job had ended (COMPLETED or FAILED).
    pub seen_done: Option<Instant>,
}

/// What creates a job: an HTTP submit or a planted request.
pub(super) struct NewJob {
    pub key: usize,
    pub model: String,
    pub body: Value,
    pub error: Option<String>,
    pub now: Instant,
    pub backdate: Duration,
    pub planted: bool,
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

impl Job {
    /// Age of the job at `now`.
    pub fn age(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.submitted) + self.backdate
    }

    /// Where the job stands at `now`, regardless of record expiry (never NotFound).
    pub fn phase_at(&self, now: Instant) -> Phase {
        let age = self.age(now);
        if age < self.queue {
            Phase::Queued
        } else if age < self.queue + self.run {
            Phase::Processing
        } else {
            match &self.error {
                Some(e) => Phase::Failed(e.clone()),
                None => Phase::Completed,
            }
        }
    }
}

impl Shared {
    pub fn new(cfg: FakeConfig, api_url: String, cdn_url: String) -> Self {
        let inner = Inner {
            credits: cfg.credits,
            cfg,
            jobs: HashMap::new(),
            assets: HashMap::new(),
            stats: FakeStats::default(),
            faults: VecDeque::new(),
            windows: HashMap::new(),
            seq: 0,
        };
        Shared {
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

    /// Wall-clock creation time of a job, in ms since the Unix epoch.
    pub fn created_ms(&self, job: &Job) -> i64 {
        epoch_ms(self.system_time(job.submitted)) - job.backdate.as_millis() as i64
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

    /// Admits one request of key `key` into its sliding window, or answers the instant at
    /// which the oldest admitted request leaves it (and counts the 429).
    pub fn rate_admit(&self, key: usize, now: Instant) -> Result<(), Instant> {
        let mut g = self.lock();
        let window = g.cfg.rate_window;
        let limit = g.cfg.limit_of(key);
        let g = &mut *g;
        let queue = g.windows.entry(key).or_default();
        while queue
            .front()
            .is_some_and(|&front| now.saturating_duration_since(front) >= window)
        {
            queue.pop_front();
        }
        if let Some(limit) = limit {
            if queue.len() >= limit as usize {
                g.stats.rate_limited += 1;
                return Err(queue.front().map_or(now, |&f| f) + window);
            }
        }
        queue.push_back(now);
        Ok(())
    }

    /// Creates a job and bills it (credits must have been checked by the caller under the
    /// same lock).
    pub fn create_job(&self, g: &mut Inner, new: NewJob) -> String {
        let id = uuid::Uuid::new_v4().to_string();
        let factor = jitter_factor(&id, g.cfg.jitter);
        let mut run = g.cfg.run;
        if g.cfg.run_by_frames {
            if let Some(frames) = new.body.get("num_frames").and_then(Value::as_u64) {
                run = run.mul_f64(frames as f64 / BASE_FRAMES);
            }
        }
        g.seq += 1;
        let job = Job {
            key: new.key,
            seq: g.seq,
            model: new.model,
            body: new.body.clone(),
            cost: g.cfg.cost_per_video,
            submitted: new.now,
            backdate: new.backdate,
            queue: g.cfg.queue.mul_f64(factor),
            run: run.mul_f64(factor),
            error: new.error,
            seen_done: None,
        };
        g.jobs.insert(id.clone(), job);
        if let Some(c) = g.credits.as_mut() {
            *c = c.saturating_sub(1);
        }
        g.stats.submits.push(SubmitRecord {
            request_id: id.clone(),
            body: new.body,
            at_ms: self
                .ms_since_start(new.now)
                .saturating_sub(new.backdate.as_millis() as u64),
            key_index: new.key,
            planted: new.planted,
        });
        id
    }

    /// Phase of a job as seen by the v2 API (`expire`: the record's lifetime applies, and an
    /// end reported here is recorded as seen) or by the CDN (files outlive records).
    pub fn phase(&self, id: &str, now: Instant, expire: bool) -> (Phase, Option<(u64, u64)>) {
        let mut g = self.lock();
        let lifetime = g.cfg.result_lifetime;
        let Some(job) = g.jobs.get_mut(id) else {
            return (Phase::NotFound, None);
        };
        if expire && job.age(now) >= lifetime {
            return (Phase::NotFound, None);
        }
        let times = Some((job.queue.as_millis() as u64, job.run.as_millis() as u64));
        let phase = job.phase_at(now);
        if expire && job.seen_done.is_none() && matches!(phase, Phase::Completed | Phase::Failed(_)) {
            job.seen_done = Some(now);
        }
        (phase, times)
    }

    pub fn timelines(&self) -> Vec<JobTimeline> {
        let g = self.lock();
        let ms = |job: &Job, d: Duration| {
            self.ms_since_start((job.submitted + d).checked_sub(job.backdate).unwrap_or(self.started))
        };
        let mut v: Vec<JobTimeline> = g
            .jobs
            .iter()
            .map(|(id, j)| JobTimeline {
                request_id: id.clone(),
                submitted_ms: ms(j, Duration::ZERO),
                processing_ms: ms(j, j.queue),
                done_ms: ms(j, j.queue + j.run),
                seen_done_ms: j.seen_done.map(|t| self.ms_since_start(t)),
            })
            .collect();
        v.sort_by_key(|t| t.submitted_ms);
        v
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
            count: 3,
        });
        assert_eq!(sh.take_fault(FaultTarget::Status), Some(FaultKind::Status(500)));
        assert_eq!(sh.take_fault(FaultTarget::Submit), Some(FaultKind::Status(500)));
        // AnyApi is the v2 endpoints only.
        assert_eq!(sh.take_fault(FaultTarget::History), None);
        assert_eq!(sh.take_fault(FaultTarget::Upload), None);
        assert_eq!(sh.take_fault(FaultTarget::Result), Some(FaultKind::Status(500)));
        assert_eq!(sh.take_fault(FaultTarget::Result), None);
        assert_eq!(sh.take_fault(FaultTarget::Download), Some(FaultKind::Drop));
        assert_eq!(sh.take_fault(FaultTarget::Download), None);
    }

    #[test]
    fn run_by_frames_scales_run_only() {
        let sh = Shared::new(
            FakeConfig {
                run_by_frames: true,
                queue: Duration::from_millis(100),
                run: Duration::from_millis(810),
                ..FakeConfig::default()
            },
            String::new(),
            String::new(),
        );
        let now = Instant::now();
        let mut g = sh.lock();
        let mut make = |body: Value| {
            let new = NewJob {
                key: 0,
                model: "m".into(),
                body,
                error: None,
                now,
                backdate: Duration::ZERO,
                planted: false,
            };
            let id = sh.create_job(&mut g, new);
            let j = &g.jobs[&id];
            (j.queue.as_millis(), j.run.as_millis())
        };
        assert_eq!(make(serde_json::json!({"num_frames": 81})), (100, 810));
        assert_eq!(make(serde_json::json!({"num_frames": 100})), (100, 1000));
        assert_eq!(make(serde_json::json!({"num_frames": "100"})), (100, 810));
        assert_eq!(make(serde_json::json!({})), (100, 810));
    }
}
