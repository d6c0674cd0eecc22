//! The storage-upload client (API.md "Storage upload"): local images in, persistent public
//! URLs out, so that Segmind's image fetcher reads them from its own host.
//!
//! - `POST {UPLOAD}` with `{"data_urls": ["data:image/png;base64,…", …]}` and
//!   `Content-Type: application/json`; the answer's URLs are under `file_urls` (the SDK) or
//!   `urls` (the docs), or `data.<either>`, or a top-level list. There must be exactly one
//!   http(s) URL per data URL sent, in order, else `ApiError::Protocol`.
//! - The key goes to the upload host only (see `hosts`): no redirect is followed, and the
//!   returned URLs are fetched by Segmind (or anyone) without the key.
//! - **Not idempotent**: every call stores new assets (they cannot be deleted), and a retry
//!   after a lost answer (`ApiError::maybe_arrived`) uploads again. Record the URLs before
//!   acting on them, and reuse them across runs: they are persistent.

use std::time::Duration;

use reqwest::header::{HeaderValue, CONTENT_TYPE};
use reqwest::Url;
use serde_json::Value;

use super::hosts::{endpoint, is_http_url, keyed_client, read_answer, snippet};
use super::{ApiError, ApiKey, MAX_BODY};

/// The upload client. Cheap to clone; holds the key (never shown by `Debug`).
#[derive(Clone)]
pub struct UploadClient {
    http: reqwest::Client,
    url: Url,
    key: HeaderValue,
}

impl std::fmt::Debug for UploadClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UploadClient")
            .field("url", &self.url.as_str())
            .finish_non_exhaustive()
    }
}

impl UploadClient {
    /// `url` is the upload endpoint (`Hosts::upload`); `timeout` bounds each call, body
    /// included, so size it for the images sent.
    pub fn new(url: &str, key: &ApiKey, timeout: Duration) -> anyhow::Result<UploadClient> {
        let url = endpoint("the upload URL", url)?;
        let (http, key) = keyed_client(key, timeout)?;
        Ok(UploadClient { http, url, key })
    }

    /// The endpoint (no key in it), for messages.
    pub fn url(&self) -> &str {
        self.url.as_str()
    }

    /// Uploads the files (as data URLs, see [`data_url`]) in one call; answers their URLs in
    /// the same order. Nothing is sent for an empty list. Not idempotent: see the module doc.
    pub async fn upload(&self, data_urls: &[String]) -> Result<Vec<String>, ApiError> {
        if data_urls.is_empty() {
            return Ok(Vec::new());
        }
        let body = serde_json::json!({ "data_urls": data_urls }).to_string();
        let resp = self
            .http
            .post(self.url.clone())
            .header("x-api-key", self.key.clone())
            .header(CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .map_err(super::send_error)?;
        let answer = read_answer(resp, MAX_BODY).await?;
        urls_of(&answer, data_urls.len())
    }
}

/// The URLs of an upload answer (shapes in the module doc), exactly `expected` of them.
fn urls_of(answer: &Value, expected: usize) -> Result<Vec<String>, ApiError> {
    let list = |v: &Value| -> Option<Vec<Value>> {
        match v {
            Value::Array(a) => Some(a.clone()),
            Value::Object(m) => ["file_urls", "urls"]
                .iter()
                .find_map(|k| m.get(*k)?.as_array())
                .cloned(),
            _ => None,
        }
    };
    let urls = list(answer)
        .or_else(|| answer.get("data").and_then(list))
        .ok_or_else(|| ApiError::Protocol(format!("upload: unknown shape: {}", snippet(answer))))?;
    if urls.len() != expected {
        return Err(ApiError::Protocol(format!(
            "upload of {expected} file(s) answered {} URL(s): {}",
            urls.len(),
            snippet(answer)
        )));
    }
    urls.iter()
        .map(|u| {
            u.as_str()
                .map(str::trim)
                .filter(|s| is_http_url(s))
                .map(str::to_string)
                .ok_or_else(|| ApiError::Protocol(format!("upload answered a URL that is not http(s): {}", snippet(u))))
        })
        .collect()
}

/// `data:<media_type>;base64,<bytes>`, the form the upload takes.
pub fn data_url(media_type: &str, bytes: &[u8]) -> String {
    format!("data:{media_type};base64,{}", base64(bytes))
}

/// The media type of an image file the upload accepts (the SDK's list: png, jpg/jpeg, gif,
/// bmp, webp, svg, ico, tif/tiff), by the file name's extension, case-insensitive.
pub fn image_media_type(file_name: &str) -> Option<&'static str> {
    let ext = file_name.rsplit_once('.')?.1.to_ascii_lowercase();
    Some(match ext.as_str() {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "bmp" => "image/bmp",
        "webp" => "image/webp",
        "svg" => "image/svg+xml",
        "ico" => "image/x-icon",
        "tif" | "tiff" => "image/tiff",
        _ => return None,
    })
}

/// Standard base64 with padding (RFC 4648 §4). Hand-written: twenty lines spare the crate a
/// dependency for one call site.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn base64_matches_the_rfc_4648_test_vectors() {
        let vectors = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, encoded) in vectors {
            assert_eq!(base64(plain.as_bytes()), encoded, "{plain:?}");
        }
        // Every alphabet position, including the two symbols that differ from base64url.
        assert_eq!(base64(&[0xfb, 0xff, 0xbf]), "+/+/");
        assert_eq!(base64(&[0, 0x10, 0x83]), "ABCD");
        assert_eq!(data_url("image/png", b"hello"), "data:image/png;base64,aGVsbG8=");
    }

    #[test]
    fn media_types_by_extension() {
        assert_eq!(image_media_type("a/cat.PNG"), Some("image/png"));
        assert_eq!(image_media_type("cat.jpeg"), Some("image/jpeg"));
        assert_eq!(image_media_type("cat.tif"), Some("image/tiff"));
        assert_eq!(image_media_type("cat.txt"), None);
        assert_eq!(image_media_type("cat"), None);
    }

    #[test]
    fn answers_give_one_http_url_per_file_or_a_protocol_error() {
        let a = "https://images.segmind.com/assets/a.png";
        let b = "https://images.segmind.com/assets/b.png";
        for answer in [
            json!({"file_urls": [a, b], "message": "ok"}),
            json!({"urls": [a, b]}),
            json!({"data": {"file_urls": [a, b]}}),
            json!([a, b]),
        ] {
            assert_eq!(urls_of(&answer, 2).unwrap(), [a, b], "{answer}");
        }
        let protocol = |answer: Value, n: usize| match urls_of(&answer, n) {
            Err(ApiError::Protocol(m)) => m,
            other => panic!("{answer}: {other:?}"),
        };
        assert!(protocol(json!({"file_urls": [a]}), 2).contains("answered 1 URL"));
        assert!(protocol(json!({"message": "uploaded"}), 1).contains("unknown shape"));
        assert!(protocol(json!({"urls": ["/assets/a.png"]}), 1).contains("not http(s)"));
        assert!(protocol(json!({"urls": [7]}), 1).contains("not http(s)"));
        assert!(protocol(json!("done"), 1).contains("unknown shape"));
    }
}
