//! The history client against the fake server: every envelope and pagination shape, time and
//! status field names, by-id shapes, duplicate rows, the list's lag, the failure modes, and a
//! request planted by another client found by its body. Shared set-up for the other
//! `tests_*` files of this module lives here too.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use super::history::{dedup, Day, HistoryClient, HistoryQuery, HistoryRow, HistoryStatus, StatusFilter};
use super::hosts::{resolve, Hosts};
use super::{ApiError, ApiKey};
use crate::fake::{FakeConfig, FakeServer, Plant, MODEL_SLUG};
use crate::fake::{HistoryByIdShape, HistoryEnvelope, HistoryMode, HistoryPagination};
use crate::fake::{HistoryStatusField, HistoryTimeField, HistoryTimeFormat};

pub(super) const KEY: &str = "fake-key";
/// Bounds each call; no test waits on it unless something is broken.
pub(super) const TIMEOUT: Duration = Duration::from_secs(5);

/// Jobs of 40 ms in all; planted requests are made older than that to be ended.
pub(super) fn fast() -> FakeConfig {
    FakeConfig {
        queue: Duration::from_millis(20),
        run: Duration::from_millis(20),
        video_len: 4096,
        ..FakeConfig::default()
    }
}

pub(super) fn key() -> ApiKey {
    ApiKey::new(KEY.to_string()).unwrap()
}

/// The hosts of a rehearsal against `s`, resolved as the CLI would.
pub(super) fn hosts(s: &FakeServer) -> Hosts {
    resolve(Some(&s.api_url()), None, None).unwrap()
}

pub(super) fn history(s: &FakeServer) -> HistoryClient {
    HistoryClient::new(&hosts(s).history, &key(), TIMEOUT).unwrap()
}

pub(super) fn body(prompt: &str) -> Value {
    json!({"image": "https://example.com/cat.jpg", "prompt": prompt, "num_frames": 81})
}

pub(super) fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

/// A request of key 0 created `secs` ago (ended, for any `secs` ≥ 1 with `fast()`).
pub(super) fn plant(s: &FakeServer, prompt: &str, secs: u64) -> String {
    s.plant(Plant {
        age: Duration::from_secs(secs),
        ..Plant::new(body(prompt))
    })
}

fn ids(rows: &[HistoryRow]) -> Vec<&str> {
    rows.iter().map(|r| r.request_id.as_str()).collect()
}

fn per_page(n: u32) -> HistoryQuery {
    HistoryQuery {
        per_page: n,
        ..HistoryQuery::default()
    }
}

/// A completed, a failed and a pending request, newest first.
fn three(s: &FakeServer) -> [String; 3] {
    let done = plant(s, "a cat", 30);
    let failed = plant(s, "a [fail] cat", 20);
    s.update_config(|c| c.queue = Duration::from_secs(600));
    let pending = plant(s, "a slow cat", 10);
    [pending, failed, done]
}

#[tokio::test]
async fn every_envelope_and_pagination_gives_the_same_rows() {
    let s = FakeServer::start(fast()).await.unwrap();
    let want = three(&s);
    let h = history(&s);
    let pages = [
        HistoryPagination::Flat,
        HistoryPagination::Nested,
        HistoryPagination::None,
    ];
    let envelopes = [
        HistoryEnvelope::Data,
        HistoryEnvelope::Rows,
        HistoryEnvelope::Items,
        HistoryEnvelope::Results,
        HistoryEnvelope::List,
    ];
    for env in envelopes {
        for pagination in pages {
            s.update_config(|c| {
                c.history_envelope = env;
                c.history_pagination = pagination;
            });
            let says = env != HistoryEnvelope::List && pagination != HistoryPagination::None;
            let case = format!("{env:?} {pagination:?}");
            let page = h.list(&HistoryQuery::default()).await.unwrap();
            assert_eq!(ids(&page.rows), want.each_ref().map(String::as_str), "{case}");
            assert_eq!(page.skipped, 0, "{case}");
            let (total, more) = if says { (Some(3), Some(false)) } else { (None, None) };
            assert_eq!((page.total, page.has_more), (total, more), "{case}");
            assert!(page.is_last(100), "{case}");

            // Two pages of two: the answer's numbers, else a short page, say where to stop.
            let first = h.list(&per_page(2)).await.unwrap();
            assert_eq!(ids(&first.rows), [want[0].as_str(), want[1].as_str()], "{case}");
            assert_eq!(first.has_more, says.then_some(true), "{case}");
            assert!(!first.is_last(2), "{case}");
            let q = HistoryQuery { page: 2, ..per_page(2) };
            let second = h.list(&q).await.unwrap();
            assert_eq!(ids(&second.rows), [want[2].as_str()], "{case}");
            assert!(second.is_last(2), "{case}");
        }
    }
}

#[tokio::test]
async fn rows_say_what_was_sent_how_it_ended_what_it_cost_and_where_it_is() {
    let s = FakeServer::start(fast()).await.unwrap();
    let before = now_ms();
    let [pending, failed, done] = three(&s);
    let after = now_ms();
    let page = history(&s).list(&HistoryQuery::default()).await.unwrap();
    let [p, f, c] = &page.rows[..] else { panic!("{page:?}") };

    assert_eq!(
        (c.request_id.as_str(), c.status.clone()),
        (done.as_str(), HistoryStatus::Completed)
    );
    assert_eq!(c.model_name.as_deref(), Some(MODEL_SLUG));
    assert_eq!((c.credits, c.latency_ms), (Some(0.05), Some(40.0)));
    assert_eq!(c.request_body, Some(body("a cat")));
    let video = format!("{}/videos/{done}.mp4", s.cdn_url());
    assert_eq!(c.generation_url.as_deref(), Some(video.as_str()));
    assert_eq!(c.error, None);
    let created = c.created_at_ms.unwrap();
    // A few ms of slack: the fake dates a request through its own clock.
    assert!(before - 30_005 <= created && created <= after - 29_995, "{created}");

    assert_eq!(
        (f.request_id.as_str(), f.status.clone()),
        (failed.as_str(), HistoryStatus::Failed)
    );
    assert_eq!((f.credits, f.generation_url.as_deref()), (Some(0.0), None));
    assert_eq!(f.error.as_deref(), Some("Inference failed: simulated model error"));

    assert_eq!(
        (p.request_id.as_str(), p.status.clone()),
        (pending.as_str(), HistoryStatus::Pending)
    );
    assert_eq!(
        (p.latency_ms, p.error.as_deref(), p.generation_url.as_deref()),
        (None, None, None)
    );
}

#[tokio::test]
async fn time_and_status_fields_under_every_name_and_format() {
    let s = FakeServer::start(fast()).await.unwrap();
    let id = plant(&s, "a cat", 90);
    let h = history(&s);
    let mut seen = Vec::new();
    for field in [HistoryTimeField::ModelCreated, HistoryTimeField::CreatedAt] {
        for format in [HistoryTimeFormat::Rfc3339, HistoryTimeFormat::EpochMs] {
            for status in [HistoryStatusField::ModelStatus, HistoryStatusField::Status] {
                s.update_config(|c| {
                    c.history_time_field = field;
                    c.history_time_format = format;
                    c.history_status_field = status;
                });
                let case = format!("{field:?} {format:?} {status:?}");
                let row = &h.list(&HistoryQuery::default()).await.unwrap().rows[0];
                assert_eq!(row.status, HistoryStatus::Completed, "{case}");
                seen.push(row.created_at_ms.unwrap_or_else(|| panic!("{case}: no time")));
                let one = h.by_id(&id).await.unwrap().unwrap();
                assert_eq!(
                    (one.status, one.created_at_ms),
                    (HistoryStatus::Completed, Some(seen[0]))
                );
            }
        }
    }
    assert!(
        seen.iter().all(|t| *t == seen[0]),
        "one instant in every form: {seen:?}"
    );
    let age = now_ms() - seen[0];
    assert!((90_000..95_000).contains(&age), "{age}");
}

#[tokio::test]
async fn by_id_finds_the_request_in_every_shape_and_none_when_unknown() {
    let s = FakeServer::start(FakeConfig {
        duplicate_rows: Some(1),
        ..fast()
    })
    .await
    .unwrap();
    let id = plant(&s, "a cat", 30);
    let h = history(&s);
    for shape in [HistoryByIdShape::Bare, HistoryByIdShape::Data, HistoryByIdShape::List] {
        s.update_config(|c| c.history_by_id = shape);
        let row = h.by_id(&id).await.unwrap().unwrap_or_else(|| panic!("{shape:?}"));
        assert_eq!(
            (row.request_id.as_str(), row.status),
            (id.as_str(), HistoryStatus::Completed)
        );
        assert_eq!(row.request_body, Some(body("a cat")), "{shape:?}");
        assert_eq!(h.by_id("0000-unknown").await.unwrap(), None, "{shape:?}: 404");
    }
    let calls = s.stats().history_calls;
    for bad in ["../v2/x", "a b", "", "x?y=1"] {
        assert!(matches!(h.by_id(bad).await, Err(ApiError::Protocol(_))), "{bad:?}");
    }
    assert_eq!(s.stats().history_calls, calls, "an unsafe id is never sent");
}

#[tokio::test]
async fn duplicate_rows_come_as_sent_and_dedup_keeps_one_per_request() {
    let s = FakeServer::start(FakeConfig {
        duplicate_rows: Some(1),
        ..fast()
    })
    .await
    .unwrap();
    let a = plant(&s, "a cat", 30);
    let b = plant(&s, "a dog", 20);
    let page = history(&s).list(&HistoryQuery::default()).await.unwrap();
    assert_eq!(ids(&page.rows), [b.as_str(), b.as_str(), a.as_str(), a.as_str()]);
    let once = dedup(page.rows);
    assert_eq!(ids(&once), [b.as_str(), a.as_str()]);
    let cost: f64 = once.iter().filter_map(|r| r.credits).sum();
    assert!((cost - 0.10).abs() < 1e-9, "{cost}");
}

#[tokio::test]
async fn the_list_lags_and_by_id_does_not() {
    let s = FakeServer::start(FakeConfig {
        history_lag: Duration::from_secs(60),
        ..fast()
    })
    .await
    .unwrap();
    let old = plant(&s, "old", 120);
    let new = plant(&s, "new", 0);
    let h = history(&s);
    let page = h.list(&HistoryQuery::default()).await.unwrap();
    assert_eq!(ids(&page.rows), [old.as_str()]);
    let row = h.by_id(&new).await.unwrap().expect("by id at once");
    assert_eq!(row.request_body, Some(body("new")));
}

#[tokio::test]
async fn failure_modes_become_the_right_errors() {
    let s = FakeServer::start(fast()).await.unwrap();
    let id = plant(&s, "a cat", 30);
    let h = history(&s);
    type Check = fn(&ApiError) -> bool;
    let cases: [(HistoryMode, Check); 4] = [
        (HistoryMode::Down, |e| matches!(e, ApiError::Server { status: 500, .. })),
        (HistoryMode::Unauthorized, |e| matches!(e, ApiError::Unauthorized(_))),
        (HistoryMode::Forbidden, |e| matches!(e, ApiError::Forbidden(_))),
        (
            HistoryMode::Garbage,
            |e| matches!(e, ApiError::Protocol(m) if m.contains("unknown shape")),
        ),
    ];
    for (mode, check) in cases {
        s.set_history_mode(mode);
        let e = h.list(&HistoryQuery::default()).await.unwrap_err();
        assert!(check(&e), "{mode:?} list: {e:?}");
        let e = h.by_id(&id).await.unwrap_err();
        assert!(check(&e), "{mode:?} by id: {e:?}");
    }
    s.set_history_mode(HistoryMode::Ok);

    let stranger = HistoryClient::new(&hosts(&s).history, &ApiKey::new("wrong".into()).unwrap(), TIMEOUT).unwrap();
    let e = stranger.list(&HistoryQuery::default()).await.unwrap_err();
    assert!(matches!(e, ApiError::Unauthorized(_)), "{e:?}");

    // The service's own 400 (a window over 31 days) is a rejected request.
    let today = Day::today();
    let q = HistoryQuery {
        from: Some(today.plus(-40)),
        to: Some(today),
        ..HistoryQuery::default()
    };
    let e = h.list(&q).await.unwrap_err();
    assert!(
        matches!(&e, ApiError::Rejected { status: 400, message } if message.contains("31 days")),
        "{e:?}"
    );

    // A fresh account allowed one call a minute: the second one waits for the hinted reset.
    let s = FakeServer::start(FakeConfig {
        rate_limit: Some(1),
        ..fast()
    })
    .await
    .unwrap();
    let h = history(&s);
    h.list(&HistoryQuery::default()).await.unwrap();
    match h.by_id("any-id").await {
        Err(ApiError::RateLimited { until: Some(t) }) => assert!(t > SystemTime::now()),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_request_planted_by_another_client_is_found_by_its_body() {
    let s = FakeServer::start(fast()).await.unwrap();
    for i in 0..5 {
        plant(&s, &format!("noise {i}"), 60 + i);
    }
    let sent = json!({"image": "https://example.com/me.png", "prompt": "the lost one", "seed": 7});
    let lost = s.plant(Plant {
        age: Duration::from_secs(61),
        ..Plant::new(sent.clone())
    });
    let h = history(&s);
    let mut found = Vec::new();
    for page_no in 1.. {
        let q = HistoryQuery {
            page: page_no,
            ..per_page(2)
        };
        let page = h.list(&q).await.unwrap();
        found.extend(
            page.rows
                .iter()
                .filter(|r| r.request_body.as_ref() == Some(&sent))
                .cloned(),
        );
        if page.is_last(2) || page_no > 10 {
            break;
        }
    }
    assert_eq!(ids(&found), [lost.as_str()]);
}

#[tokio::test]
async fn filters_reach_the_service() {
    let s = FakeServer::start(fast()).await.unwrap();
    let [pending, failed, done] = three(&s);
    let h = history(&s);
    let only = |status| HistoryQuery {
        status: Some(status),
        ..HistoryQuery::default()
    };
    for (status, id) in [
        (StatusFilter::Failed, &failed),
        (StatusFilter::Completed, &done),
        (StatusFilter::Pending, &pending),
    ] {
        let page = h.list(&only(status)).await.unwrap();
        assert_eq!(ids(&page.rows), [id.as_str()], "{status:?}");
    }
    let other_model = HistoryQuery {
        model_name: Some("flux".into()),
        ..HistoryQuery::default()
    };
    assert!(h.list(&other_model).await.unwrap().rows.is_empty());
    let tomorrow = HistoryQuery {
        from: Some(Day::today().plus(1)),
        to: Some(Day::today().plus(2)),
        ..HistoryQuery::default()
    };
    assert!(h.list(&tomorrow).await.unwrap().rows.is_empty());
}
