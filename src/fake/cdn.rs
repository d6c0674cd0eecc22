//! The fake CDN listener: `GET /videos/{id}.mp4` serves deterministic video bytes for
//! completed jobs (with optional Range support, for `file_lifetime` after submit, long after
//! the v2 record expired), and `GET /assets/{name}` serves uploaded assets. It never needs a
//! key and counts requests that carry one.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::get;
use axum::Router;

use super::respond::{error_response, with_fault};
use super::state::{fnv1a, splitmix64, Phase, Shared};
use super::{FaultKind, FaultTarget};

pub(super) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/videos/{file}", get(video))
        .route("/assets/{file}", get(asset))
        .fallback(|| async { error_response(404, "Not found") })
        .layer(middleware::from_fn_with_state(shared.clone(), key_counter))
        .with_state(shared)
}

/// Counts CDN requests that carry credentials (they must never be sent here).
async fn key_counter(State(sh): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    let h = req.headers();
    if h.contains_key("x-api-key") || h.contains_key(header::AUTHORIZATION) {
        sh.lock().stats.cdn_requests_with_key += 1;
    }
    next.run(req).await
}

async fn video(State(sh): State<Arc<Shared>>, Path(file): Path<String>, headers: HeaderMap) -> Response {
    sh.lock().stats.downloads += 1;
    // A dropped download keeps the real headers (downloads are safe to process).
    let fault = match sh.take_fault(FaultTarget::Download) {
        Some(FaultKind::Drop) => Some(FaultKind::Truncate(0)),
        other => other,
    };
    with_fault(fault, async move { serve(&sh, &file, &headers) }).await
}

/// An uploaded asset, with its content type; not subject to download faults (the real
/// fetcher of assets is Segmind itself, not the runner).
async fn asset(State(sh): State<Arc<Shared>>, Path(file): Path<String>) -> Response {
    let mut g = sh.lock();
    g.stats.asset_downloads += 1;
    let Some(a) = g.assets.get(&file) else {
        return error_response(404, "Not found");
    };
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, a.mime)
        .header(header::CONTENT_LENGTH, a.bytes.len())
        .body(Body::from(a.bytes.clone()))
        .unwrap_or_else(|_| error_response(500, "response build failed"))
}

/// Whether the video of job `id` is served at `now`: completed, and younger than
/// `file_lifetime` (the v2 record's lifetime does not apply: files outlive records).
fn video_available(sh: &Shared, id: &str, now: Instant) -> bool {
    let lifetime = sh.lock().cfg.file_lifetime;
    if sh.phase(id, now, false).0 != Phase::Completed {
        return false;
    }
    let g = sh.lock();
    let age = g.jobs.get(id).map(|j| j.age(now));
    age.zip(lifetime).is_none_or(|(age, life)| age < life)
}

fn serve(sh: &Shared, file: &str, headers: &HeaderMap) -> Response {
    let Some(id) = file.strip_suffix(".mp4") else {
        return error_response(404, "Not found");
    };
    if !video_available(sh, id, Instant::now()) {
        return error_response(404, "Not found");
    }
    let (video_len, range_support, body) = {
        let g = sh.lock();
        let body = g.jobs.get(id).map(|j| j.body.clone()).unwrap_or_default();
        (g.cfg.video_len, g.cfg.range_support, body)
    };
    let data = video_for(&body, id, video_len);
    let len = data.len();
    let range = if range_support {
        headers
            .get(header::RANGE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_range(v, len))
    } else {
        None
    };
    let mut builder = Response::builder().header(header::CONTENT_TYPE, "video/mp4");
    if range_support {
        builder = builder.header(header::ACCEPT_RANGES, "bytes");
    }
    let resp = match range {
        None => builder
            .status(StatusCode::OK)
            .header(header::CONTENT_LENGTH, len)
            .body(Body::from(data)),
        Some(Err(())) => builder
            .status(StatusCode::RANGE_NOT_SATISFIABLE)
            .header(header::CONTENT_RANGE, format!("bytes */{len}"))
            .body(Body::empty()),
        Some(Ok((start, end))) => builder
            .status(StatusCode::PARTIAL_CONTENT)
            .header(header::CONTENT_LENGTH, end + 1 - start)
            .header(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes {start}-{end}/{len}")).unwrap(),
            )
            .body(Body::from(data[start..=end].to_vec())),
    };
    resp.unwrap_or_else(|_| error_response(500, "response build failed"))
}

/// Parses a single `bytes=N-`, `bytes=N-M` or `bytes=-N` range against `len`.
/// None = ignore the header (malformed or multi-range: serve 200);
/// Some(Err) = unsatisfiable (416); Some(Ok((start, end_inclusive))).
fn parse_range(value: &str, len: usize) -> Option<Result<(usize, usize), ()>> {
    let spec = value.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (a, b) = (a.trim(), b.trim());
    if a.is_empty() {
        let n: usize = b.parse().ok()?;
        if n == 0 || len == 0 {
            return Some(Err(()));
        }
        return Some(Ok((len.saturating_sub(n), len - 1)));
    }
    let start: usize = a.parse().ok()?;
    let end: usize = if b.is_empty() { usize::MAX } else { b.parse().ok()? };
    if end < start {
        return None;
    }
    if start >= len {
        return Some(Err(()));
    }
    Some(Ok((start, end.min(len - 1))))
}

/// The video served for a request: a real, playable H.264 MP4 of the size, frames and frame
/// rate its body asks for (as the model delivers them), moving content derived from the request
/// id, padded to at least `min_len` bytes. Deterministic: the same request, the same bytes.
pub fn video_for(body: &serde_json::Value, request_id: &str, min_len: usize) -> Vec<u8> {
    super::video::render(&super::video::spec_for(body, request_id, min_len))
}

/// Placeholder bytes for `request_id` (what the fake served before it made real videos): kept
/// for tests of files that look like an MP4 and are not: an `ftyp` box (isom), an `mdat`
/// box header, then pseudo-random bytes seeded from the id. Exactly `len` bytes.
pub fn video_bytes(request_id: &str, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len.max(40));
    out.extend_from_slice(&32u32.to_be_bytes());
    out.extend_from_slice(b"ftypisom");
    out.extend_from_slice(&0x200u32.to_be_bytes());
    out.extend_from_slice(b"isomiso2avc1mp41");
    let mdat = len.saturating_sub(32).min(u32::MAX as usize) as u32;
    out.extend_from_slice(&mdat.to_be_bytes());
    out.extend_from_slice(b"mdat");
    let mut state = fnv1a(request_id);
    while out.len() < len {
        out.extend_from_slice(&splitmix64(&mut state).to_le_bytes());
    }
    out.truncate(len);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn video_bytes_look_like_mp4_and_are_deterministic() {
        let v = video_bytes("abc", 1000);
        assert_eq!(v.len(), 1000);
        assert_eq!(&v[0..4], &32u32.to_be_bytes());
        assert_eq!(&v[4..8], b"ftyp");
        assert_eq!(&v[8..12], b"isom");
        assert_eq!(&v[36..40], b"mdat");
        assert_eq!(v, video_bytes("abc", 1000));
        assert_ne!(v, video_bytes("abd", 1000));
        assert_eq!(&video_bytes("abc", 500)[40..], &v[40..500]);
        assert_eq!(video_bytes("abc", 5).len(), 5);
        assert!(video_bytes("abc", 0).is_empty());
    }

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=10-", 100), Some(Ok((10, 99))));
        assert_eq!(parse_range("bytes=10-19", 100), Some(Ok((10, 19))));
        assert_eq!(parse_range("bytes=90-200", 100), Some(Ok((90, 99))));
        assert_eq!(parse_range("bytes=-10", 100), Some(Ok((90, 99))));
        assert_eq!(parse_range("bytes=100-", 100), Some(Err(())));
        assert_eq!(parse_range("bytes=1-2,5-6", 100), None);
        assert_eq!(parse_range("items=1-2", 100), None);
        assert_eq!(parse_range("bytes=5-1", 100), None);
    }
}
