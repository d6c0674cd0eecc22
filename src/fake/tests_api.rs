//! Tests of the fake API listener, driven over HTTP with reqwest. Also holds the
//! helpers shared with the other `tests_*` modules.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::*;

pub(super) const KEY: &str = "fake-key";

pub(super) fn fast() -> FakeConfig {
    FakeConfig {
        queue: Duration::from_millis(40),
        run: Duration::from_millis(40),
        video_len: 4096,
        ..FakeConfig::default()
    }
}

pub(super) fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

pub(super) fn body(prompt: &str) -> Value {
    json!({"image": "https://example.com/cat.jpg", "prompt": prompt, "num_frames": 81})
}

pub(super) fn submit_url(s: &FakeServer) -> String {
    format!("{}/v2/{MODEL_SLUG}", s.api_url())
}

/// Submits `body` with the key; answers the status and the JSON body.
pub(super) async fn submit(s: &FakeServer, body: &Value) -> (u16, Value) {
    let r = client()
        .post(submit_url(s))
        .header("x-api-key", KEY)
        .json(body)
        .send()
        .await
        .unwrap();
    let st = r.status().as_u16();
    (st, r.json().await.unwrap_or(Value::Null))
}

pub(super) async fn get(url: &str) -> (u16, Value) {
    get_as(url, KEY).await
}

/// GETs `url` with `key`; answers the status and the JSON body (Null if none).
pub(super) async fn get_as(url: &str, key: &str) -> (u16, Value) {
    let r = client().get(url).header("x-api-key", key).send().await.unwrap();
    let st = r.status().as_u16();
    (st, r.json().await.unwrap_or(Value::Null))
}

/// Submits `body` with `key`; answers the status and the JSON body.
pub(super) async fn submit_as(s: &FakeServer, key: &str, body: &Value) -> (u16, Value) {
    let r = client().post(submit_url(s)).header("x-api-key", key).json(body);
    let r = r.send().await.unwrap();
    let st = r.status().as_u16();
    (st, r.json().await.unwrap_or(Value::Null))
}

/// Submits `body` and answers its request id (the submit must be accepted).
pub(super) async fn submit_id(s: &FakeServer, body: &Value) -> String {
    let (st, v) = submit(s, body).await;
    assert_eq!(st, 200, "{v}");
    v["request_id"].as_str().unwrap().to_string()
}

/// Polls `status_url` until the job leaves QUEUED/PROCESSING (bounded).
pub(super) async fn wait_done(status_url: &str) -> (u16, Value) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (st, v) = get(status_url).await;
        let s = v["status"].as_str().unwrap_or("");
        if !(st == 200 && (s == "QUEUED" || s == "PROCESSING")) {
            return (st, v);
        }
        assert!(Instant::now() < deadline, "job did not finish");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn happy_path_timeline_and_urls() {
    let s = FakeServer::start(FakeConfig {
        queue: Duration::from_millis(300),
        run: Duration::from_millis(300),
        ..fast()
    })
    .await
    .unwrap();
    let (st, v) = submit(&s, &body("a cat")).await;
    assert_eq!(st, 200);
    let id = v["request_id"].as_str().unwrap().to_string();
    assert_eq!(v["status"], "QUEUED");
    let status_url = format!("{}/v2/requests/{id}/status", s.api_url());
    let response_url = format!("{}/v2/requests/{id}", s.api_url());
    assert_eq!(v["status_url"], status_url.as_str());
    assert_eq!(v["response_url"], response_url.as_str());
    assert_eq!(v["poll_url"], response_url.as_str());

    let (st, v) = get(&status_url).await;
    assert_eq!((st, v["status"].as_str()), (200, Some("QUEUED")));
    assert_eq!(v["metrics"], json!({}));
    let (_, v) = get(&response_url).await;
    assert_eq!(v["status"], "QUEUED");
    assert!(v.get("output").is_none());
    tokio::time::sleep(Duration::from_millis(330)).await;
    let (_, v) = get(&status_url).await;
    assert_eq!(v["status"], "PROCESSING");

    let (st, v) = wait_done(&status_url).await;
    assert_eq!((st, v["status"].as_str()), (200, Some("COMPLETED")));
    let r = client()
        .get(&response_url)
        .header("x-api-key", KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-remaining-credits"], "1000000");
    let v: Value = r.json().await.unwrap();
    let video = format!("{}/videos/{id}.mp4", s.cdn_url());
    assert_eq!(v["output"], video.as_str());
    assert_eq!(v["video"]["url"], video.as_str());
    assert_eq!(v["video"]["content_type"], "video/mp4");
    // The length the video host really serves: a real video, longer than the 4096 bytes asked for.
    let served = client().get(&video).send().await.unwrap().bytes().await.unwrap().len();
    assert!(served > 4096);
    assert_eq!(v["video"]["file_size"], served);
    assert_eq!(v["metrics"]["cost"], 0.05);
    assert_eq!(v["metrics"]["queue_time_ms"], 300);

    let stats = s.stats();
    assert_eq!(stats.submits.len(), 1);
    assert_eq!(stats.submits[0].request_id, id);
    assert_eq!(stats.submits[0].body, body("a cat"));
    assert!(stats.status_polls >= 3 && stats.result_polls == 2);
    let first = &stats.api_requests[0];
    assert_eq!((first.method.as_str(), first.status), ("POST", 200));
    assert_eq!(first.path, format!("/v2/{MODEL_SLUG}"));
    assert!(stats.api_requests.iter().all(|r| r.had_key));
    s.shutdown().await;
}

#[tokio::test]
async fn failed_jobs_answer_422_with_error() {
    let s = FakeServer::start(fast()).await.unwrap();
    for (prompt, msg) in [
        ("x [fail] y", "Inference failed: simulated model error"),
        ("x [blocked] y", "Content blocked by safety filter (RAI)"),
    ] {
        let (_, v) = submit(&s, &body(prompt)).await;
        let (st, v2) = wait_done(v["status_url"].as_str().unwrap()).await;
        assert_eq!(st, 422);
        assert_eq!(v2["status"], "FAILED");
        assert_eq!(v2["error"], msg);
        assert!(v2["metrics"].is_object());
        let (st, v3) = get(v["response_url"].as_str().unwrap()).await;
        assert_eq!((st, v3["error"].as_str()), (422, Some(msg)));
    }
}

#[tokio::test]
async fn invalid_body_is_accepted_then_fails_validation() {
    let s = FakeServer::start(fast()).await.unwrap();
    let mut b = body("a cat");
    b["num_frames"] = json!("81");
    let (st, v) = submit(&s, &b).await;
    assert_eq!(st, 200);
    assert_eq!(s.stats().submits.len(), 1);
    let (st, v) = wait_done(v["status_url"].as_str().unwrap()).await;
    assert_eq!(st, 422);
    let err = v["error"].as_str().unwrap();
    assert!(err.starts_with("Validation error: num_frames"), "{err}");
}

#[tokio::test]
async fn records_expire_to_404() {
    let s = FakeServer::start(FakeConfig {
        queue: Duration::from_millis(10),
        run: Duration::from_millis(10),
        result_lifetime: Duration::from_millis(400),
        ..fast()
    })
    .await
    .unwrap();
    let (_, v) = submit(&s, &body("a cat")).await;
    let id = v["request_id"].as_str().unwrap();
    let (st, _) = wait_done(v["status_url"].as_str().unwrap()).await;
    assert_eq!(st, 200);
    tokio::time::sleep(Duration::from_millis(450)).await;
    for url in [&v["status_url"], &v["response_url"]] {
        let (st, e) = get(url.as_str().unwrap()).await;
        assert_eq!(st, 404);
        assert_eq!(e["error"], format!("Request {id} not found"));
    }
    let (st, e) = get(&format!("{}/v2/requests/nope", s.api_url())).await;
    assert_eq!((st, e["error"].as_str()), (404, Some("Request nope not found")));
}

#[tokio::test]
async fn auth_forbidden_and_unknown_model() {
    let s = FakeServer::start(fast()).await.unwrap();
    let c = client();
    let url = submit_url(&s);
    let no_key = c.post(&url).json(&body("x")).send().await.unwrap();
    assert_eq!(no_key.status(), 401);
    assert!(no_key.headers().contains_key("x-remaining-credits"));
    let wrong = c.post(&url).header("x-api-key", "nope");
    assert_eq!(wrong.json(&body("x")).send().await.unwrap().status(), 401);
    let bearer = c.post(&url).bearer_auth(KEY).json(&body("x"));
    let r = bearer.send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.json::<Value>().await.unwrap()["error"].is_string());
    let poll = c.get(format!("{}/v2/requests/x/status", s.api_url()));
    assert_eq!(poll.send().await.unwrap().status(), 401);
    let other = format!("{}/v2/other-model", s.api_url());
    let r = c.post(other).header("x-api-key", KEY).json(&body("x"));
    let r = r.send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "Model not found");
    s.set_forbidden(true);
    assert_eq!(submit(&s, &body("x")).await.0, 403);
    s.set_forbidden(false);
    assert_eq!(submit(&s, &body("x")).await.0, 200);
    let stats = s.stats();
    assert_eq!(stats.submits.len(), 1);
    assert!(!stats.api_requests[0].had_key);
}

#[tokio::test]
async fn content_type_credits_and_bad_json() {
    let s = FakeServer::start(FakeConfig {
        credits: Some(1),
        ..fast()
    })
    .await
    .unwrap();
    let c = client();
    let r = c.post(submit_url(&s)).header("x-api-key", KEY);
    let r = r.body(body("x").to_string()).send().await.unwrap();
    assert_eq!(r.status(), 406);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"], "Content-Type must be application/json");
    let r = c.post(submit_url(&s)).header("x-api-key", KEY);
    let r = r.header("content-type", "application/json").body("[1]");
    assert_eq!(r.send().await.unwrap().status(), 400);

    let r = c.post(submit_url(&s)).header("x-api-key", KEY).json(&body("x"));
    let r = r.send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-remaining-credits"], "0");
    let (st, v) = submit(&s, &body("x")).await;
    assert_eq!((st, v["error"].as_str()), (406, Some("Insufficient credits")));
    s.set_credits(Some(5));
    assert_eq!(submit(&s, &body("x")).await.0, 200);
    assert_eq!(s.stats().submits.len(), 2);
}

#[tokio::test]
async fn rate_limit_429_with_reset_header() {
    let window = Duration::from_millis(400);
    for mode in [RetryAfterMode::Seconds, RetryAfterMode::HttpDate] {
        let s = FakeServer::start(FakeConfig {
            rate_limit: Some(2),
            rate_window: window,
            retry_after: mode,
            ..fast()
        })
        .await
        .unwrap();
        let before = std::time::SystemTime::now();
        let url = format!("{}/v2/requests/x/status", s.api_url());
        assert_eq!(get(&url).await.0, 404);
        assert_eq!(submit(&s, &body("x")).await.0, 200);
        let r = client().get(&url).header("x-api-key", KEY);
        let r = r.send().await.unwrap();
        assert_eq!(r.status(), 429);
        let reset = r.headers()["x-rate-limit-reset-at-utc"].to_str().unwrap();
        assert!(reset.ends_with('Z') && reset.len() == 24, "{reset}");
        let lo = rfc3339_millis(before + window - Duration::from_millis(5));
        let hi = rfc3339_millis(before + window + Duration::from_secs(1));
        assert!(lo.as_str() <= reset && reset <= hi.as_str(), "{lo} {reset} {hi}");
        let retry = r.headers()["retry-after"].to_str().unwrap().to_string();
        match mode {
            RetryAfterMode::Seconds => assert_eq!(retry, "1"),
            _ => assert!(httpdate::parse_http_date(&retry).is_ok(), "{retry}"),
        }
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"], "Rate limit exceeded");
        tokio::time::sleep(window).await;
        assert_eq!(get(&url).await.0, 404);
        let stats = s.stats();
        assert_eq!(stats.rate_limited, 1);
        assert_eq!(stats.api_requests[2].status, 429);
        s.set_rate_limit(None);
        for _ in 0..3 {
            assert_eq!(get(&url).await.0, 404);
        }
    }
    let s = FakeServer::start(FakeConfig {
        rate_limit: Some(0),
        ..fast()
    })
    .await
    .unwrap();
    let r = client().get(format!("{}/v2/requests/x", s.api_url()));
    let r = r.header("x-api-key", KEY).send().await.unwrap();
    assert_eq!(r.status(), 429);
    assert!(!r.headers().contains_key("retry-after"));
}

#[tokio::test]
async fn submit_faults_status_and_lost_answers() {
    let s = FakeServer::start(fast()).await.unwrap();
    let fault = |kind, count| Fault {
        target: FaultTarget::Submit,
        kind,
        count,
    };
    s.push_fault(fault(FaultKind::Status(500), 1));
    s.push_fault(fault(FaultKind::AcceptThenStatus(504), 1));
    s.push_fault(fault(FaultKind::AcceptThenDrop, 1));
    s.push_fault(fault(FaultKind::Drop, 1));
    assert_eq!(submit(&s, &body("x")).await.0, 500);
    assert_eq!(s.stats().submits.len(), 0);
    assert_eq!(submit(&s, &body("x")).await.0, 504);
    assert_eq!(s.stats().submits.len(), 1);
    for expected_submits in [2, 2] {
        let r = client().post(submit_url(&s)).header("x-api-key", KEY);
        let res = r.json(&body("x")).send().await;
        let failed = match res {
            Err(_) => true,
            Ok(r) => r.bytes().await.is_err(),
        };
        assert!(failed, "client must see a broken answer");
        assert_eq!(s.stats().submits.len(), expected_submits);
    }
    assert_eq!(submit(&s, &body("x")).await.0, 200);
    assert_eq!(s.stats().submits.len(), 3);
}

#[tokio::test]
async fn poll_faults_delay_drop_and_any_api() {
    let s = FakeServer::start(fast()).await.unwrap();
    let (_, v) = submit(&s, &body("x")).await;
    let status_url = v["status_url"].as_str().unwrap().to_string();
    s.push_fault(Fault {
        target: FaultTarget::Status,
        kind: FaultKind::Delay(150),
        count: 1,
    });
    let t = Instant::now();
    assert_eq!(get(&status_url).await.0, 200);
    assert!(t.elapsed() >= Duration::from_millis(150));
    s.push_fault(Fault {
        target: FaultTarget::AnyApi,
        kind: FaultKind::Drop,
        count: 1,
    });
    let r = client().get(&status_url).header("x-api-key", KEY);
    match r.send().await {
        Err(_) => {}
        Ok(r) => assert!(r.json::<Value>().await.is_err()),
    }
    s.push_fault(Fault {
        target: FaultTarget::Result,
        kind: FaultKind::Status(502),
        count: 2,
    });
    s.clear_faults();
    assert_eq!(get(v["response_url"].as_str().unwrap()).await.0, 200);
}

#[tokio::test]
async fn admin_routes_stats_and_faults() {
    let s = FakeServer::start(fast()).await.unwrap();
    let c = client();
    let faults = format!("{}/_fake/faults", s.api_url());
    let r = c.post(&faults);
    let r = r.json(&json!({"target": "Submit", "kind": {"Status": 502}, "count": 1}));
    assert_eq!(r.send().await.unwrap().status(), 200);
    assert_eq!(submit(&s, &body("x")).await.0, 502);
    let r = c.post(&faults);
    let r = r.json(&json!({"target": "AnyApi", "kind": {"Status": 500}, "count": 5}));
    r.send().await.unwrap();
    assert_eq!(c.delete(&faults).send().await.unwrap().status(), 200);
    assert_eq!(submit(&s, &body("x")).await.0, 200);
    let stats_url = format!("{}/_fake/stats", s.api_url());
    let v: Value = c.get(stats_url).send().await.unwrap().json().await.unwrap();
    assert_eq!(v["submits"].as_array().unwrap().len(), 1);
    assert_eq!(v["api_requests"].as_array().unwrap().len(), 2);
    assert_eq!(v["api_requests"][0]["status"], 502);
}
