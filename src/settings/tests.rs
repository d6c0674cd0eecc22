//! Resolution across every source, in precedence order.

use std::path::{Path, PathBuf};

use super::*;
use crate::cmd::{parse, Cli, Parsed};

fn resolve_in(cwd: &Path, args: &[&str]) -> Result<(Cli, Resolved), Parsed> {
    parse(std::iter::once("wanbatch").chain(args.iter().copied()), cwd)
}

fn run_settings(cwd: &Path, args: &[&str]) -> Result<RunSettings, String> {
    match resolve_in(cwd, args) {
        Ok((_, r)) => RunSettings::from(&r),
        Err(Parsed::Usage(m)) => Err(m),
        Err(Parsed::Clap(e)) => Err(e.to_string()),
    }
}

#[tokio::test]
async fn flags_beat_the_file_which_beats_the_stored_settings_which_beat_the_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("c.db");
    // A campaign that was run with --rpm 5 --price 0.1 --out videos.
    let store = crate::store::Store::open(&db).await.unwrap();
    let stored = Layer {
        rpm: Some(5),
        price: Some(0.1),
        concurrency: Some(3),
        out: Some(dir.path().join("videos")),
        ..Layer::default()
    };
    store.save_settings(&stored.to_json(true)).await.unwrap();
    store.close().await;
    let db_arg = db.to_str().unwrap();

    let s = run_settings(dir.path(), &["run", "--db", db_arg]).unwrap();
    assert_eq!(
        (s.rpm, s.price, s.concurrency),
        (5, Some(0.1), Some(3)),
        "a bare run resumes"
    );
    assert_eq!(s.out, dir.path().join("videos"));
    assert!(s.to_store.to_json(true).is_empty(), "nothing new to store");

    std::fs::write(dir.path().join("wanbatch.toml"), "rpm = 7\nprice = 0.2\n").unwrap();
    let s = run_settings(dir.path(), &["run", "--db", db_arg]).unwrap();
    assert_eq!(
        (s.rpm, s.price, s.concurrency),
        (7, Some(0.2), Some(3)),
        "the file beats stored"
    );

    let s = run_settings(dir.path(), &["run", "--db", db_arg, "--rpm", "9"]).unwrap();
    assert_eq!((s.rpm, s.price), (9, Some(0.2)), "a flag beats the file");
    assert_eq!(s.to_store.rpm, Some(9), "and is stored");

    // No database, no file: the defaults.
    let empty = tempfile::tempdir().unwrap();
    let s = run_settings(empty.path(), &["run"]).unwrap();
    assert_eq!(
        (s.rpm, s.out.clone(), s.db.clone()),
        (50, PathBuf::from("outputs"), PathBuf::from("wanbatch.db"))
    );
    assert_eq!(s.unreachable_after, DEFAULT_UNREACHABLE_AFTER);
}

#[test]
fn bad_values_are_named_by_where_they_came_from_and_nothing_is_created() {
    let dir = tempfile::tempdir().unwrap();
    let e = run_settings(dir.path(), &["run", "--rpm", "0"]).unwrap_err();
    assert!(
        e.starts_with("--rpm 0: expected a whole number of API requests per minute from 1 to 1000000"),
        "{e}"
    );
    let e = run_settings(dir.path(), &["run", "--rpm", "-1"]).unwrap_err();
    assert!(e.starts_with("--rpm -1: expected"), "{e}");
    let e = run_settings(dir.path(), &["run", "--max-cost", "5"]).unwrap_err();
    assert!(e.starts_with("--max-cost needs a price per video"), "{e}");
    std::fs::write(dir.path().join("wanbatch.toml"), "concurrency = 0\n").unwrap();
    let e = run_settings(dir.path(), &["status"]).unwrap_err();
    assert!(
        e.ends_with("wanbatch.toml: concurrency: expected a whole number of jobs ≥ 1, got 0"),
        "{e}"
    );
    std::fs::remove_file(dir.path().join("wanbatch.toml")).unwrap();
    let file = dir.path().join("out-is-a-file");
    std::fs::write(&file, b"x").unwrap();
    let e = run_settings(dir.path(), &["run", "--out", file.to_str().unwrap()]).unwrap_err();
    assert!(e.contains("expected a folder for the videos, but it is a file"), "{e}");
    assert!(!dir.path().join("wanbatch.db").exists());
}

#[test]
fn every_command_that_takes_a_setting_reads_the_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("wanbatch.toml"), "db = \"data/x.db\"\nout = \"vids\"\n").unwrap();
    for cmd in ["run", "import", "status", "export", "retry", "cancel", "report"] {
        let mut args = vec![cmd];
        if cmd == "import" {
            args.push("m.csv");
        }
        let (_, r) = resolve_in(dir.path(), &args).unwrap_or_else(|_| panic!("{cmd}"));
        assert_eq!(r.db, dir.path().join("data/x.db"), "{cmd}");
    }
    let (_, r) = resolve_in(dir.path(), &["report"]).unwrap();
    assert_eq!(out_of(&r), dir.path().join("vids"));
}
