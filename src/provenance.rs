//! Provenance sidecars: next to each video `OUT/ID.mp4`, an `OUT/ID.json` saying what a dataset
//! pipeline needs to trust the file — the parameters as imported, where the row came from, the
//! request id and every submit attempt, the timings, the cost, the size and the SHA-256, and
//! what the video is (`video`: width, height, frames, frame rate, duration and codec as read from
//! its MP4 boxes, and `mismatch`: how it differs from its request, or null).
//!
//! Invariants:
//! - Written atomically (`OUT/.ID.json.part`, fsync, rename, folder fsync), right after the
//!   video is renamed into place and *before* the job is recorded `done`: a crash in between
//!   leaves the job `downloading`, so the next run fetches the video and writes the sidecar
//!   again. Every `done` job therefore has one. The temporary's `.part` suffix makes it one of
//!   the stray temporaries `run` removes at start (`engine::download::clean_stray_parts`).
//! - Never holds the API key (the database does not either), and the output URL loses its
//!   query, fragment and user info: signed CDN URLs carry tokens there.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::clock::rfc3339;
use crate::engine::download::{final_path, Fetched};
use crate::store::{now_ms, AttemptRecord, DownloadWork, JobRecord, Store};

/// `OUT/ID.json`.
pub fn sidecar_path(out: &Path, id: &str) -> PathBuf {
    out.join(format!("{id}.json"))
}

/// The temporary the sidecar is written to before its rename.
fn temp_path(out: &Path, id: &str) -> PathBuf {
    out.join(format!(".{id}.json.part"))
}

/// The facts about the file on disk.
pub struct FileFacts<'a> {
    pub bytes: i64,
    pub sha256: &'a str,
    /// When the verified file was put in place.
    pub downloaded_at: i64,
}

/// An output URL fit to keep: scheme, host, path; no query, fragment or user info.
pub fn public_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) => {
            u.set_query(None);
            u.set_fragment(None);
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.to_string()
        }
        // Not a URL: keep what precedes any query or fragment.
        Err(_) => url.split(['?', '#']).next().unwrap_or_default().to_string(),
    }
}

/// The sidecar's content.
pub fn sidecar(job: &JobRecord, history: &[AttemptRecord], file: &FileFacts<'_>) -> Value {
    let params: Value = serde_json::from_str(&job.params).unwrap_or(Value::Null);
    let history: Vec<Value> = history
        .iter()
        .map(|a| {
            json!({
                "n": a.n,
                "request_id": a.request_id,
                "outcome": a.outcome,
                "detail": a.detail.as_deref().filter(|d| !d.is_empty()),
                "started_at": rfc3339(a.started_at),
                "finished_at": a.finished_at.map(rfc3339),
            })
        })
        .collect();
    let duration_ms = match (job.submitted_at, job.completed_at) {
        (Some(s), Some(c)) if c >= s => Some(c - s),
        _ => None,
    };
    json!({
        "id": job.id,
        "file": format!("{}.mp4", job.id),
        "bytes": file.bytes,
        "sha256": file.sha256,
        "video": {
            "width": job.video_width,
            "height": job.video_height,
            "frames": job.video_frames,
            "fps": job.video_fps,
            "duration_secs": job.video_duration,
            "codec": job.video_codec,
            "mismatch": job.video_mismatch,
        },
        "parameters": params,
        "source": job.source,
        "request_id": job.request_id,
        "output_url": job.output_url.as_deref().map(public_url),
        "attempts": job.attempts,
        "history": history,
        "submitted_at": job.submitted_at.map(rfc3339),
        "completed_at": job.completed_at.map(rfc3339),
        "downloaded_at": rfc3339(file.downloaded_at),
        "duration_ms": duration_ms,
        "cost": job.cost,
        "resubmits": {
            "unknown": job.resubmits_unknown,
            "expired": job.resubmits_expired,
            "failed": job.resubmits_failed,
            "rejected": job.resubmits_rejected,
        },
        "maybe_billed_twice": job.maybe_billed_twice != 0,
        "wanbatch_version": env!("CARGO_PKG_VERSION"),
    })
}

/// Writes `OUT/ID.json` atomically, without making it durable (the engine syncs it with its
/// video, see `engine/durable.rs`): one blocking call, no fsync.
async fn write_sidecar_unsynced(out: &Path, id: &str, content: &Value) -> std::io::Result<PathBuf> {
    let mut text = serde_json::to_vec_pretty(content).map_err(std::io::Error::other)?;
    text.push(b'\n');
    let tmp = temp_path(out, id);
    let dest = sidecar_path(out, id);
    tokio::task::spawn_blocking(move || {
        if let Err(e) = std::fs::write(&tmp, &text) {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        std::fs::rename(&tmp, &dest)?;
        Ok(dest)
    })
    .await
    .map_err(std::io::Error::other)?
}

/// Writes `OUT/ID.json` atomically and durably.
pub async fn write_sidecar(out: &Path, id: &str, content: &Value) -> std::io::Result<PathBuf> {
    let mut text = serde_json::to_vec_pretty(content).map_err(std::io::Error::other)?;
    text.push(b'\n');
    let tmp = temp_path(out, id);
    let dest = sidecar_path(out, id);
    let mut f = tokio::fs::File::create(&tmp).await?;
    let written = async {
        f.write_all(&text).await?;
        f.flush().await?;
        f.sync_all().await
    }
    .await;
    drop(f);
    if let Err(e) = written {
        let _ = tokio::fs::remove_file(&tmp).await;
        return Err(e);
    }
    tokio::fs::rename(&tmp, &dest).await?;
    #[cfg(unix)]
    tokio::fs::File::open(out).await?.sync_all().await?;
    Ok(dest)
}

/// The engine's call, between the video's rename and `record_downloaded`. Writes nothing for a
/// stale worker (the job no longer waits for this request's download), like the store's guard.
/// What the video is comes from the file just checked (`f.video`, and `mismatch`: how it differs
/// from its request), not yet from the database, which records it next.
/// Returns the sidecar's path if it wrote one; the caller makes it durable before recording.
pub async fn write_for_download(
    store: &Store,
    out: &Path,
    w: &DownloadWork,
    f: &Fetched,
    mismatch: Option<&str>,
) -> anyhow::Result<Option<PathBuf>> {
    let Some(content) = content_for_download(store, w, f, mismatch).await? else {
        return Ok(None);
    };
    let path = sidecar_path(out, &w.id);
    let written = write_sidecar_unsynced(out, &w.id, &content)
        .await
        .with_context(|| format!("cannot write the provenance sidecar {}", path.display()))?;
    Ok(Some(written))
}

/// The sidecar of a download just checked (`None` for a stale worker: the job no longer waits
/// for this request's download), for `write_for_download` or an object-store output.
pub async fn content_for_download(
    store: &Store,
    w: &DownloadWork,
    f: &Fetched,
    mismatch: Option<&str>,
) -> anyhow::Result<Option<Value>> {
    let (mut job, history) = store
        .job_with_attempts(w.seq)
        .await?
        .with_context(|| format!("job {} vanished from the database", w.id))?;
    if job.state != "downloading" || job.request_id.as_deref() != Some(w.request_id.as_str()) {
        return Ok(None);
    }
    job.video_width = Some(i64::from(f.video.width));
    job.video_height = Some(i64::from(f.video.height));
    job.video_frames = Some(f.video.frames as i64);
    job.video_fps = Some(f.video.fps);
    job.video_duration = Some(f.video.duration_secs);
    job.video_codec = Some(f.video.codec.clone());
    job.video_mismatch = mismatch.map(str::to_owned);
    let facts = FileFacts {
        bytes: f.bytes as i64,
        sha256: &f.sha256,
        downloaded_at: now_ms(),
    };
    let mut content = sidecar(&job, &history, &facts);
    LocalImages::default().add(store, &job, &mut content).await?;
    Ok(Some(content))
}

/// What `restore_missing` did for one job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restore {
    /// The sidecar was there already.
    Present,
    Written,
    /// No video, or not the one the database describes: no sidecar vouches for it.
    VideoMismatch,
    NotDone,
}

/// Writes a missing sidecar for a done job (from a version without sidecars, or deleted), after
/// checking that the video on disk is the one the database recorded (size and SHA-256).
pub async fn restore_missing(store: &Store, out: &Path, job: &JobRecord) -> anyhow::Result<Restore> {
    let (Some(bytes), Some(sha), "done") = (job.bytes, job.sha256.as_deref(), job.state.as_str()) else {
        return Ok(Restore::NotDone);
    };
    if tokio::fs::try_exists(sidecar_path(out, &job.id)).await.unwrap_or(false) {
        return Ok(Restore::Present);
    }
    let video = final_path(out, &job.id);
    match hash_file(&video).await {
        Ok((n, h)) if n == bytes as u64 && h == sha => {}
        _ => return Ok(Restore::VideoMismatch),
    }
    let history = store.attempts_of(job.seq).await?;
    let facts = FileFacts {
        bytes,
        sha256: sha,
        downloaded_at: job.downloaded_at.unwrap_or_else(now_ms),
    };
    let mut content = sidecar(job, &history, &facts);
    LocalImages::default().add(store, job, &mut content).await?;
    write_sidecar(out, &job.id, &content)
        .await
        .with_context(|| format!("cannot write {}", sidecar_path(out, &job.id).display()))?;
    Ok(Restore::Written)
}

async fn hash_file(path: &Path) -> std::io::Result<(u64, String)> {
    let mut f = tokio::fs::File::open(path).await?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut total = 0u64;
    loop {
        let n = f.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        total += n as u64;
        hasher.update(&buf[..n]);
    }
    Ok((total, hex::encode(hasher.finalize())))
}

#[cfg(test)]
mod tests;

/// The SHA-256 and uploaded URL of the local images jobs name, looked up once per file.
#[derive(Default)]
pub struct LocalImages {
    known: std::collections::HashMap<String, (Option<String>, Option<String>)>,
}

impl LocalImages {
    /// Adds `image_sha256`/`image_upload` (and `last_image_…`) to a job's row when it names local
    /// images: the local path stays in `image`, as the manifest gave it.
    pub async fn add(&mut self, store: &Store, j: &JobRecord, v: &mut Value) -> anyhow::Result<()> {
        // The parameters sit at the top of an export's row, under `parameters` in a sidecar.
        let params: Value = serde_json::from_str(&j.params).unwrap_or_default();
        if !j.params.contains("\"file:") {
            return Ok(());
        }
        for field in ["image", "last_image"] {
            let Some(path) = params
                .get(field)
                .and_then(Value::as_str)
                .and_then(crate::manifest::local::file_of)
            else {
                continue;
            };
            let path = path.to_string_lossy().into_owned();
            if !self.known.contains_key(&path) {
                let sha = store.local_file(&path).await?.map(|f| f.sha256);
                let url = match &sha {
                    Some(sha) => store.asset(sha).await?,
                    None => None,
                };
                self.known.insert(path.clone(), (sha, url));
            }
            let (sha, url) = &self.known[&path];
            v[format!("{field}_sha256")] = json!(sha);
            v[format!("{field}_upload")] = json!(url);
        }
        Ok(())
    }
}
