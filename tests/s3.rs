//! Videos streamed to object storage (`--out s3://bucket/prefix`), against a real S3-compatible
//! server started here on loopback (moto, see `wanbatch::motolocal`), through the real binary:
//! a campaign lands every video and sidecar; kill -9 mid-upload leaves no partial object and a
//! restart completes every video; 503 SlowDown is retried; a missing bucket stops the run before
//! any submit; a store that stays down stops the run with exit 4, every paid video resumable; a
//! campaign in PostgreSQL (its `object_uploads` twin) lands its videos too.
//! Skipped with a message when moto is not installed, unless `WANBATCH_REQUIRE_S3=1` (and the
//! PostgreSQL one without PostgreSQL, unless `WANBATCH_REQUIRE_PG=1`).

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wanbatch::motolocal::{self, MotoServer};

const BUCKET: &str = "videos";

/// `wanbatch run` writing to `out` (an s3:// URL) through the S3 endpoint `endpoint`.
fn s3_run(
    env: &Env,
    moto: &MotoServer,
    endpoint: &str,
    out: &str,
    manifests: &[&Path],
    extra: &[&str],
) -> tokio::process::Command {
    let mut cmd = env.bin();
    cmd.arg("run");
    for m in manifests {
        cmd.arg(m);
    }
    cmd.args(["--db", env.db().to_str().unwrap(), "--out", out]);
    cmd.args(["--rpm", "6000"]).args(FAST);
    cmd.args(extra);
    for (k, v) in moto.env() {
        cmd.env(k, v);
    }
    cmd.env("AWS_ENDPOINT_URL", endpoint);
    cmd
}

/// The bytes the fake served for job `id` (its request decides them).
fn served(env: &Env, job: &serde_json::Value, len: usize) -> Vec<u8> {
    env.served(job["request_id"].as_str().unwrap(), len)
}

/// Every job done, its video in the bucket byte for byte as served, its sidecar beside it
/// naming the same SHA-256, and no upload left incomplete.
async fn assert_bucket_complete(env: &Env, moto: &MotoServer, prefix: &str, n: usize, len: usize) {
    let jobs = env.export().await;
    assert_eq!(jobs.len(), n);
    for j in &jobs {
        assert_eq!(j["state"], "done", "{j}");
        let id = j["id"].as_str().unwrap();
        let key = format!("{prefix}/{id}.mp4");
        assert_eq!(j["output"].as_str().unwrap(), format!("s3://{BUCKET}/{key}"));
        let got = moto
            .get(BUCKET, &key)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{key} missing"));
        assert!(
            got == served(env, j, len),
            "{key}: bytes differ from what the fake served"
        );
        let sidecar = moto
            .get(BUCKET, &format!("{prefix}/{id}.json"))
            .await
            .unwrap()
            .expect("sidecar");
        let sidecar: serde_json::Value = serde_json::from_slice(&sidecar).unwrap();
        assert_eq!(sidecar["sha256"], j["sha256"]);
        assert_eq!(sidecar["bytes"].as_u64().unwrap(), got.len() as u64);
    }
    assert_eq!(moto.incomplete_uploads(BUCKET).await.unwrap(), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_campaign_lands_every_video_and_sidecar_in_the_bucket() {
    let Some(moto) = motolocal::for_tests("a_campaign_lands_every_video_and_sidecar_in_the_bucket").await else {
        return;
    };
    moto.create_bucket(BUCKET).await.unwrap();
    let env = Env::new(fast_fake()).await;
    let m = env.write("jobs.csv", &manifest(6));
    let out = finish(s3_run(
        &env,
        &moto,
        &moto.url(),
        &format!("s3://{BUCKET}/run-1/"),
        &[&m],
        &[],
    ))
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(stdout(&out).contains("videos in s3://videos/run-1"), "{}", text(&out));
    assert_bucket_complete(&env, &moto, "run-1", 6, 48 * 1024).await;
    // Only the videos and their sidecars: the write check left nothing behind.
    let keys: Vec<String> = moto
        .objects(BUCKET)
        .await
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(keys.len(), 12, "{keys:?}");
    assert!(keys.iter().all(|k| k.starts_with("run-1/j")), "{keys:?}");
    assert!(
        !env.path("run-1").exists() && !env.path("s3:").exists(),
        "no local copy"
    );
    // The report lands beside the videos (the campaign remembers its --out), linking them by name.
    let mut report = env.bin();
    report.args(["report", "--db", env.db().to_str().unwrap()]);
    for (k, v) in moto.env() {
        report.env(k, v);
    }
    let said = finish(report).await;
    assert_eq!(said.status.code(), Some(0), "{}", text(&said));
    assert!(
        stdout(&said).contains("s3://videos/run-1/report.html"),
        "{}",
        text(&said)
    );
    let page = moto
        .get(BUCKET, "run-1/report.html")
        .await
        .unwrap()
        .expect("report.html in the bucket");
    let page = String::from_utf8(page).unwrap();
    assert!(
        page.contains("j0.mp4") && page.contains("j5.json"),
        "videos linked by name"
    );
    assert!(!page.contains("s3:/"), "no local path to the bucket in the page");
    // Setting rejected takes aside is a folder's: refused for a bucket, nothing changed.
    let retry = cmd(&env, &["retry", "--rejected", "--db", env.db().to_str().unwrap()]).await;
    assert_eq!(retry.status.code(), Some(2), "{}", text(&retry));
    assert!(
        stderr(&retry).contains("not supported yet for a bucket"),
        "{}",
        text(&retry)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn videos_bigger_than_a_part_go_up_in_parts_and_arrive_whole() {
    let Some(moto) = motolocal::for_tests("videos_bigger_than_a_part_go_up_in_parts_and_arrive_whole").await else {
        return;
    };
    moto.create_bucket(BUCKET).await.unwrap();
    // 11 MiB: two full 5 MiB parts and a last one.
    let len = 11 * 1024 * 1024;
    let env = Env::new(wanbatch::fake::FakeConfig {
        video_len: len,
        ..fast_fake()
    })
    .await;
    let m = env.write("jobs.csv", &manifest(2));
    let out = finish(s3_run(&env, &moto, &moto.url(), "s3://videos/big", &[&m], &[])).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_bucket_complete(&env, &moto, "big", 2, len).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_upload_leaves_no_partial_object_and_a_restart_completes_every_video() {
    let Some(moto) = motolocal::for_tests("kill_9_mid_upload_leaves_no_partial_object").await else {
        return;
    };
    moto.create_bucket(BUCKET).await.unwrap();
    let len = 11 * 1024 * 1024;
    let env = Env::new(wanbatch::fake::FakeConfig {
        video_len: len,
        ..fast_fake()
    })
    .await;
    const N: usize = 4;
    let m = env.write("jobs.csv", &manifest(N));
    // Through a proxy that never lets an upload complete: the kill lands mid-upload for sure.
    let proxy = Proxy::start_with(moto.url(), 0, None, true).await;
    let mut child = s3_run(
        &env,
        &moto,
        &proxy.url(),
        "s3://videos/k",
        &[&m],
        &["--download-concurrency", "2"],
    )
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::null())
    .spawn()
    .unwrap();
    // Kill once two uploads have all their parts and wait for their completion.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while proxy.held.load(Ordering::SeqCst) < 2 {
        assert!(std::time::Instant::now() < deadline, "no upload reached its completion");
        assert!(child.try_wait().unwrap().is_none(), "the run ended early");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    // What the dead run left: an incomplete upload, invisible; every object there is whole.
    assert!(!moto.incomplete_uploads(BUCKET).await.unwrap().is_empty());
    for (key, size) in moto.objects(BUCKET).await.unwrap() {
        if key.ends_with(".mp4") {
            assert_eq!(size, len as u64, "{key} is a partial object");
        }
    }
    let submits = env.fake.stats().submits.len();
    // The restart aborts what was left and uploads those videos again.
    let out = finish(s3_run(&env, &moto, &moto.url(), "s3://videos/k", &[], &[])).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(stderr(&out).contains("aborted"), "{}", text(&out));
    assert_bucket_complete(&env, &moto, "k", N, len).await;
    assert_eq!(env.fake.stats().submits.len(), submits, "nothing bought again");
}

/// A TCP proxy in front of moto that answers `503 SlowDown` as S3 does when throttling: the
/// first `throttle` requests, and every request once `down` is set (after `pass_first`).
struct Proxy {
    port: u16,
    throttled: Arc<AtomicUsize>,
    /// Multipart completions held without an answer (`hold_completes`).
    held: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Proxy {
    /// 503 for the first `throttle` requests; with `down_after = Some(k)`, 503 for every request
    /// after the first `k` too.
    async fn start(upstream: String, throttle: usize, down_after: Option<usize>) -> Proxy {
        Proxy::start_with(upstream, throttle, down_after, false).await
    }

    /// `start`, and with `hold_completes` every CompleteMultipartUpload request is held for
    /// ever, unanswered: uploads get their parts but never complete.
    async fn start_with(upstream: String, throttle: usize, down_after: Option<usize>, hold_completes: bool) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let throttled = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(AtomicUsize::new(0));
        let held = Arc::new(AtomicUsize::new(0));
        let (t, h) = (throttled.clone(), held.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((conn, _)) = listener.accept().await else { return };
                let (t, h, seen, upstream) = (t.clone(), h.clone(), seen.clone(), upstream.clone());
                tokio::spawn(async move {
                    let hold = hold_completes.then_some(&*h);
                    let _ = serve(conn, &upstream, throttle, down_after, &t, &seen, hold).await;
                });
            }
        });
        Proxy {
            port,
            throttled,
            held,
            task,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// One request per connection: read it whole, then answer 503 or forward it (asking the
/// upstream to close) and copy the answer back.
async fn serve(
    mut conn: tokio::net::TcpStream,
    upstream: &str,
    throttle: usize,
    down_after: Option<usize>,
    throttled: &AtomicUsize,
    seen: &AtomicUsize,
    hold_completes: Option<&AtomicUsize>,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 64 * 1024];
    let head_end = loop {
        let n = conn.read(&mut tmp).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&tmp[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    while buf.len() < head_end + len {
        let n = conn.read(&mut tmp).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&tmp[..n]);
    }
    // CompleteMultipartUpload: `POST /bucket/key?uploadId=…` (the begin is `?uploads`).
    if let Some(held) = hold_completes.filter(|_| head.starts_with("POST ") && head.contains("uploadId=")) {
        held.fetch_add(1, Ordering::SeqCst);
        std::future::pending::<()>().await;
    }
    let i = seen.fetch_add(1, Ordering::SeqCst);
    if i < throttle || down_after.is_some_and(|k| i >= k) {
        throttled.fetch_add(1, Ordering::SeqCst);
        let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SlowDown</Code>\
                    <Message>Please reduce your request rate.</Message></Error>";
        let answer = format!(
            "HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        conn.write_all(answer.as_bytes()).await?;
        return conn.shutdown().await;
    }
    let mut lines: Vec<&str> = head[..head.len() - 4]
        .split("\r\n")
        .filter(|l| !l.to_ascii_lowercase().starts_with("connection:"))
        .collect();
    lines.push("Connection: close");
    let mut up = tokio::net::TcpStream::connect(upstream.trim_start_matches("http://")).await?;
    up.write_all(format!("{}\r\n\r\n", lines.join("\r\n")).as_bytes())
        .await?;
    up.write_all(&buf[head_end..]).await?;
    tokio::io::copy(&mut up, &mut conn).await?;
    conn.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_answers_are_retried_with_backoff() {
    let Some(moto) = motolocal::for_tests("throttling_answers_are_retried_with_backoff").await else {
        return;
    };
    moto.create_bucket(BUCKET).await.unwrap();
    let proxy = Proxy::start(moto.url(), 6, None).await;
    let env = Env::new(fast_fake()).await;
    let m = env.write("jobs.csv", &manifest(4));
    let out = finish(s3_run(&env, &moto, &proxy.url(), "s3://videos/t", &[&m], &[])).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(proxy.throttled.load(Ordering::SeqCst), 6, "every SlowDown was answered");
    assert_bucket_complete(&env, &moto, "t", 4, 48 * 1024).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_bucket_stops_the_run_before_any_submit() {
    let Some(moto) = motolocal::for_tests("a_missing_bucket_stops_the_run_before_any_submit").await else {
        return;
    };
    let env = Env::new(fast_fake()).await;
    let m = env.write("jobs.csv", &manifest(3));
    let out = finish(s3_run(&env, &moto, &moto.url(), "s3://no-such-bucket/x", &[&m], &[])).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(stderr(&out).contains("no-such-bucket"), "{}", text(&out));
    assert_eq!(env.fake.stats().submits.len(), 0, "nothing paid for");
    // A URL that is not a bucket is a usage error too, before anything.
    let bad = finish(s3_run(&env, &moto, &moto.url(), "ftp://host/x", &[&m], &[])).await;
    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad));
    assert!(stderr(&bad).contains("ftp://"), "{}", text(&bad));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_stays_down_stops_the_run_with_exit_4_and_every_paid_video_resumable() {
    let Some(moto) = motolocal::for_tests("a_store_that_stays_down_stops_the_run").await else {
        return;
    };
    moto.create_bucket(BUCKET).await.unwrap();
    // The write check (begin, abort) passes; every request after it is answered 503.
    let proxy = Proxy::start(moto.url(), 0, Some(2)).await;
    let env = Env::new(fast_fake()).await;
    const N: usize = 4;
    let m = env.write("jobs.csv", &manifest(N));
    let out = finish(s3_run(
        &env,
        &moto,
        &proxy.url(),
        "s3://videos/d",
        &[&m],
        &["--unreachable-after", "2s"],
    ))
    .await;
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert!(stderr(&out).contains("bucket videos"), "{}", text(&out));
    assert!(proxy.throttled.load(Ordering::SeqCst) > 1, "retried before giving up");
    let paid = env.fake.stats().submits.len();
    assert!(paid > 0);
    // The store is back: the same campaign finishes without buying anything again.
    let out = finish(s3_run(&env, &moto, &moto.url(), "s3://videos/d", &[], &[])).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(env.fake.stats().submits.len(), paid, "nothing bought again");
    assert_bucket_complete(&env, &moto, "d", N, 48 * 1024).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_campaign_in_postgresql_lands_every_video_in_the_bucket() {
    let test = "a_campaign_in_postgresql_lands_every_video_in_the_bucket";
    let Some(moto) = motolocal::for_tests(test).await else {
        return;
    };
    let Some(pg) = wanbatch::pglocal::shared_for_tests(test).await else {
        return;
    };
    moto.create_bucket(BUCKET).await.unwrap();
    let env = Env::with_pg(fast_fake(), pg.fresh_database("s3campaign").await.unwrap()).await;
    let m = env.write("jobs.csv", &manifest(5));
    let out = finish(s3_run(&env, &moto, &moto.url(), "s3://videos/pg", &[&m], &[])).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_bucket_complete(&env, &moto, "pg", 5, 48 * 1024).await;
}
