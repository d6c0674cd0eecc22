//! Fake Segmind server (`wan-2.2-i2v-fast`) for tests, demos and rehearsals.
//!
//! Two listeners on 127.0.0.1. The API: the v2 queue (`POST /v2/{slug}`,
//! `GET /v2/requests/{id}[/status]`), the request history
//! (`GET /inference-request/request-history[/{id}]`), the storage upload (`POST /upload-asset`)
//! and admin routes under `/_fake/`. The "CDN": `/videos/{id}.mp4` and `/assets/{name}`.
//! Behaviour follows `shared/API.md`; every behaviour the real service might show is a
//! [`FakeConfig`] switch (most also settable at run time), and failures are injected with
//! [`Fault`]s. Each key is an account: its own rate window, its own history.
//! This module depends on nothing else in the crate.

mod api;
mod cdn;
pub mod cli;
mod config;
mod dates;
mod fault;
mod gate;
mod history;
mod respond;
mod state;
mod stats;
mod upload;
mod validate;
pub mod video;

#[cfg(test)]
mod tests_api;
#[cfg(test)]
mod tests_cdn;
#[cfg(test)]
mod tests_history;
#[cfg(test)]
mod tests_keys;
#[cfg(test)]
mod tests_upload;

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use cdn::{video_bytes, video_for};
pub use config::*;
pub use dates::rfc3339_millis;
pub use fault::{Fault, FaultKind, FaultTarget};
pub use stats::{FakeStats, JobTimeline, RequestLog, SubmitRecord};

/// The one model slug the fake accepts submits for.
pub const MODEL_SLUG: &str = "wan-2.2-i2v-fast";

/// A request put into the fake's books as if another client had submitted it: billed, in the
/// ledger (`planted: true`), in its key's history, pollable like any job.
#[derive(Clone, Debug)]
pub struct Plant {
    /// The account (0 = `api_key`, i = `extra_keys[i-1]`).
    pub key_index: usize,
    /// Its `model_name`; bodies are checked against the parameter table only for [`MODEL_SLUG`].
    pub model: String,
    /// The body as sent (a non-object counts as `{}`).
    pub body: serde_json::Value,
    /// How long ago it was created: its phase, record expiry and history dates follow.
    pub age: Duration,
}

impl Plant {
    /// A request of key 0 to [`MODEL_SLUG`], created now.
    pub fn new(body: serde_json::Value) -> Plant {
        Plant {
            key_index: 0,
            model: MODEL_SLUG.to_string(),
            body,
            age: Duration::ZERO,
        }
    }
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
    /// History and upload live on this listener too.
    pub fn api_url(&self) -> String {
        self.shared.api_url.clone()
    }

    /// Base of the separate video/asset listener, e.g. `http://127.0.0.1:41235`.
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

    /// Changes the live configuration. Takes effect from the next request; existing jobs keep
    /// their durations and cost. `credits` here is ignored: use [`FakeServer::set_credits`].
    pub fn update_config(&self, f: impl FnOnce(&mut FakeConfig)) {
        f(&mut self.shared.lock().cfg);
    }

    /// A copy of the live configuration.
    pub fn config(&self) -> FakeConfig {
        self.shared.lock().cfg.clone()
    }

    pub fn set_credits(&self, credits: Option<u64>) {
        self.shared.lock().credits = credits;
    }

    /// The limit of every key (clears per-key overrides).
    pub fn set_rate_limit(&self, limit: Option<u32>) {
        self.update_config(|c| {
            c.rate_limit = limit;
            c.key_rate_limits.clear();
        });
    }

    /// The limit of key `index` alone.
    pub fn set_key_rate_limit(&self, index: usize, limit: Option<u32>) {
        self.update_config(|c| {
            let default = c.rate_limit;
            if c.key_rate_limits.len() <= index {
                c.key_rate_limits.resize(index + 1, default);
            }
            c.key_rate_limits[index] = limit;
        });
    }

    pub fn set_forbidden(&self, forbidden: bool) {
        self.update_config(|c| c.forbidden = forbidden);
    }

    pub fn set_result_pending(&self, mode: ResultPending) {
        self.update_config(|c| c.result_pending = mode);
    }

    pub fn set_failed_status(&self, status: u16) {
        self.update_config(|c| c.failed_status = status);
    }

    pub fn set_history_mode(&self, mode: HistoryMode) {
        self.update_config(|c| c.history_mode = mode);
    }

    pub fn set_history_lag(&self, lag: Duration) {
        self.update_config(|c| c.history_lag = lag);
    }

    pub fn set_duplicate_rows(&self, every: Option<u32>) {
        self.update_config(|c| c.duplicate_rows = every);
    }

    pub fn set_file_lifetime(&self, lifetime: Option<Duration>) {
        self.update_config(|c| c.file_lifetime = lifetime);
    }

    pub fn set_upload_field(&self, field: UploadField) {
        self.update_config(|c| c.upload_field = field);
    }

    /// Every job's timeline: submitted, processing, ended, and first reported ended.
    pub fn timelines(&self) -> Vec<JobTimeline> {
        self.shared.timelines()
    }

    /// Creates a request of key 0 "submitted by someone else" now; answers its request_id.
    pub fn plant_request(&self, body: serde_json::Value) -> String {
        self.plant(Plant::new(body))
    }

    /// Creates a request as described (billed even when credits are exhausted).
    pub fn plant(&self, plant: Plant) -> String {
        let sh = &self.shared;
        let mut g = sh.lock();
        let map = match plant.body {
            serde_json::Value::Object(map) => map,
            _ => serde_json::Map::new(),
        };
        let error = api::job_error(sh, &g, &plant.model, &map);
        let new = state::NewJob {
            key: plant.key_index,
            model: plant.model,
            body: serde_json::Value::Object(map),
            error,
            now: std::time::Instant::now(),
            backdate: plant.age,
            planted: true,
        };
        sh.create_job(&mut g, new)
    }

    /// An uploaded asset by its URL (or file name): content type and bytes.
    pub fn asset(&self, url: &str) -> Option<(String, Vec<u8>)> {
        let name = url.rsplit('/').next().unwrap_or(url);
        let g = self.shared.lock();
        g.assets.get(name).map(|a| (a.mime.to_string(), a.bytes.to_vec()))
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
