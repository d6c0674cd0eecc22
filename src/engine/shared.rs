//! What the dispatcher and its tasks share: the store, the API client, the gate, the learned
//! schedule and cost, the counters; and the events tasks send back to the dispatcher.

use std::sync::Arc;

use tokio::sync::mpsc;

use super::agenda::Next;
use super::{durable, reach, route, slots, EngineConfig, Gate, Schedule, Spend};
use crate::api::{AccountStop, ApiClient};
use crate::store::Store;

/// Messages from tasks to the dispatcher.
pub(super) enum Event {
    /// A task ended, handing back its job with the job's next step.
    Finished(i64, Next),
    Account(AccountStop),
    Local(String),
    /// A submit's answer was lost: back off submitting for a while.
    SubmitTrouble,
    SubmitOk,
}

pub(super) struct Shared {
    pub(super) store: Store,
    pub(super) api: ApiClient,
    pub(super) dl: reqwest::Client,
    pub(super) gate: Gate,
    pub(super) schedule: Schedule,
    pub(super) slots: slots::PollSlots,
    pub(super) syncer: durable::Syncer,
    pub(super) spend: Spend,
    /// Whether the API host answers at all.
    pub(super) reach: reach::Reach,
    /// Which endpoint polls ask.
    pub(super) route: route::Route,
    /// Segmind's request history, where one is configured.
    pub(super) history: Option<crate::api::history::HistoryClient>,
    /// Uploads of local images, where an upload endpoint is configured.
    pub(super) uploader: Option<super::upload::Uploader>,
    /// Learned API requests per finished video.
    pub(super) cost: std::sync::Mutex<f64>,
    pub(super) cfg: EngineConfig,
    pub(super) tele: Arc<crate::progress::Telemetry>,
    pub(super) events: mpsc::UnboundedSender<Event>,
}

/// Most API calls in flight at once; the rate, not this, is the real limit.
pub(super) const MAX_API_TASKS: usize = 64;

/// API requests a video costs with well-timed polls (one submit, about 1.3 polls): the prior of
/// the learned cost per video that paces submits.
pub(super) const SUBMIT_COST: f64 = 2.3;

impl Shared {
    /// How many jobs may be at Segmind at once. The automatic cap is Little's law: the budget
    /// sustains `rate / SUBMIT_COST` videos per window, each staying about the expected
    /// duration, plus 25 % headroom for the spread.
    pub(super) fn concurrency_cap(&self, params: &str) -> i64 {
        if let Some(c) = self.cfg.concurrency {
            return c as i64;
        }
        // A job stays at least the minimum poll gap, however fast it is.
        let expected = self
            .schedule
            .expected_ms(&class_of(params))
            .max(self.cfg.timing.min_poll_gap.as_millis() as f64);
        let videos_per_ms = f64::from(self.cfg.rpm) / self.cfg.rate_window.as_millis().max(1) as f64 / SUBMIT_COST;
        (videos_per_ms * expected * 1.25).ceil().max(1.0) as i64
    }

    /// Reserves a poll slot near `ideal` (see `slots`): up to 3 % of the wait early.
    pub(super) fn poll_slot(&self, ideal: i64, now: i64) -> i64 {
        let slot_ms = self.cfg.rate_window.as_millis() as f64 / self.gate.pace().max(0.01);
        let earliest = now + self.cfg.timing.min_poll_gap.as_millis() as i64;
        let early = ((ideal - now) as f64 * 0.01) as i64;
        self.slots.reserve(ideal, earliest, early, slot_ms)
    }

    /// Time between two submits: the window over the submits' share of the current pace.
    pub(super) fn submit_interval_ms(&self) -> f64 {
        let pace = self.gate.pace().max(0.01);
        // No headroom needed: polls own their slots (see `slots`), so a full budget does not
        // make them queue; submits take the slots left.
        self.cfg.rate_window.as_millis() as f64 * self.cost_per_video() / pace
    }

    /// Notes what an API answer said about the account.
    pub(super) fn note_meta(&self, meta: &crate::api::Meta) {
        self.spend.note(meta);
        if let Some(c) = meta.remaining_credits {
            self.tele.set_credits(c);
        }
    }

    pub(super) fn cost_per_video(&self) -> f64 {
        *self.cost.lock().expect("cost lock")
    }

    /// A job ended after `requests` API requests in all: learn the cost per video.
    pub(super) fn observe_cost(&self, requests: i64) {
        let mut c = self.cost.lock().expect("cost lock");
        *c += 0.05 * ((requests as f64).clamp(2.0, 10.0) - *c);
    }
}

impl Shared {
    /// How old a request must be before a 404 can mean its record expired: the record's
    /// lifetime less a margin for the clocks (ours starts when the submit's answer arrives,
    /// Segmind's a little earlier) — 5 % of it, at most two minutes.
    pub(super) fn expiry_age_ms(&self) -> i64 {
        let life = self.cfg.timing.result_lifetime.as_millis() as i64;
        life - (life / 20).min(120_000)
    }

    /// The interval between two permits at the current pace, in ms.
    pub(super) fn permit_ms(&self) -> f64 {
        self.cfg.rate_window.as_millis() as f64 / self.gate.pace().max(0.01)
    }
}

/// The parameter class of a job (what its duration is learnt by).
pub(super) fn class_of(params: &str) -> String {
    crate::manifest::Params::from_json(params)
        .map(|p| p.duration_class())
        .unwrap_or_default()
}
