//! Time is the budget, through the real binary: idle budget is spent on polls (a prior never
//! makes a run wait), the result endpoint is polled directly only once it is proven to answer
//! pending requests, a young 404 never buys a video twice, FAILED is read from the body, and every
//! request says who it is.

mod common;

use std::time::{Duration, Instant};

use common::*;
use wanbatch::fake::ResultPending;

async fn status(env: &Env) -> String {
    let mut cmd = env.bin();
    cmd.args(["status", "--db", env.db().to_str().unwrap()]);
    stdout(&finish(cmd).await)
}

/// Polls per endpoint in the fake's log.
fn polls(env: &Env) -> (usize, usize) {
    let reqs = env.fake.stats().api_requests;
    let status = reqs.iter().filter(|r| r.path.ends_with("/status")).count();
    let result = reqs
        .iter()
        .filter(|r| r.method == "GET" && r.path.starts_with("/v2/requests/") && !r.path.ends_with("/status"))
        .count();
    (status, result)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_budget_is_spent_on_polls_and_a_wrong_prior_costs_no_waiting() {
    let env = Env::new(fast_fake()).await; // jobs of 0.3 s
    let m = env.write("jobs.csv", &manifest(10));
    let started = Instant::now();
    // A prior of 54 s: without polls on idle permits the first poll would wait for it.
    let out = env
        .run(&[&m], &["--expected-duration", "54s", "--min-poll-gap-ms", "100"])
        .await;
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(took < Duration::from_secs(15), "waited for the prior: {took:?}");
    // The class learnt it: its model is far below the prior.
    let mut cmd = env.bin();
    cmd.args(["export", "--db", env.db().to_str().unwrap()]);
    assert_eq!(finish(cmd).await.status.code(), Some(0));
    let timelines = env.fake.timelines();
    let mean_delay = timelines
        .iter()
        .map(|t| t.seen_done_ms.unwrap() as f64 - t.done_ms as f64)
        .sum::<f64>()
        / timelines.len() as f64;
    assert!(mean_delay < 1_000.0, "completion→seen {mean_delay} ms");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_result_endpoint_is_polled_directly_only_once_proven() {
    let env = Env::new(fast_fake()).await;
    let m = env.write("jobs.csv", &manifest(8));
    let out = env.run(&[&m], &["--min-poll-gap-ms", "50"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let s = status(&env).await;
    assert!(
        s.contains("polling (with --poll auto): the result endpoint directly: it answered 200 with"),
        "{s}"
    );
    // Proven on this account: a later run polls the result endpoint, not the status endpoint.
    let before = polls(&env);
    let more = env.write(
        "more.csv",
        &manifest(16)
            .replace("scene number", "later scene")
            .replace(",j", ",k")
            .replace("\nj", "\nk"),
    );
    let out = env.run(&[&more], &["--min-poll-gap-ms", "50"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let after = polls(&env);
    assert_eq!(after.0, before.0, "no status polls once proven: {before:?} → {after:?}");
    assert!(after.1 > before.1);
    // Every request to Segmind says who it is.
    let ua = format!("wanbatch/{}", env!("CARGO_PKG_VERSION"));
    assert!(env
        .fake
        .stats()
        .api_requests
        .iter()
        .all(|r| r.user_agent.as_deref() == Some(ua.as_str())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_young_404_never_buys_a_video_twice_and_returns_to_the_documented_flow_for_good() {
    let mut cfg = fast_fake();
    cfg.result_pending = ResultPending::NotFound404;
    let env = Env::new(cfg).await;
    let m = env.write("jobs.csv", &manifest(8));
    // Even forced onto the result endpoint: each job falls back to its status.
    let out = env.run(&[&m], &["--poll", "result", "--min-poll-gap-ms", "50"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(env.fake.stats().submits.len(), 8, "not one resubmit: {}", text(&out));
    assert!(env.fake.stats().result_pending_404 > 0, "the fake did answer 404");
    let jobs = env.export().await;
    assert!(jobs.iter().all(|j| j["state"] == "done" && j["resubmits_expired"] == 0));

    // Auto: the probe meets the 404; the run says so, and status records it for good.
    let env = Env::new({
        let mut c = fast_fake();
        c.result_pending = ResultPending::NotFound404;
        c
    })
    .await;
    let m = env.write("jobs.csv", &manifest(8));
    let mut cmd = env.run_cmd(&[&m], &["--min-poll-gap-ms", "50"]);
    cmd.env("RUST_LOG", "wanbatch=warn");
    let out = finish(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(env.fake.stats().submits.len(), 8);
    assert!(
        text(&out).contains("back to the documented flow (status until COMPLETED, then the result) for good"),
        "{}",
        text(&out)
    );
    let s = status(&env).await;
    assert!(
        s.contains("the documented flow (status until COMPLETED, then the result), for good: the result endpoint answered 404 for a request"),
        "{s}"
    );
    // Later runs on this account do not probe again.
    let before = env.fake.stats().result_pending_404;
    let more = env.write(
        "more.csv",
        &manifest(4).replace("scene number", "later scene").replace("\nj", "\nk"),
    );
    let out = env.run(&[&more], &["--min-poll-gap-ms", "50"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(env.fake.stats().result_pending_404, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_is_read_from_the_body_whatever_the_http_code() {
    let mut cfg = fast_fake();
    cfg.failed_status = 200;
    let env = Env::new(cfg).await;
    let m = env.write(
        "jobs.csv",
        "id,image,prompt\nok,https://img.example/1.jpg,fine\nbad,https://img.example/2.jpg,[fail] broken\n",
    );
    let out = env.run(&[&m], &[]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let jobs = env.export().await;
    let bad = jobs.iter().find(|j| j["id"] == "bad").unwrap();
    assert_eq!(bad["state"], "failed");
    assert_eq!(bad["error"], "Inference failed: simulated model error");
    assert_eq!(env.fake.stats().submits.len(), 2, "a FAILED job is not retried");
}
