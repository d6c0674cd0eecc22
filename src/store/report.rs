//! Read-only queries for `wanbatch report` and the provenance sidecars. Everything here is
//! streamable or aggregated in SQL: a report over a million jobs pages through them by `seq`
//! and never holds more than one page, and the summary is a handful of `GROUP BY`s.

use sqlx::FromRow;

use super::db;

use super::records::JOB_COLUMNS;
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
        db::query_as(&sql).bind(seq).fetch_optional(&self.read).await
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
        db::query_as(&sql)
            .bind(after_seq)
            .bind(state.map(JobState::as_str))
            .bind(limit)
            .fetch_all(&self.read)
            .await
    }

    pub async fn totals(&self) -> anyhow::Result<Totals> {
        db::query_as(
            "SELECT COUNT(*) AS jobs, CAST(COALESCE(SUM(attempts), 0) AS BIGINT) AS attempts, COALESCE(SUM(cost), 0.0) AS spent,
                    COUNT(cost) AS priced_jobs, CAST(COALESCE(SUM(resubmits_unknown), 0) AS BIGINT) AS resubmits_unknown,
                    CAST(COALESCE(SUM(resubmits_expired), 0) AS BIGINT) AS resubmits_expired,
                    CAST(COALESCE(SUM(resubmits_failed), 0) AS BIGINT) AS resubmits_failed,
                    COALESCE(SUM(CASE WHEN maybe_billed_twice <> 0 THEN 1 ELSE 0 END), 0) AS maybe_billed_twice,
                    CAST(COALESCE(SUM(CASE WHEN state = 'done' THEN bytes END), 0) AS BIGINT) AS bytes
             FROM jobs",
        )
        .fetch_one(&self.read)
        .await
    }

    /// Durations of every finished attempt in `buckets` equal buckets; None if none finished.
    pub async fn duration_histogram(&self, buckets: i64) -> anyhow::Result<Option<Histogram>> {
        let buckets = buckets.max(1);
        let range: (Option<i64>, Option<i64>, Option<f64>) = db::query_as(format!(
            "SELECT MIN({DURATION}), MAX({DURATION}), CAST(AVG({DURATION}) AS DOUBLE PRECISION) FROM jobs WHERE {HAS_DURATION}"
        ))
        .fetch_one(&self.read)
        .await?;
        let (Some(min_ms), Some(max_ms), Some(mean_ms)) = range else {
            return Ok(None);
        };
        let width_ms = ((max_ms - min_ms) / buckets + 1).max(1);
        let rows: Vec<(i64, i64)> = db::query_as(format!(
            "SELECT CASE WHEN ({DURATION} - ?1) / ?2 < ?3 THEN ({DURATION} - ?1) / ?2 ELSE ?3 END AS b, COUNT(*) FROM jobs WHERE {HAS_DURATION} GROUP BY b"
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest;

    /// A store of `n` imported jobs `j0..`; job k (1-based seq) finished in `durations[k-1]` ms
    /// where given, with cost 0.5 for each finished one.
    async fn store_with(n: usize, durations: &[Option<i64>]) -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("m.csv");
        let mut text = String::from("id,image,prompt\n");
        for i in 0..n {
            text.push_str(&format!("j{i},https://i.example/{i}.png,p{i}\n"));
        }
        std::fs::write(&csv, text).unwrap();
        let mut rows = Vec::new();
        assert!(manifest::read_files(&[csv], |r| rows.push(r)).is_empty());
        let store = Store::open(&dir.path().join("t.db")).await.unwrap();
        store.import(&rows).await.unwrap().unwrap();
        for (i, d) in durations.iter().enumerate() {
            if let Some(d) = d {
                db::query(
                    "UPDATE jobs SET state = 'done', submitted_at = 1000, completed_at = 1000 + ?, cost = 0.5,
                         bytes = 100, attempts = 1 WHERE seq = ?",
                )
                .bind(d)
                .bind(i as i64 + 1)
                .execute(&store.write)
                .await
                .unwrap();
            }
        }
        (dir, store)
    }

    #[tokio::test]
    async fn pages_walk_every_job_once_in_manifest_order() {
        let (_dir, store) = store_with(7, &[Some(5), None, Some(9)]).await;
        let mut seen = Vec::new();
        let mut after = 0;
        loop {
            let page = store.jobs_after(after, None, 3).await.unwrap();
            let Some(last) = page.last() else { break };
            after = last.seq;
            seen.extend(page.into_iter().map(|j| j.id));
        }
        assert_eq!(seen, ["j0", "j1", "j2", "j3", "j4", "j5", "j6"]);
        let done: Vec<String> = store
            .jobs_after(0, Some(JobState::Done), 10)
            .await
            .unwrap()
            .into_iter()
            .map(|j| j.id)
            .collect();
        assert_eq!(done, ["j0", "j2"]);
    }

    #[tokio::test]
    async fn totals_and_histogram_are_aggregated_in_sql() {
        let (_dir, store) = store_with(5, &[Some(1000), Some(1500), Some(3000), Some(3999)]).await;
        let t = store.totals().await.unwrap();
        assert_eq!((t.jobs, t.attempts, t.priced_jobs, t.bytes), (5, 4, 4, 400));
        assert!((t.spent - 2.0).abs() < 1e-9);
        let h = store.duration_histogram(3).await.unwrap().unwrap();
        // Range 1000..=3999 in 3 buckets of 1000 ms.
        assert_eq!((h.min_ms, h.max_ms, h.width_ms), (1000, 3999, 1000));
        assert_eq!(h.counts, [2, 0, 2]);
        assert!((h.mean_ms - 2374.75).abs() < 1e-9);
        // One duration only: one bucket holds it.
        let (_d, one) = store_with(2, &[Some(700)]).await;
        assert_eq!(one.duration_histogram(4).await.unwrap().unwrap().counts, [1, 0, 0, 0]);
        let (_e, none) = store_with(2, &[]).await;
        assert_eq!(none.duration_histogram(4).await.unwrap(), None);
    }
}
