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
fn a_prompt_with_markup_stays_text() {
    let html = card(
        &job("a", "failed", "<script>alert(1)</script><img src=x onerror=y>"),
        None,
    );
    assert!(!html.contains("<script") && !html.contains("<img"), "{html}");
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;&lt;img src=x onerror=y&gt;"));
    // Attribute values cannot be broken out of either.
    assert!(html.contains("request <code>req-&quot;1&quot;</code>"), "{html}");
    // Only the output URL's token could be a secret, and it is not shown at all.
    assert!(!html.contains("SECRET"));
    assert!(html.contains("https://i.example/a.png?x=1&amp;y=2"));
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
fn a_done_card_shows_its_video_parameters_and_facts() {
    let files = CardFiles {
        video: "j%20a.mp4".into(),
        video_exists: true,
        sidecar: Some("a.json".into()),
    };
    let html = card(&job("a", "done", "a cat"), Some(&files));
    assert!(
        html.starts_with("<article class=\"job s-done\" id=\"job-a\" data-state=\"done\">"),
        "{html}"
    );
    assert!(html.contains("<video controls preload=\"metadata\" src=\"j%20a.mp4\"></video>"));
    assert!(html.contains("<p class=\"prompt\">a cat</p>"));
    for kv in [
        "<dt>resolution</dt><dd>720p</dd>",
        "<dt>num_frames</dt><dd>81</dd>",
        "<dt>seed</dt><dd>42</dd>",
        "<dt>go_fast</dt><dd>false</dd>",
        "<dt>LoRA settings</dt><dd>1</dd>",
    ] {
        assert!(html.contains(kv), "{kv} in {html}");
    }
    assert!(html.contains("12.5 s at Segmind") && html.contains("$0.125") && html.contains("3.0 MiB"));
    assert!(html.contains("<a href=\"a.json\">provenance</a>"));
    assert!(!html.contains("video missing"));
    let missing = CardFiles {
        video_exists: false,
        ..files
    };
    assert!(card(&job("a", "done", "c"), Some(&missing)).contains("video missing: j%20a.mp4"));
}

#[test]
fn a_failed_card_has_no_video_and_shows_the_error() {
    let mut j = job("b", "failed", "storm");
    j.error = Some("NSFW <content>".into());
    let html = card(&j, None);
    assert!(!html.contains("<video"));
    assert!(
        html.contains("<p class=\"error\"><b>error:</b> NSFW &lt;content&gt;</p>"),
        "{html}"
    );
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
        generated_at: 0,
        filter: Some("<done>".into()),
        limit: None,
    };
    let html = page_head(&s);
    assert!(html.contains("<b>7 jobs</b>: 5 done, 2 failed · $1.25 spent (reported for 5 jobs) · 9 submit attempts · 2 resubmits · 2.0 KiB"), "{html}");
    assert!(html.contains("<tr class=\"s-pending\"><td>pending</td><td class=\"n\">0</td></tr>"));
    assert_eq!(html.matches("<rect class=\"bar\"").count(), 4);
    assert!(html.contains("<title>2–3 s: 3 jobs</title>"), "{html}");
    assert!(html.contains("min 1 s, mean 3 s, max 5 s"), "{html}");
    assert!(html.contains("only jobs in state &lt;done&gt;"));
    assert!(!html.contains("<script"));
    assert_eq!(
        html.matches("http").count(),
        1,
        "nothing external but the SVG namespace"
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
