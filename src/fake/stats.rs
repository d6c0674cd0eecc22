//! What the fake has seen, for tests and `/_fake/stats`: the billing ledger (accepted submits),
//! per-endpoint counters, the request log with each request's key index (never the key), and
//! the per-job timelines.

/// Snapshot of what the fake has seen.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct FakeStats {
    /// The billing ledger: every job the fake created (accepted submits and planted requests).
    pub submits: Vec<SubmitRecord>,
    pub status_polls: u64,
    pub result_polls: u64,
    /// Result-endpoint 404s answered for pending jobs (`ResultPending::NotFound404`).
    pub result_pending_404: u64,
    /// Request-history calls (list and by id), whatever the answer.
    pub history_calls: u64,
    /// `POST /upload-asset` calls, whatever the answer.
    pub uploads: u64,
    /// Assets stored (one per data URL of each processed upload).
    pub assets: u64,
    /// Decoded bytes of all stored assets.
    pub asset_bytes: u64,
    /// CDN GETs of `/videos/...`.
    pub downloads: u64,
    /// CDN GETs of `/assets/...`.
    pub asset_downloads: u64,
    /// CDN requests that carried `x-api-key` or `Authorization` (must stay 0).
    pub cdn_requests_with_key: u64,
    /// 429s answered.
    pub rate_limited: u64,
    /// Every API request (not CDN, not admin), in arrival order.
    pub api_requests: Vec<RequestLog>,
}

impl FakeStats {
    /// The logged requests that carried key `index`.
    pub fn requests_of_key(&self, index: usize) -> impl Iterator<Item = &RequestLog> {
        self.api_requests.iter().filter(move |r| r.key_index == Some(index))
    }
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct SubmitRecord {
    pub request_id: String,
    pub body: serde_json::Value,
    /// Milliseconds since server start (0 for a planted request dated before the start).
    pub at_ms: u64,
    /// The account (key index) billed.
    pub key_index: usize,
    /// Created by `FakeServer::plant`, not by an HTTP submit.
    pub planted: bool,
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
    /// Which valid key it carried (0 = `api_key`, i = `extra_keys[i-1]`); None = none valid.
    pub key_index: Option<usize>,
    /// The client's `User-Agent`, if it said.
    pub user_agent: Option<String>,
}

/// One job's timeline, in ms since the server started.
#[derive(Clone, Debug, serde::Serialize)]
pub struct JobTimeline {
    pub request_id: String,
    pub submitted_ms: u64,
    /// When QUEUED ended (PROCESSING started).
    pub processing_ms: u64,
    /// When the job ended (COMPLETED or FAILED) at the fake.
    pub done_ms: u64,
    /// When a v2 status/result answer first reported the end to a client, if one has
    /// (history answers do not count).
    pub seen_done_ms: Option<u64>,
}
