//! Job transitions and the engine's queries. Each transition is guarded by the state (and, for
//! a job at Segmind, the request_id) it expects, and reports whether it applied: a stale worker
//! whose guard fails changes nothing.

use sqlx::{FromRow, Row};

use crate::sql_args;

use super::{now_ms, Store};
use crate::state::JobState;

/// A job the engine is about to submit.
#[derive(Debug, Clone, FromRow)]
pub struct SubmitWork {
    pub seq: i64,
    pub id: String,
    pub params: String,
    /// API GETs spent on the job so far (earlier attempts).
    pub polls: i64,
    pub due_at: i64,
    /// Paid resubmits so far (after an expired result, after a lost submit answer): capped by
    /// `--max-resubmits`.
    pub resubmits: i64,
}

/// A job at Segmind, to poll.
#[derive(Debug, Clone, FromRow)]
pub struct PollWork {
    pub seq: i64,
    pub id: String,
    pub params: String,
    pub request_id: String,
    pub status_url: Option<String>,
    pub response_url: Option<String>,
    pub submitted_at: i64,
    pub last_pending_at: Option<i64>,
    pub attempt_polls: i64,
    pub errors_in_row: i64,
    /// API requests spent on the job so far (submit attempts and polls).
    pub attempts: i64,
    pub polls: i64,
    /// When this poll was scheduled.
    pub due_at: i64,
    /// Paid resubmits so far (see `SubmitWork::resubmits`).
    pub resubmits: i64,
    /// The job's parameter class (for the schedule), filled in by the engine.
    #[sqlx(skip)]
    pub class: String,
    /// Poll this job through the status endpoint: its result endpoint answered 404 while it was
    /// young (in memory: a restart asks again).
    #[sqlx(skip)]
    pub via_status: bool,
    /// Polls the budget had room for that found the job still running: not part of what a
    /// video costs in planned requests.
    #[sqlx(skip)]
    pub extra_polls: i64,
}

/// A finished job whose video is to be fetched.
#[derive(Debug, Clone, FromRow)]
pub struct DownloadWork {
    pub seq: i64,
    pub id: String,
    pub request_id: String,
    pub output_url: String,
    pub output_size: Option<i64>,
    pub errors_in_row: i64,
    pub completed_at: Option<i64>,
    /// Paid resubmits so far (see `SubmitWork::resubmits`).
    pub resubmits: i64,
}

/// The columns of a `JobRecord`, in a `SELECT` over `jobs`.
pub(crate) const JOB_COLUMNS: &str =
    "seq, id, state, params, source, attempts, request_id, polls, output_url, output_path,
    bytes, sha256, cost, error, submitted_at, completed_at, downloaded_at, resubmits_unknown, resubmits_expired,
    resubmits_failed, maybe_billed_twice, unknown_adopted, unknown_absent, unknown_unprovable, history_recovered,
    billed_duplicates, true_cost, double_charges, video_width, video_height, video_frames, video_fps, video_duration,
    video_codec, video_mismatch, review, review_note, resubmits_rejected";

/// Everything about a job, for `export`, `report`, the provenance sidecars and tests.
#[derive(Debug, Clone, Default, FromRow, serde::Serialize)]
pub struct JobRecord {
    pub seq: i64,
    pub id: String,
    pub state: String,
    pub params: String,
    pub source: String,
    pub attempts: i64,
    pub request_id: Option<String>,
    pub polls: i64,
    pub output_url: Option<String>,
    pub output_path: Option<String>,
    pub bytes: Option<i64>,
    pub sha256: Option<String>,
    pub cost: Option<f64>,
    pub error: Option<String>,
    pub submitted_at: Option<i64>,
    pub completed_at: Option<i64>,
    pub downloaded_at: Option<i64>,
    pub resubmits_unknown: i64,
    pub resubmits_expired: i64,
    pub resubmits_failed: i64,
    pub maybe_billed_twice: i64,
    /// What the request history settled for the job (see migration 0007).
    pub unknown_adopted: i64,
    pub unknown_absent: i64,
    pub unknown_unprovable: i64,
    pub history_recovered: i64,
    pub billed_duplicates: i64,
    /// `reconcile`'s figures (None until it ran).
    pub true_cost: Option<f64>,
    pub double_charges: Option<i64>,
    /// What the video is (from its MP4 boxes), and how it differs from its request.
    pub video_width: Option<i64>,
    pub video_height: Option<i64>,
    pub video_frames: Option<i64>,
    pub video_fps: Option<f64>,
    pub video_duration: Option<f64>,
    pub video_codec: Option<String>,
    pub video_mismatch: Option<String>,
    /// A reviewer's decision (`keep`/`reject`) and note; rejected videos taken again.
    pub review: Option<String>,
    pub review_note: Option<String>,
    pub resubmits_rejected: i64,
}

/// One submit attempt of a job.
#[derive(Debug, Clone, FromRow, serde::Serialize, serde::Deserialize)]
pub struct AttemptRecord {
    pub n: i64,
    pub started_at: i64,
    pub request_id: Option<String>,
    pub outcome: Option<String>,
    pub detail: Option<String>,
    pub finished_at: Option<i64>,
}

/// What a recorded poll learnt.
pub struct Completed<'a> {
    pub output_url: &'a str,
    pub output_size: Option<i64>,
    pub cost: Option<f64>,
}

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

    pub async fn due_polls(&self, now: i64, limit: i64) -> anyhow::Result<Vec<PollWork>> {
        Ok(sqlx::query_as(
            "SELECT seq, id, params, request_id, status_url, response_url, submitted_at, last_pending_at, attempt_polls, errors_in_row,
                    attempts, polls, due_at, resubmits_expired + resubmits_unknown AS resubmits
             FROM jobs WHERE state = 'running' AND due_at <= ? ORDER BY submitted_at, seq LIMIT ?",
        )
        .bind(now)
        .bind(limit)
        .fetch_all(&self.read)
        .await?)
    }

    pub async fn due_submits(&self, now: i64, limit: i64) -> anyhow::Result<Vec<SubmitWork>> {
        Ok(sqlx::query_as(
            "SELECT seq, id, params, polls, due_at, resubmits_expired + resubmits_unknown AS resubmits FROM jobs INDEXED BY jobs_state_seq
             WHERE state = 'pending' AND due_at <= ? ORDER BY seq LIMIT ?",
        )
        .bind(now)
        .bind(limit)
        .fetch_all(&self.read)
        .await?)
    }

    /// Waiting jobs after `seq` in manifest order, whatever their due time: the engine's walk
    /// over the queue, one window at a time.
    pub async fn pending_after(&self, seq: i64, limit: i64) -> anyhow::Result<Vec<SubmitWork>> {
        Ok(sqlx::query_as(
            "SELECT seq, id, params, polls, due_at, resubmits_expired + resubmits_unknown AS resubmits FROM jobs INDEXED BY jobs_state_seq
             WHERE state = 'pending' AND seq > ? ORDER BY seq LIMIT ?",
        )
        .bind(seq)
        .bind(limit)
        .fetch_all(&self.read)
        .await?)
    }

    pub async fn due_downloads(&self, now: i64, limit: i64) -> anyhow::Result<Vec<DownloadWork>> {
        Ok(sqlx::query_as(
            "SELECT seq, id, request_id, output_url, output_size, errors_in_row, completed_at,
                    resubmits_expired + resubmits_unknown AS resubmits
             FROM jobs WHERE state = 'downloading' AND due_at <= ? ORDER BY completed_at, seq LIMIT ?",
        )
        .bind(now)
        .bind(limit)
        .fetch_all(&self.read)
        .await?)
    }

    /// Jobs at Segmind right now (submitting or running).
    pub async fn in_flight(&self) -> anyhow::Result<i64> {
        Ok(
            sqlx::query_scalar("SELECT COUNT(*) FROM jobs WHERE state IN ('submitting', 'running')")
                .fetch_one(&self.read)
                .await?,
        )
    }

    pub async fn count_in(&self, state: JobState) -> anyhow::Result<i64> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM jobs WHERE state = ?")
            .bind(state.as_str())
            .fetch_one(&self.read)
            .await?)
    }

    /// All jobs in manifest order, optionally only those in `state`.
    pub async fn jobs(&self, state: Option<JobState>) -> anyhow::Result<Vec<JobRecord>> {
        let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE (?1 IS NULL OR state = ?1) ORDER BY seq");
        Ok(sqlx::query_as(&sql)
            .bind(state.map(JobState::as_str))
            .fetch_all(&self.read)
            .await?)
    }

    /// A job and its attempts in one query (the downloader's sidecar needs both, per video).
    /// A job's parameters (canonical JSON).
    pub async fn params_of(&self, seq: i64) -> anyhow::Result<Option<String>> {
        Ok(sqlx::query_scalar("SELECT params FROM jobs WHERE seq = ?")
            .bind(seq)
            .fetch_optional(&self.read)
            .await?)
    }

    pub async fn job_with_attempts(&self, seq: i64) -> anyhow::Result<Option<(JobRecord, Vec<AttemptRecord>)>> {
        let sql = format!(
            "SELECT {JOB_COLUMNS}, (SELECT json_group_array(json_object('n', n, 'started_at', started_at,
                 'request_id', request_id, 'outcome', outcome, 'detail', detail, 'finished_at', finished_at))
                 FROM (SELECT * FROM attempts WHERE job_seq = jobs.seq ORDER BY n)) AS history
             FROM jobs WHERE seq = ?"
        );
        let Some(row) = sqlx::query(&sql).bind(seq).fetch_optional(&self.read).await? else {
            return Ok(None);
        };
        let job = JobRecord::from_row(&row)?;
        let history: String = row.try_get("history")?;
        Ok(Some((job, serde_json::from_str(&history)?)))
    }

    pub async fn attempts_of(&self, seq: i64) -> anyhow::Result<Vec<AttemptRecord>> {
        Ok(sqlx::query_as(
            "SELECT n, started_at, request_id, outcome, detail, finished_at FROM attempts WHERE job_seq = ? ORDER BY n",
        )
        .bind(seq)
        .fetch_all(&self.read)
        .await?)
    }

    /// Every learnt duration model: (class, mu, sigma, jobs). A class learnt only by an older
    /// version (its 75 % point in `durations`) gets a model with that 75 % point.
    pub async fn timing_models(&self) -> anyhow::Result<Vec<(String, f64, f64, i64)>> {
        let mut models: Vec<(String, f64, f64, i64)> =
            sqlx::query_as("SELECT class, mu, sigma, jobs FROM timing_models ORDER BY class")
                .fetch_all(&self.read)
                .await?;
        let legacy: Vec<(String, f64, i64)> = sqlx::query_as(
            "SELECT class, first_poll_ms, samples FROM durations
             WHERE first_poll_ms > 0 AND class NOT IN (SELECT class FROM timing_models)",
        )
        .fetch_all(&self.read)
        .await?;
        const SIGMA: f64 = 0.1;
        for (class, first_poll_ms, samples) in legacy {
            // ln q75 = mu + 0.674 sigma.
            models.push((class, first_poll_ms.ln() - 0.674 * SIGMA, SIGMA, samples));
        }
        Ok(models)
    }

    pub async fn save_timing_model(&self, class: &str, mu: f64, sigma: f64, jobs: i64) -> anyhow::Result<()> {
        self.batch
            .exec(
                "INSERT INTO timing_models (class, mu, sigma, jobs, updated_at) VALUES (?, ?, ?, ?, ?)
                 ON CONFLICT(class) DO UPDATE SET mu = excluded.mu, sigma = excluded.sigma, jobs = excluded.jobs,
                     updated_at = excluded.updated_at",
                sql_args![class.to_owned(), mu, sigma, jobs, now_ms()],
            )
            .await?;
        Ok(())
    }

    /// A fact seen of the account's API (see migration 0006), and its detail.
    pub async fn set_fact(&self, key: &str, value: &str, detail: &str) -> anyhow::Result<()> {
        self.batch
            .exec(
                "INSERT INTO facts (key, value, detail, seen_at) VALUES (?, ?, ?, ?)
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value, detail = excluded.detail,
                     seen_at = excluded.seen_at",
                sql_args![key.to_owned(), value.to_owned(), detail.to_owned(), now_ms()],
            )
            .await?;
        Ok(())
    }

    /// A fact: (value, detail, seen_at).
    pub async fn fact(&self, key: &str) -> anyhow::Result<Option<(String, String, i64)>> {
        Ok(sqlx::query_as("SELECT value, detail, seen_at FROM facts WHERE key = ?")
            .bind(key)
            .fetch_optional(&self.read)
            .await?)
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

/// What has been spent and committed, for `--max-cost` and every display of money.
#[derive(Debug, Clone, Default, PartialEq, FromRow)]
pub struct CostSummary {
    /// Sum of `metrics.cost` the API reported, and over how many jobs.
    pub reported: f64,
    pub reported_jobs: i64,
    /// Videos made (completed: billed) whose cost the API did not report.
    pub unpriced_videos: i64,
    /// Jobs at Segmind (submitting, running): billed when they complete.
    pub at_segmind: i64,
    /// Charges beyond one per job: results bought again after they expired (billed)…
    pub expired_attempts: i64,
    /// … and lost-answer submits that may have created a job (an upper bound until reconciled):
    /// those submitted again, and the last of a job failed with its answer lost.
    pub maybe_attempts: i64,
}

impl CostSummary {
    /// Attempts that are (or may be) billed but whose cost is not reported.
    pub fn unpriced(&self) -> i64 {
        self.unpriced_videos + self.at_segmind + self.expired_attempts + self.maybe_attempts
    }
}

impl Store {
    pub async fn cost_summary(&self) -> anyhow::Result<CostSummary> {
        Ok(sqlx::query_as(
            "SELECT COALESCE(SUM(cost), 0.0) AS reported, COUNT(cost) AS reported_jobs,
                    COALESCE(SUM(cost IS NULL AND state IN ('downloading', 'done')), 0) AS unpriced_videos,
                    COALESCE(SUM(state IN ('submitting', 'running')), 0) AS at_segmind,
                    COALESCE(SUM(resubmits_expired), 0) AS expired_attempts,
                    COALESCE(SUM(resubmits_unknown), 0)
                      + COALESCE(SUM(state = 'failed' AND request_id IS NULL AND maybe_billed_twice <> 0), 0)
                      AS maybe_attempts
             FROM jobs",
        )
        .fetch_one(&self.read)
        .await?)
    }

    /// Jobs submitted and not yet finished at Segmind, and when the oldest was accepted: their
    /// request records expire an hour after submission, so they must be collected before then.
    pub async fn submitted_unfinished(&self) -> anyhow::Result<(i64, Option<i64>)> {
        Ok(sqlx::query_as(
            "SELECT COUNT(*), MIN(submitted_at) FROM jobs INDEXED BY jobs_state_seq
             WHERE state IN ('submitting', 'running')",
        )
        .fetch_one(&self.read)
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

impl Store {
    /// For `bench-import` only: marks `num` of every `den` jobs done (one completed attempt, a
    /// cost, completions spread over the last ten minutes), as if a run had got that far, so
    /// `status` and `export` are timed on a realistic mix.
    pub async fn bench_mark_done(&self, num: i64, den: i64) -> anyhow::Result<()> {
        let now = now_ms();
        let mut tx = self.write.begin().await?;
        sqlx::query(
            "UPDATE jobs SET state = 'done', attempts = 1, cost = 0.05, request_id = 'bench-' || seq,
                    submitted_at = ?1 - 700000, completed_at = ?1 - seq % 600000, downloaded_at = ?1 - seq % 600000,
                    output_path = 'out/' || id || '.mp4', bytes = 1000000, updated_at = ?1
             WHERE seq % ?2 < ?3",
        )
        .bind(now)
        .bind(den)
        .bind(num)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO attempts (job_seq, n, started_at, request_id, outcome, finished_at)
             SELECT seq, 1, submitted_at, request_id, 'completed', completed_at FROM jobs WHERE state = 'done'",
        )
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }
}

/// What `status` shows, summed in SQL over the covering `jobs_tally` index.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tally {
    /// Jobs per state, every state listed.
    pub states: Vec<(JobState, i64)>,
    pub attempts: i64,
    pub resubmits_unknown: i64,
    pub resubmits_expired: i64,
    pub resubmits_failed: i64,
    pub maybe_billed_twice: i64,
    /// Sum of `metrics.cost` the API reported, and over how many jobs.
    pub cost: f64,
    pub cost_jobs: i64,
    /// Jobs whose completion was seen at or after the `since` asked for, and the first such time.
    pub completed_since: i64,
    pub first_completed_since: Option<i64>,
}

/// The unfinished job that has waited longest.
#[derive(Debug, Clone, PartialEq, FromRow, serde::Serialize)]
pub struct Oldest {
    pub id: String,
    pub state: String,
    pub created_at: i64,
}

#[derive(FromRow)]
struct StateTally {
    state: String,
    jobs: i64,
    attempts: i64,
    unknown: i64,
    expired: i64,
    failed: i64,
    twice: i64,
    cost: f64,
    cost_jobs: i64,
    recent: i64,
    first_recent: Option<i64>,
}

impl Store {
    /// The sums behind `status`, with completions counted from `since` (epoch ms). Reads only.
    pub async fn tally(&self, since: i64) -> anyhow::Result<Tally> {
        let rows: Vec<StateTally> = sqlx::query_as(
            "SELECT state, COUNT(*) AS jobs, SUM(attempts) AS attempts, SUM(resubmits_unknown) AS unknown,
                    SUM(resubmits_expired) AS expired, SUM(resubmits_failed) AS failed,
                    SUM(maybe_billed_twice <> 0) AS twice, COALESCE(SUM(cost), 0.0) AS cost, COUNT(cost) AS cost_jobs,
                    SUM(completed_at >= ?1) AS recent, MIN(CASE WHEN completed_at >= ?1 THEN completed_at END) AS first_recent
             FROM jobs INDEXED BY jobs_tally GROUP BY state",
        )
        .bind(since)
        .fetch_all(&self.read)
        .await?;
        let mut t = Tally {
            states: JobState::ALL
                .into_iter()
                .map(|st| (st, rows.iter().find(|r| r.state == st.as_str()).map_or(0, |r| r.jobs)))
                .collect(),
            ..Tally::default()
        };
        for r in &rows {
            t.attempts += r.attempts;
            t.resubmits_unknown += r.unknown;
            t.resubmits_expired += r.expired;
            t.resubmits_failed += r.failed;
            t.maybe_billed_twice += r.twice;
            t.cost += r.cost;
            t.cost_jobs += r.cost_jobs;
            t.completed_since += r.recent;
            t.first_completed_since = match (t.first_completed_since, r.first_recent) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        Ok(t)
    }

    /// The unfinished job created first (manifest order among equals).
    pub async fn oldest_waiting(&self) -> anyhow::Result<Option<Oldest>> {
        Ok(sqlx::query_as(
            "SELECT id, state, created_at FROM jobs
             WHERE seq = (SELECT MIN(m) FROM (
                 SELECT (SELECT MIN(seq) FROM jobs INDEXED BY jobs_state_seq WHERE state = s.state) AS m
                 FROM (SELECT 'pending' AS state UNION ALL SELECT 'submitting' UNION ALL SELECT 'unknown'
                       UNION ALL SELECT 'running' UNION ALL SELECT 'downloading') AS s))",
        )
        .fetch_optional(&self.read)
        .await?)
    }

    /// Ids of the first `limit` jobs that may have been billed twice, in manifest order.
    pub async fn maybe_billed_twice(&self, limit: i64) -> anyhow::Result<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT id FROM jobs INDEXED BY jobs_billed_twice WHERE maybe_billed_twice <> 0 ORDER BY seq LIMIT ?",
        )
        .bind(limit)
        .fetch_all(&self.read)
        .await?)
    }
}

/// Jobs in manifest order, a page at a time, each with its attempts, all from one read snapshot
/// (a read transaction in WAL: it never blocks a writer). Memory: one page.
pub struct JobPages {
    tx: sqlx::Transaction<'static, sqlx::Sqlite>,
    state: Option<&'static str>,
    after: i64,
    with_attempts: bool,
}

impl Store {
    pub async fn job_pages(&self, state: Option<JobState>, with_attempts: bool) -> anyhow::Result<JobPages> {
        Ok(JobPages {
            tx: self.read.begin().await?,
            state: state.map(JobState::as_str),
            after: 0,
            with_attempts,
        })
    }
}

impl JobPages {
    /// The next page of up to `limit` jobs (empty at the end).
    pub async fn next(&mut self, limit: i64) -> anyhow::Result<Vec<(JobRecord, Vec<AttemptRecord>)>> {
        let sql = format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE seq > ?1 AND (?2 IS NULL OR state = ?2) ORDER BY seq LIMIT ?3"
        );
        let jobs: Vec<JobRecord> = sqlx::query_as(&sql)
            .bind(self.after)
            .bind(self.state)
            .bind(limit)
            .fetch_all(&mut *self.tx)
            .await?;
        let (Some(first), Some(last)) = (jobs.first().map(|j| j.seq), jobs.last().map(|j| j.seq)) else {
            return Ok(Vec::new());
        };
        self.after = last;
        let mut attempts: Vec<(i64, AttemptRecord)> = Vec::new();
        if self.with_attempts {
            type Row = (
                i64,
                i64,
                i64,
                Option<String>,
                Option<String>,
                Option<String>,
                Option<i64>,
            );
            let rows: Vec<Row> = sqlx::query_as(
                "SELECT a.job_seq, a.n, a.started_at, a.request_id, a.outcome, a.detail, a.finished_at
                 FROM attempts a JOIN jobs j ON j.seq = a.job_seq
                 WHERE j.seq BETWEEN ?1 AND ?2 AND (?3 IS NULL OR j.state = ?3) ORDER BY a.job_seq, a.n",
            )
            .bind(first)
            .bind(last)
            .bind(self.state)
            .fetch_all(&mut *self.tx)
            .await?;
            attempts = rows
                .into_iter()
                .map(|(seq, n, started_at, request_id, outcome, detail, finished_at)| {
                    let a = AttemptRecord {
                        n,
                        started_at,
                        request_id,
                        outcome,
                        detail,
                        finished_at,
                    };
                    (seq, a)
                })
                .collect();
        }
        // Both lists are in seq order: hand each job the run of attempts that is its own.
        let mut attempts = attempts.into_iter().peekable();
        Ok(jobs
            .into_iter()
            .map(|j| {
                let mut own = Vec::new();
                while let Some((_, a)) = attempts.next_if(|(seq, _)| *seq <= j.seq) {
                    own.push(a);
                }
                (j, own)
            })
            .collect())
    }
}
