//! The dispatcher's agenda: the engine's work, kept in memory so that deciding what to do next
//! costs no database query.
//!
//! The database stays the truth: every fact is committed by a task before it reports back, and
//! a restart rebuilds the agenda from the database. The agenda only mirrors it, so the
//! dispatcher does not ask SQLite "what is due?" several times per action (at hundreds of jobs
//! per second those reads were most of the engine's overhead).
//!
//! - Jobs at Segmind (`running`) and finished jobs to fetch (`downloading`) are few (the
//!   in-flight cap bounds them) and are all held here, each in a calendar by due time; when due
//!   they move to a ready list in the order the budget should serve them (oldest submit first,
//!   oldest completion first).
//! - Waiting jobs (`pending`) may be millions: only a window of the next few hundred, in
//!   manifest order, is read at a time (`refill`), plus the jobs tasks handed back (a submit that
//!   never arrived, an expired result), each with its due time.
//!
//! A job is either here or in a task, never both: a task hands its job back with the next step
//! (`Next`) when it reports. Jobs that change state behind the engine's back (`retry` or
//! `cancel` beside a run) are found by a re-read of the database; a cancelled job's claim simply
//! fails.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use crate::store::{DownloadWork, PollWork, Store, SubmitWork, UnknownWork};

/// What a task hands back with its job: the job's next step, as recorded in the database.
#[derive(Debug)]
pub enum Next {
    /// Terminal, held, or left for the next run.
    Nothing,
    Submit(SubmitWork),
    Poll(PollWork),
    /// A video to fetch, and when.
    Download(DownloadWork, i64),
    /// A lost submit to look up in the request history, and when.
    Resolve(UnknownWork, i64),
}

/// How many waiting jobs are read from the database at a time.
const WINDOW: i64 = 256;
/// The same with several runners (PostgreSQL), where a window read is reserved for its reader:
/// small, so the runners share the waiting jobs evenly.
const RUNNER_WINDOW: i64 = 8;
/// How often the walk over waiting jobs starts again once it reached the end.
const REWALK_MS: i64 = 5000;

#[derive(Default)]
pub struct Agenda {
    /// Jobs at Segmind by (due, seq), and those due by (submitted, seq).
    polls: BTreeMap<(i64, i64), PollWork>,
    ready_polls: BTreeMap<(i64, i64), PollWork>,
    /// Videos to fetch by (due, seq), and those due by (completed, seq).
    downloads: BTreeMap<(i64, i64), DownloadWork>,
    ready_downloads: BTreeMap<(i64, i64), DownloadWork>,
    /// Waiting jobs read from the database, in manifest order (all due).
    fresh: VecDeque<SubmitWork>,
    /// Waiting jobs with a due time: handed back by tasks, or read with a future due time.
    later: BTreeMap<(i64, i64), SubmitWork>,
    /// Seqs in `fresh` or `later`, so a re-read does not take a job twice.
    waiting: HashSet<i64>,
    /// The highest seq read so far by the current walk over waiting jobs.
    cursor: i64,
    /// The walk reached the end of the waiting jobs (at `walked_at`).
    walked: bool,
    walked_at: i64,
    /// Jobs at Segmind (submitting or running), here or in a task.
    pub in_flight: i64,
    /// Lost submits to look up, by (due, seq).
    resolves: BTreeMap<(i64, i64), UnknownWork>,
    /// The lost submits of the database were read (at the first load only: one held after a
    /// lookup stays held, and a later load must not look it up again and again).
    unknowns_read: bool,
}

impl Agenda {
    /// Reads every job at Segmind and every video to fetch from the database, and starts a new
    /// walk over the waiting jobs. Only called while no task runs (at the start, and when the
    /// agenda ran dry), so the database holds every job's latest step.
    pub async fn load(&mut self, store: &Store) -> anyhow::Result<()> {
        self.polls.clear();
        self.ready_polls.clear();
        self.downloads.clear();
        self.ready_downloads.clear();
        let polls = store.due_polls(i64::MAX, i64::MAX).await?;
        self.in_flight = polls.len() as i64;
        for w in polls {
            self.add_poll(w);
        }
        for w in store.due_downloads(i64::MAX, i64::MAX).await? {
            self.add_download(w, 0);
        }
        if !std::mem::replace(&mut self.unknowns_read, true) {
            for w in store.unknown_work().await? {
                self.resolves.insert((0, w.seq), w);
            }
        }
        self.rewalk();
        Ok(())
    }

    /// Adds jobs this runner just took over from a dead one (`seqs`), as the database has them.
    pub async fn adopt(&mut self, store: &Store, seqs: &HashSet<i64>) -> anyhow::Result<()> {
        for w in store.due_polls(i64::MAX, i64::MAX).await? {
            if seqs.contains(&w.seq) {
                self.in_flight += 1;
                self.add_poll(w);
            }
        }
        for w in store.due_downloads(i64::MAX, i64::MAX).await? {
            if seqs.contains(&w.seq) {
                self.add_download(w, 0);
            }
        }
        for w in store.unknown_work().await? {
            if seqs.contains(&w.seq) {
                self.resolves.insert((0, w.seq), w);
            }
        }
        Ok(())
    }

    /// Starts reading the waiting jobs again from the first (finds jobs put back behind the
    /// engine's back, by `retry` beside a run).
    pub fn rewalk(&mut self) {
        self.cursor = 0;
        self.walked = false;
    }

    pub fn add_poll(&mut self, mut w: PollWork) {
        if w.class.is_empty() {
            w.class = crate::engine::shared::class_of(&w.params);
        }
        self.polls.insert((w.due_at, w.seq), w);
    }

    pub fn add_download(&mut self, w: DownloadWork, due: i64) {
        self.downloads.insert((due, w.seq), w);
    }

    pub fn add_submit(&mut self, w: SubmitWork) {
        if self.waiting.insert(w.seq) {
            self.later.insert((w.due_at, w.seq), w);
        }
    }

    /// Takes back a task's job. Returns whether it is still at Segmind.
    pub fn hand_back(&mut self, next: Next) -> bool {
        match next {
            Next::Nothing => false,
            Next::Submit(w) => {
                self.add_submit(w);
                false
            }
            Next::Poll(w) => {
                self.add_poll(w);
                true
            }
            Next::Download(w, due) => {
                self.add_download(w, due);
                false
            }
            Next::Resolve(w, due) => {
                self.resolves.insert((due, w.seq), w);
                false
            }
        }
    }

    /// Moves what is due at `now` to the ready lists.
    fn ripen(&mut self, now: i64) {
        while let Some(entry) = self.polls.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let w = entry.remove();
            self.ready_polls.insert((w.submitted_at, w.seq), w);
        }
        while let Some(entry) = self.downloads.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let w = entry.remove();
            self.ready_downloads.insert((w.completed_at.unwrap_or(0), w.seq), w);
        }
    }

    /// Up to `n` due polls, oldest submit first.
    pub fn take_polls(&mut self, now: i64, n: usize) -> Vec<PollWork> {
        self.ripen(now);
        std::iter::from_fn(|| self.ready_polls.pop_first().map(|(_, w)| w))
            .take(n)
            .collect()
    }

    pub fn has_due_polls(&mut self, now: i64) -> bool {
        self.ripen(now);
        !self.ready_polls.is_empty()
    }

    /// Up to `n` due downloads, oldest completion first.
    pub fn take_downloads(&mut self, now: i64, n: usize) -> Vec<DownloadWork> {
        self.ripen(now);
        std::iter::from_fn(|| self.ready_downloads.pop_first().map(|(_, w)| w))
            .take(n)
            .collect()
    }

    /// Reads the next window of waiting jobs if none is in memory.
    async fn refill<B>(&mut self, store: &Store, busy: &HashMap<i64, B>, now: i64) -> anyhow::Result<()> {
        // At the end of the walk, walk again now and then: jobs put back behind the engine's
        // back (`retry` beside the run) are behind the cursor.
        if self.fresh.is_empty() && self.walked && now >= self.walked_at + REWALK_MS {
            self.rewalk();
        }
        while self.fresh.is_empty() && !self.walked {
            // Several runners take small windows: a window is reserved for the runner that read it.
            let window = if store.runner().is_some() {
                RUNNER_WINDOW
            } else {
                WINDOW
            };
            let rows = store.pending_after(self.cursor, window).await?;
            self.walked = (rows.len() as i64) < window;
            self.walked_at = now;
            for w in rows {
                self.cursor = self.cursor.max(w.seq);
                if busy.contains_key(&w.seq) || !self.waiting.insert(w.seq) {
                    continue;
                }
                if w.due_at > now {
                    self.later.insert((w.due_at, w.seq), w);
                } else {
                    self.fresh.push_back(w);
                }
            }
        }
        Ok(())
    }

    /// The first `n` waiting jobs due at `now`, in manifest order, left in place (see `take_submit`).
    pub async fn due_submits<B>(
        &mut self,
        store: &Store,
        busy: &HashMap<i64, B>,
        now: i64,
        n: usize,
    ) -> anyhow::Result<Vec<SubmitWork>> {
        self.refill(store, busy, now).await?;
        // Jobs handed back that are due join the window, in manifest order.
        while let Some(entry) = self.later.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let w = entry.remove();
            let at = self.fresh.partition_point(|f| f.seq < w.seq);
            self.fresh.insert(at, w);
        }
        Ok(self.fresh.iter().take(n).cloned().collect())
    }

    /// Removes a waiting job chosen from `due_submits` (claimed, or found no longer waiting).
    pub fn take_submit(&mut self, seq: i64) {
        if let Some(at) = self.fresh.iter().position(|w| w.seq == seq) {
            self.fresh.remove(at);
        }
        self.waiting.remove(&seq);
    }

    /// Whether a lost submit is due to be looked up.
    pub fn has_due_resolves(&self, now: i64) -> bool {
        self.resolves.first_key_value().is_some_and(|(k, _)| k.0 <= now)
    }

    /// The next lost submit due to be looked up.
    pub fn take_resolve(&mut self, now: i64) -> Option<UnknownWork> {
        if !self.has_due_resolves(now) {
            return None;
        }
        self.resolves.pop_first().map(|(_, w)| w)
    }

    /// The earliest planned poll (0 if one is due and waiting).
    pub fn next_poll_due(&self) -> Option<i64> {
        if !self.ready_polls.is_empty() {
            return Some(0);
        }
        self.polls.first_key_value().map(|(k, _)| k.0)
    }

    /// Takes the job at Segmind, not yet due, that `likely` rates most likely done (`None`: not
    /// worth a poll now), among those not polled for at least `gap` ms (the next few hundred by
    /// planned time: planned times follow the likelihood closely enough).
    pub fn take_early(&mut self, now: i64, gap: i64, likely: impl Fn(&PollWork) -> Option<f64>) -> Option<PollWork> {
        let best = self
            .polls
            .iter()
            .take(256)
            .filter(|(_, w)| now - w.last_pending_at.unwrap_or(w.submitted_at).max(w.submitted_at) >= gap)
            .filter_map(|(k, w)| likely(w).map(|p| (p, *k)))
            .max_by(|a, b| a.0.total_cmp(&b.0).then(b.1.cmp(&a.1)))?;
        self.polls.remove(&best.1)
    }

    /// When the first job at Segmind not polled for `gap` ms will have waited that long (among
    /// the next few hundred by planned time, as `take_early` looks).
    pub fn next_early(&self, gap: i64) -> Option<i64> {
        self.polls
            .values()
            .take(256)
            .map(|w| w.last_pending_at.unwrap_or(w.submitted_at).max(w.submitted_at) + gap)
            .min()
    }

    /// The earliest due time of a poll or a download (0 if one is due and waiting).
    pub fn next_due(&self) -> Option<i64> {
        [
            self.polls.first_key_value().map(|(k, _)| k.0),
            self.downloads.first_key_value().map(|(k, _)| k.0),
            self.resolves.first_key_value().map(|(k, _)| k.0),
            (!self.ready_polls.is_empty() || !self.ready_downloads.is_empty()).then_some(0),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// The next waiting job in memory, and when it is due.
    pub fn first_waiting(&self) -> Option<(&SubmitWork, i64)> {
        match self.fresh.front() {
            Some(w) => Some((w, 0)),
            None => self.later.first_key_value().map(|(k, w)| (w, k.0)),
        }
    }

    /// Nothing in memory (waiting jobs only count if `submits`), and the walk over waiting jobs
    /// is at its end.
    pub fn is_empty(&self, submits: bool) -> bool {
        self.polls.is_empty()
            && self.resolves.is_empty()
            && self.ready_polls.is_empty()
            && self.downloads.is_empty()
            && self.ready_downloads.is_empty()
            && (!submits || (self.fresh.is_empty() && self.later.is_empty() && self.walked))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest;
    use crate::store::now_ms;

    /// A store with `n` waiting jobs j0, j1, … in manifest order.
    async fn store_with(n: usize) -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.csv");
        let mut csv = String::from("id,image,prompt\n");
        for i in 0..n {
            csv.push_str(&format!("j{i},https://i.example/{i}.png,p{i}\n"));
        }
        std::fs::write(&path, csv).unwrap();
        let mut rows = Vec::new();
        assert!(manifest::read_files(&[path], |r| rows.push(r)).is_empty());
        let store = Store::open(&dir.path().join("t.db")).await.unwrap();
        store.import(&rows).await.unwrap().unwrap();
        (dir, store)
    }

    fn poll(seq: i64, submitted_at: i64, due_at: i64) -> PollWork {
        PollWork {
            seq,
            id: format!("j{seq}"),
            params: "{}".into(),
            request_id: format!("r{seq}"),
            status_url: None,
            response_url: None,
            submitted_at,
            last_pending_at: None,
            attempt_polls: 0,
            errors_in_row: 0,
            attempts: 1,
            polls: 0,
            due_at,
            resubmits: 0,
            class: "c".into(),
            via_status: false,
            extra_polls: 0,
        }
    }

    fn ids(w: &[SubmitWork]) -> Vec<&str> {
        w.iter().map(|w| w.id.as_str()).collect()
    }

    #[tokio::test]
    async fn waiting_jobs_are_read_a_window_at_a_time_in_manifest_order() {
        let (_d, store) = store_with(WINDOW as usize + 10).await;
        let mut a = Agenda::default();
        let busy = HashMap::<i64, ()>::new();
        let now = now_ms();
        assert_eq!(ids(&a.due_submits(&store, &busy, now, 2).await.unwrap()), ["j0", "j1"]);
        assert_eq!(a.fresh.len(), WINDOW as usize, "one window in memory, not the queue");
        // Choosing does not consume: a job leaves only when taken (claimed).
        assert_eq!(ids(&a.due_submits(&store, &busy, now, 1).await.unwrap()), ["j0"]);
        let mut seen = Vec::new();
        loop {
            let next = a.due_submits(&store, &busy, now, 1).await.unwrap();
            let Some(w) = next.first() else { break };
            seen.push(w.id.clone());
            a.take_submit(w.seq);
        }
        assert_eq!(seen.len(), WINDOW as usize + 10, "every job once, across windows");
        assert_eq!(seen.last().unwrap(), &format!("j{}", WINDOW + 9));
        assert!(a.is_empty(true));
    }

    #[tokio::test]
    async fn a_job_handed_back_waits_for_its_due_time_and_keeps_its_place() {
        let (_d, store) = store_with(3).await;
        let mut a = Agenda::default();
        let busy = HashMap::<i64, ()>::new();
        let now = now_ms();
        let first = a.due_submits(&store, &busy, now, 1).await.unwrap().remove(0);
        a.take_submit(first.seq);
        // Its submit never arrived: back, due in a second.
        assert!(!a.hand_back(Next::Submit(SubmitWork {
            due_at: now + 1000,
            ..first.clone()
        })));
        assert_eq!(ids(&a.due_submits(&store, &busy, now, 5).await.unwrap()), ["j1", "j2"]);
        assert_eq!(a.first_waiting().unwrap().0.id, "j1");
        // Once due, it goes first again (manifest order), and only once.
        let later = ids(&a.due_submits(&store, &busy, now + 1000, 5).await.unwrap())
            .into_iter()
            .map(String::from)
            .collect::<Vec<_>>();
        assert_eq!(later, ["j0", "j1", "j2"]);
    }

    #[tokio::test]
    async fn a_walk_skips_jobs_in_tasks_and_a_rewalk_finds_jobs_put_back_behind_it() {
        let (_d, store) = store_with(3).await;
        let mut a = Agenda::default();
        let now = now_ms();
        let busy: HashMap<i64, ()> = [(1, ())].into();
        assert_eq!(ids(&a.due_submits(&store, &busy, now, 5).await.unwrap()), ["j1", "j2"]);
        for seq in [2, 3] {
            a.take_submit(seq);
        }
        assert!(a.due_submits(&store, &busy, now, 5).await.unwrap().is_empty());
        assert!(a.is_empty(true));
        // The walk is at its end; j0 is still waiting in the database (its task gave it back
        // through the database only, as `retry` beside a run would): found by the next walk.
        let none = HashMap::<i64, ()>::new();
        assert!(
            a.due_submits(&store, &none, now + 1, 5).await.unwrap().is_empty(),
            "not yet"
        );
        let again = a.due_submits(&store, &none, now + REWALK_MS + 1, 5).await.unwrap();
        assert_eq!(
            ids(&again),
            ["j0", "j1", "j2"],
            "nothing was claimed, so all three wait"
        );
    }

    #[test]
    fn due_polls_go_oldest_submit_first_and_downloads_oldest_completion_first() {
        let mut a = Agenda::default();
        a.add_poll(poll(1, 300, 10));
        a.add_poll(poll(2, 100, 20));
        a.add_poll(poll(3, 200, 99));
        assert!(!a.has_due_polls(5));
        assert_eq!(a.next_due(), Some(10));
        let due: Vec<i64> = a.take_polls(50, 10).iter().map(|w| w.seq).collect();
        assert_eq!(due, [2, 1], "both due; the older submit first");
        assert_eq!(a.next_due(), Some(99));
        assert!(a.hand_back(Next::Poll(poll(2, 100, 60))), "still at Segmind");
        assert_eq!(a.take_polls(70, 10).iter().map(|w| w.seq).collect::<Vec<_>>(), [2]);

        let dl = |seq, completed| DownloadWork {
            seq,
            id: format!("j{seq}"),
            request_id: "r".into(),
            output_url: "http://v/x.mp4".into(),
            output_size: None,
            errors_in_row: 0,
            completed_at: Some(completed),
            resubmits: 0,
        };
        assert!(!a.hand_back(Next::Download(dl(7, 500), 0)));
        assert!(!a.hand_back(Next::Download(dl(8, 400), 0)));
        assert!(!a.hand_back(Next::Download(dl(9, 100), 1_000)), "a retry, later");
        let got: Vec<i64> = a.take_downloads(100, 10).iter().map(|w| w.seq).collect();
        assert_eq!(got, [8, 7]);
        assert_eq!(
            a.take_downloads(1_000, 10).iter().map(|w| w.seq).collect::<Vec<_>>(),
            [9]
        );
    }
}
