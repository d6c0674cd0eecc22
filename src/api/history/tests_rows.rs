//! Unit tests of the tolerant reading of history answers (`rows.rs`): every envelope,
//! pagination spelling, field form, status synonym and time format it accepts, and the
//! shapes it refuses.

use serde_json::{json, Value};

use super::rows::*;
use super::HistoryQuery;
use crate::api::ApiError;

fn q() -> HistoryQuery {
    HistoryQuery::default()
}

fn row(extra: Value) -> Value {
    let mut r = json!({"request_id": "r1", "model_status": "COMPLETED"});
    r.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    r
}

fn unknown(result: Result<impl std::fmt::Debug, ApiError>) -> String {
    match result {
        Err(ApiError::Protocol(m)) => m,
        other => panic!("{other:?}"),
    }
}

#[test]
fn rows_are_found_in_every_plausible_envelope() {
    let rows = json!([{"request_id": "a"}, {"request_id": "b"}]);
    for body in [
        rows.clone(),
        json!({"data": rows}),
        json!({"rows": rows}),
        json!({"items": rows}),
        json!({"results": rows}),
        json!({"data": {"items": rows, "total": 2}}),
        json!({"data": {"rows": rows}}),
    ] {
        let page = parse_page(&body, &q()).unwrap();
        let ids: Vec<_> = page.rows.iter().map(|r| r.request_id.as_str()).collect();
        assert_eq!(ids, ["a", "b"], "{body}");
    }
    for body in [
        json!({"foo": 1}),
        json!({"data": {"foo": 1}}),
        json!({"data": 5}),
        json!("rows"),
        json!(null),
    ] {
        assert!(unknown(parse_page(&body, &q())).contains("unknown shape"), "{body}");
    }
    let empty = parse_page(&json!({"data": []}), &q()).unwrap();
    assert_eq!((empty.rows.len(), empty.is_last(100)), (0, true));
}

#[test]
fn pagination_from_flat_nested_meta_or_counts() {
    let has_more = |body: Value, page: u32, per_page: u32| {
        let asked = HistoryQuery { page, per_page, ..q() };
        let p = parse_page(&body, &asked).unwrap();
        (p.total, p.has_more)
    };
    let rows = json!([]);
    assert_eq!(
        has_more(json!({"data": rows, "page": 1, "per_page": 2, "total": 3}), 1, 2),
        (Some(3), Some(true))
    );
    assert_eq!(
        has_more(json!({"data": rows, "page": 2, "per_page": 2, "total": 3}), 2, 2),
        (Some(3), Some(false))
    );
    // The answer's page and per_page win over the query's; missing, the query's count.
    assert_eq!(
        has_more(json!({"data": rows, "total": "3"}), 1, 2),
        (Some(3), Some(true))
    );
    assert_eq!(
        has_more(json!({"data": rows, "total": 3}), 1, 100),
        (Some(3), Some(false))
    );
    let nested = json!({"data": rows, "pagination": {"page": 1, "total_pages": 2}});
    assert_eq!(has_more(nested, 1, 2), (None, Some(true)));
    let meta = json!({"data": rows, "meta": {"totalCount": 9, "currentPage": 3, "pageSize": 3}});
    assert_eq!(has_more(meta, 1, 100), (Some(9), Some(false)));
    let explicit = json!({"items": rows, "total": 1000, "has_more": false});
    assert_eq!(has_more(explicit, 1, 2), (Some(1000), Some(false)));
    assert_eq!(
        has_more(json!({"data": {"items": rows, "hasNext": true}}), 1, 2),
        (None, Some(true))
    );
    assert_eq!(has_more(json!({"data": rows}), 1, 2), (None, None));
}

#[test]
fn rows_without_a_usable_id_are_skipped_and_counted() {
    let body = json!({"data": [
        {"request_id": "ok-1"}, {"request_id": "../x"}, {"request_id": 5}, {"model_status": "FAILED"},
        "text", {"requestId": "ok_2"}, {"request_id": "  "}
    ]});
    let page = parse_page(&body, &q()).unwrap();
    let ids: Vec<_> = page.rows.iter().map(|r| r.request_id.as_str()).collect();
    assert_eq!((ids, page.skipped), (vec!["ok-1", "ok_2"], 5));
    let short = HistoryPage { skipped: 1, ..page };
    assert!(
        short.is_last(100) && !short.is_last(3),
        "skipped rows count toward a full page"
    );
}

#[test]
fn fields_are_read_in_their_plausible_forms() {
    let r = parse_row(&row(json!({
        "model_name": "wan-2.2-i2v-fast", "credits_deduction": "0.0877",
        "request_body": "{\"prompt\": \"a cat\"}", "generation_url": ["https://cdn.example/v.mp4"],
        "latency_ms": "54000", "error": {"code": 7}
    })))
    .unwrap();
    assert_eq!(r.credits, Some(0.0877));
    assert_eq!(r.request_body, Some(json!({"prompt": "a cat"})));
    assert_eq!(r.generation_url.as_deref(), Some("https://cdn.example/v.mp4"));
    assert_eq!(
        (r.latency_ms, r.error.as_deref()),
        (Some(54000.0), Some("{\"code\":7}"))
    );
    let r = parse_row(&row(json!({
        "credits_deduction": "free", "request_body": "not json", "generation_url": "/videos/x.mp4",
        "latency_ms": -1, "error": "", "model_created": "soon"
    })))
    .unwrap();
    assert_eq!((r.credits, r.request_body, r.generation_url), (None, None, None));
    assert_eq!((r.latency_ms, r.error, r.created_at_ms), (None, None, None));
    assert_eq!(
        parse_row(&json!({"request_id": "x"})).unwrap().status,
        HistoryStatus::Other(String::new())
    );
    let url = parse_row(&row(json!({"generation_url": {"url": "http://h/v.mp4"}}))).unwrap();
    assert_eq!(url.generation_url.as_deref(), Some("http://h/v.mp4"));
}

#[test]
fn statuses_read_case_insensitively_with_synonyms() {
    use HistoryStatus::*;
    let cases = [
        ("COMPLETED", Completed),
        ("completed", Completed),
        ("Succeeded", Completed),
        ("FAILED", Failed),
        ("error", Failed),
        ("PENDING", Pending),
        ("queued", Pending),
        ("Processing", Pending),
        ("RUNNING", Pending),
        ("in-progress", Pending),
        ("IN_PROGRESS", Pending),
        ("CANCELLED", Other("CANCELLED".into())),
    ];
    for (text, want) in cases {
        assert_eq!(HistoryStatus::parse(text), want, "{text}");
        let r = parse_row(&json!({"request_id": "x", "status": text})).unwrap();
        assert_eq!(r.status, HistoryStatus::parse(text));
    }
    let both = parse_row(&json!({"request_id": "x", "model_status": "FAILED", "status": "ok"})).unwrap();
    assert_eq!(both.status, Failed, "model_status is the documented name");
}

#[test]
fn times_in_every_plausible_form() {
    let ms = 1_795_310_400_123_i64; // 2026-11-22T01:20:00.123Z
    let s = ms - 123;
    for (v, want) in [
        (json!("2026-11-22T01:20:00.123Z"), ms),
        (json!("2026-11-22T01:20:00.123456Z"), ms),
        (json!("2026-11-22T01:20:00Z"), s),
        (json!("2026-11-22T01:20:00"), s),
        (json!("2026-11-22 01:20:00"), s),
        (json!("2026-11-22T02:20:00.123+01:00"), ms),
        (json!("2026-11-21T20:20:00-0500"), s),
        (json!("2026-11-22"), s - 4_800_000),
        (json!(ms), ms),
        (json!(s / 1000), s),
        (json!(ms as f64 / 1000.0), ms),
        (json!(ms.to_string()), ms),
        (json!("1795310400"), s),
    ] {
        assert_eq!(instant_ms(&v), Some(want), "{v}");
    }
    for v in [
        json!("yesterday"),
        json!(-5),
        json!(0),
        json!(true),
        json!("2026-13-01"),
    ] {
        assert_eq!(instant_ms(&v), None, "{v}");
    }
    for (name, v) in [
        ("model_created", json!(ms)),
        ("created_at", json!(ms)),
        ("createdAt", json!(ms)),
    ] {
        let r = parse_row(&json!({"request_id": "x", name: v})).unwrap();
        assert_eq!(r.created_at_ms, Some(ms), "{name}");
    }
}

#[test]
fn by_id_takes_the_row_of_the_asked_request() {
    let a = json!({"request_id": "a", "model_status": "COMPLETED"});
    let b = json!({"request_id": "b", "model_status": "FAILED"});
    for body in [
        a.clone(),
        json!({"data": a}),
        json!([a, a]),
        json!([b, a]),
        json!({"data": [b, a]}),
        json!({"data": {"items": [a]}}),
    ] {
        let r = parse_by_id(&body, "a").unwrap().unwrap_or_else(|| panic!("{body}"));
        assert_eq!(
            (r.request_id.as_str(), r.status),
            ("a", HistoryStatus::Completed),
            "{body}"
        );
    }
    assert_eq!(
        parse_by_id(&json!({"request_id": "A"}), "a")
            .unwrap()
            .unwrap()
            .request_id,
        "A"
    );
    // The id is in the path: a lone row without one is this request's.
    let bare = json!({"model_status": "FAILED", "error": "boom"});
    assert_eq!(parse_by_id(&bare, "a").unwrap().unwrap().request_id, "a");
    for empty in [json!([]), json!({"data": null}), json!({"data": []})] {
        assert_eq!(parse_by_id(&empty, "a").unwrap(), None, "{empty}");
    }
    assert!(unknown(parse_by_id(&b, "a")).contains("no row of it"));
    assert!(unknown(parse_by_id(&json!([b]), "a")).contains("no row of it"));
    for odd in [
        json!({"status": "error", "message": "x"}),
        json!({"foo": 1}),
        json!(3),
        json!({"data": 3}),
    ] {
        assert!(unknown(parse_by_id(&odd, "a")).contains("unknown shape"), "{odd}");
    }
}

#[test]
fn dedup_keeps_the_first_row_of_each_request_in_order() {
    let r = |id: &str, credits: f64| HistoryRow {
        credits: Some(credits),
        ..parse_row(&json!({"request_id": id})).unwrap()
    };
    let rows = vec![r("b", 1.0), r("a", 2.0), r("b", 3.0), r("a", 4.0), r("c", 5.0)];
    let once = dedup(rows);
    let got: Vec<_> = once.iter().map(|r| (r.request_id.as_str(), r.credits)).collect();
    assert_eq!(got, [("b", Some(1.0)), ("a", Some(2.0)), ("c", Some(5.0))]);
}
