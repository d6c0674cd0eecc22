use super::*;

async fn schedule(expected_ms: u64) -> (tempfile::TempDir, Store, Schedule) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("s.db")).await.unwrap();
    let timing = Timing {
        expected: Duration::from_millis(expected_ms),
        min_poll_gap: Duration::from_millis(10),
        ..Timing::default()
    };
    (dir, store.clone(), Schedule::new(store, timing))
}

/// Runs jobs of `class` one at a time with polls every `gap` ms; returns the last job's seq.
async fn run_jobs(s: &Schedule, class: &str, durations: &[i64], gap: i64, first_seq: i64) -> i64 {
    let mut seq = first_seq;
    for &d in durations {
        seq += 1;
        let mut t = gap;
        loop {
            let answer = if t >= d {
                Answer::Done
            } else if t < d / 10 {
                Answer::Queued
            } else {
                Answer::Processing
            };
            s.observe(class, seq, 0, t, answer).await;
            if answer == Answer::Done {
                break;
            }
            t += gap;
        }
    }
    seq
}

#[tokio::test]
async fn planned_polls_follow_what_the_class_learnt() {
    let (_d, _store, s) = schedule(54_000).await;
    let before = s.first_poll_at("480p|81|true", 0);
    assert!(before > 54_000, "the prior's 80 % point: {before}");
    run_jobs(&s, "480p|81|true", &[8_000, 8_200, 7_900, 8_100, 8_050], 500, 0).await;
    let after = s.first_poll_at("480p|81|true", 0);
    assert!((8_000..10_000).contains(&after), "{after}");
    // A job pending at its first poll: the next one comes a little later, not a prior later.
    let next = s.next_poll_at("480p|81|true", 0, after, after);
    assert!(next > after && next < after + 3_000, "{next}");
    // Likelier done the longer it has run.
    assert!(s.done_by("480p|81|true", 0, None, 9_000) > s.done_by("480p|81|true", 0, None, 7_000));
}

#[tokio::test]
async fn queue_time_is_learnt_apart_and_a_new_class_starts_from_a_similar_one() {
    let (_d, _store, s) = schedule(54_000).await;
    // 81-frame 480p jobs of 10 s, a tenth of it queued.
    run_jobs(&s, "480p|81|true", &[10_000; 8], 250, 0).await;
    let queue = s.lock().queue.class.model.median();
    assert!((600.0..1_800.0).contains(&queue), "queue median {queue}");
    // 100 frames, never seen: its run time scaled by the frames, not the 54 s prior.
    let expected = s.expected_ms("480p|100|true");
    assert!((10_500.0..14_500.0).contains(&expected), "{expected}");
    // Another speed mode is less alike, but still closer than the prior.
    assert!(s.expected_ms("720p|81|false") < 54_000.0);
}

#[tokio::test]
async fn learnt_models_survive_a_restart() {
    let (_d, store, s) = schedule(54_000).await;
    run_jobs(&s, "480p|81|true", &[20_000; 12], 1_000, 0).await;
    s.flush().await;
    let learned = s.first_poll_at("480p|81|true", 0);
    let again = Schedule::new(store, Timing::default());
    again.load().await;
    let restored = again.first_poll_at("480p|81|true", 0);
    assert!((restored - learned).abs() < 500, "{learned} then {restored}");
}

#[tokio::test]
async fn no_poll_is_planned_past_the_records_lifetime_and_an_expiry_brings_polls_sooner() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("s.db")).await.unwrap();
    let s = Schedule::new(
        store,
        Timing {
            expected: Duration::from_secs(54),
            result_lifetime: Duration::from_secs(6),
            ..Timing::default()
        },
    );
    let first = s.first_poll_at("c|81|true", 0);
    assert!(first <= 4_800, "before 80 % of a 6 s lifetime: {first}");
    s.on_expired("c|81|true", 1, 6_100);
    assert!(s.first_poll_at("c|81|true", 0) < first, "sooner after an expiry");
}

#[tokio::test]
async fn backoff_is_capped_full_jitter() {
    let (_d, _store, s) = schedule(1000).await;
    for errors in 0..30 {
        assert!(s.backoff(errors) <= Duration::from_secs(60));
    }
    let samples: Vec<Duration> = (0..200).map(|_| s.backoff(3)).collect();
    assert!(
        samples.iter().any(|d| *d < Duration::from_secs(2)),
        "full jitter reaches low values"
    );
}
