//! The downloader: streams a finished video from the output URL (Segmind's CDN) into OUT.
//!
//! - A separate HTTP client with no API key at all: output URLs are public, and the key must
//!   never reach the video host. Only http(s) URLs, a bounded number of redirects.
//! - Written to `OUT/.ID.mp4.part`, checked (size against Content-Length, and as a video:
//!   `mp4check` reads the MP4 boxes as they stream by — a `moov` with a video track, sample
//!   tables that fit the file; the API's unconfirmed `file_size` only adds to the reason when
//!   the file fails, and is otherwise a warning) and renamed to `OUT/ID.mp4`: a file at
//!   `OUT/ID.mp4` is always a complete video. What it is (size, frames, frame rate, duration,
//!   codec) comes back with it. It is not yet durable: the engine makes it so, together with other
//!   downloads (`durable.rs`), before it records the job done.
//! - A partial left by an earlier attempt is resumed with Range when the server honours it.
//! - Bounded cost whatever the host does: a body over `--max-video-bytes` (announced or not) is
//!   refused and its partial removed; a transfer slower than `Limits::slow_min_bytes` per
//!   `slow_window` is broken off (and resumed later), so a trickle cannot hold a slot for ever.
//! - Errors say whose fault they are: ours (`Local`: disk full, unwritable OUT — the run must
//!   stop), the server's (`Remote`, retried), or the file's (`Invalid`, fetched again).

use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::header::{CONTENT_RANGE, RANGE};
use reqwest::StatusCode;
use sha2::{Digest, Sha256};

use crate::mp4check::{Mp4Check, VideoInfo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    #[error("cannot write the video to {path}: {source}")]
    Local {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("video host: {0}")]
    Remote(String),
    #[error("video gone from its host (HTTP {0})")]
    Gone(u16),
    #[error("downloaded video is not valid: {0}")]
    Invalid(String),
    /// The object store of `--out s3://…` refused or kept failing after its retries
    /// (`output::stream`): the run stops, the job stays downloading.
    #[error("{0}")]
    Store(String),
}

#[derive(Debug)]
pub struct Fetched {
    pub path: PathBuf,
    pub bytes: u64,
    pub sha256: String,
    /// What the video is, from its boxes.
    pub video: VideoInfo,
}

pub fn client(max_redirects: usize) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::custom(move |attempt| {
            let ok_scheme = matches!(attempt.url().scheme(), "http" | "https");
            // `previous` holds the first URL too: `n` redirects followed means n + 1 entries.
            if attempt.previous().len() > max_redirects {
                attempt.error("too many redirects")
            } else if !ok_scheme {
                attempt.error("redirect to a non-http(s) URL")
            } else {
                attempt.follow()
            }
        }))
        .connect_timeout(Duration::from_secs(10))
        .read_timeout(Duration::from_secs(60))
        .user_agent(concat!("wanbatch/", env!("CARGO_PKG_VERSION")))
        .build()?)
}

pub fn final_path(out: &Path, id: &str) -> PathBuf {
    out.join(format!("{id}.mp4"))
}

/// The partial file of one request's video. Named after the request too, so a partial left by
/// an earlier attempt (whose video is gone) can never be resumed into a new request's video.
pub fn part_path(out: &Path, id: &str, request_id: &str) -> PathBuf {
    out.join(format!(".{id}.mp4.{request_id}.part"))
}

/// Removes a request's partial file, if any.
pub async fn remove_part(out: &Path, id: &str, request_id: &str) {
    let _ = tokio::fs::remove_file(part_path(out, id, request_id)).await;
}

fn local(path: &Path) -> impl FnOnce(std::io::Error) -> DownloadError + '_ {
    move |source| DownloadError::Local {
        path: path.to_path_buf(),
        source,
    }
}

/// What one download may cost.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Largest video accepted (`--max-video-bytes`); a bigger one is refused and removed.
    pub max_bytes: u64,
    /// A transfer that brings fewer than `slow_min_bytes` in `slow_window` is broken off (the
    /// partial is kept and resumed): a host that trickles must not hold a download slot for ever.
    pub slow_window: Duration,
    pub slow_min_bytes: u64,
}

impl Limits {
    pub fn new(max_bytes: u64) -> Limits {
        Limits {
            max_bytes,
            slow_window: Duration::from_secs(60),
            slow_min_bytes: 64 * 1024,
        }
    }
}

/// What every fetch checks, wherever the bytes go (a file here, a multipart upload in
/// `output::stream`): on the way, the slow-transfer guard, a break reported with how far it got,
/// `--max-video-bytes`, and the SHA-256 and MP4 boxes fed as the bytes pass; at the end, the
/// host's length, the MP4 signature and a whole video by its own boxes.
pub struct Verifier {
    limits: Limits,
    window_end: tokio::time::Instant,
    window_bytes: u64,
    /// Bytes so far (those held from an earlier attempt included).
    pub written: u64,
    hasher: Sha256,
    check: Mp4Check,
    /// The first bytes of this transfer, for the signature.
    head: Vec<u8>,
}

impl Verifier {
    pub fn new(limits: Limits) -> Verifier {
        Verifier {
            limits,
            window_end: tokio::time::Instant::now() + limits.slow_window,
            window_bytes: 0,
            written: 0,
            hasher: Sha256::new(),
            check: Mp4Check::new(),
            head: Vec::with_capacity(8),
        }
    }

    /// Bytes an earlier attempt already holds (a resumed partial): hashed and checked, counted
    /// in `written`, not in the slow guard's window.
    pub fn held(&mut self, bytes: &[u8]) {
        self.hasher.update(bytes);
        self.check.update(bytes);
        self.written += bytes.len() as u64;
    }

    /// The next chunk of `resp`'s body, checked (None at its end). `Remote`: the transfer broke
    /// or trickled (what arrived may be kept and resumed); `Invalid`: over the size limit.
    pub async fn next(&mut self, resp: &mut reqwest::Response) -> Result<Option<bytes::Bytes>, DownloadError> {
        loop {
            let next = tokio::time::timeout_at(self.window_end, resp.chunk()).await;
            if let Ok(Ok(Some(c))) = &next {
                self.window_bytes += c.len() as u64;
            }
            if next.is_err() || tokio::time::Instant::now() >= self.window_end {
                if self.window_bytes < self.limits.slow_min_bytes {
                    return Err(DownloadError::Remote(format!(
                        "transfer too slow: {} bytes in {:?} (after {} bytes)",
                        self.window_bytes, self.limits.slow_window, self.written
                    )));
                }
                self.window_end = tokio::time::Instant::now() + self.limits.slow_window;
                self.window_bytes = 0;
            }
            let chunk = match next {
                Err(_) => continue,
                Ok(Ok(Some(c))) => c,
                Ok(Ok(None)) => return Ok(None),
                Ok(Err(e)) => {
                    return Err(DownloadError::Remote(format!(
                        "transfer broke after {} bytes: {e}",
                        self.written
                    )))
                }
            };
            self.written += chunk.len() as u64;
            if self.written > self.limits.max_bytes {
                return Err(DownloadError::Invalid(format!(
                    "video is over the {}-byte limit",
                    self.limits.max_bytes
                )));
            }
            self.hasher.update(&chunk);
            self.check.update(&chunk);
            if self.head.len() < 8 {
                let take = 8 - self.head.len();
                self.head.extend(chunk.iter().take(take));
            }
            return Ok(Some(chunk));
        }
    }

    /// The verdict once the body ended: the SHA-256 and what the video is, or why it is not a
    /// whole video (`Invalid`). `total`: the host's announced length; `expected`: the API's
    /// `file_size`, unconfirmed (API.md): a file that disagrees with it is refused only if it
    /// fails on its own, and then the disagreement is part of the reason — trusted strictly, a
    /// wrong figure would refuse every complete video for ever. `signed`: whether the file
    /// starts with the MP4 signature, when this transfer did not carry its first bytes (a resume).
    pub fn finish(
        self,
        total: Option<u64>,
        expected: Option<u64>,
        signed: Option<bool>,
        id: &str,
    ) -> Result<(String, VideoInfo), DownloadError> {
        let written = self.written;
        let announced = expected
            .filter(|e| *e != written)
            .map(|e| format!(" (got {written} bytes, the API reported a file_size of {e})"));
        let bad = |why: String| DownloadError::Invalid(format!("{why}{}", announced.as_deref().unwrap_or("")));
        if let Some(t) = total.filter(|t| *t != written) {
            return Err(bad(format!("got {written} bytes, the server announced {t}")));
        }
        if !signed.unwrap_or(self.head.len() == 8 && &self.head[4..8] == b"ftyp") {
            return Err(bad("not an MP4 file (no ftyp box at the start)".into()));
        }
        // A well-sized file that is not a whole video (no moov, samples past its end) is
        // fetched again, never recorded done.
        let video = self.check.finish().map_err(|e| bad(e.to_string()))?;
        if let Some(e) = expected.filter(|e| *e != written) {
            tracing::warn!(
                job = id,
                bytes = written,
                file_size = e,
                "the video's length differs from the file_size the API reported, but the file is a whole \
                 video by its own boxes: kept"
            );
        }
        Ok((hex::encode(self.hasher.finalize()), video))
    }
}

/// Fetches `url` into `OUT/ID.mp4`. `expected` is the API's `video.file_size`, when it gave one.
pub async fn fetch(
    http: &reqwest::Client,
    url: &str,
    out: &Path,
    id: &str,
    request_id: &str,
    expected: Option<u64>,
    max_bytes: u64,
) -> Result<Fetched, DownloadError> {
    fetch_with(http, url, out, id, request_id, expected, Limits::new(max_bytes)).await
}

/// `fetch` with explicit limits.
pub async fn fetch_with(
    http: &reqwest::Client,
    url: &str,
    out: &Path,
    id: &str,
    request_id: &str,
    expected: Option<u64>,
    limits: Limits,
) -> Result<Fetched, DownloadError> {
    let max_bytes = limits.max_bytes;
    let parsed = reqwest::Url::parse(url).map_err(|e| DownloadError::Invalid(format!("output URL {url:?}: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(DownloadError::Invalid(format!("output URL {url:?} is not http(s)")));
    }
    let part = part_path(out, id, request_id);
    let have = match tokio::fs::metadata(&part).await {
        Ok(m) => m.len(),
        Err(_) => 0,
    };
    let mut req = http.get(parsed);
    if have > 0 {
        req = req.header(RANGE, format!("bytes={have}-"));
    }
    let mut resp = req.send().await.map_err(|e| DownloadError::Remote(e.to_string()))?;
    let status = resp.status();
    let resuming = have > 0 && status == StatusCode::PARTIAL_CONTENT && range_starts_at(&resp, have);
    match status {
        s if s == StatusCode::OK || resuming => {}
        StatusCode::RANGE_NOT_SATISFIABLE => {
            let _ = tokio::fs::remove_file(&part).await;
            return Err(DownloadError::Remote("range not satisfiable; starting over".into()));
        }
        StatusCode::NOT_FOUND | StatusCode::GONE => return Err(DownloadError::Gone(status.as_u16())),
        s => return Err(DownloadError::Remote(format!("HTTP {s}"))),
    }
    let total = resp.content_length().map(|n| if resuming { n + have } else { n });
    if let Some(t) = total.filter(|t| *t > max_bytes) {
        return Err(DownloadError::Invalid(format!(
            "video of {t} bytes is over the {max_bytes}-byte limit"
        )));
    }
    let mut v = Verifier::new(limits);
    let mut file = if resuming {
        // Hash (and check) what we already have, then append.
        let mut f = tokio::fs::File::open(&part).await.map_err(local(&part))?;
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = f.read(&mut buf).await.map_err(local(&part))?;
            if n == 0 {
                break;
            }
            v.held(&buf[..n]);
        }
        tokio::fs::OpenOptions::new()
            .append(true)
            .open(&part)
            .await
            .map_err(local(&part))?
    } else {
        match tokio::fs::File::create(&part).await {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // OUT is made on the first download (and again if it was removed meanwhile).
                tokio::fs::create_dir_all(out).await.map_err(local(out))?;
                tokio::fs::File::create(&part).await.map_err(local(&part))?
            }
            f => f.map_err(local(&part))?,
        }
    };
    loop {
        match v.next(&mut resp).await {
            Ok(Some(chunk)) => file.write_all(&chunk).await.map_err(local(&part))?,
            Ok(None) => break,
            Err(e @ DownloadError::Remote(_)) => {
                // Keep what arrived: the next attempt resumes from it.
                let _ = file.flush().await;
                return Err(e);
            }
            Err(e) => {
                drop(file);
                let _ = tokio::fs::remove_file(&part).await;
                return Err(e);
            }
        }
    }
    file.flush().await.map_err(local(&part))?;
    drop(file);
    let bytes = v.written;
    let signed = if resuming {
        Some(has_mp4_signature(&part).await)
    } else {
        None
    };
    let (sha256, video) = match v.finish(total, expected, signed, id) {
        Ok(verdict) => verdict,
        Err(e) => {
            let _ = tokio::fs::remove_file(&part).await;
            return Err(e);
        }
    };
    let dest = final_path(out, id);
    tokio::fs::rename(&part, &dest).await.map_err(local(&dest))?;
    Ok(Fetched {
        path: dest,
        bytes,
        sha256,
        video,
    })
}

fn range_starts_at(resp: &reqwest::Response, at: u64) -> bool {
    resp.headers()
        .get(CONTENT_RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bytes "))
        .and_then(|v| v.split('-').next())
        .and_then(|start| start.trim().parse::<u64>().ok())
        == Some(at)
}

async fn has_mp4_signature(path: &Path) -> bool {
    let mut head = [0u8; 8];
    match tokio::fs::File::open(path).await {
        Ok(mut f) => f.read_exact(&mut head).await.is_ok() && &head[4..8] == b"ftyp",
        Err(_) => false,
    }
}

/// Removes temporaries left by a crash unless `keep(id, request_id)` says the job is still
/// downloading that request (its partial is resumed). Returns how many went.
pub async fn clean_stray_parts(out: &Path, keep: impl Fn(&str, &str) -> bool) -> std::io::Result<usize> {
    let mut removed = 0;
    let mut dir = match tokio::fs::read_dir(out).await {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    while let Some(entry) = dir.next_entry().await? {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(inner) = name.strip_prefix('.').and_then(|n| n.strip_suffix(".part")) else {
            continue;
        };
        // `.ID.mp4.REQUEST.part`; request ids hold no dots, ids may.
        let parsed = inner.rsplit_once(".mp4.");
        if !parsed.is_some_and(|(id, rid)| keep(id, rid)) {
            tokio::fs::remove_file(entry.path()).await?;
            removed += 1;
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stray_partials_go_unless_their_job_still_downloads_that_request() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path();
        for (id, rid) in [("a.b", "r1"), ("a.b", "old"), ("c", "r2")] {
            std::fs::write(part_path(out, id, rid), b"x").unwrap();
        }
        std::fs::write(out.join(".junk.part"), b"x").unwrap();
        std::fs::write(out.join("c.mp4"), b"done").unwrap();
        let removed = clean_stray_parts(out, |id, rid| id == "a.b" && rid == "r1")
            .await
            .unwrap();
        assert_eq!(removed, 3);
        let mut left: Vec<String> = std::fs::read_dir(out)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, vec![".a.b.mp4.r1.part".to_string(), "c.mp4".to_string()]);
    }
}
