//! Shared harness for the binary tests: a fake Segmind in-process, the real `wanbatch` binary
//! pointed at it, short durations, and bounded waits (no test leaves a process running).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use wanbatch::fake::{FakeConfig, FakeServer, Fault, FaultKind, FaultTarget};

pub const KEY: &str = "test-key-5f1e";

/// Fast timings for a fake whose jobs take well under a second.
pub fn fast_fake() -> FakeConfig {
    FakeConfig {
        api_key: KEY.into(),
        queue: Duration::from_millis(60),
        run: Duration::from_millis(240),
        video_len: 48 * 1024,
        ..FakeConfig::default()
    }
}

/// `run`'s timings for a fast fake (short polls, backoffs and grace).
pub const FAST: &[&str] = &[
    "--expected-duration",
    "0.3s",
    "--min-poll-gap-ms",
    "30",
    "--backoff-ms",
    "20",
    "--grace-secs",
    "2",
    "--request-timeout-secs",
    "5",
];

pub struct Env {
    pub dir: tempfile::TempDir,
    pub fake: FakeServer,
    /// The campaign's database when not the SQLite file `w.db`: a PostgreSQL URL.
    pub db_url: Option<String>,
}

impl Env {
    pub async fn new(cfg: FakeConfig) -> Env {
        Env {
            dir: tempfile::tempdir().unwrap(),
            fake: FakeServer::start(cfg).await.unwrap(),
            db_url: None,
        }
    }

    /// An environment whose campaign lives in the PostgreSQL database at `url`.
    pub async fn with_pg(cfg: FakeConfig, url: String) -> Env {
        Env {
            db_url: Some(url),
            ..Env::new(cfg).await
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn db(&self) -> PathBuf {
        match &self.db_url {
            Some(url) => PathBuf::from(url),
            None => self.path("w.db"),
        }
    }

    pub fn out(&self) -> PathBuf {
        self.path("out")
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    /// A `wanbatch run` command with fast timings, pointed at the fake.
    pub fn run_cmd(&self, manifests: &[&Path], extra: &[&str]) -> tokio::process::Command {
        let mut cmd = self.bin();
        cmd.arg("run");
        for m in manifests {
            cmd.arg(m);
        }
        cmd.args([
            "--db",
            self.db().to_str().unwrap(),
            "--out",
            self.out().to_str().unwrap(),
        ]);
        cmd.args(["--rpm", "6000"]);
        cmd.args(FAST);
        cmd.args(extra);
        cmd
    }

    pub fn bin(&self) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_wanbatch"));
        cmd.env("SEGMIND_API_KEY", KEY)
            .env("SEGMIND_BASE_URL", self.fake.api_url())
            .env_remove("RUST_LOG")
            .current_dir(self.dir.path())
            .kill_on_drop(true);
        cmd
    }

    /// Runs to completion (bounded) and returns the output.
    pub async fn run(&self, manifests: &[&Path], extra: &[&str]) -> Output {
        finish(self.run_cmd(manifests, extra)).await
    }

    /// Export through the binary, as JSON values.
    pub async fn export(&self) -> Vec<serde_json::Value> {
        let mut cmd = self.bin();
        cmd.args(["export", "--db", self.db().to_str().unwrap(), "--format", "jsonl"]);
        let out = finish(cmd).await;
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Checks every done job's file against the bytes the fake served for its request id.
    /// The `len` bytes the fake served for request `rid`: the body it was sent for that request
    /// decides the video it made.
    pub fn served(&self, rid: &str, len: usize) -> Vec<u8> {
        let body = self
            .fake
            .stats()
            .submits
            .into_iter()
            .find(|s| s.request_id == rid)
            .map(|s| s.body)
            .unwrap_or_default();
        wanbatch::fake::video_for(&body, rid, len)
    }

    pub fn assert_videos_match(&self, jobs: &[serde_json::Value]) {
        self.assert_videos_match_len(jobs, 48 * 1024)
    }

    pub fn assert_videos_match_len(&self, jobs: &[serde_json::Value], len: usize) {
        for j in jobs.iter().filter(|j| j["state"] == "done") {
            let id = j["id"].as_str().unwrap();
            let rid = j["request_id"].as_str().unwrap();
            let path = self.out().join(format!("{id}.mp4"));
            assert_eq!(j["output"].as_str().unwrap(), path.to_str().unwrap());
            let got = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert!(
                got == self.served(rid, len),
                "{id}: bytes differ from what the fake served"
            );
        }
    }
}

/// A fault for the fake: `count` matching requests get `kind`.
pub fn fault(target: FaultTarget, kind: FaultKind, count: u32) -> Fault {
    Fault { target, kind, count }
}

/// Fake submits per prompt (the prompt identifies the job in these tests).
pub fn submits_by_prompt(fake: &FakeServer) -> std::collections::HashMap<String, usize> {
    let mut m = std::collections::HashMap::new();
    for s in fake.stats().submits {
        *m.entry(s.body["prompt"].as_str().unwrap_or_default().to_string())
            .or_insert(0) += 1;
    }
    m
}

/// Files in a folder, sorted.
pub fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = match std::fs::read_dir(dir) {
        Ok(rd) => rd.map(|e| e.unwrap().file_name().into_string().unwrap()).collect(),
        Err(_) => Vec::new(),
    };
    v.sort();
    v
}

/// Waits (bounded) until `cond` holds.
pub async fn wait_for(what: &str, secs: u64, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits for a command with a hard bound.
pub async fn finish(mut cmd: tokio::process::Command) -> Output {
    use tokio::io::AsyncReadExt;
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let read = |mut pipe: Box<dyn tokio::io::AsyncRead + Unpin + Send>| {
        tokio::spawn(async move {
            let mut buf = Vec::new();
            let _ = pipe.read_to_end(&mut buf).await;
            buf
        })
    };
    let stdout = read(Box::new(child.stdout.take().unwrap()));
    let stderr = read(Box::new(child.stderr.take().unwrap()));
    let status = match tokio::time::timeout(Duration::from_secs(60), child.wait()).await {
        Ok(status) => status.unwrap(),
        Err(_) => {
            // Stop it and show what it said: a hang is a bug to read, not only to count.
            let _ = child.kill().await;
            let said = Output {
                status: child.wait().await.unwrap(),
                stdout: stdout.await.unwrap(),
                stderr: stderr.await.unwrap(),
            };
            panic!("wanbatch did not finish within 60 s\n{}", text(&said));
        }
    };
    Output {
        status,
        stdout: stdout.await.unwrap(),
        stderr: stderr.await.unwrap(),
    }
}

/// What a command wrote on standard output, as text.
pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What a command wrote on standard error, as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `wanbatch ARGS...` in the test folder, to completion (bounded by `finish`).
pub async fn cmd(env: &Env, args: &[&str]) -> Output {
    let mut c = env.bin();
    c.args(args);
    finish(c).await
}

/// `wanbatch report` on the test campaign (its database, its videos' folder, then `extra`); it
/// must succeed. Returns what it printed.
pub async fn report(env: &Env, extra: &[&str]) -> String {
    let mut c = env.bin();
    c.args([
        "report",
        "--db",
        env.db().to_str().unwrap(),
        "--out",
        env.out().to_str().unwrap(),
    ]);
    c.args(extra);
    let out = finish(c).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    stdout(&out)
}

pub fn text(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A manifest of `n` distinct rows with explicit ids `j0..`.
pub fn manifest(n: usize) -> String {
    let mut s = String::from("id,image,prompt,num_frames,resolution,seed\n");
    for i in 0..n {
        s.push_str(&format!(
            "j{i},https://img.example/{i}.jpg,scene number {i},81,480p,{i}\n"
        ));
    }
    s
}
pub mod raw;
