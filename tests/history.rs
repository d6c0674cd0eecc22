//! Never buying a video twice, through the real binary: lost submits looked up in Segmind's
//! request history (adopted, proven never created, or not provable), a planted double charge
//! found by `reconcile`, and local images uploaded once per content.

mod common;

use std::time::Duration;

use common::*;
use wanbatch::fake::{FaultKind, FaultTarget, HistoryMode, Plant};

/// Starts a run, waits until `n` submits reached the fake, then kills it with SIGKILL while
/// their answers are held back (the jobs are in the submit window).
async fn kill_in_submit_windows(env: &Env, m: &std::path::Path, n: usize) {
    let mut child = env.run_cmd(&[m], &["--expected-duration", "30s"]).spawn().unwrap();
    wait_for("submits in flight", 20, || env.fake.stats().submits.len() >= n).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    child.start_kill().unwrap();
    child.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_finds_the_submits_a_kill_cut_off_in_the_history_and_pays_nothing_twice() {
    let env = Env::new(fast_fake()).await;
    let m = env.write("jobs.csv", &manifest(3));
    // Every submit is made at once by the fake, its answer held back 10 s: a kill -9 lands in
    // each job's submit window, after Segmind created (and billed) it.
    env.fake
        .push_fault(fault(FaultTarget::Submit, FaultKind::AcceptThenDelay(10_000), 3));
    kill_in_submit_windows(&env, &m, 3).await;
    assert_eq!(env.fake.stats().submits.len(), 3);
    let out = env.run(&[], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains("3 job(s) were being submitted when the last run stopped"),
        "{}",
        text(&out)
    );
    // The billing ledger: one request per job, not one more.
    assert_eq!(env.fake.stats().submits.len(), 3, "no double charge: {}", text(&out));
    let jobs = env.export().await;
    for j in &jobs {
        assert_eq!(j["state"], "done", "{j:#}");
        assert_eq!(j["maybe_billed_twice"], false);
        assert_eq!(j["resubmits_unknown"], 0);
        assert_eq!(j["unknown_adopted"], 1, "found in the request history: {j:#}");
        assert_eq!(j["attempts"], 1);
    }
    let mut cmd = env.bin();
    cmd.args(["status", "--db", env.db().to_str().unwrap()]);
    let status = stdout(&finish(cmd).await);
    assert!(
        status.contains("lost submits: 3 found in the request history"),
        "{status}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submit_that_never_reached_segmind_is_proven_absent_and_one_the_history_cannot_tell_falls_back() {
    // Killed while the fake holds the request *before* making it: no job exists. Once the
    // history is complete past the submit's time, the job is submitted again, proven not created.
    let env = Env::new(fast_fake()).await;
    let m = env.write("jobs.csv", &manifest(2));
    env.fake
        .push_fault(fault(FaultTarget::Submit, FaultKind::Delay(10_000), 2));
    let mut child = env
        .run_cmd(&[&m], &["--expected-duration", "30s", "--history-lag", "1s"])
        .spawn()
        .unwrap();
    wait_for("submits sent", 20, || {
        env.fake
            .stats()
            .api_requests
            .iter()
            .filter(|r| r.method == "POST")
            .count()
            >= 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    assert_eq!(env.fake.stats().submits.len(), 0, "the fake made nothing");
    env.fake.clear_faults();
    let out = env.run(&[], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(env.fake.stats().submits.len(), 2);
    let jobs = env.export().await;
    assert!(
        jobs.iter()
            .all(|j| j["state"] == "done" && j["maybe_billed_twice"] == false),
        "{jobs:#?}"
    );
    let mut cmd = env.bin();
    cmd.args(["status", "--db", env.db().to_str().unwrap()]);
    let status = stdout(&finish(cmd).await);
    assert!(status.contains("2 proven never created"), "{status}");

    // The history down: the lost submits cannot be proven either way; `--on-unknown resubmit`
    // submits them again, counted as possibly billed twice.
    let mut cfg = fast_fake();
    cfg.history_mode = HistoryMode::Down;
    let env = Env::new(cfg).await;
    let m = env.write("jobs.csv", &manifest(2));
    env.fake
        .push_fault(fault(FaultTarget::Submit, FaultKind::AcceptThenDelay(10_000), 2));
    kill_in_submit_windows(&env, &m, 2).await;
    let out = env.run(&[], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(env.fake.stats().submits.len(), 4, "bought again, as without a history");
    let jobs = env.export().await;
    assert!(jobs.iter().all(|j| j["maybe_billed_twice"] == true), "{jobs:#?}");
    let mut cmd = env.bin();
    cmd.args(["status", "--db", env.db().to_str().unwrap()]);
    let status = stdout(&finish(cmd).await);
    assert!(status.contains("2 not provable"), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_finds_a_double_charge_planted_in_the_history() {
    let env = Env::new(fast_fake()).await;
    let m = env.write("jobs.csv", &manifest(4));
    let out = env.run(&[&m], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    // Someone (a script, a second tool) submitted j1's body once more: billed, and no job's.
    let body = env.fake.stats().submits[1].body.clone();
    let j1 = body["prompt"].as_str().unwrap().to_string();
    // Made a few seconds ago: completed (and billed) by now.
    env.fake.plant(Plant {
        age: Duration::from_secs(5),
        ..Plant::new(body)
    });
    let mut cmd = env.bin();
    cmd.args(["reconcile", "--db", env.db().to_str().unwrap()]);
    let out = finish(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let o = stdout(&out);
    assert!(o.contains("reconciled 4 job(s) against 5 request(s)"), "{o}");
    assert!(
        o.contains("true cost $0.25"),
        "4 videos and the double charge at $0.05: {o}"
    );
    let jobs = env.export().await;
    let twice: Vec<&serde_json::Value> = jobs.iter().filter(|j| j["double_charges"] == 1).collect();
    assert_eq!(twice.len(), 1, "{jobs:#?}");
    assert_eq!(twice[0]["prompt"], j1.as_str());
    assert!(
        o.contains(&format!("1 double charge(s): {} (1)", twice[0]["id"].as_str().unwrap())),
        "{o}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_rows_over_ten_local_images_upload_ten_files() {
    let env = Env::new(fast_fake()).await;
    std::fs::create_dir(env.path("img")).unwrap();
    for i in 0..10 {
        // Ten distinct PNG headers (the fake checks the media type, not the picture).
        let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
        png.extend(format!("image number {i}").as_bytes());
        std::fs::write(env.path(&format!("img/{i}.png")), png).unwrap();
    }
    let mut csv = String::from("id,image,prompt\n");
    for r in 0..100 {
        csv.push_str(&format!("r{r},img/{}.png,scene {r}\n", r % 10));
    }
    let m = env.write("jobs.csv", &csv);
    let out = env.run(&[&m], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stats = env.fake.stats();
    assert_eq!(stats.assets, 10, "one upload per content");
    assert_eq!(stats.submits.len(), 100);
    // Every submit named an uploaded asset, never the local path; the assets are the files.
    for s in &stats.submits {
        let url = s.body["image"].as_str().unwrap();
        assert!(
            url.starts_with(&env.fake.cdn_url()) && url.contains("/assets/"),
            "{url}"
        );
    }
    // Submits go as their uploads allow, not always in manifest order: row r3's by its prompt.
    let r3 = stats.submits.iter().find(|s| s.body["prompt"] == "scene 3").unwrap();
    let (kind, bytes) = env.fake.asset(r3.body["image"].as_str().unwrap()).unwrap();
    assert_eq!(kind, "image/png");
    assert!(bytes.ends_with(b"image number 3"));
    // A second run with the same images uploads nothing.
    let more = env.write("more.csv", &csv.replace("\nr", "\ns").replace("scene", "another"));
    let out = env.run(&[&more], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(env.fake.stats().assets, 10);
    // Export keeps the local path and the uploaded URL.
    let jobs = env.export().await;
    assert!(
        jobs[0]["image"].as_str().unwrap().starts_with("file://"),
        "{:#}",
        jobs[0]
    );
    assert!(
        jobs[0]["image_upload"].as_str().unwrap().contains("/assets/"),
        "{:#}",
        jobs[0]
    );
    assert_eq!(jobs[0]["image_sha256"].as_str().unwrap().len(), 64);
    // So does each video's sidecar.
    let sidecar: serde_json::Value =
        serde_json::from_slice(&std::fs::read(env.out().join("r0.json")).unwrap()).unwrap();
    assert!(
        sidecar["parameters"]["image"].as_str().unwrap().ends_with("/img/0.png"),
        "{sidecar:#}"
    );
    assert_eq!(sidecar["image_sha256"], jobs[0]["image_sha256"]);
    assert_eq!(sidecar["image_upload"], jobs[0]["image_upload"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_folder_of_images_becomes_a_campaign() {
    let env = Env::new(fast_fake()).await;
    std::fs::create_dir(env.path("shots")).unwrap();
    for (name, prompt) in [("a.png", Some("a fox in the snow")), ("b.png", None)] {
        let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
        png.extend(name.as_bytes());
        std::fs::write(env.path(&format!("shots/{name}")), png).unwrap();
        if let Some(p) = prompt {
            std::fs::write(env.path(&format!("shots/{}.txt", &name[..1])), p).unwrap();
        }
    }
    let mut cmd = env.bin();
    cmd.args(["init", "shots", "--prompt", "slow pan"]);
    let out = finish(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = env.run(&[&env.path("jobs.csv")], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let prompts: Vec<String> = env
        .fake
        .stats()
        .submits
        .iter()
        .map(|s| s.body["prompt"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(prompts.len(), 2);
    assert!(prompts.contains(&"a fox in the snow".to_string()) && prompts.contains(&"slow pan".to_string()));
    assert_eq!(env.fake.stats().assets, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_during_uploads_repeats_one_call_at_most_and_counts_it() {
    let env = Env::new(fast_fake()).await;
    std::fs::create_dir(env.path("img")).unwrap();
    for i in 0..10 {
        let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
        png.extend(format!("picture {i}").as_bytes());
        std::fs::write(env.path(&format!("img/{i}.png")), png).unwrap();
    }
    let mut csv = String::from("id,image,prompt\n");
    for r in 0..40 {
        csv.push_str(&format!("r{r},img/{}.png,scene {r}\n", r % 10));
    }
    let m = env.write("jobs.csv", &csv);
    // The first upload call is made, its answer held back: killed inside it.
    env.fake
        .push_fault(fault(FaultTarget::Upload, FaultKind::AcceptThenDelay(10_000), 1));
    let mut child = env.run_cmd(&[&m], &[]).spawn().unwrap();
    wait_for("an upload", 20, || env.fake.stats().assets > 0).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    let first = env.fake.stats().assets;
    env.fake.clear_faults();
    let out = env.run(&[], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let assets = env.fake.stats().assets;
    // Repeated: the files of the one call cut by the kill (at most one call's worth). Not
    // compared with `first`: a request of the killed run may still reach the fake after it.
    let per_call = wanbatch::engine::upload::PER_CALL as u64;
    assert!(
        assets <= 10 + per_call,
        "{assets} uploads for 10 images ({first} when the run was killed)"
    );
    assert!(assets >= 10);
    let mut cmd = env.bin();
    cmd.args(["status", "--db", env.db().to_str().unwrap()]);
    let status = stdout(&finish(cmd).await);
    // The count is an upper bound, never short: an intent whose call the kill cut off before it
    // reached the fake is counted too (its file is uploaded after the restart all the same).
    let repeated: u64 = status
        .split("uploads possibly repeated after a stop: ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no repeat count in {status}"));
    assert!(
        (assets - 10..=10).contains(&repeated),
        "{repeated} counted, {} repeated: {status}",
        assets - 10
    );
}
