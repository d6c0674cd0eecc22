//! Job transitions, each through the door (`door.rs`): guarded by the state (and, for a job at
//! Segmind, the request or attempt) it expects, so a stale worker whose guard fails changes
//! nothing; each returns the row it wrote (None: the guard did not hold). Start-up recovery (jobs
//! left in the submit window, saved request ids) and the commands' moves (`retry`, `cancel`)
//! are here too.

use crate::sql_args;

use super::db;
use super::door::{AttemptKey, Guard, Transition};
use super::{now_ms, Completed, JobRow, Store};
use crate::state::{AttemptOutcome, JobState};

use JobState::*;

/// The claim of a waiting job for its next submit: `pending → submitting`, its attempt counted
/// and opened (at `now`). The same on every backend.
pub(crate) fn claim(seq: i64, now: i64) -> Transition<'static> {
    Transition::new(seq, &[Pending], Submitting, Guard::State)
        .set("attempts = attempts + 1", sql_args![])
        .then(
            "INSERT INTO attempts (job_seq, n, started_at) SELECT seq, attempts, ? FROM jobs WHERE seq = ?",
            sql_args![now, seq],
        )
}

impl Store {
    /// pending → submitting, writing the attempt intent. Returns the attempt number, or None if
    /// the job was no longer pending. Committed before the POST leaves.
    pub async fn claim_submit(&self, seq: i64) -> anyhow::Result<Option<i64>> {
        Ok(self.transition(claim(seq, now_ms())).await?.map(|row| row.attempts))
    }

    /// submitting → running: the request_id and URLs are durable from here on.
    pub async fn record_accepted(
        &self,
        seq: i64,
        attempt: i64,
        request_id: &str,
        status_url: &str,
        response_url: &str,
        first_poll_at: i64,
    ) -> anyhow::Result<Option<JobRow>> {
        self.record_accepted_at(
            seq,
            attempt,
            request_id,
            status_url,
            response_url,
            first_poll_at,
            now_ms(),
        )
        .await
    }

    /// `record_accepted`, with the accepted time (`submitted_at`) given by the caller.
    #[allow(clippy::too_many_arguments)]
    pub async fn record_accepted_at(
        &self,
        seq: i64,
        attempt: i64,
        request_id: &str,
        status_url: &str,
        response_url: &str,
        first_poll_at: i64,
        now: i64,
    ) -> anyhow::Result<Option<JobRow>> {
        let t = Transition::new(seq, &[Submitting], Running, Guard::Attempt(attempt))
            .set(
                "request_id = ?, status_url = ?, response_url = ?, submitted_at = ?, due_at = ?,
                 last_pending_at = NULL, attempt_polls = 0, errors_in_row = 0, output_url = NULL,
                 output_size = NULL, completed_at = NULL, error = NULL",
                sql_args![request_id, status_url, response_url, now, first_poll_at],
            )
            .attempt(AttemptKey::N(attempt), AttemptOutcome::Accepted, None)
            .attempt_request(request_id);
        self.transition(t).await
    }

    /// submitting → pending / unknown / failed: the submit ended without a request_id.
    /// `outcome` is what the attempt row records.
    pub async fn record_submit_ended(
        &self,
        seq: i64,
        attempt: i64,
        to: JobState,
        outcome: AttemptOutcome,
        detail: &str,
        due_at: i64,
    ) -> anyhow::Result<Option<JobRow>> {
        anyhow::ensure!(
            to != Running,
            "internal: a submit without a request id cannot be running"
        );
        let error = (to == Failed).then(|| detail.to_owned());
        let t = Transition::new(seq, &[Submitting], to, Guard::Attempt(attempt))
            .set("due_at = ?, error = COALESCE(?, error)", sql_args![due_at, error])
            .attempt(AttemptKey::N(attempt), outcome, Some(detail.to_owned()));
        self.transition(t).await
    }

    /// running → running: still QUEUED/PROCESSING; poll again at `next_at`.
    pub async fn record_pending(&self, seq: i64, request_id: &str, next_at: i64) -> anyhow::Result<Option<JobRow>> {
        let t = Transition::new(seq, &[Running], Running, Guard::Request(request_id)).set(
            "due_at = ?, polls = polls + 1, attempt_polls = attempt_polls + 1, last_pending_at = ?, errors_in_row = 0",
            sql_args![next_at, now_ms()],
        );
        self.transition(t).await
    }

    /// A poll or download that hit a transient error: try again at `next_at`.
    pub async fn record_retry_later(
        &self,
        seq: i64,
        state: JobState,
        request_id: &str,
        next_at: i64,
        counted_poll: bool,
    ) -> anyhow::Result<Option<JobRow>> {
        let from = [state];
        let t = Transition::new(seq, &from, state, Guard::Request(request_id)).set(
            "due_at = ?, errors_in_row = errors_in_row + 1, polls = polls + ?",
            sql_args![next_at, i64::from(counted_poll)],
        );
        self.transition(t).await
    }

    /// running → downloading: COMPLETED, with the output URL saved before anything fetches it.
    pub async fn record_completed(
        &self,
        seq: i64,
        request_id: &str,
        c: Completed<'_>,
    ) -> anyhow::Result<Option<JobRow>> {
        let t = Transition::new(seq, &[Running], Downloading, Guard::Request(request_id))
            .set(
                "output_url = ?, output_size = ?, cost = ?, completed_at = ?, polls = polls + 1, due_at = 0,
                 errors_in_row = 0",
                sql_args![c.output_url, c.output_size, c.cost, now_ms()],
            )
            .attempt(
                AttemptKey::Request(request_id),
                AttemptOutcome::Completed,
                Some(String::new()),
            );
        self.transition(t).await
    }

    /// running → failed with the API's message (FAILED, served as 422).
    pub async fn record_failed(&self, seq: i64, request_id: &str, error: &str) -> anyhow::Result<Option<JobRow>> {
        let t = Transition::new(seq, &[Running], Failed, Guard::Request(request_id))
            .set("error = ?, polls = polls + 1", sql_args![error])
            .attempt(
                AttemptKey::Request(request_id),
                AttemptOutcome::Failed,
                Some(error.to_owned()),
            );
        self.transition(t).await
    }

    /// running/downloading → pending: the result record (or the video) is gone before we got it,
    /// so the job must be made again. Counted as an expired resubmit.
    pub async fn record_expired(
        &self,
        seq: i64,
        from: JobState,
        request_id: &str,
        why: &str,
    ) -> anyhow::Result<Option<JobRow>> {
        let was = [from];
        let t = Transition::new(seq, &was, Pending, Guard::Request(request_id))
            .set(
                "resubmits_expired = resubmits_expired + 1, polls = polls + ?, due_at = 0, errors_in_row = 0, error = ?",
                sql_args![i64::from(from == Running), why],
            )
            .attempt(
                AttemptKey::Request(request_id),
                AttemptOutcome::Expired,
                Some(why.to_owned()),
            );
        self.transition(t).await
    }

    /// downloading → done: the verified file is at `path`; what it is, and how it differs from
    /// its request (if it does).
    #[allow(clippy::too_many_arguments)]
    pub async fn record_downloaded(
        &self,
        seq: i64,
        request_id: &str,
        path: &str,
        bytes: i64,
        sha256: &str,
        video: &crate::mp4check::VideoInfo,
        mismatch: Option<&str>,
    ) -> anyhow::Result<Option<JobRow>> {
        let t = Transition::new(seq, &[Downloading], Done, Guard::Request(request_id)).set(
            "output_path = ?, bytes = ?, sha256 = ?, downloaded_at = ?, video_width = ?, video_height = ?,
             video_frames = ?, video_fps = ?, video_duration = ?, video_codec = ?, video_mismatch = ?, error = NULL,
             errors_in_row = 0",
            sql_args![
                path,
                bytes,
                sha256,
                now_ms(),
                i64::from(video.width),
                i64::from(video.height),
                video.frames as i64,
                video.fps,
                video.duration_secs,
                video.codec.clone(),
                mismatch
            ],
        );
        self.transition(t).await
    }

    /// downloading → failed: the video could not be fetched for a permanent reason.
    pub async fn record_download_failed(
        &self,
        seq: i64,
        request_id: &str,
        error: &str,
    ) -> anyhow::Result<Option<JobRow>> {
        let t =
            Transition::new(seq, &[Downloading], Failed, Guard::Request(request_id)).set("error = ?", sql_args![error]);
        self.transition(t).await
    }

    /// unknown → pending for one job during a run (policy `resubmit`): counted and flagged.
    pub async fn resubmit_unknown_job(&self, seq: i64) -> anyhow::Result<Option<JobRow>> {
        let t = Transition::new(seq, &[Unknown], Pending, Guard::State).set(
            "resubmits_unknown = resubmits_unknown + 1, maybe_billed_twice = 1",
            sql_args![],
        );
        self.transition(t).await
    }

    /// pending → failed: the job cannot be submitted as imported (its local image changed or was
    /// refused by the storage).
    pub async fn fail_pending(&self, seq: i64, why: &str) -> anyhow::Result<Option<JobRow>> {
        let t = Transition::new(seq, &[Pending], Failed, Guard::State).set("error = ?", sql_args![why]);
        self.transition(t).await
    }

    /// unknown → failed: its submit answer was lost too many times to submit it again.
    pub async fn fail_unknown(&self, seq: i64, why: &str) -> anyhow::Result<Option<JobRow>> {
        let t = Transition::new(seq, &[Unknown], Failed, Guard::State)
            .set("error = ?, maybe_billed_twice = 1", sql_args![why]);
        self.transition(t).await
    }

    /// At start-up, under the run lock: a job left in `submitting` died inside the submit window,
    /// so nobody knows whether Segmind created it. Returns how many became `unknown`.
    pub async fn recover_interrupted_submits(&self) -> anyhow::Result<u64> {
        let n = self
            .transition_all(&[Submitting], Unknown, ("", sql_args![]), ("", sql_args![]))
            .await?;
        // Their open attempts say so (after the move: a crash in between leaves the attempts
        // open, and the next start marks them).
        db::query(
            "UPDATE attempts SET outcome = ?, finished_at = ?,
                 detail = 'the run stopped after the submit was recorded and before its answer was'
             WHERE outcome IS NULL
               AND job_seq IN (SELECT seq FROM jobs WHERE state = ? AND attempts = attempts.n)",
        )
        .bind(AttemptOutcome::Unknown.as_str())
        .bind(now_ms())
        .bind(Unknown.as_str())
        .execute(&self.write)
        .await?;
        Ok(n)
    }

    /// unknown → pending under the `resubmit` policy: counted, and flagged as possibly billed twice
    /// (the same move as `wanbatch retry --unknown`).
    pub async fn resubmit_unknown(&self) -> anyhow::Result<u64> {
        self.retry(RetryWhich::Unknown).await
    }

    /// Every saved request_id is due for a poll now (after a restart). Not a move.
    pub async fn poll_all_now(&self) -> anyhow::Result<u64> {
        let done = db::query("UPDATE jobs SET due_at = 0 WHERE state IN (?, ?)")
            .bind(Running.as_str())
            .bind(Downloading.as_str())
            .execute(&self.write)
            .await?;
        Ok(done)
    }
}

/// Which jobs `retry` puts back.
pub enum RetryWhich<'a> {
    Unknown,
    Failed,
    /// Failed jobs whose video was made (and paid for) but never fetched: see [`EXPIRED_SQL`].
    Expired,
    /// One job, if it is failed, unknown or cancelled.
    Id(&'a str),
}

/// A failed job whose current attempt completed at Segmind (`completed_at` is set from
/// COMPLETED and cleared by the next accepted submit) but whose video was never downloaded: the
/// downloader gave up on it (`downloading → failed`), so the result has expired or its host kept
/// failing. Expired results the engine resubmits by itself never end `failed`; they are already
/// `pending` again. Its `?` is the failed state.
pub const EXPIRED_SQL: &str = expired!();

macro_rules! expired {
    () => {
        "(state = ? AND completed_at IS NOT NULL AND downloaded_at IS NULL)"
    };
}
use expired;

impl Store {
    /// failed/unknown/cancelled → pending, counted by cause (a failed job whose video was lost
    /// counts as an expired resubmit; a cancelled job was never resubmitted, so it counts
    /// nothing). Returns how many moved.
    pub async fn retry(&self, which: RetryWhich<'_>) -> anyhow::Result<u64> {
        // `CASE … END` rather than a truth value: the same SQL on every backend.
        let count = concat!(
            "resubmits_failed = resubmits_failed + CASE WHEN state = ? AND NOT ",
            expired!(),
            " THEN 1 ELSE 0 END,
             resubmits_expired = resubmits_expired + CASE WHEN ",
            expired!(),
            " THEN 1 ELSE 0 END,
             resubmits_unknown = resubmits_unknown + CASE WHEN state = ? THEN 1 ELSE 0 END,
             maybe_billed_twice = CASE WHEN state = ? THEN 1 ELSE maybe_billed_twice END,
             due_at = 0, error = NULL"
        );
        let set = (count, sql_args![Failed, Failed, Failed, Unknown, Unknown]);
        let (from, filter): (&[JobState], _) = match which {
            RetryWhich::Unknown => (&[Unknown], ("", sql_args![])),
            RetryWhich::Failed => (&[Failed], ("", sql_args![])),
            RetryWhich::Expired => (&[Failed], (EXPIRED_SQL, sql_args![Failed])),
            RetryWhich::Id(id) => (&[Failed, Unknown, Cancelled], ("id = ?", sql_args![id])),
        };
        self.transition_all(from, Pending, set, filter).await
    }

    /// pending → cancelled, for every pending job (`None`) or one job. One guarded statement: a
    /// running dispatcher claims with a pending guard too, so either the claim or the cancel
    /// wins and a cancelled job is never submitted. Returns how many moved.
    pub async fn cancel(&self, id: Option<&str>) -> anyhow::Result<u64> {
        let set = ("error = 'cancelled by user', due_at = 0", sql_args![]);
        let filter = match id {
            Some(id) => ("id = ?", sql_args![id]),
            None => ("", sql_args![]),
        };
        self.transition_all(&[Pending], Cancelled, set, filter).await
    }

    /// The state of one job, if it exists.
    pub async fn state_of(&self, id: &str) -> anyhow::Result<Option<String>> {
        db::query_scalar("SELECT state FROM jobs WHERE id = ?")
            .bind(id)
            .fetch_maybe(&self.read)
            .await
    }
}
