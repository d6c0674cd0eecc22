//! Store tests on a real SQLite file: transitions apply only from the state they expect.

use super::*;
use crate::manifest::{self, Row};
use std::io::Write;

async fn store_with(rows_csv: &str) -> (tempfile::TempDir, Store, Vec<Row>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.csv");
    std::fs::File::create(&path)
        .unwrap()
        .write_all(rows_csv.as_bytes())
        .unwrap();
    let mut rows = Vec::new();
    let errs = manifest::read_files(&[path], |r| rows.push(r));
    assert!(errs.is_empty(), "{errs:?}");
    let store = Store::open(&dir.path().join("t.db")).await.unwrap();
    (dir, store, rows)
}

const TWO: &str = "id,image,prompt\na,https://i.example/a.png,one\nb,https://i.example/b.png,two\n";

async fn state_of(store: &Store, id: &str) -> String {
    store
        .jobs(None)
        .await
        .unwrap()
        .into_iter()
        .find(|j| j.id == id)
        .unwrap()
        .state
}

#[tokio::test]
async fn import_is_idempotent_and_refuses_changed_rows() {
    let (dir, store, rows) = store_with(TWO).await;
    assert_eq!(store.import(&rows).await.unwrap().unwrap().inserted, 2);
    let again = store.import(&rows).await.unwrap().unwrap();
    assert_eq!((again.inserted, again.unchanged), (0, 2));
    // Same id, other parameters: a conflict, and nothing written.
    let path = dir.path().join("changed.csv");
    std::fs::write(
        &path,
        "id,image,prompt\nc,https://i.example/c.png,new\na,https://i.example/a.png,CHANGED\n",
    )
    .unwrap();
    let mut changed = Vec::new();
    manifest::read_files(&[path], |r| changed.push(r));
    let conflicts = store.import(&changed).await.unwrap().unwrap_err();
    assert_eq!(conflicts.len(), 1);
    assert_eq!(conflicts[0].id, "a");
    assert!(conflicts[0].to_string().contains("changed.csv:3"));
    assert_eq!(
        store.jobs(None).await.unwrap().len(),
        2,
        "the new row c must not be imported either"
    );
}

#[tokio::test]
async fn submit_window_is_recorded_and_recovered_as_unknown() {
    let (_d, store, rows) = store_with(TWO).await;
    store.import(&rows).await.unwrap().unwrap();
    let seq = store.due_submits(now_ms(), 10).await.unwrap()[0].seq;
    let n = store.claim_submit(seq).await.unwrap().expect("claimed");
    assert_eq!(n, 1);
    assert!(
        store.claim_submit(seq).await.unwrap().is_none(),
        "a job is claimed once"
    );
    // The process "dies" here: the intent is on disk, the answer is not.
    assert_eq!(store.recover_interrupted_submits().await.unwrap(), 1);
    assert_eq!(state_of(&store, "a").await, "unknown");
    let attempts = store.attempts_of(seq).await.unwrap();
    assert_eq!(attempts[0].outcome.as_deref(), Some("unknown"));
    // A late answer from the dead worker cannot overwrite the recovered state.
    assert!(!store.record_accepted(seq, n, "rid", "s", "r", 0).await.unwrap());
    assert_eq!(store.resubmit_unknown().await.unwrap(), 1);
    let job = store.jobs(None).await.unwrap().remove(0);
    assert_eq!(
        (job.state.as_str(), job.resubmits_unknown, job.maybe_billed_twice),
        ("pending", 1, 1)
    );
}

#[tokio::test]
async fn a_job_walks_the_happy_path_and_stale_writes_do_nothing() {
    let (_d, store, rows) = store_with(TWO).await;
    store.import(&rows).await.unwrap().unwrap();
    let seq = store.due_submits(now_ms(), 10).await.unwrap()[0].seq;
    let n = store.claim_submit(seq).await.unwrap().unwrap();
    assert!(store
        .record_accepted(seq, n, "r1", "http://x/s", "http://x/r", 0)
        .await
        .unwrap());
    assert_eq!(store.in_flight().await.unwrap(), 1);
    let polls = store.due_polls(now_ms(), 10).await.unwrap();
    assert_eq!(polls[0].request_id, "r1");
    assert!(store.record_pending(seq, "r1", now_ms() + 60_000).await.unwrap());
    assert!(
        store.due_polls(now_ms(), 10).await.unwrap().is_empty(),
        "not due before its time"
    );
    assert!(
        !store.record_failed(seq, "other-request", "x").await.unwrap(),
        "guarded by request id"
    );
    let c = Completed {
        output_url: "http://cdn/v.mp4",
        output_size: Some(10),
        cost: Some(0.05),
    };
    assert!(store.record_completed(seq, "r1", c).await.unwrap());
    assert!(!store.record_pending(seq, "r1", 0).await.unwrap(), "no longer running");
    assert!(store
        .record_downloaded(seq, "r1", "out/a.mp4", 10, "abc")
        .await
        .unwrap());
    let job = store.jobs(Some(JobState::Done)).await.unwrap().remove(0);
    assert_eq!((job.polls, job.bytes, job.cost), (2, Some(10), Some(0.05)));
    assert_eq!(
        store.attempts_of(seq).await.unwrap()[0].outcome.as_deref(),
        Some("completed")
    );
}

#[tokio::test]
async fn expiry_sends_the_job_back_counted() {
    let (_d, store, rows) = store_with(TWO).await;
    store.import(&rows).await.unwrap().unwrap();
    let seq = store.due_submits(now_ms(), 10).await.unwrap()[0].seq;
    let n = store.claim_submit(seq).await.unwrap().unwrap();
    store.record_accepted(seq, n, "r1", "s", "r", 0).await.unwrap();
    assert!(store
        .record_expired(seq, JobState::Running, "r1", "gone")
        .await
        .unwrap());
    let job = store.jobs(None).await.unwrap().remove(0);
    assert_eq!(
        (job.state.as_str(), job.resubmits_expired, job.attempts),
        ("pending", 1, 1)
    );
    assert_eq!(store.claim_submit(seq).await.unwrap(), Some(2), "second attempt");
    assert_eq!(state_of(&store, "b").await, "pending");
}

#[tokio::test]
async fn counts_list_every_state() {
    let (_d, store, rows) = store_with(TWO).await;
    store.import(&rows).await.unwrap().unwrap();
    let counts = store.counts().await.unwrap();
    assert_eq!(counts.len(), JobState::ALL.len());
    assert_eq!(counts[0], (JobState::Pending, 2));
    assert!(counts[1..].iter().all(|(_, n)| *n == 0));
}

#[tokio::test]
async fn retry_moves_failed_and_unknown_back_counted_by_cause() {
    let (_d, store, rows) = store_with(TWO).await;
    store.import(&rows).await.unwrap().unwrap();
    let jobs = store.due_submits(now_ms(), 10).await.unwrap();
    let (a, b) = (jobs[0].seq, jobs[1].seq);
    let n = store.claim_submit(a).await.unwrap().unwrap();
    store.record_accepted(a, n, "ra", "s", "r", 0).await.unwrap();
    store.record_failed(a, "ra", "boom").await.unwrap();
    let n = store.claim_submit(b).await.unwrap().unwrap();
    store
        .record_submit_ended(b, n, JobState::Unknown, "unknown", "reset", 0)
        .await
        .unwrap();
    assert_eq!(store.retry(RetryWhich::Id("nope")).await.unwrap(), 0);
    assert_eq!(store.retry(RetryWhich::Failed).await.unwrap(), 1);
    assert_eq!(store.retry(RetryWhich::Id("b")).await.unwrap(), 1);
    let jobs = store.jobs(None).await.unwrap();
    assert!(
        jobs.iter().all(|j| j.state == "pending" && j.error.is_none()),
        "{jobs:?}"
    );
    assert_eq!((jobs[0].resubmits_failed, jobs[0].maybe_billed_twice), (1, 0));
    assert_eq!((jobs[1].resubmits_unknown, jobs[1].maybe_billed_twice), (1, 1));
    // Pages of one job each still hand every job its own attempts.
    let mut pages = store.job_pages(None, true).await.unwrap();
    let mut seen = Vec::new();
    loop {
        let page = pages.next(1).await.unwrap();
        if page.is_empty() {
            break;
        }
        seen.extend(page.into_iter().map(|(j, a)| (j.id, a.len())));
    }
    assert_eq!(seen, vec![("a".to_string(), 1), ("b".to_string(), 1)]);
}
