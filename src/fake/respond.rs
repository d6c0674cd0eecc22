//! Response helpers shared by the API and CDN handlers: JSON answers, fault
//! application (statuses, delays, bodies that break mid-stream).

use std::future::Future;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{json, Value};

use super::FaultKind;

/// A JSON answer with the given status.
pub(super) fn json_response(status: u16, body: Value) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, axum::Json(body)).into_response()
}

/// `{"error": msg}` with the given status.
pub(super) fn error_response(status: u16, msg: impl Into<String>) -> Response {
    json_response(status, json!({ "error": msg.into() }))
}

/// The answer of an injected `Status(code)` fault.
fn fault_status(code: u16) -> Response {
    let reason = StatusCode::from_u16(code)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error");
    error_response(code, format!("{reason} (simulated by fake server)"))
}

/// Applies an optional fault around the normal handling `normal` (which is not
/// run at all for `Status` and `Drop`).
pub(super) async fn with_fault(fault: Option<FaultKind>, normal: impl Future<Output = Response>) -> Response {
    match fault {
        None => normal.await,
        Some(FaultKind::Status(code)) => fault_status(code),
        Some(FaultKind::Drop) => cut(error_response(200, "connection dropped by fake server"), Some(0)).await,
        Some(FaultKind::Delay(ms)) => {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            normal.await
        }
        Some(FaultKind::AcceptThenDelay(ms)) => {
            let resp = normal.await;
            tokio::time::sleep(Duration::from_millis(ms)).await;
            resp
        }
        Some(FaultKind::Truncate(n)) => cut(normal.await, Some(n as usize)).await,
        Some(FaultKind::AcceptThenStatus(code)) => {
            let resp = normal.await;
            if resp.status().is_success() {
                fault_status(code)
            } else {
                resp
            }
        }
        Some(FaultKind::AcceptThenDrop) => {
            let resp = normal.await;
            if resp.status().is_success() {
                cut(resp, None).await
            } else {
                resp
            }
        }
    }
}

/// Rebuilds `resp` so that it announces its full Content-Length but the body
/// stream ends with an error after `keep` bytes (None = half; always fewer than
/// the full length), so hyper aborts the connection and the client sees a
/// broken transfer rather than a clean short body.
pub(super) async fn cut(resp: Response, keep: Option<usize>) -> Response {
    let (mut parts, body) = resp.into_parts();
    let full = axum::body::to_bytes(body, usize::MAX).await.unwrap_or_default();
    let len = full.len();
    let keep = keep.unwrap_or(len / 2).min(len.saturating_sub(1));
    // Announce at least one byte, so that even an empty body is "incomplete".
    let announced = len.max(1);
    parts
        .headers
        .insert(header::CONTENT_LENGTH, HeaderValue::from(announced));
    let head: Bytes = full.slice(..keep);
    let first = futures_util::stream::iter((!head.is_empty()).then_some(Ok::<Bytes, std::io::Error>(head)));
    let fail = futures_util::stream::once(async {
        // Give hyper time to flush the headers and the kept bytes first.
        tokio::time::sleep(Duration::from_millis(30)).await;
        Err::<Bytes, std::io::Error>(std::io::Error::new(
            std::io::ErrorKind::ConnectionAborted,
            "fake server: connection dropped mid-body",
        ))
    });
    use futures_util::StreamExt as _;
    Response::from_parts(parts, Body::from_stream(first.chain(fail)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn cut_announces_full_length_and_errors() {
        let resp = cut(error_response(200, "hello world"), Some(3)).await;
        let announced: usize = resp.headers()[header::CONTENT_LENGTH]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(announced > 3);
        assert!(axum::body::to_bytes(resp.into_body(), usize::MAX).await.is_err());
    }
}
