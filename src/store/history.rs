//! What Segmind's request history settled, recorded: lost submits found (and adopted) or proven
//! never created, expired results recovered, every request billed for a job (`charges`), and
//! `reconcile`'s exact figures. Each change is one guarded write, like every transition.

use std::collections::HashSet;

use sqlx::FromRow;

use super::db;

use crate::sql_args;

use super::door::{AttemptKey, Guard, Transition};
use super::{now_ms, JobRow, Store};
use crate::state::{AttemptOutcome, JobState::*};

/// What the request history settled over the campaign, for `status`.
#[derive(Debug, Clone, Default, PartialEq, FromRow, serde::Serialize)]
pub struct HistoryTally {
    /// Lost submits found in the history (adopted), proven never created, not provable.
    pub adopted: i64,
    pub absent: i64,
    pub unprovable: i64,
    /// Expired results recovered from the history (downloaded, not bought again).
    pub recovered: i64,
    /// Requests found billed beside an adopted one.
    pub billed_duplicates: i64,
    /// `reconcile`: jobs reconciled, their true cost, their double charges, and when.
    pub reconciled_jobs: i64,
    pub true_cost: f64,
    pub double_charges: i64,
    pub reconciled_at: Option<i64>,
}

/// A job whose submit answer was lost, with its lost attempt.
#[derive(Clone, Debug, FromRow)]
pub struct UnknownWork {
    pub seq: i64,
    pub id: String,
    pub params: String,
    pub attempt: i64,
    /// When the intent was written (before the POST) and when its answer was given up on.
    pub started_at: i64,
    pub finished_at: Option<i64>,
    /// Paid resubmits so far (see `SubmitWork::resubmits`).
    pub resubmits: i64,
}

/// A request Segmind's history holds for a job.
#[derive(Clone, Debug, PartialEq)]
pub struct Charge {
    pub request_id: String,
    pub job_seq: i64,
    pub status: Option<String>,
    pub credits: Option<f64>,
    pub created_at: Option<i64>,
    pub generation_url: Option<String>,
    /// `attempt` (one of the job's own), `adopted` (a lost submit found), `duplicate` (billed
    /// beside an adopted one), `found` (matched by its body by `reconcile`).
    pub how: &'static str,
}

impl Store {
    /// Every job held as `unknown`, with its lost attempt.
    pub async fn unknown_work(&self) -> anyhow::Result<Vec<UnknownWork>> {
        db::query_as(
            "SELECT j.seq, j.id, j.params, a.n AS attempt, a.started_at, a.finished_at,
                    j.resubmits_expired + j.resubmits_unknown AS resubmits
             FROM jobs j JOIN attempts a ON a.job_seq = j.seq AND a.n = j.attempts
             WHERE j.state = ? AND (? IS NULL OR j.lease_owner = ?) ORDER BY j.seq",
        )
        .bind(Unknown.as_str())
        .bind(self.owner())
        .bind(self.owner())
        .fetch_all(&self.read)
        .await
    }

    /// Request ids among `ids` that some job already owns (an attempt or a recorded charge): a
    /// request found in the history is adopted by one job only.
    pub async fn known_request_ids(&self, ids: &[String]) -> anyhow::Result<HashSet<String>> {
        let mut known = HashSet::new();
        for id in ids {
            let hit: Option<i64> = db::query_scalar(
                "SELECT CAST(1 AS BIGINT) FROM attempts WHERE request_id = ?1\n                 UNION SELECT CAST(1 AS BIGINT) FROM charges WHERE request_id = ?1",
            )
            .bind(id)
            .fetch_maybe(&self.read)
            .await?;
            if hit.is_some() {
                known.insert(id.clone());
            }
        }
        Ok(known)
    }

    /// unknown → running: the lost submit was found in the history (its request is `adopted`;
    /// any others billed for the same submit are `duplicates`). The request id is durable from
    /// here on, and the job is polled as if its answer had arrived.
    #[allow(clippy::too_many_arguments)]
    pub async fn adopt_request(
        &self,
        seq: i64,
        attempt: i64,
        adopted: &Charge,
        status_url: &str,
        response_url: &str,
        submitted_at: i64,
        duplicates: &[Charge],
    ) -> anyhow::Result<Option<JobRow>> {
        let rid = adopted.request_id.as_str();
        let t = Transition::new(seq, &[Unknown], Running, Guard::Attempt(attempt))
            .set(
                "request_id = ?, status_url = ?, response_url = ?, submitted_at = ?, due_at = ?,
                 last_pending_at = NULL, attempt_polls = 0, errors_in_row = 0, output_url = NULL,
                 output_size = NULL, completed_at = NULL, error = NULL, unknown_adopted = unknown_adopted + 1,
                 billed_duplicates = billed_duplicates + ?",
                sql_args![
                    rid,
                    status_url,
                    response_url,
                    submitted_at,
                    now_ms(),
                    duplicates.len() as i64
                ],
            )
            .attempt(
                AttemptKey::N(attempt),
                AttemptOutcome::Accepted,
                Some("found in the request history".into()),
            )
            .attempt_request(rid);
        let row = self.transition(t).await?;
        if row.is_some() {
            self.record_charges(&[adopted.clone()]).await?;
            self.record_charges(duplicates).await?;
        }
        Ok(row)
    }

    /// unknown → pending: the history is complete past the lost submit's time and holds no such
    /// request — it was never created, so submitting again costs nothing twice.
    pub async fn proven_absent(&self, seq: i64) -> anyhow::Result<Option<JobRow>> {
        let t = Transition::new(seq, &[Unknown], Pending, Guard::State)
            .set("unknown_absent = unknown_absent + 1, due_at = 0", sql_args![]);
        self.transition(t).await
    }

    /// The history could not answer for a lost submit: counted as not provable (the job then
    /// follows `--on-unknown`).
    pub async fn unprovable(&self, seq: i64) -> anyhow::Result<Option<JobRow>> {
        let t = Transition::new(seq, &[Unknown], Unknown, Guard::State)
            .set("unknown_unprovable = unknown_unprovable + 1", sql_args![]);
        self.transition(t).await
    }

    /// running → downloading: the record expired, but the history still had the result's URL.
    pub async fn recovered_from_history(
        &self,
        seq: i64,
        request_id: &str,
        url: &str,
        cost: Option<f64>,
    ) -> anyhow::Result<Option<JobRow>> {
        let t = Transition::new(seq, &[Running], Downloading, Guard::Request(request_id))
            .set(
                "output_url = ?, output_size = NULL, cost = COALESCE(?, cost), completed_at = ?, polls = polls + 1,
                 due_at = 0, errors_in_row = 0, history_recovered = history_recovered + 1",
                sql_args![url, cost, now_ms()],
            )
            .attempt(
                AttemptKey::Request(request_id),
                AttemptOutcome::Completed,
                Some("recovered from the request history".into()),
            );
        self.transition(t).await
    }

    /// Records requests the history holds (a request already recorded keeps its first `how`).
    pub async fn record_charges(&self, charges: &[Charge]) -> anyhow::Result<()> {
        for c in charges {
            self.exec(
                "INSERT INTO charges (request_id, job_seq, status, credits, created_at, generation_url, how, seen_at)
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                     ON CONFLICT(request_id) DO UPDATE SET status = excluded.status, credits = excluded.credits,
                         created_at = COALESCE(excluded.created_at, charges.created_at),
                         generation_url = COALESCE(excluded.generation_url, charges.generation_url),
                         seen_at = excluded.seen_at",
                sql_args![
                    c.request_id.clone(),
                    c.job_seq,
                    c.status.clone(),
                    c.credits,
                    c.created_at,
                    c.generation_url.clone(),
                    c.how,
                    now_ms()
                ],
            )
            .await?;
        }
        Ok(())
    }

    /// `reconcile`'s figures for a job: what Segmind billed for it in all, and how many of its
    /// requests were billed beyond the one that made its video.
    pub async fn set_reconciled(&self, seq: i64, true_cost: f64, double_charges: i64) -> anyhow::Result<()> {
        self.exec(
            "UPDATE jobs SET true_cost = ?, double_charges = ?, reconciled_at = ? WHERE seq = ?",
            sql_args![true_cost, double_charges, now_ms(), seq],
        )
        .await?;
        Ok(())
    }

    /// The recorded charges of a job.
    pub async fn charges_of(&self, seq: i64) -> anyhow::Result<Vec<(String, Option<String>, Option<f64>, String)>> {
        db::query_as(
            "SELECT request_id, status, credits, how FROM charges WHERE job_seq = ? ORDER BY created_at, request_id",
        )
        .bind(seq)
        .fetch_all(&self.read)
        .await
    }

    /// When the campaign's first submit was intended, and its last answered (epoch ms).
    pub async fn attempt_span(&self) -> anyhow::Result<Option<(i64, i64)>> {
        let span: (Option<i64>, Option<i64>) =
            db::query_as("SELECT MIN(started_at), MAX(COALESCE(finished_at, started_at)) FROM attempts")
                .fetch_one(&self.read)
                .await?;
        Ok(span.0.zip(span.1))
    }

    /// The job of every attempt's request id.
    pub async fn attempt_owners(&self) -> anyhow::Result<std::collections::HashMap<String, i64>> {
        let rows: Vec<(String, i64)> =
            db::query_as("SELECT request_id, job_seq FROM attempts WHERE request_id IS NOT NULL")
                .fetch_all(&self.read)
                .await?;
        Ok(rows.into_iter().collect())
    }

    /// The parameters of every job ever submitted, in manifest order.
    pub async fn submitted_params(&self) -> anyhow::Result<Vec<(i64, String)>> {
        db::query_as("SELECT seq, params FROM jobs WHERE attempts > 0 ORDER BY seq")
            .fetch_all(&self.read)
            .await
    }

    /// The ids of these jobs.
    pub async fn ids_of(&self, seqs: &[i64]) -> anyhow::Result<std::collections::HashMap<i64, String>> {
        let mut ids = std::collections::HashMap::new();
        for seq in seqs {
            if let Some(id) = db::query_scalar::<String>("SELECT id FROM jobs WHERE seq = ?")
                .bind(seq)
                .fetch_maybe(&self.read)
                .await?
            {
                ids.insert(*seq, id);
            }
        }
        Ok(ids)
    }

    /// What the history settled, summed over the few jobs it settled something for.
    pub async fn history_tally(&self) -> anyhow::Result<HistoryTally> {
        db::query_as(
            "SELECT CAST(COALESCE(SUM(unknown_adopted), 0) AS BIGINT) AS adopted, CAST(COALESCE(SUM(unknown_absent), 0) AS BIGINT) AS absent,
                    CAST(COALESCE(SUM(unknown_unprovable), 0) AS BIGINT) AS unprovable, CAST(COALESCE(SUM(history_recovered), 0) AS BIGINT) AS recovered,
                    CAST(COALESCE(SUM(billed_duplicates), 0) AS BIGINT) AS billed_duplicates, COUNT(reconciled_at) AS reconciled_jobs,
                    COALESCE(SUM(true_cost), 0.0) AS true_cost, CAST(COALESCE(SUM(double_charges), 0) AS BIGINT) AS double_charges,
                    MAX(reconciled_at) AS reconciled_at
             FROM jobs INDEXED BY jobs_history
             WHERE unknown_adopted + unknown_absent + unknown_unprovable + history_recovered + billed_duplicates > 0
                OR reconciled_at IS NOT NULL",
        )
        .fetch_one(&self.read)
        .await
    }
}
