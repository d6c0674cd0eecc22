//! The engine: works every unfinished job in the database until each is terminal, or until the
//! run must stop (account problem, local problem, Ctrl-C).
//!
//! One dispatcher loop decides what runs next, so the rate budget goes where it matters most:
//! 1. downloads of finished videos (not API requests: they take no permit);
//! 2. polls of jobs at Segmind that are due, oldest submit first (their record expires an hour
//!    after submission);
//! 3. new submits, while fewer than `concurrency` jobs are at Segmind, and paced at the share of
//!    the budget a video needs (`SUBMIT_COST` requests: the submit and its polls). Pacing spreads
//!    submits evenly, so their polls come due evenly; submitting in bursts would make whole
//!    batches complete together, queue their polls behind each other (late = slow to see) and
//!    then leave the budget idle while the next batch runs.
//!
//! For an API action the dispatcher first takes a permit from the shared `Gate`, then picks the
//! most urgent action *at that moment* and spawns it as a task. Tasks record their result in the
//! store (every fact committed before the next step acts on it) and report back on a channel.
//! On cancel the loop stops taking work, gives in-flight calls `grace` to record their answers,
//! then abandons the rest — safe, because the database already holds every fact needed to resume.

mod agenda;
pub mod download;
pub mod durable;
pub mod gate;
mod reach;
pub mod schedule;
pub mod slots;
pub mod spend;
mod tasks;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::api::{AccountStop, ApiClient};
use crate::state::JobState;
use crate::store::{now_ms, Store};
use agenda::{Agenda, Next};
pub use gate::Gate;
pub use schedule::{Schedule, Timing};
pub use spend::{Budget, Spend};

/// What to do with a submit whose answer was lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum UnknownPolicy {
    /// Submit again (counted; the job is flagged as possibly billed twice).
    Resubmit,
    /// Keep the job aside until `wanbatch retry --unknown`.
    Hold,
}

#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// API requests per `rate_window` (per minute in normal use).
    pub rpm: u32,
    pub rate_window: Duration,
    pub budget: Budget,
    /// Jobs at Segmind at once; `None` = derived from the rate and the learned duration.
    pub concurrency: Option<usize>,
    pub download_concurrency: usize,
    pub out_dir: PathBuf,
    pub timing: Timing,
    pub on_unknown: UnknownPolicy,
    /// How long in-flight calls may finish after Ctrl-C.
    pub grace: Duration,
    pub max_video_bytes: u64,
    /// Poll the status endpoint instead of the result endpoint.
    pub poll_status_endpoint: bool,
    /// The run stops when the API host has given no answer at all for this long.
    pub unreachable_after: Duration,
    /// Counters for the progress display.
    pub telemetry: Arc<crate::progress::Telemetry>,
}

pub use crate::exit::Stop;

/// Messages from tasks to the dispatcher.
enum Event {
    /// A task ended, handing back its job with the job's next step.
    Finished(i64, Next),
    Account(AccountStop),
    Local(String),
    /// A submit's answer was lost: back off submitting for a while.
    SubmitTrouble,
    SubmitOk,
}

struct Shared {
    store: Store,
    api: ApiClient,
    dl: reqwest::Client,
    gate: Gate,
    schedule: Schedule,
    slots: slots::PollSlots,
    syncer: durable::Syncer,
    spend: Spend,
    /// Whether the API host answers at all.
    reach: reach::Reach,
    /// Learned API requests per finished video.
    cost: std::sync::Mutex<f64>,
    cfg: EngineConfig,
    tele: Arc<crate::progress::Telemetry>,
    events: mpsc::UnboundedSender<Event>,
}

/// Most API calls in flight at once; the rate, not this, is the real limit.
const MAX_API_TASKS: usize = 64;

/// API requests a video costs with well-timed polls (one submit, about 1.3 polls): the prior of
/// the learned cost per video that paces submits.
const SUBMIT_COST: f64 = 2.3;

impl Shared {
    /// How many jobs may be at Segmind at once. The automatic cap is Little's law: the budget
    /// sustains `rate / SUBMIT_COST` videos per window, each staying about the expected
    /// duration, plus 25 % headroom for the spread.
    async fn concurrency_cap(&self, params: &str) -> i64 {
        if let Some(c) = self.cfg.concurrency {
            return c as i64;
        }
        let class = crate::manifest::Params::from_json(params)
            .map(|p| p.duration_class())
            .unwrap_or_default();
        // A job stays at least the minimum poll gap, however fast it is.
        let expected = self
            .schedule
            .expected_ms(&class)
            .await
            .max(self.cfg.timing.min_poll_gap.as_millis() as f64);
        let videos_per_ms = f64::from(self.cfg.rpm) / self.cfg.rate_window.as_millis().max(1) as f64 / SUBMIT_COST;
        (videos_per_ms * expected * 1.25).ceil().max(1.0) as i64
    }

    /// Reserves a poll slot near `ideal` (see `slots`): up to 3 % of the wait early.
    fn poll_slot(&self, ideal: i64, now: i64) -> i64 {
        let slot_ms = self.cfg.rate_window.as_millis() as f64 / self.gate.pace().max(0.01);
        let earliest = now + self.cfg.timing.min_poll_gap.as_millis() as i64;
        let early = ((ideal - now) as f64 * 0.03) as i64;
        self.slots.reserve(ideal, earliest, early, slot_ms)
    }

    /// Time between two submits: the window over the submits' share of the current pace.
    fn submit_interval_ms(&self) -> f64 {
        let pace = self.gate.pace().max(0.01);
        // No headroom needed: polls own their slots (see `slots`), so a full budget does not
        // make them queue; submits take the slots left.
        self.cfg.rate_window.as_millis() as f64 * self.cost_per_video() / pace
    }

    /// Notes what an API answer said about the account.
    fn note_meta(&self, meta: &crate::api::Meta) {
        self.spend.note(meta);
        if let Some(c) = meta.remaining_credits {
            self.tele.set_credits(c);
        }
    }

    fn cost_per_video(&self) -> f64 {
        *self.cost.lock().expect("cost lock")
    }

    /// A job ended after `requests` API requests in all: learn the cost per video.
    fn observe_cost(&self, requests: i64) {
        let mut c = self.cost.lock().expect("cost lock");
        *c += 0.05 * ((requests as f64).clamp(2.0, 10.0) - *c);
    }
}

pub async fn run(store: Store, api: ApiClient, cfg: EngineConfig, cancel: CancellationToken) -> anyhow::Result<Stop> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared {
        dl: download::client(5)?,
        gate: Gate::new(cfg.rpm, cfg.rate_window, cfg.rate_window / 12),
        spend: Spend::new(cfg.budget.clone()),
        reach: reach::Reach::default(),
        cost: std::sync::Mutex::new(SUBMIT_COST),
        schedule: Schedule::new(store.clone(), cfg.timing.clone()),
        slots: slots::PollSlots::default(),
        syncer: durable::Syncer::default(),
        tele: cfg.telemetry.clone(),
        store,
        api,
        cfg,
        events: tx,
    });
    let store = &shared.store;
    let mut api_tasks: JoinSet<()> = JoinSet::new();
    let mut dl_tasks: JoinSet<()> = JoinSet::new();
    let mut ctl = Control {
        submitting: true,
        ..Control::default()
    };
    let budgeted = shared.cfg.budget.max_cost.is_some() || shared.cfg.budget.min_credits.is_some();
    // The first submit goes at once, the next ones at the pace: no catch-up burst at the start
    // (it would complete as a batch, and its polls would crowd out the submits a minute later).
    // In fractional milliseconds: without a rate limit the interval is well under one.
    let mut next_submit_at = now_ms() as f64;
    // When the agenda may next be rebuilt from the database (see the end of the loop).
    let mut next_reload = 0i64;

    // A database error ends the loop like any local problem: in-flight calls still drain.
    let worked: anyhow::Result<()> = async {
        ctl.agenda.load(store).await?;
        loop {
            while let Ok(ev) = rx.try_recv() {
                ctl.absorb(ev, &shared);
            }
            while api_tasks.try_join_next().is_some() {}
            while dl_tasks.try_join_next().is_some() {}
            if let Some((silent, last)) = shared.reach.silent_for(shared.cfg.unreachable_after) {
                let msg = reach::message(shared.api.base_url(), silent, &last);
                ctl.stop = ctl.stop.take().or(Some(Stop::Local(msg)));
            }
            if cancel.is_cancelled() {
                ctl.stop = ctl.stop.take().or(Some(Stop::Interrupted));
            }
            if ctl.stop.is_some() {
                break;
            }
            let now = now_ms();

            // 1. Downloads: no permit needed.
            let dl_free = shared.cfg.download_concurrency.saturating_sub(dl_tasks.len());
            for w in ctl.agenda.take_downloads(now, dl_free) {
                ctl.busy.insert(w.seq, Task::Download);
                dl_tasks.spawn(tasks::download(shared.clone(), w));
            }

            // Budgets stop submitting (not collecting what is paid for).
            if ctl.submitting && budgeted {
                if let Some(reason) = shared.spend.stop_reason(store).await? {
                    ctl.submitting = false;
                    ctl.budget_stop = Some(reason);
                }
            }

            // 2 and 3. API work, if any is due.
            let may_submit = ctl.may_submit(now, next_submit_at);
            let room = MAX_API_TASKS.saturating_sub(api_tasks.len());
            if room > 0 {
                let (mut polls, mut submits) = plan(&shared, &mut ctl, now, room, may_submit, next_submit_at).await?;
                if polls || !submits.is_empty() {
                    if !shared.gate.try_acquire() {
                        tokio::select! {
                            _ = shared.gate.acquire() => {}
                            _ = cancel.cancelled() => continue,
                        }
                        // Reports that arrived while we waited (a 401, a 406…) are heard before
                        // anything is sent: a stop costs at most one unused permit, never an extra
                        // call. Ordinary reports (a task finished) must not cost the permit: the
                        // budget is the throughput.
                        let mut heard_stop = false;
                        while let Ok(ev) = rx.try_recv() {
                            heard_stop |= ctl.absorb(ev, &shared);
                        }
                        if heard_stop || cancel.is_cancelled() {
                            continue;
                        }
                        // The wait may have been long: decide again, with the permit in hand.
                        let now = now_ms();
                        let may_submit = ctl.may_submit(now, next_submit_at);
                        (polls, submits) = plan(&shared, &mut ctl, now, room, may_submit, next_submit_at).await?;
                    }
                    // The first action uses the permit in hand; more go out only on permits that
                    // are free this instant (when the budget is wide, not at 50 rpm).
                    let mut in_hand = true;
                    let mut permit = || std::mem::replace(&mut in_hand, false) || shared.gate.try_acquire();
                    let now = now_ms();
                    if polls {
                        for _ in 0..room {
                            if !ctl.agenda.has_due_polls(now) || !permit() {
                                break;
                            }
                            let Some(w) = ctl.agenda.take_polls(now, 1).pop() else {
                                break;
                            };
                            ctl.busy.insert(w.seq, Task::Api);
                            api_tasks.spawn(tasks::poll(shared.clone(), w));
                        }
                    } else {
                        let mut chosen = Vec::with_capacity(submits.len());
                        for w in submits {
                            if !permit() {
                                break;
                            }
                            ctl.agenda.take_submit(w.seq);
                            chosen.push(w);
                        }
                        // With a spend limit the intents are committed here, before any task is
                        // spawned (claimed together, they share one commit), so the spend check of
                        // the very next iteration already counts them. Without one, each task
                        // claims its job itself (still before its POST): the loop does not wait
                        // for a commit, and goes on sending polls and downloads meanwhile.
                        let claims: Vec<Option<anyhow::Result<Option<i64>>>> = if budgeted {
                            futures_util::future::join_all(chosen.iter().map(|w| store.claim_submit(w.seq)))
                                .await
                                .into_iter()
                                .map(Some)
                                .collect()
                        } else {
                            chosen.iter().map(|_| None).collect()
                        };
                        let now = now_ms();
                        // A claim that failed ends the run, but only after the claims that were
                        // committed have their tasks: a claimed job left without one would look
                        // possibly billed to the next run.
                        let mut claim_error = None;
                        for (w, claim) in chosen.into_iter().zip(claims) {
                            let claimed = match claim {
                                Some(Ok(Some(attempt))) => Some(attempt),
                                // No longer waiting (cancelled beside the run).
                                Some(Ok(None)) => continue,
                                Some(Err(e)) => {
                                    claim_error.get_or_insert(e);
                                    continue;
                                }
                                None => None,
                            };
                            ctl.busy.insert(w.seq, Task::Api);
                            ctl.agenda.in_flight += 1;
                            // Evenly spaced, no burst: a burst at the start completes as a batch,
                            // and batches repeat (measured: 18 % delay instead of 9 %). Slots missed
                            // because polls took the permits may be caught up, three at most:
                            // enough to keep the budget full, too few to make a wave.
                            let interval = shared.submit_interval_ms();
                            next_submit_at = next_submit_at.max(now as f64 - 3.0 * interval) + interval;
                            api_tasks.spawn(tasks::submit(shared.clone(), w, claimed));
                        }
                        if let Some(e) = claim_error {
                            return Err(e);
                        }
                    }
                    continue;
                }
            }

            // Nothing due now. Finished? When the agenda ran dry with no task running, the
            // database decides: it is the truth, and jobs may have changed behind the engine's
            // back (`retry` beside the run); the agenda is rebuilt from it, at most once a second.
            let idle = ctl.busy.is_empty() && api_tasks.is_empty() && dl_tasks.is_empty();
            if idle && ctl.agenda.is_empty(ctl.submitting) {
                if open_work(store, ctl.submitting).await? == 0 {
                    break;
                }
                if now >= next_reload {
                    next_reload = now + 1000;
                    ctl.agenda.load(store).await?;
                    continue;
                }
            }
            // Sleep until the next due time, a task's report, or cancel.
            // Work that is due but blocked (its task is still running, the API task cap, the
            // in-flight cap) is woken by a task's report, so it only gets a slow re-check here.
            let next_due = ctl.agenda.next_due().unwrap_or(now + 1000);
            let mut wake = if next_due <= now {
                now + 50
            } else {
                next_due.min(now + 1000)
            };
            if ctl.submitting {
                if let Some((w, due)) = ctl.agenda.first_waiting() {
                    if ctl.agenda.in_flight < shared.concurrency_cap(&w.params).await {
                        let submit_at = ctl.submit_hold_until.max(next_submit_at.ceil() as i64).max(due);
                        wake = wake.min(submit_at.max(now + 1));
                    }
                }
            }
            let sleep = Duration::from_millis((wake - now).max(1) as u64);
            // The display shows the limiter's own count (read here, where the loop rests).
            shared.tele.set_window_sent(shared.gate.stats().sent_last_window as u64);
            // A task ends just after its report: when the last one ends, the loop must look again
            // at once (the run may be over), not at the next re-check a second later.
            tokio::select! {
                Some(ev) = rx.recv() => {
                    ctl.absorb(ev, &shared);
                }
                Some(_) = api_tasks.join_next(), if !api_tasks.is_empty() => {}
                Some(_) = dl_tasks.join_next(), if !dl_tasks.is_empty() => {}
                _ = tokio::time::sleep(sleep) => {}
                _ = cancel.cancelled() => {}
            }
        }
        Ok(())
    }
    .await;
    if let Err(e) = worked {
        ctl.stop = ctl.stop.take().or(Some(Stop::Local(format!("database: {e:#}"))));
    }

    // Drain: let in-flight calls record their answers, within the grace period.
    let grace = if matches!(ctl.stop, Some(Stop::Interrupted)) {
        shared.cfg.grace
    } else {
        Duration::from_secs(30)
    };
    let drained = tokio::time::timeout(grace, async {
        while api_tasks.join_next().await.is_some() {}
        while dl_tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!("abandoning calls still in flight; the next run picks them up");
        api_tasks.abort_all();
        dl_tasks.abort_all();
    }
    shared.schedule.flush().await;
    Ok(match (ctl.stop, ctl.no_credits, ctl.budget_stop) {
        (Some(s), _, _) => s,
        (None, Some(msg), _) => Stop::NoCredits(msg),
        (None, None, Some(msg)) => Stop::Budget(msg),
        (None, None, None) => Stop::Finished,
    })
}

/// What kind of task holds a job.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Task {
    /// A submit or a poll: the job is at Segmind.
    Api,
    Download,
}

/// The dispatcher's view of the run's course, changed by the tasks' reports.
#[derive(Default)]
struct Control {
    stop: Option<Stop>,
    /// False after a 406 or a budget stop: paid work is still collected.
    submitting: bool,
    no_credits: Option<String>,
    budget_stop: Option<String>,
    submit_errors: i64,
    submit_hold_until: i64,
    /// The work not in a task.
    agenda: Agenda,
    /// The jobs in a task.
    busy: HashMap<i64, Task>,
}

impl Control {
    /// Whether a submit may go at `now`: submitting allowed, no hold after errors, and the pacing
    /// (`next_submit_at`, fractional milliseconds) reached.
    fn may_submit(&self, now: i64, next_submit_at: f64) -> bool {
        self.submitting && now as f64 >= next_submit_at.max(self.submit_hold_until as f64)
    }

    /// Takes in one report; true if it stops the run or its submitting.
    fn absorb(&mut self, ev: Event, shared: &Shared) -> bool {
        match ev {
            Event::Finished(seq, next) => {
                let task = self.busy.remove(&seq);
                let at_segmind = self.agenda.hand_back(next);
                if task == Some(Task::Api) && !at_segmind {
                    self.agenda.in_flight -= 1;
                }
                false
            }
            Event::Account(AccountStop::Refused(msg)) => {
                self.stop = Some(Stop::Refused(msg));
                true
            }
            Event::Account(AccountStop::NoCredits(msg)) => {
                self.submitting = false;
                self.no_credits.get_or_insert(msg);
                true
            }
            Event::Local(msg) => {
                self.stop = self.stop.take().or(Some(Stop::Local(msg)));
                true
            }
            Event::SubmitTrouble => {
                self.submit_errors += 1;
                self.submit_hold_until = now_ms() + shared.schedule.backoff(self.submit_errors).as_millis() as i64;
                false
            }
            Event::SubmitOk => {
                self.submit_errors = 0;
                false
            }
        }
    }
}

/// Jobs that still need the engine (not terminal, not held as unknown). Pending jobs only
/// count while submitting is allowed.
async fn open_work(store: &Store, submitting: bool) -> anyhow::Result<i64> {
    let mut n = 0;
    for (state, count) in store.counts().await? {
        match state {
            JobState::Submitting | JobState::Running | JobState::Downloading => n += count,
            JobState::Pending if submitting => n += count,
            _ => {}
        }
    }
    Ok(n)
}

/// What to send now: due polls (true: the agenda has some; oldest submit first), or else, if
/// submitting is allowed, the submits the pacing and the in-flight cap allow. At most `room`.
async fn plan(
    s: &Shared,
    ctl: &mut Control,
    now: i64,
    room: usize,
    may_submit: bool,
    next_submit_at: f64,
) -> anyhow::Result<(bool, Vec<crate::store::SubmitWork>)> {
    if ctl.agenda.has_due_polls(now) {
        return Ok((true, Vec::new()));
    }
    if !may_submit {
        return Ok((false, Vec::new()));
    }
    // Submits due by the pacing: the next one, plus those missed (three at most, see above).
    let interval = s.submit_interval_ms().max(1e-3);
    let at = now as f64;
    let paced = ((at - next_submit_at.max(at - 3.0 * interval)) / interval + 1.0).max(0.0) as usize;
    let want = room.min(paced);
    let mut submits = ctl.agenda.due_submits(&s.store, &ctl.busy, now, want).await?;
    if let Some(first) = submits.first() {
        let free = s.concurrency_cap(&first.params).await - ctl.agenda.in_flight;
        submits.truncate(free.max(0) as usize);
    }
    Ok((false, submits))
}
