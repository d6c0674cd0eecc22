//! Fetching a finished job's video (and writing its sidecar), made durable before the job is
//! recorded done; the downloader itself is `engine::download`.

use std::sync::Arc;

use super::{fetching, finish, then, waiting};
use crate::engine::agenda::Next;
use crate::engine::download::{self, DownloadError};
use crate::engine::shared::{Event, Shared};
use crate::state::JobState;
use crate::store::{now_ms, DownloadWork};

pub async fn download(s: Arc<Shared>, w: DownloadWork) {
    let r = download_inner(&s, &w).await;
    finish(&s, w.seq, r).await;
}

/// How many times, and for how long after COMPLETED, a video host must answer 404/410 before we
/// believe the video is gone.
const GONE_TRIES: i64 = 5;
const GONE_AFTER_MS: i64 = 10 * 60 * 1000;
/// Consecutive download failures (of other kinds) before the job is failed with the reason.
const GIVE_UP_TRIES: i64 = 30;

#[tracing::instrument(skip_all, fields(job = %w.id))]
async fn download_inner(s: &Shared, w: &DownloadWork) -> anyhow::Result<Next> {
    let expected = w.output_size.and_then(|n| u64::try_from(n).ok());
    let result = match &s.cfg.bucket {
        Some(bucket) => {
            let limits = download::Limits::new(s.cfg.max_video_bytes);
            crate::output::stream::upload(&s.dl, bucket, &s.store, w, expected, limits).await
        }
        None => {
            download::fetch(
                &s.dl,
                &w.output_url,
                &s.cfg.out_dir,
                &w.id,
                &w.request_id,
                expected,
                s.cfg.max_video_bytes,
            )
            .await
        }
    };
    let now = now_ms();
    match result {
        Ok(f) if s.cfg.bucket.is_some() => {
            let mismatch = match s.store.params_of(w.seq).await? {
                Some(params) => mismatch(&params, &f.video),
                None => None,
            };
            into_bucket(s, w, &f, mismatch.as_deref()).await
        }
        Ok(f) => {
            let mismatch = match s.store.params_of(w.seq).await? {
                Some(params) => mismatch(&params, &f.video),
                None => None,
            };
            // The sidecar goes in before the job is recorded done, so every done job has one;
            // if it cannot be written, stop like any local write problem (the job stays
            // downloading, and the next run fetches and writes again).
            let written =
                crate::provenance::write_for_download(&s.store, &s.cfg.out_dir, w, &f, mismatch.as_deref()).await;
            let sidecar = match written {
                Ok(written) => written,
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "cannot write the provenance sidecar");
                    let _ = s.events.send(Event::Local(format!("{e:#}")));
                    return Ok(Next::Nothing);
                }
            };
            // Both files durable (with whatever else finished meanwhile) before the job is done.
            let files: Vec<_> = std::iter::once(f.path.clone()).chain(sidecar).collect();
            if let Err(e) = s.syncer.sync(&s.cfg.out_dir, &files).await {
                let msg = format!("cannot make videos durable in {}: {e}", s.cfg.out_dir.display());
                tracing::error!("{msg}");
                let _ = s.events.send(Event::Local(msg));
                return Ok(Next::Nothing);
            }
            record_done(s, w, &f, mismatch.as_deref()).await?;
            tracing::debug!(bytes = f.bytes, "downloaded");
            Ok(Next::Nothing)
        }
        Err(e @ DownloadError::Store(_)) => {
            // The object store refused, or failed for the whole --unreachable-after: stop the
            // run (exit 4); the job stays downloading, its URL valid for days.
            tracing::error!(error = %e, "cannot write videos to the object store");
            s.tele.error(format_args!("{e}"));
            let _ = s.events.send(Event::Local(e.to_string()));
            Ok(Next::Nothing)
        }
        Err(e @ DownloadError::Local { .. }) => {
            // Our disk, not the job: stop the run, keep the job waiting for its download.
            tracing::error!(error = %e, "cannot write videos");
            s.tele.error(format_args!("cannot write videos: {e}"));
            let _ = s.events.send(Event::Local(e.to_string()));
            Ok(Next::Nothing)
        }
        Err(DownloadError::Gone(code))
            if w.errors_in_row + 1 >= GONE_TRIES && now - w.completed_at.unwrap_or(now) >= GONE_AFTER_MS =>
        {
            // Only a video missing for a long while counts as gone: the file is kept 7 days, and
            // a host that briefly answers 404 must not cost a second payment.
            let why = format!("the video is gone from its host (HTTP {code})");
            download::remove_part(&s.cfg.out_dir, &w.id, &w.request_id).await;
            let max = i64::from(s.cfg.max_resubmits);
            if w.resubmits >= max {
                let why = format!(
                    "{why}; it was bought {}, and --max-resubmits {max} allows no more",
                    crate::figures::times(w.resubmits + 1)
                );
                s.store.record_download_failed(w.seq, &w.request_id, &why).await?;
                return Ok(Next::Nothing);
            }
            let row = s
                .store
                .record_expired(w.seq, JobState::Downloading, &w.request_id, &why)
                .await?;
            then(row, waiting)
        }
        Err(e) if w.errors_in_row + 1 >= GIVE_UP_TRIES && !matches!(e, DownloadError::Gone(_)) => {
            // A permanent problem (an unusable URL, a file over the limit, a host that keeps
            // refusing): fail the job with the reason rather than retry for ever. It was paid
            // for, so it is not resubmitted; `wanbatch retry --ids` does that on request.
            let why = format!("download failed {GIVE_UP_TRIES} times, last: {e}");
            download::remove_part(&s.cfg.out_dir, &w.id, &w.request_id).await;
            s.store.record_download_failed(w.seq, &w.request_id, &why).await?;
            Ok(Next::Nothing)
        }
        Err(e) => {
            tracing::warn!(error = %e, "download failed; will retry");
            s.tele.error(format_args!("download: {e}"));
            let due = now + s.schedule.backoff(w.errors_in_row).as_millis() as i64;
            let row = s
                .store
                .record_retry_later(w.seq, JobState::Downloading, &w.request_id, due, false)
                .await?;
            then(row, |row| fetching(row, due))
        }
    }
}

/// A video completed in the bucket: its sidecar `ID.json` goes beside it (one put: whole or
/// absent), then the job is recorded done. A crash in between leaves the job downloading: the
/// next run uploads both again.
async fn into_bucket(
    s: &Shared,
    w: &DownloadWork,
    f: &download::Fetched,
    mismatch: Option<&str>,
) -> anyhow::Result<Next> {
    let bucket = s.cfg.bucket.as_ref().expect("into_bucket is called for a bucket");
    let content = match crate::provenance::content_for_download(&s.store, w, f, mismatch).await? {
        Some(c) => c,
        // A stale worker: the job no longer waits for this download.
        None => return Ok(Next::Nothing),
    };
    let mut text = serde_json::to_vec_pretty(&content)?;
    text.push(b'\n');
    if let Err(e) = bucket.put(&format!("{}.json", w.id), text).await {
        tracing::error!(error = %e, "cannot write the provenance sidecar to the object store");
        let _ = s.events.send(Event::Local(e.to_string()));
        return Ok(Next::Nothing);
    }
    record_done(s, w, f, mismatch).await?;
    tracing::debug!(bytes = f.bytes, "uploaded");
    Ok(Next::Nothing)
}

/// The job done, its video (in a folder or a bucket) and sidecar in place: what the video is,
/// and how it differs from its request, if it does (kept, flagged).
async fn record_done(
    s: &Shared,
    w: &DownloadWork,
    f: &download::Fetched,
    mismatch: Option<&str>,
) -> anyhow::Result<()> {
    if let Some(m) = mismatch {
        tracing::warn!(video = %m, "the video differs from its request (kept, flagged)");
    }
    let path = f.path.to_string_lossy();
    s.store
        .record_downloaded(
            w.seq,
            &w.request_id,
            &path,
            f.bytes as i64,
            &f.sha256,
            &f.video,
            mismatch,
        )
        .await?;
    Ok(())
}

/// How a video differs from what its request asked for (Wan 2.2 delivers 832×480 for 480p 16:9,
/// 480×832 for 9:16, 1280×720 and 720×1280 for 720p; `num_frames` frames at
/// `frames_per_second`), if it does. A flag, not a failure: the service decides what it delivers.
pub fn mismatch(params: &str, v: &crate::mp4check::VideoInfo) -> Option<String> {
    let p: serde_json::Value = serde_json::from_str(params).ok()?;
    let res = p.get("resolution").and_then(|r| r.as_str()).unwrap_or("480p");
    let portrait = p.get("aspect_ratio").and_then(|a| a.as_str()) == Some("9:16");
    let (w, h) = match (res, portrait) {
        ("720p", false) => (1280, 720),
        ("720p", true) => (720, 1280),
        (_, false) => (832, 480),
        (_, true) => (480, 832),
    };
    let frames = p.get("num_frames").and_then(|n| n.as_u64()).unwrap_or(81);
    let fps = p.get("frames_per_second").and_then(|n| n.as_f64()).unwrap_or(16.0);
    let mut diffs = Vec::new();
    if (v.width, v.height) != (w, h) {
        diffs.push(format!("{}×{} instead of {w}×{h}", v.width, v.height));
    }
    if v.frames != frames {
        diffs.push(format!("{} frames instead of {frames}", v.frames));
    }
    if (v.fps - fps).abs() > 0.05 * fps {
        diffs.push(format!("{:.2} fps instead of {fps}", v.fps));
    }
    (!diffs.is_empty()).then(|| diffs.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mp4check::VideoInfo;

    #[test]
    fn a_video_is_compared_with_what_its_request_asked() {
        let v = VideoInfo {
            width: 832,
            height: 480,
            frames: 81,
            fps: 16.0,
            duration_secs: 5.0625,
            codec: "avc1".into(),
        };
        assert_eq!(mismatch(r#"{"prompt":"p"}"#, &v), None, "the defaults");
        assert_eq!(
            mismatch(r#"{"resolution":"720p","num_frames":100}"#, &v).unwrap(),
            "832×480 instead of 1280×720, 81 frames instead of 100"
        );
        let portrait = VideoInfo {
            width: 480,
            height: 832,
            fps: 24.0,
            ..v
        };
        assert_eq!(
            mismatch(r#"{"aspect_ratio":"9:16","frames_per_second":24}"#, &portrait),
            None
        );
    }
}
