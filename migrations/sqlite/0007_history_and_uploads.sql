-- Local images and their uploads (src/engine/upload.rs): every local file named by a manifest,
-- as checked at import; every content uploaded to Segmind's storage, once per database; and the
-- uploads under way (written before the call: one left at start-up may have uploaded twice).
CREATE TABLE local_files (
    path         TEXT PRIMARY KEY,            -- canonical absolute path (file:// URL in params)
    sha256       TEXT    NOT NULL,
    bytes        INTEGER NOT NULL,
    media_type   TEXT    NOT NULL,
    imported_at  INTEGER NOT NULL
);
CREATE TABLE assets (
    sha256       TEXT PRIMARY KEY,
    url          TEXT    NOT NULL,
    bytes        INTEGER NOT NULL,
    uploaded_at  INTEGER NOT NULL
);
CREATE TABLE upload_intents (
    sha256       TEXT PRIMARY KEY,
    started_at   INTEGER NOT NULL
);

-- Counters of the campaign that belong to no job (uploads repeated after a crash, …).
CREATE TABLE counters (
    name   TEXT PRIMARY KEY,
    value  INTEGER NOT NULL
);

-- Every request Segmind's request history holds for a job (src/engine/history.rs, `reconcile`):
-- one of its attempts, a lost submit found and adopted, a duplicate billed beside it, or found by
-- its body by `reconcile`; with what it cost.
CREATE TABLE charges (
    request_id      TEXT PRIMARY KEY,
    job_seq         INTEGER NOT NULL REFERENCES jobs (seq),
    status          TEXT,
    credits         REAL,
    created_at      INTEGER,
    generation_url  TEXT,
    how             TEXT    NOT NULL,   -- attempt, adopted, duplicate, found
    seen_at         INTEGER NOT NULL
);
CREATE INDEX charges_job ON charges (job_seq);

-- What the request history settled, per job: lost submits found (adopted), proven never created,
-- not provable (the history could not answer); expired results recovered from it; requests billed
-- beside an adopted one; and `reconcile`'s exact figures (NULL until it ran).
ALTER TABLE jobs ADD COLUMN unknown_adopted    INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN unknown_absent     INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN unknown_unprovable INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN history_recovered  INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN billed_duplicates  INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN true_cost          REAL;
ALTER TABLE jobs ADD COLUMN double_charges     INTEGER;
ALTER TABLE jobs ADD COLUMN reconciled_at      INTEGER;

-- The few jobs the history settled something for: `status` sums them from this index alone.
CREATE INDEX jobs_history ON jobs (seq)
    WHERE unknown_adopted + unknown_absent + unknown_unprovable + history_recovered + billed_duplicates > 0
       OR reconciled_at IS NOT NULL;
