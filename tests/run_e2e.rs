//! Whole runs of the real binary against the fake Segmind: videos, submits, failures, exit codes.

mod common;

use common::*;
use wanbatch::fake::{FaultKind, FaultTarget};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_job_ends_done_with_the_exact_bytes_and_one_submit_each() {
    let env = Env::new(fast_fake()).await;
    let m = env.write("jobs.csv", &manifest(8));
    let out = env.run(&[&m], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let jobs = env.export().await;
    assert_eq!(jobs.len(), 8);
    assert!(
        jobs.iter().all(|j| j["state"] == "done" && j["attempts"] == 1),
        "{jobs:#?}"
    );
    env.assert_videos_match(&jobs);
    let stats = env.fake.stats();
    assert_eq!(stats.submits.len(), 8, "one submit per job");
    assert_eq!(
        stats.cdn_requests_with_key, 0,
        "the key must never reach the video host"
    );
    // The body is the typed parameters, nothing more.
    let body = &stats
        .submits
        .iter()
        .find(|s| s.body["prompt"] == "scene number 3")
        .unwrap()
        .body;
    assert_eq!(body["num_frames"], serde_json::json!(81));
    assert_eq!(body["seed"], serde_json::json!(3));
    assert!(body.get("id").is_none());
    // Nothing else left in OUT but each video's provenance sidecar: no temporaries.
    let mut expected: Vec<String> = (0..8)
        .flat_map(|i| [format!("j{i}.json"), format!("j{i}.mp4")])
        .collect();
    expected.sort();
    assert_eq!(files_in(&env.out()), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rerunning_a_finished_manifest_submits_nothing() {
    let env = Env::new(fast_fake()).await;
    let m = env.write("jobs.csv", &manifest(4));
    assert_eq!(env.run(&[&m], &[]).await.status.code(), Some(0));
    let before = env.fake.stats();
    let out = env.run(&[&m], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("0 new jobs (4 already present)"),
        "{}",
        text(&out)
    );
    let after = env.fake.stats();
    assert_eq!(after.submits.len(), before.submits.len());
    assert_eq!(after.api_requests.len(), before.api_requests.len(), "not even a poll");
    // Appending rows adds only the new ones.
    let m2 = env.write(
        "jobs2.csv",
        &format!("{}j9,https://img.example/9.jpg,appended,81,480p,9\n", manifest(4)),
    );
    assert_eq!(env.run(&[&m2], &[]).await.status.code(), Some(0));
    assert_eq!(env.fake.stats().submits.len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_jobs_keep_the_api_message_and_exit_1() {
    let env = Env::new(fast_fake()).await;
    let m = env.write(
        "jobs.csv",
        "id,image,prompt\n\
         ok,https://img.example/1.jpg,a calm lake\n\
         bad,https://img.example/2.jpg,[fail] a storm\n\
         nsfw,https://img.example/3.jpg,[blocked] something\n",
    );
    let out = env.run(&[&m], &[]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let jobs = env.export().await;
    let by = |id: &str| jobs.iter().find(|j| j["id"] == id).unwrap().clone();
    assert_eq!(by("ok")["state"], "done");
    assert_eq!(by("bad")["state"], "failed");
    assert_eq!(by("bad")["error"], "Inference failed: simulated model error");
    assert_eq!(by("nsfw")["error"], "Content blocked by safety filter (RAI)");
    assert_eq!(env.fake.stats().submits.len(), 3, "a FAILED job is not resubmitted");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("failed bad: Inference failed"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifest_errors_name_file_and_line_and_submit_nothing() {
    let env = Env::new(fast_fake()).await;
    let good = env.write("good.csv", &manifest(2));
    let bad = env.write(
        "bad.csv",
        "id,image,prompt,num_frames\n\
         x1,https://img.example/1.jpg,fine,81\n\
         x2,https://img.example/2.jpg,too many frames,120\n\
         x3,not-a-url,bad image,81\n",
    );
    let out = env.run(&[&good, &bad], &[]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.csv:3: num_frames: expected a whole number from 81 to 100, got \"120\""),
        "{err}"
    );
    assert!(err.contains("bad.csv:4: image:"), "{err}");
    assert!(env.fake.stats().api_requests.is_empty(), "nothing may be sent");
    // Nothing imported, no database created: a resume says there is nothing to do.
    assert!(!env.db().exists(), "a manifest error leaves no database");
    let out = env.run(&[], &[]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("nothing to do: no manifest was given and there is no campaign database"),
        "{}",
        text(&out)
    );
    assert!(!env.db().exists(), "and still none");
    assert!(env.fake.stats().submits.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jsonl_manifests_run_too() {
    let env = Env::new(fast_fake()).await;
    let m = env.write(
        "jobs.jsonl",
        "{\"image\":\"https://img.example/a.jpg\",\"prompt\":\"one\",\"go_fast\":false,\"sample_shift\":7.5}\n\
         {\"id\":\"two\",\"image\":\"https://img.example/b.jpg\",\"prompt\":\"two\",\"aspect_ratio\":\"9:16\"}\n",
    );
    let out = env.run(&[&m], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stats = env.fake.stats();
    let one = stats.submits.iter().find(|s| s.body["prompt"] == "one").unwrap();
    assert_eq!(one.body["go_fast"], serde_json::json!(false));
    assert_eq!(one.body["sample_shift"], serde_json::json!(7.5));
    env.assert_videos_match(&env.export().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_key_stops_at_once_with_exit_3_and_fails_nothing() {
    let env = Env::new(fast_fake()).await;
    let m = env.write("jobs.csv", &manifest(10));
    let out = env
        .run_cmd(&[&m], &[])
        .env("SEGMIND_API_KEY", "wrong-key")
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("401") && err.contains("SEGMIND_API_KEY"), "{err}");
    assert!(!err.contains("wrong-key"), "the key must never be printed");
    assert!(
        env.fake.stats().api_requests.len() <= 3,
        "a handful of requests, not one per job"
    );
    let jobs = env.export().await;
    assert!(jobs.iter().all(|j| j["state"] == "pending"), "{jobs:#?}");
    // With the right key the same database finishes.
    let out = env.run(&[], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(env.fake.stats().submits.len(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_key_is_a_usage_error() {
    let env = Env::new(fast_fake()).await;
    let m = env.write("jobs.csv", &manifest(1));
    let out = env
        .run_cmd(&[&m], &[])
        .env_remove("SEGMIND_API_KEY")
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("SEGMIND_API_KEY is not set"));
    assert!(env.fake.stats().api_requests.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_credits_collects_what_was_paid_for_then_exits_3() {
    let mut cfg = fast_fake();
    cfg.credits = Some(3);
    let env = Env::new(cfg).await;
    let m = env.write("jobs.csv", &manifest(6));
    let out = env.run(&[&m], &["--concurrency", "6"]).await;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("out of credits: 3 jobs waiting"),
        "{}",
        text(&out)
    );
    let jobs = env.export().await;
    let done = jobs.iter().filter(|j| j["state"] == "done").count();
    let pending = jobs.iter().filter(|j| j["state"] == "pending").count();
    assert_eq!((done, pending), (3, 3), "{jobs:#?}");
    env.assert_videos_match(&jobs);
    // Topped up: the rest completes.
    env.fake.set_credits(None);
    assert_eq!(env.run(&[], &[]).await.status.code(), Some(0));
    assert_eq!(env.fake.stats().submits.len(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_results_are_bought_again_at_most_max_resubmits_times() {
    // Records that expire before the job can complete: every attempt is lost. No paid loop: the
    // job is bought three times (the first and two resubmits) and then fails, saying why.
    let mut cfg = fast_fake();
    cfg.result_lifetime = std::time::Duration::from_millis(150);
    let env = Env::new(cfg).await;
    let m = env.write("jobs.csv", &manifest(1));
    let out = env
        .run(&[&m], &["--result-lifetime", "150ms", "--max-resubmits", "2"])
        .await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(env.fake.stats().submits.len(), 3, "{}", text(&out));
    let jobs = env.export().await;
    assert_eq!(jobs[0]["state"], "failed");
    assert_eq!(jobs[0]["resubmits_expired"], 2, "{jobs:#?}");
    let error = jobs[0]["error"].as_str().unwrap();
    assert!(
        error.contains("the result expired before it was fetched")
            && error.contains("bought 3 times")
            && error.contains("--max-resubmits 2"),
        "{error}"
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("failed j0: the result expired"),
        "{}",
        text(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_server_errors_and_broken_downloads_are_retried() {
    let env = Env::new(fast_fake()).await;
    env.fake
        .push_fault(fault(FaultTarget::Result, FaultKind::Status(502), 3));
    env.fake
        .push_fault(fault(FaultTarget::Download, FaultKind::Truncate(1000), 2));
    env.fake.push_fault(fault(FaultTarget::Result, FaultKind::Drop, 1));
    let m = env.write("jobs.csv", &manifest(3));
    let out = env.run(&[&m], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let jobs = env.export().await;
    env.assert_videos_match(&jobs);
    assert_eq!(env.fake.stats().submits.len(), 3, "GET trouble never causes a resubmit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_submit_answer_is_resubmitted_and_reported() {
    // With the request history down the lost submit cannot be looked up (tests/history.rs has
    // it found there and adopted): the default `--on-unknown resubmit` pays once more, flagged.
    let mut cfg = fast_fake();
    cfg.history_mode = wanbatch::fake::HistoryMode::Down;
    let env = Env::new(cfg).await;
    env.fake
        .push_fault(fault(FaultTarget::Submit, FaultKind::AcceptThenDrop, 1));
    let m = env.write("jobs.csv", &manifest(2));
    let out = env.run(&[&m], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let jobs = env.export().await;
    let flagged: Vec<_> = jobs.iter().filter(|j| j["maybe_billed_twice"] == true).collect();
    assert_eq!(flagged.len(), 1, "{jobs:#?}");
    assert_eq!(flagged[0]["resubmits_unknown"], 1);
    assert_eq!(
        env.fake.stats().submits.len(),
        3,
        "the lost one was billed, and one resubmit"
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("1 after a lost submit answer"),
        "{}",
        text(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_submit_answer_can_be_held_instead() {
    let mut cfg = fast_fake();
    cfg.history_mode = wanbatch::fake::HistoryMode::Down;
    let env = Env::new(cfg).await;
    env.fake
        .push_fault(fault(FaultTarget::Submit, FaultKind::AcceptThenStatus(504), 1));
    let m = env.write("jobs.csv", &manifest(2));
    let out = env.run(&[&m], &["--on-unknown", "hold", "--concurrency", "1"]).await;
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("1 job(s) held"),
        "{}",
        text(&out)
    );
    let jobs = env.export().await;
    assert_eq!(jobs.iter().filter(|j| j["state"] == "unknown").count(), 1);
    assert_eq!(env.fake.stats().submits.len(), 2);
}

/// A lost submit that may not be bought again (`--max-resubmits 0`) fails its job, and the
/// summary still counts the charge it may have made (and the export flags it for reconcile).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_submit_past_max_resubmits_fails_and_its_possible_charge_is_counted() {
    let mut cfg = fast_fake();
    cfg.history_mode = wanbatch::fake::HistoryMode::Down;
    let env = Env::new(cfg).await;
    env.fake
        .push_fault(fault(FaultTarget::Submit, FaultKind::AcceptThenDrop, 1));
    let m = env.write("jobs.csv", &manifest(1));
    let out = env.run(&[&m], &["--max-resubmits", "0"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("answer was lost once"), "{}", text(&out));
    assert!(
        stdout.contains("1 lost-answer submit(s) may also have been billed"),
        "{}",
        text(&out)
    );
    let jobs = env.export().await;
    assert_eq!(
        (jobs[0]["state"].as_str(), &jobs[0]["maybe_billed_twice"]),
        (Some("failed"), &serde_json::json!(true))
    );
    assert_eq!(env.fake.stats().submits.len(), 1, "never bought again");
}
