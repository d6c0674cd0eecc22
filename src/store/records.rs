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
