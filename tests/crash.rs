//! Crash-proofing: SIGKILL at random moments, restarts after the result lifetime, SIGINT, and a
//! file-size limit standing in for a full disk. The database must be the whole truth each time.

mod common;

use std::time::Duration;

use common::*;
use rand::{Rng, SeedableRng};
use wanbatch::fake::{FaultKind, FaultTarget};

/// Kills the real binary with SIGKILL at random moments (during submits, polls and downloads),
/// restarts it until it finishes, and checks nothing was lost or paid twice unreported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_loses_nothing() {
    let seed: u64 = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("crash test seed {seed} (CRASH_SEED={seed} to replay)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut cfg = fast_fake();
    cfg.queue = Duration::from_millis(80);
    cfg.run = Duration::from_millis(300);
    cfg.jitter = 0.3;
    let env = Env::new(cfg).await;
    // Slow and broken downloads, so kills also land mid-download and leave partial files.
    env.fake
        .push_fault(fault(FaultTarget::Download, FaultKind::Delay(120), 20));
    env.fake
        .push_fault(fault(FaultTarget::Download, FaultKind::Truncate(20_000), 6));
    const N: usize = 24;
    let m = env.write("jobs.csv", &manifest(N));
    // The fake's history has no lag: a kill mid-submit is proven absent (or found) after 1 s.
    let args = [
        "--concurrency",
        "8",
        "--download-concurrency",
        "3",
        "--history-lag",
        "1s",
    ];
    let mut kills = 0;
    for round in 0..8 {
        // The manifest every round: a kill may land before the first import committed, and
        // importing it again changes nothing once it did.
        let manifests: Vec<&std::path::Path> = vec![&m];
        let mut child = env
            .run_cmd(&manifests, &args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let wait = Duration::from_millis(rng.gen_range(60..700));
        match tokio::time::timeout(wait, child.wait()).await {
            Ok(status) => {
                let status = status.unwrap();
                assert!(status.success(), "round {round}: {status:?}");
                break;
            }
            Err(_) => {
                child.start_kill().unwrap();
                child.wait().await.unwrap();
                kills += 1;
            }
        }
    }
    let out = env.run(&[&m], &args).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "final run after {kills} kills: {}",
        text(&out)
    );

    let jobs = env.export().await;
    assert_eq!(jobs.len(), N);
    assert!(jobs.iter().all(|j| j["state"] == "done"), "{jobs:#?}");
    env.assert_videos_match(&jobs);
    let expected: Vec<String> = {
        let mut v: Vec<String> = (0..N)
            .flat_map(|i| [format!("j{i}.json"), format!("j{i}.mp4")])
            .collect();
        v.sort();
        v
    };
    assert_eq!(files_in(&env.out()), expected, "no stray files in OUT");
    // Extra submits only where the runner reported a lost submit answer, and as many as it said.
    let seen = submits_by_prompt(&env.fake);
    let mut reported_total = 0;
    let mut extra_total = 0;
    for j in &jobs {
        let prompt = j["prompt"].as_str().unwrap();
        let extra = seen.get(prompt).copied().unwrap_or(0) as i64 - 1;
        let reported = j["resubmits_unknown"].as_i64().unwrap();
        assert!(extra >= 0, "{prompt} never reached the fake");
        assert!(
            extra <= reported,
            "{}: {extra} extra submits but {reported} reported",
            j["id"]
        );
        if extra > 0 {
            assert_eq!(j["maybe_billed_twice"], true);
        }
        reported_total += reported;
        extra_total += extra;
    }
    // The runner's count is an upper bound by design: a kill that lands after the intent is
    // committed but before the request leaves the process looks exactly like a lost answer, and
    // no client can tell the two apart. Counting it is the safe direction for money; it can only
    // happen to submits in flight at a kill (at most `--concurrency` per kill).
    assert!(
        reported_total >= extra_total && reported_total - extra_total <= kills * 8,
        "reported {reported_total} possible double charges, the fake billed {extra_total} extra ({kills} kills)"
    );
    eprintln!("{kills} kills, {extra_total} extra submits billed, {reported_total} reported");
}

/// A run killed after submitting, restarted after every result record expired: each job is
/// submitted again exactly once, counted as expired, and finishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_after_the_records_expired_fetches_every_video_from_the_history_with_no_new_submit() {
    for history_down in [false, true] {
        let mut cfg = fast_fake();
        cfg.result_lifetime = Duration::from_millis(1200);
        if history_down {
            cfg.history_mode = wanbatch::fake::HistoryMode::Down;
        }
        let env = Env::new(cfg).await;
        const N: usize = 5;
        let m = env.write("jobs.csv", &manifest(N));
        // A long expected duration: the first run will not poll before it is killed. The records
        // live 1.2 s (told to the runner too: a 404 for a younger request is never an expiry; the
        // campaign remembers it for the resume).
        let mut child = env
            .run_cmd(&[&m], &["--expected-duration", "30s", "--result-lifetime", "1.2s"])
            .spawn()
            .unwrap();
        wait_for("all submits", 20, || env.fake.stats().submits.len() == N).await;
        tokio::time::sleep(Duration::from_millis(100)).await; // answers recorded
        child.start_kill().unwrap();
        child.wait().await.unwrap();
        tokio::time::sleep(Duration::from_millis(1300)).await; // every record has expired
        let out = env.run(&[], &[]).await;
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        let jobs = env.export().await;
        for j in &jobs {
            assert_eq!(j["state"], "done");
            assert_eq!(j["resubmits_unknown"], 0, "{j:#}");
            if history_down {
                // The history cannot answer: bought again, once each, counted.
                assert_eq!(j["resubmits_expired"], 1, "{j:#}");
                assert_eq!(j["history"][0]["outcome"], "expired");
                assert_eq!(j["history"][1]["outcome"], "completed");
            } else {
                // Recovered from the request history: nothing bought again.
                assert_eq!(j["resubmits_expired"], 0, "{j:#}");
                assert_eq!(j["attempts"], 1);
                assert_eq!(j["history"][0]["outcome"], "completed");
                assert_eq!(j["history"][0]["detail"], "recovered from the request history");
            }
        }
        let submits = env.fake.stats().submits.len();
        if history_down {
            assert_eq!(submits, 2 * N);
            assert!(
                String::from_utf8_lossy(&out.stdout).contains(&format!("{N} after the result expired")),
                "{}",
                text(&out)
            );
        } else {
            assert_eq!(submits, N, "zero new submits: {}", text(&out));
        }
    }
}

/// SIGINT: stops within a few seconds with exit 130, and the next run finishes with zero extra
/// submits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_stops_promptly_and_resumes_without_extra_submits() {
    let mut cfg = fast_fake();
    cfg.run = Duration::from_millis(600);
    let env = Env::new(cfg).await;
    const N: usize = 12;
    let m = env.write("jobs.csv", &manifest(N));
    // Slow submits so some are in flight when the signal lands.
    env.fake
        .push_fault(fault(FaultTarget::Submit, FaultKind::Delay(300), 4));
    let child = env
        .run_cmd(&[&m], &["--concurrency", "4"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("the first submits", 20, || !env.fake.stats().submits.is_empty()).await;
    let pid = child.id().unwrap() as i32;
    // SAFETY: sending a signal to our own child process.
    unsafe { libc::kill(pid, libc::SIGINT) };
    let sent = std::time::Instant::now();
    let out = tokio::time::timeout(Duration::from_secs(10), child.wait_with_output())
        .await
        .expect("exits")
        .unwrap();
    assert!(sent.elapsed() < Duration::from_secs(5), "took {:?}", sent.elapsed());
    assert_eq!(out.status.code(), Some(130), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("wanbatch run --db"), "says how to resume: {err}");
    let jobs = env.export().await;
    assert!(
        jobs.iter()
            .all(|j| j["state"] != "unknown" && j["state"] != "submitting"),
        "in-flight submits were recorded: {jobs:#?}"
    );
    let out = env.run(&[], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let jobs = env.export().await;
    env.assert_videos_match(&jobs);
    assert_eq!(env.fake.stats().submits.len(), N, "zero extra submits");
    assert!(jobs.iter().all(|j| j["resubmits_unknown"] == 0));
}

/// A full disk (here: a file-size limit smaller than one video): a clear message, exit 4, the jobs
/// wait for their download, nothing is lost; with space back the next run finishes them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_stops_cleanly_and_resumes_when_space_is_back() {
    let mut cfg = fast_fake();
    cfg.video_len = 2 * 1024 * 1024;
    let env = Env::new(cfg).await;
    const N: usize = 3;
    let m = env.write("jobs.csv", &manifest(N));
    let cmd = env.run_cmd(&[&m], &[]);
    let std_cmd = cmd.as_std();
    let args: Vec<String> = std_cmd
        .get_args()
        .map(|a| format!("'{}'", a.to_str().unwrap()))
        .collect();
    // 1024 blocks of 1 KiB: the database fits, a 2 MiB video does not.
    let mut limited = tokio::process::Command::new("bash");
    limited
        .arg("-c")
        .arg(format!(
            "ulimit -f 1024; exec '{}' {}",
            env!("CARGO_BIN_EXE_wanbatch"),
            args.join(" ")
        ))
        .env("SEGMIND_API_KEY", KEY)
        .env("SEGMIND_BASE_URL", env.fake.api_url())
        .current_dir(env.dir.path())
        .kill_on_drop(true);
    let out = finish(limited).await;
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot write the video"), "{err}");
    let jobs = env.export().await;
    // The run stops at the first write error: jobs wait for their download (or, if it stopped
    // before their poll, at Segmind); none failed, none lost.
    assert!(jobs.iter().any(|j| j["state"] == "downloading"), "{jobs:#?}");
    assert!(
        jobs.iter()
            .all(|j| j["state"] == "downloading" || j["state"] == "running"),
        "{jobs:#?}"
    );
    assert_eq!(env.fake.stats().submits.len(), N);
    let out = env.run(&[], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let jobs = env.export().await;
    env.assert_videos_match_len(&jobs, 2 * 1024 * 1024);
    assert_eq!(env.fake.stats().submits.len(), N, "nothing paid twice");
    assert_eq!(files_in(&env.out()).len(), 2 * N, "each video and its sidecar");
}
