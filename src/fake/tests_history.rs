//! Tests of the fake request history over HTTP: row fields, by id at any age, every answer
//! shape, the list lag, filters, sorting and pagination, date-window errors, failure modes,
//! duplicated rows, requests made by other clients, and History faults.

use std::time::{Duration, SystemTime};

use serde_json::{json, Value};

use super::dates::{day_of, epoch_ms, format_date, parse_date};
use super::tests_api::{body, client, fast, get, get_as, submit, submit_id, wait_done, KEY};
use super::*;

fn list_url(s: &FakeServer, query: &str) -> String {
    format!("{}/inference-request/request-history?{query}", s.api_url())
}

fn id_url(s: &FakeServer, id: &str) -> String {
    format!("{}/inference-request/request-history/{id}", s.api_url())
}

/// `YYYY-MM-DD` of `n` days before today (UTC).
fn days_ago(n: i64) -> String {
    format_date(day_of(epoch_ms(SystemTime::now())) - n)
}

/// A completed request planted `age` ago (fast() jobs take 80 ms).
fn plant_done(s: &FakeServer, prompt: &str, age: Duration) -> String {
    s.plant(Plant {
        age,
        ..Plant::new(body(prompt))
    })
}

async fn list(s: &FakeServer, query: &str) -> Value {
    let (st, v) = get(&list_url(s, query)).await;
    assert_eq!(st, 200, "{query}: {v}");
    v
}

fn ids(rows: &Value) -> Vec<String> {
    let rows = rows.as_array().unwrap();
    rows.iter()
        .map(|r| r["request_id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn rows_carry_what_was_sent_what_it_cost_and_where_it_is() {
    let s = FakeServer::start(fast()).await.unwrap();
    let before = rfc3339_millis(SystemTime::now() - Duration::from_millis(1));
    let (_, ok) = submit(&s, &body("a cat")).await;
    let (_, bad) = submit(&s, &body("a [fail] cat")).await;
    wait_done(ok["status_url"].as_str().unwrap()).await;
    wait_done(bad["status_url"].as_str().unwrap()).await;
    s.update_config(|c| c.queue = Duration::from_secs(30));
    let pending = submit_id(&s, &body("a slow cat")).await;
    let (ok, bad) = (ok["request_id"].as_str().unwrap(), bad["request_id"].as_str().unwrap());

    let v = list(&s, "").await;
    assert_eq!(
        (v["page"].as_u64(), v["per_page"].as_u64(), v["total"].as_u64()),
        (Some(1), Some(20), Some(3))
    );
    let rows = v["data"].as_array().unwrap();
    assert_eq!(ids(&v["data"]), [pending.as_str(), bad, ok], "newest first");
    let (p, f, c) = (&rows[0], &rows[1], &rows[2]);
    let video = format!("{}/videos/{ok}.mp4", s.cdn_url());
    assert_eq!(c["model_name"], MODEL_SLUG);
    assert_eq!(c["model_status"], "COMPLETED");
    assert_eq!(c["credits_deduction"], 0.05);
    assert_eq!(c["request_body"], body("a cat"));
    assert_eq!(c["generation_url"], video.as_str());
    assert_eq!(c["latency_ms"], 80);
    assert_eq!(c["error"], Value::Null);
    let created = c["model_created"].as_str().unwrap();
    assert_eq!(created.len(), 24, "{created}");
    let after = rfc3339_millis(SystemTime::now());
    assert!(
        before.as_str() <= created && created <= after.as_str(),
        "{before} {created} {after}"
    );
    assert_eq!(
        (f["model_status"].as_str(), f["credits_deduction"].as_f64()),
        (Some("FAILED"), Some(0.0))
    );
    assert_eq!(f["error"], "Inference failed: simulated model error");
    assert_eq!(
        (f["generation_url"].is_null(), f["latency_ms"].as_u64()),
        (true, Some(80))
    );
    assert_eq!(
        (p["model_status"].as_str(), p["credits_deduction"].as_f64()),
        (Some("PENDING"), Some(0.0))
    );
    assert!(p["generation_url"].is_null() && p["latency_ms"].is_null() && p["error"].is_null());

    for row in rows {
        let id = row["request_id"].as_str().unwrap();
        let (st, one) = get(&id_url(&s, id)).await;
        assert_eq!((st, &one), (200, row));
    }
    let (st, e) = get(&id_url(&s, "nope")).await;
    assert_eq!((st, e), (404, json!({"error": "Request nope not found"})));
    assert_eq!(s.stats().history_calls, 5);
}

#[tokio::test]
async fn by_id_works_at_any_age_while_the_list_keeps_its_window() {
    let s = FakeServer::start(FakeConfig {
        result_lifetime: Duration::from_millis(300),
        ..fast()
    })
    .await
    .unwrap();
    let (_, v) = submit(&s, &body("a cat")).await;
    let id = v["request_id"].as_str().unwrap();
    wait_done(v["status_url"].as_str().unwrap()).await;
    tokio::time::sleep(Duration::from_millis(320)).await;
    assert_eq!(get(v["status_url"].as_str().unwrap()).await.0, 404, "v2 record expired");
    let (st, row) = get(&id_url(&s, id)).await;
    assert_eq!((st, row["model_status"].as_str()), (200, Some("COMPLETED")));
    let url = row["generation_url"].as_str().unwrap();
    let r = client().get(url).send().await.unwrap();
    assert_eq!(r.status(), 200, "files outlive records");

    let old = plant_done(&s, "old", Duration::from_secs(40 * 86_400));
    assert_eq!(get(&id_url(&s, &old)).await.0, 200);
    assert_eq!(ids(&list(&s, "").await["data"]), [id]);
    let q = format!("from_date={}&to_date={}", days_ago(45), days_ago(35));
    assert_eq!(ids(&list(&s, &q).await["data"]), [old]);
}

#[tokio::test]
async fn every_answer_shape_can_be_chosen() {
    let s = FakeServer::start(fast()).await.unwrap();
    let id = plant_done(&s, "a cat", Duration::from_secs(5));
    let created_ms = epoch_ms(SystemTime::now()) - 5000;
    for (env, field) in [
        (HistoryEnvelope::Data, "data"),
        (HistoryEnvelope::Rows, "rows"),
        (HistoryEnvelope::Items, "items"),
        (HistoryEnvelope::Results, "results"),
    ] {
        s.update_config(|c| c.history_envelope = env);
        let v = list(&s, "per_page=5").await;
        assert_eq!(ids(&v[field]), [id.as_str()], "{env:?}");
        assert_eq!(v.as_object().unwrap().len(), 4, "{v}");
        assert_eq!(
            (v["page"].as_u64(), v["per_page"].as_u64(), v["total"].as_u64()),
            (Some(1), Some(5), Some(1))
        );
    }
    s.update_config(|c| c.history_pagination = HistoryPagination::Nested);
    let v = list(&s, "per_page=5").await;
    assert_eq!(
        v["pagination"],
        json!({"page": 1, "per_page": 5, "total": 1, "total_pages": 1})
    );
    assert!(v.get("page").is_none());
    s.update_config(|c| c.history_pagination = HistoryPagination::None);
    assert_eq!(list(&s, "").await.as_object().unwrap().len(), 1);
    s.update_config(|c| c.history_envelope = HistoryEnvelope::List);
    let v = list(&s, "").await;
    assert_eq!(ids(&v), [id.as_str()]);

    s.update_config(|c| {
        c.history_time_field = HistoryTimeField::CreatedAt;
        c.history_status_field = HistoryStatusField::Status;
        c.history_time_format = HistoryTimeFormat::EpochMs;
    });
    let row = &list(&s, "").await[0];
    assert!(row.get("model_created").is_none() && row.get("model_status").is_none());
    assert_eq!(row["status"], "COMPLETED");
    let t = row["created_at"].as_i64().unwrap();
    assert!((t - created_ms).abs() < 1000, "{t} {created_ms}");
    let (_, one) = get(&id_url(&s, &id)).await;
    assert_eq!(
        (one["status"].as_str(), one["created_at"].as_i64()),
        (Some("COMPLETED"), Some(t))
    );

    s.update_config(|c| c.history_by_id = HistoryByIdShape::Data);
    assert_eq!(get(&id_url(&s, &id)).await.1["data"]["request_id"], id.as_str());
    s.update_config(|c| c.history_by_id = HistoryByIdShape::List);
    assert_eq!(ids(&get(&id_url(&s, &id)).await.1), [id.as_str()]);
}

#[tokio::test]
async fn new_requests_reach_the_list_only_after_the_lag() {
    let s = FakeServer::start(FakeConfig {
        history_lag: Duration::from_millis(300),
        ..fast()
    })
    .await
    .unwrap();
    let id = submit_id(&s, &body("a cat")).await;
    let v = list(&s, "").await;
    assert_eq!((v["data"].as_array().unwrap().len(), v["total"].as_u64()), (0, Some(0)));
    assert_eq!(get(&id_url(&s, &id)).await.0, 200, "by id: no lag");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(ids(&list(&s, "").await["data"]), [id.as_str()]);
    s.set_history_lag(Duration::from_secs(60));
    assert_eq!(list(&s, "").await["total"], 0);
}

#[tokio::test]
async fn filters_sorting_and_pagination() {
    let s = FakeServer::start(fast()).await.unwrap();
    let sec = |n: u64| Duration::from_secs(n);
    // Oldest first: w5 .. w1 are wan requests (w3 failed), o1 another model, p1 pending.
    let w: Vec<String> = (0..5)
        .map(|i| {
            let prompt = if i == 2 { "[fail] w" } else { "w" };
            plant_done(&s, prompt, sec(100 - i))
        })
        .collect();
    let other = s.plant(Plant {
        model: "flux-schnell".into(),
        age: sec(50),
        ..Plant::new(json!({"prompt": "a dog"}))
    });
    s.update_config(|c| c.queue = sec(30));
    let pending = s.plant_request(body("p"));

    let all = list(&s, "").await;
    assert_eq!(all["total"], 7);
    let mut newest_first = vec![pending.clone(), other.clone()];
    newest_first.extend(w.iter().rev().cloned());
    assert_eq!(ids(&all["data"]), newest_first);
    let asc = list(&s, "sort_order=asc").await;
    let oldest_first: Vec<String> = newest_first.iter().rev().cloned().collect();
    assert_eq!(ids(&asc["data"]), oldest_first);

    let mut pages = Vec::new();
    for page in 1..=4 {
        let v = list(&s, &format!("per_page=2&page={page}")).await;
        assert_eq!((v["page"].as_u64(), v["total"].as_u64()), (Some(page), Some(7)));
        pages.extend(ids(&v["data"]));
    }
    assert_eq!(pages, newest_first, "pages tile the list; page 4 holds the last row");
    assert_eq!(list(&s, "per_page=2&page=9").await["data"], json!([]));

    assert_eq!(ids(&list(&s, "model_name=FLUX").await["data"]), [other.as_str()]);
    assert_eq!(list(&s, "model_name=i2v").await["total"], 6);
    assert_eq!(ids(&list(&s, "status=FAILED").await["data"]), [w[2].as_str()]);
    assert_eq!(ids(&list(&s, "status=pending").await["data"]), [pending.as_str()]);
    assert_eq!(list(&s, "status=COMPLETED").await["total"], 5);

    let by_cost = list(&s, "sort_by=credits_deduction&sort_order=asc").await;
    let costs: Vec<f64> = by_cost["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["credits_deduction"].as_f64().unwrap())
        .collect();
    assert_eq!(costs, [0.0, 0.0, 0.05, 0.05, 0.05, 0.05, 0.05]);
    let first_two = &ids(&by_cost["data"])[..2];
    assert_eq!(first_two, [w[2].clone(), pending.clone()], "ties by creation time");
    let by_name = list(&s, "sort_by=model_name&sort_order=asc").await;
    assert_eq!(ids(&by_name["data"])[0], other);

    let today = days_ago(0);
    assert_eq!(
        list(&s, &format!("from_date={today}&to_date={today}")).await["total"],
        7
    );
    let q = format!("from_date={}&to_date={}", days_ago(10), days_ago(3));
    assert_eq!(list(&s, &q).await["total"], 0);
}

#[tokio::test]
async fn bad_queries_are_400() {
    let s = FakeServer::start(fast()).await.unwrap();
    let window = format!("from_date={}&to_date={}", days_ago(31), days_ago(0));
    let reversed = format!("from_date={}&to_date={}", days_ago(0), days_ago(1));
    let ok31 = format!("from_date={}&to_date={}", days_ago(30), days_ago(0));
    for q in [
        "per_page=0",
        "per_page=101",
        "page=0",
        "from_date=2026-13-01",
        "to_date=yesterday",
        "status=DONE",
    ] {
        let (st, v) = get(&list_url(&s, q)).await;
        assert_eq!(st, 400, "{q}: {v}");
        assert!(v["error"].is_string(), "{v}");
    }
    for q in [&window, &reversed] {
        assert_eq!(get(&list_url(&s, q)).await.0, 400, "{q}");
    }
    assert!(parse_date(&days_ago(30)).is_some());
    assert_eq!(get(&list_url(&s, &ok31)).await.0, 200);
    assert_eq!(get(&list_url(&s, "per_page=100")).await.0, 200);
}

#[tokio::test]
async fn failure_modes_and_keys() {
    let s = FakeServer::start(fast()).await.unwrap();
    let id = s.plant_request(body("a cat"));
    let urls = [list_url(&s, ""), id_url(&s, &id)];
    for (mode, code) in [
        (HistoryMode::Down, 500),
        (HistoryMode::Unauthorized, 401),
        (HistoryMode::Forbidden, 403),
    ] {
        s.set_history_mode(mode);
        for url in &urls {
            let (st, v) = get(url).await;
            assert_eq!(st, code, "{mode:?}");
            assert!(v["error"].is_string());
        }
    }
    s.set_history_mode(HistoryMode::Garbage);
    for url in &urls {
        assert_eq!(get(url).await, (200, json!({"foo": 1})));
    }
    s.set_history_mode(HistoryMode::Ok);
    assert_eq!(get_as(&urls[0], "wrong").await.0, 401);
    let r = client().get(&urls[1]).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = client().get(&urls[0]).bearer_auth(KEY).send().await.unwrap();
    assert_eq!(r.status(), 401);
    // A forbidden model does not close the history.
    s.set_forbidden(true);
    assert_eq!(get(&urls[1]).await.0, 200);
    assert_eq!(s.stats().history_calls, 12);
}

#[tokio::test]
async fn several_outputs_mean_duplicate_rows_with_full_cost() {
    let s = FakeServer::start(FakeConfig {
        duplicate_rows: Some(2),
        ..fast()
    })
    .await
    .unwrap();
    let ids4: Vec<String> = (0..4)
        .map(|i| plant_done(&s, "w", Duration::from_secs(10 - i)))
        .collect();
    s.update_config(|c| c.queue = Duration::from_secs(30));
    let fifth = s.plant_request(body("pending"));
    let sixth = s.plant_request(body("pending, picked but no outputs yet"));

    let v = list(&s, "sort_order=asc").await;
    assert_eq!(v["total"], 8);
    let got = ids(&v["data"]);
    let want = [
        &ids4[0], &ids4[1], &ids4[1], &ids4[2], &ids4[3], &ids4[3], &fifth, &sixth,
    ];
    assert_eq!(got.iter().collect::<Vec<_>>(), want);
    let rows = v["data"].as_array().unwrap();
    assert_eq!(rows[1], rows[2], "a duplicate is the same row again");
    let billed: f64 = rows.iter().map(|r| r["credits_deduction"].as_f64().unwrap()).sum();
    assert!((billed - 0.30).abs() < 1e-9, "{billed}: rows sum the full cost twice");
    let mut unique = got.clone();
    unique.dedup();
    assert_eq!(unique.len(), 6);

    s.update_config(|c| c.history_by_id = HistoryByIdShape::List);
    assert_eq!(get(&id_url(&s, &ids4[1])).await.1.as_array().unwrap().len(), 2);
    assert_eq!(get(&id_url(&s, &sixth)).await.1.as_array().unwrap().len(), 1);
    s.update_config(|c| c.history_by_id = HistoryByIdShape::Bare);
    assert_eq!(get(&id_url(&s, &ids4[1])).await.1["request_id"], ids4[1].as_str());
    s.set_duplicate_rows(None);
    assert_eq!(list(&s, "").await["total"], 6);
    s.set_duplicate_rows(Some(1));
    assert_eq!(list(&s, "").await["total"], 10, "every completed request twice");
}

#[tokio::test]
async fn requests_by_other_clients_show_up_billed() {
    let s = FakeServer::start(FakeConfig {
        credits: Some(10),
        ..fast()
    })
    .await
    .unwrap();
    // Another client (the test itself) submits over HTTP; another one is planted.
    let by_http = submit_id(&s, &body("someone else")).await;
    let planted = plant_done(&s, "planted", Duration::from_secs(1));
    let stats = s.stats();
    let ledger: Vec<(&str, bool)> = stats
        .submits
        .iter()
        .map(|r| (r.request_id.as_str(), r.planted))
        .collect();
    assert_eq!(ledger, [(by_http.as_str(), false), (planted.as_str(), true)]);
    assert_eq!(s.stats().submits[1].body, body("planted"));
    let r = client().get(format!("{}/v2/requests/{planted}", s.api_url()));
    let r = r.header("x-api-key", KEY).send().await.unwrap();
    assert_eq!(r.headers()["x-remaining-credits"], "8");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["status"], "COMPLETED");
    let all = list(&s, "").await;
    assert_eq!(ids(&all["data"]), [by_http, planted]);
}

#[tokio::test]
async fn history_faults() {
    let s = FakeServer::start(fast()).await.unwrap();
    let id = s.plant_request(body("a cat"));
    let fault = |target, kind| Fault { target, kind, count: 1 };
    s.push_fault(fault(FaultTarget::History, FaultKind::Status(502)));
    assert_eq!(get(&list_url(&s, "")).await.0, 502);
    s.push_fault(fault(FaultTarget::History, FaultKind::AcceptThenDrop));
    let r = client().get(id_url(&s, &id)).header("x-api-key", KEY).send().await;
    assert!(match r {
        Err(_) => true,
        Ok(r) => r.bytes().await.is_err(),
    });
    // AnyApi is the v2 endpoints only: it leaves the history alone.
    s.push_fault(fault(FaultTarget::AnyApi, FaultKind::Status(500)));
    assert_eq!(get(&list_url(&s, "")).await.0, 200);
    assert_eq!(get(&format!("{}/v2/requests/{id}", s.api_url())).await.0, 500);
    s.push_fault(fault(FaultTarget::History, FaultKind::Delay(120)));
    let t = std::time::Instant::now();
    assert_eq!(get(&id_url(&s, &id)).await.0, 200);
    assert!(t.elapsed() >= Duration::from_millis(120));
    assert_eq!(s.stats().history_calls, 4);
}
