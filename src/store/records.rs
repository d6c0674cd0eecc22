//! The records the store hands out: the engine's work items (what each kind of task needs of a
//! job), a job's full record, its attempts.

use sqlx::FromRow;

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

/// The columns a transition returns (the row it wrote), in [`JobRow`]'s order.
pub const WORK_COLUMNS: &str = "seq, id, state, params, request_id, status_url, response_url, submitted_at, \
     last_pending_at, attempt_polls, errors_in_row, attempts, polls, due_at, resubmits_expired + resubmits_unknown, \
     output_url, output_size, completed_at";

/// The row a transition wrote: what the engine's next step for the job is made of.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRow {
    pub seq: i64,
    pub id: String,
    pub state: crate::state::JobState,
    pub params: String,
    pub request_id: Option<String>,
    pub status_url: Option<String>,
    pub response_url: Option<String>,
    pub submitted_at: Option<i64>,
    pub last_pending_at: Option<i64>,
    pub attempt_polls: i64,
    pub errors_in_row: i64,
    pub attempts: i64,
    pub polls: i64,
    pub due_at: i64,
    pub resubmits: i64,
    pub output_url: Option<String>,
    pub output_size: Option<i64>,
    pub completed_at: Option<i64>,
}

impl JobRow {
    /// From the values of a `RETURNING {WORK_COLUMNS}`.
    pub fn from_values(v: &super::sql::Row) -> anyhow::Result<JobRow> {
        use super::sql::{int, text};
        anyhow::ensure!(v.len() == 18, "internal: a work row has {} columns, not 18", v.len());
        let need = |o: Option<i64>, what: &str| o.ok_or_else(|| anyhow::anyhow!("internal: {what} is NULL"));
        let state: String = text(&v[2])?.unwrap_or_default();
        Ok(JobRow {
            seq: need(int(&v[0])?, "seq")?,
            id: text(&v[1])?.unwrap_or_default(),
            state: state.parse().map_err(|e: String| anyhow::anyhow!(e))?,
            params: text(&v[3])?.unwrap_or_default(),
            request_id: text(&v[4])?,
            status_url: text(&v[5])?,
            response_url: text(&v[6])?,
            submitted_at: int(&v[7])?,
            last_pending_at: int(&v[8])?,
            attempt_polls: int(&v[9])?.unwrap_or(0),
            errors_in_row: int(&v[10])?.unwrap_or(0),
            attempts: int(&v[11])?.unwrap_or(0),
            polls: int(&v[12])?.unwrap_or(0),
            due_at: int(&v[13])?.unwrap_or(0),
            resubmits: int(&v[14])?.unwrap_or(0),
            output_url: text(&v[15])?,
            output_size: int(&v[16])?,
            completed_at: int(&v[17])?,
        })
    }

    /// The job, waiting to be submitted.
    pub fn submit_work(&self) -> SubmitWork {
        SubmitWork {
            seq: self.seq,
            id: self.id.clone(),
            params: self.params.clone(),
            polls: self.polls,
            due_at: self.due_at,
            resubmits: self.resubmits,
        }
    }

    /// The job at Segmind, to poll (the engine's own fields — class, route, extra polls — are
    /// the caller's to carry over).
    pub fn poll_work(&self) -> anyhow::Result<PollWork> {
        Ok(PollWork {
            seq: self.seq,
            id: self.id.clone(),
            params: self.params.clone(),
            request_id: self
                .request_id
                .clone()
                .ok_or_else(|| anyhow::anyhow!("internal: a job at Segmind without a request id"))?,
            status_url: self.status_url.clone(),
            response_url: self.response_url.clone(),
            submitted_at: self.submitted_at.unwrap_or(0),
            last_pending_at: self.last_pending_at,
            attempt_polls: self.attempt_polls,
            errors_in_row: self.errors_in_row,
            attempts: self.attempts,
            polls: self.polls,
            due_at: self.due_at,
            resubmits: self.resubmits,
            class: String::new(),
            via_status: false,
            extra_polls: 0,
        })
    }

    /// The job's video, to fetch.
    pub fn download_work(&self) -> anyhow::Result<DownloadWork> {
        Ok(DownloadWork {
            seq: self.seq,
            id: self.id.clone(),
            request_id: self
                .request_id
                .clone()
                .ok_or_else(|| anyhow::anyhow!("internal: a made video without a request id"))?,
            output_url: self
                .output_url
                .clone()
                .ok_or_else(|| anyhow::anyhow!("internal: a made video without its URL"))?,
            output_size: self.output_size,
            errors_in_row: self.errors_in_row,
            completed_at: self.completed_at,
            resubmits: self.resubmits,
        })
    }
}
