//! What went wrong with an API call, classified by what the caller must do about it.
//!
//! The engine never looks at status codes: it asks an `ApiError` whether the request may have
//! reached Segmind (`maybe_arrived`), whether to wait (`RateLimited`), stop the run, or fail the
//! job. The mapping from HTTP to these kinds lives in one place, `classify_status`.

use std::time::SystemTime;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request provably never reached the server (connect refused, DNS, TLS handshake).
    #[error("could not connect to the API: {0}")]
    NotSent(String),
    /// Sent, but no usable answer came back (timeout, reset, truncated body). A submit may have
    /// created a job.
    #[error("no answer from the API: {0}")]
    Lost(String),
    /// 500/502/503/504: server or gateway trouble. A submit may have created a job.
    #[error("API server error {status}: {message}")]
    Server { status: u16, message: String },
    /// 429. `until` is the reset instant from `x-rate-limit-reset-at-utc` or `Retry-After`.
    #[error("rate limited by the API{}", until_text(.until))]
    RateLimited { until: Option<SystemTime> },
    /// 401: the key is missing or wrong. Stop everything.
    #[error("the API key was refused (401): {0}; check SEGMIND_API_KEY")]
    Unauthorized(String),
    /// 403: this account may not use the model. Stop everything.
    #[error("the account may not use this model (403): {0}")]
    Forbidden(String),
    /// 406: not enough credits (or a wrong content type, which we never send). Stop submitting.
    #[error("out of credits (406): {0}")]
    NoCredits(String),
    /// 404 on a poll: the request record is unknown — expired (an hour after submission) if the
    /// request is that old; for a younger one an anomaly (a result endpoint that does not serve
    /// pending requests, a glitch), never a reason to pay again. The engine decides by age.
    #[error("the request was not found (404): {0}")]
    NotFound(String),
    /// 404 on submit: the model (or the base URL) is wrong. Stop everything.
    #[error("model not found at {url} (404): {message}; check SEGMIND_BASE_URL")]
    ModelNotFound { url: String, message: String },
    /// 400 and other 4xx: the request itself is wrong; permanent for this job.
    #[error("the API rejected the request ({status}): {message}")]
    Rejected { status: u16, message: String },
    /// 2xx with a body we cannot use, on a poll (a GET: asking again is safe).
    #[error("unexpected answer from the API: {0}")]
    Protocol(String),
    /// A submit answered 2xx without a request id we can follow (not JSON, too large, no
    /// `request_id`, or one that is not path-safe). Segmind has created — and bills — a job we
    /// cannot follow, and submitting more would only pay for more of them: stop the run.
    #[error("unusable answer to a submit (the job may exist and be billed): {0}; check SEGMIND_BASE_URL")]
    Unfollowable(String),
    /// 3xx from the API. Redirects are not followed, as the key goes to the API host only; it
    /// means the base URL is wrong (http for https, an old host). A 303 to a POST can mean the
    /// job was created. Stop the run.
    #[error("the API answered {status} redirecting to {location:?}; redirects are not followed (the key goes to the API host only): check SEGMIND_BASE_URL")]
    Redirected { status: u16, location: String },
}

fn until_text(until: &Option<SystemTime>) -> String {
    match until.and_then(|t| t.duration_since(SystemTime::now()).ok()) {
        Some(d) => format!(" for {:.1}s", d.as_secs_f64()),
        None => String::new(),
    }
}

/// What the run as a whole must do after an error. A submit error that both `maybe_arrived` and
/// calls for a stop (`Unfollowable`, `Redirected`) holds its job as unknown: it is never
/// resubmitted within the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccountStop {
    /// 401/403: stop all work now.
    Refused(String),
    /// 406: stop submitting; finish what is paid for.
    NoCredits(String),
}

impl ApiError {
    /// Could this request have reached Segmind and been acted on? For a submit, `true` means a
    /// billable job may exist.
    pub fn maybe_arrived(&self) -> bool {
        matches!(
            self,
            ApiError::Lost(_)
                | ApiError::Server { .. }
                | ApiError::Protocol(_)
                | ApiError::Unfollowable(_)
                | ApiError::Redirected { .. }
        )
    }

    /// The account-level stop this error calls for, if any.
    pub fn account_stop(&self) -> Option<AccountStop> {
        match self {
            ApiError::Unauthorized(_)
            | ApiError::Forbidden(_)
            | ApiError::ModelNotFound { .. }
            | ApiError::Unfollowable(_)
            | ApiError::Redirected { .. } => Some(AccountStop::Refused(self.to_string())),
            ApiError::NoCredits(_) => Some(AccountStop::NoCredits(self.to_string())),
            _ => None,
        }
    }
}

/// Maps a non-success HTTP status (with the body's `error` text) to its kind.
/// `on_submit` distinguishes 404 (model) from 404 (expired request).
pub fn classify_status(status: u16, message: String, on_submit: bool, url: &str) -> ApiError {
    match status {
        401 => ApiError::Unauthorized(message),
        403 => ApiError::Forbidden(message),
        406 => ApiError::NoCredits(message),
        404 if on_submit => ApiError::ModelNotFound {
            url: url.to_string(),
            message,
        },
        404 | 410 => ApiError::NotFound(message),
        408 => ApiError::Lost(format!("408 request timeout: {message}")),
        500..=599 => ApiError::Server { status, message },
        _ => ApiError::Rejected { status, message },
    }
}

/// Parses a rate-limit reset hint: `x-rate-limit-reset-at-utc` (RFC 3339, or epoch seconds or
/// milliseconds) or `Retry-After` (seconds or an HTTP date).
pub fn parse_reset(reset_at: Option<&str>, retry_after: Option<&str>) -> Option<SystemTime> {
    let now = SystemTime::now();
    let from_reset = reset_at.and_then(|v| parse_instant(v.trim()));
    let from_retry = retry_after.and_then(|v| {
        let v = v.trim();
        if let Ok(secs) = v.parse::<f64>() {
            (secs.is_finite() && secs >= 0.0).then(|| now + std::time::Duration::from_secs_f64(secs.min(86_400.0)))
        } else {
            httpdate::parse_http_date(v).ok()
        }
    });
    // Both present: honour the later, so that neither hint is broken.
    match (from_reset, from_retry) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

fn parse_instant(v: &str) -> Option<SystemTime> {
    if let Ok(n) = v.parse::<u64>() {
        // Epoch seconds or milliseconds.
        let ms = if n > 100_000_000_000 { n } else { n * 1000 };
        return Some(SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(ms));
    }
    crate::clock::parse_rfc3339(v).or_else(|| httpdate::parse_http_date(v).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn reset_hints_from_either_header() {
        let now = SystemTime::now();
        let t = parse_reset(None, Some("3")).unwrap();
        let d = t.duration_since(now).unwrap();
        assert!(
            d > Duration::from_millis(2900) && d < Duration::from_millis(3100),
            "{d:?}"
        );
        let date = httpdate::fmt_http_date(now + Duration::from_secs(10));
        assert!(parse_reset(None, Some(&date)).unwrap() > now + Duration::from_secs(8));
        assert_eq!(
            parse_reset(Some("1795310400"), None).unwrap(),
            UNIX_EPOCH + Duration::from_secs(1_795_310_400)
        );
        assert!(parse_reset(Some("garbage"), None).is_none());
    }

    #[test]
    fn statuses_map_to_what_the_caller_must_do() {
        assert!(matches!(
            classify_status(401, "x".into(), false, ""),
            ApiError::Unauthorized(_)
        ));
        assert!(classify_status(403, "x".into(), true, "").account_stop().is_some());
        assert!(matches!(
            classify_status(406, "x".into(), true, "").account_stop(),
            Some(AccountStop::NoCredits(_))
        ));
        assert!(matches!(
            classify_status(404, "x".into(), false, ""),
            ApiError::NotFound(_)
        ));
        assert!(matches!(
            classify_status(404, "x".into(), true, ""),
            ApiError::ModelNotFound { .. }
        ));
        assert!(classify_status(502, "x".into(), true, "").maybe_arrived());
        assert!(!classify_status(400, "x".into(), true, "").maybe_arrived());
        assert!(!ApiError::NotSent("refused".into()).maybe_arrived());
    }
}
