//! Where the API key may go, and the HTTP plumbing that keeps it there for the side services.
//!
//! Segmind has three hosts that take the key: the v2 API, the request history and the storage
//! upload. [`resolve`] decides them once (defaults, a rehearsal's `SEGMIND_BASE_URL`, explicit
//! overrides); nothing else in the crate names a keyed host. The key never goes to the video
//! or image host, nor to any URL an answer names.
//!
//! Invariants of [`keyed_client`], shared by the v2 API, history and upload clients: redirects are
//! never followed (a 3xx would carry the key to wherever it points), every answer is read with
//! a size cap, and every failure comes back as an `ApiError` classified as for the v2 API.

use std::time::Duration;

use reqwest::header::HeaderValue;
use reqwest::{Response, Url};
use serde_json::Value;

use super::error::{self, ApiError};
use super::{error_chain, header, ApiKey, DEFAULT_BASE_URL};

/// The request history's host in production (API.md "Request history").
pub const DEFAULT_HISTORY_URL: &str = "https://api.spotprod.segmind.com/inference-request/request-history";
/// The storage upload's endpoint in production (API.md "Storage upload").
pub const DEFAULT_UPLOAD_URL: &str = "https://workflows-api.segmind.com/upload-asset";

/// The path of the history under a rehearsal's `SEGMIND_BASE_URL`.
const HISTORY_PATH: &str = "inference-request/request-history";
/// The path of the upload under a rehearsal's `SEGMIND_BASE_URL`.
const UPLOAD_PATH: &str = "upload-asset";

/// The three endpoints that receive the key, without trailing slashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hosts {
    /// The v2 API base (`SEGMIND_BASE_URL`), for `ApiClient::new`.
    pub api: String,
    /// The request-history list endpoint; by-id lookups append `/{request_id}`.
    pub history: String,
    /// The upload endpoint, POSTed to as is.
    pub upload: String,
}

/// Decides the keyed endpoints. Blank values count as unset. With a `base` (a rehearsal
/// against a fake or a proxy), history and upload default to paths under it, so that a
/// rehearsal never sends its key to production; explicit `history`/`upload` win either way.
/// The error names the variable at fault.
pub fn resolve(base: Option<&str>, history: Option<&str>, upload: Option<&str>) -> Result<Hosts, String> {
    let api = match set(base) {
        Some(b) => checked("SEGMIND_BASE_URL", b)?,
        None => DEFAULT_BASE_URL.to_string(),
    };
    let under_base = |path: &str| set(base).map(|_| format!("{api}/{path}"));
    let history = match set(history) {
        Some(h) => checked("SEGMIND_HISTORY_URL", h)?,
        None => under_base(HISTORY_PATH).unwrap_or_else(|| DEFAULT_HISTORY_URL.to_string()),
    };
    let upload = match set(upload) {
        Some(u) => checked("SEGMIND_UPLOAD_URL", u)?,
        None => under_base(UPLOAD_PATH).unwrap_or_else(|| DEFAULT_UPLOAD_URL.to_string()),
    };
    Ok(Hosts { api, history, upload })
}

/// [`resolve`] from `SEGMIND_BASE_URL`, `SEGMIND_HISTORY_URL` and `SEGMIND_UPLOAD_URL`.
pub fn from_env() -> Result<Hosts, String> {
    let var = |name: &str| match std::env::var(name) {
        Ok(v) => Ok(Some(v)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => Err(format!("{name} is not valid UTF-8")),
    };
    let (base, history, upload) = (
        var("SEGMIND_BASE_URL")?,
        var("SEGMIND_HISTORY_URL")?,
        var("SEGMIND_UPLOAD_URL")?,
    );
    resolve(base.as_deref(), history.as_deref(), upload.as_deref())
}

/// A set, non-blank value, trimmed.
fn set(v: Option<&str>) -> Option<&str> {
    v.map(str::trim).filter(|v| !v.is_empty())
}

/// `value` as an http(s) URL with a host and no query or fragment (paths are appended to it),
/// without a trailing slash.
fn checked(name: &str, value: &str) -> Result<String, String> {
    let url = Url::parse(value).map_err(|e| format!("{name} {value:?}: must be an http(s) URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
        return Err(format!("{name} {value:?}: must be an http(s) URL"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!("{name} {value:?}: must not have a query or fragment"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!("{name} {value:?}: must not carry credentials"));
    }
    Ok(url.as_str().trim_end_matches('/').to_string())
}

/// Parses an endpoint handed to a side client's constructor (normally from [`resolve`]).
pub(super) fn endpoint(what: &str, url: &str) -> anyhow::Result<Url> {
    let url = Url::parse(url.trim().trim_end_matches('/')).map_err(|e| anyhow::anyhow!("{what} {url:?}: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        anyhow::bail!("{what} {url:?} must be an http(s) URL");
    }
    Ok(url)
}

/// The HTTP client of a keyed side service and the key as a sensitive header value (so that
/// reqwest's own debug output never shows it). Redirects are off: see the module doc.
pub(super) fn keyed_client(key: &ApiKey, timeout: Duration) -> anyhow::Result<(reqwest::Client, HeaderValue)> {
    let mut key_value = HeaderValue::from_str(&key.0)?;
    key_value.set_sensitive(true);
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(10).min(timeout))
        .timeout(timeout)
        .user_agent(concat!("wanbatch/", env!("CARGO_PKG_VERSION")))
        .build()?;
    Ok((http, key_value))
}

/// Reads a side service's answer: 2xx → its JSON (any JSON value: lists are legitimate here);
/// 429 → `RateLimited` with the reset hint; 3xx → `Redirected` (not followed); other codes →
/// `error::classify_status` as for a v2 poll; a 2xx that is not JSON → `Protocol`.
pub(super) async fn read_answer(resp: Response, max: usize) -> Result<Value, ApiError> {
    let status = resp.status().as_u16();
    if status == 429 {
        let until = error::parse_reset(
            header(&resp, "x-rate-limit-reset-at-utc").as_deref(),
            header(&resp, "retry-after").as_deref(),
        );
        return Err(ApiError::RateLimited { until });
    }
    if (300..400).contains(&status) {
        let location = header(&resp, "location").unwrap_or_default();
        return Err(ApiError::Redirected {
            status,
            location: location.chars().take(200).collect(),
        });
    }
    let url = resp.url().to_string();
    let bytes = read_capped(resp, max).await;
    if !(200..300).contains(&status) {
        let text = bytes.unwrap_or_default();
        let message = serde_json::from_slice::<Value>(&text)
            .ok()
            .and_then(|v| v.get("error").or_else(|| v.get("message")).cloned())
            .map(|e| e.as_str().map_or_else(|| e.to_string(), str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&text[..text.len().min(200)]).into_owned());
        return Err(error::classify_status(status, message, false, &url));
    }
    let bytes = bytes?;
    serde_json::from_slice::<Value>(&bytes).map_err(|_| {
        ApiError::Protocol(format!(
            "HTTP {status} with a body that is not JSON: {:?}",
            String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
        ))
    })
}

/// The body, at most `max` bytes (a longer one is a `Protocol` error, not a truncation).
async fn read_capped(mut resp: Response, max: usize) -> Result<Vec<u8>, ApiError> {
    if let Some(n) = resp.content_length().filter(|&n| n > max as u64) {
        return Err(ApiError::Protocol(format!("answer of {n} bytes is too large")));
    }
    let mut buf = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| ApiError::Lost(error_chain(&e)))? {
        if buf.len() + chunk.len() > max {
            return Err(ApiError::Protocol(format!("answer larger than {max} bytes")));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf)
}

/// A short text of a JSON value for error messages (never a whole page of rows).
pub(super) fn snippet(v: &Value) -> String {
    v.to_string().chars().take(200).collect()
}

/// Whether `s` is an absolute http(s) URL with a host.
pub(super) fn is_http_url(s: &str) -> bool {
    Url::parse(s).is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some_and(|h| !h.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROD: (&str, &str, &str) = (DEFAULT_BASE_URL, DEFAULT_HISTORY_URL, DEFAULT_UPLOAD_URL);

    fn hosts(h: &Hosts) -> (&str, &str, &str) {
        (&h.api, &h.history, &h.upload)
    }

    #[test]
    fn nothing_set_means_production() {
        assert_eq!(hosts(&resolve(None, None, None).unwrap()), PROD);
        let blank = resolve(Some(""), Some("  "), Some("\t")).unwrap();
        assert_eq!(hosts(&blank), PROD, "blank counts as unset");
    }

    #[test]
    fn a_rehearsal_base_moves_history_and_upload_under_it() {
        let h = resolve(Some("http://127.0.0.1:4100/"), None, None).unwrap();
        assert_eq!(
            hosts(&h),
            (
                "http://127.0.0.1:4100",
                "http://127.0.0.1:4100/inference-request/request-history",
                "http://127.0.0.1:4100/upload-asset"
            )
        );
        let h = resolve(Some("https://proxy.example/segmind"), None, None).unwrap();
        assert_eq!(
            h.history,
            "https://proxy.example/segmind/inference-request/request-history"
        );
        assert_eq!(h.upload, "https://proxy.example/segmind/upload-asset");
    }

    #[test]
    fn overrides_win_with_or_without_a_base() {
        let (hist, up) = ("https://h.example/hist/", "https://u.example/up");
        let h = resolve(None, Some(hist), None).unwrap();
        assert_eq!(
            hosts(&h),
            (DEFAULT_BASE_URL, "https://h.example/hist", DEFAULT_UPLOAD_URL)
        );
        let h = resolve(None, None, Some(up)).unwrap();
        assert_eq!(hosts(&h), (DEFAULT_BASE_URL, DEFAULT_HISTORY_URL, up));
        let h = resolve(None, Some(hist), Some(up)).unwrap();
        assert_eq!(hosts(&h), (DEFAULT_BASE_URL, "https://h.example/hist", up));
        let base = "http://127.0.0.1:9";
        let h = resolve(Some(base), Some(hist), None).unwrap();
        assert_eq!(
            hosts(&h),
            (base, "https://h.example/hist", "http://127.0.0.1:9/upload-asset")
        );
        let h = resolve(Some(base), None, Some(up)).unwrap();
        assert_eq!(
            hosts(&h),
            (base, "http://127.0.0.1:9/inference-request/request-history", up)
        );
        let h = resolve(Some(base), Some(hist), Some(up)).unwrap();
        assert_eq!(hosts(&h), (base, "https://h.example/hist", up));
    }

    #[test]
    fn bad_values_are_refused_naming_the_variable() {
        type Case<'a> = (Option<&'a str>, Option<&'a str>, Option<&'a str>, &'a str);
        let cases: &[Case] = &[
            (
                Some("ftp://x"),
                None,
                None,
                "SEGMIND_BASE_URL \"ftp://x\": must be an http(s) URL",
            ),
            (
                None,
                Some("ftp://x"),
                None,
                "SEGMIND_HISTORY_URL \"ftp://x\": must be an http(s) URL",
            ),
            (
                None,
                None,
                Some("ftp://x"),
                "SEGMIND_UPLOAD_URL \"ftp://x\": must be an http(s) URL",
            ),
            (
                None,
                Some("history.example"),
                None,
                "SEGMIND_HISTORY_URL \"history.example\": must be",
            ),
            (
                None,
                None,
                Some("http://"),
                "SEGMIND_UPLOAD_URL \"http://\": must be an http(s) URL",
            ),
            (None, Some("https://h.example/x?a=1"), None, "SEGMIND_HISTORY_URL"),
            (None, None, Some("https://u.example/#f"), "query or fragment"),
            (None, None, Some("https://me:pw@u.example/"), "credentials"),
            // A bad base is refused even when both side hosts are overridden: the API uses it.
            (
                Some("nope"),
                Some("https://h.example"),
                Some("https://u.example"),
                "SEGMIND_BASE_URL",
            ),
            (
                Some("http://127.0.0.1:9"),
                Some("file:///etc/passwd"),
                None,
                "SEGMIND_HISTORY_URL",
            ),
        ];
        for (base, history, upload, want) in cases {
            let err = resolve(*base, *history, *upload).unwrap_err();
            assert!(
                err.starts_with(want) || err.contains(want),
                "{base:?} {history:?} {upload:?}: {err}"
            );
        }
    }

    #[test]
    fn urls_are_checked_for_scheme_and_host() {
        assert!(is_http_url("https://images.segmind.com/assets/a.png"));
        assert!(is_http_url("http://127.0.0.1:9/x"));
        for bad in [
            "",
            "ftp://x/a",
            "/assets/a.png",
            "data:image/png;base64,AA==",
            "https://",
        ] {
            assert!(!is_http_url(bad), "{bad}");
        }
    }
}
