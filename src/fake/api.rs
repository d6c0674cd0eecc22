//! The fake API listener: submit, status and result endpoints of the v2 queue
//! API, the request log / `x-remaining-credits` layer, and the admin routes
//! (`/_fake/stats`, `/_fake/faults`) for out-of-process use.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use serde_json::{json, Value};

use super::respond::{error_response, json_response, rfc3339_millis, with_fault};
use super::state::{Phase, Shared};
use super::{validate, Fault, FaultTarget, RequestLog, RetryAfterMode, MODEL_SLUG};

type St = State<Arc<Shared>>;

pub(super) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v2/requests/{id}/status", get(status))
        .route("/v2/requests/{id}", get(result))
        .route("/v2/{slug}", post(submit))
        .route("/_fake/stats", get(admin_stats))
        .route("/_fake/faults", post(admin_push).delete(admin_clear))
        .fallback(|| async { error_response(404, "Not found") })
        .layer(middleware::from_fn_with_state(shared.clone(), log_layer))
        .with_state(shared)
}

/// Logs every API request (not admin) and adds `x-remaining-credits`.
async fn log_layer(State(sh): St, req: Request, next: Next) -> Response {
    if req.uri().path().starts_with("/_fake/") {
        return next.run(req).await;
    }
    let idx = {
        let mut g = sh.lock();
        g.stats.api_requests.push(RequestLog {
            at_ms: sh.ms_since_start(Instant::now()),
            method: req.method().to_string(),
            path: req.uri().path().to_string(),
            status: 0,
            had_key: req.headers().contains_key("x-api-key"),
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

/// Forbidden, key and rate-limit checks, in that order; Some = the refusal to answer.
fn gate(sh: &Shared, headers: &HeaderMap) -> Option<Response> {
    if sh.lock().forbidden {
        return Some(error_response(
            403,
            format!("Access to model {MODEL_SLUG} is not allowed for this account"),
        ));
    }
    match headers.get("x-api-key") {
        Some(v) if v.as_bytes() == sh.cfg.api_key.as_bytes() => {}
        Some(_) => return Some(error_response(401, "Invalid API key")),
        None if headers.contains_key(header::AUTHORIZATION) => {
            return Some(error_response(
                401,
                "Unauthorized: send the API key in the x-api-key header",
            ))
        }
        None => return Some(error_response(401, "Missing API key")),
    }
    let now = Instant::now();
    sh.rate_admit(now).err().map(|reset| rate_limited(sh, now, reset))
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
    let retry = match sh.cfg.retry_after {
        RetryAfterMode::None => None,
        RetryAfterMode::Seconds => Some(secs.to_string()),
        RetryAfterMode::HttpDate => Some(httpdate::fmt_http_date(
            sh.system_time(now) + std::time::Duration::from_secs(secs),
        )),
    };
    if let Some(v) = retry.and_then(|r| HeaderValue::from_str(&r).ok()) {
        h.insert(header::RETRY_AFTER, v);
    }
    resp
}

fn status_url(sh: &Shared, id: &str) -> String {
    format!("{}/v2/requests/{id}/status", sh.api_url)
}

fn response_url(sh: &Shared, id: &str) -> String {
    format!("{}/v2/requests/{id}", sh.api_url)
}

fn not_found(id: &str) -> Response {
    error_response(404, format!("Request {id} not found"))
}

async fn submit(State(sh): St, Path(slug): Path<String>, headers: HeaderMap, body: Bytes) -> Response {
    let fault = sh.take_fault(FaultTarget::Submit);
    with_fault(fault, async move { submit_inner(&sh, &slug, &headers, &body) }).await
}

fn submit_inner(sh: &Shared, slug: &str, headers: &HeaderMap, body: &[u8]) -> Response {
    if slug != MODEL_SLUG {
        return error_response(404, "Model not found");
    }
    if let Some(resp) = gate(sh, headers) {
        return resp;
    }
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !is_json {
        return error_response(406, "Content-Type must be application/json");
    }
    let parsed = serde_json::from_slice::<Value>(body);
    let now = Instant::now();
    let id = {
        let mut g = sh.lock();
        if g.credits == Some(0) {
            return error_response(406, "Insufficient credits");
        }
        let Ok(Value::Object(map)) = parsed else {
            return error_response(400, "Request body must be a JSON object");
        };
        let error = validate::job_error(&map);
        sh.create_job(&mut g, Value::Object(map), error, now)
    };
    json_response(
        200,
        json!({
            "request_id": id,
            "status": "QUEUED",
            "poll_url": response_url(sh, &id),
            "status_url": status_url(sh, &id),
            "response_url": response_url(sh, &id),
        }),
    )
}

async fn status(State(sh): St, Path(id): Path<String>, headers: HeaderMap) -> Response {
    sh.lock().stats.status_polls += 1;
    let fault = sh.take_fault(FaultTarget::Status);
    with_fault(fault, async move { poll(&sh, &id, &headers, false) }).await
}

async fn result(State(sh): St, Path(id): Path<String>, headers: HeaderMap) -> Response {
    sh.lock().stats.result_polls += 1;
    let fault = sh.take_fault(FaultTarget::Result);
    with_fault(fault, async move { poll(&sh, &id, &headers, true) }).await
}

/// Status (`full` = false) or result (`full` = true) of a request.
fn poll(sh: &Shared, id: &str, headers: &HeaderMap, full: bool) -> Response {
    if let Some(resp) = gate(sh, headers) {
        return resp;
    }
    let (phase, times) = sh.phase(id, Instant::now(), true);
    let (queue_ms, run_ms) = times.unwrap_or_default();
    match phase {
        Phase::NotFound => not_found(id),
        Phase::Failed(error) => json_response(
            422,
            json!({
                "status": "FAILED",
                "request_id": id,
                "error": error,
                "metrics": {"queue_time_ms": queue_ms, "inference_time_ms": run_ms},
            }),
        ),
        Phase::Completed if full => {
            let url = format!("{}/videos/{id}.mp4", sh.cdn_url);
            json_response(
                200,
                json!({
                    "status": "COMPLETED",
                    "request_id": id,
                    "output": url,
                    "video": {
                        "url": url,
                        "content_type": "video/mp4",
                        "file_size": sh.cfg.video_len,
                    },
                    "metrics": {
                        "cost": sh.cfg.cost_per_video,
                        "remaining_credits": sh.remaining_credits(),
                        "queue_time_ms": queue_ms,
                        "inference_time_ms": run_ms,
                    },
                }),
            )
        }
        phase => json_response(
            200,
            json!({
                "status": phase.name(),
                "request_id": id,
                "status_url": status_url(sh, id),
                "response_url": response_url(sh, id),
                "metrics": {},
            }),
        ),
    }
}

async fn admin_stats(State(sh): St) -> Response {
    let stats = sh.lock().stats.clone();
    Json(stats).into_response()
}

async fn admin_push(State(sh): St, Json(fault): Json<Fault>) -> Response {
    sh.push_fault(fault);
    json_response(200, json!({"ok": true}))
}

async fn admin_clear(State(sh): St) -> Response {
    sh.lock().faults.clear();
    json_response(200, json!({"ok": true}))
}
