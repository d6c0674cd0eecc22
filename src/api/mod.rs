//! The Segmind v2 API client: submit, status, result.
//!
//! - Every call carries `x-api-key` (a sensitive header value, never logged) and POSTs carry
//!   `Content-Type: application/json`.
//! - The client follows the `status_url`/`response_url` Segmind returns, but only while they
//!   point at the API host: the key must never travel anywhere else, so a URL on another host is
//!   replaced by the documented `/v2/requests/{id}[/status]` on the base URL. Redirects are not
//!   followed for the same reason.
//! - Answers are read with a size cap, and every failure comes back as an `ApiError` classified
//!   by what the caller must do.
//! - The two side services Segmind also keys, the request history and the storage upload, have
//!   their own clients (`history`, `upload`); `hosts` decides the three keyed hosts.

pub mod error;
pub mod history;
pub mod hosts;
pub mod upload;

#[cfg(test)]
mod tests_history;
#[cfg(test)]
mod tests_keys;
#[cfg(test)]
mod tests_upload;

use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue, CONTENT_TYPE};
use reqwest::{Response, Url};
use serde_json::Value;

pub use error::{AccountStop, ApiError};

/// The model this tool drives.
pub const MODEL_SLUG: &str = "wan-2.2-i2v-fast";
pub const DEFAULT_BASE_URL: &str = "https://api.segmind.com";

/// Largest API answer we read; real ones are a few hundred bytes.
const MAX_BODY: usize = 1 << 20;

/// The API key. Its `Debug` and `Display` never show it.
#[derive(Clone)]
pub struct ApiKey(String);

impl ApiKey {
    pub fn new(key: String) -> Option<ApiKey> {
        let key = key.trim().to_string();
        (!key.is_empty() && HeaderValue::from_str(&key).is_ok()).then_some(ApiKey(key))
    }
}

impl ApiKey {
    /// The name of this key's request budget in a shared database: a keyed hash, never the key.
    pub fn budget_name(&self) -> String {
        crate::store::key_hash(&self.0)
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

/// A submit's answer: where to follow the job.
#[derive(Debug, Clone, PartialEq)]
pub struct Submitted {
    pub request_id: String,
    pub status_url: String,
    pub response_url: String,
}

/// A finished job's result.
#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    pub url: String,
    pub file_size: Option<u64>,
    pub cost: Option<f64>,
}

/// What a poll found.
#[derive(Debug, Clone, PartialEq)]
pub enum Poll {
    /// QUEUED, PROCESSING, or a state we do not know (treated as still running).
    Pending(String),
    /// COMPLETED; from the result endpoint this carries the output, from the status endpoint not.
    Completed(Option<Output>),
    /// FAILED (HTTP 422), with the API's message.
    Failed(String),
}

/// Facts the API reports beside the answer.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Meta {
    /// `x-remaining-credits` or `metrics.remaining_credits`.
    pub remaining_credits: Option<f64>,
}

#[derive(Clone)]
pub struct ApiClient {
    http: reqwest::Client,
    base: Url,
    submit_url: Url,
    key: HeaderValue,
}

impl std::fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiClient")
            .field("base", &self.base.as_str())
            .finish_non_exhaustive()
    }
}

impl ApiClient {
    pub fn new(base_url: &str, key: &ApiKey, timeout: Duration) -> anyhow::Result<ApiClient> {
        let base = Url::parse(base_url.trim_end_matches('/'))
            .map_err(|e| anyhow::anyhow!("SEGMIND_BASE_URL {base_url:?} is not a URL: {e}"))?;
        if !matches!(base.scheme(), "http" | "https") || base.host_str().is_none() {
            anyhow::bail!("SEGMIND_BASE_URL {base_url:?} must be an http(s) URL");
        }
        let submit_url = join(&base, &format!("v2/{MODEL_SLUG}"))?;
        let (http, key_value) = hosts::keyed_client(key, timeout)?;
        Ok(ApiClient {
            http,
            base,
            submit_url,
            key: key_value,
        })
    }

    /// The documented status and result URLs of a request (for one found in the history).
    pub fn urls_of(&self, request_id: &str) -> (String, String) {
        let at = |suffix: &str| {
            join(&self.base, &format!("v2/requests/{request_id}{suffix}"))
                .map(String::from)
                .unwrap_or_default()
        };
        (at("/status"), at(""))
    }

    /// The API's base URL (no key in it), for messages.
    pub fn base_url(&self) -> &str {
        self.base.as_str().trim_end_matches('/')
    }

    fn headers(&self) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-api-key", self.key.clone());
        h
    }

    /// POST /v2/{slug} with the canonical params JSON. On error, `ApiError::maybe_arrived` tells
    /// whether Segmind may have created (and billed) a job anyway.
    pub async fn submit(&self, params_json: &str) -> Result<(Submitted, Meta), ApiError> {
        let resp = self
            .http
            .post(self.submit_url.clone())
            .headers(self.headers())
            .header(CONTENT_TYPE, "application/json")
            .body(params_json.to_string())
            .send()
            .await
            .map_err(send_error)?;
        // A 2xx answer we cannot read still means a job was created.
        let (meta, body) = self.read(resp, true).await.map_err(|e| match e {
            ApiError::Protocol(m) => ApiError::Unfollowable(m),
            e => e,
        })?;
        let request_id = body
            .get("request_id")
            .and_then(Value::as_str)
            .filter(|id| safe_request_id(id))
            .ok_or_else(|| {
                ApiError::Unfollowable(format!("submit answer without a usable request_id: {}", snippet(&body)))
            })?
            .to_string();
        let status_url = self.own_url(body.get("status_url"), &format!("v2/requests/{request_id}/status"));
        let response_url = self.own_url(body.get("response_url"), &format!("v2/requests/{request_id}"));
        Ok((
            Submitted {
                request_id,
                status_url,
                response_url,
            },
            meta,
        ))
    }

    /// GET the status endpoint of `request_id` (the saved `status_url` when it is on the API host).
    pub async fn status(&self, request_id: &str, status_url: Option<&str>) -> Result<(Poll, Meta), ApiError> {
        let url = self.poll_url(status_url, request_id, "/status")?;
        self.poll(url).await
    }

    /// GET the result endpoint: answers the state while pending and the output once done, so
    /// polling it saves the extra status request.
    pub async fn result(&self, request_id: &str, response_url: Option<&str>) -> Result<(Poll, Meta), ApiError> {
        let url = self.poll_url(response_url, request_id, "")?;
        self.poll(url).await
    }

    /// The saved URL if it is on the API host; otherwise (another base URL since, or a URL on a
    /// foreign host, which must never get the key) the documented path for the request id.
    fn poll_url(&self, saved: Option<&str>, request_id: &str, suffix: &str) -> Result<Url, ApiError> {
        if let Some(url) = saved.and_then(|u| Url::parse(u).ok()).filter(|u| self.same_origin(u)) {
            return Ok(url);
        }
        if !safe_request_id(request_id) {
            return Err(ApiError::Protocol(format!("unusable request id {request_id:?}")));
        }
        join(&self.base, &format!("v2/requests/{request_id}{suffix}")).map_err(|e| ApiError::Protocol(e.to_string()))
    }

    async fn poll(&self, url: Url) -> Result<(Poll, Meta), ApiError> {
        let resp = self
            .http
            .get(url)
            .headers(self.headers())
            .send()
            .await
            .map_err(send_error)?;
        let status = resp.status().as_u16();
        if !(200..300).contains(&status) && status != 429 && !(300..400).contains(&status) {
            // FAILED is read from the body whatever the HTTP code (documented as 422; the SDK
            // reads the body). A 422 whose body is not FAILED is a client error for the job.
            let url = resp.url().to_string();
            let text = read_limited(resp).await?;
            let body = serde_json::from_slice::<Value>(&text).unwrap_or(Value::Null);
            if body.get("status").and_then(Value::as_str) == Some("FAILED") {
                return Ok((Poll::Failed(failure_message(&body)), Meta::default()));
            }
            let message = body
                .get("error")
                .or_else(|| body.get("message"))
                .map(|e| e.as_str().map_or_else(|| e.to_string(), str::to_string))
                .unwrap_or_else(|| String::from_utf8_lossy(&text[..text.len().min(200)]).into_owned());
            return Err(error::classify_status(status, message, false, &url));
        }
        let (mut meta, body) = self.read(resp, false).await?;
        if let Some(c) = body.pointer("/metrics/remaining_credits").and_then(Value::as_f64) {
            meta.remaining_credits = Some(c);
        }
        let status = body.get("status").and_then(Value::as_str).unwrap_or("");
        // `output` is a URL string for video models; accept the other shapes seen across
        // Segmind models (a list of URLs, an object with `url`) and the `video.url` object.
        let output = body
            .get("output")
            .and_then(|o| {
                o.as_str()
                    .or_else(|| o.get(0).and_then(Value::as_str))
                    .or_else(|| o.get("url").and_then(Value::as_str))
            })
            .or_else(|| body.pointer("/video/url").and_then(Value::as_str));
        let poll = match (status, output) {
            ("FAILED", _) => Poll::Failed(failure_message(&body)),
            ("COMPLETED", Some(url)) | ("", Some(url)) => Poll::Completed(Some(Output {
                url: url.to_string(),
                file_size: body.pointer("/video/file_size").and_then(Value::as_u64),
                cost: body.pointer("/metrics/cost").and_then(Value::as_f64),
            })),
            ("COMPLETED", None) => Poll::Completed(None),
            ("", None) => {
                return Err(ApiError::Protocol(format!(
                    "answer without a status: {}",
                    snippet(&body)
                )))
            }
            (other, _) => Poll::Pending(other.to_string()),
        };
        Ok((poll, meta))
    }

    /// Reads a JSON answer; non-2xx statuses become classified errors.
    async fn read(&self, resp: Response, on_submit: bool) -> Result<(Meta, Value), ApiError> {
        let status = resp.status().as_u16();
        let meta = Meta {
            remaining_credits: header(&resp, "x-remaining-credits")
                .and_then(|v| v.trim().parse::<f64>().ok())
                .filter(|c| c.is_finite()),
        };
        if status == 429 {
            let until = error::parse_reset(
                header(&resp, "x-rate-limit-reset-at-utc").as_deref(),
                header(&resp, "retry-after").as_deref(),
            );
            return Err(ApiError::RateLimited { until });
        }
        let url = resp.url().to_string();
        if (300..400).contains(&status) {
            let location = header(&resp, "location").unwrap_or_default();
            return Err(ApiError::Redirected {
                status,
                location: location.chars().take(200).collect(),
            });
        }
        if !(200..300).contains(&status) {
            let text = read_limited(resp).await.unwrap_or_default();
            let message = serde_json::from_slice::<Value>(&text)
                .ok()
                .and_then(|v| v.get("error").or_else(|| v.get("message")).cloned())
                .map(|e| e.as_str().map_or_else(|| e.to_string(), str::to_string))
                .unwrap_or_else(|| String::from_utf8_lossy(&text[..text.len().min(200)]).into_owned());
            return Err(error::classify_status(status, message, on_submit, &url));
        }
        let (_, body) = read_json(resp).await?;
        Ok((meta, body))
    }

    fn same_origin(&self, url: &Url) -> bool {
        url.scheme() == self.base.scheme()
            && url.host_str() == self.base.host_str()
            && url.port_or_known_default() == self.base.port_or_known_default()
    }

    /// The URL Segmind returned if it is on the API host, else the documented one.
    fn own_url(&self, returned: Option<&Value>, fallback: &str) -> String {
        returned
            .and_then(Value::as_str)
            .and_then(|u| Url::parse(u).ok())
            .filter(|u| self.same_origin(u))
            .map(String::from)
            .unwrap_or_else(|| join(&self.base, fallback).map(String::from).unwrap_or_default())
    }
}

fn join(base: &Url, path: &str) -> anyhow::Result<Url> {
    let mut s = base.as_str().trim_end_matches('/').to_string();
    s.push('/');
    s.push_str(path);
    Ok(Url::parse(&s)?)
}

/// A request id becomes part of a URL path: letters, digits, '-' and '_' only.
pub fn safe_request_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 128 && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn header(resp: &Response, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn send_error(e: reqwest::Error) -> ApiError {
    // A connect error means the request never left: no job can exist.
    if e.is_connect() {
        ApiError::NotSent(error_chain(&e))
    } else {
        ApiError::Lost(error_chain(&e))
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

async fn read_limited(mut resp: Response) -> Result<Vec<u8>, ApiError> {
    if resp.content_length().is_some_and(|n| n > MAX_BODY as u64) {
        return Err(ApiError::Protocol(format!(
            "answer of {} bytes is too large",
            resp.content_length().unwrap_or(0)
        )));
    }
    let mut buf = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| ApiError::Lost(error_chain(&e)))? {
        if buf.len() + chunk.len() > MAX_BODY {
            return Err(ApiError::Protocol(format!("answer larger than {MAX_BODY} bytes")));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf)
}

async fn read_json(resp: Response) -> Result<(u16, Value), ApiError> {
    let status = resp.status().as_u16();
    let bytes = read_limited(resp).await?;
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(v @ Value::Object(_)) => Ok((status, v)),
        Ok(_) | Err(_) => Err(ApiError::Protocol(format!(
            "HTTP {status} with a body that is not a JSON object: {:?}",
            String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
        ))),
    }
}

/// The message of a FAILED body: its `error` (a string, or any JSON).
fn failure_message(body: &Value) -> String {
    body.get("error")
        .filter(|e| !e.is_null())
        .map(|e| e.as_str().map_or_else(|| e.to_string(), str::to_string))
        .unwrap_or_else(|| format!("FAILED without a message: {}", snippet(body)))
}

fn snippet(v: &Value) -> String {
    let s = v.to_string();
    s.chars().take(200).collect()
}
