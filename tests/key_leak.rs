//! The API key must appear nowhere but in the `x-api-key` header sent to Segmind's own hosts (the
//! API, the request history, the upload): not in logs at `RUST_LOG=trace` (every target: ours,
//! hyper, reqwest, sqlx), not in stdout, not in the database and its WAL, not in exports, not in
//! OUT, not at the video or image host — including on a run with rate limits, server errors, a
//! lost answer looked up in the history, a local image uploaded, a broken download, a failed
//! job, and a `reconcile`.

mod common;

use std::path::Path;

use common::*;
use wanbatch::fake::{FaultKind, FaultTarget};

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

fn assert_no_key(what: &str, bytes: &[u8]) {
    let key = KEY.as_bytes();
    assert!(
        !bytes.windows(key.len()).any(|w| w == key),
        "the API key appears in {what}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_appears_in_no_log_output_database_or_export_at_trace_level() {
    let env = Env::new(fast_fake()).await;
    let faults = || {
        env.fake
            .push_fault(fault(FaultTarget::Submit, FaultKind::Status(429), 2));
        env.fake
            .push_fault(fault(FaultTarget::Submit, FaultKind::AcceptThenStatus(502), 1));
        env.fake
            .push_fault(fault(FaultTarget::Result, FaultKind::Status(503), 2));
        env.fake.push_fault(fault(FaultTarget::Result, FaultKind::Drop, 1));
        env.fake
            .push_fault(fault(FaultTarget::Download, FaultKind::Truncate(1000), 1));
    };
    let mut logs = Vec::new();
    std::fs::write(env.path("local.png"), b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR local").unwrap();
    for (n, format) in ["text", "json"].into_iter().enumerate() {
        faults();
        // Distinct jobs per run, each with one that fails at Segmind.
        let rows: String = manifest(4).lines().skip(1).map(|l| format!("r{n}{l}\n")).collect();
        let m = env.write(
            &format!("jobs{n}.csv"),
            &format!(
                "id,image,prompt,num_frames,resolution,seed\n{rows}bad{n},https://img.example/f.jpg,[fail] storm {n},81,480p,1\n\
                 pic{n},local.png,a local picture {n},81,480p,2\n"
            ),
        );
        // A short rate window: the 429s carry no reset hint, and the default pause is one window.
        let mut cmd = env.run_cmd(&[&m], &["--log-format", format, "--rate-window-ms", "200"]);
        cmd.env("RUST_LOG", "trace");
        let out = finish(cmd).await;
        assert_eq!(out.status.code(), Some(1), "one job fails: {}", text(&out));
        logs.push((format!("run --log-format {format}"), out));
    }
    // The logs really are at trace level, HTTP and SQL included: otherwise this proves nothing.
    let stderr = String::from_utf8_lossy(&logs[0].1.stderr).into_owned();
    for target in ["TRACE", "hyper_util", "sqlx", "wanbatch"] {
        assert!(stderr.contains(target), "no {target} lines in the trace log");
    }

    for args in [
        vec!["export", "--format", "csv"],
        vec!["export", "--format", "jsonl"],
        vec!["status"],
        vec!["reconcile"],
    ] {
        let mut cmd = env.bin();
        cmd.args(&args)
            .args(["--db", env.db().to_str().unwrap()])
            .env("RUST_LOG", "trace");
        let out = finish(cmd).await;
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", text(&out));
        logs.push((args.join(" "), out));
    }
    for format in ["csv", "jsonl"] {
        let mut cmd = env.bin();
        let dest = env.out().join(format!("export.{format}"));
        cmd.args(["export", "--format", format, "--db", env.db().to_str().unwrap()])
            .arg("--output")
            .arg(&dest);
        assert_eq!(finish(cmd).await.status.code(), Some(0));
    }

    for (what, out) in &logs {
        assert_no_key(&format!("the stdout of {what}"), &out.stdout);
        assert_no_key(&format!("the stderr of {what}"), &out.stderr);
    }
    // Every file the runs left: the database, its -wal and -shm, the lock, OUT and the exports.
    let files = files_under(env.dir.path());
    let names: Vec<String> = files
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for must in ["w.db", "export.csv", "export.jsonl", "r0j0.mp4", "r1j3.mp4"] {
        assert!(names.iter().any(|n| n == must), "{must} missing from {names:?}");
    }
    for f in &files {
        assert_no_key(&f.display().to_string(), &std::fs::read(f).unwrap());
    }
    let stats = env.fake.stats();
    assert_eq!(
        stats.cdn_requests_with_key, 0,
        "the key never reaches the video or image host"
    );
    assert!(
        stats.history_calls > 0 && stats.uploads > 0,
        "the history and the upload were used"
    );
    assert!(
        stats.api_requests.iter().all(|r| r.had_key),
        "every call to Segmind's hosts carries the key"
    );
    let jobs = env.export().await;
    assert_eq!(jobs.iter().filter(|j| j["state"] == "done").count(), 10, "{jobs:#?}");
}

/// The cloud credentials of an `--out s3://…` bucket (secret key and session token, from the
/// environment) appear in no log at trace level, no output, no database file and no object;
/// and the Segmind key never reaches the object store either. Skipped without moto, unless
/// `WANBATCH_REQUIRE_S3=1`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloud_credentials_appear_in_no_log_database_or_object() {
    let Some(moto) = wanbatch::motolocal::for_tests("cloud_credentials_appear_in_no_log_database_or_object").await
    else {
        return;
    };
    moto.create_bucket("leak").await.unwrap();
    const TOKEN: &str = "session-token-7c1d-must-not-leak";
    let env = Env::new(fast_fake()).await;
    let m = env.write("jobs.csv", &manifest(3));
    let mut logs = Vec::new();
    for args in [
        vec!["run", m.to_str().unwrap()],
        vec!["report"],
        vec!["export"],
        vec!["status"],
    ] {
        let mut cmd = env.bin();
        cmd.args(&args)
            .args(["--db", env.db().to_str().unwrap()])
            .env("RUST_LOG", "trace")
            .env("AWS_SESSION_TOKEN", TOKEN);
        if args[0] == "run" {
            cmd.args(["--out", "s3://leak/p", "--rpm", "6000", "--expected-duration", "0.3s"]);
            cmd.args(["--min-poll-gap-ms", "30", "--backoff-ms", "20"]);
        }
        for (k, v) in moto.env() {
            cmd.env(k, v);
        }
        let out = finish(cmd).await;
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", text(&out));
        logs.push(out);
    }
    let stderr = String::from_utf8_lossy(&logs[0].stderr).into_owned();
    assert!(
        stderr.contains("TRACE") && stderr.contains("hyper_util"),
        "the log is at trace level"
    );
    let secrets: [(&str, &[u8]); 3] = [
        ("the secret access key", wanbatch::motolocal::SECRET_KEY.as_bytes()),
        ("the session token", TOKEN.as_bytes()),
        ("the API key", KEY.as_bytes()),
    ];
    let has = |bytes: &[u8], s: &[u8]| bytes.windows(s.len()).any(|w| w == s);
    let mut places: Vec<(String, Vec<u8>)> = Vec::new();
    for (i, out) in logs.into_iter().enumerate() {
        places.push((format!("stdout {i}"), out.stdout));
        places.push((format!("stderr {i}"), out.stderr));
    }
    for f in files_under(env.dir.path()) {
        places.push((f.display().to_string(), std::fs::read(&f).unwrap()));
    }
    let objects = moto.objects("leak").await.unwrap();
    assert_eq!(objects.len(), 7, "3 videos, 3 sidecars, the report: {objects:?}");
    for (key, _) in objects {
        places.push((format!("object {key}"), moto.get("leak", &key).await.unwrap().unwrap()));
    }
    for (what, bytes) in &places {
        for (secret, s) in &secrets {
            assert!(!has(bytes, s), "{secret} appears in {what}");
        }
    }
}
