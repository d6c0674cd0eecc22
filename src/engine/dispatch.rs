//! The dispatcher: one loop that decides what runs next, one method per decision — what to
//! download, whether submitting may go on, what API work to send (polls or submits), whether
//! the run is over, how long to rest — and how to stop (`drain`).
//!
//! For an API action it first takes a permit from the shared `Gate`, then picks the most urgent
//! action *at that moment* and spawns it as a task. Tasks record their result in the store and
//! report back (`Event`), handing their job back with its next step.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::agenda::Agenda;
use super::shared::{Event, Shared, MAX_API_TASKS};
use super::{reach, tasks, Stop};
use crate::api::AccountStop;
use crate::state::JobState;
use crate::store::{now_ms, Store, SubmitWork};

/// What kind of task holds a job.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Task {
    /// A submit or a poll: the job is at Segmind.
    Api,
    Download,
}

/// What an idle moment found.
enum Idle {
    /// Every job is done with.
    Finished,
    /// The agenda was rebuilt from the database: look again.
    Reloaded,
    /// Work is under way or due later: rest until then.
    Busy,
}

pub(super) struct Dispatcher {
    shared: Arc<Shared>,
    events: mpsc::UnboundedReceiver<Event>,
    cancel: CancellationToken,
    api_tasks: JoinSet<()>,
    dl_tasks: JoinSet<()>,
    /// The work not in a task.
    agenda: Agenda,
    /// The jobs in a task.
    busy: HashMap<i64, Task>,
    stop: Option<Stop>,
    /// False after a 406 or a budget stop: paid work is still collected.
    submitting: bool,
    no_credits: Option<String>,
    budget_stop: Option<String>,
    submit_errors: i64,
    submit_hold_until: i64,
    /// A spend limit is set: claims are committed before their tasks start (see `send_submits`).
    budgeted: bool,
    /// When the next submit may go, in fractional milliseconds: without a rate limit the
    /// interval is well under one. The first goes at once, the next ones at the pace: no
    /// catch-up burst at the start (it would complete as a batch, and its polls would crowd out
    /// the submits a minute later).
    next_submit_at: f64,
    /// When the agenda may next be rebuilt from the database (see `finished`).
    next_reload: i64,
    /// Several runners: when to look next for the jobs of runners that died (see `sweep`).
    next_sweep: i64,
}

impl Dispatcher {
    pub(super) fn new(
        shared: Arc<Shared>,
        events: mpsc::UnboundedReceiver<Event>,
        cancel: CancellationToken,
    ) -> Dispatcher {
        let budgeted = shared.cfg.budget.max_cost.is_some() || shared.cfg.budget.min_credits.is_some();
        Dispatcher {
            shared,
            events,
            cancel,
            api_tasks: JoinSet::new(),
            dl_tasks: JoinSet::new(),
            agenda: Agenda::default(),
            busy: HashMap::new(),
            stop: None,
            submitting: true,
            no_credits: None,
            budget_stop: None,
            submit_errors: 0,
            submit_hold_until: 0,
            budgeted,
            next_submit_at: now_ms() as f64,
            next_reload: 0,
            next_sweep: 0,
        }
    }

    /// Works until every job is terminal or the run must stop; then drains and says why it ended.
    pub(super) async fn run(mut self) -> Stop {
        // A database error ends the loop like any local problem: in-flight calls still drain.
        if let Err(e) = self.work().await {
            self.stop = self.stop.take().or(Some(Stop::Local(format!("database: {e:#}"))));
        }
        self.drain().await;
        self.shared.schedule.flush().await;
        match (self.stop, self.no_credits, self.budget_stop) {
            (Some(s), _, _) => s,
            (None, Some(msg), _) => Stop::NoCredits(msg),
            (None, None, Some(msg)) => Stop::Budget(msg),
            (None, None, None) => Stop::Finished,
        }
    }

    async fn work(&mut self) -> anyhow::Result<()> {
        self.agenda.load(&self.shared.store).await?;
        loop {
            self.take_reports();
            if self.must_stop() {
                return Ok(());
            }
            let now = now_ms();
            self.sweep(now).await?;
            self.start_downloads(now);
            self.check_budget().await?;
            if self.send_api_work(now).await? {
                continue;
            }
            match self.when_idle(now).await? {
                Idle::Finished => return Ok(()),
                Idle::Reloaded => continue,
                Idle::Busy => self.rest(now).await,
            }
        }
    }

    /// Several runners (PostgreSQL): twice a lease, the jobs of runners that died are taken over
    /// (`Store::take_over`) and join this runner's agenda — saved request ids to poll, videos
    /// to fetch, lost submits to look up in the request history.
    async fn sweep(&mut self, now: i64) -> anyhow::Result<()> {
        let store = self.shared.store.clone();
        let Some(lease_ms) = store.runner().map(|r| r.lease_ms) else {
            return Ok(());
        };
        if now < self.next_sweep {
            return Ok(());
        }
        self.next_sweep = now + (lease_ms / 2).max(100);
        let taken = store.take_over().await?;
        if !taken.is_empty() {
            let seqs = taken.iter().map(|t| t.seq).collect();
            self.agenda.adopt(&store, &seqs).await?;
        }
        Ok(())
    }

    /// Takes in every report waiting, and reaps ended tasks.
    fn take_reports(&mut self) {
        while let Ok(ev) = self.events.try_recv() {
            self.absorb(ev);
        }
        while self.api_tasks.try_join_next().is_some() {}
        while self.dl_tasks.try_join_next().is_some() {}
    }

    /// Whether the run must end now: a stop was reported, the API host has been silent too long,
    /// or Ctrl-C.
    fn must_stop(&mut self) -> bool {
        let s = &self.shared;
        if let Some((silent, last)) = s.reach.silent_for(s.cfg.unreachable_after) {
            let msg = reach::message(s.api.base_url(), silent, &last);
            self.stop = self.stop.take().or(Some(Stop::Local(msg)));
        }
        if self.cancel.is_cancelled() {
            self.stop = self.stop.take().or(Some(Stop::Interrupted));
        }
        if let Some(msg) = s.gate.failure() {
            self.stop = self.stop.take().or(Some(Stop::Local(msg)));
        }
        self.stop.is_some()
    }

    /// Downloads of finished videos: no permit needed.
    fn start_downloads(&mut self, now: i64) {
        let free = self.shared.cfg.download_concurrency.saturating_sub(self.dl_tasks.len());
        for w in self.agenda.take_downloads(now, free) {
            self.busy.insert(w.seq, Task::Download);
            self.dl_tasks.spawn(tasks::fetch::download(self.shared.clone(), w));
        }
    }

    /// Budgets stop submitting (not collecting what is paid for).
    async fn check_budget(&mut self) -> anyhow::Result<()> {
        if self.submitting && self.budgeted {
            if let Some(reason) = self.shared.spend.stop_reason(&self.shared.store).await? {
                self.submitting = false;
                self.budget_stop = Some(reason);
            }
        }
        Ok(())
    }

    /// Whether a submit may go at `now`: submitting allowed, no hold after errors, and the pacing
    /// reached.
    fn may_submit(&self, now: i64) -> bool {
        self.submitting && now as f64 >= self.next_submit_at.max(self.submit_hold_until as f64)
    }

    /// Sends the API work that is due, if any: true if it did (or gave up its permit to a stop).
    async fn send_api_work(&mut self, now: i64) -> anyhow::Result<bool> {
        let room = MAX_API_TASKS.saturating_sub(self.api_tasks.len());
        if room == 0 {
            return Ok(false);
        }
        let (mut polls, mut submits) = self.plan(now, room).await?;
        if !polls && submits.is_empty() {
            return Ok(self.poll_early(now));
        }
        if !self.shared.gate.try_acquire() {
            tokio::select! {
                _ = self.shared.gate.acquire() => {}
                _ = self.cancel.cancelled() => return Ok(true),
                _ = self.shared.gate.failed() => return Ok(true),
            }
            // Reports that arrived while we waited (a 401, a 406…) are heard before anything is
            // sent: a stop costs at most one unused permit, never an extra call. Ordinary reports
            // (a task finished) must not cost the permit: the budget is the throughput.
            let mut heard_stop = false;
            while let Ok(ev) = self.events.try_recv() {
                heard_stop |= self.absorb(ev);
            }
            if heard_stop || self.cancel.is_cancelled() {
                return Ok(true);
            }
            // The wait may have been long: decide again, with the permit in hand.
            (polls, submits) = self.plan(now_ms(), room).await?;
        }
        // The first action uses the permit in hand; more go out only on permits that are free
        // this instant (when the budget is wide, not at 50 rpm).
        if polls {
            self.send_polls(room);
        } else {
            self.send_submits(submits).await?;
        }
        Ok(true)
    }

    /// What to send now: due polls (true: the agenda has some; oldest submit first), or else, if
    /// submitting is allowed, the submits the pacing and the in-flight cap allow. At most `room`.
    async fn plan(&mut self, now: i64, room: usize) -> anyhow::Result<(bool, Vec<SubmitWork>)> {
        if self.agenda.has_due_polls(now) || self.agenda.has_due_resolves(now) {
            return Ok((true, Vec::new()));
        }
        if !self.may_submit(now) {
            return Ok((false, Vec::new()));
        }
        // Submits due by the pacing: the next one, plus those missed (three at most, see
        // `send_submits`).
        let interval = self.shared.submit_interval_ms().max(1e-3);
        let at = now as f64;
        let paced = ((at - self.next_submit_at.max(at - 3.0 * interval)) / interval + 1.0).max(0.0) as usize;
        let want = room.min(paced);
        let mut submits = self
            .agenda
            .due_submits(&self.shared.store, &self.busy, now, want)
            .await?;
        if let Some(first) = submits.first() {
            let free = self.shared.concurrency_cap(&first.params) - self.agenda.in_flight;
            submits.truncate(free.max(0) as usize);
        }
        Ok((false, submits))
    }

    /// Sends due polls (and lookups of lost submits): one on the permit in hand, more on permits
    /// free this instant.
    fn send_polls(&mut self, room: usize) {
        let now = now_ms();
        let mut in_hand = true;
        // A lost submit first: it may be a paid job nobody follows yet. Its task takes permits
        // of its own for further pages; this one is its first.
        if let Some(w) = self.agenda.take_resolve(now) {
            in_hand = false;
            self.busy.insert(w.seq, Task::Api);
            self.api_tasks.spawn(tasks::resolve::resolve(self.shared.clone(), w));
        }
        for _ in 0..room {
            if !self.agenda.has_due_polls(now)
                || !(std::mem::replace(&mut in_hand, false) || self.shared.gate.try_acquire())
            {
                break;
            }
            let Some(w) = self.agenda.take_polls(now, 1).pop() else {
                break;
            };
            self.busy.insert(w.seq, Task::Api);
            self.api_tasks.spawn(tasks::poll::poll(self.shared.clone(), w, false));
        }
    }

    /// Nothing is due: if the budget has a permit free now that no planned action needs — the
    /// next planned one (a poll or a submit) is at least half a permit interval away, so taking
    /// this permit delays it by half an interval at most — polls the job at Segmind most likely
    /// done by now (requests under the budget cost nothing; waiting costs the user time). Every
    /// job gets its turn: a job polled less than the minimum gap ago waits, and the likelihood
    /// grows with the time a job has run.
    fn poll_early(&mut self, now: i64) -> bool {
        let s = &self.shared;
        let room = s.permit_ms() / 2.0;
        let soon = now as f64 + room;
        let next_planned = self.agenda.next_poll_due().unwrap_or(i64::MAX);
        let submit_soon = self.submitting
            && self.agenda.first_waiting().is_some_and(|(w, due)| {
                (due as f64) < soon
                    && self.agenda.in_flight < s.concurrency_cap(&w.params)
                    && self.next_submit_at.max(self.submit_hold_until as f64) < soon
            });
        if submit_soon || (next_planned as f64) < soon {
            return false;
        }
        let gap = s.cfg.timing.min_poll_gap.as_millis() as i64;
        let chosen = self.agenda.take_early(now, gap, |w| {
            s.schedule.early_poll(&w.class, w.submitted_at, w.last_pending_at, now)
        });
        let Some(w) = chosen else {
            return false;
        };
        if !s.gate.try_acquire() {
            self.agenda.add_poll(w);
            return false;
        }
        tracing::debug!(job = %w.id, "poll on an idle permit");
        self.busy.insert(w.seq, Task::Api);
        self.api_tasks.spawn(tasks::poll::poll(self.shared.clone(), w, true));
        true
    }

    /// Sends the chosen submits: one on the permit in hand, more on permits free this instant.
    async fn send_submits(&mut self, submits: Vec<SubmitWork>) -> anyhow::Result<()> {
        let mut in_hand = true;
        let mut chosen = Vec::with_capacity(submits.len());
        for w in submits {
            if !(std::mem::replace(&mut in_hand, false) || self.shared.gate.try_acquire()) {
                break;
            }
            self.agenda.take_submit(w.seq);
            chosen.push(w);
        }
        // With a spend limit the intents are committed here, before any task is spawned
        // (claimed together, they share one commit), so the spend check of the very next
        // iteration already counts them. Without one, each task claims its job itself (still
        // before its POST): the loop does not wait for a commit, and goes on sending polls and
        // downloads meanwhile.
        let store = &self.shared.store;
        let claims: Vec<Option<anyhow::Result<Option<i64>>>> = if self.budgeted {
            futures_util::future::join_all(chosen.iter().map(|w| store.claim_submit(w.seq)))
                .await
                .into_iter()
                .map(Some)
                .collect()
        } else {
            chosen.iter().map(|_| None).collect()
        };
        let now = now_ms();
        // A claim that failed ends the run, but only after the claims that were committed have
        // their tasks: a claimed job left without one would look possibly billed to the next run.
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
            self.busy.insert(w.seq, Task::Api);
            self.agenda.in_flight += 1;
            // Evenly spaced, no burst: a burst at the start completes as a batch, and batches
            // repeat (measured: 18 % delay instead of 9 %). Slots missed because polls took the
            // permits may be caught up, three at most: enough to keep the budget full, too few
            // to make a wave.
            let interval = self.shared.submit_interval_ms();
            self.next_submit_at = self.next_submit_at.max(now as f64 - 3.0 * interval) + interval;
            self.api_tasks
                .spawn(tasks::submit::submit(self.shared.clone(), w, claimed));
        }
        match claim_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Nothing due now: is every job done with? When the agenda ran dry with no task running,
    /// the database decides: it is the truth, and jobs may have changed behind the engine's
    /// back (`retry` beside the run); the agenda is rebuilt from it, at most once a second.
    async fn when_idle(&mut self, now: i64) -> anyhow::Result<Idle> {
        let idle = self.busy.is_empty() && self.api_tasks.is_empty() && self.dl_tasks.is_empty();
        if idle && self.agenda.is_empty(self.submitting) {
            if open_work(&self.shared.store, self.submitting).await? == 0 {
                return Ok(Idle::Finished);
            }
            if now >= self.next_reload {
                self.next_reload = now + 1000;
                self.agenda.load(&self.shared.store).await?;
                return Ok(Idle::Reloaded);
            }
        }
        Ok(Idle::Busy)
    }

    /// Sleeps until the next due time, a task's report, or cancel. Work that is due but blocked
    /// (its task is still running, the API task cap, the in-flight cap) is woken by a task's
    /// report, so it only gets a slow re-check here.
    async fn rest(&mut self, now: i64) {
        let next_due = self.agenda.next_due().unwrap_or(now + 1000);
        let mut wake = if next_due <= now {
            now + 50
        } else {
            next_due.min(now + 1000)
        };
        if self.submitting {
            if let Some((w, due)) = self.agenda.first_waiting() {
                if self.agenda.in_flight < self.shared.concurrency_cap(&w.params) {
                    let submit_at = self.submit_hold_until.max(self.next_submit_at.ceil() as i64).max(due);
                    wake = wake.min(submit_at.max(now + 1));
                }
            }
        }
        // Polls on idle permits: wake when the next job may be polled again (the budget may
        // have room then), but not more often than a permit comes.
        let gap = self.shared.cfg.timing.min_poll_gap.as_millis() as i64;
        if let Some(at) = self.agenda.next_early(gap) {
            wake = wake.min(at.max(now + self.shared.permit_ms().ceil() as i64));
        }
        let sleep = Duration::from_millis((wake - now).max(1) as u64);
        // The display shows the limiter's own count (read here, where the loop rests).
        let sent = self.shared.gate.stats().sent_last_window as u64;
        self.shared.tele.set_window_sent(sent);
        // A task ends just after its report: when the last one ends, the loop must look again at
        // once (the run may be over), not at the next re-check a second later.
        tokio::select! {
            Some(ev) = self.events.recv() => {
                self.absorb(ev);
            }
            Some(_) = self.api_tasks.join_next(), if !self.api_tasks.is_empty() => {}
            Some(_) = self.dl_tasks.join_next(), if !self.dl_tasks.is_empty() => {}
            _ = tokio::time::sleep(sleep) => {}
            _ = self.cancel.cancelled() => {}
        }
    }

    /// Lets in-flight calls record their answers, within the grace period (after Ctrl-C) or 30 s.
    async fn drain(&mut self) {
        let grace = if matches!(self.stop, Some(Stop::Interrupted)) {
            self.shared.cfg.grace
        } else {
            Duration::from_secs(30)
        };
        let (api, dl) = (&mut self.api_tasks, &mut self.dl_tasks);
        let drained = tokio::time::timeout(grace, async {
            while api.join_next().await.is_some() {}
            while dl.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!("abandoning calls still in flight; the next run picks them up");
            self.api_tasks.abort_all();
            self.dl_tasks.abort_all();
        }
    }

    /// Takes in one report; true if it stops the run or its submitting.
    fn absorb(&mut self, ev: Event) -> bool {
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
                self.submit_hold_until = now_ms() + self.shared.schedule.backoff(self.submit_errors).as_millis() as i64;
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
