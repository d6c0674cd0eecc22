-- Multipart uploads of videos to an object store (`--out s3://…`) under way: recorded before
-- their first part, removed once completed or aborted. A row found at start-up is an upload a
-- dead run left: it is aborted (never completed), and its job, still `downloading`, uploads again.
-- The twin of migrations/sqlite/0011_object_uploads.sql.
CREATE TABLE object_uploads (
    upload_id   TEXT PRIMARY KEY,
    job_seq     BIGINT  NOT NULL,
    request_id  TEXT    NOT NULL,
    store_url   TEXT    NOT NULL,
    object_key  TEXT    NOT NULL,
    started_at  BIGINT  NOT NULL
);
