//! Every job in manifest order, a page at a time, from one read snapshot.

use super::db;
use super::{AttemptRecord, JobRecord, Store, JOB_COLUMNS};
use crate::state::JobState;

/// Jobs in manifest order, a page at a time, each with its attempts, all from one read snapshot
/// (a read transaction in WAL: it never blocks a writer). Memory: one page.
pub struct JobPages {
    tx: db::Tx,
    state: Option<&'static str>,
    after: i64,
    with_attempts: bool,
}

impl Store {
    pub async fn job_pages(&self, state: Option<JobState>, with_attempts: bool) -> anyhow::Result<JobPages> {
        let mut tx = self.read.begin().await?;
        if self.is_pg() {
            // One snapshot for every page, as SQLite's read transaction gives.
            db::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                .execute(&mut tx)
                .await?;
            // Pages are read as the reader takes them (an export into a slow pipe): this read-only
            // transaction may sit idle for long, which the store's sessions otherwise forbid.
            db::query("SET LOCAL idle_in_transaction_session_timeout = 0")
                .execute(&mut tx)
                .await?;
        }
        Ok(JobPages {
            tx,
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
        let jobs: Vec<JobRecord> = db::query_as(&sql)
            .bind(self.after)
            .bind(self.state)
            .bind(limit)
            .fetch_all(&mut self.tx)
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
            let rows: Vec<Row> = db::query_as(
                "SELECT a.job_seq, a.n, a.started_at, a.request_id, a.outcome, a.detail, a.finished_at
                 FROM attempts a JOIN jobs j ON j.seq = a.job_seq
                 WHERE j.seq BETWEEN ?1 AND ?2 AND (?3 IS NULL OR j.state = ?3) ORDER BY a.job_seq, a.n",
            )
            .bind(first)
            .bind(last)
            .bind(self.state)
            .fetch_all(&mut self.tx)
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
