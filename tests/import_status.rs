//! The streaming import, `status` and `export` through the real binary on a few thousand rows:
//! same ids and counts as the in-memory loader, all-or-nothing, capped error output, status
//! figures, and status beside an open write transaction.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use sqlx::Connection;
use wanbatch::cmd::status::Report;
use wanbatch::store::{now_ms, Completed, Store};

fn wanbatch(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wanbatch"))
        .args(args)
        .env("RUST_LOG", "off")
        .output()
        .expect("run wanbatch")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `n` rows: every 10th repeats the row before it (automatic ids -2), every 7th has an explicit id.
fn manifest(dir: &Path, name: &str, n: usize) -> PathBuf {
    let mut text = String::from("id,image,prompt,seed\n");
    for i in 0..n {
        let k = if i % 10 == 9 { i - 1 } else { i };
        let id = if i % 7 == 0 { format!("job{i}") } else { String::new() };
        text += &format!("{id},https://img.example/{k}.jpg,a prompt about picture number {k},{k}\n");
    }
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn exported_ids(db: &Path) -> Vec<String> {
    let out = wanbatch(&["export", "--format", "jsonl", "--db", s(db)]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

#[test]
fn thousands_of_rows_import_with_the_loaders_ids_once_and_all_or_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let m = manifest(dir.path(), "m.csv", 3000);
    let db = dir.path().join("w.db");

    // Dry run on a database that does not exist: counts, and creates nothing.
    let out = wanbatch(&["import", "--dry-run", "--db", s(&db), s(&m)]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("3000 would be new jobs"), "{}", text(&out));
    assert!(!db.exists(), "a dry run creates no database");

    let out = wanbatch(&["import", "--db", s(&db), s(&m)]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains("imported 3000 new jobs (0 already present)"),
        "{}",
        text(&out)
    );
    let mut expected = Vec::new();
    assert!(wanbatch::manifest::read_files(&[&m], |r| expected.push(r.id)).is_empty());
    assert!(
        expected.iter().any(|id| id.ends_with("-2")),
        "the manifest has identical rows"
    );
    assert_eq!(exported_ids(&db), expected, "same ids, in manifest order");

    // Re-import adds nothing.
    let out = wanbatch(&["import", "--db", s(&db), s(&m)]);
    assert!(
        text(&out).contains("imported 0 new jobs (3000 already present)"),
        "{}",
        text(&out)
    );

    // One new row and one changed row: a conflict, and the new row is not written either.
    let changed = dir.path().join("changed.csv");
    std::fs::write(
        &changed,
        "id,image,prompt\nfresh,https://img.example/new.jpg,new\njob7,https://img.example/7.jpg,CHANGED\n",
    )
    .unwrap();
    for dry in [true, false] {
        let mut args = vec!["import", "--db", s(&db), s(&changed)];
        if dry {
            args.insert(1, "--dry-run");
        }
        let out = wanbatch(&args);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        assert!(
            text(&out).contains("changed.csv:3: id: \"job7\" already exists in the database with different parameters"),
            "{}",
            text(&out)
        );
    }
    assert_eq!(exported_ids(&db).len(), 3000, "nothing written");

    // A dry run of good new rows writes nothing.
    std::fs::write(&changed, "id,image,prompt\nfresh,https://img.example/new.jpg,new\n").unwrap();
    let out = wanbatch(&["import", "--dry-run", "--db", s(&db), s(&m), s(&changed)]);
    assert!(
        text(&out).contains("1 would be new jobs, 3000 already in"),
        "{}",
        text(&out)
    );
    assert_eq!(exported_ids(&db).len(), 3000, "a dry run writes nothing");
}

#[test]
fn errors_name_file_and_line_are_capped_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let mut bad = String::from("id,image,prompt,num_frames\n");
    for i in 0..250 {
        bad += &format!(
            "b{i},https://img.example/{i}.jpg,p,{}\n",
            if i % 2 == 0 { "81" } else { "999" }
        );
    }
    bad += "b0,https://img.example/again.jpg,p,81\n"; // line 252: an id used twice
    let path = dir.path().join("bad.csv");
    std::fs::write(&path, bad).unwrap();
    let good = manifest(dir.path(), "good.csv", 50);
    let db = dir.path().join("w.db");
    let out = wanbatch(&["import", "--db", s(&db), s(&good), s(&path)]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = err.lines().collect();
    assert!(
        lines[0].contains("bad.csv:3: num_frames: expected a whole number"),
        "{err}"
    );
    assert_eq!(lines.iter().filter(|l| l.contains("bad.csv:")).count(), 100, "{err}");
    // 125 bad frame counts and one id used twice: 100 listed, 26 counted.
    assert!(err.contains("… and 26 more errors"), "{err}");
    assert!(err.contains("126 error(s) in"), "{err}");
    assert!(!db.exists(), "nothing written: not even a database");

    // The id used twice alone: named with both places.
    let dup = dir.path().join("dup.csv");
    std::fs::write(
        &dup,
        "id,image,prompt\nx,https://i.example/1.jpg,a\nx,https://i.example/2.jpg,b\n",
    )
    .unwrap();
    let out = wanbatch(&["import", "--db", s(&db), s(&dup)]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("dup.csv:3: id: \"x\" is used twice: here and at") && text(&out).contains("dup.csv:2"),
        "{}",
        text(&out)
    );
}

#[tokio::test]
async fn status_sums_counts_spend_oldest_and_eta_and_reads_beside_a_writer() {
    let dir = tempfile::tempdir().unwrap();
    let m = manifest(dir.path(), "m.csv", 30);
    let db = dir.path().join("w.db");
    assert_eq!(wanbatch(&["import", "--db", s(&db), s(&m)]).status.code(), Some(0));
    let store = Store::open(&db).await.unwrap();

    let report = Report::gather(&store, now_ms()).await.unwrap();
    assert_eq!(report.total(), 30);
    assert_eq!(report.eta_secs(), None, "no completion yet: ETA unknown");
    assert_eq!(report.to_json()["eta"]["seconds"], serde_json::Value::Null);
    assert!(report.to_text(&db).contains("ETA: unknown for 30 jobs"));
    let oldest = report.oldest.clone().expect("an oldest waiting job");
    assert_eq!(oldest.id, "job0", "the first row of the manifest");

    // Take the first 3 jobs through to done at $0.05 each.
    for _ in 0..3 {
        let w = store.due_submits(now_ms(), 1).await.unwrap().remove(0);
        let n = store.claim_submit(w.seq).await.unwrap().unwrap();
        let rid = format!("r{}", w.seq);
        assert!(store
            .record_accepted(w.seq, n, &rid, "s", "r", 0)
            .await
            .unwrap()
            .is_some());
        let c = Completed {
            output_url: "http://cdn/v.mp4",
            output_size: Some(1),
            cost: Some(0.05),
        };
        assert!(store.record_completed(w.seq, &rid, c).await.unwrap().is_some());
        assert!(store
            .record_downloaded(w.seq, &rid, "o.mp4", 1, "x", &Default::default(), None)
            .await
            .unwrap()
            .is_some());
    }
    // As seen a minute later: 3 done per minute, 27 left, so 9 minutes.
    let report = Report::gather(&store, now_ms() + 60_000).await.unwrap();
    let json = report.to_json();
    assert_eq!(json["states"]["done"], 3);
    assert_eq!(json["states"]["pending"], 27);
    assert_eq!(json["attempts"], 3);
    assert!((json["cost"].as_f64().unwrap() - 0.15).abs() < 1e-9, "{json}");
    assert_eq!(json["cost_jobs"], 3);
    assert_eq!(json["eta"]["completed_last_10_min"], 3);
    let eta = json["eta"]["seconds"].as_f64().expect("an ETA");
    assert!((530.0..=545.0).contains(&eta), "{json}");
    assert_ne!(json["oldest_waiting"]["id"], "job0", "job0 is done: {json}");
    for key in [
        "total",
        "resubmits",
        "maybe_billed_twice",
        "maybe_billed_twice_count",
        "oldest_waiting",
        "videos_mismatched",
        "review",
    ] {
        assert!(json.get(key).is_some(), "{key} missing: {json}");
    }
    assert_eq!(json["resubmits"]["rejected"], 0, "{json}");
    assert_eq!(json["review"], serde_json::json!({"keep": 0, "reject": 0}));
    // Completions older than the window give no rate.
    let later = Report::gather(&store, now_ms() + 3_600_000).await.unwrap();
    assert_eq!(later.eta_secs(), None);

    // Another process holds the write lock mid-transaction: status still answers, at once.
    let mut writer = sqlx::SqliteConnection::connect(&format!("sqlite://{}", s(&db)))
        .await
        .unwrap();
    sqlx::query("BEGIN IMMEDIATE").execute(&mut writer).await.unwrap();
    sqlx::query("UPDATE jobs SET state = 'failed' WHERE id = 'job7'")
        .execute(&mut writer)
        .await
        .unwrap();
    let out = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::task::spawn_blocking(move || wanbatch(&["status", "--json", "--db", db.to_str().unwrap()])),
    )
    .await
    .expect("status must not wait for the writer")
    .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["states"]["failed"], 0, "uncommitted writes are not seen");
    sqlx::query("ROLLBACK").execute(&mut writer).await.unwrap();
    store.close().await;
}

#[test]
fn ids_differing_only_in_case_are_refused_by_the_streaming_import_naming_both_lines() {
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("m.csv");
    std::fs::write(
        &m,
        "id,image,prompt\nClip,https://i.example/a.png,one\nother,https://i.example/b.png,two\nclip,https://i.example/c.png,three\n",
    )
    .unwrap();
    let db = dir.path().join("w.db");
    let out = wanbatch(&["import", s(&m), "--db", s(&db)]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let t = text(&out);
    assert!(
        t.contains(&format!(
            "{}:4: id: \"clip\" is \"Clip\" of {}:2 but for case",
            m.display(),
            m.display()
        )),
        "{t}"
    );
    assert!(!db.exists(), "nothing written");
}

/// The direct import (rows straight into the database) gives up to the staged import on any
/// problem: an id repeated where its first row is an existing, unchanged job is still refused
/// naming both lines, a conflict in a later batch writes nothing, and rows appended to an
/// imported manifest are added with the others left as they are.
#[test]
fn the_direct_import_gives_up_to_the_staged_one_on_any_problem_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("w.db");
    let first = dir.path().join("a.csv");
    std::fs::write(&first, "id,image,prompt\nx,https://i.example/1.jpg,a\n").unwrap();
    assert_eq!(wanbatch(&["import", "--db", s(&db), s(&first)]).status.code(), Some(0));

    // `x` exists (same parameters) and is used twice: refused, both lines named.
    let twice = dir.path().join("b.csv");
    std::fs::write(
        &twice,
        "id,image,prompt\nx,https://i.example/1.jpg,a\ny,https://i.example/2.jpg,b\nx,https://i.example/1.jpg,a\n",
    )
    .unwrap();
    let out = wanbatch(&["import", "--db", s(&db), s(&twice)]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("b.csv:4: id: \"x\" is used twice: here and at"),
        "{}",
        text(&out)
    );
    assert!(text(&out).contains("b.csv:2"), "{}", text(&out));

    // 3000 new rows, then a conflict in the last batch: nothing written.
    let mut big = String::from("id,image,prompt\n");
    for i in 0..3000 {
        big += &format!("n{i},https://i.example/n{i}.jpg,p{i}\n");
    }
    big += "x,https://i.example/other.jpg,changed\n";
    let conflict = dir.path().join("c.csv");
    std::fs::write(&conflict, &big).unwrap();
    let out = wanbatch(&["import", "--db", s(&db), s(&conflict)]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("already exists in the database with different parameters"),
        "{}",
        text(&out)
    );
    assert_eq!(exported_ids(&db), ["x"], "nothing of the refused import was written");

    // A manifest error after 3000 good rows into a new database: no database is left.
    let bad_db = dir.path().join("new.db");
    let bad = dir.path().join("d.csv");
    std::fs::write(
        &bad,
        format!("{}n9999,https://i.example/z.jpg,\n", &big[..big.rfind("x,").unwrap()]),
    )
    .unwrap();
    let out = wanbatch(&["import", "--db", s(&bad_db), s(&bad)]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("d.csv:3002: prompt: is required"), "{}", text(&out));
    assert!(!bad_db.exists(), "nothing written: not even a database");

    // Appending rows: the old ones stay, the new ones are added after them.
    std::fs::write(
        &twice,
        "id,image,prompt\nx,https://i.example/1.jpg,a\ny,https://i.example/2.jpg,b\n",
    )
    .unwrap();
    let out = wanbatch(&["import", "--db", s(&db), s(&twice)]);
    assert!(
        text(&out).contains("imported 1 new jobs (1 already present)"),
        "{}",
        text(&out)
    );
    assert_eq!(exported_ids(&db), ["x", "y"]);
}
