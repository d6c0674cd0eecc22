//! Tests of accounts and v2 switches over HTTP: several keys (isolation, per-key rate limits,
//! the key index in the request log), side calls in the rate window, the result endpoint for
//! pending jobs, the HTTP status of FAILED, and per-job timelines.

use std::time::Duration;

use serde_json::{json, Value};

use super::tests_api::{body, client, fast, get, get_as, submit, submit_as, submit_id, wait_done, KEY};
use super::*;

const KEY_B: &str = "key-b";

fn two_keys() -> FakeConfig {
    FakeConfig {
        extra_keys: vec![KEY_B.to_string()],
        ..fast()
    }
}

fn history_url(s: &FakeServer) -> String {
    format!("{}/inference-request/request-history", s.api_url())
}

fn ids_in(list: &Value) -> Vec<String> {
    let rows = list["data"].as_array().unwrap();
    rows.iter()
        .map(|r| r["request_id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn two_keys_are_two_accounts() {
    let s = FakeServer::start(two_keys()).await.unwrap();
    let a1 = submit_id(&s, &body("a one")).await;
    let a2 = submit_id(&s, &body("a two")).await;
    let (st, v) = submit_as(&s, KEY_B, &body("b one")).await;
    assert_eq!(st, 200);
    let b1 = v["request_id"].as_str().unwrap().to_string();
    assert_eq!(submit_as(&s, "wrong", &body("x")).await.0, 401);

    let (_, list_a) = get_as(&history_url(&s), KEY).await;
    let mut ids = ids_in(&list_a);
    ids.sort();
    let mut want = vec![a1.clone(), a2];
    want.sort();
    assert_eq!(ids, want);
    let (_, list_b) = get_as(&history_url(&s), KEY_B).await;
    assert_eq!(ids_in(&list_b), vec![b1.clone()]);
    // By id: own account only.
    let by_id = |id: &str| format!("{}/{id}", history_url(&s));
    assert_eq!(get_as(&by_id(&a1), KEY_B).await.0, 404);
    assert_eq!(get_as(&by_id(&b1), KEY_B).await.0, 200);
    // The v2 endpoints answer any valid key (unchanged behaviour).
    let status = format!("{}/v2/requests/{a1}/status", s.api_url());
    assert_eq!(get_as(&status, KEY_B).await.0, 200);

    let stats = s.stats();
    let keys: Vec<Option<usize>> = stats.api_requests.iter().map(|r| r.key_index).collect();
    assert_eq!(
        keys,
        [
            Some(0),
            Some(0),
            Some(1),
            None,
            Some(0),
            Some(1),
            Some(1),
            Some(1),
            Some(1)
        ]
    );
    assert_eq!(stats.requests_of_key(1).count(), 5);
    let billed: Vec<usize> = stats.submits.iter().map(|r| r.key_index).collect();
    assert_eq!(billed, [0, 0, 1]);
    assert!(stats.submits.iter().all(|r| !r.planted));
    // The log never holds a key.
    let log = serde_json::to_string(&stats).unwrap();
    assert!(!log.contains(KEY) && !log.contains(KEY_B));
}

#[tokio::test]
async fn rate_limits_are_per_key() {
    let s = FakeServer::start(FakeConfig {
        key_rate_limits: vec![Some(2), Some(3)],
        rate_window: Duration::from_secs(30),
        ..two_keys()
    })
    .await
    .unwrap();
    let url = format!("{}/v2/requests/nope/status", s.api_url());
    let codes = |key: &'static str, n: usize| {
        let url = url.clone();
        async move {
            let mut v = Vec::new();
            for _ in 0..n {
                v.push(get_as(&url, key).await.0);
            }
            v
        }
    };
    assert_eq!(codes(KEY, 3).await, [404, 404, 429]);
    assert_eq!(codes(KEY_B, 4).await, [404, 404, 404, 429]);
    assert_eq!(s.stats().rate_limited, 2);
    s.set_key_rate_limit(0, None);
    assert_eq!(codes(KEY, 3).await, [404, 404, 404]);
    assert_eq!(codes(KEY_B, 1).await, [429]);
    s.set_rate_limit(None);
    assert_eq!(codes(KEY_B, 1).await, [404]);
}

#[tokio::test]
async fn rate_window_slides_per_key() {
    let window = Duration::from_millis(300);
    let s = FakeServer::start(FakeConfig {
        rate_limit: Some(1),
        rate_window: window,
        ..two_keys()
    })
    .await
    .unwrap();
    let url = format!("{}/v2/requests/nope", s.api_url());
    assert_eq!(get_as(&url, KEY).await.0, 404);
    assert_eq!(get_as(&url, KEY).await.0, 429);
    assert_eq!(get_as(&url, KEY_B).await.0, 404);
    tokio::time::sleep(window).await;
    assert_eq!(get_as(&url, KEY).await.0, 404);
}

#[tokio::test]
async fn side_calls_count_against_the_rate_unless_switched_off() {
    let cfg = FakeConfig {
        rate_limit: Some(2),
        rate_window: Duration::from_secs(30),
        ..fast()
    };
    let s = FakeServer::start(cfg.clone()).await.unwrap();
    let status = format!("{}/v2/requests/nope/status", s.api_url());
    assert_eq!(get(&history_url(&s)).await.0, 200);
    let upload = format!("{}/upload-asset", s.api_url());
    let r = client().post(&upload).header("x-api-key", KEY);
    let r = r.json(&json!({"data_urls": ["data:image/png;base64,AA=="]}));
    assert_eq!(r.send().await.unwrap().status(), 200);
    assert_eq!(get(&status).await.0, 429);
    assert_eq!(get(&history_url(&s)).await.0, 429);

    let s = FakeServer::start(FakeConfig {
        history_counts_against_rate: false,
        ..cfg
    })
    .await
    .unwrap();
    let status = format!("{}/v2/requests/nope/status", s.api_url());
    for _ in 0..4 {
        assert_eq!(get(&history_url(&s)).await.0, 200);
    }
    assert_eq!(get(&status).await.0, 404);
    assert_eq!(get(&status).await.0, 404);
    assert_eq!(get(&status).await.0, 429);
    // Not limited either, even with the window full.
    assert_eq!(get(&history_url(&s)).await.0, 200);
    assert_eq!(s.stats().rate_limited, 1);
}

#[tokio::test]
async fn result_endpoint_can_answer_404_while_pending() {
    let s = FakeServer::start(FakeConfig {
        queue: Duration::from_millis(200),
        result_pending: ResultPending::NotFound404,
        ..fast()
    })
    .await
    .unwrap();
    let (_, v) = submit(&s, &body("a cat")).await;
    let id = v["request_id"].as_str().unwrap();
    let (status_url, response_url) = (v["status_url"].as_str().unwrap(), v["response_url"].as_str().unwrap());
    let (st, e) = get(response_url).await;
    assert_eq!((st, e), (404, json!({"error": format!("Request {id} not found")})));
    let (st, v2) = get(status_url).await;
    assert_eq!((st, v2["status"].as_str()), (200, Some("QUEUED")));
    assert_eq!(s.stats().result_pending_404, 1);
    let (st, _) = wait_done(status_url).await;
    assert_eq!(st, 200);
    let (st, done) = get(response_url).await;
    assert_eq!((st, done["status"].as_str()), (200, Some("COMPLETED")));
    assert_eq!(s.stats().result_pending_404, 1);

    s.set_result_pending(ResultPending::Ok200);
    s.update_config(|c| c.queue = Duration::from_secs(10));
    let (_, v) = submit(&s, &body("a cat")).await;
    let (st, v) = get(v["response_url"].as_str().unwrap()).await;
    assert_eq!((st, v["status"].as_str()), (200, Some("QUEUED")));
}

#[tokio::test]
async fn failed_can_arrive_under_any_status() {
    let s = FakeServer::start(FakeConfig {
        failed_status: 200,
        ..fast()
    })
    .await
    .unwrap();
    let (_, v) = submit(&s, &body("a [fail] cat")).await;
    let (st, done) = wait_done(v["status_url"].as_str().unwrap()).await;
    assert_eq!((st, done["status"].as_str()), (200, Some("FAILED")));
    assert_eq!(done["error"], "Inference failed: simulated model error");
    assert!(done["metrics"].is_object());
    let (st, res) = get(v["response_url"].as_str().unwrap()).await;
    assert_eq!((st, res["status"].as_str()), (200, Some("FAILED")));
    s.set_failed_status(500);
    let (st, res) = get(v["response_url"].as_str().unwrap()).await;
    assert_eq!((st, res["status"].as_str()), (500, Some("FAILED")));
}

#[tokio::test]
async fn timelines_show_processing_start_and_frames_scale_the_run() {
    let s = FakeServer::start(FakeConfig {
        queue: Duration::from_millis(50),
        run: Duration::from_millis(162),
        run_by_frames: true,
        ..fast()
    })
    .await
    .unwrap();
    let mut b = body("short");
    let short = submit_id(&s, &b).await;
    b["num_frames"] = json!(100);
    let long = submit_id(&s, &b).await;
    let tl = s.timelines();
    let of = |id: &str| tl.iter().find(|t| t.request_id == id).unwrap().clone();
    let near = |got: u64, want: u64| got.abs_diff(want) <= 1;
    for (id, run) in [(&short, 162), (&long, 200)] {
        let t = of(id);
        assert!(near(t.processing_ms - t.submitted_ms, 50), "{t:?}");
        assert!(near(t.done_ms - t.processing_ms, run), "{t:?}");
        assert_eq!(t.seen_done_ms, None);
    }
    // Phases follow the timeline: PROCESSING after the queue time, not before.
    let status = format!("{}/v2/requests/{long}/status", s.api_url());
    tokio::time::sleep(Duration::from_millis(80)).await;
    assert_eq!(get(&status).await.1["status"], "PROCESSING");
    let (_, done) = wait_done(&status).await;
    assert_eq!(done["status"], "COMPLETED");
    assert!(
        of(&long).done_ms
            <= s.timelines()
                .iter()
                .find(|t| t.request_id == long)
                .unwrap()
                .seen_done_ms
                .unwrap()
    );
}
