//! The job-management commands through the real binary: cancel, retry --expired, an export fed
//! back as a manifest, dry-run estimates, --log-file and wanbatch.toml.

mod common;

use std::time::Duration;

use common::*;
use wanbatch::store::{Completed, Store};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_jobs_are_never_submitted_and_the_run_exits_0() {
    let env = Env::new(fast_fake()).await;
    let m = env.write("jobs.csv", &manifest(4));
    let db = env.db();
    let db = db.to_str().unwrap();
    assert_eq!(
        cmd(&env, &["import", m.to_str().unwrap(), "--db", db])
            .await
            .status
            .code(),
        Some(0)
    );
    let out = cmd(&env, &["cancel", "--db", db, "--ids", "j1,j2,nope"]).await;
    assert_eq!(
        out.status.code(),
        Some(2),
        "an unknown id is a usage error: {}",
        text(&out)
    );
    assert!(stdout(&out).contains("2 job(s) cancelled"), "{}", text(&out));
    assert!(stderr(&out).contains("nope: no such job"), "{}", text(&out));

    let out = env.run(&[], &[]).await;
    assert_eq!(out.status.code(), Some(0), "cancelled is not failed: {}", text(&out));
    assert!(
        stdout(&out).contains("4 jobs: 2 done, 0 failed, 2 cancelled"),
        "{}",
        text(&out)
    );
    let submitted = submits_by_prompt(&env.fake);
    assert_eq!(submitted.len(), 2, "{submitted:?}");
    assert!(!submitted.contains_key("scene number 1") && !submitted.contains_key("scene number 2"));
    let jobs = env.export().await;
    let state = |id: &str| jobs.iter().find(|j| j["id"] == id).unwrap()["state"].clone();
    assert_eq!(
        (state("j0"), state("j1"), state("j3")),
        ("done".into(), "cancelled".into(), "done".into())
    );
    // Cancelled jobs have ended: nothing is left for an ETA to wait on.
    let out = cmd(&env, &["status", "--db", db]).await;
    assert!(stdout(&out).contains("ETA: nothing left to do"), "{}", text(&out));

    // A finished job cannot be cancelled; a cancelled one comes back with retry --ids.
    let out = cmd(&env, &["cancel", "--db", db, "--ids", "j0"]).await;
    assert!(
        stderr(&out).contains("j0: not cancelled: it has ended (done)"),
        "{}",
        text(&out)
    );
    let out = cmd(&env, &["retry", "--db", db, "--ids", "j1"]).await;
    assert!(
        stdout(&out).contains("1 job(s) will be submitted again"),
        "{}",
        text(&out)
    );
    assert_eq!(env.run(&[], &[]).await.status.code(), Some(0));
    assert_eq!(submits_by_prompt(&env.fake).get("scene number 1"), Some(&1));
    let out = cmd(&env, &["export", "--db", db, "--state", "cancelled"]).await;
    assert_eq!(stdout(&out).lines().count(), 2, "header and j2: {}", text(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_all_pending_beside_a_running_run_withdraws_what_was_not_submitted() {
    // Slow jobs, one at a time: most jobs wait while the run is going.
    let env = Env::new(wanbatch::fake::FakeConfig {
        queue: Duration::from_millis(1500),
        run: Duration::from_millis(1500),
        ..fast_fake()
    })
    .await;
    let m = env.write("jobs.csv", &manifest(6));
    let mut run = env.run_cmd(&[&m], &["--concurrency", "1"]);
    let child = run
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("the first submit", 30, || !env.fake.stats().submits.is_empty()).await;
    let out = cmd(&env, &["cancel", "--db", env.db().to_str().unwrap(), "--all-pending"]).await;
    assert_eq!(out.status.code(), Some(0), "no run lock needed: {}", text(&out));
    assert!(stdout(&out).contains("The Segmind API has no cancel"), "{}", text(&out));
    let run = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("the run ends")
        .unwrap();
    assert_eq!(run.status.code(), Some(0), "{}", text(&run));
    let jobs = env.export().await;
    let cancelled: Vec<_> = jobs.iter().filter(|j| j["state"] == "cancelled").collect();
    let done: Vec<_> = jobs.iter().filter(|j| j["state"] == "done").collect();
    assert_eq!(cancelled.len() + done.len(), 6, "{jobs:#?}");
    assert!(!cancelled.is_empty() && !done.is_empty(), "{jobs:#?}");
    assert!(cancelled
        .iter()
        .all(|j| j["attempts"] == 0 && j["error"] == "cancelled by user"));
    assert_eq!(
        env.fake.stats().submits.len(),
        done.len(),
        "exactly the jobs not cancelled were submitted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_expired_resubmits_a_paid_video_that_was_never_fetched() {
    let env = Env::new(fast_fake()).await;
    let m = env.write(
        "jobs.csv",
        "id,image,prompt\nlost,https://img.example/1.jpg,lost video\nmodel,https://img.example/2.jpg,[fail] x\n",
    );
    let db = env.db();
    // Arrange a database as a run leaves it when the downloader gives up on a COMPLETED job,
    // and one FAILED at Segmind.
    assert_eq!(
        cmd(&env, &["import", m.to_str().unwrap(), "--db", db.to_str().unwrap()])
            .await
            .status
            .code(),
        Some(0)
    );
    let store = Store::open(&db).await.unwrap();
    let work = store.due_submits(i64::MAX, 10).await.unwrap();
    for (w, rid) in work.iter().zip(["rq-lost", "rq-model"]) {
        let n = store.claim_submit(w.seq).await.unwrap().unwrap();
        store.record_accepted(w.seq, n, rid, "s", "r", 0).await.unwrap();
    }
    let c = Completed {
        output_url: "http://127.0.0.1:9/gone.mp4",
        output_size: None,
        cost: None,
    };
    store.record_completed(work[0].seq, "rq-lost", c).await.unwrap();
    store
        .record_download_failed(work[0].seq, "rq-lost", "download failed 30 times")
        .await
        .unwrap();
    store
        .record_failed(work[1].seq, "rq-model", "Inference failed")
        .await
        .unwrap();
    store.close().await;

    let out = cmd(&env, &["retry", "--db", db.to_str().unwrap(), "--expired"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        stdout(&out).contains("1 job(s) will be submitted again"),
        "{}",
        text(&out)
    );
    let out = env.run(&[], &[]).await;
    assert_eq!(out.status.code(), Some(1), "model stays failed: {}", text(&out));
    let jobs = env.export().await;
    let lost = jobs.iter().find(|j| j["id"] == "lost").unwrap();
    assert_eq!(
        (lost["state"].as_str(), lost["attempts"].as_i64()),
        (Some("done"), Some(2))
    );
    assert_eq!(lost["resubmits_expired"], 1);
    assert_eq!(lost["resubmits_failed"], 0);
    assert_eq!(jobs.iter().find(|j| j["id"] == "model").unwrap()["state"], "failed");
    assert_eq!(
        env.fake.stats().submits.len(),
        1,
        "only the lost video was submitted again"
    );
}

const ROUND_TRIP: &str = "id,image,prompt,last_image,negative_prompt,num_frames,resolution,aspect_ratio,sample_shift,\
frames_per_second,go_fast,seed,high_noise_lora_scale\n\
ok,https://img.example/1.jpg,a calm lake,,,81,480p,16:9,,,,1,\n\
bad,https://img.example/2.jpg,\"[fail] a storm, \"\"at night\"\"\",https://img.example/3.jpg,\"blur, noise\",90,720p,9:16,7.5,24,false,42,0.25\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_of_failed_jobs_is_a_manifest_on_a_new_database_and_unchanged_on_the_same() {
    let env = Env::new(fast_fake()).await;
    let m = env.write("jobs.csv", ROUND_TRIP);
    assert_eq!(env.run(&[&m], &[]).await.status.code(), Some(1));
    let first_body = |prompt_starts: &str| {
        env.fake
            .stats()
            .submits
            .iter()
            .filter(|s| s.body["prompt"].as_str().unwrap().starts_with(prompt_starts))
            .map(|s| s.body.clone())
            .collect::<Vec<_>>()
    };
    let original = first_body("[fail]")[0].clone();
    let db = env.db();
    for format in ["csv", "jsonl"] {
        let file = env.path(&format!("failed.{format}"));
        let out = cmd(
            &env,
            &[
                "export",
                "--db",
                db.to_str().unwrap(),
                "--state",
                "failed",
                "--format",
                format,
                "--output",
                file.to_str().unwrap(),
            ],
        )
        .await;
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));

        // The same database: the row is the job it came from, unchanged; it stays failed.
        let before = env.fake.stats().api_requests.len();
        let out = env.run(&[&file], &[]).await;
        assert_eq!(out.status.code(), Some(1), "{format}: {}", text(&out));
        assert!(
            stdout(&out).contains("0 new jobs (1 already present)"),
            "{format}: {}",
            text(&out)
        );
        assert_eq!(env.fake.stats().api_requests.len(), before, "{format}: nothing sent");

        // A new database: imported as pending under the same id, submitted with the same body.
        let new_db = env.path(&format!("new-{format}.db"));
        let out = env.run(&[&file], &["--db", new_db.to_str().unwrap()]).await;
        assert_eq!(out.status.code(), Some(1), "{format}: {}", text(&out));
        assert!(stdout(&out).contains("imported 1 new jobs"), "{format}: {}", text(&out));
        let mut export = env.bin();
        export.args(["export", "--db", new_db.to_str().unwrap(), "--format", "jsonl"]);
        let jobs: Vec<serde_json::Value> = stdout(&finish(export).await)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(jobs.len(), 1);
        assert_eq!(
            (jobs[0]["id"].as_str(), jobs[0]["attempts"].as_i64()),
            (Some("bad"), Some(1))
        );
        let bodies = first_body("[fail]");
        assert_eq!(
            bodies.last().unwrap(),
            &original,
            "{format}: every parameter survives the round trip"
        );
    }
    assert_eq!(first_body("[fail]").len(), 3, "once originally, once per new database");
}

fn dry_run_cmd(env: &Env, args: &[&str]) -> tokio::process::Command {
    let mut c = env.bin();
    c.env_remove("SEGMIND_API_KEY").args(args);
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_runs_estimate_and_submit_nothing() {
    let env = Env::new(fast_fake()).await;
    let m = env.write("jobs.csv", &manifest(10));
    let db = env.db();
    // No database, no key: the priors. 10 × 2.3 = 23 requests = 60 s at 23 rpm, + 54.46 s.
    let out = finish(dry_run_cmd(
        &env,
        &[
            "run",
            m.to_str().unwrap(),
            "--db",
            db.to_str().unwrap(),
            "--dry-run",
            "--rpm",
            "23",
            "--price",
            "0.5",
        ],
    ))
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let o = stdout(&out);
    assert!(
        o.contains("10 job(s) to do (10 new, 0 unfinished in the database): 10 to submit"),
        "{o}"
    );
    assert!(
        o.contains("API requests: 23 (2.30 per video: 1 submit + 1.30 polls; the prior"),
        "{o}"
    );
    assert!(o.contains("wall-clock: about 1 min 54 s at 23 rpm"), "{o}");
    assert!(o.contains("cost: $5.00 (10 video(s) to submit at $0.5 each)"), "{o}");
    assert!(!db.exists(), "a dry run writes nothing");
    assert!(env.fake.stats().api_requests.is_empty(), "a dry run sends nothing");

    // After a real run of 6 of them, the estimate uses what this database measured.
    let six = env.write("six.csv", &manifest(6));
    assert_eq!(env.run(&[&six], &[]).await.status.code(), Some(0));
    let sent = env.fake.stats().api_requests.len();
    let store = Store::open(&db).await.unwrap();
    let jobs = store.jobs(None).await.unwrap();
    store.close().await;
    let per_video = (jobs.iter().map(|j| j.attempts + j.polls).sum::<i64>() as f64 / 6.0).clamp(2.0, 10.0);
    let out = finish(dry_run_cmd(
        &env,
        &["import", m.to_str().unwrap(), "--db", db.to_str().unwrap(), "--dry-run"],
    ))
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let o = stdout(&out);
    assert!(o.contains("4 would be new jobs, 6 already in"), "{o}");
    assert!(o.contains("4 job(s) to do (4 new, 0 unfinished"), "{o}");
    let expected = format!(
        "API requests: {} ({per_video:.2} per video",
        (4.0 * per_video).ceil() as u64
    );
    assert!(o.contains(&expected), "{expected:?} in {o}");
    assert!(o.contains("measured over 6 finished videos"), "{o}");
    // The campaign was run at 6000 rpm: the estimate uses its stored settings.
    assert!(
        o.contains("at 6000 rpm") && o.contains("learned video durations"),
        "{o}"
    );
    assert!(o.contains("give --price"), "{o}");
    assert_eq!(env.fake.stats().api_requests.len(), sent, "still nothing sent");
    let out = env.run(&[], &[]).await;
    assert!(
        stdout(&out).contains("6 jobs:"),
        "the dry run imported nothing: {}",
        text(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_file_gets_the_logs_but_never_the_key() {
    let env = Env::new(fast_fake()).await;
    let m = env.write("jobs.csv", &manifest(3));
    let log = env.path("logs/run.log");
    std::fs::create_dir_all(log.parent().unwrap()).unwrap();
    let out = env.run(&[&m], &["--log-file", log.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let text1 = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        text1.matches("submit accepted").count(),
        3,
        "info by default in a file: {text1}"
    );
    assert!(!text1.contains('\u{1b}'), "no colour codes in a file");
    assert!(!stderr(&out).contains("submit accepted"), "the logs went to the file");
    // Everything from every crate, JSON, appended: still no key.
    let m2 = env.write("more.csv", &manifest(5));
    let mut run = env.run_cmd(&[&m2], &["--log-file", log.to_str().unwrap(), "--log-format", "json"]);
    run.env("RUST_LOG", "trace");
    let out = finish(run).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let all = std::fs::read_to_string(&log).unwrap();
    assert!(all.starts_with(&text1), "appended");
    let json_lines = all[text1.len()..].lines().filter(|l| l.starts_with('{')).count();
    assert!(json_lines > 10, "{json_lines} JSON lines");
    assert!(!all.contains(KEY), "the API key must never be logged");
    // RUST_LOG still filters.
    let before = std::fs::read_to_string(&log).unwrap().len();
    let mut run = env.run_cmd(&[], &["--log-file", log.to_str().unwrap()]);
    run.env("RUST_LOG", "off");
    assert_eq!(finish(run).await.status.code(), Some(0));
    assert_eq!(std::fs::read_to_string(&log).unwrap().len(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wanbatch_toml_is_below_environment_and_flags_and_holds_no_key() {
    let env = Env::new(fast_fake()).await;
    let m = env.write("jobs.csv", &manifest(10));
    env.write("wanbatch.toml", "db = \"data/cfg.db\"\nrpm = 10\nprice = 0.5\n");
    let dry = |rpm_env: Option<&str>, extra: &[&str]| {
        let mut c = dry_run_cmd(&env, &["import", m.to_str().unwrap(), "--dry-run"]);
        c.args(extra);
        if let Some(v) = rpm_env {
            c.env("WANBATCH_RPM", v);
        }
        finish(c)
    };
    let out = dry(None, &[]).await;
    let o = stdout(&out);
    assert!(
        o.contains("at 10 rpm") && o.contains("cost: $5.00"),
        "the file: {}",
        text(&out)
    );
    let cfg_db = env.dir.path().join("data/cfg.db");
    assert!(
        o.contains("already in data/cfg.db"),
        "relative to the file's folder, the current one: {o}"
    );
    assert!(
        stdout(&dry(Some("20"), &[]).await).contains("at 20 rpm"),
        "the environment beats the file"
    );
    let out = dry(Some("20"), &["--rpm", "30", "--price", "1"]).await;
    assert!(
        stdout(&out).contains("at 30 rpm") && stdout(&out).contains("cost: $10.00"),
        "flags beat both"
    );
    // The db from the file is used for real by every command.
    assert_eq!(cmd(&env, &["import", m.to_str().unwrap()]).await.status.code(), Some(0));
    assert!(cfg_db.exists());
    assert!(stdout(&cmd(&env, &["status"]).await).contains("10 jobs in"));

    // A key in the file, or an unknown key: exit 2, naming the file and the key.
    env.write("wanbatch.toml", "rpm = 10\napi_key = \"sk-not-here\"\n");
    let out = cmd(&env, &["status"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        stderr(&out).contains("wanbatch.toml: api_key: an API key is never read from a file"),
        "{}",
        text(&out)
    );
    assert!(!stderr(&out).contains("sk-not-here"));
    env.write("wanbatch.toml", "rpm = 10\nmax_cots = 5\n");
    let out = cmd(&env, &["status"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        stderr(&out).contains("wanbatch.toml: unknown key \"max_cots\""),
        "{}",
        text(&out)
    );
    // --config elsewhere; paths in it are relative to it.
    let other = env.path("conf/w.toml");
    std::fs::create_dir_all(other.parent().unwrap()).unwrap();
    std::fs::write(&other, "db = \"../data/cfg.db\"\n").unwrap();
    let out = cmd(&env, &["--config", other.to_str().unwrap(), "status"]).await;
    assert!(stdout(&out).contains("10 jobs in"), "{}", text(&out));
    // Documented in --help.
    let help = stdout(&cmd(&env, &["run", "--help"]).await);
    assert!(help.contains("WANBATCH_RPM") && help.contains("WANBATCH_DB"), "{help}");
    let help = stdout(&cmd(&env, &["--help"]).await);
    assert!(help.contains("wanbatch.toml") && help.contains("--log-file"), "{help}");
}
