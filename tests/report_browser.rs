//! The review page in headless Chromium (driven through chromedriver, `wanbatch::webdriver`),
//! asked through the page's own JavaScript: the fake's real videos load and play with the
//! duration their request asked for, the input image sits beside each video, hostile text stays
//! text, filters change the cards shown, keep / reject decisions survive a reload and download
//! as `decisions.csv`, and a big page renders in pages.
//!
//! Skipped (with a message) where Chromium or chromedriver is missing, unless
//! `WANBATCH_REQUIRE_CHROMIUM=1` (CI), which makes that a failure.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use wanbatch::webdriver::{self, Browser, Options, Programs};

/// A demo-like campaign: several sizes, frame counts and rates, local input images (shown from
/// disk) and web ones (unreachable here: the card says so), a last image, one failure and a
/// prompt that tries to break out of the page.
const JOBS: &str = "id,image,prompt,last_image,num_frames,resolution,aspect_ratio,frames_per_second,seed\n\
    viking,images/viking.bmp,a viking kneels in a snowy cave,,81,480p,16:9,16,42\n\
    harbor,images/harbor.bmp,aerial orbit over a harbor at dawn,,97,720p,16:9,24,7\n\
    dancer,images/dancer.bmp,\"</script><img src=x onerror=\"\"document.title='pwned'\"\"> a dancer\",,81,480p,9:16,16,3\n\
    bloom,https://img.example/bud.jpg,a peony opens,https://img.example/bloom.jpg,90,720p,9:16,16,5\n\
    storm,https://img.example/storm.jpg,[fail] a storm,,81,480p,16:9,16,9\n\
    peaks,images/peaks.bmp,\"clouds over peaks, at sunset\",,100,480p,16:9,20,11\n";

/// A 24-bit BMP of `w`×`h` pixels filled with one colour.
fn bmp(w: u32, h: u32, rgb: [u8; 3]) -> Vec<u8> {
    let row = (w * 3).div_ceil(4) * 4;
    let size = 54 + row * h;
    let mut b = Vec::with_capacity(size as usize);
    b.extend_from_slice(b"BM");
    for v in [size, 0, 54, 40, w, h] {
        b.extend_from_slice(&v.to_le_bytes());
    }
    b.extend_from_slice(&1u16.to_le_bytes());
    b.extend_from_slice(&24u16.to_le_bytes());
    for v in [0u32, row * h, 2835, 2835, 0, 0] {
        b.extend_from_slice(&v.to_le_bytes());
    }
    for _ in 0..h {
        for x in 0..row {
            b.push(if x < w * 3 { rgb[2 - (x % 3) as usize] } else { 0 });
        }
    }
    b
}

const DANCER: &str = "</script><img src=x onerror=\"document.title='pwned'\"> a dancer";

/// (id, width, height, frames ÷ fps) of each done job.
const VIDEOS: [(&str, u64, u64, f64); 5] = [
    ("viking", 832, 480, 81.0 / 16.0),
    ("harbor", 1280, 720, 97.0 / 24.0),
    ("dancer", 480, 832, 81.0 / 16.0),
    ("bloom", 720, 1280, 90.0 / 16.0),
    ("peaks", 832, 480, 100.0 / 20.0),
];

/// Writes the campaign's page (`OUT/report.html`) and returns where it is.
async fn write_report(env: &Env) -> PathBuf {
    report(env, &[]).await;
    env.out().join("report.html")
}

async fn browser(programs: &Programs, env: &Env) -> Browser {
    Browser::start(
        programs,
        &Options {
            downloads: env.path("downloads"),
            width: 1280,
            height: 2400,
        },
    )
    .await
    .expect("start chromium through chromedriver")
}

/// The number of cards in the document.
async fn cards(b: &Browser) -> u64 {
    let v = b
        .eval("return document.querySelectorAll('#jobs article').length;", vec![])
        .await
        .unwrap();
    v.as_u64().unwrap()
}

/// Chooses `value` in the select `id` (as a user would: the change event fires) and returns the
/// ids of the cards then shown.
async fn filter(b: &Browser, id: &str, value: &str) -> Vec<String> {
    let v = b
        .eval(
            "const s = document.getElementById(arguments[0]);
             s.value = arguments[1];
             s.dispatchEvent(new Event('change'));
             return [...document.querySelectorAll('#jobs article')].map(a => a.dataset.id);",
            vec![json!(id), json!(value)],
        )
        .await
        .unwrap();
    serde_json::from_value(v).unwrap()
}

async fn open(b: &Browser, page: &Path) {
    b.goto(&webdriver::file_url(page)).await.unwrap();
    b.wait_for(
        "the page's script",
        "return !!window.wanbatchReport;",
        Duration::from_secs(20),
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn videos_play_filters_work_and_decisions_download_as_csv() {
    let Some(programs) = webdriver::for_tests("videos_play_filters_work_and_decisions_download_as_csv") else {
        return;
    };
    let env = Env::new(fast_fake()).await;
    std::fs::create_dir(env.path("images")).unwrap();
    for (i, name) in ["viking", "harbor", "dancer", "peaks"].iter().enumerate() {
        let colour = [40 * i as u8, 200 - 40 * i as u8, 120];
        std::fs::write(env.path(&format!("images/{name}.bmp")), bmp(64, 40, colour)).unwrap();
    }
    let m = env.write("jobs.csv", JOBS);
    let out = env.run(&[&m], &[]).await;
    assert_eq!(out.status.code(), Some(1), "one job fails: {}", text(&out));
    // What the video check, the review and the history would have recorded, set here: one video
    // differs from its request, one job may have been billed twice, one was reviewed already.
    {
        let db = rusqlite::Connection::open(env.db()).unwrap();
        db.execute_batch(
            "UPDATE jobs SET video_mismatch = '97 frames instead of 81' WHERE id = 'harbor';
             UPDATE jobs SET maybe_billed_twice = 1 WHERE id = 'peaks';
             UPDATE jobs SET review = 'keep', review_note = 'already kept' WHERE id = 'bloom';",
        )
        .unwrap();
    }
    let page = write_report(&env).await;
    let b = browser(&programs, &env).await;
    open(&b, &page).await;

    // Everything fits in the first page of cards; the summary counts the flags.
    assert_eq!(cards(&b).await, 6);
    let summary = b
        .eval(
            "return ['n-mismatched', 'n-keep', 'n-reject'].map(id => document.getElementById(id).textContent);",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(summary, json!(["1", "1", "0"]));

    // Hostile text stayed text: no element from it, the title untouched, the prompt shown as is.
    let hostile = b
        .eval(
            "return {title: document.title, img: document.querySelectorAll('img[src=\"x\"]').length,
                     prompt: document.querySelector('#job-dancer .prompt').textContent};",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(hostile, json!({"title": "wanbatch report", "img": 0, "prompt": DANCER}));

    // Every video loads: its first frame decoded (readyState ≥ 2), the size and duration its
    // request asked for; the input image is beside it (to its left, same row).
    let videos = b
        .eval_async(
            "const done = arguments[arguments.length - 1];
             const vs = [...document.querySelectorAll('#jobs video')];
             const imgs = [...document.querySelectorAll('#jobs .inputs img')];
             const t0 = performance.now();
             (function wait() {
               if ((vs.every(v => v.readyState >= 2) && imgs.every(i => i.complete))
                   || performance.now() - t0 > 30000) {
                 done(vs.map(v => {
                   const card = v.closest('article');
                   const img = card.querySelector('.inputs img');
                   const [i, r] = [img.closest('figure').getBoundingClientRect(), v.getBoundingClientRect()];
                   return {id: card.dataset.id, ready: v.readyState, duration: v.duration,
                           width: v.videoWidth, height: v.videoHeight, error: v.error && v.error.message,
                           image: img.getAttribute('src'), loaded: img.complete && img.naturalWidth,
                           unreachable: !!card.querySelector('.inputs .noimage'),
                           beside: i.right <= r.left + 1 && i.top < r.bottom && r.top < i.bottom,
                           images: card.querySelectorAll('.inputs img').length};
                 }));
               } else { setTimeout(wait, 20); }
             })();",
            vec![],
        )
        .await
        .unwrap();
    let videos = videos.as_array().unwrap();
    assert_eq!(videos.len(), VIDEOS.len(), "{videos:?}");
    for (v, (id, w, h, secs)) in videos.iter().zip(VIDEOS) {
        assert_eq!(v["id"], id, "{v}");
        assert!(v["ready"].as_u64().unwrap() >= 2, "{id} did not load: {v}");
        let duration = v["duration"].as_f64().unwrap();
        assert!((duration - secs).abs() < 0.1, "{id}: {duration} s, not {secs}: {v}");
        assert_eq!((v["width"].as_u64(), v["height"].as_u64()), (Some(w), Some(h)), "{v}");
        assert_eq!(v["beside"], true, "{v}");
        if id == "bloom" {
            // Web images (unreachable from here): still in place, and the card says so.
            assert_eq!(v["image"], "https://img.example/bud.jpg", "{v}");
            assert_eq!(
                (v["images"].as_u64(), &v["unreachable"]),
                (Some(2), &json!(true)),
                "{v}"
            );
        } else {
            // Local images: shown from disk, by a path relative to the page.
            assert_eq!(v["image"], format!("../images/{id}.bmp"), "{v}");
            assert_eq!((&v["loaded"], &v["unreachable"]), (&json!(64), &json!(false)), "{v}");
        }
    }

    // Hovering plays a video: its clock moves.
    let played = b
        .eval_async(
            "const done = arguments[arguments.length - 1];
             const v = document.querySelector('#job-viking video');
             v.dispatchEvent(new MouseEvent('mouseenter'));
             const t0 = performance.now();
             (function wait() {
               if (v.currentTime > 0.3 || performance.now() - t0 > 20000) {
                 done({time: v.currentTime, paused: v.paused, ready: v.readyState});
               } else { setTimeout(wait, 20); }
             })();",
            vec![],
        )
        .await
        .unwrap();
    assert!(played["time"].as_f64().unwrap() > 0.3, "{played}");
    assert_eq!(played["paused"], false, "{played}");
    b.eval(
        "document.querySelector('#job-viking video').dispatchEvent(new MouseEvent('mouseleave'));",
        vec![],
    )
    .await
    .unwrap();

    // A real pointer (WebDriver moves the mouse onto another video and clicks): it plays too.
    b.click("#job-harbor video").await.unwrap();
    let clicked = b
        .wait_for(
            "the clicked video to play",
            "const v = document.querySelector('#job-harbor video');
             return !v.paused && v.currentTime > 0.3 && v.currentTime;",
            Duration::from_secs(20),
        )
        .await;
    assert!(clicked.is_ok(), "{clicked:?}");

    // Filters: by state, by flag, by review (the database's decision pre-fills the page).
    assert_eq!(filter(&b, "f-state", "failed").await, ["storm"]);
    assert_eq!(
        filter(&b, "f-state", "done").await,
        ["viking", "harbor", "dancer", "bloom", "peaks"]
    );
    filter(&b, "f-state", "").await;
    assert_eq!(filter(&b, "f-flag", "failed").await, ["storm"]);
    assert_eq!(filter(&b, "f-flag", "mismatched").await, ["harbor"]);
    assert_eq!(filter(&b, "f-flag", "billed_twice").await, ["peaks"]);
    filter(&b, "f-flag", "").await;
    assert_eq!(filter(&b, "f-review", "keep").await, ["bloom"]);
    assert_eq!(filter(&b, "f-review", "reject").await, Vec::<String>::new());
    assert_eq!(
        filter(&b, "f-review", "undecided").await,
        ["viking", "harbor", "dancer", "peaks"]
    );
    filter(&b, "f-review", "").await;
    assert_eq!(cards(&b).await, 6);

    // Decisions, clicked and typed as a reviewer would; a second click takes one back.
    b.click("#job-viking button.keep").await.unwrap();
    b.click("#job-dancer button.reject").await.unwrap();
    b.type_text("#job-dancer .review input", "jerky, \"warped\" hands")
        .await
        .unwrap();
    b.click("#job-peaks button.keep").await.unwrap();
    b.click("#job-peaks button.keep").await.unwrap();

    // They survive a reload (kept in the browser under this campaign's key).
    open(&b, &page).await;
    let state = b
        .eval(
            "const pressed = (id, d) => document.querySelector(`#job-${id} button.${d}`).getAttribute('aria-pressed');
             return {viking: pressed('viking', 'keep'), dancer: pressed('dancer', 'reject'),
                     peaks: [pressed('peaks', 'keep'), pressed('peaks', 'reject')],
                     note: document.querySelector('#job-dancer .review input').value,
                     decided: document.getElementById('decided').textContent};",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        state,
        json!({"viking": "true", "dancer": "true", "peaks": ["false", "false"],
               "note": "jerky, \"warped\" hands", "decided": "decisions: 2 keep, 1 reject"})
    );
    assert_eq!(filter(&b, "f-review", "reject").await, ["dancer"]);
    assert_eq!(filter(&b, "f-review", "keep").await, ["viking", "bloom"]);
    filter(&b, "f-review", "").await;

    // The download: decisions.csv in the download folder, one row per decided video.
    b.click("#download").await.unwrap();
    let csv = env.path("downloads/decisions.csv");
    wait_for("decisions.csv to download", 20, || csv.is_file()).await;
    let mut text = String::new();
    for _ in 0..200 {
        // Complete once Chromium has renamed it from its .crdownload and it holds the rows.
        text = std::fs::read_to_string(&csv).unwrap_or_default();
        if text.ends_with('\n') && text.lines().count() == 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(
        text,
        "id,decision,note\nviking,keep,\ndancer,reject,\"jerky, \"\"warped\"\" hands\"\nbloom,keep,already kept\n"
    );
    // It reads back as CSV with the header `wanbatch review apply` expects.
    let mut r = csv::Reader::from_reader(text.as_bytes());
    assert_eq!(r.headers().unwrap(), vec!["id", "decision", "note"]);
    let rows: Vec<Vec<String>> = r
        .records()
        .map(|r| r.unwrap().iter().map(str::to_string).collect())
        .collect();
    assert_eq!(rows[1], ["dancer", "reject", "jerky, \"warped\" hands"]);

    // `review apply` records the downloaded file: export carries the decisions.
    let out = cmd(
        &env,
        &[
            "review",
            "apply",
            csv.to_str().unwrap(),
            "--db",
            env.db().to_str().unwrap(),
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", common::text(&out));
    let out = cmd(
        &env,
        &["export", "--format", "jsonl", "--db", env.db().to_str().unwrap()],
    )
    .await;
    let reviews: Vec<(String, Value, Value)> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .map(|j| {
            (
                j["id"].as_str().unwrap().to_string(),
                j["review"].clone(),
                j["review_note"].clone(),
            )
        })
        .collect();
    let of = |id: &str| reviews.iter().find(|r| r.0 == id).cloned().unwrap();
    assert_eq!(of("viking").1, "keep");
    assert_eq!(
        (of("dancer").1, of("dancer").2),
        (json!("reject"), json!("jerky, \"warped\" hands"))
    );
    assert_eq!(of("bloom").1, "keep");
    assert_eq!(of("peaks").1, Value::Null);

    // A new take of the rejected video (as `retry --rejected` and a run make it: a new request,
    // no decision yet): the browser's decision about the old take no longer applies to it.
    {
        let db = rusqlite::Connection::open(env.db()).unwrap();
        db.execute_batch(
            "UPDATE jobs SET request_id = 'a-new-take', review = NULL, review_note = NULL WHERE id = 'dancer';",
        )
        .unwrap();
    }
    let page = write_report(&env).await;
    open(&b, &page).await;
    let dancer = b
        .eval(
            "return [document.querySelector('#job-dancer button.reject').getAttribute('aria-pressed'),
                     document.querySelector('#job-dancer .review input').value,
                     document.querySelector('#job-viking button.keep').getAttribute('aria-pressed')];",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        dancer,
        json!(["false", "", "true"]),
        "the new take is undecided; other decisions stay"
    );
    b.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_big_page_renders_cards_in_pages_and_filters_from_its_data() {
    let Some(programs) = webdriver::for_tests("a_big_page_renders_cards_in_pages_and_filters_from_its_data") else {
        return;
    };
    // Imported only (nothing runs): 130 pending jobs, 3 of them then failed.
    let env = Env::new(fast_fake()).await;
    let m = env.write("jobs.csv", &manifest(130));
    let mut cmd = env.bin();
    cmd.args(["import", m.to_str().unwrap(), "--db", env.db().to_str().unwrap()]);
    let out = finish(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    {
        let db = rusqlite::Connection::open(env.db()).unwrap();
        db.execute_batch("UPDATE jobs SET state = 'failed', error = 'gave up' WHERE id IN ('j5', 'j70', 'j129');")
            .unwrap();
    }
    let page = write_report(&env).await;
    let b = browser(&programs, &env).await;
    open(&b, &page).await;
    let shown = || async {
        b.eval(
            "const j = document.getElementById('jobs');
             return [j.children.length, +j.dataset.matching, j.lastElementChild && j.lastElementChild.dataset.id];",
            vec![],
        )
        .await
        .unwrap()
    };
    // The first page only, in manifest order.
    assert_eq!(shown().await, json!([48, 130, "j47"]));
    // Scrolling to the bottom brings the next page, and the next.
    for (n, last) in [(96, "j95"), (130, "j129")] {
        b.eval("window.scrollTo(0, document.body.scrollHeight);", vec![])
            .await
            .unwrap();
        let cond = format!("return document.getElementById('jobs').children.length >= {n};");
        b.wait_for("the next page of cards", &cond, Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(shown().await, json!([n, 130, last]));
    }
    // A filter re-renders from the data, from the top.
    assert_eq!(filter(&b, "f-flag", "failed").await, ["j5", "j70", "j129"]);
    b.eval("window.scrollTo(0, 0);", vec![]).await.unwrap();
    filter(&b, "f-flag", "").await;
    assert_eq!(shown().await, json!([48, 130, "j47"]));
    // Pending jobs have no video, hence nothing to review.
    let review = b
        .eval("return document.querySelectorAll('#jobs .review').length;", vec![])
        .await
        .unwrap();
    assert_eq!(review, 0);
    b.quit().await;
}
