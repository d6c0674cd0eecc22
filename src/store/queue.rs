//! The engine's queries over the queue (what is due, what waits) and a job's record.

use super::db;

use super::{AttemptRecord, DownloadWork, JobRecord, PollWork, Store, SubmitWork, JOB_COLUMNS};
use crate::state::JobState;

impl Store {
    pub async fn due_polls(&self, now: i64, limit: i64) -> anyhow::Result<Vec<PollWork>> {
        db::query_as(
            "SELECT seq, id, params, request_id, status_url, response_url, submitted_at, last_pending_at, attempt_polls, errors_in_row,
                    attempts, polls, due_at, resubmits_expired + resubmits_unknown AS resubmits
             FROM jobs WHERE state = 'running' AND due_at <= ? AND (? IS NULL OR lease_owner = ?)
             ORDER BY submitted_at, seq LIMIT ?",
        )
        .bind(now)
        .bind(self.owner())
        .bind(self.owner())
        .bind(limit)
        .fetch_all(&self.read)
        .await
    }

    pub async fn due_submits(&self, now: i64, limit: i64) -> anyhow::Result<Vec<SubmitWork>> {
        db::query_as(
            "SELECT seq, id, params, polls, due_at, resubmits_expired + resubmits_unknown AS resubmits FROM jobs INDEXED BY jobs_state_seq
             WHERE state = 'pending' AND due_at <= ? ORDER BY seq LIMIT ?",
        )
        .bind(now)
        .bind(limit)
        .fetch_all(&self.read)
        .await
    }

    /// Waiting jobs after `seq` in manifest order, whatever their due time: the engine's walk
    /// over the queue, one window at a time.
    /// With several runners (PostgreSQL), the window is this runner's to take: see
    /// `reserve_pending`.
    pub async fn pending_after(&self, seq: i64, limit: i64) -> anyhow::Result<Vec<SubmitWork>> {
        if self.runner.is_some() {
            return self.reserve_pending(seq, limit).await;
        }
        db::query_as(
            "SELECT seq, id, params, polls, due_at, resubmits_expired + resubmits_unknown AS resubmits FROM jobs INDEXED BY jobs_state_seq
             WHERE state = 'pending' AND seq > ? ORDER BY seq LIMIT ?",
        )
        .bind(seq)
        .bind(limit)
        .fetch_all(&self.read)
        .await
    }

    pub async fn due_downloads(&self, now: i64, limit: i64) -> anyhow::Result<Vec<DownloadWork>> {
        db::query_as(
            "SELECT seq, id, request_id, output_url, output_size, errors_in_row, completed_at,
                    resubmits_expired + resubmits_unknown AS resubmits
             FROM jobs WHERE state = 'downloading' AND due_at <= ? AND (? IS NULL OR lease_owner = ?)
             ORDER BY completed_at, seq LIMIT ?",
        )
        .bind(now)
        .bind(self.owner())
        .bind(self.owner())
        .bind(limit)
        .fetch_all(&self.read)
        .await
    }

    /// Jobs at Segmind right now (submitting or running).
    pub async fn in_flight(&self) -> anyhow::Result<i64> {
        db::query_scalar("SELECT COUNT(*) FROM jobs WHERE state IN ('submitting', 'running')")
            .fetch_value(&self.read)
            .await
    }

    pub async fn count_in(&self, state: JobState) -> anyhow::Result<i64> {
        db::query_scalar("SELECT COUNT(*) FROM jobs WHERE state = ?")
            .bind(state.as_str())
            .fetch_value(&self.read)
            .await
    }

    /// All jobs in manifest order, optionally only those in `state`.
    pub async fn jobs(&self, state: Option<JobState>) -> anyhow::Result<Vec<JobRecord>> {
        let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE (?1 IS NULL OR state = ?1) ORDER BY seq");
        db::query_as(&sql)
            .bind(state.map(JobState::as_str))
            .fetch_all(&self.read)
            .await
    }

    /// A job and its attempts in one query (the downloader's sidecar needs both, per video).
    /// A job's parameters (canonical JSON).
    pub async fn params_of(&self, seq: i64) -> anyhow::Result<Option<String>> {
        db::query_scalar("SELECT params FROM jobs WHERE seq = ?")
            .bind(seq)
            .fetch_maybe(&self.read)
            .await
    }

    pub async fn job_with_attempts(&self, seq: i64) -> anyhow::Result<Option<(JobRecord, Vec<AttemptRecord>)>> {
        // One read transaction: the job and its attempts as of one moment.
        let mut tx = self.read.begin().await?;
        if self.is_pg() {
            db::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                .execute(&mut tx)
                .await?;
        }
        let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE seq = ?");
        let Some(job) = db::query_as::<JobRecord>(sql).bind(seq).fetch_optional(&mut tx).await? else {
            return Ok(None);
        };
        let attempts = db::query_as(
            "SELECT n, started_at, request_id, outcome, detail, finished_at FROM attempts WHERE job_seq = ? ORDER BY n",
        )
        .bind(seq)
        .fetch_all(&mut tx)
        .await?;
        tx.commit().await?;
        Ok(Some((job, attempts)))
    }

    pub async fn attempts_of(&self, seq: i64) -> anyhow::Result<Vec<AttemptRecord>> {
        db::query_as(
            "SELECT n, started_at, request_id, outcome, detail, finished_at FROM attempts WHERE job_seq = ? ORDER BY n",
        )
        .bind(seq)
        .fetch_all(&self.read)
        .await
    }
}
