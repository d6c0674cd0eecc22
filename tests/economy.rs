//! Request economy: one paced budget, 429 hints and recovery, budgets that stop submitting,
//! deadline ordering, and adaptive polling — against the fake, through the real binary.

mod common;

use std::time::Duration;

use common::*;
use wanbatch::fake::RetryAfterMode;

/// Requests in the fake's log, as arrival times in ms.
fn arrivals(env: &Env) -> Vec<u64> {
    env.fake.stats().api_requests.iter().map(|r| r.at_ms).collect()
}

/// The most requests in any `window_ms` (sliding).
fn max_in_window(times: &[u64], window_ms: u64) -> usize {
    let mut best = 0;
    let mut lo = 0;
    for hi in 0..times.len() {
        while times[hi] - times[lo] >= window_ms {
            lo += 1;
        }
        best = best.max(hi - lo + 1);
    }
    best
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_api_request_shares_one_smooth_budget_and_downloads_take_none() {
    let env = Env::new(fast_fake()).await;
    let m = env.write("jobs.csv", &manifest(12));
    // 20 requests per 500 ms window: one every 25 ms.
    let out = env.run(&[&m], &["--rpm", "20", "--rate-window-ms", "500"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let times = arrivals(&env);
    assert!(times.len() >= 24, "submits and polls all counted: {}", times.len());
    assert!(
        max_in_window(&times, 500) <= 20,
        "over the budget: {} in a window",
        max_in_window(&times, 500)
    );
    // No bursts: never three requests within one permit interval (25 ms). Two may land closer
    // than the interval at the fake when a task starts a few ms late, never more.
    assert!(max_in_window(&times, 25) <= 2, "a burst: {times:?}");
    // Downloads are not API requests: the fake saw 12 of them outside the log.
    assert_eq!(env.fake.stats().downloads, 12);
}

async fn ten_times_over(mode: RetryAfterMode) -> Env {
    let mut cfg = fast_fake();
    cfg.rate_limit = Some(10);
    cfg.rate_window = Duration::from_millis(1000);
    cfg.retry_after = mode;
    let env = Env::new(cfg).await;
    let m = env.write("jobs.csv", &manifest(24));
    // Configured for 100 per second: ten times what the server allows.
    let out = env.run(&[&m], &["--rpm", "100", "--rate-window-ms", "1000"]).await;
    assert_eq!(out.status.code(), Some(0), "{mode:?}: {}", text(&out));
    let jobs = env.export().await;
    assert!(jobs.iter().all(|j| j["state"] == "done"), "{jobs:#?}");
    env.assert_videos_match(&jobs);
    assert_eq!(env.fake.stats().submits.len(), 24, "a 429 never costs a resubmit");
    env
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_times_over_the_limit_with_the_reset_header_completes_and_429s_die_out() {
    let env = ten_times_over(RetryAfterMode::None).await;
    let stats = env.fake.stats();
    let first = stats.api_requests.first().unwrap().at_ms;
    let last = stats.api_requests.last().unwrap().at_ms;
    let late_429 = stats
        .api_requests
        .iter()
        .filter(|r| r.status == 429 && r.at_ms > first + (last - first) / 2)
        .count();
    assert!(stats.rate_limited >= 1, "the scenario must provoke 429s");
    assert!(
        stats.rate_limited <= 12,
        "{} 429s: the pace must drop below the limit",
        stats.rate_limited
    );
    assert!(late_429 <= 2, "429s in the second half of the run: {late_429}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_in_seconds_is_honoured() {
    let env = ten_times_over(RetryAfterMode::Seconds).await;
    assert!(env.fake.stats().rate_limited <= 12);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_as_an_http_date_is_honoured() {
    let env = ten_times_over(RetryAfterMode::HttpDate).await;
    assert!(env.fake.stats().rate_limited <= 12);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_429_nobody_sends_before_the_reset() {
    let mut cfg = fast_fake();
    cfg.rate_limit = Some(6);
    cfg.rate_window = Duration::from_millis(600);
    let env = Env::new(cfg).await;
    let m = env.write("jobs.csv", &manifest(10));
    let out = env.run(&[&m], &["--rpm", "60", "--rate-window-ms", "600"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    // The fake admits at most 6 per sliding 600 ms; after a 429 every worker waited for the
    // reset, so a second 429 right behind the first (within the same refusal) is rare.
    let log = env.fake.stats().api_requests;
    let refused: Vec<u64> = log.iter().filter(|r| r.status == 429).map(|r| r.at_ms).collect();
    let back_to_back = refused.windows(2).filter(|w| w[1] - w[0] < 20).count();
    assert!(
        back_to_back <= 1,
        "429s in a burst, workers did not all wait: {refused:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_cost_stops_submitting_and_collects_what_was_paid_for() {
    let env = Env::new(fast_fake()).await; // reports metrics.cost = 0.05 per video
    let m = env.write("jobs.csv", &manifest(10));
    let out = env.run(&[&m], &["--max-cost", "0.20", "--price", "0.05"]).await;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--max-cost 0.20"),
        "{}",
        text(&out)
    );
    let jobs = env.export().await;
    let done = jobs.iter().filter(|j| j["state"] == "done").count();
    assert_eq!(done, 4, "exactly the budget's worth: {jobs:#?}");
    assert_eq!(env.fake.stats().submits.len(), 4);
    assert!(jobs.iter().all(|j| j["state"] == "done" || j["state"] == "pending"));
    env.assert_videos_match(&jobs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_credits_stops_submitting_when_the_account_runs_low() {
    let mut cfg = fast_fake();
    cfg.credits = Some(10);
    let env = Env::new(cfg).await;
    let m = env.write("jobs.csv", &manifest(10));
    let out = env.run(&[&m], &["--min-credits", "7", "--concurrency", "1"]).await;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--min-credits 7"),
        "{}",
        text(&out)
    );
    let submits = env.fake.stats().submits.len();
    assert_eq!(submits, 4, "10 → 6 credits after the 4th submit");
    let jobs = env.export().await;
    assert_eq!(jobs.iter().filter(|j| j["state"] == "done").count(), submits);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_cost_needs_a_price() {
    let env = Env::new(fast_fake()).await;
    let m = env.write("jobs.csv", &manifest(1));
    let out = env.run(&[&m], &["--max-cost", "1"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(env.fake.stats().api_requests.is_empty());
}

/// With the budget short and results expiring soon, polls of running jobs go before new
/// submits: no result may expire while submits are waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polls_go_before_submits_when_the_budget_is_short() {
    let mut cfg = fast_fake();
    cfg.queue = Duration::from_millis(20);
    cfg.run = Duration::from_millis(80);
    cfg.result_lifetime = Duration::from_millis(900);
    let env = Env::new(cfg).await;
    let m = env.write("jobs.csv", &manifest(16));
    // 10 requests per second; 16 jobs all allowed in flight at once.
    let out = env
        .run(
            &[&m],
            &[
                "--rpm",
                "10",
                "--rate-window-ms",
                "1000",
                "--concurrency",
                "16",
                "--expected-duration",
                "0.1s",
            ],
        )
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let jobs = env.export().await;
    let expired: i64 = jobs.iter().map(|j| j["resubmits_expired"].as_i64().unwrap()).sum();
    assert_eq!(
        expired, 0,
        "a result expired while the budget went to submits: {jobs:#?}"
    );
}

/// Adaptive polling at a saturated budget: after learning on one batch, a second batch of
/// stable-duration videos costs at most 2.5 API requests each, and is seen soon after it
/// completes. (With slack the budget is spent on more polls instead: see tests/time_budget.rs.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn learned_polling_costs_at_most_two_and_a_half_requests_per_video() {
    let mut cfg = fast_fake();
    cfg.queue = Duration::from_millis(200);
    cfg.run = Duration::from_millis(1800);
    cfg.jitter = 0.1;
    let env = Env::new(cfg).await;
    // A wrong prior (4 s for 2 s videos) to learn from.
    // 20 requests a second: about 9 videos a second at most, against 2 s videos — the budget,
    // not the jobs, is what limits.
    let args = [
        "--expected-duration",
        "4s",
        "--min-poll-gap-ms",
        "20",
        "--rpm",
        "20",
        "--rate-window-ms",
        "1000",
    ];
    let warm = env.write("warm.csv", &manifest(40));
    assert_eq!(env.run(&[&warm], &args).await.status.code(), Some(0));
    let before = env.fake.stats().api_requests.len();
    let seen_before = env.fake.timelines().len();
    let mut second = String::from("id,image,prompt\n");
    for i in 0..40 {
        second.push_str(&format!("b{i},https://img.example/b{i}.jpg,second batch {i}\n"));
    }
    let m = env.write("second.csv", &second);
    let out = env.run(&[&m], &args).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let requests = env.fake.stats().api_requests.len() - before;
    let per_video = requests as f64 / 40.0;
    assert!(per_video <= 2.5, "{per_video:.2} API requests per video");
    let timelines = env.fake.timelines();
    let batch: Vec<_> = timelines.iter().skip(seen_before).collect();
    let delay = batch
        .iter()
        .map(|t| (t.seen_done_ms.unwrap() - t.done_ms) as f64)
        .sum::<f64>()
        / batch.len() as f64;
    let duration = batch.iter().map(|t| (t.done_ms - t.submitted_ms) as f64).sum::<f64>() / batch.len() as f64;
    eprintln!("{per_video:.2} requests per video, delay {delay:.0} ms of {duration:.0} ms");
    // The benchmark measures the 10 % target at scale; here a looser bound absorbs CI noise.
    assert!(
        delay <= duration * 0.2,
        "mean delay {delay:.0} ms for {duration:.0} ms videos"
    );
}
