//! Reviewing a campaign through the real binary: the video metadata a run records (export,
//! sidecar, status), `review apply` of a decisions file (round trip, every validation error named
//! by file:line:field with nothing recorded), `retry --rejected` (only the rejected done jobs are
//! made again, counted, the earlier take kept), and the demo's report.

mod common;

use common::*;
use serde_json::Value;

fn job<'a>(jobs: &'a [Value], id: &str) -> &'a Value {
    jobs.iter()
        .find(|j| j["id"] == id)
        .unwrap_or_else(|| panic!("{id} not in {jobs:#?}"))
}

async fn status_json(env: &Env) -> Value {
    let out = cmd(env, &["status", "--json", "--db", env.db().to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_round_trip_and_only_rejected_videos_are_made_again_with_the_earlier_take_kept() {
    let env = Env::new(fast_fake()).await;
    let m = env.write("jobs.csv", &manifest(4));
    let out = env.run(&[&m], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let db = env.db();
    let db = db.to_str().unwrap();

    // What each video is, read from its boxes: the fake's real H.264 at 480p 16:9.
    let jobs = env.export().await;
    for j in &jobs {
        assert_eq!(
            (
                &j["video_width"],
                &j["video_height"],
                &j["video_frames"],
                &j["video_codec"],
                &j["video_mismatch"]
            ),
            (
                &Value::from(832),
                &Value::from(480),
                &Value::from(81),
                &Value::from("avc1"),
                &Value::Null
            ),
            "{j:#}"
        );
        assert!((j["video_fps"].as_f64().unwrap() - 16.0).abs() < 0.01, "{j:#}");
        assert!(
            (j["video_duration"].as_f64().unwrap() - 81.0 / 16.0).abs() < 0.01,
            "{j:#}"
        );
        assert_eq!((&j["review"], &j["review_note"]), (&Value::Null, &Value::Null));
    }
    let sidecar: Value = serde_json::from_slice(&std::fs::read(env.out().join("j1.json")).unwrap()).unwrap();
    assert_eq!(sidecar["video"]["width"], 832, "{sidecar:#}");
    assert_eq!(sidecar["video"]["height"], 480);
    assert_eq!(sidecar["video"]["frames"], 81);
    assert_eq!(sidecar["video"]["codec"], "avc1");
    assert_eq!(sidecar["video"]["mismatch"], Value::Null);
    let st = status_json(&env).await;
    assert_eq!(st["videos_mismatched"], 0, "{st:#}");
    assert_eq!(st["review"], serde_json::json!({"keep": 0, "reject": 0}));

    // The decisions file as a browser saves it (BOM, CRLF, a quoted note over two lines).
    let first_take = std::fs::read(env.out().join("j1.mp4")).unwrap();
    let decisions = env.write(
        "decisions.csv",
        "\u{feff}id,decision,note\r\nj0,keep,\r\nj1,reject,\"too dark, \"\"redo\"\"\r\nplease\"\r\nj2,,\r\n",
    );
    let out = cmd(&env, &["review", "apply", decisions.to_str().unwrap(), "--db", db]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        stdout(&out).contains("review: 1 keep, 1 reject, 0 cleared, 1 unchanged"),
        "{}",
        text(&out)
    );
    let jobs = env.export().await;
    assert_eq!(job(&jobs, "j0")["review"], "keep");
    assert_eq!(job(&jobs, "j1")["review"], "reject");
    assert_eq!(job(&jobs, "j1")["review_note"], "too dark, \"redo\"\r\nplease");
    assert_eq!(job(&jobs, "j2")["review"], Value::Null);
    let st = status_json(&env).await;
    assert_eq!(st["review"], serde_json::json!({"keep": 1, "reject": 1}), "{st:#}");
    // The same file again changes nothing.
    let out = cmd(&env, &["review", "apply", decisions.to_str().unwrap(), "--db", db]).await;
    assert!(
        stdout(&out).contains("review: 0 keep, 0 reject, 0 cleared, 3 unchanged"),
        "{}",
        text(&out)
    );
    // The CSV export carries them, and still reads back as a manifest.
    let csv = env.path("export.csv");
    let out = cmd(&env, &["export", "--db", db, "--output", csv.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let exported = std::fs::read_to_string(&csv).unwrap();
    let header: Vec<&str> = exported.lines().next().unwrap().split(',').collect();
    for c in [
        "video_width",
        "video_height",
        "video_frames",
        "video_fps",
        "video_duration",
        "video_codec",
        "video_mismatch",
        "review",
        "review_note",
        "resubmits_rejected",
    ] {
        assert!(header.contains(&c), "{c} missing from {header:?}");
    }
    assert!(
        exported.contains("reject,\"too dark, \"\"redo\"\"\r\nplease\""),
        "{exported}"
    );
    let again = env.path("again.db");
    let out = cmd(
        &env,
        &["import", csv.to_str().unwrap(), "--db", again.to_str().unwrap()],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "an export is a manifest: {}", text(&out));

    // Only the rejected done job goes back; its first take is kept aside with why.
    let out = cmd(&env, &["retry", "--rejected", "--db", db]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        stdout(&out).contains("1 job(s) will be submitted again"),
        "{}",
        text(&out)
    );
    let kept = env.out().join("j1.rejected-1.mp4");
    assert!(
        stdout(&out).contains(&format!("j1: rejected take kept as {}", kept.display())),
        "{}",
        text(&out)
    );
    assert_eq!(
        std::fs::read(&kept).unwrap(),
        first_take,
        "the earlier take, byte for byte"
    );
    assert!(!env.out().join("j1.mp4").exists() && !env.out().join("j1.json").exists());
    let kept_sidecar: Value =
        serde_json::from_slice(&std::fs::read(env.out().join("j1.rejected-1.json")).unwrap()).unwrap();
    assert_eq!(kept_sidecar["review"]["decision"], "reject");
    assert_eq!(kept_sidecar["review"]["note"], "too dark, \"redo\"\r\nplease");
    assert_eq!(kept_sidecar["review"]["take"], 1);
    assert_eq!(kept_sidecar["sha256"], job(&jobs, "j1")["sha256"]);
    let jobs = env.export().await;
    let j1 = job(&jobs, "j1");
    assert_eq!(
        (
            &j1["state"],
            &j1["review"],
            &j1["review_note"],
            &j1["resubmits_rejected"]
        ),
        (&Value::from("pending"), &Value::Null, &Value::Null, &Value::from(1)),
        "{j1:#}"
    );
    assert_eq!(job(&jobs, "j0")["state"], "done");

    // The next run makes it again, and nothing else.
    let out = env.run(&[], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let submits = submits_by_prompt(&env.fake);
    assert_eq!(submits.get("scene number 1"), Some(&2), "{submits:?}");
    for other in ["scene number 0", "scene number 2", "scene number 3"] {
        assert_eq!(submits.get(other), Some(&1), "{other}: {submits:?}");
    }
    let jobs = env.export().await;
    env.assert_videos_match(&jobs);
    let j1 = job(&jobs, "j1");
    assert_eq!((&j1["state"], &j1["attempts"]), (&Value::from("done"), &Value::from(2)));
    assert_eq!(j1["video_width"], 832);
    assert_ne!(
        std::fs::read(env.out().join("j1.mp4")).unwrap(),
        first_take,
        "a new take"
    );
    assert_eq!(
        std::fs::read(&kept).unwrap(),
        first_take,
        "the earlier take is still there"
    );
    assert_eq!(job(&jobs, "j0")["review"], "keep", "other decisions stay");
    let st = status_json(&env).await;
    assert_eq!(st["resubmits"]["rejected"], 1, "{st:#}");
    assert_eq!(st["review"], serde_json::json!({"keep": 1, "reject": 0}));
    let out = cmd(&env, &["status", "--db", db]).await;
    let t = stdout(&out);
    assert!(t.contains("rejected by review 1"), "{t}");
    assert!(t.contains("1 rejected take(s) made again"), "{t}");
    assert!(t.contains("reviewed: 1 keep, 0 reject"), "{t}");

    // The request history holds both takes of j1: bought on purpose, so no double charge.
    let out = cmd(&env, &["reconcile", "--db", db]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(stdout(&out).contains("against 5 request(s)"), "{}", text(&out));
    assert!(stdout(&out).contains("no double charges"), "{}", text(&out));
    assert_eq!(job(&env.export().await, "j1")["double_charges"], 0);

    // Nothing rejected is left: a second retry moves nothing.
    let out = cmd(&env, &["retry", "--rejected", "--db", db]).await;
    assert!(stdout(&out).contains("nothing to retry"), "{}", text(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_row_is_named_by_file_line_and_field_and_nothing_is_recorded() {
    let env = Env::new(fast_fake()).await;
    let m = env.write("jobs.csv", &manifest(3));
    let out = env.run(&[&m], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let db = env.db();
    let db = db.to_str().unwrap();
    // A job that has no video yet.
    let later = env.write(
        "later.csv",
        "id,image,prompt\nwaiting,https://img.example/w.jpg,not yet made\n",
    );
    assert_eq!(
        cmd(&env, &["import", later.to_str().unwrap(), "--db", db])
            .await
            .status
            .code(),
        Some(0)
    );

    let bad = env.write(
        "bad.csv",
        "id,decision,note\n\
         j0,keep,good\n\
         nosuch,keep,\n\
         j1,perhaps,\n\
         j2,keep,\n\
         \n\
         j2,reject,\n\
         waiting,reject,\n\
         j1\n",
    );
    let out = cmd(&env, &["review", "apply", bad.to_str().unwrap(), "--db", db]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = stderr(&out);
    let b = bad.display();
    for want in [
        format!("{b}:3: id: no job \"nosuch\" in this database"),
        format!("{b}:4: decision: \"perhaps\" is not keep, reject or empty"),
        format!("{b}:7: decision: \"j2\" is also on line 5 with a different decision (keep there, reject here)"),
        format!("{b}:8: decision: job \"waiting\" is pending: only a done job (it has a video) can be marked reject"),
        format!("{b}:9: decision: missing: the row has 1 cell(s), the header 3"),
    ] {
        assert!(err.contains(&want), "{want}\n{err}");
    }
    assert!(
        err.contains(&format!("5 error(s) in {b}; no decision was recorded")),
        "{err}"
    );
    // Only the bad rows of a file that reads otherwise: still nothing recorded.
    let fixed = env.write(
        "fixed.csv",
        "id,decision,note\nj0,keep,good\nnosuch,keep,\nwaiting,reject,\nj1,reject,\n",
    );
    let out = cmd(&env, &["review", "apply", fixed.to_str().unwrap(), "--db", db]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = stderr(&out);
    let f = fixed.display();
    assert!(
        err.contains(&format!("{f}:3: id: no job \"nosuch\" in this database")),
        "{err}"
    );
    assert!(
        err.contains(&format!("{f}:4: decision: job \"waiting\" is pending: only a done job")),
        "{err}"
    );
    assert!(
        err.contains(&format!("2 error(s) in {f}; no decision was recorded")),
        "{err}"
    );
    // A missing column is named on the header's line.
    let cols = env.write("cols.csv", "id,decision\nj0,keep\n");
    let out = cmd(&env, &["review", "apply", cols.to_str().unwrap(), "--db", db]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        stderr(&out).contains(&format!("{}:1: note: missing column", cols.display())),
        "{}",
        text(&out)
    );

    // Nothing of any of them was recorded, not even the good rows.
    let jobs = env.export().await;
    assert!(
        jobs.iter().all(|j| j["review"].is_null() && j["review_note"].is_null()),
        "{jobs:#?}"
    );
    let st = status_json(&env).await;
    assert_eq!(st["review"], serde_json::json!({"keep": 0, "reject": 0}));
    // Clearing is fine for any job, and a retry of nothing rejected moves nothing.
    let clear = env.write("clear.csv", "id,decision,note\nwaiting,,\n");
    let out = cmd(&env, &["review", "apply", clear.to_str().unwrap(), "--db", db]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        stdout(&out).contains("review: 0 keep, 0 reject, 0 cleared, 1 unchanged"),
        "{}",
        text(&out)
    );
    let d = env.write("d.csv", "id,decision,note\nj0,keep,\n");
    assert_eq!(
        cmd(&env, &["review", "apply", d.to_str().unwrap(), "--db", db])
            .await
            .status
            .code(),
        Some(0)
    );
    let d = env.write("d.csv", "id,decision,note\nj0,,\nj1,,\"look again\"\n");
    let out = cmd(&env, &["review", "apply", d.to_str().unwrap(), "--db", db]).await;
    assert!(
        stdout(&out).contains("review: 0 keep, 0 reject, 1 cleared, 1 note(s) without a decision, 0 unchanged"),
        "{}",
        text(&out)
    );
    let jobs = env.export().await;
    assert_eq!(
        (&job(&jobs, "j0")["review"], &job(&jobs, "j1")["review_note"]),
        (&Value::Null, &Value::from("look again"))
    );
    let out = cmd(&env, &["retry", "--rejected", "--db", db]).await;
    assert!(stdout(&out).contains("nothing to retry"), "{}", text(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_writes_its_report_and_its_decisions_apply() {
    let env = Env::new(fast_fake()).await;
    let dir = env.path("demo");
    let out = cmd(&env, &["demo", "--dir", dir.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let report = dir.join("videos").join("report.html");
    let page = std::fs::read_to_string(&report).unwrap_or_else(|e| panic!("{}: {e}\n{}", report.display(), text(&out)));
    assert!(
        page.contains("<html") || page.contains("<!DOCTYPE"),
        "{}",
        &page[..page.len().min(200)]
    );
    assert!(
        stdout(&out).contains(&format!("demo: open {} in a browser", report.display())),
        "{}",
        text(&out)
    );
    // A reviewer's file for the demo's campaign records.
    let db = dir.join("demo.db");
    let jobs: Vec<Value> = {
        let out = cmd(&env, &["export", "--db", db.to_str().unwrap(), "--format", "jsonl"]).await;
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let first = jobs.iter().find(|j| j["state"] == "done").expect("a done job")["id"]
        .as_str()
        .unwrap()
        .to_string();
    let decisions = env.write("d.csv", &format!("id,decision,note\n{first},reject,\"blurry\"\n"));
    let out = cmd(
        &env,
        &[
            "review",
            "apply",
            decisions.to_str().unwrap(),
            "--db",
            db.to_str().unwrap(),
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(stdout(&out).contains("review: 0 keep, 1 reject"), "{}", text(&out));
}

/// A job taken to done by hand, as a run leaves it, with its video and sidecar in `out`.
async fn done_by_hand(store: &wanbatch::store::Store, out: &std::path::Path, mismatch: Option<&str>) -> String {
    let w = store.due_submits(i64::MAX, 1).await.unwrap().remove(0);
    let n = store.claim_submit(w.seq).await.unwrap().unwrap();
    let rid = format!("rq-{}", w.id);
    store
        .record_accepted(w.seq, n, &rid, "s", "r", 0)
        .await
        .unwrap()
        .unwrap();
    let c = wanbatch::store::Completed {
        output_url: "http://cdn.example/v.mp4",
        output_size: None,
        cost: Some(0.05),
    };
    store.record_completed(w.seq, &rid, c).await.unwrap().unwrap();
    std::fs::create_dir_all(out).unwrap();
    let video = out.join(format!("{}.mp4", w.id));
    std::fs::write(&video, format!("take one of {}", w.id)).unwrap();
    std::fs::write(out.join(format!("{}.json", w.id)), format!("{{\"id\": \"{}\"}}", w.id)).unwrap();
    let info = wanbatch::mp4check::VideoInfo {
        width: 832,
        height: 480,
        frames: 81,
        fps: 16.0,
        duration_secs: 5.0625,
        codec: "avc1".into(),
    };
    store
        .record_downloaded(w.seq, &rid, video.to_str().unwrap(), 20, "x", &info, mismatch)
        .await
        .unwrap()
        .unwrap();
    w.id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mismatched_video_is_counted_and_setting_a_take_aside_never_overwrites_a_file() {
    let env = Env::new(fast_fake()).await;
    let m = env.write("jobs.csv", &manifest(2));
    let db = env.db();
    assert_eq!(
        cmd(&env, &["import", m.to_str().unwrap(), "--db", db.to_str().unwrap()])
            .await
            .status
            .code(),
        Some(0)
    );
    let store = wanbatch::store::Store::open(&db).await.unwrap();
    let flagged = done_by_hand(&store, &env.out(), Some("832×480 instead of 1280×720")).await;
    let plain = done_by_hand(&store, &env.out(), None).await;
    store.close().await;
    let db = db.to_str().unwrap();

    let st = status_json(&env).await;
    assert_eq!(st["videos_mismatched"], 1, "{st:#}");
    let out = cmd(&env, &["status", "--db", db]).await;
    assert!(
        stdout(&out).contains("videos that differ from their request (kept, flagged): 1"),
        "{}",
        text(&out)
    );
    let jobs = env.export().await;
    assert_eq!(job(&jobs, &flagged)["video_mismatch"], "832×480 instead of 1280×720");
    assert_eq!(job(&jobs, &plain)["video_mismatch"], Value::Null);

    // A file of the user's where the earlier take would go: left alone, the take goes to -2.
    let theirs = env.out().join(format!("{flagged}.rejected-1.mp4"));
    std::fs::write(&theirs, "mine").unwrap();
    let d = env.write(
        "d.csv",
        &format!("id,decision,note\n{flagged},reject,wrong size\n{plain},keep,\n"),
    );
    let out = cmd(&env, &["review", "apply", d.to_str().unwrap(), "--db", db]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = cmd(&env, &["retry", "--rejected", "--db", db]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(std::fs::read_to_string(&theirs).unwrap(), "mine");
    let kept = env.out().join(format!("{flagged}.rejected-2.mp4"));
    assert_eq!(
        std::fs::read_to_string(&kept).unwrap(),
        format!("take one of {flagged}")
    );
    let side: Value =
        serde_json::from_slice(&std::fs::read(env.out().join(format!("{flagged}.rejected-2.json"))).unwrap()).unwrap();
    assert_eq!(side["id"], flagged.as_str());
    assert_eq!(
        (&side["review"]["note"], &side["review"]["take"]),
        (&Value::from("wrong size"), &Value::from(2))
    );
    assert_eq!(
        std::fs::read_to_string(env.out().join(format!("{plain}.mp4"))).unwrap(),
        format!("take one of {plain}"),
        "a kept video stays where it is"
    );
    let jobs = env.export().await;
    let j = job(&jobs, &flagged);
    assert_eq!(
        (&j["state"], &j["video_mismatch"], &j["output"]),
        (&Value::from("pending"), &Value::Null, &Value::Null)
    );
    let st = status_json(&env).await;
    assert_eq!(
        (&st["videos_mismatched"], &st["resubmits"]["rejected"]),
        (&Value::from(0), &Value::from(1)),
        "{st:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_video_unlike_its_request_is_done_and_flagged_end_to_end() {
    let env = Env::new(fast_fake()).await;
    // The fake's `[mismatch]` trigger delivers 16 frames more than asked for.
    let m = env.write(
        "jobs.csv",
        "id,image,prompt\nplain,https://img.example/a.png,a calm lake\nodd,https://img.example/b.png,a calm lake [mismatch]\n",
    );
    let out = env.run(&[&m], &[]).await;
    assert_eq!(out.status.code(), Some(0), "flagged, not failed: {}", text(&out));
    let jobs = env.export().await;
    let odd = job(&jobs, "odd");
    assert_eq!(
        (&odd["state"], &odd["video_frames"]),
        (&Value::from("done"), &Value::from(97)),
        "{odd:#}"
    );
    let flag = odd["video_mismatch"]
        .as_str()
        .unwrap_or_else(|| panic!("not flagged: {odd:#}"));
    assert!(flag.contains("97") && flag.contains("81"), "{flag}");
    assert_eq!(job(&jobs, "plain")["video_mismatch"], Value::Null);
    let st = status_json(&env).await;
    assert_eq!(st["videos_mismatched"], 1, "{st:#}");
    let sidecar: Value = serde_json::from_slice(&std::fs::read(env.out().join("odd.json")).unwrap()).unwrap();
    assert_eq!(sidecar["video"]["mismatch"], flag, "{sidecar:#}");
}
