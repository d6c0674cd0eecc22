//! `wanbatch fake-server` as users start it: the new flags reach the running server (two keys
//! as two accounts, a result endpoint that 404s while pending, FAILED under 200, history
//! shapes and lag, the upload answer's field name). The server is a child process, killed at
//! the end of each test (and on drop).

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};

/// A running `wanbatch fake-server` child and its API URL.
struct Child {
    proc: tokio::process::Child,
    api: String,
    /// Kept open: the fake stops if its stdout is closed under it.
    _stdout: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

impl Child {
    async fn start(flags: &[&str]) -> Child {
        let mut proc = tokio::process::Command::new(env!("CARGO_BIN_EXE_wanbatch"))
            .arg("fake-server")
            .args(flags)
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(proc.stdout.take().unwrap()).lines();
        let first = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .expect("the fake printed nothing")
            .unwrap()
            .unwrap();
        // "fake Segmind API listening on http://127.0.0.1:N (videos on …); key: …"
        let api = first.split_whitespace().nth(5).unwrap().to_string();
        assert!(api.starts_with("http://127.0.0.1:"), "{first}");
        Child {
            proc,
            api,
            _stdout: lines,
        }
    }

    async fn stop(mut self) {
        self.proc.kill().await.unwrap();
    }
}

async fn call(req: reqwest::RequestBuilder) -> (u16, Value) {
    let r = req.send().await.unwrap();
    let st = r.status().as_u16();
    (st, r.json().await.unwrap_or(Value::Null))
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

fn job(prompt: &str) -> Value {
    json!({"image": "https://example.com/cat.jpg", "prompt": prompt})
}

#[tokio::test]
async fn flags_shape_the_running_fake() {
    let fake = Child::start(&[
        "--api-key",
        "acct-a",
        "--api-key",
        "acct-b",
        "--queue-ms",
        "150",
        "--run-ms",
        "50",
        "--result-pending",
        "404",
        "--failed-status",
        "200",
        "--history-envelope",
        "rows",
        "--history-time-field",
        "created_at",
        "--upload-field",
        "urls",
    ])
    .await;
    let c = client();
    let submit = |key: &str, prompt: &str| {
        let url = format!("{}/v2/wan-2.2-i2v-fast", fake.api);
        c.post(url).header("x-api-key", key).json(&job(prompt))
    };
    let (st, ok) = call(submit("acct-a", "a cat")).await;
    assert_eq!(st, 200);
    let (_, failed) = call(submit("acct-a", "a [fail] cat")).await;
    assert_eq!(call(submit("acct-b", "b's cat")).await.0, 200);
    let response_url = ok["response_url"].as_str().unwrap();
    let (st, _) = call(c.get(response_url).header("x-api-key", "acct-a")).await;
    assert_eq!(st, 404, "--result-pending 404");

    let deadline = Instant::now() + Duration::from_secs(10);
    let failed_url = failed["status_url"].as_str().unwrap();
    loop {
        let (st, v) = call(c.get(failed_url).header("x-api-key", "acct-a")).await;
        assert_eq!(st, 200, "--failed-status 200: {v}");
        if v["status"] == "FAILED" {
            break;
        }
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let history = format!("{}/inference-request/request-history", fake.api);
    let (st, a) = call(c.get(&history).header("x-api-key", "acct-a")).await;
    assert_eq!(st, 200);
    let rows = a["rows"].as_array().unwrap();
    assert_eq!((rows.len(), a["total"].as_u64()), (2, Some(2)));
    assert!(rows.iter().all(|r| r["created_at"].is_string()));
    let (_, b) = call(c.get(&history).header("x-api-key", "acct-b")).await;
    assert_eq!(b["rows"].as_array().unwrap().len(), 1);

    let upload = format!("{}/upload-asset", fake.api);
    let body = json!({"data_urls": ["data:image/png;base64,iVBORw0KGgo="]});
    let (st, v) = call(c.post(upload).header("x-api-key", "acct-b").json(&body)).await;
    assert_eq!(st, 200);
    assert_eq!(v["urls"].as_array().unwrap().len(), 1);

    let (_, stats) = call(c.get(format!("{}/_fake/stats", fake.api))).await;
    let keys: Vec<Value> = stats["api_requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["key_index"].clone())
        .collect();
    assert_eq!(keys.iter().filter(|k| **k == json!(1)).count(), 3);
    assert_eq!(
        (stats["uploads"].as_u64(), stats["result_pending_404"].as_u64()),
        (Some(1), Some(1))
    );
    fake.stop().await;
}

#[tokio::test]
async fn rate_window_flag_counts_per_key_and_history_can_be_free() {
    let fake = Child::start(&[
        "--api-key",
        "acct-a",
        "--api-key",
        "acct-b",
        "--rpm",
        "2",
        "--rate-window-secs",
        "30",
        "--history-counts-against-rate",
        "false",
        "--history-lag-ms",
        "60000",
    ])
    .await;
    let c = client();
    let status = format!("{}/v2/requests/nope/status", fake.api);
    let history = format!("{}/inference-request/request-history", fake.api);
    let get = |url: &str, key: &str| call(c.get(url).header("x-api-key", key));
    for _ in 0..3 {
        assert_eq!(get(&history, "acct-a").await.0, 200);
    }
    assert_eq!(get(&status, "acct-a").await.0, 404);
    assert_eq!(get(&status, "acct-a").await.0, 404);
    let (st, _) = get(&status, "acct-a").await;
    assert_eq!(st, 429, "two per window for acct-a");
    assert_eq!(get(&status, "acct-b").await.0, 404, "acct-b has its own window");
    assert_eq!(get(&history, "acct-a").await.0, 200, "history is not limited");
    let url = format!("{}/v2/wan-2.2-i2v-fast", fake.api);
    let (_, v) = call(c.post(url).header("x-api-key", "acct-b").json(&job("x"))).await;
    let (_, list) = get(&history, "acct-b").await;
    assert_eq!(list["total"], 0, "--history-lag-ms hides it from the list");
    let by_id = format!("{history}/{}", v["request_id"].as_str().unwrap());
    assert_eq!(get(&by_id, "acct-b").await.0, 200);
    fake.stop().await;
}
