//! `wanbatch report` and the provenance sidecars after a real small campaign against the fake:
//! every video the page references exists, each done job has a truthful sidecar, and the page
//! renders in headless Chromium (skipped, with a message, only where no Chromium is installed).

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

async fn report(env: &Env, extra: &[&str]) -> String {
    let mut cmd = env.bin();
    cmd.args([
        "report",
        "--db",
        env.db().to_str().unwrap(),
        "--out",
        env.out().to_str().unwrap(),
    ]);
    cmd.args(extra);
    let out = finish(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    String::from_utf8(out.stdout).unwrap()
}

/// The `src` of every `<video>` in the page.
fn video_srcs(html: &str) -> Vec<String> {
    html.split("<video ")
        .skip(1)
        .map(|tag| {
            let tag = &tag[..tag.find('>').unwrap()];
            let src = tag.split("src=\"").nth(1).unwrap();
            src[..src.find('"').unwrap()].to_string()
        })
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
async fn the_report_references_only_existing_videos_and_renders_in_chromium() {
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
    assert_eq!(html.matches("<article class=\"job").count(), 5);
    assert!(!html.contains("<script"), "the prompt's markup must be escaped");
    assert!(html.contains("&lt;script&gt;document.title=&#39;pwned&#39;&lt;/script&gt; a fox"));
    assert!(html.contains("a &quot;quoted&quot; &amp; ampersanded prompt"));
    assert!(html.contains("<b>5 jobs</b>: 3 done, 2 failed"), "{html}");
    assert!(html.contains("Content blocked by safety filter (RAI)"));
    assert!(!html.contains(KEY));

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
    assert_eq!(failed.matches("<article class=\"job s-failed\"").count(), 2);
    assert_eq!(failed.matches("<article class=\"job").count(), 2);
    assert!(failed.contains("<b>5 jobs</b>"));

    render_in_chromium(&env, &page).await;
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

fn find_chromium() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    ["chromium", "chromium-browser", "google-chrome", "google-chrome-stable"]
        .iter()
        .flat_map(|name| std::env::split_paths(&path).map(move |dir| dir.join(name)))
        .find(|p| p.is_file())
}

/// Runs Chromium headless with a hard time bound. It runs in its own process group, which is
/// killed afterwards whatever happened: no renderer or zygote outlives the test.
async fn chromium(bin: &Path, profile: &Path, args: &[&str]) -> std::process::Output {
    let mut cmd = tokio::process::Command::new(bin);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        "--no-default-browser-check",
        "--mute-audio",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .args(args)
    .stdin(std::process::Stdio::null())
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped())
    .process_group(0)
    .kill_on_drop(true);
    let child = cmd.spawn().expect("start chromium");
    let group = child.id().expect("chromium pid") as libc::pid_t;
    let out = tokio::time::timeout(Duration::from_secs(90), child.wait_with_output()).await;
    // SAFETY: kill(2) on the process group we created; no memory is involved.
    unsafe {
        libc::kill(-group, libc::SIGKILL);
    }
    match out {
        Ok(out) => out.unwrap(),
        Err(_) => panic!("chromium did not finish within 90 s (killed)"),
    }
}

async fn render_in_chromium(env: &Env, page: &Path) {
    let Some(bin) = find_chromium() else {
        eprintln!("skipped: chromium not installed (apt-get install chromium; .ci/run installs it)");
        return;
    };
    let url = format!("file://{}", page.display());
    let profile = env.path("chromium-profile");
    let out = chromium(&bin, &profile, &["--virtual-time-budget=3000", "--dump-dom", &url]).await;
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && dom.contains("</html>"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Parsed and laid out as written: the summary, one card per job, no script from a prompt.
    assert!(dom.contains("<section id=\"summary\" data-jobs=\"5\">"), "{dom}");
    assert!(dom.contains("<b>5 jobs</b>: 3 done, 2 failed"), "{dom}");
    assert_eq!(dom.matches("<article class=\"job").count(), 5);
    assert_eq!(dom.matches("<video").count(), 3);
    assert_eq!(dom.matches("<rect class=\"bar\"").count(), 20);
    assert!(!dom.contains("<script"), "a prompt became an element");
    assert!(
        dom.contains("<title>wanbatch report</title>"),
        "the prompt's script did not run"
    );

    let shot = env.path("report.png");
    let arg = format!("--screenshot={}", shot.display());
    let out = chromium(
        &bin,
        &profile,
        &["--window-size=1280,2000", "--virtual-time-budget=3000", &arg, &url],
    )
    .await;
    let png = std::fs::read(&shot)
        .unwrap_or_else(|e| panic!("no screenshot ({e}): {}", String::from_utf8_lossy(&out.stderr)));
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    assert!(
        png.len() > 20_000,
        "a blank page compresses to almost nothing: {} bytes",
        png.len()
    );
    if let Some(keep) = std::env::var_os("WANBATCH_REPORT_SCREENSHOT") {
        std::fs::copy(&shot, &keep).unwrap();
    }
    let summary = dom
        .split("<p id=\"headline\">")
        .nth(1)
        .and_then(|s| s.split("</p>").next())
        .unwrap_or_default();
    eprintln!("rendered in {}: {summary}", bin.display());
}
