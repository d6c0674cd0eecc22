//! A video streamed from its host straight into a multipart upload: never whole in memory, no
//! local copy.
//!
//! - One part is buffered at a time (`PART_BYTES`, the S3 minimum, equal sizes as R2 wants):
//!   memory per upload is bounded by the part, whatever the video's size.
//! - Checked on the way exactly as the folder download is (`engine::download`): the host's
//!   length, `--max-video-bytes`, SHA-256, the MP4 signature and boxes (`mp4check`), the slow
//!   transfer guard. The upload is completed only when all of that passed, so an object at
//!   `prefix/ID.mp4` is always a whole, checked video; otherwise it is aborted.
//! - The upload id is recorded in the database (`store::outputs`) before the first part goes and
//!   cleared once the upload is completed or aborted: a run that dies mid-upload leaves a record
//!   that the next start aborts (`output::recover_uploads`). A crash after the completion and
//!   before the job is recorded done repeats that one upload (same bytes, same key).
//! - No resume with Range here: an interrupted upload is aborted and the video fetched again
//!   (its URL stays valid for days).

use std::path::PathBuf;

use bytes::BytesMut;
use object_store::multipart::PartId;
use object_store::PutPayload;

use super::{Bucket, StoreError};
use crate::engine::download::{DownloadError, Fetched, Limits, Verifier};
use crate::store::{DownloadWork, Store};

/// The size of every part but the last: S3's minimum (GCS and Azure take it too).
pub const PART_BYTES: usize = 5 * 1024 * 1024;

/// The uploads' object names: `ID.mp4`, its sidecar `ID.json`.
pub fn video_name(id: &str) -> String {
    format!("{id}.mp4")
}

impl From<StoreError> for DownloadError {
    fn from(e: StoreError) -> DownloadError {
        DownloadError::Store(e.to_string())
    }
}

/// Streams `w`'s video from `url` into `bucket` as `prefix/ID.mp4`. `expected` is the API's
/// `video.file_size`, when it gave one.
pub async fn upload(
    http: &reqwest::Client,
    bucket: &Bucket,
    store: &Store,
    w: &DownloadWork,
    expected: Option<u64>,
    limits: Limits,
) -> Result<Fetched, DownloadError> {
    let url = &w.output_url;
    let parsed = reqwest::Url::parse(url).map_err(|e| DownloadError::Invalid(format!("output URL {url:?}: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(DownloadError::Invalid(format!("output URL {url:?} is not http(s)")));
    }
    let mut resp = http
        .get(parsed)
        .send()
        .await
        .map_err(|e| DownloadError::Remote(e.to_string()))?;
    match resp.status() {
        s if s.is_success() && s != reqwest::StatusCode::PARTIAL_CONTENT => {}
        s @ (reqwest::StatusCode::NOT_FOUND | reqwest::StatusCode::GONE) => {
            return Err(DownloadError::Gone(s.as_u16()))
        }
        s => return Err(DownloadError::Remote(format!("HTTP {s}"))),
    }
    let total = resp.content_length();
    if let Some(t) = total.filter(|t| *t > limits.max_bytes) {
        return Err(DownloadError::Invalid(format!(
            "video of {t} bytes is over the {}-byte limit",
            limits.max_bytes
        )));
    }
    // The host answered with a video: begin the upload, and record it before any part goes.
    let name = video_name(&w.id);
    let key = bucket.url.key(&name);
    let mp = bucket.multipart();
    // An earlier attempt's upload still recorded (its abort failed, or its runner died while
    // this job's lease passed to us) goes first: it must never be completed.
    let mine = bucket.url.root();
    for old in store.object_uploads_of(w.seq).await.unwrap_or_default() {
        if old.store_url != mine {
            continue;
        }
        let old_key = object_store::path::Path::from(old.object_key.as_str());
        match mp.abort_multipart(&old_key, &old.upload_id).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {
                let _ = store.end_object_upload(&old.upload_id).await;
            }
            Err(e) => tracing::warn!(job = %w.id, error = %e, "cannot abort an earlier upload now"),
        }
    }
    let upload_id = mp
        .create_multipart(&key)
        .await
        .map_err(|e| bucket.classify(&format!("starting the upload of {name}"), e))?;
    if let Err(e) = store
        .begin_object_upload(w.seq, &w.request_id, &bucket.url.root(), key.as_ref(), &upload_id)
        .await
    {
        let _ = mp.abort_multipart(&key, &upload_id).await;
        return Err(DownloadError::Local {
            path: PathBuf::from(bucket.url.url_of(&name)),
            source: std::io::Error::other(format!("cannot record the upload in the database: {e:#}")),
        });
    }
    let streamed = stream_parts(&mut resp, bucket, &key, &upload_id, total, expected, limits, &w.id).await;
    let outcome = match streamed {
        Ok((parts, fetched)) => match mp.complete_multipart(&key, &upload_id, parts).await {
            Ok(_) => Ok(fetched),
            Err(e) => Err(DownloadError::from(bucket.classify(&format!("completing {name}"), e))),
        },
        Err(e) => Err(e),
    };
    match &outcome {
        // Completed: the record goes (a crash before this line repeats one upload, no more).
        Ok(_) => {}
        // The store is down: an abort would wait as long again; the next start aborts it.
        Err(DownloadError::Store(_)) => return outcome,
        Err(_) => {
            if let Err(e) = mp.abort_multipart(&key, &upload_id).await {
                tracing::warn!(job = %w.id, error = %e, "cannot abort the upload now; the next run aborts it");
                return outcome;
            }
        }
    }
    if let Err(e) = store.end_object_upload(&upload_id).await {
        tracing::warn!(job = %w.id, error = %format!("{e:#}"), "cannot clear the upload's record");
    }
    outcome
}

/// Reads the body, checking it, and puts it as parts. Returns the parts and what was uploaded.
#[allow(clippy::too_many_arguments)]
async fn stream_parts(
    resp: &mut reqwest::Response,
    bucket: &Bucket,
    key: &object_store::path::Path,
    upload_id: &str,
    total: Option<u64>,
    expected: Option<u64>,
    limits: Limits,
    id: &str,
) -> Result<(Vec<PartId>, Fetched), DownloadError> {
    let mp = bucket.multipart();
    let mut parts: Vec<PartId> = Vec::new();
    let mut buf = BytesMut::with_capacity(PART_BYTES);
    let mut v = Verifier::new(limits);
    let upload_id = upload_id.to_string();
    while let Some(chunk) = v.next(resp).await? {
        // The buffer never grows past one part: a full part goes up as its own allocation
        // (freed once sent) and a new buffer starts, so memory stays one part per upload.
        let mut rest = &chunk[..];
        while !rest.is_empty() {
            let take = (PART_BYTES - buf.len()).min(rest.len());
            buf.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if buf.len() == PART_BYTES {
                let full = std::mem::replace(&mut buf, BytesMut::with_capacity(PART_BYTES));
                let n = parts.len();
                let id = mp
                    .put_part(key, &upload_id, n, PutPayload::from(full.freeze()))
                    .await
                    .map_err(|e| bucket.classify(&format!("uploading part {} of {key}", n + 1), e))?;
                parts.push(id);
            }
        }
    }
    // The same checks as the folder download (`engine::download::Verifier`): the last part goes
    // only once the video passed them all.
    let written = v.written;
    let (sha256, video) = v.finish(total, expected, None, id)?;
    if !buf.is_empty() || parts.is_empty() {
        let n = parts.len();
        let part = PutPayload::from(buf.split().freeze());
        let pid = mp
            .put_part(key, &upload_id, n, part)
            .await
            .map_err(|e| bucket.classify(&format!("uploading part {} of {key}", n + 1), e))?;
        parts.push(pid);
    }
    Ok((
        parts,
        Fetched {
            path: PathBuf::from(bucket.url.url_of(&video_name(id))),
            bytes: written,
            sha256,
            video,
        },
    ))
}
