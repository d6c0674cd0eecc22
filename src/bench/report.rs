//! `wanbatch bench-report`: how the review page holds a big campaign. A benchmark, not a test.
//!
//! Builds a database of `--jobs` jobs in a scratch folder (imported from a generated manifest,
//! then — untimed, by direct SQL on the scratch database — 90% made done with video metadata,
//! 5% failed, some flagged as differing from their request or possibly billed twice, a few
//! reviewed), gives every done job a video (hard links to one real MP4 from the fake's encoder),
//! writes the report, and opens it in headless Chromium (`crate::webdriver`) `--runs` times.
//! Prints the page's size and, per run: first contentful paint (`performance.getEntriesByType
//! ('paint')`), the first cards in the document, the load event, applying a filter (to the next
//! frame painted), and loading the next page of cards by scrolling to the bottom.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{json, Value};

use crate::cmd::report::{self, WriteOptions};
use crate::exit::Outcome;
use crate::store::Store;
use crate::webdriver::{self, Browser, Options};

#[derive(clap::Args, Debug)]
pub struct BenchReportArgs {
    /// Jobs in the campaign.
    #[arg(long, default_value_t = 10_000)]
    pub jobs: u64,
    /// Times the page is opened (a fresh navigation each time).
    #[arg(long, default_value_t = 3)]
    pub runs: u32,
}

pub async fn run(args: BenchReportArgs) -> anyhow::Result<Outcome> {
    let programs = webdriver::find().map_err(|e| anyhow::anyhow!("bench-report needs Chromium: {e}"))?;
    let dir = tempfile::Builder::new().prefix("wanbatch-bench-report-").tempdir()?;
    let (db, out) = (dir.path().join("bench.db"), dir.path().join("out"));
    let n = args.jobs;
    println!("wanbatch bench-report: {n} jobs; scratch in {}", dir.path().display());

    let t = Instant::now();
    build_campaign(dir.path(), &db, &out, n).await?;
    println!("campaign built in {:.2} s (untimed set-up)", t.elapsed().as_secs_f64());

    let page = out.join("report.html");
    let store = Store::open_existing(&db).await?;
    let t = Instant::now();
    let (written, _) = report::write(&store, &db, &out, &page, &WriteOptions::default()).await?;
    let write_secs = t.elapsed().as_secs_f64();
    store.close().await;
    let size = std::fs::metadata(&page)?.len();
    println!(
        "report written in {write_secs:.2} s: {} cards, page {:.2} MB ({size} bytes)",
        written.shown,
        size as f64 / 1e6
    );

    let browser = Browser::start(
        &programs,
        &Options {
            downloads: dir.path().join("downloads"),
            width: 1366,
            height: 900,
        },
    )
    .await?;
    let result = measure(&browser, &page, args.runs).await;
    browser.quit().await;
    result?;
    Ok(Outcome::AllDone)
}

async fn measure(browser: &Browser, page: &Path, runs: u32) -> anyhow::Result<()> {
    let url = webdriver::file_url(page);
    println!(
        "{:>4} {:>7} {:>9} {:>8} {:>8} {:>14} {:>18} {:>16} {:>11}",
        "run",
        "FCP ms",
        "cards ms",
        "load ms",
        "goto ms",
        "filter ms",
        "scroll ms dom/paint",
        "long tasks",
        "build 48 ms"
    );
    for run in 1..=runs {
        browser.goto("about:blank").await?;
        let t = Instant::now();
        browser.goto(&url).await?;
        let goto_ms = t.elapsed().as_secs_f64() * 1000.0;
        browser
            .wait_for("the cards", "return !!window.wanbatchReport", Duration::from_secs(30))
            .await?;
        browser
            .eval(
                "window.__long = [];
                 new PerformanceObserver(l => l.getEntries().forEach(e => window.__long.push(e.duration)))
                   .observe({type: 'longtask', buffered: true});",
                vec![],
            )
            .await?;
        let v = browser
            .eval(
                "const fcp = performance.getEntriesByType('paint').find(e => e.name === 'first-contentful-paint');
                 const nav = performance.getEntriesByType('navigation')[0];
                 return {fcp: fcp ? fcp.startTime : null, cards: window.wanbatchReport.ready,
                         load: nav ? nav.loadEventEnd : null,
                         rendered: document.querySelectorAll('#jobs article').length};",
                vec![],
            )
            .await?;
        anyhow::ensure!(v["rendered"].as_u64().unwrap_or(0) > 0, "no cards rendered: {v}");
        // A filter, timed to the next frame painted after it.
        let filter = browser
            .eval_async(
                "const done = arguments[arguments.length - 1];
                 const s = document.getElementById('f-flag');
                 const t0 = performance.now();
                 s.value = 'failed'; s.dispatchEvent(new Event('change'));
                 requestAnimationFrame(() => setTimeout(() => {
                   const ms = performance.now() - t0;
                   const n = document.querySelectorAll('#jobs article').length;
                   s.value = ''; s.dispatchEvent(new Event('change'));
                   done({ms, n});
                 }, 0));",
                vec![],
            )
            .await?;
        // The next page of cards, loaded by scrolling to the bottom: in the document, then painted.
        let scroll = browser
            .eval_async(
                "const done = arguments[arguments.length - 1];
                 const jobs = document.getElementById('jobs');
                 const before = jobs.children.length;
                 const t0 = performance.now();
                 window.scrollTo(0, document.body.scrollHeight);
                 (function wait() {
                   if (jobs.children.length > before) {
                     const dom = performance.now() - t0;
                     requestAnimationFrame(() => setTimeout(() =>
                       done({dom, ms: performance.now() - t0, before, after: jobs.children.length}), 0));
                   } else if (performance.now() - t0 > 10000) {
                     done({ms: null, before, after: before});
                   } else { setTimeout(wait, 1); }
                 })();",
                vec![],
            )
            .await?;
        // Building the next 48 cards alone (no scrolling, no waiting for a frame).
        let build = browser
            .eval(
                "const t0 = performance.now(); window.wanbatchReport.more(); return performance.now() - t0;",
                vec![],
            )
            .await?;
        // Main-thread tasks over 50 ms since the page opened (what makes a page feel stuck).
        let long = browser
            .eval(
                "return (window.__long || []).reduce((a, d) => [a[0] + 1, Math.max(a[1], d)], [0, 0]);",
                vec![],
            )
            .await?;
        let ms = |v: &Value| v.as_f64().map_or("-".to_string(), |x| format!("{x:.0}"));
        println!(
            "{run:>4} {:>7} {:>9} {:>8} {:>8.0} {:>14} {:>18} {:>16} {:>11}",
            ms(&v["fcp"]),
            ms(&v["cards"]),
            ms(&v["load"]),
            goto_ms,
            format!("{} ({} cards)", ms(&filter["ms"]), filter["n"]),
            format!(
                "{}/{} ({}→{})",
                ms(&scroll["dom"]),
                ms(&scroll["ms"]),
                scroll["before"],
                scroll["after"]
            ),
            format!("{} (max {})", long[0], ms(&long[1])),
            ms(&build),
        );
    }
    println!(
        "FCP, cards and load are from navigation start (the page's own clock); goto is the WebDriver \
         navigation as the caller saw it; filter is 'flag: failed' applied and painted; scroll is the next \
         48 cards after scrolling to the bottom, in the document / painted; long tasks: main-thread tasks \
         over 50 ms seen from the load event to the end of the run (count, longest ms); build 48: the \
         page's script making the next 48 cards, alone."
    );
    Ok(())
}

/// The scratch campaign: a manifest of `n` rows imported, then given outcomes directly.
async fn build_campaign(dir: &Path, db: &Path, out: &Path, n: u64) -> anyhow::Result<()> {
    let manifest = dir.join("jobs.csv");
    let mut w = std::io::BufWriter::new(std::fs::File::create(&manifest)?);
    writeln!(
        w,
        "id,image,prompt,num_frames,resolution,aspect_ratio,frames_per_second,seed"
    )?;
    const SCENES: &[&str] = &[
        "a lighthouse on a cliff as a storm rolls in, waves crashing, slow push-in",
        "a street dancer spinning under neon signs in the rain, handheld tracking shot",
        "macro timelapse of a peony bud opening into full bloom, shallow depth of field",
        "aerial orbit over a fishing harbor at dawn, gulls circling, golden light",
    ];
    for i in 0..n {
        let (res, aspect) = if i % 3 == 0 { ("720p", "9:16") } else { ("480p", "16:9") };
        writeln!(
            w,
            "job-{i:06},https://images.example.com/in/{i}.jpg,\"shot {i}: {}\",81,{res},{aspect},16,{i}",
            SCENES[i as usize % SCENES.len()]
        )?;
    }
    w.flush()?;
    drop(w);
    let mut rows = Vec::new();
    let errors = crate::manifest::read_files(&[manifest], |r| rows.push(r));
    anyhow::ensure!(errors.is_empty(), "the generated manifest has errors: {errors:?}");
    let store = Store::open(db).await?;
    for chunk in rows.chunks(5000) {
        store
            .import(chunk)
            .await?
            .map_err(|c| anyhow::anyhow!("import conflicts: {}", c.len()))?;
    }
    store.bench_mark_done(9, 10).await?;
    store.close().await;

    // Outcomes the report shows, set directly on the scratch database (a fixture, untimed).
    let conn = rusqlite::Connection::open(db).context("open the scratch database")?;
    conn.execute_batch(
        "UPDATE jobs SET video_width = CASE WHEN seq % 3 = 1 THEN 720 ELSE 832 END,
                video_height = CASE WHEN seq % 3 = 1 THEN 1280 ELSE 480 END,
                video_frames = 81, video_fps = 16.0, video_duration = 5.0625, video_codec = 'avc1'
             WHERE state = 'done';
         UPDATE jobs SET video_mismatch = '49 frames instead of 81', video_frames = 49, video_duration = 3.0625
             WHERE state = 'done' AND seq % 97 = 0;
         UPDATE jobs SET maybe_billed_twice = 1 WHERE state = 'done' AND seq % 211 = 0;
         UPDATE jobs SET review = 'keep', review_note = 'good motion' WHERE state = 'done' AND seq % 50 = 3;
         UPDATE jobs SET review = 'reject', review_note = 'warped hands' WHERE state = 'done' AND seq % 50 = 7;
         UPDATE jobs SET state = 'failed', attempts = 1,
                error = 'Segmind reported the job failed: content blocked by safety filter (RAI)'
             WHERE state = 'pending' AND (seq / 10) % 2 = 0;",
    )?;
    // One real video, linked under every done job's name.
    std::fs::create_dir_all(out)?;
    let sample = out.join(".sample.mp4");
    let body = json!({"resolution": "480p", "num_frames": 81, "frames_per_second": 16});
    std::fs::write(&sample, crate::fake::video_for(&body, "bench", 0))?;
    let mut stmt = conn.prepare("SELECT id FROM jobs WHERE state = 'done'")?;
    let ids = stmt.query_map([], |r| r.get::<_, String>(0))?;
    for id in ids {
        let id = id?;
        std::fs::hard_link(&sample, crate::engine::download::final_path(out, &id))
            .or_else(|_| std::fs::copy(&sample, crate::engine::download::final_path(out, &id)).map(|_| ()))?;
    }
    Ok(())
}
