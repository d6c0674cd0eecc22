//! Sums over the jobs: money spent and committed, what `status` shows.

use sqlx::FromRow;

use super::db;

use super::{now_ms, Store};
use crate::state::JobState;

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
    /// … videos made again because a reviewer rejected the earlier take (`retry --rejected`;
    /// the earlier take's reported cost was cleared with it)…
    pub rejected_attempts: i64,
    /// … and lost-answer submits that may have created a job (an upper bound until reconciled):
    /// those submitted again, and the last of a job failed with its answer lost.
    pub maybe_attempts: i64,
}

impl CostSummary {
    /// Attempts that are (or may be) billed but whose cost is not reported.
    pub fn unpriced(&self) -> i64 {
        self.unpriced_videos + self.at_segmind + self.expired_attempts + self.rejected_attempts + self.maybe_attempts
    }
}

impl Store {
    pub async fn cost_summary(&self) -> anyhow::Result<CostSummary> {
        db::query_as(
            "SELECT COALESCE(SUM(cost), 0.0) AS reported, COUNT(cost) AS reported_jobs,
                    COALESCE(SUM(CASE WHEN cost IS NULL AND state IN ('downloading', 'done') THEN 1 ELSE 0 END), 0) AS unpriced_videos,
                    COALESCE(SUM(CASE WHEN state IN ('submitting', 'running') THEN 1 ELSE 0 END), 0) AS at_segmind,
                    CAST(COALESCE(SUM(resubmits_expired), 0) AS BIGINT) AS expired_attempts,
                    CAST(COALESCE(SUM(resubmits_rejected), 0) AS BIGINT) AS rejected_attempts,
                    CAST(COALESCE(SUM(resubmits_unknown), 0) AS BIGINT)
                      + COALESCE(SUM(CASE WHEN state = 'failed' AND request_id IS NULL AND maybe_billed_twice <> 0 THEN 1 ELSE 0 END), 0)
                      AS maybe_attempts
             FROM jobs",
        )
        .fetch_one(&self.read)
        .await
    }

    /// Jobs submitted and not yet finished at Segmind, and when the oldest was accepted: their
    /// request records expire an hour after submission, so they must be collected before then.
    pub async fn submitted_unfinished(&self) -> anyhow::Result<(i64, Option<i64>)> {
        db::query_as(
            "SELECT COUNT(*), MIN(submitted_at) FROM jobs INDEXED BY jobs_state_seq
             WHERE state IN ('submitting', 'running')",
        )
        .fetch_one(&self.read)
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
        db::query(
            "UPDATE jobs SET state = 'done', attempts = 1, cost = 0.05, request_id = 'bench-' || seq,
                    submitted_at = ?1 - 700000, completed_at = ?1 - seq % 600000, downloaded_at = ?1 - seq % 600000,
                    output_path = 'out/' || id || '.mp4', bytes = 1000000, updated_at = ?1
             WHERE seq % ?2 < ?3",
        )
        .bind(now)
        .bind(den)
        .bind(num)
        .execute(&mut tx)
        .await?;
        db::query(
            "INSERT INTO attempts (job_seq, n, started_at, request_id, outcome, finished_at)
             SELECT seq, 1, submitted_at, request_id, 'completed', completed_at FROM jobs WHERE state = 'done'",
        )
        .execute(&mut tx)
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
        let rows: Vec<StateTally> = db::query_as(
            "SELECT state, COUNT(*) AS jobs, CAST(SUM(attempts) AS BIGINT) AS attempts, CAST(SUM(resubmits_unknown) AS BIGINT) AS unknown,
                    CAST(SUM(resubmits_expired) AS BIGINT) AS expired, CAST(SUM(resubmits_failed) AS BIGINT) AS failed,
                    SUM(CASE WHEN maybe_billed_twice <> 0 THEN 1 ELSE 0 END) AS twice, COALESCE(SUM(cost), 0.0) AS cost, COUNT(cost) AS cost_jobs,
                    SUM(CASE WHEN completed_at >= ?1 THEN 1 ELSE 0 END) AS recent, MIN(CASE WHEN completed_at >= ?1 THEN completed_at END) AS first_recent
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
        db::query_as(
            "SELECT id, state, created_at FROM jobs
             WHERE seq = (SELECT MIN(m) FROM (
                 SELECT (SELECT MIN(seq) FROM jobs INDEXED BY jobs_state_seq WHERE state = s.state) AS m
                 FROM (SELECT 'pending' AS state UNION ALL SELECT 'submitting' UNION ALL SELECT 'unknown'
                       UNION ALL SELECT 'running' UNION ALL SELECT 'downloading') AS s) AS firsts)",
        )
        .fetch_optional(&self.read)
        .await
    }

    /// Ids of the first `limit` jobs that may have been billed twice, in manifest order.
    pub async fn maybe_billed_twice(&self, limit: i64) -> anyhow::Result<Vec<String>> {
        db::query_scalar(
            "SELECT id FROM jobs INDEXED BY jobs_billed_twice WHERE maybe_billed_twice <> 0 ORDER BY seq LIMIT ?",
        )
        .bind(limit)
        .fetch_column(&self.read)
        .await
    }
}
