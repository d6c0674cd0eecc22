//! Sidecar tests on a real store driven through the job's transitions.

use super::*;
use crate::engine::download::clean_stray_parts;
use crate::manifest;
use crate::state::AttemptOutcome;
use crate::store::Completed;

/// A store holding job `a` (`<script>` in its prompt) taken to `downloading`, with one
/// submit attempt that lost its answer before the accepted one.
async fn downloading_job(dir: &Path) -> (Store, DownloadWork) {
    let csv = dir.join("m.csv");
    std::fs::write(
        &csv,
        "id,image,prompt,seed,resolution\na,https://i.example/a.png,a <script>x</script> cat,7,720p\n",
    )
    .unwrap();
    let mut rows = Vec::new();
    assert!(manifest::read_files(&[csv], |r| rows.push(r)).is_empty());
    let store = Store::open(&dir.join("t.db")).await.unwrap();
    store.import(&rows).await.unwrap().unwrap();
    let first = store.claim_submit(1).await.unwrap().unwrap();
    store
        .record_submit_ended(
            1,
            first,
            crate::state::JobState::Pending,
            AttemptOutcome::NotSent,
            "connect refused",
            0,
        )
        .await
        .unwrap();
    let second = store.claim_submit(1).await.unwrap().unwrap();
    assert!(store
        .record_accepted(1, second, "req-2", "s", "r", 0)
        .await
        .unwrap()
        .is_some());
    let done = Completed {
        output_url: "https://user:pw@cdn.example/v/a.mp4?X-Amz-Signature=SECRET#t=1",
        output_size: Some(5),
        cost: Some(0.25),
    };
    assert!(store.record_completed(1, "req-2", done).await.unwrap().is_some());
    let w = store.due_downloads(i64::MAX, 10).await.unwrap().remove(0);
    (store, w)
}

fn fetched(out: &Path, id: &str, body: &[u8]) -> Fetched {
    std::fs::create_dir_all(out).unwrap();
    let path = final_path(out, id);
    std::fs::write(&path, body).unwrap();
    Fetched {
        path,
        bytes: body.len() as u64,
        sha256: hex::encode(Sha256::digest(body)),
        video: Default::default(),
    }
}

#[test]
fn output_urls_lose_query_fragment_and_credentials() {
    assert_eq!(
        public_url("https://u:p@cdn.example/x/a.mp4?token=abc&sig=1#frag"),
        "https://cdn.example/x/a.mp4"
    );
    assert_eq!(public_url("http://h:8080/v.mp4"), "http://h:8080/v.mp4");
    assert_eq!(public_url("not a url?token=1"), "not a url");
}

#[tokio::test]
async fn the_engine_call_writes_a_complete_sidecar_with_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    let (store, w) = downloading_job(dir.path()).await;
    let out = dir.path().join("out");
    let f = fetched(&out, "a", b"hello");
    // The one-query read the engine uses is the job and its attempts, as read apart.
    let (job, history) = store.job_with_attempts(1).await.unwrap().unwrap();
    let apart = (
        store.job(1).await.unwrap().unwrap(),
        store.attempts_of(1).await.unwrap(),
    );
    assert_eq!(json!([job, history]), json!([apart.0, apart.1]));
    let f = Fetched {
        video: crate::mp4check::VideoInfo {
            width: 832,
            height: 480,
            frames: 81,
            fps: 16.0,
            duration_secs: 5.0625,
            codec: "avc1".into(),
        },
        ..f
    };
    write_for_download(&store, &out, &w, &f, Some("832×480 instead of 1280×720"))
        .await
        .unwrap();

    let v: Value = serde_json::from_slice(&std::fs::read(out.join("a.json")).unwrap()).unwrap();
    assert_eq!(v["id"], "a");
    assert_eq!(v["file"], "a.mp4");
    assert_eq!(v["bytes"], 5);
    assert_eq!(v["sha256"], hex::encode(Sha256::digest(b"hello")));
    assert_eq!(v["parameters"]["prompt"], "a <script>x</script> cat");
    assert_eq!(v["parameters"]["seed"], 7);
    assert_eq!(v["parameters"]["resolution"], "720p");
    assert!(v["source"].as_str().unwrap().ends_with("m.csv:2"), "{v}");
    assert_eq!(v["request_id"], "req-2");
    assert_eq!(v["output_url"], "https://cdn.example/v/a.mp4");
    assert_eq!(v["attempts"], 2);
    let h = v["history"].as_array().unwrap();
    assert_eq!(h.len(), 2);
    assert_eq!(
        (h[0]["n"].clone(), h[0]["outcome"].clone()),
        (json!(1), json!("not_sent"))
    );
    assert_eq!(h[0]["detail"], "connect refused");
    assert_eq!(
        (h[1]["request_id"].clone(), h[1]["outcome"].clone()),
        (json!("req-2"), json!("completed"))
    );
    for t in [
        &h[1]["started_at"],
        &h[1]["finished_at"],
        &v["submitted_at"],
        &v["completed_at"],
        &v["downloaded_at"],
    ] {
        let t = t.as_str().unwrap_or_else(|| panic!("{v}"));
        assert!(crate::clock::parse_rfc3339(t).is_some(), "{t}");
    }
    assert!(v["duration_ms"].as_i64().unwrap() >= 0);
    assert_eq!(v["cost"], 0.25);
    // What the file is, from the video just checked (the database records it after).
    assert_eq!(
        v["video"],
        json!({"width": 832, "height": 480, "frames": 81, "fps": 16.0, "duration_secs": 5.0625,
               "codec": "avc1", "mismatch": "832×480 instead of 1280×720"})
    );
    assert_eq!(v["wanbatch_version"], env!("CARGO_PKG_VERSION"));
    let text = std::fs::read_to_string(out.join("a.json")).unwrap();
    assert!(!text.contains("SECRET") && !text.contains("pw@"), "{text}");
    // Nothing but the video and its sidecar: the temporary was renamed.
    let mut names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["a.json", "a.mp4"]);
}

#[tokio::test]
async fn a_stale_download_worker_writes_no_sidecar() {
    let dir = tempfile::tempdir().unwrap();
    let (store, mut w) = downloading_job(dir.path()).await;
    let out = dir.path().join("out");
    let f = fetched(&out, "a", b"hello");
    w.request_id = "req-old".into();
    write_for_download(&store, &out, &w, &f, None).await.unwrap();
    assert!(!out.join("a.json").exists());
}

#[tokio::test]
async fn a_temporary_left_by_a_crash_is_cleaned_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path();
    std::fs::write(temp_path(out, "a.b"), b"{half").unwrap();
    std::fs::write(out.join("a.b.json"), b"{}").unwrap();
    // Even when job a.b is downloading a request (its video partial is kept).
    let removed = clean_stray_parts(out, |id, _| id == "a.b").await.unwrap();
    assert_eq!(removed, 1);
    assert!(!temp_path(out, "a.b").exists());
    assert!(out.join("a.b.json").exists());
}

#[tokio::test]
async fn missing_sidecars_are_restored_only_for_the_recorded_video() {
    let dir = tempfile::tempdir().unwrap();
    let (store, w) = downloading_job(dir.path()).await;
    let out = dir.path().join("out");
    let f = fetched(&out, "a", b"hello");
    let path = f.path.to_string_lossy().to_string();
    assert!(store
        .record_downloaded(1, &w.request_id, &path, 5, &f.sha256, &f.video, None)
        .await
        .unwrap()
        .is_some());
    let job = store.job(1).await.unwrap().unwrap();

    std::fs::write(&f.path, b"HELLO").unwrap();
    assert_eq!(
        restore_missing(&store, &out, &job).await.unwrap(),
        Restore::VideoMismatch
    );
    assert!(!out.join("a.json").exists(), "no sidecar vouches for a changed file");

    std::fs::write(&f.path, b"hello").unwrap();
    assert_eq!(restore_missing(&store, &out, &job).await.unwrap(), Restore::Written);
    let v: Value = serde_json::from_slice(&std::fs::read(out.join("a.json")).unwrap()).unwrap();
    assert_eq!(v["sha256"], f.sha256);
    assert_eq!(v["downloaded_at"], rfc3339(job.downloaded_at.unwrap()));
    assert_eq!(restore_missing(&store, &out, &job).await.unwrap(), Restore::Present);
}
