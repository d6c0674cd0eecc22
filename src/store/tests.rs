//! The store's contract, on both backends: each test runs on a real SQLite file and, where a
//! PostgreSQL server can be started (`crate::pglocal`; mandatory with `WANBATCH_REQUIRE_PG=1`),
//! on a fresh PostgreSQL database — imports, transitions that apply only from the state they
//! expect, recovery, retry, cancel and pages alike.

use super::*;
use crate::manifest::{self, Row};
use std::io::Write;

/// The databases a test runs on: SQLite (None), and PostgreSQL where a server can be started.
async fn backends(test: &str) -> Vec<Option<String>> {
    let mut dbs = vec![None];
    if let Some(server) = crate::pglocal::shared_for_tests(test).await {
        dbs.push(Some(server.fresh_database(&test[..test.len().min(63)]).await.unwrap()));
    }
    dbs
}

/// A store on `db` (SQLite in the test's folder when None) and the rows of `rows_csv`.
async fn store_on(db: &Option<String>, rows_csv: &str) -> (tempfile::TempDir, Store, Vec<Row>) {
    let (dir, store, rows) = store_with(rows_csv).await;
    match db {
        None => (dir, store, rows),
        Some(url) => {
            store.close().await;
            (dir, Store::open(std::path::Path::new(url)).await.unwrap(), rows)
        }
    }
}

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
    for db in backends("import_is_idempotent_and_refuses_changed_rows").await {
        let (dir, store, rows) = store_on(&db, TWO).await;
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
        store.close().await;
    }
}

#[tokio::test]
async fn submit_window_is_recorded_and_recovered_as_unknown() {
    for db in backends("submit_window_is_recorded_and_recovered_as_unknown").await {
        let (_d, store, rows) = store_on(&db, TWO).await;
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
        assert!(!store
            .record_accepted(seq, n, "rid", "s", "r", 0)
            .await
            .unwrap()
            .is_some());
        assert_eq!(store.resubmit_unknown().await.unwrap(), 1);
        let job = store.jobs(None).await.unwrap().remove(0);
        assert_eq!(
            (job.state.as_str(), job.resubmits_unknown, job.maybe_billed_twice),
            ("pending", 1, 1)
        );
        store.close().await;
    }
}

#[tokio::test]
async fn a_job_walks_the_happy_path_and_stale_writes_do_nothing() {
    for db in backends("a_job_walks_the_happy_path_and_stale_writes_do_nothing").await {
        let (_d, store, rows) = store_on(&db, TWO).await;
        store.import(&rows).await.unwrap().unwrap();
        let seq = store.due_submits(now_ms(), 10).await.unwrap()[0].seq;
        let n = store.claim_submit(seq).await.unwrap().unwrap();
        assert!(store
            .record_accepted(seq, n, "r1", "http://x/s", "http://x/r", 0)
            .await
            .unwrap()
            .is_some());
        assert_eq!(store.in_flight().await.unwrap(), 1);
        let polls = store.due_polls(now_ms(), 10).await.unwrap();
        assert_eq!(polls[0].request_id, "r1");
        assert!(store
            .record_pending(seq, "r1", now_ms() + 60_000)
            .await
            .unwrap()
            .is_some());
        assert!(
            store.due_polls(now_ms(), 10).await.unwrap().is_empty(),
            "not due before its time"
        );
        assert!(
            !store.record_failed(seq, "other-request", "x").await.unwrap().is_some(),
            "guarded by request id"
        );
        let c = Completed {
            output_url: "http://cdn/v.mp4",
            output_size: Some(10),
            cost: Some(0.05),
        };
        assert!(store.record_completed(seq, "r1", c).await.unwrap().is_some());
        assert!(
            !store.record_pending(seq, "r1", 0).await.unwrap().is_some(),
            "no longer running"
        );
        assert!(store
            .record_downloaded(seq, "r1", "out/a.mp4", 10, "abc", &Default::default(), None)
            .await
            .unwrap()
            .is_some());
        let job = store.jobs(Some(JobState::Done)).await.unwrap().remove(0);
        assert_eq!((job.polls, job.bytes, job.cost), (2, Some(10), Some(0.05)));
        assert_eq!(
            store.attempts_of(seq).await.unwrap()[0].outcome.as_deref(),
            Some("completed")
        );
        store.close().await;
    }
}

#[tokio::test]
async fn expiry_sends_the_job_back_counted() {
    for db in backends("expiry_sends_the_job_back_counted").await {
        let (_d, store, rows) = store_on(&db, TWO).await;
        store.import(&rows).await.unwrap().unwrap();
        let seq = store.due_submits(now_ms(), 10).await.unwrap()[0].seq;
        let n = store.claim_submit(seq).await.unwrap().unwrap();
        store.record_accepted(seq, n, "r1", "s", "r", 0).await.unwrap();
        assert!(store
            .record_expired(seq, JobState::Running, "r1", "gone")
            .await
            .unwrap()
            .is_some());
        let job = store.jobs(None).await.unwrap().remove(0);
        assert_eq!(
            (job.state.as_str(), job.resubmits_expired, job.attempts),
            ("pending", 1, 1)
        );
        assert_eq!(store.claim_submit(seq).await.unwrap(), Some(2), "second attempt");
        assert_eq!(state_of(&store, "b").await, "pending");
        store.close().await;
    }
}

#[tokio::test]
async fn counts_list_every_state() {
    for db in backends("counts_list_every_state").await {
        let (_d, store, rows) = store_on(&db, TWO).await;
        store.import(&rows).await.unwrap().unwrap();
        let counts = store.counts().await.unwrap();
        assert_eq!(counts.len(), JobState::ALL.len());
        assert_eq!(counts[0], (JobState::Pending, 2));
        assert!(counts[1..].iter().all(|(_, n)| *n == 0));
        store.close().await;
    }
}

#[tokio::test]
async fn retry_moves_failed_and_unknown_back_counted_by_cause() {
    for db in backends("retry_moves_failed_and_unknown_back_counted_by_cause").await {
        let (_d, store, rows) = store_on(&db, TWO).await;
        store.import(&rows).await.unwrap().unwrap();
        let jobs = store.due_submits(now_ms(), 10).await.unwrap();
        let (a, b) = (jobs[0].seq, jobs[1].seq);
        let n = store.claim_submit(a).await.unwrap().unwrap();
        store.record_accepted(a, n, "ra", "s", "r", 0).await.unwrap();
        store.record_failed(a, "ra", "boom").await.unwrap();
        let n = store.claim_submit(b).await.unwrap().unwrap();
        store
            .record_submit_ended(
                b,
                n,
                JobState::Unknown,
                crate::state::AttemptOutcome::Unknown,
                "reset",
                0,
            )
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
        store.close().await;
    }
}

#[tokio::test]
async fn retry_expired_takes_only_failed_jobs_whose_paid_video_was_never_fetched() {
    const THREE: &str = "id,image,prompt\nlost,https://i.example/a.png,one\nmodel,https://i.example/b.png,two\n\
                         wait,https://i.example/c.png,three\n";
    for db in backends("retry_expired_takes_only_failed_jobs_whose_paid_video_was_never_fetched").await {
        let (_d, store, rows) = store_on(&db, THREE).await;
        store.import(&rows).await.unwrap().unwrap();
        let jobs = store.due_submits(now_ms(), 10).await.unwrap();
        let (lost, model) = (jobs[0].seq, jobs[1].seq);
        // `lost`: COMPLETED at Segmind, then the download gave up.
        let n = store.claim_submit(lost).await.unwrap().unwrap();
        store.record_accepted(lost, n, "r1", "s", "r", 0).await.unwrap();
        let c = Completed {
            output_url: "http://cdn/v.mp4",
            output_size: None,
            cost: None,
        };
        store.record_completed(lost, "r1", c).await.unwrap();
        assert!(store
            .record_download_failed(lost, "r1", "gave up")
            .await
            .unwrap()
            .is_some());
        // `model`: FAILED at Segmind (no video was ever made).
        let n = store.claim_submit(model).await.unwrap().unwrap();
        store.record_accepted(model, n, "r2", "s", "r", 0).await.unwrap();
        store.record_failed(model, "r2", "Inference failed").await.unwrap();

        assert_eq!(store.retry(RetryWhich::Expired).await.unwrap(), 1);
        assert_eq!(state_of(&store, "lost").await, "pending");
        assert_eq!(state_of(&store, "model").await, "failed");
        assert_eq!(state_of(&store, "wait").await, "pending");
        let job = store.jobs(None).await.unwrap().remove(0);
        assert_eq!(
            (job.resubmits_expired, job.resubmits_failed, job.error),
            (1, 0, None),
            "counted as expired, not as a failure"
        );
        // Once resubmitted and accepted again, the job no longer qualifies (completed_at is reset).
        let n = store.claim_submit(lost).await.unwrap().unwrap();
        store.record_accepted(lost, n, "r3", "s", "r", 0).await.unwrap();
        store.record_failed(lost, "r3", "Inference failed").await.unwrap();
        assert_eq!(store.retry(RetryWhich::Expired).await.unwrap(), 0);
        // `--failed` takes the rest, each counted by its own cause.
        assert_eq!(store.retry(RetryWhich::Failed).await.unwrap(), 2);
        let jobs = store.jobs(None).await.unwrap();
        assert_eq!((jobs[0].resubmits_expired, jobs[0].resubmits_failed), (1, 1));
        assert_eq!((jobs[1].resubmits_expired, jobs[1].resubmits_failed), (0, 1));
        store.close().await;
    }
}

#[tokio::test]
async fn cancel_takes_only_pending_jobs_and_a_claim_or_the_cancel_wins() {
    const THREE: &str = "id,image,prompt\na,https://i.example/a.png,one\nb,https://i.example/b.png,two\n\
                         c,https://i.example/c.png,three\n";
    for db in backends("cancel_takes_only_pending_jobs_and_a_claim_or_the_cancel_wins").await {
        let (_d, store, rows) = store_on(&db, THREE).await;
        store.import(&rows).await.unwrap().unwrap();
        let jobs = store.due_submits(now_ms(), 10).await.unwrap();
        let (a, b) = (jobs[0].seq, jobs[1].seq);
        let n = store.claim_submit(a).await.unwrap().unwrap();
        store.record_accepted(a, n, "ra", "s", "r", 0).await.unwrap();
        assert_eq!(
            store.cancel(Some("a")).await.unwrap(),
            0,
            "a running job cannot be withdrawn"
        );
        assert_eq!(store.cancel(Some("nope")).await.unwrap(), 0);
        assert_eq!(store.cancel(Some("b")).await.unwrap(), 1);
        assert_eq!(store.cancel(Some("b")).await.unwrap(), 0, "already cancelled");
        // A dispatcher that read `b` as pending before the cancel cannot claim it now.
        assert_eq!(store.claim_submit(b).await.unwrap(), None);
        assert_eq!(store.cancel(None).await.unwrap(), 1, "every pending job: c");
        let job = store.jobs(Some(JobState::Cancelled)).await.unwrap();
        assert_eq!(job.len(), 2);
        assert_eq!(job[0].error.as_deref(), Some("cancelled by user"));
        assert_eq!(job[0].attempts, 0);
        assert_eq!(state_of(&store, "a").await, "running");
        assert!(store.due_submits(now_ms(), 10).await.unwrap().is_empty());
        // `retry --ids` takes a cancelled job back, counting no resubmit.
        assert_eq!(store.retry(RetryWhich::Id("b")).await.unwrap(), 1);
        let b = store.jobs(Some(JobState::Pending)).await.unwrap().remove(0);
        assert_eq!(
            (
                b.id.as_str(),
                b.resubmits_failed + b.resubmits_expired + b.resubmits_unknown,
                b.error
            ),
            ("b", 0, None)
        );
        store.close().await;
    }
}

#[cfg(unix)]
#[tokio::test]
async fn the_database_its_journals_and_the_run_lock_are_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("perm.db");
    let store = Store::open(&db).await.unwrap();
    // A write, with the pool still open: the -wal and -shm exist now.
    let (_, _, rows) = store_with(TWO).await;
    store.import(&rows).await.unwrap().unwrap();
    let _lock = crate::cmd::run::RunLock::acquire(&db).unwrap();
    for suffix in ["", "-wal", "-shm", ".lock"] {
        let p = std::path::PathBuf::from(format!("{}{suffix}", db.display()));
        assert_eq!(mode(&p), 0o600, "{}", p.display());
    }
    store.close().await;
    // A database created readable by others (an older version, another tool) is narrowed.
    let old = dir.path().join("old.db");
    std::fs::write(&old, b"").unwrap();
    std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o644)).unwrap();
    let store = Store::open(&old).await.unwrap();
    assert_eq!(mode(&old), 0o600);
    store.close().await;
}
