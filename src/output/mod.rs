//! Object storage outputs: `--out s3://bucket/prefix` (also `gs://bucket/prefix` and
//! `az://container/prefix`) through the `object_store` crate; a plain path stays a folder.
//!
//! - Credentials come from each cloud's own environment chain, as `object_store` reads it
//!   (`AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`/`AWS_SESSION_TOKEN`, web identity, the container
//!   and instance endpoints; `GOOGLE_SERVICE_ACCOUNT`/`GOOGLE_SERVICE_ACCOUNT_KEY`, gcloud's
//!   application-default credentials, the metadata server; `AZURE_STORAGE_ACCOUNT_NAME` with
//!   `AZURE_STORAGE_ACCOUNT_KEY`, a SAS, a client secret, …): never a flag, never logged, never
//!   stored. An S3-compatible server is named by `AWS_ENDPOINT_URL` (`AWS_ALLOW_HTTP=true`
//!   for plain http). Only the URL (`s3://bucket/prefix`) is stored with the campaign.
//! - `Bucket` owns one store client and its retry policy: server errors (S3's `503 SlowDown`
//!   among them) and lost connections are retried with jittered exponential backoff for at most
//!   `patience` (the run's `--unreachable-after`); after that the caller stops the run (exit 4).
//! - `check_writable` is what `run` asks before any submit: a multipart upload begun and aborted
//!   under the prefix, which proves the bucket exists and the credentials may write, and leaves
//!   no object behind.
//! - Videos go up in `stream` (multipart, checked on the way, completed only when whole); the
//!   uploads under way are recorded in the database (`store::outputs`) and aborted at the next
//!   start (`recover_uploads`) if a run died with them.

pub mod stream;

use std::sync::Arc;
use std::time::Duration;

use object_store::multipart::MultipartStore;
use object_store::path::Path as Key;
use object_store::{BackoffConfig, ObjectStore, PutPayload, RetryConfig};

use crate::exit::Failure;
use crate::store::Store;

/// Which cloud a bucket URL names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cloud {
    S3,
    Gcs,
    Azure,
}

/// `--out` as an object-store URL: the bucket (or Azure container) and the key prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BucketUrl {
    pub cloud: Cloud,
    /// The bucket's (container's) name.
    pub bucket: String,
    /// The key prefix every output goes under, without leading or trailing `/` (may be empty).
    pub prefix: String,
}

/// Whether `text` is meant as a URL rather than a folder (it has a scheme).
pub fn looks_like_url(text: &str) -> bool {
    text.split_once("://")
        .is_some_and(|(s, _)| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '+'))
}

impl BucketUrl {
    /// `None`: not a URL, a folder. An error: a URL that cannot be used as an output.
    pub fn parse(text: &str) -> Result<Option<BucketUrl>, String> {
        if !looks_like_url(text) {
            return Ok(None);
        }
        let (scheme, rest) = text.split_once("://").expect("looks_like_url checked it");
        let cloud = match scheme.to_ascii_lowercase().as_str() {
            "s3" => Cloud::S3,
            "gs" => Cloud::Gcs,
            "az" => Cloud::Azure,
            other => {
                return Err(format!(
                    "{text}: {other}:// is not an output wanbatch can write to; give a folder, or a bucket \
                     as s3://bucket/prefix, gs://bucket/prefix or az://container/prefix"
                ))
            }
        };
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let name_ok = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '.' | '_');
        if bucket.is_empty() || !bucket.chars().all(name_ok) {
            return Err(format!(
                "{text}: {bucket:?} is not a bucket name (lower-case letters, digits, '-', '.', '_'; \
                 credentials never go in the URL)"
            ));
        }
        let prefix = prefix.trim_matches('/');
        if prefix.contains('?') || prefix.contains('#') {
            return Err(format!("{text}: a prefix with a query or fragment cannot be used"));
        }
        Key::parse(prefix).map_err(|e| format!("{text}: the prefix {prefix:?} is not a valid key prefix: {e}"))?;
        Ok(Some(BucketUrl {
            cloud,
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
        }))
    }

    fn scheme(&self) -> &'static str {
        match self.cloud {
            Cloud::S3 => "s3",
            Cloud::Gcs => "gs",
            Cloud::Azure => "az",
        }
    }

    /// `s3://bucket` (what a store client is made for, and what the database records).
    pub fn root(&self) -> String {
        format!("{}://{}", self.scheme(), self.bucket)
    }

    /// The key of `name` under the prefix.
    pub fn key(&self, name: &str) -> Key {
        if self.prefix.is_empty() {
            Key::from(name)
        } else {
            Key::from(format!("{}/{name}", self.prefix))
        }
    }

    /// `s3://bucket/prefix/name`: how an output is named to the user and in the database.
    pub fn url_of(&self, name: &str) -> String {
        format!("{}/{}", self.root(), self.key(name))
    }
}

impl std::fmt::Display for BucketUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.prefix.is_empty() {
            write!(f, "{}", self.root())
        } else {
            write!(f, "{}/{}", self.root(), self.prefix)
        }
    }
}

/// A bucket opened for writing: one client, shared by every upload of the run.
pub struct Bucket {
    pub url: BucketUrl,
    store: Arc<dyn ObjectStore>,
    multipart: Arc<dyn MultipartStore>,
}

impl std::fmt::Debug for Bucket {
    // The client holds credentials: only the URL is shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Bucket({})", self.url)
    }
}

/// Why a store operation failed, as the run must treat it.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The bucket (container) does not exist.
    #[error("{0}")]
    NoBucket(String),
    /// The credentials were refused.
    #[error("{0}")]
    Refused(String),
    /// The store did not answer, or kept failing, for the whole patience.
    #[error("{0}")]
    Down(String),
}

impl StoreError {
    /// The exit-code-deciding failure of a check before the run.
    pub fn into_failure(self) -> anyhow::Error {
        match self {
            StoreError::NoBucket(m) => Failure::Usage(m).into(),
            StoreError::Refused(m) => Failure::Account(m).into(),
            StoreError::Down(m) => anyhow::anyhow!(m),
        }
    }
}

impl Bucket {
    /// A client for `url`, credentials and endpoint from the environment. Store errors are
    /// retried with backoff for at most `patience`.
    pub fn open(url: &BucketUrl, patience: Duration) -> anyhow::Result<Bucket> {
        let retry = RetryConfig {
            backoff: BackoffConfig {
                init_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(15),
                base: 2.0,
            },
            // The time bounds the retries, not their number.
            max_retries: 1000,
            retry_timeout: patience,
        };
        let root = url.root();
        let usage = |e: object_store::Error| Failure::Usage(format!("--out {url}: {e}"));
        let (store, multipart): (Arc<dyn ObjectStore>, Arc<dyn MultipartStore>) = match url.cloud {
            Cloud::S3 => {
                let s = object_store::aws::AmazonS3Builder::from_env()
                    .with_url(root)
                    .with_retry(retry)
                    .build()
                    .map_err(usage)?;
                let s = Arc::new(s);
                (s.clone(), s)
            }
            Cloud::Gcs => {
                let s = object_store::gcp::GoogleCloudStorageBuilder::from_env()
                    .with_url(root)
                    .with_retry(retry)
                    .build()
                    .map_err(usage)?;
                let s = Arc::new(s);
                (s.clone(), s)
            }
            Cloud::Azure => {
                let s = object_store::azure::MicrosoftAzureBuilder::from_env()
                    .with_url(root)
                    .with_retry(retry)
                    .build()
                    .map_err(usage)?;
                let s = Arc::new(s);
                (s.clone(), s)
            }
        };
        Ok(Bucket {
            url: url.clone(),
            store,
            multipart,
        })
    }

    /// Names what went wrong with a store call, as the run must treat it.
    pub fn classify(&self, what: &str, e: object_store::Error) -> StoreError {
        let b = &self.url;
        match e {
            object_store::Error::NotFound { .. } => StoreError::NoBucket(format!(
                "the bucket {} does not exist, or is not visible to these credentials ({what} under --out {b}); \
                 create it or fix --out",
                b.bucket
            )),
            object_store::Error::PermissionDenied { .. } | object_store::Error::Unauthenticated { .. } => {
                StoreError::Refused(format!(
                    "the bucket {} refused these credentials ({what} under --out {b}: {e}); check the \
                     cloud's credentials in the environment",
                    b.bucket
                ))
            }
            e => StoreError::Down(format!(
                "the object store holding bucket {} kept failing ({what} under --out {b}: {e}); check the \
                 network and AWS_ENDPOINT_URL if you set it; --unreachable-after sets how long to retry",
                b.bucket
            )),
        }
    }

    /// Before any submit: the bucket exists and these credentials may write under the prefix.
    /// A multipart upload is begun and aborted: nothing is left in the bucket.
    pub async fn check_writable(&self) -> Result<(), StoreError> {
        let key = self.url.key(".wanbatch-write-check");
        let id = self
            .multipart
            .create_multipart(&key)
            .await
            .map_err(|e| self.classify("starting an upload", e))?;
        self.multipart
            .abort_multipart(&key, &id)
            .await
            .map_err(|e| self.classify("aborting the check's upload", e))
    }

    /// Puts a small object (a sidecar, the report) in one request: visible whole or not at all.
    pub async fn put(&self, name: &str, bytes: Vec<u8>) -> Result<(), StoreError> {
        self.store
            .put(&self.url.key(name), PutPayload::from(bytes))
            .await
            .map(|_| ())
            .map_err(|e| self.classify(&format!("writing {name}"), e))
    }

    pub(crate) fn multipart(&self) -> &dyn MultipartStore {
        &*self.multipart
    }
}

/// At start-up, under the run lock: aborts the multipart uploads a dead run left (recorded in the
/// database before their first part), so none lingers and none is ever completed (on
/// PostgreSQL, where other runners may be uploading, only those whose job moved on; the rest are
/// aborted by the job's next upload, `stream::upload`). Each job whose
/// upload is aborted is still `downloading` and is fetched and uploaded again (at most one
/// repeated upload per job). Returns how many were aborted; one that cannot be aborted now stays
/// recorded for the next start.
pub async fn recover_uploads(store: &Store, current: Option<&Bucket>, patience: Duration) -> anyhow::Result<u64> {
    let mut aborted = 0;
    // SQLite: this run holds the campaign alone (the run lock), so every recorded upload is a
    // dead run's. PostgreSQL: other runners may be uploading; only the stale ones go here.
    let left = if store.is_pg() {
        store.stale_object_uploads().await?
    } else {
        store.object_uploads().await?
    };
    for u in left {
        let opened;
        let bucket = match current.filter(|b| b.url.root() == u.store_url) {
            Some(b) => b,
            None => {
                let Ok(Some(url)) = BucketUrl::parse(&u.store_url) else {
                    store.end_object_upload(&u.upload_id).await?;
                    continue;
                };
                match Bucket::open(&url, patience) {
                    Ok(b) => {
                        opened = b;
                        &opened
                    }
                    Err(e) => {
                        tracing::warn!(bucket = %u.store_url, error = %format!("{e:#}"), "cannot abort an interrupted upload now");
                        continue;
                    }
                }
            }
        };
        let key = Key::from(u.object_key.as_str());
        match bucket.multipart().abort_multipart(&key, &u.upload_id).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {
                store.end_object_upload(&u.upload_id).await?;
                aborted += 1;
            }
            Err(e) => {
                tracing::warn!(key = %key, error = %e, "cannot abort an interrupted upload now; the next run tries again");
            }
        }
    }
    Ok(aborted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_a_cloud_a_bucket_and_a_prefix() {
        let u = BucketUrl::parse("s3://videos/run-1/").unwrap().unwrap();
        assert_eq!(
            (u.cloud, u.bucket.as_str(), u.prefix.as_str()),
            (Cloud::S3, "videos", "run-1")
        );
        assert_eq!(u.url_of("a.mp4"), "s3://videos/run-1/a.mp4");
        assert_eq!(u.to_string(), "s3://videos/run-1");
        let g = BucketUrl::parse("gs://b").unwrap().unwrap();
        assert_eq!((g.cloud, g.prefix.as_str()), (Cloud::Gcs, ""));
        assert_eq!(g.url_of("x.json"), "gs://b/x.json");
        assert_eq!(BucketUrl::parse("az://c/p/q").unwrap().unwrap().cloud, Cloud::Azure);
        assert_eq!(BucketUrl::parse("outputs/videos").unwrap(), None, "a folder");
        assert_eq!(BucketUrl::parse("/abs/path").unwrap(), None, "a folder");
    }

    #[test]
    fn a_bucket_checked_before_a_run_ends_it_with_the_right_code() {
        use crate::exit::{code_of, Outcome};
        let code = |e: StoreError| code_of(&e.into_failure());
        assert_eq!(code(StoreError::NoBucket("no bucket".into())), Outcome::Usage);
        assert_eq!(code(StoreError::Refused("refused".into())), Outcome::Account);
        assert_eq!(code(StoreError::Down("down".into())), Outcome::Local);
    }

    #[test]
    fn unusable_urls_are_refused() {
        for bad in [
            "ftp://host/x",
            "http://bucket/x",
            "s3://",
            "s3:///prefix",
            "s3://Key:Secret@bucket/x",
            "s3://b/a/../c",
            "s3://b/p?x=1",
        ] {
            assert!(BucketUrl::parse(bad).is_err(), "{bad} should be refused");
        }
    }
}
