//! Configuration of the fake: [`FakeConfig`] and the small enums that switch between the
//! behaviours the real service might show (how FAILED and pending results arrive, the
//! request-history shapes, the upload answer). Every default keeps the fake's historical
//! behaviour, so `..FakeConfig::default()` users see no change. The server keeps a live copy
//! that `FakeServer::update_config` and the named setters may change at run time.

use std::time::Duration;

/// Whether a 429 also carries a `Retry-After` header, and in which form.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum RetryAfterMode {
    /// Only `x-rate-limit-reset-at-utc` (like the real API, as far as known).
    #[default]
    None,
    /// `Retry-After: <whole seconds, rounded up>`.
    Seconds,
    /// `Retry-After: <HTTP date>`.
    HttpDate,
}

/// What the result endpoint (`GET /v2/requests/{id}`) answers while a job is QUEUED/PROCESSING.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ResultPending {
    /// 200 with `{"status":"QUEUED"|"PROCESSING", …}` (the status endpoint's body).
    #[default]
    #[value(name = "200")]
    Ok200,
    /// 404 `{"error":"Request … not found"}`: results are served only once the job ended.
    #[value(name = "404")]
    NotFound404,
}

/// What every request-history call answers (after the key and rate checks).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum HistoryMode {
    #[default]
    Ok,
    /// 500 on every history call.
    Down,
    /// 401 even with a valid key.
    Unauthorized,
    /// 403 even with a valid key.
    Forbidden,
    /// 200 with a shape no client knows: `{"foo": 1}`.
    Garbage,
}

/// Where the rows of a history list sit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum HistoryEnvelope {
    /// `{"data": [...], <pagination>}`
    #[default]
    Data,
    /// `{"rows": [...], <pagination>}`
    Rows,
    /// `{"items": [...], <pagination>}`
    Items,
    /// `{"results": [...], <pagination>}`
    Results,
    /// A top-level array (no pagination fields).
    List,
}

/// Which fields of a history list carry the pagination (never present for a top-level list).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum HistoryPagination {
    /// `"page", "per_page", "total"` beside the rows.
    #[default]
    Flat,
    /// `"pagination": {"page", "per_page", "total", "total_pages"}` beside the rows.
    Nested,
    /// No pagination fields at all.
    None,
}

/// The name of a history row's creation timestamp.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum HistoryTimeField {
    #[default]
    #[value(name = "model_created")]
    ModelCreated,
    #[value(name = "created_at")]
    CreatedAt,
}

/// The name of a history row's status (`PENDING`, `COMPLETED`, `FAILED`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum HistoryStatusField {
    #[default]
    #[value(name = "model_status")]
    ModelStatus,
    #[value(name = "status")]
    Status,
}

/// How history timestamps are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum HistoryTimeFormat {
    /// RFC 3339 UTC with milliseconds: `2026-11-22T01:20:00.123Z`.
    #[default]
    Rfc3339,
    /// Integer milliseconds since the Unix epoch.
    EpochMs,
}

/// The shape of a by-id history answer (`GET …/request-history/{id}`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum HistoryByIdShape {
    /// The row object itself (its first row when the request has several outputs).
    #[default]
    Bare,
    /// `{"data": row}`.
    Data,
    /// `[row, …]`: one element per output, as in the list.
    List,
}

/// The name of the URL list in an upload answer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum UploadField {
    /// `file_urls` (the SDK's reading).
    #[default]
    #[value(name = "file_urls")]
    FileUrls,
    /// `urls` (the docs page's name).
    #[value(name = "urls")]
    Urls,
}

/// Configuration of a `FakeServer`.
///
/// Keys: index 0 is `api_key`, index `i` is `extra_keys[i - 1]`. Each key is its own account:
/// its own rate window and limit, its own request history. Credits stay one shared pool, and
/// the v2 status/result endpoints answer any valid key (as before).
#[derive(Clone, Debug)]
pub struct FakeConfig {
    /// The first valid key (index 0).
    pub api_key: String,
    /// More valid keys (indexes 1, 2, …), each its own account.
    pub extra_keys: Vec<String>,
    /// Time QUEUED after submit.
    pub queue: Duration,
    /// Then PROCESSING for this long (for an 81-frame job when `run_by_frames`).
    pub run: Duration,
    /// Scale each job's `run` by `num_frames / 81` (100 frames run ~23 % longer).
    pub run_by_frames: bool,
    /// ± fraction applied per job to queue+run (0.0 = exact).
    pub jitter: f64,
    /// Request record lifetime after submit (real: 1 h). History by id outlives it.
    pub result_lifetime: Duration,
    /// How long after submit the CDN still serves a video; None = forever (real: 7 days).
    pub file_lifetime: Option<Duration>,
    /// Max admitted API requests per `rate_window`, counted per key; None = unlimited.
    pub rate_limit: Option<u32>,
    /// Per-key limits by key index, overriding `rate_limit` (keys beyond the end use it).
    pub key_rate_limits: Vec<Option<u32>>,
    /// The sliding window the rate limit counts over.
    pub rate_window: Duration,
    /// Whether a 429 also carries `Retry-After`.
    pub retry_after: RetryAfterMode,
    /// History and upload calls count in (and are limited by) their key's window.
    pub history_counts_against_rate: bool,
    /// Number of submits accepted before answering 406 (one pool for all keys); None = unlimited.
    pub credits: Option<u64>,
    /// Reported in `metrics.cost` and as a COMPLETED request's `credits_deduction`.
    pub cost_per_video: f64,
    /// Bytes of each generated video.
    pub video_len: usize,
    /// Answer 403 to every v2 request (model not allowed); history and upload are unaffected.
    pub forbidden: bool,
    /// CDN honours Range requests.
    pub range_support: bool,
    /// Result endpoint for a pending job: 200 with its status (default) or 404.
    pub result_pending: ResultPending,
    /// HTTP status of a FAILED status/result answer (the body says FAILED either way).
    pub failed_status: u16,
    /// A new request appears in the history LIST only this long after its creation (by id:
    /// at once). Default 0; the real lag is unknown.
    pub history_lag: Duration,
    /// What every history call answers: rows, or one of the failures.
    pub history_mode: HistoryMode,
    /// Where the list's rows sit (`data` …, or a top-level array).
    pub history_envelope: HistoryEnvelope,
    /// Which fields beside the rows carry page, per_page and total.
    pub history_pagination: HistoryPagination,
    /// `model_created` or `created_at`.
    pub history_time_field: HistoryTimeField,
    /// `model_status` or `status`.
    pub history_status_field: HistoryStatusField,
    /// RFC 3339 with millis (UTC) or epoch milliseconds.
    pub history_time_format: HistoryTimeFormat,
    /// The by-id answer: the row, `{"data": row}`, or one element per output.
    pub history_by_id: HistoryByIdShape,
    /// Some(n): every n-th request (n-th, 2n-th, … in creation order, all keys) has two
    /// outputs once COMPLETED, so it appears as two identical rows, each with the full cost.
    pub duplicate_rows: Option<u32>,
    /// `file_urls` or `urls` in the upload answer.
    pub upload_field: UploadField,
    /// Largest accepted upload body (413 beyond).
    pub upload_max_bytes: usize,
}

impl Default for FakeConfig {
    fn default() -> Self {
        FakeConfig {
            api_key: "fake-key".to_string(),
            extra_keys: Vec::new(),
            queue: Duration::from_millis(200),
            run: Duration::from_millis(800),
            run_by_frames: false,
            jitter: 0.0,
            result_lifetime: Duration::from_secs(3600),
            file_lifetime: None,
            rate_limit: None,
            key_rate_limits: Vec::new(),
            rate_window: Duration::from_secs(60),
            retry_after: RetryAfterMode::None,
            history_counts_against_rate: true,
            credits: None,
            cost_per_video: 0.05,
            video_len: 64 * 1024,
            forbidden: false,
            range_support: true,
            result_pending: ResultPending::Ok200,
            failed_status: 422,
            history_lag: Duration::ZERO,
            history_mode: HistoryMode::Ok,
            history_envelope: HistoryEnvelope::Data,
            history_pagination: HistoryPagination::Flat,
            history_time_field: HistoryTimeField::ModelCreated,
            history_status_field: HistoryStatusField::ModelStatus,
            history_time_format: HistoryTimeFormat::Rfc3339,
            history_by_id: HistoryByIdShape::Bare,
            duplicate_rows: None,
            upload_field: UploadField::FileUrls,
            upload_max_bytes: 64 * 1024 * 1024,
        }
    }
}

impl FakeConfig {
    /// The index of `key` among the valid keys.
    pub fn key_index(&self, key: &[u8]) -> Option<usize> {
        std::iter::once(&self.api_key)
            .chain(&self.extra_keys)
            .position(|k| k.as_bytes() == key)
    }

    /// The rate limit of key `index`.
    pub fn limit_of(&self, index: usize) -> Option<u32> {
        self.key_rate_limits.get(index).copied().unwrap_or(self.rate_limit)
    }
}
