//! A private S3-compatible server for tests and benchmarks (not used by the `wanbatch` binary
//! itself): moto's `moto_server` (PyPI `moto[server]`), started on a free loopback port.
//!
//! Why moto: it installs from PyPI in seconds (`pip install 'moto[server]'`), needs no root, no
//! container and no download outside the package registries, listens on loopback only, and speaks
//! the parts of S3 that matter here — multipart uploads (with S3's 5 MiB minimum part), their
//! abort, and the listing of incomplete uploads, which is how a test proves no partial upload was
//! left. It keeps objects in memory (spilling large ones to temporary files), which is fine for a
//! test or a benchmark.
//!
//! `MotoServer::start` finds `moto_server` (`WANBATCH_MOTO_BIN`, else PATH). `for_tests` applies
//! the skip policy, as `pglocal` does for PostgreSQL: no moto → the test is skipped with a
//! message, unless `WANBATCH_REQUIRE_S3=1` (CI), which makes it fail.
//!
//! Owns the server's process. Invariant: no process outlives its owner. The server runs under a
//! `sh` watchdog that holds the read end of a pipe only this process writes: `Drop` closes it
//! (also on panic), and so does the kernel when the owner dies without dropping (SIGKILL); either
//! way the watchdog kills the server.
//!
//! The helpers (`create_bucket`, `objects`, `incomplete_uploads`, `get`) speak plain HTTP with
//! an unsigned `Authorization` header, which moto accepts by default: tests look at the bucket
//! without the code under test.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// When `1`, a missing moto fails the tests instead of skipping them (CI sets it).
pub const REQUIRE_ENV: &str = "WANBATCH_REQUIRE_S3";
/// When set, the `moto_server` executable to run.
pub const BIN_ENV: &str = "WANBATCH_MOTO_BIN";
/// The credentials the server is given (moto accepts any; these are not secrets).
pub const ACCESS_KEY: &str = "moto-test-access-key";
pub const SECRET_KEY: &str = "moto-test-secret-key-3b9f";

/// A running moto server, killed on drop.
pub struct MotoServer {
    port: u16,
    watchdog: Option<tokio::process::Child>,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

/// `moto_server`, from `WANBATCH_MOTO_BIN` or PATH.
pub fn find_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(BIN_ENV) {
        let p = PathBuf::from(p);
        return p.is_file().then_some(p);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("moto_server"))
            .find(|p| p.is_file())
    })
}

impl MotoServer {
    /// Starts a server on a free loopback port and waits (bounded) until it answers.
    pub async fn start() -> Result<MotoServer> {
        let bin = find_bin().context("moto_server not found (pip install 'moto[server]', or set WANBATCH_MOTO_BIN)")?;
        let dir = tempfile::tempdir()?;
        let log = dir.path().join("moto.log");
        // Retried on the rare port race (the port is free when picked, taken before moto binds).
        for _ in 0..3 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
            // The watchdog: starts the server, waits for its stdin to close, kills the server.
            let script = "\"$0\" -H 127.0.0.1 -p \"$1\" >\"$2\" 2>&1 & m=$!; \
                          trap 'kill $m 2>/dev/null; exit 0' TERM; \
                          read _ignored; kill $m 2>/dev/null; wait $m 2>/dev/null";
            let child = tokio::process::Command::new("sh")
                .arg("-c")
                .arg(script)
                .arg(&bin)
                .arg(port.to_string())
                .arg(&log)
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .context("cannot start sh for moto_server")?;
            let mut server = MotoServer {
                port,
                watchdog: Some(child),
                http: helper_client()?,
                _dir: tempfile::tempdir()?,
            };
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if server.http.get(server.url()).send().await.is_ok() {
                    server._dir = dir;
                    return Ok(server);
                }
                if let Some(w) = server.watchdog.as_mut() {
                    if w.try_wait()?.is_some() {
                        break;
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            server.stop().await;
        }
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        bail!(
            "moto_server did not start: {}",
            text.lines().last().unwrap_or("(no output)")
        )
    }

    /// `http://127.0.0.1:PORT`: what `AWS_ENDPOINT_URL` names.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The environment a `wanbatch` child needs to write to this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.url()),
            ("AWS_ALLOW_HTTP", "true".into()),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.into()),
            ("AWS_DEFAULT_REGION", "us-east-1".into()),
        ]
    }

    pub async fn create_bucket(&self, bucket: &str) -> Result<()> {
        let r = self
            .http
            .put(format!("{}/{bucket}", self.url()))
            .body("")
            .send()
            .await?;
        anyhow::ensure!(r.status().is_success(), "creating bucket {bucket}: HTTP {}", r.status());
        Ok(())
    }

    /// Every object in `bucket` (key, size), in key order.
    pub async fn objects(&self, bucket: &str) -> Result<Vec<(String, u64)>> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut req = self
                .http
                .get(format!("{}/{bucket}", self.url()))
                .query(&[("list-type", "2")]);
            if let Some(t) = &token {
                req = req.query(&[("continuation-token", t.as_str())]);
            }
            let text = req.send().await?.error_for_status()?.text().await?;
            for c in elements(&text, "Contents") {
                let key = elements(c, "Key").first().map(|k| unescape(k)).unwrap_or_default();
                let size = elements(c, "Size").first().and_then(|s| s.parse().ok()).unwrap_or(0);
                out.push((key, size));
            }
            token = elements(&text, "NextContinuationToken").first().map(|t| unescape(t));
            if token.is_none() {
                break;
            }
        }
        Ok(out)
    }

    /// The keys of multipart uploads begun and neither completed nor aborted.
    pub async fn incomplete_uploads(&self, bucket: &str) -> Result<Vec<String>> {
        let text = self
            .http
            .get(format!("{}/{bucket}?uploads", self.url()))
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?;
        Ok(elements(&text, "Upload")
            .iter()
            .filter_map(|u| elements(u, "Key").first().map(|k| unescape(k)))
            .collect())
    }

    /// An object's bytes (`None` if there is none).
    pub async fn get(&self, bucket: &str, key: &str) -> Result<Option<Vec<u8>>> {
        let r = self.http.get(format!("{}/{bucket}/{key}", self.url())).send().await?;
        if r.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        Ok(Some(r.error_for_status()?.bytes().await?.to_vec()))
    }

    /// Stops the server (also done on drop).
    pub async fn stop(&mut self) {
        if let Some(mut w) = self.watchdog.take() {
            drop(w.stdin.take());
            if tokio::time::timeout(Duration::from_secs(10), w.wait()).await.is_err() {
                let _ = w.start_kill();
                let _ = w.wait().await;
            }
        }
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        if let Some(mut w) = self.watchdog.take() {
            // Closing the pipe makes the watchdog kill the server; then the watchdog is reaped.
            drop(w.stdin.take());
            if let Some(pid) = w.id() {
                let deadline = Instant::now() + Duration::from_secs(10);
                let mut status = 0;
                // SAFETY: waiting for our own child, which nobody else reaps.
                while unsafe { libc::waitpid(pid as libc::pid_t, &mut status, libc::WNOHANG) } == 0
                    && Instant::now() < deadline
                {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
    }
}

/// The helpers' client. Moto checks no signature, but it tells S3 requests from other services'
/// by the credential scope of an `Authorization` header (without one, a GET of a `.json` key is
/// refused), so every request carries an unsigned one naming `s3`.
fn helper_client() -> Result<reqwest::Client> {
    let mut headers = reqwest::header::HeaderMap::new();
    let auth = format!(
        "AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/20200101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=0"
    );
    headers.insert(reqwest::header::AUTHORIZATION, auth.parse()?);
    Ok(reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .default_headers(headers)
        .build()?)
}

/// A server for a test named `test`, or `None` (after saying why) when moto is not installed
/// and `WANBATCH_REQUIRE_S3` is not `1`.
pub async fn for_tests(test: &str) -> Option<MotoServer> {
    match MotoServer::start().await {
        Ok(s) => Some(s),
        Err(e) if std::env::var(REQUIRE_ENV).as_deref() != Ok("1") => {
            eprintln!("skipping {test}: {e:#} (set {REQUIRE_ENV}=1 to make this a failure)");
            None
        }
        Err(e) => panic!("{test}: {REQUIRE_ENV}=1 but no S3 server: {e:#}"),
    }
}

/// The inner texts of every `<tag>…</tag>` in `xml` (flat: enough for S3's listings).
fn elements<'a>(xml: &'a str, tag: &str) -> Vec<&'a str> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(i) = rest.find(&open) {
        let after = &rest[i + open.len()..];
        let Some(j) = after.find(&close) else { break };
        out.push(&after[..j]);
        rest = &after[j + close.len()..];
    }
    out
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}
