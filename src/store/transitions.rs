//! Job transitions. Each is guarded by the state (and, for a job at Segmind, the request_id) it
//! expects, and reports whether it applied: a stale worker whose guard fails changes nothing.
//! Start-up recovery (jobs left in the submit window, saved request ids) is here too.

use crate::sql_args;

use super::{now_ms, Completed, Store};
use crate::state::JobState;

impl Store {
    /// pending → submitting, writing the attempt intent. Returns the attempt number, or None if
    /// the job was no longer pending. Committed before the POST leaves.
    pub async fn claim_submit(&self, seq: i64) -> anyhow::Result<Option<i64>> {
        let now = now_ms();
        // The attempt row is written only by the claim that moved the job (a job already
        // submitting has its row; a job no longer pending gets none).
        let rows = self
            .batch
            .exec(
                "UPDATE jobs SET state = 'submitting', attempts = attempts + 1, updated_at = ?
                 WHERE seq = ? AND state = 'pending' RETURNING attempts;
                 INSERT INTO attempts (job_seq, n, started_at)
                 SELECT seq, attempts, ? FROM jobs
                 WHERE seq = ? AND state = 'submitting'
                   AND NOT EXISTS (SELECT 1 FROM attempts a WHERE a.job_seq = jobs.seq AND a.n = jobs.attempts)",
                sql_args![now, seq, now, seq],
            )
            .await?;
        Ok(match rows.first().and_then(|r| r.first()) {
            Some(rusqlite::types::Value::Integer(n)) => Some(*n),
            Some(v) => anyhow::bail!("claim: attempts is {v:?}, not an integer"),
            None => None,
        })
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
    ) -> anyhow::Result<bool> {
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
    ) -> anyhow::Result<bool> {
        let rid = request_id.to_owned();
        self.batch
            .applied(
                "UPDATE jobs SET state = 'running', request_id = ?, status_url = ?, response_url = ?,
                     submitted_at = ?, due_at = ?, last_pending_at = NULL, attempt_polls = 0, errors_in_row = 0,
                     output_url = NULL, output_size = NULL, completed_at = NULL, error = NULL, updated_at = ?
                 WHERE seq = ? AND state = 'submitting' AND attempts = ? RETURNING 1;
                 UPDATE attempts SET request_id = ?, outcome = 'accepted', finished_at = ?
                 WHERE job_seq = ? AND n = ?",
                sql_args![
                    rid.clone(),
                    status_url.to_owned(),
                    response_url.to_owned(),
                    now,
                    first_poll_at,
                    now,
                    seq,
                    attempt,
                    rid,
                    now,
                    seq,
                    attempt
                ],
            )
            .await
    }

    /// submitting → pending / unknown / failed: the submit ended without a request_id.
    /// `outcome` is what the attempt row records (`not_sent`, `refused`, `unknown`, `rejected`).
    pub async fn record_submit_ended(
        &self,
        seq: i64,
        attempt: i64,
        to: JobState,
        outcome: &str,
        detail: &str,
        due_at: i64,
    ) -> anyhow::Result<bool> {
        debug_assert!(JobState::Submitting.can_move_to(to) && to != JobState::Running);
        let now = now_ms();
        let error = (to == JobState::Failed).then(|| detail.to_owned());
        self.batch
            .applied(
                "UPDATE jobs SET state = ?, due_at = ?, error = COALESCE(?, error), updated_at = ?
                 WHERE seq = ? AND state = 'submitting' AND attempts = ? RETURNING 1;
                 UPDATE attempts SET outcome = ?, detail = ?, finished_at = ? WHERE job_seq = ? AND n = ?",
                sql_args![
                    to.as_str(),
                    due_at,
                    error,
                    now,
                    seq,
                    attempt,
                    outcome.to_owned(),
                    detail.to_owned(),
                    now,
                    seq,
                    attempt
                ],
            )
            .await
    }

    /// running → running: still QUEUED/PROCESSING; poll again at `next_at`.
    pub async fn record_pending(&self, seq: i64, request_id: &str, next_at: i64) -> anyhow::Result<bool> {
        let now = now_ms();
        self.batch
            .applied(
                "UPDATE jobs SET due_at = ?, polls = polls + 1, attempt_polls = attempt_polls + 1, last_pending_at = ?,
                     errors_in_row = 0, updated_at = ?
                 WHERE seq = ? AND state = 'running' AND request_id = ? RETURNING 1",
                sql_args![next_at, now, now, seq, request_id.to_owned()],
            )
            .await
    }

    /// A poll or download that hit a transient error: try again at `next_at`.
    pub async fn record_retry_later(
        &self,
        seq: i64,
        state: JobState,
        request_id: &str,
        next_at: i64,
        counted_poll: bool,
    ) -> anyhow::Result<bool> {
        self.batch
            .applied(
                "UPDATE jobs SET due_at = ?, errors_in_row = errors_in_row + 1, polls = polls + ?, updated_at = ?
                 WHERE seq = ? AND state = ? AND request_id = ? RETURNING 1",
                sql_args![
                    next_at,
                    i64::from(counted_poll),
                    now_ms(),
                    seq,
                    state.as_str(),
                    request_id.to_owned()
                ],
            )
            .await
    }

    /// running → downloading: COMPLETED, with the output URL saved before anything fetches it.
    pub async fn record_completed(&self, seq: i64, request_id: &str, c: Completed<'_>) -> anyhow::Result<bool> {
        let now = now_ms();
        let rid = request_id.to_owned();
        self.batch
            .applied(
                "UPDATE jobs SET state = 'downloading', output_url = ?, output_size = ?, cost = ?,
                     completed_at = ?, polls = polls + 1, due_at = 0, errors_in_row = 0, updated_at = ?
                 WHERE seq = ? AND state = 'running' AND request_id = ? RETURNING 1;
                 UPDATE attempts SET outcome = 'completed', detail = '', finished_at = ?
                 WHERE job_seq = ? AND request_id = ?",
                sql_args![
                    c.output_url.to_owned(),
                    c.output_size,
                    c.cost,
                    now,
                    now,
                    seq,
                    rid.clone(),
                    now,
                    seq,
                    rid
                ],
            )
            .await
    }

    /// running → failed with the API's message (FAILED, served as 422).
    pub async fn record_failed(&self, seq: i64, request_id: &str, error: &str) -> anyhow::Result<bool> {
        let now = now_ms();
        let rid = request_id.to_owned();
        self.batch
            .applied(
                "UPDATE jobs SET state = 'failed', error = ?, polls = polls + 1, updated_at = ?
                 WHERE seq = ? AND state = 'running' AND request_id = ? RETURNING 1;
                 UPDATE attempts SET outcome = 'failed', detail = ?, finished_at = ?
                 WHERE job_seq = ? AND request_id = ?",
                sql_args![error.to_owned(), now, seq, rid.clone(), error.to_owned(), now, seq, rid],
            )
            .await
    }

    /// running/downloading → pending: the result record (or the video) is gone before we got it,
    /// so the job must be made again. Counted as an expired resubmit.
    pub async fn record_expired(&self, seq: i64, from: JobState, request_id: &str, why: &str) -> anyhow::Result<bool> {
        let now = now_ms();
        let rid = request_id.to_owned();
        self.batch
            .applied(
                "UPDATE jobs SET state = 'pending', resubmits_expired = resubmits_expired + 1,
                     polls = polls + ?, due_at = 0, errors_in_row = 0, error = ?, updated_at = ?
                 WHERE seq = ? AND state = ? AND request_id = ? RETURNING 1;
                 UPDATE attempts SET outcome = 'expired', detail = ?, finished_at = ?
                 WHERE job_seq = ? AND request_id = ?",
                sql_args![
                    i64::from(from == JobState::Running),
                    why.to_owned(),
                    now,
                    seq,
                    from.as_str(),
                    rid.clone(),
                    why.to_owned(),
                    now,
                    seq,
                    rid
                ],
            )
            .await
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
    ) -> anyhow::Result<bool> {
        let now = now_ms();
        self.batch
            .applied(
                "UPDATE jobs SET state = 'done', output_path = ?, bytes = ?, sha256 = ?, downloaded_at = ?,
                     video_width = ?, video_height = ?, video_frames = ?, video_fps = ?, video_duration = ?,
                     video_codec = ?, video_mismatch = ?, error = NULL, errors_in_row = 0, updated_at = ?
                 WHERE seq = ? AND state = 'downloading' AND request_id = ? RETURNING 1",
                sql_args![
                    path.to_owned(),
                    bytes,
                    sha256.to_owned(),
                    now,
                    i64::from(video.width),
                    i64::from(video.height),
                    video.frames as i64,
                    video.fps,
                    video.duration_secs,
                    video.codec.clone(),
                    mismatch.map(str::to_owned),
                    now,
                    seq,
                    request_id.to_owned()
                ],
            )
            .await
    }

    /// At start-up, under the run lock: a job left in `submitting` died inside the submit window,
    /// so nobody knows whether Segmind created it. Returns how many became `unknown`.
    pub async fn recover_interrupted_submits(&self) -> anyhow::Result<u64> {
        let now = now_ms();
        let mut tx = self.write.begin().await?;
        sqlx::query(
            "UPDATE attempts SET outcome = 'unknown', finished_at = ?,
                 detail = 'the run stopped after the submit was recorded and before its answer was'
             WHERE outcome IS NULL AND job_seq IN (SELECT seq FROM jobs WHERE state = 'submitting')",
        )
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let n = sqlx::query("UPDATE jobs SET state = 'unknown', updated_at = ? WHERE state = 'submitting'")
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(n)
    }

    /// unknown → pending under the `resubmit` policy: counted, and flagged as possibly billed twice
    /// (the same move as `wanbatch retry --unknown`).
    pub async fn resubmit_unknown(&self) -> anyhow::Result<u64> {
        self.retry(RetryWhich::Unknown).await
    }

    /// Every saved request_id is due for a poll now (after a restart).
    pub async fn poll_all_now(&self) -> anyhow::Result<u64> {
        let done = sqlx::query("UPDATE jobs SET due_at = 0 WHERE state IN ('running', 'downloading')")
            .execute(&self.write)
            .await?;
        Ok(done.rows_affected())
    }
}

impl Store {
    /// unknown → pending for one job during a run (policy `resubmit`): counted and flagged.
    pub async fn resubmit_unknown_job(&self, seq: i64) -> anyhow::Result<bool> {
        self.batch
            .applied(
                "UPDATE jobs SET state = 'pending', resubmits_unknown = resubmits_unknown + 1,
                     maybe_billed_twice = 1, updated_at = ?
                 WHERE seq = ? AND state = 'unknown' RETURNING 1",
                sql_args![now_ms(), seq],
            )
            .await
    }
}

impl Store {
    /// pending → failed: the job cannot be submitted as imported (its local image changed or was
    /// refused by the storage).
    pub async fn fail_pending(&self, seq: i64, why: &str) -> anyhow::Result<bool> {
        self.batch
            .applied(
                "UPDATE jobs SET state = 'failed', error = ?, updated_at = ? WHERE seq = ? AND state = 'pending' RETURNING 1",
                sql_args![why.to_owned(), now_ms(), seq],
            )
            .await
    }

    /// unknown → failed: its submit answer was lost too many times to submit it again.
    pub async fn fail_unknown(&self, seq: i64, why: &str) -> anyhow::Result<bool> {
        self.batch
            .applied(
                "UPDATE jobs SET state = 'failed', error = ?, maybe_billed_twice = 1, updated_at = ?
                 WHERE seq = ? AND state = 'unknown' RETURNING 1",
                sql_args![why.to_owned(), now_ms(), seq],
            )
            .await
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
/// `pending` again.
pub const EXPIRED_SQL: &str = "(state = 'failed' AND completed_at IS NOT NULL AND downloaded_at IS NULL)";

impl Store {
    /// failed/unknown/cancelled → pending, counted by cause (a failed job whose video was lost
    /// counts as an expired resubmit; a cancelled job was never resubmitted, so it counts
    /// nothing). Returns how many moved.
    pub async fn retry(&self, which: RetryWhich<'_>) -> anyhow::Result<u64> {
        let count = format!(
            "resubmits_failed = resubmits_failed + (state = 'failed' AND NOT {EXPIRED_SQL}),
             resubmits_expired = resubmits_expired + {EXPIRED_SQL},
             resubmits_unknown = resubmits_unknown + (state = 'unknown'),
             maybe_billed_twice = maybe_billed_twice OR state = 'unknown'"
        );
        let (filter, id) = match which {
            RetryWhich::Unknown => ("state = 'unknown'", None),
            RetryWhich::Failed => ("state = 'failed'", None),
            RetryWhich::Expired => (EXPIRED_SQL, None),
            RetryWhich::Id(id) => ("state IN ('failed', 'unknown', 'cancelled') AND id = ?2", Some(id)),
        };
        let sql = format!(
            "UPDATE jobs SET {count}, state = 'pending', due_at = 0, error = NULL, updated_at = ?1 WHERE {filter}"
        );
        let mut query = sqlx::query(&sql).bind(now_ms());
        if let Some(id) = id {
            query = query.bind(id);
        }
        let done = query.execute(&self.write).await?;
        Ok(done.rows_affected())
    }

    /// pending → cancelled, for every pending job (`None`) or one job. One guarded statement: a
    /// running dispatcher claims with `WHERE state = 'pending'` too, so either the claim or the
    /// cancel wins and a cancelled job is never submitted. Returns how many moved.
    pub async fn cancel(&self, id: Option<&str>) -> anyhow::Result<u64> {
        let done = sqlx::query(
            "UPDATE jobs SET state = 'cancelled', error = 'cancelled by user', due_at = 0, updated_at = ?1
             WHERE state = 'pending' AND (?2 IS NULL OR id = ?2)",
        )
        .bind(now_ms())
        .bind(id)
        .execute(&self.write)
        .await?;
        Ok(done.rows_affected())
    }

    /// The state of one job, if it exists.
    pub async fn state_of(&self, id: &str) -> anyhow::Result<Option<String>> {
        Ok(sqlx::query_scalar("SELECT state FROM jobs WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.read)
            .await?)
    }
}

impl Store {
    /// downloading → failed: the video could not be fetched for a permanent reason.
    pub async fn record_download_failed(&self, seq: i64, request_id: &str, error: &str) -> anyhow::Result<bool> {
        self.batch
            .applied(
                "UPDATE jobs SET state = 'failed', error = ?, updated_at = ?
                 WHERE seq = ? AND state = 'downloading' AND request_id = ? RETURNING 1",
                sql_args![error.to_owned(), now_ms(), seq, request_id.to_owned()],
            )
            .await
    }
}
