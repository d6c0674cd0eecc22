//! Fake Segmind v2 API server (`wan-2.2-i2v-fast`) for tests and local runs.
//!
//! Two listeners on 127.0.0.1: the API (`POST /v2/{slug}`, `GET /v2/requests/{id}[/status]`,
//! plus admin routes under `/_fake/`) and a separate "CDN" serving `/videos/{id}.mp4`.
//! Behaviour follows `shared/API.md`; failure modes are injected with [`Fault`]s.
//! This module depends on nothing else in the crate.

mod api;
mod cdn;
pub mod cli;
mod respond;
mod state;
mod validate;
pub mod video;

#[cfg(test)]
mod tests_api;
#[cfg(test)]
mod tests_cdn;

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use cdn::video_bytes;
pub use respond::rfc3339_millis;
pub use state::JobTimeline;

/// The one model slug the fake knows.
pub const MODEL_SLUG: &str = "wan-2.2-i2v-fast";

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

/// Configuration of a [`FakeServer`].
#[derive(Clone, Debug)]
pub struct FakeConfig {
    /// The one valid key.
    pub api_key: String,
    /// Time QUEUED after submit.
    pub queue: Duration,
    /// Then PROCESSING for this long.
    pub run: Duration,
    /// ± fraction applied per job to queue+run (0.0 = exact).
    pub jitter: f64,
    /// Request record lifetime after submit (real: 1 h).
    pub result_lifetime: Duration,
    /// Max admitted API requests per `rate_window` (all API endpoints together); None = unlimited.
    pub rate_limit: Option<u32>,
    pub rate_window: Duration,
    pub retry_after: RetryAfterMode,
    /// Number of submits accepted before answering 406; None = unlimited.
    pub credits: Option<u64>,
    /// Reported in `metrics.cost`.
    pub cost_per_video: f64,
    /// Bytes of each generated video.
    pub video_len: usize,
    /// Answer 403 to every API request (model not allowed).
    pub forbidden: bool,
    /// CDN honours Range requests.
    pub range_support: bool,
}

impl Default for FakeConfig {
    fn default() -> Self {
        FakeConfig {
            api_key: "fake-key".to_string(),
            queue: Duration::from_millis(200),
            run: Duration::from_millis(800),
            jitter: 0.0,
            result_lifetime: Duration::from_secs(3600),
            rate_limit: None,
            rate_window: Duration::from_secs(60),
            retry_after: RetryAfterMode::None,
            credits: None,
            cost_per_video: 0.05,
            video_len: 64 * 1024,
            forbidden: false,
            range_support: true,
        }
    }
}

/// Snapshot of what the fake has seen.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct FakeStats {
    /// Every submit the fake accepted (created a job, billable).
    pub submits: Vec<SubmitRecord>,
    pub status_polls: u64,
    pub result_polls: u64,
    /// CDN GETs of `/videos/...`.
    pub downloads: u64,
    /// CDN requests that carried `x-api-key` or `Authorization` (must stay 0).
    pub cdn_requests_with_key: u64,
    /// 429s answered.
    pub rate_limited: u64,
    /// Every API request (not CDN, not admin), in arrival order.
    pub api_requests: Vec<RequestLog>,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct SubmitRecord {
    pub request_id: String,
    pub body: serde_json::Value,
    /// Milliseconds since server start.
    pub at_ms: u64,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct RequestLog {
    /// Arrival, milliseconds since server start.
    pub at_ms: u64,
    pub method: String,
    pub path: String,
    /// Status of the answer (the header status for dropped bodies; 0 if the client went away).
    pub status: u16,
    /// The request carried an `x-api-key` header.
    pub had_key: bool,
}

/// An injected failure, applied to the next `count` requests matching `target`.
///
/// JSON form (admin route): `{"target":"Submit","kind":{"Status":502},"count":1}`,
/// `{"target":"Download","kind":"Drop","count":2}`.
#[derive(Clone, Debug, PartialEq, serde::Deserialize, serde::Serialize)]
pub struct Fault {
    pub target: FaultTarget,
    pub kind: FaultKind,
    pub count: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub enum FaultTarget {
    Submit,
    Status,
    Result,
    Download,
    /// Matches Submit, Status and Result.
    AnyApi,
}

impl FaultTarget {
    fn matches(self, actual: FaultTarget) -> bool {
        self == actual || (self == FaultTarget::AnyApi && actual != FaultTarget::Download)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub enum FaultKind {
    /// Answer this status with a small JSON error body; on Submit no job is created.
    Status(u16),
    /// Process normally (on Submit: the job is created), but answer this status instead of 200.
    AcceptThenStatus(u16),
    /// Send headers, then abort the body; nothing is processed (no job on Submit).
    Drop,
    /// Process normally (on Submit: the job is created), then break the connection mid-body.
    AcceptThenDrop,
    /// Answer normally after this many ms.
    Delay(u64),
    /// Send the full Content-Length but abort after this many bytes (at most length-1).
    Truncate(u64),
}

/// A running fake: API and CDN listeners. Stops on [`FakeServer::shutdown`] or on drop.
pub struct FakeServer {
    shared: Arc<state::Shared>,
    token: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl FakeServer {
    /// Starts API and CDN, each on 127.0.0.1 with an OS-chosen port.
    pub async fn start(cfg: FakeConfig) -> anyhow::Result<FakeServer> {
        Self::start_on(cfg, 0, 0).await
    }

    /// Starts API and CDN on the given ports of 127.0.0.1 (0 = any).
    pub async fn start_on(cfg: FakeConfig, api_port: u16, cdn_port: u16) -> anyhow::Result<FakeServer> {
        use anyhow::Context as _;
        let api_l = tokio::net::TcpListener::bind(("127.0.0.1", api_port))
            .await
            .with_context(|| format!("binding fake API on 127.0.0.1:{api_port}"))?;
        let cdn_l = tokio::net::TcpListener::bind(("127.0.0.1", cdn_port))
            .await
            .with_context(|| format!("binding fake CDN on 127.0.0.1:{cdn_port}"))?;
        let api_url = format!("http://{}", api_l.local_addr()?);
        let cdn_url = format!("http://{}", cdn_l.local_addr()?);
        let shared = Arc::new(state::Shared::new(cfg, api_url, cdn_url));
        let token = CancellationToken::new();
        let mut tasks = Vec::new();
        for (listener, router) in [
            (api_l, api::router(shared.clone())),
            (cdn_l, cdn::router(shared.clone())),
        ] {
            let stop = token.clone().cancelled_owned();
            tasks.push(tokio::spawn(async move {
                if let Err(e) = axum::serve(listener, router).with_graceful_shutdown(stop).await {
                    tracing::warn!("fake server listener ended: {e}");
                }
            }));
        }
        Ok(FakeServer { shared, token, tasks })
    }

    /// e.g. `http://127.0.0.1:41234` (no trailing slash): the value for SEGMIND_BASE_URL.
    pub fn api_url(&self) -> String {
        self.shared.api_url.clone()
    }

    /// Base of the separate video listener, e.g. `http://127.0.0.1:41235`.
    pub fn cdn_url(&self) -> String {
        self.shared.cdn_url.clone()
    }

    pub fn stats(&self) -> FakeStats {
        self.shared.lock().stats.clone()
    }

    /// Queues a fault; faults are consumed in order of matching.
    pub fn push_fault(&self, fault: Fault) {
        self.shared.push_fault(fault);
    }

    pub fn clear_faults(&self) {
        self.shared.lock().faults.clear();
    }

    pub fn set_credits(&self, credits: Option<u64>) {
        self.shared.lock().credits = credits;
    }

    pub fn set_rate_limit(&self, limit: Option<u32>) {
        self.shared.lock().rate_limit = limit;
    }

    /// Every job's timeline: submitted, ended, and first reported ended to a client.
    pub fn timelines(&self) -> Vec<JobTimeline> {
        self.shared.timelines()
    }

    pub fn set_forbidden(&self, forbidden: bool) {
        self.shared.lock().forbidden = forbidden;
    }

    /// Stops both listeners (graceful, bounded to 2 s, then aborted).
    pub async fn shutdown(mut self) {
        self.token.cancel();
        for mut task in std::mem::take(&mut self.tasks) {
            if tokio::time::timeout(Duration::from_secs(2), &mut task).await.is_err() {
                task.abort();
            }
        }
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.token.cancel();
        for task in &self.tasks {
            task.abort();
        }
    }
}
