//! Multipart uploads to an object store under way (migration 0011, `object_uploads`): recorded
//! before an upload's first part, cleared once it is completed or aborted (`output::stream`).
//! What is left at start-up belongs to a run that died mid-upload: `output::recover_uploads`
//! aborts it. Bookkeeping beside the jobs, not a state move: the job stays `downloading`
//! throughout, and only the door moves it.

use crate::sql_args;

use super::db;
use super::{now_ms, Store};

/// An upload under way, as recorded.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct ObjectUpload {
    /// The store's id of the multipart upload.
    pub upload_id: String,
    pub job_seq: i64,
    pub request_id: String,
    /// The bucket, `s3://bucket` (no prefix: `object_key` is the whole key).
    pub store_url: String,
    pub object_key: String,
    pub started_at: i64,
}

impl Store {
    /// Records an upload just begun, before any of its parts goes.
    pub async fn begin_object_upload(
        &self,
        job_seq: i64,
        request_id: &str,
        store_url: &str,
        object_key: &str,
        upload_id: &str,
    ) -> anyhow::Result<()> {
        self.exec(
            "INSERT INTO object_uploads (upload_id, job_seq, request_id, store_url, object_key, started_at)
             VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (upload_id) DO NOTHING",
            sql_args![
                upload_id.to_owned(),
                job_seq,
                request_id.to_owned(),
                store_url.to_owned(),
                object_key.to_owned(),
                now_ms()
            ],
        )
        .await?;
        Ok(())
    }

    /// An upload completed or aborted: its record goes.
    pub async fn end_object_upload(&self, upload_id: &str) -> anyhow::Result<()> {
        self.exec(
            "DELETE FROM object_uploads WHERE upload_id = ?",
            sql_args![upload_id.to_owned()],
        )
        .await?;
        Ok(())
    }

    /// The recorded uploads no runner can still be working: their job is gone, no longer
    /// `downloading`, or downloading another request. (With several runners on PostgreSQL, an
    /// upload of a job still downloading may be another runner's, live: that one is aborted only
    /// by whoever uploads the job next, `object_uploads_of`.)
    pub async fn stale_object_uploads(&self) -> anyhow::Result<Vec<ObjectUpload>> {
        db::query_as(
            "SELECT o.upload_id, o.job_seq, o.request_id, o.store_url, o.object_key, o.started_at
             FROM object_uploads o LEFT JOIN jobs j ON j.seq = o.job_seq
             WHERE j.seq IS NULL OR j.state <> 'downloading' OR j.request_id IS NULL
                OR j.request_id <> o.request_id
             ORDER BY o.started_at, o.upload_id",
        )
        .fetch_all(&self.read)
        .await
    }

    /// The recorded uploads of one job (an earlier attempt's, left by a failed abort or a dead
    /// runner): the job's next upload aborts them first.
    pub async fn object_uploads_of(&self, job_seq: i64) -> anyhow::Result<Vec<ObjectUpload>> {
        db::query_as(
            "SELECT upload_id, job_seq, request_id, store_url, object_key, started_at
             FROM object_uploads WHERE job_seq = ? ORDER BY started_at, upload_id",
        )
        .bind(job_seq)
        .fetch_all(&self.read)
        .await
    }

    /// The uploads recorded as under way, oldest first.
    pub async fn object_uploads(&self) -> anyhow::Result<Vec<ObjectUpload>> {
        db::query_as(
            "SELECT upload_id, job_seq, request_id, store_url, object_key, started_at
             FROM object_uploads ORDER BY started_at, upload_id",
        )
        .fetch_all(&self.read)
        .await
    }
}
