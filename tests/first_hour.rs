//! The first hour of a new user, through the real binary: nothing of theirs deleted, usage
//! errors that leave no trace, one configuration for every command, a campaign that remembers
//! how it was run, an unreachable API that ends the run, and figures that agree.

mod common;

use std::time::{Duration, Instant};

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_refuses_a_folder_with_a_foreign_file_which_survives() {
    let env = Env::new(fast_fake()).await;
    let precious = env.path("precious");
    std::fs::create_dir(&precious).unwrap();
    std::fs::write(precious.join("thesis.txt"), "four years").unwrap();
    let mut cmd = env.bin();
    cmd.args(["demo", "--dir", precious.to_str().unwrap()]);
    let out = finish(cmd).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("demo: refusing to write into {}", precious.display())) && err.contains("thesis.txt"),
        "{err}"
    );
    assert_eq!(files_in(&precious), ["thesis.txt"], "nothing added, nothing removed");
    assert_eq!(
        std::fs::read_to_string(precious.join("thesis.txt")).unwrap(),
        "four years"
    );

    // `--dir .` in a folder with the user's files: refused the same way.
    let mut cmd = env.bin();
    cmd.current_dir(&precious).args(["demo", "--dir", "."]);
    let out = finish(cmd).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert_eq!(files_in(&precious), ["thesis.txt"]);

    // A new folder works, and so does the same folder again (the demo's own files are replaced).
    let fresh = env.path("fresh");
    for round in 0..2 {
        let mut cmd = env.bin();
        cmd.args(["demo", "--dir", fresh.to_str().unwrap()]);
        let out = finish(cmd).await;
        assert_eq!(out.status.code(), Some(0), "round {round}: {}", text(&out));
    }
    assert!(fresh.join(".wanbatch-demo").is_file());
    assert!(files_in(&fresh.join("videos")).iter().any(|f| f.ends_with(".mp4")));
    // A file the user put into the demo's folder stops the next demo, and survives it.
    std::fs::write(fresh.join("videos").join("keep-me.txt"), "mine").unwrap();
    let mut cmd = env.bin();
    cmd.args(["demo", "--dir", fresh.to_str().unwrap()]);
    let out = finish(cmd).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(stderr(&out).contains("keep-me.txt"), "{}", text(&out));
    assert!(fresh.join("videos").join("keep-me.txt").is_file());
    assert!(fresh.join("demo.db").is_file(), "the earlier demo's files are left too");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_usage_error_leaves_no_database_and_no_row() {
    let env = Env::new(fast_fake()).await;
    let m = env.write("m.csv", &manifest(3));
    let cases: Vec<(Vec<(&str, &str)>, Vec<&str>, &str)> = vec![
        (
            vec![("WANBATCH_PRICE", "-1")],
            vec![],
            "WANBATCH_PRICE -1: expected a number of dollars per video ≥ 0",
        ),
        (
            vec![],
            vec!["--rpm", "0"],
            "--rpm 0: expected a whole number of API requests per minute from 1",
        ),
        (
            vec![],
            vec!["--rpm", "-1"],
            "--rpm -1: expected a whole number of API requests per minute",
        ),
        (
            vec![("WANBATCH_CONCURRENCY", "lots")],
            vec![],
            "WANBATCH_CONCURRENCY lots: expected a whole number",
        ),
        (vec![], vec!["--max-cost", "5"], "--max-cost needs a price per video"),
        (
            vec![],
            vec!["--unreachable-after", "soon"],
            "--unreachable-after soon: expected a duration",
        ),
    ];
    for (vars, flags, message) in cases {
        let mut cmd = env.bin();
        cmd.arg("run")
            .arg(&m)
            .args(["--db", env.db().to_str().unwrap()])
            .args(&flags);
        for (k, v) in &vars {
            cmd.env(k, v);
        }
        let out = finish(cmd).await;
        assert_eq!(out.status.code(), Some(2), "{vars:?} {flags:?}: {}", text(&out));
        assert!(stderr(&out).contains(message), "{message:?} in {}", text(&out));
        assert!(!env.db().exists(), "{vars:?} {flags:?}: a database was created");
        assert!(
            files_in(env.dir.path()).iter().all(|f| !f.ends_with(".db")),
            "{:?}",
            files_in(env.dir.path())
        );
    }
    // A bad config file too.
    env.write("wanbatch.toml", "rpm = 5\nmax_cots = 1\n");
    let out = env.run(&[&m], &[]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        stderr(&out).contains("wanbatch.toml: unknown key \"max_cots\""),
        "{}",
        text(&out)
    );
    assert!(!env.db().exists());
    assert!(env.fake.stats().api_requests.is_empty(), "nothing was sent either");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_honours_the_config_file_the_environment_and_the_campaigns_folder() {
    let env = Env::new(fast_fake()).await;
    let m = env.write("m.csv", &manifest(3));
    // db and out come from wanbatch.toml, for run and for report alike.
    env.write("wanbatch.toml", "db = \"data/c.db\"\nout = \"videos\"\n");
    let mut cmd = env.bin();
    cmd.args([
        "run",
        m.to_str().unwrap(),
        "--rpm",
        "6000",
        "--expected-duration",
        "0.3s",
    ]);
    cmd.args(["--min-poll-gap-ms", "30"]);
    let out = finish(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        files_in(&env.path("videos"))
            .iter()
            .filter(|f| f.ends_with(".mp4"))
            .count(),
        3
    );
    let mut cmd = env.bin();
    cmd.arg("report");
    let out = finish(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        stdout(&out).contains("report: videos/report.html (3 of 3 jobs)"),
        "{}",
        text(&out)
    );
    let page = std::fs::read_to_string(env.path("videos/report.html")).unwrap();
    // The page's job data: three videos, none missing.
    assert_eq!(page.matches("\"video\":\"").count(), 3, "three videos");
    assert!(!page.contains("\"video_missing\":true"), "every video found");

    // Without the file, WANBATCH_DB names the campaign and the campaign knows its folder.
    std::fs::remove_file(env.path("wanbatch.toml")).unwrap();
    std::fs::remove_file(env.path("videos/report.html")).unwrap();
    let mut cmd = env.bin();
    cmd.arg("report").env("WANBATCH_DB", env.path("data/c.db"));
    let out = finish(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(env.path("videos/report.html").is_file(), "{}", text(&out));
    assert!(
        !env.path("outputs").exists(),
        "no report in a folder of missing videos: {}",
        text(&out)
    );
    assert!(!stdout(&out).contains("missing"), "{}", text(&out));

    // A report pointed at the wrong folder says the videos are not there.
    let mut cmd = env.bin();
    cmd.arg("report")
        .env("WANBATCH_DB", env.path("data/c.db"))
        .args(["--out", "elsewhere"]);
    let out = finish(cmd).await;
    assert!(
        stdout(&out).contains("none of the 3 done jobs' videos is in elsewhere"),
        "{}",
        text(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bare_resume_keeps_the_rpm_it_was_started_with() {
    // A Free-plan user: 5 requests per window (the window is 1.5 s here, time compressed).
    let mut cfg = fast_fake();
    cfg.credits = Some(2);
    let env = Env::new(cfg).await;
    let m = env.write("m.csv", &manifest(6));
    let knobs = [
        "--rate-window-ms",
        "1500",
        "--expected-duration",
        "0.3s",
        "--min-poll-gap-ms",
        "30",
        "--backoff-ms",
        "20",
        "--request-timeout-secs",
        "5",
    ];
    let db = env.db();
    let mut cmd = env.bin();
    cmd.arg("run")
        .arg(&m)
        .args(["--db", db.to_str().unwrap(), "--out", "out", "--rpm", "5"])
        .args(knobs);
    let out = finish(cmd).await;
    assert_eq!(out.status.code(), Some(3), "out of credits after 2: {}", text(&out));
    let first_run = env.fake.stats().api_requests.len();

    let mut cmd = env.bin();
    cmd.args(["status", "--db", db.to_str().unwrap()]);
    let status = stdout(&finish(cmd).await);
    assert!(
        status.contains("settings (as `run` was last given them):") && status.contains("rpm 5"),
        "{status}"
    );

    // Credits topped up; a bare resume, with none of the settings given again.
    env.fake.set_credits(None);
    let mut cmd = env.bin();
    cmd.args(["run", "--db", db.to_str().unwrap()]).args(knobs);
    let out = finish(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(stdout(&out).contains("6 jobs: 6 done"), "{}", text(&out));
    assert_eq!(
        files_in(&env.path("out"))
            .iter()
            .filter(|f| f.ends_with(".mp4"))
            .count(),
        6,
        "and --out too"
    );
    // The fake's log: never more than 5 requests in any 1.5 s window of the resumed run (less
    // 60 ms: arrival times carry scheduling jitter on a loaded 2-core machine, which the 60 s
    // window of real use absorbs in the gate's 1 % margin).
    let times: Vec<u64> = env.fake.stats().api_requests[first_run..]
        .iter()
        .map(|r| r.at_ms)
        .collect();
    assert!(times.len() >= 8, "{times:?}");
    for (i, t) in times.iter().enumerate() {
        let in_window = times[i..].iter().take_while(|u| **u < t + 1440).count();
        assert!(
            in_window <= 5,
            "{in_window} requests within 1.44 s from {t} ms: {times:?}"
        );
    }
    assert_eq!(env.fake.stats().rate_limited, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_api_ends_the_run_with_exit_4_inside_the_bound() {
    let env = Env::new(fast_fake()).await;
    let m = env.write("m.csv", &manifest(3));
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let mut cmd = env.run_cmd(&[&m], &["--unreachable-after", "2s"]);
    cmd.env("SEGMIND_BASE_URL", &url);
    let started = Instant::now();
    let out = finish(cmd).await;
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert!(took < Duration::from_secs(15), "{took:?}");
    let err = stderr(&out);
    assert!(err.contains(&format!("no answer from the API at {url} for")), "{err}");
    assert!(err.contains("SEGMIND_BASE_URL"), "{err}");
    // Every job is resumable: none was submitted, none failed.
    let jobs = env.export().await;
    assert!(jobs.iter().all(|j| j["state"] == "pending"), "{jobs:?}");
    let out = env.run(&[], &[]).await;
    assert_eq!(out.status.code(), Some(0), "the same command resumes: {}", text(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_display_the_summary_and_status_agree_on_a_run_with_failures() {
    let env = Env::new(fast_fake()).await;
    let mut csv = String::from("id,image,prompt\n");
    for i in 0..7 {
        let prompt = if i % 3 == 0 { "[fail] broken" } else { "fine" };
        csv.push_str(&format!("j{i},https://img.example/{i}.jpg,{prompt} {i}\n"));
    }
    let m = env.write("m.csv", &csv);
    let out = env.run(&[&m], &["--progress-interval", "0.2", "--price", "0.05"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let last = stderr(&out)
        .lines()
        .filter(|l| l.starts_with("progress ["))
        .last()
        .unwrap()
        .to_string();
    assert!(last.contains("] 4/7 done, 3 failed"), "{last}");
    assert!(
        last.contains("| $0.20 spent, "),
        "4 videos at the fake's reported $0.05: {last}"
    );
    let summary = stdout(&out);
    assert!(summary.contains("7 jobs: 4 done, 3 failed;"), "{summary}");
    assert!(
        summary.contains("spent: $0.20 ($0.20 reported by Segmind for 4 video(s))"),
        "{summary}"
    );
    let mut cmd = env.bin();
    cmd.args(["status", "--db", env.db().to_str().unwrap()]);
    let status = stdout(&finish(cmd).await);
    assert!(
        status.contains("  done         4\n") && status.contains("  failed       3\n"),
        "{status}"
    );
    assert!(
        status.contains("spent: $0.20 ($0.20 reported by Segmind for 4 video(s))"),
        "{status}"
    );
    let mut cmd = env.bin();
    cmd.args(["status", "--json", "--db", env.db().to_str().unwrap()]);
    let json: serde_json::Value = serde_json::from_slice(&finish(cmd).await.stdout).unwrap();
    assert!((json["spent"].as_f64().unwrap() - 0.20).abs() < 1e-9, "{json}");
    assert_eq!(json["settings"]["price"], "0.05");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_with_nothing_to_work_on_say_so() {
    let env = Env::new(fast_fake()).await;
    let m = env.write("m.csv", &manifest(1));
    let out = env.run(&[&m], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let db = env.db();
    let run = |args: &[&str]| {
        let mut cmd = env.bin();
        cmd.args(args).args(["--db", db.to_str().unwrap()]);
        finish(cmd)
    };
    let out = run(&["export", "--state", "failed"]).await;
    assert!(stderr(&out).contains("export: no jobs are failed in"), "{}", text(&out));
    let out = run(&["retry", "--failed"]).await;
    assert!(stdout(&out).contains("nothing to retry in"), "{}", text(&out));
    let out = run(&["cancel", "--all-pending"]).await;
    assert!(stdout(&out).contains("0 job(s) cancelled"), "{}", text(&out));
    // `completions` works for the shells the README names.
    for shell in ["bash", "zsh", "fish"] {
        let mut cmd = env.bin();
        cmd.args(["completions", shell]);
        let out = finish(cmd).await;
        assert_eq!(out.status.code(), Some(0), "{shell}");
        assert!(stdout(&out).contains("wanbatch"), "{shell}");
    }
    let mut cmd = env.bin();
    cmd.arg("--help");
    let help = stdout(&finish(cmd).await);
    assert!(!help.contains("bench"), "benchmarks are hidden: {help}");
    assert!(help.contains("completions") && help.contains("demo"), "{help}");
}
