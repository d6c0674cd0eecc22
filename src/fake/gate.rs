//! Who may call the fake API and how often: the request log layer (every API request, with
//! the index of the key it carried, never the key), the key check, the "model not allowed"
//! switch, and the per-key sliding-window rate limit with its 429 answer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;

use super::dates::rfc3339_millis;
use super::respond::error_response;
use super::state::Shared;
use super::{RequestLog, RetryAfterMode, MODEL_SLUG};

/// Which endpoints a request is for: the rules differ slightly.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Scope {
    /// Submit, status, result: `forbidden` applies, every request counts in the window.
    V2,
    /// History and upload: `forbidden` does not apply; rate per `history_counts_against_rate`.
    Side,
}

/// Logs every API request (not admin) and adds `x-remaining-credits`.
pub(super) async fn log_layer(State(sh): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    if req.uri().path().starts_with("/_fake/") {
        return next.run(req).await;
    }
    let idx = {
        let mut g = sh.lock();
        let key = req.headers().get("x-api-key");
        let key_index = key.and_then(|k| g.cfg.key_index(k.as_bytes()));
        g.stats.api_requests.push(RequestLog {
            at_ms: sh.ms_since_start(Instant::now()),
            method: req.method().to_string(),
            path: req.uri().path().to_string(),
            status: 0,
            had_key: key.is_some(),
            key_index,
            user_agent: req
                .headers()
                .get(axum::http::header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
        });
        g.stats.api_requests.len() - 1
    };
    let mut resp = next.run(req).await;
    let credits = sh.remaining_credits();
    resp.headers_mut()
        .insert("x-remaining-credits", HeaderValue::from(credits));
    if let Some(entry) = sh.lock().stats.api_requests.get_mut(idx) {
        entry.status = resp.status().as_u16();
    }
    resp
}

/// Forbidden (V2 only), key and rate-limit checks, in that order: Ok(key index), or the
/// refusal to answer.
#[allow(clippy::result_large_err)] // a refusal is the answer itself, built once per request
pub(super) fn gate(sh: &Shared, headers: &HeaderMap, scope: Scope) -> Result<usize, Response> {
    let (key, counts) = {
        let g = sh.lock();
        if scope == Scope::V2 && g.cfg.forbidden {
            return Err(error_response(
                403,
                format!("Access to model {MODEL_SLUG} is not allowed for this account"),
            ));
        }
        let key = match headers.get("x-api-key") {
            Some(v) => g
                .cfg
                .key_index(v.as_bytes())
                .ok_or_else(|| error_response(401, "Invalid API key"))?,
            None if headers.contains_key(header::AUTHORIZATION) => {
                return Err(error_response(
                    401,
                    "Unauthorized: send the API key in the x-api-key header",
                ))
            }
            None => return Err(error_response(401, "Missing API key")),
        };
        (key, scope == Scope::V2 || g.cfg.history_counts_against_rate)
    };
    if !counts {
        return Ok(key);
    }
    let now = Instant::now();
    match sh.rate_admit(key, now) {
        Ok(()) => Ok(key),
        Err(reset) => Err(rate_limited(sh, now, reset)),
    }
}

/// The 429 answer, with the reset header and, per config, `Retry-After`.
fn rate_limited(sh: &Shared, now: Instant, reset: Instant) -> Response {
    let mut resp = error_response(429, "Rate limit exceeded");
    let reset_sys = sh.system_time(reset);
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&rfc3339_millis(reset_sys)) {
        h.insert("x-rate-limit-reset-at-utc", v);
    }
    let wait = reset.saturating_duration_since(now);
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let secs = secs.max(1);
    let retry = match sh.lock().cfg.retry_after {
        RetryAfterMode::None => None,
        RetryAfterMode::Seconds => Some(secs.to_string()),
        RetryAfterMode::HttpDate => Some(httpdate::fmt_http_date(sh.system_time(now) + Duration::from_secs(secs))),
    };
    if let Some(v) = retry.and_then(|r| HeaderValue::from_str(&r).ok()) {
        h.insert(header::RETRY_AFTER, v);
    }
    resp
}

/// Whether the request says its body is JSON (POSTs without it are answered 406).
pub(super) fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"))
}
