//! Read-only queries for `wanbatch report` and the provenance sidecars. Everything here is
//! streamable or aggregated in SQL: a report over a million jobs pages through them by `seq`
//! and never holds more than one page, and the summary is a handful of `GROUP BY`s.

use sqlx::FromRow;

use super::jobs::JOB_COLUMNS;
use super::{JobRecord, Store};
use crate::state::JobState;

/// Campaign-wide figures for the report's summary.
#[derive(Debug, Clone, Default, FromRow)]
pub struct Totals {
    pub jobs: i64,
    /// Submit attempts started (each one may be billed).
    pub attempts: i64,
    /// Sum of the API-reported `metrics.cost`, over `priced_jobs` jobs.
    pub spent: f64,
    pub priced_jobs: i64,
    pub resubmits_unknown: i64,
    pub resubmits_expired: i64,
    pub resubmits_failed: i64,
    pub maybe_billed_twice: i64,
    /// Bytes of video on disk (done jobs).
    pub bytes: i64,
}

/// Job durations (completed_at − submitted_at of the current attempt) in equal-width buckets.
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    /// Lower edge of the first bucket, ms.
    pub min_ms: i64,
    pub max_ms: i64,
    pub mean_ms: f64,
    /// Width of each bucket, ms (≥ 1).
    pub width_ms: i64,
    /// Jobs per bucket; the last bucket includes `max_ms`.
    pub counts: Vec<i64>,
}

/// The duration of a finished attempt, as SQL over `jobs`.
const DURATION: &str = "completed_at - submitted_at";
const HAS_DURATION: &str = "completed_at IS NOT NULL AND submitted_at IS NOT NULL AND completed_at >= submitted_at";

impl Store {
    /// One job by its manifest position.
    pub async fn job(&self, seq: i64) -> anyhow::Result<Option<JobRecord>> {
        let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE seq = ?");
        Ok(sqlx::query_as(&sql).bind(seq).fetch_optional(&self.read).await?)
    }

    /// Up to `limit` jobs after `after_seq` in manifest order, optionally only those in `state`:
    /// a keyset page, so paging through a million jobs costs one index range scan per page.
    pub async fn jobs_after(
        &self,
        after_seq: i64,
        state: Option<JobState>,
        limit: i64,
    ) -> anyhow::Result<Vec<JobRecord>> {
        let sql = format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE seq > ?1 AND (?2 IS NULL OR state = ?2) ORDER BY seq LIMIT ?3"
        );
        Ok(sqlx::query_as(&sql)
            .bind(after_seq)
            .bind(state.map(JobState::as_str))
            .bind(limit)
            .fetch_all(&self.read)
            .await?)
    }

    pub async fn totals(&self) -> anyhow::Result<Totals> {
        Ok(sqlx::query_as(
            "SELECT COUNT(*) AS jobs, COALESCE(SUM(attempts), 0) AS attempts, COALESCE(SUM(cost), 0.0) AS spent,
                    COUNT(cost) AS priced_jobs, COALESCE(SUM(resubmits_unknown), 0) AS resubmits_unknown,
                    COALESCE(SUM(resubmits_expired), 0) AS resubmits_expired,
                    COALESCE(SUM(resubmits_failed), 0) AS resubmits_failed,
                    COALESCE(SUM(maybe_billed_twice != 0), 0) AS maybe_billed_twice,
                    COALESCE(SUM(CASE WHEN state = 'done' THEN bytes END), 0) AS bytes
             FROM jobs",
        )
        .fetch_one(&self.read)
        .await?)
    }

    /// Durations of every finished attempt in `buckets` equal buckets; None if none finished.
    pub async fn duration_histogram(&self, buckets: i64) -> anyhow::Result<Option<Histogram>> {
        let buckets = buckets.max(1);
        let range: (Option<i64>, Option<i64>, Option<f64>) = sqlx::query_as(&format!(
            "SELECT MIN({DURATION}), MAX({DURATION}), AVG({DURATION}) FROM jobs WHERE {HAS_DURATION}"
        ))
        .fetch_one(&self.read)
        .await?;
        let (Some(min_ms), Some(max_ms), Some(mean_ms)) = range else {
            return Ok(None);
        };
        let width_ms = ((max_ms - min_ms) / buckets + 1).max(1);
        let rows: Vec<(i64, i64)> = sqlx::query_as(&format!(
            "SELECT MIN(({DURATION} - ?1) / ?2, ?3) AS b, COUNT(*) FROM jobs WHERE {HAS_DURATION} GROUP BY b"
        ))
        .bind(min_ms)
        .bind(width_ms)
        .bind(buckets - 1)
        .fetch_all(&self.read)
        .await?;
        let mut counts = vec![0; buckets as usize];
        for (b, n) in rows {
            counts[b.clamp(0, buckets - 1) as usize] += n;
        }
        Ok(Some(Histogram {
            min_ms,
            max_ms,
            mean_ms,
            width_ms,
            counts,
        }))
    }
}
