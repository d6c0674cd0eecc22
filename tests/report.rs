//! `wanbatch report` and the provenance sidecars after a real small campaign against the fake:
//! every video the page references exists, hostile text stays data, each done job has a truthful
//! sidecar. (The page in a browser: tests/report_browser.rs.)

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use serde_json::Value;

/// Five jobs: three done (one with markup in its prompt), one failed, one blocked.
const JOBS: &str = "id,image,prompt,num_frames,resolution,seed,go_fast\n\
    j0,https://img.example/0.jpg,a calm lake at dawn,81,480p,1,true\n\
    j1,https://img.example/1.jpg,<script>document.title='pwned'</script> a fox,81,720p,2,false\n\
    j2,https://img.example/2.jpg,[fail] a storm,81,480p,3,true\n\
    j3,https://img.example/3.jpg,[blocked] something,81,480p,4,true\n\
    j4,https://img.example/4.jpg,\"a \"\"quoted\"\" & ampersanded prompt\",100,480p,5,true\n";

const DONE: [&str; 3] = ["j0", "j1", "j4"];

async fn campaign() -> (Env, Vec<Value>) {
    let env = Env::new(fast_fake()).await;
    let m = env.write("jobs.csv", JOBS);
    let out = env.run(&[&m], &[]).await;
    assert_eq!(out.status.code(), Some(1), "two jobs fail: {}", text(&out));
    let jobs = env.export().await;
    let done: Vec<&str> = jobs
        .iter()
        .filter(|j| j["state"] == "done")
        .map(|j| j["id"].as_str().unwrap())
        .collect();
    assert_eq!(done, DONE);
    (env, jobs)
}

/// The job data the page embeds (`<script type="application/json" id="jobs-data">`).
fn jobs_data(html: &str) -> Vec<Value> {
    let start = html.find("id=\"jobs-data\">").expect("no job data") + "id=\"jobs-data\">".len();
    let end = start + html[start..].find("</script>").unwrap();
    serde_json::from_str(&html[start..end]).unwrap()
}

/// The video path of every job that has one, in page order.
fn video_srcs(html: &str) -> Vec<String> {
    jobs_data(html)
        .iter()
        .filter_map(|j| j["video"].as_str().map(str::to_string))
        .collect()
}

/// A page-relative URL path back to a file path (the ids and temp folders here need no
/// decoding beyond what `href` may have encoded).
fn resolve(page: &Path, src: &str) -> PathBuf {
    let mut p = page.parent().unwrap().to_path_buf();
    for seg in src.split('/') {
        let mut bytes = Vec::new();
        let mut it = seg.bytes();
        while let Some(b) = it.next() {
            if b == b'%' {
                let hex: Vec<u8> = it.by_ref().take(2).collect();
                bytes.push(u8::from_str_radix(std::str::from_utf8(&hex).unwrap(), 16).unwrap());
            } else {
                bytes.push(b);
            }
        }
        p.push(String::from_utf8(bytes).unwrap());
    }
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_done_video_has_a_truthful_sidecar_without_secrets() {
    let (env, jobs) = campaign().await;
    for j in jobs.iter().filter(|j| j["state"] == "done") {
        let id = j["id"].as_str().unwrap();
        let path = env.out().join(format!("{id}.json"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(!text.contains(KEY), "the API key must never reach a sidecar");
        let s: Value = serde_json::from_str(&text).unwrap();
        for field in [
            "id",
            "request_id",
            "sha256",
            "bytes",
            "attempts",
            "cost",
            "source",
            "submitted_at",
        ] {
            assert_eq!(s[field], j[field], "{id}: {field}");
        }
        // Put in place just before the database recorded it.
        let t = |v: &Value| wanbatch::clock::parse_rfc3339(v.as_str().unwrap()).unwrap();
        let lag = t(&j["downloaded_at"]).duration_since(t(&s["downloaded_at"])).unwrap();
        assert!(lag < Duration::from_secs(5), "{lag:?}");
        assert_eq!(s["parameters"]["prompt"], j["prompt"]);
        assert_eq!(s["parameters"]["seed"], j["seed"]);
        assert_eq!(
            s["history"].as_array().unwrap().len() as u64,
            j["attempts"].as_u64().unwrap()
        );
        assert_eq!(s["history"][0]["outcome"], "completed");
        let url = s["output_url"].as_str().unwrap();
        assert!(
            url.starts_with(&env.fake.cdn_url())
                && url.ends_with(&format!("/{}.mp4", j["request_id"].as_str().unwrap()))
                && !url.contains('?')
        );
        assert!(s["duration_ms"].as_i64().unwrap() > 0);
    }
    // Failed jobs have no video, hence no sidecar.
    assert!(!env.out().join("j2.json").exists() && !env.out().join("j3.json").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_references_only_existing_videos_and_keeps_hostile_text_as_data() {
    let (env, _jobs) = campaign().await;
    let stdout = report(&env, &[]).await;
    let page = env.out().join("report.html");
    assert!(stdout.contains("(5 of 5 jobs)"), "{stdout}");
    let html = std::fs::read_to_string(&page).unwrap();

    // Every referenced video exists, one per done job, relative to the page.
    let srcs = video_srcs(&html);
    assert_eq!(srcs, ["j0.mp4", "j1.mp4", "j4.mp4"]);
    for s in &srcs {
        assert!(resolve(&page, s).is_file(), "{s}");
    }
    let data = jobs_data(&html);
    assert_eq!(data.len(), 5);
    // Two script elements, both ours: the prompt's markup is data, `<` escaped in the JSON.
    assert_eq!(html.matches("<script").count(), 2, "{html}");
    assert_eq!(html.matches("</script>").count(), 2);
    assert!(html.contains(r"\u003cscript>document.title='pwned'\u003c/script> a fox"));
    assert_eq!(data[1]["prompt"], "<script>document.title='pwned'</script> a fox");
    assert_eq!(data[4]["prompt"], "a \"quoted\" & ampersanded prompt");
    assert_eq!(data[0]["image"]["src"], "https://img.example/0.jpg");
    assert!(html.contains("<b>5 jobs</b>: 3 done, 2 failed"), "{html}");
    assert!(!data[2]["error"].as_str().unwrap().is_empty());
    assert!(data[3]["error"]
        .as_str()
        .unwrap()
        .contains("Content blocked by safety filter (RAI)"));
    assert!(!html.contains(KEY));
    // The real videos' metadata reached the cards.
    assert_eq!(
        data[0]["meta"], "832×480 · 81 frames · 16 fps · 5.06 s · avc1",
        "{}",
        data[0]
    );
    assert!(html.contains("differ from their request: <b id=\"n-mismatched\">0</b>"));

    // Written elsewhere, the links climb back to the videos.
    let elsewhere = env.path("reports/2026/r.html");
    report(&env, &["--output", elsewhere.to_str().unwrap()]).await;
    let far = std::fs::read_to_string(&elsewhere).unwrap();
    let srcs = video_srcs(&far);
    assert_eq!(srcs[0], "../../out/j0.mp4");
    assert!(srcs.iter().all(|s| resolve(&elsewhere, s).is_file()), "{srcs:?}");

    // Filters: cards for failed jobs only, the summary still about all of them.
    report(
        &env,
        &[
            "--state",
            "failed",
            "--output",
            env.path("failed.html").to_str().unwrap(),
        ],
    )
    .await;
    let failed = std::fs::read_to_string(env.path("failed.html")).unwrap();
    let states: Vec<Value> = jobs_data(&failed).iter().map(|j| j["state"].clone()).collect();
    assert_eq!(states, ["failed", "failed"]);
    assert!(failed.contains("<b>5 jobs</b>"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_sidecars_come_back_only_for_unchanged_videos() {
    let (env, _jobs) = campaign().await;
    let original = std::fs::read(env.out().join("j0.json")).unwrap();
    std::fs::remove_file(env.out().join("j0.json")).unwrap();
    std::fs::remove_file(env.out().join("j1.json")).unwrap();
    std::fs::write(env.out().join("j1.mp4"), b"not the video that was paid for").unwrap();
    let stdout = report(&env, &["--write-sidecars"]).await;
    assert!(
        stdout.contains("sidecars restored: 1; videos that differ from the database (no sidecar): 1"),
        "{stdout}"
    );
    // The same facts again (the download time is now the one the database recorded).
    let facts = |bytes: &[u8]| {
        let mut v: Value = serde_json::from_slice(bytes).unwrap();
        v.as_object_mut().unwrap().remove("downloaded_at");
        v
    };
    assert_eq!(
        facts(&std::fs::read(env.out().join("j0.json")).unwrap()),
        facts(&original)
    );
    assert!(!env.out().join("j1.json").exists());
}
