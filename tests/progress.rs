//! The live progress display of `run`, through its non-terminal mode (stderr is a pipe here).

mod common;

use common::*;

fn progress_lines(out: &std::process::Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| l.starts_with("progress ["))
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn off_a_terminal_progress_is_plain_lines_at_the_interval_ending_with_the_final_state() {
    let env = Env::new(fast_fake()).await;
    let m = env.write("jobs.csv", &manifest(8));
    // Info logs on too: a pipe gets no colour codes from them either.
    let mut cmd = env.run_cmd(&[&m], &["--progress-interval", "0.2", "--price", "0.05"]);
    cmd.env("RUST_LOG", "wanbatch=info");
    let out = finish(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let lines = progress_lines(&out);
    assert!(lines.len() >= 2, "a line per interval, then a last one: {lines:#?}");
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains('\x1b'),
        "no escape codes off a terminal: {}",
        text(&out)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("submit accepted"),
        "{}",
        text(&out)
    );
    let last = lines.last().unwrap();
    assert!(
        last.contains("] 8/8 done, 0 failed, 0 at Segmind, 0 downloading, 0 waiting"),
        "{last}"
    );
    assert!(
        last.contains("videos/min, API ") && last.contains("/6000 requests in the last minute"),
        "the limiter's own count against the budget: {last}"
    );
    assert!(
        last.contains("$0.40 spent"),
        "8 videos at the fake's reported cost: {last}"
    );
    assert!(last.ends_with("ETA now"), "{last}");
    // The earliest line was written before the work was over.
    assert!(!lines[0].contains("8/8 done"), "{lines:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_error_is_shown_and_quiet_silences_the_display_but_not_the_summary() {
    // The fake fails any job whose prompt holds `[fail]`.
    let env = Env::new(fast_fake()).await;
    let m = env.write(
        "jobs.csv",
        "id,image,prompt\nok,https://img.example/1.jpg,fine\nbad,https://img.example/2.jpg,[fail] broken\n",
    );
    let out = env.run(&[&m], &["--progress-interval", "0.2"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let last = progress_lines(&out).pop().expect("progress lines");
    assert!(last.contains("1/2 done, 1 failed"), "{last}");
    assert!(
        last.contains("last error: ") && last.contains("bad: failed at Segmind"),
        "{last}"
    );

    let env = Env::new(fast_fake()).await;
    let m = env.write("jobs.csv", &manifest(3));
    let out = env.run(&[&m], &["--progress-interval", "0.1", "--quiet"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(progress_lines(&out).is_empty(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("3 jobs: 3 done"),
        "{}",
        text(&out)
    );
}
