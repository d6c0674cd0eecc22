//! `wanbatch status`: counts per state, attempts, resubmits by cause (rejected takes included),
//! possible double charges, spend, videos that differ from their request, reviewers' keep /
//! reject counts, the oldest waiting job and an ETA; `--json` for scripts.
//!
//! Reads only, through the read pool: in WAL mode it never blocks a running `run` (nor waits
//! for it). Every figure comes from SQL aggregates over small indexes (migration 0002), so it
//! answers in well under a second on a million jobs.

use serde_json::{json, Value};

use crate::clock::rfc3339;
use crate::engine::route;
use crate::exit::Outcome;
use crate::figures::Money;
use crate::settings::Layer;
use crate::settings::Resolved;
use crate::state::JobState;
use crate::store::{now_ms, FlagTally, HistoryTally, Oldest, Store, Tally, UPLOADS, UPLOADS_REPEATED};

/// Completions in this window give the rate behind the ETA.
pub const ETA_WINDOW_MS: i64 = 10 * 60_000;

/// Possible double charges listed by id in text (JSON lists up to `JSON_IDS`).
const TEXT_IDS: usize = 20;
const JSON_IDS: i64 = 1000;

#[derive(clap::Args, Debug)]
pub struct StatusArgs {
    #[command(flatten)]
    pub db: super::flags::DbFlag,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Everything `status` reports, as of `now`.
#[derive(Debug, Clone)]
pub struct Report {
    pub now: i64,
    pub tally: Tally,
    pub oldest: Option<Oldest>,
    /// The first of the jobs that may have been billed twice (all of them are counted in `tally`).
    pub billed_twice_ids: Vec<String>,
    /// Spend, as every display counts it.
    pub money: Money,
    /// The campaign's stored settings, as (key, value shown).
    pub settings: Vec<(String, String)>,
    /// What has been seen of the result endpoint: (value, detail, seen_at).
    pub result_endpoint: Option<(String, String, i64)>,
    /// What the request history settled.
    pub history: HistoryTally,
    /// Local images uploaded, and uploads made again after a stop.
    pub uploads: i64,
    pub uploads_repeated: i64,
    /// Videos that differ from their request, and reviewers' verdicts.
    pub flags: FlagTally,
    /// Several runners (PostgreSQL): the runners of the last day.
    pub runners: Vec<crate::store::RunnerSeen>,
}

impl Report {
    pub async fn gather(store: &Store, now: i64) -> anyhow::Result<Report> {
        let mut stored = Layer::default();
        for (key, json) in store.settings().await? {
            if let Ok(v) = serde_json::from_str(&json) {
                stored.set_json(&key, &v);
            }
        }
        let settings = Layer::KEYS
            .iter()
            .filter_map(|k| stored.show(k).map(|v| (k.to_string(), v)))
            .collect();
        Ok(Report {
            now,
            tally: store.tally(now - ETA_WINDOW_MS).await?,
            oldest: store.oldest_waiting().await?,
            billed_twice_ids: store.maybe_billed_twice(JSON_IDS).await?,
            money: Money {
                cost: store.cost_summary().await?,
                price: stored.price,
            },
            settings,
            result_endpoint: store.fact(route::FACT).await?,
            history: store.history_tally().await?,
            uploads: store.counter(UPLOADS).await?,
            uploads_repeated: store.counter(UPLOADS_REPEATED).await?,
            flags: store.flag_tally().await?,
            runners: store.runners_seen().await?,
        })
    }

    /// The runners of the campaign: who works it now, and who stopped.
    fn runners_line(&self) -> String {
        let ago = |t: i64| span((self.now - t).max(0) / 1000);
        let shown: Vec<String> = self
            .runners
            .iter()
            .map(|r| match r.stopped_at {
                Some(at) => format!("{} pid {} stopped {} ago", r.host, r.pid, ago(at)),
                None => format!(
                    "{} pid {} heartbeat {} ago, {} job(s) at Segmind or downloading",
                    r.host,
                    r.pid,
                    ago(r.heartbeat_at),
                    r.jobs
                ),
            })
            .collect();
        format!("runners (last day): {}\n", shown.join("; "))
    }

    /// How `run` polls, and why.
    pub fn polling(&self) -> String {
        match &self.result_endpoint {
            Some((v, detail, at)) if v == route::ANSWERS => {
                format!("the result endpoint directly: it {detail} (seen {})", rfc3339(*at))
            }
            Some((_, detail, at)) => format!(
                "the documented flow (status until COMPLETED, then the result), for good: {detail} (seen {})",
                rfc3339(*at)
            ),
            None => "the documented flow (status until COMPLETED, then the result); the result endpoint has \
                     not yet been seen answering a pending request on this account"
                .to_string(),
        }
    }

    pub fn total(&self) -> i64 {
        self.tally.states.iter().map(|(_, n)| n).sum()
    }

    fn count(&self, state: JobState) -> i64 {
        self.tally
            .states
            .iter()
            .find(|(s, _)| *s == state)
            .map_or(0, |(_, n)| *n)
    }

    /// Jobs not yet done or failed.
    /// Jobs not yet in an end state (done, failed or cancelled).
    pub fn remaining(&self) -> i64 {
        self.total() - self.count(JobState::Done) - self.count(JobState::Failed) - self.count(JobState::Cancelled)
    }

    /// Completions per minute over the recent window, if any completed in it. The rate is taken
    /// over the time since the first of those completions (at least a minute), so a run that
    /// started five minutes ago is not diluted over ten.
    pub fn rate_per_min(&self) -> Option<f64> {
        let first = self.tally.first_completed_since?;
        let span_ms = (self.now - first).clamp(60_000, ETA_WINDOW_MS);
        Some(self.tally.completed_since as f64 * 60_000.0 / span_ms as f64)
    }

    /// Seconds until every remaining job is done at the recent rate; None when unknown.
    pub fn eta_secs(&self) -> Option<f64> {
        match (self.remaining(), self.rate_per_min()) {
            (0, _) => Some(0.0),
            (n, Some(rate)) if rate > 0.0 => Some(n as f64 / rate * 60.0),
            _ => None,
        }
    }

    pub fn to_json(&self) -> Value {
        let t = &self.tally;
        let states: serde_json::Map<String, Value> = t.states.iter().map(|(s, n)| (s.to_string(), json!(n))).collect();
        let oldest = self.oldest.as_ref().map(|o| {
            json!({
                "id": o.id,
                "state": o.state,
                "created_at": rfc3339(o.created_at),
                "age_secs": (self.now - o.created_at).max(0) / 1000,
            })
        });
        json!({
            "total": self.total(),
            "states": states,
            "attempts": t.attempts,
            "resubmits": {
                "unknown": t.resubmits_unknown,
                "expired": t.resubmits_expired,
                "failed": t.resubmits_failed,
                "rejected": self.money.cost.rejected_attempts,
            },
            "videos_mismatched": self.flags.mismatched,
            "review": {"keep": self.flags.keep, "reject": self.flags.reject},
            "maybe_billed_twice": self.billed_twice_ids,
            "maybe_billed_twice_count": t.maybe_billed_twice,
            "cost": t.cost,
            "cost_jobs": t.cost_jobs,
            "spent": self.money.spent(),
            "at_segmind_cost": self.money.at_segmind(),
            "runners": self.runners,
            "settings": self.settings.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<serde_json::Map<_, _>>(),
            "history": self.history,
            "uploads": {"made": self.uploads, "repeated_after_a_stop": self.uploads_repeated},
            "result_endpoint": self.result_endpoint.as_ref().map(|(v, detail, at)| json!({
                "value": v, "detail": detail, "seen_at": rfc3339(*at),
            })),
            "oldest_waiting": oldest,
            "eta": {
                "remaining": self.remaining(),
                "completed_last_10_min": t.completed_since,
                "rate_per_min": self.rate_per_min(),
                "seconds": self.eta_secs().map(f64::round),
            },
        })
    }

    pub fn to_text(&self, db: &std::path::Path) -> String {
        let t = &self.tally;
        if self.total() == 0 {
            return format!(
                "no jobs in {} yet: `wanbatch import FILE` or `wanbatch run FILE` loads a manifest\n",
                crate::store::shown(db)
            );
        }
        let mut out = format!("{} jobs in {}\n", self.total(), crate::store::shown(db));
        for (state, n) in &t.states {
            out += &format!("  {:<12} {n}\n", state.as_str());
        }
        out += &format!("submit attempts: {}\n", t.attempts);
        let rejected = self.money.cost.rejected_attempts;
        out += &format!(
            "resubmits: {} (lost answer {}, expired {}, after failure {}, rejected by review {rejected})\n",
            t.resubmits_unknown + t.resubmits_expired + t.resubmits_failed + rejected,
            t.resubmits_unknown,
            t.resubmits_expired,
            t.resubmits_failed
        );
        let f = &self.flags;
        if f.mismatched > 0 {
            out += &format!(
                "videos that differ from their request (kept, flagged): {} (`wanbatch export` has video_mismatch)\n",
                f.mismatched
            );
        }
        if f.keep + f.reject > 0 {
            out += &format!(
                "reviewed: {} keep, {} reject{}\n",
                f.keep,
                f.reject,
                if f.reject > 0 {
                    " (`wanbatch retry --rejected` makes them again)"
                } else {
                    ""
                }
            );
        }
        if t.maybe_billed_twice > 0 {
            let shown: Vec<&str> = self
                .billed_twice_ids
                .iter()
                .take(TEXT_IDS)
                .map(String::as_str)
                .collect();
            out += &format!(
                "may have been billed twice ({}): {}",
                t.maybe_billed_twice,
                shown.join(", ")
            );
            if t.maybe_billed_twice > shown.len() as i64 {
                out += &format!(
                    " … and {} more (`wanbatch export` has them all)",
                    t.maybe_billed_twice - shown.len() as i64
                );
            }
            out += "\n";
        }
        out += &self.money.long();
        out += "\n";
        let h = &self.history;
        if h.adopted + h.absent + h.unprovable > 0 {
            out += &format!(
                "lost submits: {} found in the request history (adopted, not bought again), {} proven never created, \
                 {} not provable (the history could not answer)\n",
                h.adopted, h.absent, h.unprovable
            );
        }
        if h.recovered > 0 {
            out += &format!("expired results recovered from the request history: {}\n", h.recovered);
        }
        if h.billed_duplicates > 0 {
            out += &format!(
                "requests billed twice for one lost submit (found in the history): {}\n",
                h.billed_duplicates
            );
        }
        if let Some(at) = h.reconciled_at {
            out += &format!(
                "reconciled with the request history ({}): {} job(s), true cost ${:.2}, {} double charge(s)\n",
                rfc3339(at),
                h.reconciled_jobs,
                h.true_cost,
                h.double_charges
            );
        }
        if self.uploads + self.uploads_repeated > 0 {
            out += &format!(
                "local images uploaded: {}; uploads possibly repeated after a stop: {}\n",
                self.uploads, self.uploads_repeated
            );
        }
        out += &format!("polling (with --poll auto): {}\n", self.polling());
        if !self.runners.is_empty() {
            out += &self.runners_line();
        }
        if !self.settings.is_empty() {
            let shown: Vec<String> = self.settings.iter().map(|(k, v)| format!("{k} {v}")).collect();
            out += &format!("settings (as `run` was last given them): {}\n", shown.join(", "));
        }
        if let Some(o) = &self.oldest {
            out += &format!(
                "oldest waiting: {} ({}, imported {} ago)\n",
                o.id,
                o.state,
                span((self.now - o.created_at).max(0) / 1000)
            );
        }
        match (self.remaining(), self.rate_per_min(), self.eta_secs()) {
            (0, _, _) => out += "ETA: nothing left to do\n",
            (n, Some(rate), Some(eta)) => {
                out += &format!(
                    "ETA: {} for {n} jobs at {rate:.1} done/min (last 10 min)\n",
                    span(eta as i64)
                )
            }
            (n, _, _) => out += &format!("ETA: unknown for {n} jobs (nothing completed in the last 10 min)\n"),
        }
        out
    }
}

/// A duration as "2h 05m", "3m 20s" or "45s".
fn span(secs: i64) -> String {
    match secs {
        s if s >= 3600 => format!("{}h {:02}m", s / 3600, s % 3600 / 60),
        s if s >= 60 => format!("{}m {:02}s", s / 60, s % 60),
        s => format!("{s}s"),
    }
}

pub async fn run(args: StatusArgs, resolved: Resolved) -> anyhow::Result<Outcome> {
    let db = resolved.db.clone();
    let store = Store::open_existing(&db).await?;
    let report = Report::gather(&store, now_ms()).await;
    store.close().await;
    let report = report?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report.to_json())?);
    } else {
        print!("{}", report.to_text(&db));
    }
    Ok(Outcome::AllDone)
}
