//! Reading history answers whose shape is not documented (API.md: "read tolerantly"). Each
//! rule names the shapes it accepts; an answer matching none is `ApiError::Protocol` with
//! "unknown shape", so the caller falls back instead of acting on a guess.
//!
//! - Rows: a top-level array, or an array under `data`, `rows`, `items` or `results`, or one
//!   level deeper under the same names (`{"data": {"items": [...]}}`).
//! - Pagination: `page`, `per_page`, `total`, `total_pages`, `has_more` (and camelCase or
//!   `page_size`/`total_count` spellings) beside the rows, at the top, or under `pagination` or
//!   `meta`; all optional. Absent, the caller pages until a short page.
//! - A row: `request_id` (path-safe, else the row is skipped and counted); status from
//!   `model_status` or `status`; creation time from `model_created`, `created_at` or
//!   `createdAt` in RFC 3339 (fraction, `Z` or offset optional), `YYYY-MM-DD HH:MM:SS` (UTC),
//!   `YYYY-MM-DD`, or epoch seconds or milliseconds (number or numeric text); numbers may come
//!   as numeric text; `request_body` as an object or as JSON text holding one.

use serde_json::{Map, Value};

use super::HistoryQuery;
use crate::api::hosts::{is_http_url, snippet};
use crate::api::{safe_request_id, ApiError};

/// A request's state as the history reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HistoryStatus {
    /// `COMPLETED` (also `COMPLETE`, `SUCCEEDED`, `SUCCESS`): ran and, if billed, charged.
    Completed,
    /// `FAILED` (also `FAILURE`, `ERROR`): not billed.
    Failed,
    /// `PENDING`, `QUEUED`, `PROCESSING`, `RUNNING`, `IN_PROGRESS`, `STARTED`.
    Pending,
    /// Anything else, as written (empty when the row has no status).
    Other(String),
}

impl HistoryStatus {
    /// Case-insensitive; `-` and spaces read as `_`.
    pub fn parse(s: &str) -> HistoryStatus {
        let norm = s.trim().to_ascii_uppercase().replace(['-', ' '], "_");
        match norm.as_str() {
            "COMPLETED" | "COMPLETE" | "SUCCEEDED" | "SUCCESS" => HistoryStatus::Completed,
            "FAILED" | "FAILURE" | "ERROR" => HistoryStatus::Failed,
            "PENDING" | "QUEUED" | "PROCESSING" | "RUNNING" | "IN_PROGRESS" | "STARTED" => HistoryStatus::Pending,
            _ => HistoryStatus::Other(s.trim().to_string()),
        }
    }
}

/// One history row (one per output of a request: see [`dedup`]).
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryRow {
    /// The v2 request id (path-safe).
    pub request_id: String,
    pub model_name: Option<String>,
    pub status: HistoryStatus,
    /// `credits_deduction` (USD); each duplicate row of a request carries the full cost.
    pub credits: Option<f64>,
    /// The inputs as sent: a JSON object.
    pub request_body: Option<Value>,
    /// Where the output is (an http(s) URL on the file host: fetch it without the key).
    pub generation_url: Option<String>,
    /// Creation instant, ms since the Unix epoch.
    pub created_at_ms: Option<i64>,
    pub latency_ms: Option<f64>,
    /// The failure message, for failed requests.
    pub error: Option<String>,
}

/// One page of the list.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct HistoryPage {
    /// The usable rows, in the service's order, duplicates included.
    pub rows: Vec<HistoryRow>,
    /// Rows of the whole listing, if the answer said.
    pub total: Option<u64>,
    /// Whether a next page exists, if the answer said or its numbers tell.
    pub has_more: Option<bool>,
    /// Entries skipped for lack of a usable `request_id` (for the caller's logs).
    pub skipped: usize,
}

impl HistoryPage {
    /// Whether this is the last page for a query of `per_page` rows: as the answer says, else
    /// when the page came back short.
    pub fn is_last(&self, per_page: u32) -> bool {
        match self.has_more {
            Some(more) => !more,
            None => self.rows.len() + self.skipped < per_page.clamp(1, super::MAX_PER_PAGE) as usize,
        }
    }
}

/// One row per request id, the first seen of each, order kept. Sum `credits` after this:
/// each of a request's rows carries its full cost.
pub fn dedup(rows: Vec<HistoryRow>) -> Vec<HistoryRow> {
    let mut seen = std::collections::HashSet::new();
    rows.into_iter().filter(|r| seen.insert(r.request_id.clone())).collect()
}

/// Where rows may sit in an envelope.
const ENVELOPES: [&str; 4] = ["data", "rows", "items", "results"];

/// The list answer → a page (rules in the module doc). `asked` fills in page and per_page
/// when the answer gives a total without them.
pub(super) fn parse_page(body: &Value, asked: &HistoryQuery) -> Result<HistoryPage, ApiError> {
    let (entries, container) = find_rows(body).ok_or_else(|| unknown_shape(body))?;
    let mut page = HistoryPage::default();
    for entry in entries {
        match parse_row(entry) {
            Some(row) => page.rows.push(row),
            None => page.skipped += 1,
        }
    }
    let mut places: Vec<&Map<String, Value>> = Vec::new();
    for obj in [container, body.as_object()].into_iter().flatten() {
        places.push(obj);
        places.extend(["pagination", "meta"].iter().filter_map(|k| obj.get(*k)?.as_object()));
    }
    let field = |names: &[&str]| places.iter().find_map(|o| names.iter().find_map(|n| o.get(*n)));
    let number = |names: &[&str]| field(names).and_then(as_u64);
    page.total = number(&["total", "total_count", "totalCount", "total_items"]);
    let total_pages = number(&["total_pages", "totalPages", "page_count"]);
    let current = number(&["page", "current_page", "currentPage"]).unwrap_or(u64::from(asked.page.max(1)));
    let per_page = number(&["per_page", "perPage", "page_size", "pageSize"])
        .unwrap_or(u64::from(asked.per_page.clamp(1, super::MAX_PER_PAGE)));
    let explicit = field(&["has_more", "hasMore", "has_next", "hasNext"]).and_then(Value::as_bool);
    page.has_more = explicit
        .or_else(|| total_pages.map(|n| current < n))
        .or_else(|| page.total.map(|t| current.saturating_mul(per_page) < t));
    Ok(page)
}

/// The by-id answer → the row of `request_id`: a bare row, `{"data": row}`, or a list of rows
/// (one per output). Empty (`[]`, `{"data": null}`) = unknown; rows only of other requests =
/// `Protocol`. A lone row without any `request_id` is taken as this request's (the id is in
/// the path) if it has some row field.
pub(super) fn parse_by_id(body: &Value, request_id: &str) -> Result<Option<HistoryRow>, ApiError> {
    let candidates: Vec<Value> = match body {
        Value::Object(m) if is_row(m) => vec![with_id(m, request_id)],
        Value::Object(m) => match ENVELOPES.iter().find_map(|k| m.get(*k)) {
            Some(Value::Null) => return Ok(None),
            Some(Value::Object(inner)) if is_row(inner) => vec![with_id(inner, request_id)],
            Some(_) => match find_rows(body) {
                Some((rows, _)) => rows.to_vec(),
                None => return Err(unknown_shape(body)),
            },
            None => return Err(unknown_shape(body)),
        },
        Value::Array(rows) => rows.clone(),
        _ => return Err(unknown_shape(body)),
    };
    if candidates.is_empty() {
        return Ok(None);
    }
    candidates
        .iter()
        .filter_map(parse_row)
        .find(|r| r.request_id.eq_ignore_ascii_case(request_id))
        .map(Some)
        .ok_or_else(|| {
            ApiError::Protocol(format!(
                "history answer for {request_id} names no row of it: {}",
                snippet(body)
            ))
        })
}

fn unknown_shape(body: &Value) -> ApiError {
    ApiError::Protocol(format!("request history: unknown shape: {}", snippet(body)))
}

/// Rows found in an answer: the array, and the object holding it (None for a top-level array).
type Found<'a> = (&'a [Value], Option<&'a Map<String, Value>>);

/// The rows array and the object holding it.
fn find_rows(body: &Value) -> Option<Found<'_>> {
    fn in_object(m: &Map<String, Value>) -> Option<&[Value]> {
        ENVELOPES
            .iter()
            .find_map(|k| m.get(*k)?.as_array())
            .map(|a| a.as_slice())
    }
    match body {
        Value::Array(a) => Some((a.as_slice(), None)),
        Value::Object(m) => in_object(m).map(|a| (a, Some(m))).or_else(|| {
            ENVELOPES
                .iter()
                .filter_map(|k| m.get(*k)?.as_object())
                .find_map(|inner| in_object(inner).map(|a| (a, Some(inner))))
        }),
        _ => None,
    }
}

/// Fields that make an object a row. A bare `status` does not: `{"status": "error", …}` is
/// how many APIs say something went wrong.
const ROW_FIELDS: [&str; 6] = [
    "request_id",
    "requestId",
    "model_status",
    "request_body",
    "generation_url",
    "credits_deduction",
];

fn is_row(m: &Map<String, Value>) -> bool {
    ROW_FIELDS.iter().any(|k| m.contains_key(*k)) && !ENVELOPES.iter().any(|k| m.get(*k).is_some_and(Value::is_array))
}

/// The row, with `request_id` filled in from the path if it has none.
fn with_id(m: &Map<String, Value>, request_id: &str) -> Value {
    let mut m = m.clone();
    let has_id = ["request_id", "requestId"].iter().any(|k| m.contains_key(*k));
    if !has_id {
        m.insert("request_id".into(), Value::String(request_id.to_string()));
    }
    Value::Object(m)
}

/// One row, or None if it has no usable request id (or is not an object).
pub(super) fn parse_row(v: &Value) -> Option<HistoryRow> {
    let m = v.as_object()?;
    let get = |names: &[&str]| names.iter().find_map(|n| m.get(*n).filter(|v| !v.is_null()));
    let text = |names: &[&str]| {
        get(names)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    let request_id = text(&["request_id", "requestId"]).filter(|id| safe_request_id(id))?;
    Some(HistoryRow {
        request_id,
        model_name: text(&["model_name", "modelName", "model"]),
        status: text(&["model_status", "status"])
            .map_or(HistoryStatus::Other(String::new()), |s| HistoryStatus::parse(&s)),
        credits: get(&["credits_deduction"]).and_then(as_f64),
        request_body: get(&["request_body"]).and_then(body_object),
        generation_url: get(&["generation_url"]).and_then(url_of),
        created_at_ms: get(&["model_created", "created_at", "createdAt"]).and_then(instant_ms),
        latency_ms: get(&["latency_ms"]).and_then(as_f64).filter(|l| *l >= 0.0),
        error: get(&["error"]).and_then(error_text),
    })
}

/// A finite number, or numeric text.
fn as_f64(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    }
    .filter(|f| f.is_finite())
}

fn as_u64(v: &Value) -> Option<u64> {
    as_f64(v).filter(|f| *f >= 0.0 && f.fract() == 0.0).map(|f| f as u64)
}

/// An object, or JSON text holding one (a store that keeps the body as text).
fn body_object(v: &Value) -> Option<Value> {
    match v {
        Value::Object(_) => Some(v.clone()),
        Value::String(s) => serde_json::from_str::<Value>(s).ok().filter(Value::is_object),
        _ => None,
    }
}

/// An http(s) URL: a string, the first of a list, or an object's `url`.
fn url_of(v: &Value) -> Option<String> {
    let s = v
        .as_str()
        .or_else(|| v.get(0).and_then(Value::as_str))
        .or_else(|| v.get("url").and_then(Value::as_str))?
        .trim();
    is_http_url(s).then(|| s.to_string())
}

fn error_text(v: &Value) -> Option<String> {
    let s = v.as_str().map_or_else(|| v.to_string(), |s| s.trim().to_string());
    (!s.is_empty()).then_some(s)
}

/// Epoch numbers at or above this are milliseconds (1e11 s would be the year 5138).
const MS_THRESHOLD: f64 = 1e11;

/// A timestamp in any accepted form (module doc) → ms since the Unix epoch.
pub(super) fn instant_ms(v: &Value) -> Option<i64> {
    let epoch = |n: f64| {
        let ms = if n >= MS_THRESHOLD { n } else { n * 1000.0 };
        (n.is_finite() && n > 0.0).then_some(ms.round() as i64)
    };
    match v {
        Value::Number(n) => epoch(n.as_f64()?),
        Value::String(s) => {
            let s = s.trim();
            if let Ok(n) = s.parse::<f64>() {
                return epoch(n);
            }
            if let Some(day) = super::Day::parse(s) {
                return Some(day.start_ms());
            }
            let t = crate::clock::parse_rfc3339(s)?;
            Some(t.duration_since(std::time::UNIX_EPOCH).ok()?.as_millis() as i64)
        }
        _ => None,
    }
}
