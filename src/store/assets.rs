//! Local images and their uploads (migration 0007): the files manifests named, as checked at
//! import; the contents uploaded to Segmind, one URL per SHA-256; the uploads under way.
//!
//! An upload is recorded as an intent before its call and replaced by its asset after: an intent
//! found at start-up is an upload that may have happened without its URL being kept — it will be
//! uploaded again, and the repeat is counted (`counters.uploads_repeated`).

use crate::manifest::LocalImage;
use crate::sql_args;

use super::db;
use super::{now_ms, Store};

/// A local file as recorded at import.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct LocalFile {
    pub path: String,
    pub sha256: String,
    pub bytes: i64,
    pub media_type: String,
}

/// Counter names.
pub const UPLOADS_REPEATED: &str = "uploads_repeated";
pub const UPLOADS: &str = "uploads";

impl Store {
    /// Records the local files an import named (a file imported again takes its new content).
    pub async fn record_local_files(&self, files: &[LocalImage]) -> anyhow::Result<()> {
        if files.is_empty() {
            return Ok(());
        }
        let now = now_ms();
        let mut tx = self.write.begin().await?;
        for f in files {
            db::query(
                "INSERT INTO local_files (path, sha256, bytes, media_type, imported_at) VALUES (?, ?, ?, ?, ?)
                 ON CONFLICT(path) DO UPDATE SET sha256 = excluded.sha256, bytes = excluded.bytes,
                     media_type = excluded.media_type, imported_at = excluded.imported_at",
            )
            .bind(f.path.to_string_lossy().as_ref())
            .bind(&f.sha256)
            .bind(f.bytes as i64)
            .bind(f.media_type)
            .bind(now)
            .execute(&mut tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn local_file(&self, path: &str) -> anyhow::Result<Option<LocalFile>> {
        db::query_as("SELECT path, sha256, bytes, media_type FROM local_files WHERE path = ?")
            .bind(path)
            .fetch_optional(&self.read)
            .await
    }

    /// The uploaded URL of a content, if it was uploaded.
    pub async fn asset(&self, sha256: &str) -> anyhow::Result<Option<String>> {
        db::query_scalar("SELECT url FROM assets WHERE sha256 = ?")
            .bind(sha256)
            .fetch_maybe(&self.read)
            .await
    }

    /// How many of these contents are not uploaded yet (for a dry run).
    pub async fn missing_assets(&self, sha256s: &[String]) -> anyhow::Result<usize> {
        let mut missing = 0;
        for sha in sha256s {
            missing += usize::from(self.asset(sha).await?.is_none());
        }
        Ok(missing)
    }

    /// Records that these contents are being uploaded (committed before the call).
    pub async fn begin_upload(&self, sha256s: &[String]) -> anyhow::Result<()> {
        for sha in sha256s {
            self.exec(
                "INSERT INTO upload_intents (sha256, started_at) VALUES (?, ?) ON CONFLICT DO NOTHING",
                sql_args![sha.clone(), now_ms()],
            )
            .await?;
        }
        Ok(())
    }

    /// Records uploaded contents and their URLs (and that their uploads are over).
    pub async fn record_uploads(&self, done: &[(String, String, i64)]) -> anyhow::Result<()> {
        for (sha, url, bytes) in done {
            self.exec(
                "INSERT INTO assets (sha256, url, bytes, uploaded_at) VALUES (?, ?, ?, ?)
                         ON CONFLICT (sha256) DO UPDATE SET url = excluded.url, bytes = excluded.bytes,
                             uploaded_at = excluded.uploaded_at;
                     DELETE FROM upload_intents WHERE sha256 = ?;
                     INSERT INTO counters (name, value) VALUES ('uploads', 1)
                         ON CONFLICT(name) DO UPDATE SET value = counters.value + 1",
                sql_args![sha.clone(), url.clone(), *bytes, now_ms(), sha.clone()],
            )
            .await?;
        }
        Ok(())
    }

    /// An upload that ended without a URL (refused, lost): its intent goes.
    pub async fn end_upload(&self, sha256s: &[String]) -> anyhow::Result<()> {
        for sha in sha256s {
            self.exec("DELETE FROM upload_intents WHERE sha256 = ?", sql_args![sha.clone()])
                .await?;
        }
        Ok(())
    }

    /// At start-up: uploads that were under way when the last run stopped (they may have
    /// happened; they will be made again). Counted, and cleared. Returns how many.
    pub async fn recover_upload_intents(&self) -> anyhow::Result<u64> {
        let mut tx = self.write.begin().await?;
        let n = db::query("DELETE FROM upload_intents").execute(&mut tx).await?;
        if n > 0 {
            db::query(
                "INSERT INTO counters (name, value) VALUES (?, ?)
                 ON CONFLICT(name) DO UPDATE SET value = counters.value + excluded.value",
            )
            .bind(UPLOADS_REPEATED)
            .bind(n as i64)
            .execute(&mut tx)
            .await?;
        }
        tx.commit().await?;
        Ok(n)
    }

    pub async fn counter(&self, name: &str) -> anyhow::Result<i64> {
        Ok(db::query_scalar("SELECT value FROM counters WHERE name = ?")
            .bind(name)
            .fetch_maybe(&self.read)
            .await?
            .unwrap_or(0))
    }
}
