//! The fake storage upload (`POST /upload-asset`, API.md "Storage upload"): data URLs in,
//! persistent CDN URLs out. Every call stores new assets, even for identical bytes (the real
//! call is not idempotent); nothing is stored unless every item of the call is a valid
//! base64 image. Also answers whether a submit names an asset URL the fake never issued.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::Response;
use bytes::Bytes;
use serde_json::{json, Map, Value};

use super::gate::{gate, is_json, Scope};
use super::respond::{error_response, json_response, with_fault};
use super::state::Shared;
use super::{FaultTarget, UploadField};

/// One stored asset.
pub(super) struct Asset {
    /// The content type it is served with.
    pub mime: &'static str,
    pub bytes: Bytes,
}

/// Accepted media types: (as written in the data URL, file extension, served content type).
const TYPES: &[(&str, &str, &str)] = &[
    ("image/png", "png", "image/png"),
    ("image/jpeg", "jpg", "image/jpeg"),
    ("image/jpg", "jpg", "image/jpeg"),
    ("image/webp", "webp", "image/webp"),
    ("image/gif", "gif", "image/gif"),
    ("image/bmp", "bmp", "image/bmp"),
    ("image/x-ms-bmp", "bmp", "image/bmp"),
];

/// A decoded item of an upload: extension, served content type, bytes.
type Decoded = (&'static str, &'static str, Vec<u8>);

pub(super) async fn upload(State(sh): State<Arc<Shared>>, headers: HeaderMap, body: Body) -> Response {
    sh.lock().stats.uploads += 1;
    let fault = sh.take_fault(FaultTarget::Upload);
    with_fault(fault, async move { upload_inner(&sh, &headers, body).await }).await
}

async fn upload_inner(sh: &Shared, headers: &HeaderMap, body: Body) -> Response {
    if let Err(resp) = gate(sh, headers, Scope::Side) {
        return resp;
    }
    if !is_json(headers) {
        return error_response(406, "Content-Type must be application/json");
    }
    let max = sh.lock().cfg.upload_max_bytes;
    let too_large = || error_response(413, format!("Request body too large (at most {max} bytes)"));
    let announced = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > max as u64) {
        return too_large();
    }
    let Ok(bytes) = axum::body::to_bytes(body, max).await else {
        return too_large();
    };
    let items = match parse_request(&bytes) {
        Ok(items) => items,
        Err(msg) => return error_response(400, msg),
    };
    let (urls, field) = {
        let mut g = sh.lock();
        let mut urls = Vec::with_capacity(items.len());
        for (ext, mime, data) in items {
            let name = format!("{}.{ext}", uuid::Uuid::new_v4());
            g.stats.assets += 1;
            g.stats.asset_bytes += data.len() as u64;
            g.assets.insert(
                name.clone(),
                Asset {
                    mime,
                    bytes: Bytes::from(data),
                },
            );
            urls.push(format!("{}/assets/{name}", sh.cdn_url));
        }
        let field = match g.cfg.upload_field {
            UploadField::FileUrls => "file_urls",
            UploadField::Urls => "urls",
        };
        (urls, field)
    };
    let message = format!("{} file(s) uploaded successfully", urls.len());
    json_response(200, json!({ field: urls, "message": message }))
}

/// The decoded items of an upload body, or the 400 message naming the first bad item.
fn parse_request(body: &[u8]) -> Result<Vec<Decoded>, String> {
    let v: Value = serde_json::from_slice(body).map_err(|_| "Request body must be a JSON object".to_string())?;
    let list = v
        .get("data_urls")
        .and_then(Value::as_array)
        .ok_or("data_urls must be a list of data URLs")?;
    if list.is_empty() {
        return Err("data_urls must not be empty".into());
    }
    let item = |v: &Value| match v.as_str() {
        Some(s) => decode_data_url(s),
        None => Err("not a string".to_string()),
    };
    list.iter()
        .enumerate()
        .map(|(i, v)| item(v).map_err(|e| format!("data_urls[{i}]: {e}")))
        .collect()
}

/// `data:<image type>[;…];base64,<data>` → its extension, served type and bytes.
fn decode_data_url(s: &str) -> Result<Decoded, String> {
    let rest = s
        .get(..5)
        .filter(|p| p.eq_ignore_ascii_case("data:"))
        .map(|_| &s[5..])
        .ok_or("not a data URL")?;
    let (head, data) = rest.split_once(',').ok_or("not a data URL (no comma)")?;
    let mut parts = head.split(';');
    let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
    let &(_, ext, served) = TYPES.iter().find(|t| t.0 == media).ok_or_else(|| {
        format!("unsupported media type {media:?} (accepted: image/png, image/jpeg, image/webp, image/gif, image/bmp)")
    })?;
    if !parts.any(|p| p.trim().eq_ignore_ascii_case("base64")) {
        return Err("the data URL must be base64-encoded".into());
    }
    let bytes = base64_decode(data.trim()).ok_or("invalid base64")?;
    if bytes.is_empty() {
        return Err("empty file".into());
    }
    Ok((ext, served, bytes))
}

/// Standard base64 (RFC 4648 alphabet; padding optional but, if present, correct).
fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let body = s.trim_end_matches('=');
    let pad = s.len() - body.len();
    if pad > 2 || (pad > 0 && !s.len().is_multiple_of(4)) || body.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(body.len() / 4 * 3 + 2);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in body.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    // Canonical encodings leave the unused low bits zero.
    (acc == 0).then_some(out)
}

/// The error of a job whose `image` or `last_image` is an asset URL of this fake's CDN that
/// was never issued (like a real unreachable image); other URLs are not checked.
pub(super) fn fetch_error(cdn_url: &str, assets: &HashMap<String, Asset>, body: &Map<String, Value>) -> Option<String> {
    let prefix = format!("{cdn_url}/assets/");
    ["image", "last_image"]
        .iter()
        .filter_map(|k| body.get(*k)?.as_str())
        .find(|url| {
            url.strip_prefix(&prefix)
                .and_then(|name| name.split(['?', '#']).next())
                .is_some_and(|name| !assets.contains_key(name))
        })
        .map(|url| format!("Failed to fetch image from URL {url}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_decodes_standard_and_rejects_junk() {
        assert_eq!(base64_decode("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(base64_decode("aGVsbG8").unwrap(), b"hello");
        assert_eq!(base64_decode("aGVsbG8h").unwrap(), b"hello!");
        assert_eq!(base64_decode("AP8=").unwrap(), [0u8, 255]);
        assert_eq!(base64_decode("").unwrap(), b"");
        for bad in ["aGVsbG8===", "aGVsb", "aGV*bG8=", "aGVs bG8=", "aGVsbG=="] {
            assert!(base64_decode(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn data_urls_name_their_problem() {
        let (ext, mime, b) = decode_data_url("data:image/jpeg;base64,AP8=").unwrap();
        assert_eq!((ext, mime, b), ("jpg", "image/jpeg", vec![0, 255]));
        assert_eq!(decode_data_url("DATA:Image/PNG;base64,AA==").unwrap().0, "png");
        let err = |s: &str| decode_data_url(s).unwrap_err();
        assert!(err("data:text/plain;base64,AA==").contains("unsupported media type \"text/plain\""));
        assert!(err("data:image/svg+xml;base64,AA==").contains("unsupported"));
        assert!(err("data:image/png,AA==").contains("base64"));
        assert_eq!(err("data:image/png;base64,A*=="), "invalid base64");
        assert_eq!(err("data:image/png;base64,"), "empty file");
        assert_eq!(err("https://example.com/a.png"), "not a data URL");
    }

    #[test]
    fn fetch_error_only_for_unissued_assets_of_this_cdn() {
        let mut assets = HashMap::new();
        let asset = || Asset {
            mime: "image/png",
            bytes: Bytes::new(),
        };
        assets.insert("known.png".to_string(), asset());
        let cdn = "http://127.0.0.1:9";
        let body = |image: &str| {
            let v = json!({"image": "https://example.com/cat.png", "last_image": image});
            v.as_object().unwrap().clone()
        };
        assert_eq!(fetch_error(cdn, &assets, &body("https://example.com/b.png")), None);
        assert_eq!(
            fetch_error(cdn, &assets, &body(&format!("{cdn}/assets/known.png"))),
            None
        );
        assert_eq!(
            fetch_error(cdn, &assets, &body(&format!("{cdn}/assets/known.png?x=1"))),
            None
        );
        let unknown = format!("{cdn}/assets/nope.png");
        assert_eq!(
            fetch_error(cdn, &assets, &body(&unknown)),
            Some(format!("Failed to fetch image from URL {unknown}"))
        );
    }
}
