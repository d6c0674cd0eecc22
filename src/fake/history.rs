//! The fake request history (API.md "Request history"): the list
//! `GET /inference-request/request-history` and the by-id lookup `…/{request_id}`, each seeing
//! only the calling key's requests. Rows are built from the jobs at answer time; the list hides
//! requests younger than `history_lag`, the by-id lookup does not, and neither expires. The
//! answer's shape (envelope, pagination, field names, time format) and failure modes follow
//! the live configuration.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde_json::{json, Map, Value};

use super::api::{not_found, video_url};
use super::dates::{day_of, epoch_ms, parse_date, rfc3339_ms};
use super::gate::{gate, Scope};
use super::respond::{error_response, json_response, with_fault};
use super::state::{Job, Phase, Shared};
use super::{FakeConfig, FaultTarget, HistoryByIdShape, HistoryEnvelope, HistoryMode, HistoryPagination};
use super::{HistoryStatusField, HistoryTimeField, HistoryTimeFormat};

type Params = HashMap<String, String>;

pub(super) async fn list(State(sh): State<Arc<Shared>>, headers: HeaderMap, Query(q): Query<Params>) -> Response {
    sh.lock().stats.history_calls += 1;
    let fault = sh.take_fault(FaultTarget::History);
    with_fault(fault, async move { list_inner(&sh, &headers, &q) }).await
}

pub(super) async fn by_id(State(sh): State<Arc<Shared>>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    sh.lock().stats.history_calls += 1;
    let fault = sh.take_fault(FaultTarget::History);
    with_fault(fault, async move { by_id_inner(&sh, &headers, &id) }).await
}

/// The key check, then the configured failure mode: Ok(key index) or the answer.
#[allow(clippy::result_large_err)] // a refusal is the answer itself, built once per request
fn admit(sh: &Shared, headers: &HeaderMap) -> Result<usize, Response> {
    let key = gate(sh, headers, Scope::Side)?;
    let mode = sh.lock().cfg.history_mode;
    match mode {
        HistoryMode::Ok => Ok(key),
        HistoryMode::Down => Err(error_response(500, "Internal server error")),
        HistoryMode::Unauthorized => Err(error_response(401, "Unauthorized")),
        HistoryMode::Forbidden => Err(error_response(403, "Forbidden")),
        HistoryMode::Garbage => Err(json_response(200, json!({"foo": 1}))),
    }
}

fn list_inner(sh: &Shared, headers: &HeaderMap, params: &Params) -> Response {
    let key = match admit(sh, headers) {
        Ok(key) => key,
        Err(resp) => return resp,
    };
    let today = day_of(epoch_ms(SystemTime::now()));
    let q = match ListQuery::parse(params, today) {
        Ok(q) => q,
        Err(msg) => return error_response(400, msg),
    };
    let now = Instant::now();
    let g = sh.lock();
    let cfg = &g.cfg;
    let mut rows: Vec<Entry> = Vec::new();
    for (id, job) in &g.jobs {
        if job.key != key || job.age(now) < cfg.history_lag {
            continue;
        }
        let created = sh.created_ms(job);
        if !(q.from..=q.to).contains(&day_of(created)) {
            continue;
        }
        if q.model.as_ref().is_some_and(|m| !job.model.to_lowercase().contains(m)) {
            continue;
        }
        let phase = job.phase_at(now);
        if q.status.is_some_and(|s| s != status_name(&phase)) {
            continue;
        }
        for output in 0..outputs(cfg, job, &phase) {
            rows.push(Entry {
                id,
                job,
                created,
                output,
                phase: phase.clone(),
            });
        }
    }
    rows.sort_by(|a, b| {
        let primary = match q.sort_by {
            SortBy::Created => Ordering::Equal,
            SortBy::Name => a.job.model.cmp(&b.job.model),
            SortBy::Credits => charge(a.job, &a.phase).total_cmp(&charge(b.job, &b.phase)),
        };
        let ord = primary
            .then(a.created.cmp(&b.created))
            .then(a.job.seq.cmp(&b.job.seq))
            .then(a.output.cmp(&b.output));
        if q.asc {
            ord
        } else {
            ord.reverse()
        }
    });
    let total = rows.len();
    let page: Vec<Value> = rows
        .iter()
        .skip((q.page - 1).saturating_mul(q.per_page))
        .take(q.per_page)
        .map(|e| row(sh, cfg, e.id, e.job, &e.phase, e.created))
        .collect();
    json_response(200, envelope(cfg, page, &q, total))
}

fn by_id_inner(sh: &Shared, headers: &HeaderMap, id: &str) -> Response {
    let key = match admit(sh, headers) {
        Ok(key) => key,
        Err(resp) => return resp,
    };
    let g = sh.lock();
    let Some(job) = g.jobs.get(id).filter(|j| j.key == key) else {
        return not_found(id);
    };
    let phase = job.phase_at(Instant::now());
    let one = row(sh, &g.cfg, id, job, &phase, sh.created_ms(job));
    let body = match g.cfg.history_by_id {
        HistoryByIdShape::Bare => one,
        HistoryByIdShape::Data => json!({ "data": one }),
        HistoryByIdShape::List => Value::Array(vec![one; outputs(&g.cfg, job, &phase) as usize]),
    };
    json_response(200, body)
}

/// One row of the list before rendering.
struct Entry<'a> {
    id: &'a str,
    job: &'a Job,
    created: i64,
    /// Which output of the request (duplicated rows differ only here).
    output: u32,
    phase: Phase,
}

/// How many rows a request shows: two for a COMPLETED request picked by `duplicate_rows`.
fn outputs(cfg: &FakeConfig, job: &Job, phase: &Phase) -> u32 {
    let picked = cfg
        .duplicate_rows
        .is_some_and(|n| n > 0 && job.seq.is_multiple_of(u64::from(n)));
    if picked && *phase == Phase::Completed {
        2
    } else {
        1
    }
}

fn status_name(phase: &Phase) -> &'static str {
    match phase {
        Phase::Completed => "COMPLETED",
        Phase::Failed(_) => "FAILED",
        _ => "PENDING",
    }
}

/// What a request cost: only COMPLETED requests are billed.
fn charge(job: &Job, phase: &Phase) -> f64 {
    if *phase == Phase::Completed {
        job.cost
    } else {
        0.0
    }
}

/// A history row, with the configured field names and time format.
fn row(sh: &Shared, cfg: &FakeConfig, id: &str, job: &Job, phase: &Phase, created: i64) -> Value {
    let done = matches!(phase, Phase::Completed | Phase::Failed(_));
    let status_field = match cfg.history_status_field {
        HistoryStatusField::ModelStatus => "model_status",
        HistoryStatusField::Status => "status",
    };
    let time_field = match cfg.history_time_field {
        HistoryTimeField::ModelCreated => "model_created",
        HistoryTimeField::CreatedAt => "created_at",
    };
    let time = match cfg.history_time_format {
        HistoryTimeFormat::Rfc3339 => json!(rfc3339_ms(created)),
        HistoryTimeFormat::EpochMs => json!(created),
    };
    let mut m = Map::new();
    m.insert("request_id".into(), json!(id));
    m.insert("model_name".into(), json!(job.model));
    m.insert(status_field.into(), json!(status_name(phase)));
    m.insert("credits_deduction".into(), json!(charge(job, phase)));
    m.insert("request_body".into(), job.body.clone());
    let url = (*phase == Phase::Completed).then(|| video_url(sh, id));
    m.insert("generation_url".into(), json!(url));
    let latency = done.then(|| (job.queue + job.run).as_millis() as u64);
    m.insert("latency_ms".into(), json!(latency));
    m.insert(time_field.into(), time);
    let error = match phase {
        Phase::Failed(e) => Some(e.as_str()),
        _ => None,
    };
    m.insert("error".into(), json!(error));
    Value::Object(m)
}

/// The list answer: the rows under the configured envelope, with pagination fields.
fn envelope(cfg: &FakeConfig, rows: Vec<Value>, q: &ListQuery, total: usize) -> Value {
    let field = match cfg.history_envelope {
        HistoryEnvelope::Data => "data",
        HistoryEnvelope::Rows => "rows",
        HistoryEnvelope::Items => "items",
        HistoryEnvelope::Results => "results",
        HistoryEnvelope::List => return Value::Array(rows),
    };
    let mut m = Map::new();
    m.insert(field.into(), Value::Array(rows));
    let (page, per_page) = (q.page, q.per_page);
    match cfg.history_pagination {
        HistoryPagination::Flat => {
            m.insert("page".into(), json!(page));
            m.insert("per_page".into(), json!(per_page));
            m.insert("total".into(), json!(total));
        }
        HistoryPagination::Nested => {
            let pages = total.div_ceil(per_page);
            let p = json!({"page": page, "per_page": per_page, "total": total, "total_pages": pages});
            m.insert("pagination".into(), p);
        }
        HistoryPagination::None => {}
    }
    Value::Object(m)
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum SortBy {
    Created,
    Name,
    Credits,
}

/// A validated list query.
#[derive(Debug, PartialEq)]
struct ListQuery {
    page: usize,
    per_page: usize,
    /// First and last UTC day (days since the epoch), inclusive.
    from: i64,
    to: i64,
    /// Lower-cased substring of the model name.
    model: Option<String>,
    status: Option<&'static str>,
    sort_by: SortBy,
    asc: bool,
}

/// Longest accepted date window, in days (inclusive count).
const MAX_WINDOW_DAYS: i64 = 31;
/// Days of the default window ending today.
const DEFAULT_WINDOW_DAYS: i64 = 7;

impl ListQuery {
    /// Parses the query (empty values count as absent); Err = the 400 message.
    fn parse(params: &Params, today: i64) -> Result<ListQuery, String> {
        let get = |k: &str| params.get(k).map(|s| s.trim()).filter(|s| !s.is_empty());
        let int = |k: &str, lo: usize, hi: usize, default: usize| match get(k) {
            None => Ok(default),
            Some(s) => s
                .parse::<usize>()
                .ok()
                .filter(|n| (lo..=hi).contains(n))
                .ok_or_else(|| format!("{k} must be an integer between {lo} and {hi} (got {s:?})")),
        };
        let page = int("page", 1, usize::MAX, 1)?;
        let per_page = int("per_page", 1, 100, 20)?;
        let date = |k: &str| {
            get(k)
                .map(|s| parse_date(s).ok_or_else(|| format!("{k} must be a date YYYY-MM-DD (got {s:?})")))
                .transpose()
        };
        let (from, to) = match (date("from_date")?, date("to_date")?) {
            (None, None) => (today - (DEFAULT_WINDOW_DAYS - 1), today),
            (Some(from), None) => (from, today),
            (None, Some(to)) => (to - (DEFAULT_WINDOW_DAYS - 1), to),
            (Some(from), Some(to)) => (from, to),
        };
        if to < from {
            return Err("from_date must not be after to_date".into());
        }
        if to - from + 1 > MAX_WINDOW_DAYS {
            return Err(format!("the date range must be at most {MAX_WINDOW_DAYS} days"));
        }
        let status = match get("status").map(str::to_ascii_uppercase).as_deref() {
            None => None,
            Some("COMPLETED") => Some("COMPLETED"),
            Some("FAILED") => Some("FAILED"),
            Some("PENDING") => Some("PENDING"),
            Some(other) => return Err(format!("status must be COMPLETED, FAILED or PENDING (got {other:?})")),
        };
        let sort_by = match get("sort_by") {
            None | Some("model_created") => SortBy::Created,
            Some("model_name") => SortBy::Name,
            Some("credits_deduction") => SortBy::Credits,
            Some(other) => {
                return Err(format!(
                    "sort_by must be model_created, model_name or credits_deduction (got {other:?})"
                ))
            }
        };
        let asc = match get("sort_order").map(str::to_ascii_lowercase).as_deref() {
            None | Some("desc") => false,
            Some("asc") => true,
            Some(other) => return Err(format!("sort_order must be asc or desc (got {other:?})")),
        };
        Ok(ListQuery {
            page,
            per_page,
            from,
            to,
            model: get("model_name").map(str::to_lowercase),
            status,
            sort_by,
            asc,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(pairs: &[(&str, &str)]) -> Result<ListQuery, String> {
        let params = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        ListQuery::parse(&params, parse_date("2026-03-10").unwrap())
    }

    #[test]
    fn defaults_are_page_1_of_20_over_the_last_7_days_newest_first() {
        let q = parse(&[]).unwrap();
        let today = parse_date("2026-03-10").unwrap();
        assert_eq!((q.page, q.per_page, q.from, q.to), (1, 20, today - 6, today));
        assert_eq!(
            (q.sort_by, q.asc, q.status, q.model),
            (SortBy::Created, false, None, None)
        );
        let q = parse(&[("to_date", "2026-02-01"), ("per_page", "")]).unwrap();
        assert_eq!((q.from, q.to, q.per_page), (today - 43, today - 37, 20));
    }

    #[test]
    fn bad_values_are_400_messages_naming_the_parameter() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("per_page", "0")], "per_page"),
            (&[("per_page", "101")], "per_page"),
            (&[("per_page", "x")], "per_page"),
            (&[("page", "0")], "page"),
            (&[("from_date", "2026-02-30")], "from_date"),
            (&[("to_date", "10/03/2026")], "to_date"),
            (&[("from_date", "2026-03-09"), ("to_date", "2026-03-08")], "after"),
            (&[("from_date", "2026-01-01"), ("to_date", "2026-02-01")], "31 days"),
            (&[("from_date", "2026-02-01")], "31 days"),
            (&[("status", "DONE")], "status"),
            (&[("sort_by", "cost")], "sort_by"),
            (&[("sort_order", "up")], "sort_order"),
        ];
        for (pairs, word) in cases {
            let err = parse(pairs).unwrap_err();
            assert!(err.contains(word), "{pairs:?}: {err}");
        }
        let q = parse(&[("from_date", "2026-01-01"), ("to_date", "2026-01-31")]).unwrap();
        assert_eq!(q.to - q.from + 1, 31);
        let q = parse(&[("status", "pending"), ("sort_order", "ASC"), ("per_page", "100")]).unwrap();
        assert_eq!((q.status, q.asc, q.per_page), (Some("PENDING"), true, 100));
    }
}
