//! The fake API listener: submit, status and result endpoints of the v2 queue API, the
//! routes of the side services (request history, asset upload) on the same listener, and the
//! admin routes (`/_fake/stats`, `/_fake/faults`) for out-of-process use.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::HeaderMap;
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use serde_json::{json, Map, Value};

use super::gate::{gate, is_json, log_layer, Scope};
use super::respond::{error_response, json_response, with_fault};
use super::state::{Inner, NewJob, Phase, Shared};
use super::{history, upload, validate, Fault, FaultTarget, ResultPending, MODEL_SLUG};

type St = State<Arc<Shared>>;

pub(super) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v2/requests/{id}/status", get(status))
        .route("/v2/requests/{id}", get(result))
        .route("/v2/{slug}", post(submit))
        .route("/inference-request/request-history", get(history::list))
        .route("/inference-request/request-history/{id}", get(history::by_id))
        // The upload handler enforces its own (configurable) cap.
        .route("/upload-asset", post(upload::upload).layer(DefaultBodyLimit::disable()))
        .route("/_fake/stats", get(admin_stats))
        .route("/_fake/faults", post(admin_push).delete(admin_clear))
        .fallback(|| async { error_response(404, "Not found") })
        .layer(middleware::from_fn_with_state(shared.clone(), log_layer))
        .with_state(shared)
}

fn status_url(sh: &Shared, id: &str) -> String {
    format!("{}/v2/requests/{id}/status", sh.api_url)
}

fn response_url(sh: &Shared, id: &str) -> String {
    format!("{}/v2/requests/{id}", sh.api_url)
}

/// The CDN URL of a job's video.
pub(super) fn video_url(sh: &Shared, id: &str) -> String {
    format!("{}/videos/{id}.mp4", sh.cdn_url)
}

pub(super) fn not_found(id: &str) -> Response {
    error_response(404, format!("Request {id} not found"))
}

/// The error a new job of `model` with this body will end with, or None if it completes:
/// parameter validation (the fake's model only), then fetching its images, then the prompt
/// triggers.
pub(super) fn job_error(sh: &Shared, g: &Inner, model: &str, body: &Map<String, Value>) -> Option<String> {
    let fetch = |b: &Map<String, Value>| upload::fetch_error(&sh.cdn_url, &g.assets, b);
    validate::job_error(body, model == MODEL_SLUG, fetch)
}

async fn submit(State(sh): St, Path(slug): Path<String>, headers: HeaderMap, body: Bytes) -> Response {
    let fault = sh.take_fault(FaultTarget::Submit);
    with_fault(fault, async move { submit_inner(&sh, &slug, &headers, &body) }).await
}

fn submit_inner(sh: &Shared, slug: &str, headers: &HeaderMap, body: &[u8]) -> Response {
    if slug != MODEL_SLUG {
        return error_response(404, "Model not found");
    }
    let key = match gate(sh, headers, Scope::V2) {
        Ok(key) => key,
        Err(resp) => return resp,
    };
    if !is_json(headers) {
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
        let error = job_error(sh, &g, MODEL_SLUG, &map);
        let new = NewJob {
            key,
            model: MODEL_SLUG.to_string(),
            body: Value::Object(map),
            error,
            now,
            backdate: Default::default(),
            planted: false,
        };
        sh.create_job(&mut g, new)
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
    if let Err(resp) = gate(sh, headers, Scope::V2) {
        return resp;
    }
    let (phase, times) = sh.phase(id, Instant::now(), true);
    let (queue_ms, run_ms) = times.unwrap_or_default();
    let (failed_status, pending, video_len, cost, body) = {
        let g = sh.lock();
        let job = g.jobs.get(id);
        let cost = job.map_or(g.cfg.cost_per_video, |j| j.cost);
        let body = job.map(|j| j.body.clone()).unwrap_or_default();
        (g.cfg.failed_status, g.cfg.result_pending, g.cfg.video_len, cost, body)
    };
    match phase {
        Phase::NotFound => not_found(id),
        Phase::Failed(error) => json_response(
            failed_status,
            json!({
                "status": "FAILED",
                "request_id": id,
                "error": error,
                "metrics": {"queue_time_ms": queue_ms, "inference_time_ms": run_ms},
            }),
        ),
        Phase::Completed if full => {
            let url = video_url(sh, id);
            // The length of the file the video host serves (at least `video_len`: a real video
            // may come out longer than the padding asked for).
            let video_len = super::cdn::video_for(&body, id, video_len).len();
            json_response(
                200,
                json!({
                    "status": "COMPLETED",
                    "request_id": id,
                    "output": url,
                    "video": {
                        "url": url,
                        "content_type": "video/mp4",
                        "file_size": video_len,
                    },
                    "metrics": {
                        "cost": cost,
                        "remaining_credits": sh.remaining_credits(),
                        "queue_time_ms": queue_ms,
                        "inference_time_ms": run_ms,
                    },
                }),
            )
        }
        _ if full && pending == ResultPending::NotFound404 => {
            sh.lock().stats.result_pending_404 += 1;
            not_found(id)
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
