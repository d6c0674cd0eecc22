//! Local images go up to Segmind's storage before a job's first submit, once per content.
//!
//! A job's parameters name a local image by its `file://` URL (see `manifest::local`); the body
//! it is submitted with names the uploaded URL instead. Uploads are made per SHA-256: the same
//! bytes are uploaded once per database, however many rows, runs or crashes name them (the URL
//! is kept in `assets`; an upload under way is an intent first, so a crash between an upload and
//! its record repeats that upload only, and counts it). Tasks that need uploads at the same time
//! share calls: one of them uploads what all of them wait for, up to `PER_CALL` files a call,
//! each call one API request out of the shared budget.
//!
//! Before its first upload in a run, a file is read again: content that changed since the import
//! fails the job with a message saying so (the job would not be the one imported).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use serde_json::Value;
use tokio::sync::Notify;

use super::shared::Shared;
use crate::api::upload::{data_url, UploadClient};
use crate::api::ApiError;
use crate::manifest::local::file_of;
use crate::store::Store;

/// Files per upload call, and bytes (before base64) per call at most.
pub const PER_CALL: usize = 8;
const BYTES_PER_CALL: u64 = 32 * 1024 * 1024;

/// Why a job's body could not be made.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// The job itself cannot go as imported (its file changed, is gone, or was refused by the
    /// storage): it fails with this message.
    #[error("{0}")]
    Job(String),
    /// The upload call failed: an account stop or trouble to wait out, as for any API call.
    #[error("uploading images: {0}")]
    Api(ApiError),
    #[error("{0:#}")]
    Local(anyhow::Error),
}

/// A content waiting to be uploaded.
#[derive(Clone, Debug)]
struct Want {
    path: String,
    media_type: String,
    bytes: u64,
}

#[derive(Default)]
struct State {
    /// Uploaded contents' URLs, by SHA-256 (a cache of `assets`).
    urls: HashMap<String, String>,
    /// Files checked this run: their current SHA-256 (or why they cannot be used).
    checked: HashMap<String, Result<(String, String, u64), String>>,
    /// Contents some task waits for, not yet in a call.
    wanted: BTreeMap<String, Want>,
    /// A call is under way.
    uploading: bool,
    /// Contents whose last call failed, with why (for the tasks that waited for them).
    failed: HashMap<String, String>,
}

pub struct Uploader {
    client: UploadClient,
    state: Mutex<State>,
    done: Notify,
}

impl Uploader {
    pub fn new(client: UploadClient) -> Uploader {
        Uploader {
            client,
            state: Mutex::new(State::default()),
            done: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The body to submit for `params`: each local image replaced by its uploaded URL
    /// (uploading what is not uploaded yet). Parameters without local images come back as they
    /// are.
    pub(super) async fn body(&self, s: &Shared, params: &str) -> Result<String, UploadError> {
        if !params.contains("\"file:") {
            return Ok(params.to_string());
        }
        let mut body: serde_json::Map<String, Value> =
            serde_json::from_str(params).map_err(|e| UploadError::Local(e.into()))?;
        for field in ["image", "last_image"] {
            let Some(path) = body.get(field).and_then(Value::as_str).and_then(file_of) else {
                continue;
            };
            let url = self.url_of(s, &path.to_string_lossy()).await?;
            body.insert(field.to_string(), Value::String(url));
        }
        serde_json::to_string(&body).map_err(|e| UploadError::Local(e.into()))
    }

    /// The uploaded URL of the file at `path` (its content as imported).
    async fn url_of(&self, s: &Shared, path: &str) -> Result<String, UploadError> {
        let store = &s.store;
        let (sha, media_type, bytes) = self.check(store, path).await?;
        loop {
            {
                // Uploaded (perhaps by a call this task waited for, after it had asked for the
                // content again): no longer wanted.
                let mut st = self.lock();
                if let Some(url) = st.urls.get(&sha).cloned() {
                    st.wanted.remove(&sha);
                    return Ok(url);
                }
            }
            if let Some(url) = store.asset(&sha).await.map_err(UploadError::Local)? {
                let mut st = self.lock();
                st.wanted.remove(&sha);
                st.urls.insert(sha.clone(), url.clone());
                return Ok(url);
            }
            // Wanted: upload it (with whatever else is wanted), or wait for the call under way.
            let lead = {
                let mut st = self.lock();
                if let Some(why) = st.failed.remove(&sha) {
                    return Err(UploadError::Job(why));
                }
                st.wanted.entry(sha.clone()).or_insert_with(|| Want {
                    path: path.to_string(),
                    media_type: media_type.clone(),
                    bytes,
                });
                !std::mem::replace(&mut st.uploading, true)
            };
            if lead {
                let result = self.upload_wanted(s, &sha).await;
                self.lock().uploading = false;
                self.done.notify_waiters();
                result?;
            } else {
                let waiting = self.done.notified();
                if self.lock().uploading {
                    waiting.await;
                }
            }
        }
    }

    /// Reads a file once per run: its SHA-256 must still be the one recorded at import.
    async fn check(&self, store: &Store, path: &str) -> Result<(String, String, u64), UploadError> {
        if let Some(known) = self.lock().checked.get(path) {
            return known.clone().map_err(UploadError::Job);
        }
        let recorded = store.local_file(path).await.map_err(UploadError::Local)?;
        let owned = path.to_string();
        let now = tokio::task::spawn_blocking(move || hash_file(&owned))
            .await
            .map_err(|e| UploadError::Local(e.into()))?;
        let result = match (now, recorded) {
            (Err(e), _) => Err(format!("the image {path} cannot be read: {e}")),
            (Ok((sha, _)), Some(rec)) if sha != rec.sha256 => Err(format!(
                "the image {path} changed since it was imported (SHA-256 {} then, {} now): to use the new \
                 picture, import the manifest again, then `wanbatch retry --ids` this job",
                &rec.sha256[..12],
                &sha[..12]
            )),
            (Ok((sha, bytes)), Some(rec)) => Ok((sha, rec.media_type, bytes)),
            (Ok((sha, bytes)), None) => {
                // Imported, but not recorded (the run stopped in between): this content it is.
                let head = std::fs::read(path)
                    .ok()
                    .map(|b| b[..b.len().min(16)].to_vec())
                    .unwrap_or_default();
                match crate::manifest::local::image_type(&head) {
                    Some(media) => Ok((sha, media.to_string(), bytes)),
                    None => Err(format!(
                        "the image {path} is no longer a PNG, JPEG, WebP, GIF or BMP image"
                    )),
                }
            }
        };
        self.lock().checked.insert(path.to_string(), result.clone());
        result.map_err(UploadError::Job)
    }

    /// One upload call: `mine` and whatever else is wanted, up to a call's worth.
    async fn upload_wanted(&self, s: &Shared, mine: &str) -> Result<(), UploadError> {
        let store = &s.store;
        let batch: Vec<(String, Want)> = {
            let mut st = self.lock();
            let mut batch = Vec::new();
            let mut bytes = 0;
            let mut keys: Vec<String> = std::iter::once(mine.to_string())
                .chain(st.wanted.keys().filter(|k| *k != mine).cloned())
                .collect();
            keys.truncate(PER_CALL);
            for k in keys {
                if st.urls.contains_key(&k) {
                    // Asked for while the call that uploaded it was under way: done already.
                    st.wanted.remove(&k);
                    continue;
                }
                let Some(w) = st.wanted.get(&k) else { continue };
                if !batch.is_empty() && bytes + w.bytes > BYTES_PER_CALL {
                    break;
                }
                bytes += w.bytes;
                let w = st.wanted.remove(&k).expect("just seen");
                batch.push((k, w));
            }
            batch
        };
        if batch.is_empty() {
            return Ok(());
        }
        let mut urls = Vec::with_capacity(batch.len());
        for (_, w) in &batch {
            let bytes = tokio::fs::read(&w.path)
                .await
                .map_err(|e| UploadError::Job(format!("the image {} cannot be read: {e}", w.path)))?;
            urls.push(data_url(&w.media_type, &bytes));
        }
        let shas: Vec<String> = batch.iter().map(|(sha, _)| sha.clone()).collect();
        store.begin_upload(&shas).await.map_err(UploadError::Local)?;
        s.gate.acquire().await;
        let result = self.client.upload(&urls).await;
        super::tasks::note(s, &result);
        match result {
            Ok(got) => {
                let done: Vec<(String, String, i64)> = batch
                    .iter()
                    .zip(got)
                    .map(|((sha, w), url)| (sha.clone(), url, w.bytes as i64))
                    .collect();
                store.record_uploads(&done).await.map_err(UploadError::Local)?;
                tracing::info!(files = done.len(), "uploaded local images");
                let mut st = self.lock();
                for (sha, url, _) in done {
                    st.urls.insert(sha, url);
                }
                Ok(())
            }
            Err(e) => {
                store.end_upload(&shas).await.map_err(UploadError::Local)?;
                let refused = matches!(e, ApiError::Rejected { .. });
                let mut st = self.lock();
                for (sha, w) in &batch {
                    if refused {
                        // The storage refused the file itself: the jobs naming it fail.
                        st.failed.insert(
                            sha.clone(),
                            format!("Segmind's storage refused the image {}: {e}", w.path),
                        );
                    }
                }
                if refused {
                    Ok(())
                } else {
                    Err(UploadError::Api(e))
                }
            }
        }
    }
}

/// A file's SHA-256 and size.
fn hash_file(path: &str) -> std::io::Result<(String, u64)> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut bytes = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        bytes += n as u64;
    }
    Ok((hex::encode(hasher.finalize()), bytes))
}
