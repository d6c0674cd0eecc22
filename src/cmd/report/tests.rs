//! The page's pieces: escaping, relative links, the summary's figures, a card's content.

use super::*;

fn job(id: &str, state: &str, prompt: &str) -> JobRecord {
    JobRecord {
        seq: 1,
        id: id.into(),
        state: state.into(),
        params: serde_json::json!({
            "image": "https://i.example/a.png?x=1&y=2",
            "prompt": prompt,
            "resolution": "720p",
            "num_frames": 81,
            "seed": 42,
            "go_fast": false,
            "low_noise_lora": "https://l.example/l.safetensors",
        })
        .to_string(),
        source: "jobs.csv:2".into(),
        attempts: 2,
        request_id: Some("req-\"1\"".into()),
        polls: 3,
        output_url: Some("https://cdn.example/v.mp4?token=SECRET".into()),
        output_path: None,
        bytes: Some(3 * 1024 * 1024),
        sha256: Some("ab".into()),
        cost: Some(0.125),
        error: None,
        submitted_at: Some(1_000),
        completed_at: Some(13_500),
        downloaded_at: Some(14_000),
        resubmits_unknown: 0,
        resubmits_expired: 1,
        resubmits_failed: 0,
        maybe_billed_twice: 0,
        ..JobRecord::default()
    }
}

#[test]
fn escaping_covers_text_and_attributes() {
    assert_eq!(
        escape(r#"<script>alert("x&y")</script> it's"#),
        "&lt;script&gt;alert(&quot;x&amp;y&quot;)&lt;/script&gt; it&#39;s"
    );
    assert_eq!(escape("plain ü"), "plain ü");
}

#[test]
fn a_prompt_with_markup_stays_text_inside_the_script_element() {
    let mut j = job(
        "a",
        "failed",
        "</script><script>alert(1)</script><!-- <img src=x onerror=y>",
    );
    j.error = Some("NSFW </SCRIPT>".into());
    let json = card_json(&j, None, Path::new("/o"));
    assert!(!json.contains('<'), "{json}");
    assert!(json.contains(r"\u003c/script>\u003cscript>alert(1)\u003c/script>\u003c!-- \u003cimg src=x onerror=y>"));
    // It is still the same JSON.
    let v: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        v["prompt"],
        "</script><script>alert(1)</script><!-- <img src=x onerror=y>"
    );
    assert_eq!(v["error"], "NSFW </SCRIPT>");
    assert_eq!(v["error_label"], "error");
    // Only the output URL's token could be a secret, and it is not in the data at all.
    assert!(!json.contains("SECRET") && !json.contains("cdn.example"));
    assert_eq!(v["image"]["src"], "https://i.example/a.png?x=1&y=2");
    assert!(v.get("video").is_none());
}

#[test]
fn images_are_shown_from_the_web_or_relative_to_the_page_never_from_other_schemes() {
    let dir = Path::new("/data/out");
    assert_eq!(
        picture("https://i.example/a b.png", dir).src.as_deref(),
        Some("https://i.example/a b.png")
    );
    assert_eq!(
        picture("file:///data/images/cat%20one.png", dir).src.as_deref(),
        Some("../images/cat%20one.png")
    );
    for bad in ["javascript:alert(1)", "data:text/html,<b>", "ftp://x/y.png", "cat.png"] {
        let p = picture(bad, dir);
        assert_eq!((p.src, p.text.as_str()), (None, bad));
    }
}

#[test]
fn relative_paths_go_up_and_down_and_are_url_encoded() {
    let rel = relative(
        Path::new("/data/reports/2026"),
        Path::new("/data/videos/my clips/a#1.mp4"),
    );
    assert_eq!(rel, Path::new("../../videos/my clips/a#1.mp4"));
    assert_eq!(href(&rel), "../../videos/my%20clips/a%231.mp4");
    assert_eq!(href(&relative(Path::new("/o"), Path::new("/o/j1.mp4"))), "j1.mp4");
    let a = absolute(Path::new("x/./y/../z.mp4")).unwrap();
    assert_eq!(a, std::env::current_dir().unwrap().join("x/z.mp4"));
}

#[test]
fn a_done_card_carries_its_video_images_parameters_metadata_and_review() {
    let files = CardFiles {
        video: "j%20a.mp4".into(),
        video_exists: true,
        sidecar: Some("a.json".into()),
    };
    let mut j = job("a", "done", "a cat");
    j.params = j
        .params
        .replace("\"prompt\"", "\"last_image\":\"https://i.example/z.png\",\"prompt\"");
    j.video_width = Some(832);
    j.video_height = Some(480);
    j.video_frames = Some(81);
    j.video_fps = Some(16.0);
    j.video_duration = Some(5.0625);
    j.video_codec = Some("avc1".into());
    j.video_mismatch = Some("81 frames instead of 97".into());
    j.maybe_billed_twice = 1;
    j.review = Some("reject".into());
    j.review_note = Some("hands, \"again\"".into());
    let v: Value = serde_json::from_str(&card_json(&j, Some(&files), Path::new("/o"))).unwrap();
    assert_eq!(v["id"], "a");
    assert_eq!(v["state"], "done");
    assert_eq!(v["video"], "j%20a.mp4");
    assert!(v.get("video_missing").is_none());
    assert_eq!(v["sidecar"], "a.json");
    assert_eq!(v["prompt"], "a cat");
    assert_eq!(v["last_image"]["src"], "https://i.example/z.png");
    assert_eq!(
        v["params"],
        serde_json::json!([
            ["resolution", "720p"],
            ["num_frames", "81"],
            ["go_fast", "false"],
            ["seed", "42"]
        ])
    );
    assert_eq!(v["loras"], 1);
    assert_eq!(v["meta"], "832×480 · 81 frames · 16 fps · 5.06 s · avc1");
    assert_eq!(v["duration"], 5.0625);
    assert_eq!(v["mismatch"], "81 frames instead of 97");
    assert_eq!(v["billed_twice"], true);
    assert_eq!(v["review"], "reject");
    assert_eq!(v["note"], "hands, \"again\"");
    assert_eq!(v["request_id"], "req-\"1\"");
    let facts = v["facts"].to_string();
    assert!(
        facts.contains("12.5 s at Segmind") && facts.contains("$0.125") && facts.contains("3.0 MiB"),
        "{facts}"
    );
    let missing = CardFiles {
        video_exists: false,
        ..files
    };
    let v: Value = serde_json::from_str(&card_json(&job("a", "done", "c"), Some(&missing), Path::new("/o"))).unwrap();
    assert_eq!(v["video_missing"], true);
    assert!(v.get("review").is_none() && v.get("mismatch").is_none() && v.get("billed_twice").is_none());
}

#[test]
fn the_script_is_allowed_by_its_hash_and_nothing_else_is() {
    let csp = csp();
    let hash = base64(&Sha256::digest(SCRIPT.as_bytes()));
    assert!(csp.contains(&format!("script-src 'sha256-{hash}';")), "{csp}");
    assert!(csp.starts_with("default-src 'none';"));
    assert_eq!(base64(b"any carnal pleas"), "YW55IGNhcm5hbCBwbGVhcw==");
    assert_eq!(base64(b"any carnal pleasu"), "YW55IGNhcm5hbCBwbGVhc3U=");
    assert_eq!(base64(b"any carnal pleasur"), "YW55IGNhcm5hbCBwbGVhc3Vy");
    // The page's own script has no `</` that could end its element early.
    assert!(!SCRIPT.contains("</"));
}

#[test]
fn the_summary_counts_states_spend_and_durations() {
    let s = Summary {
        counts: vec![(JobState::Pending, 0), (JobState::Done, 5), (JobState::Failed, 2)],
        totals: Totals {
            jobs: 7,
            attempts: 9,
            spent: 1.25,
            priced_jobs: 5,
            resubmits_unknown: 1,
            resubmits_expired: 1,
            resubmits_failed: 0,
            maybe_billed_twice: 1,
            bytes: 2048,
        },
        histogram: Some(Histogram {
            min_ms: 1000,
            max_ms: 5000,
            mean_ms: 2600.0,
            width_ms: 1000,
            counts: vec![1, 3, 0, 1],
        }),
        flags: FlagCounts {
            mismatched: 3,
            keep: 4,
            reject: 1,
        },
        generated_at: 0,
        filter: Some("<done>".into()),
        limit: None,
        campaign: "c0ffee".into(),
    };
    let html = page_head(&s);
    assert!(html.contains("<b>7 jobs</b>: 5 done, 2 failed · $1.25 spent (reported for 5 jobs) · 9 submit attempts · 2 resubmits · 2.0 KiB"), "{html}");
    assert!(html.contains("<tr class=\"s-pending\"><td>pending</td><td class=\"n\">0</td></tr>"));
    assert_eq!(html.matches("<rect class=\"bar\"").count(), 4);
    assert!(html.contains("<title>2–3 s: 3 jobs</title>"), "{html}");
    assert!(html.contains("min 1 s, mean 3 s, max 5 s"), "{html}");
    assert!(html.contains("only jobs in state &lt;done&gt;"));
    assert!(html.contains("<body data-campaign=\"c0ffee\">"));
    assert!(
        html.contains("differ from their request: <b id=\"n-mismatched\">3</b>"),
        "{html}"
    );
    assert!(html.contains("<b id=\"n-keep\">4</b> keep, <b id=\"n-reject\">1</b> reject"));
    assert!(html.contains("<noscript>"));
    assert!(!html.contains("<script"), "the data and the script come after");
    assert_eq!(
        html.matches("http").count(),
        2,
        "nothing external but the SVG namespace (and http-equiv)"
    );
    let fast = Histogram {
        min_ms: 412,
        max_ms: 600,
        mean_ms: 500.0,
        width_ms: 10,
        counts: vec![1; 19],
    };
    assert!(histogram_svg(&fast).contains("<title>0.41–0.42 s: 1 jobs</title>"));
    let empty = Summary { histogram: None, ..s };
    assert!(page_head(&empty).contains("No job has finished yet"));
}
