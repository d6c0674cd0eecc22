-- The PostgreSQL schema: the same tables, columns and indexes as the SQLite migrations
-- (migrations/sqlite/0001 … 0009) arrive at, in PostgreSQL's types (INTEGER → BIGINT,
-- REAL → DOUBLE PRECISION). One file, since no PostgreSQL database predates it; later changes
-- come as migrations of their own, beside their SQLite twins. tests/pg_schema.rs checks that
-- both backends' schemas agree, column by column.

CREATE TABLE jobs (
    seq                 BIGINT PRIMARY KEY,
    id                  TEXT    NOT NULL UNIQUE,
    params              TEXT    NOT NULL,
    params_hash         TEXT    NOT NULL,
    source              TEXT    NOT NULL,
    state               TEXT    NOT NULL CHECK (state IN (
                            'pending', 'submitting', 'unknown', 'running', 'downloading', 'done', 'failed',
                            'cancelled')),
    attempts            BIGINT  NOT NULL DEFAULT 0,
    request_id          TEXT,
    status_url          TEXT,
    response_url        TEXT,
    submitted_at        BIGINT,
    due_at              BIGINT  NOT NULL DEFAULT 0,
    polls               BIGINT  NOT NULL DEFAULT 0,
    attempt_polls       BIGINT  NOT NULL DEFAULT 0,
    errors_in_row       BIGINT  NOT NULL DEFAULT 0,
    last_pending_at     BIGINT,
    output_url          TEXT,
    output_size         BIGINT,
    completed_at        BIGINT,
    cost                DOUBLE PRECISION,
    output_path         TEXT,
    bytes               BIGINT,
    sha256              TEXT,
    downloaded_at       BIGINT,
    error               TEXT,
    resubmits_unknown   BIGINT  NOT NULL DEFAULT 0,
    resubmits_expired   BIGINT  NOT NULL DEFAULT 0,
    resubmits_failed    BIGINT  NOT NULL DEFAULT 0,
    maybe_billed_twice  BIGINT  NOT NULL DEFAULT 0,
    created_at          BIGINT  NOT NULL,
    updated_at          BIGINT  NOT NULL,
    unknown_adopted     BIGINT  NOT NULL DEFAULT 0,
    unknown_absent      BIGINT  NOT NULL DEFAULT 0,
    unknown_unprovable  BIGINT  NOT NULL DEFAULT 0,
    history_recovered   BIGINT  NOT NULL DEFAULT 0,
    billed_duplicates   BIGINT  NOT NULL DEFAULT 0,
    true_cost           DOUBLE PRECISION,
    double_charges      BIGINT,
    reconciled_at       BIGINT,
    video_width         BIGINT,
    video_height        BIGINT,
    video_frames        BIGINT,
    video_fps           DOUBLE PRECISION,
    video_duration      DOUBLE PRECISION,
    video_codec         TEXT,
    video_mismatch      TEXT,
    review              TEXT CHECK (review IN ('keep', 'reject')),
    review_note         TEXT,
    reviewed_at         BIGINT,
    resubmits_rejected  BIGINT  NOT NULL DEFAULT 0,
    -- Several runners (planned, docs/design.md): the runner a job at Segmind is leased to, and
    -- the lease's epoch, bumped on every change of owner and checked by every transition.
    lease_owner         TEXT,
    lease_epoch         BIGINT  NOT NULL DEFAULT 0
);

CREATE INDEX jobs_state_seq ON jobs (state, seq);
CREATE INDEX jobs_tally ON jobs (
    state, attempts, resubmits_unknown, resubmits_expired, resubmits_failed, maybe_billed_twice, cost, completed_at
);
CREATE INDEX jobs_billed_twice ON jobs (seq) WHERE maybe_billed_twice <> 0;
CREATE INDEX jobs_history ON jobs (seq)
    WHERE unknown_adopted + unknown_absent + unknown_unprovable + history_recovered + billed_duplicates > 0
       OR reconciled_at IS NOT NULL;
CREATE INDEX jobs_flags ON jobs (seq) WHERE video_mismatch IS NOT NULL OR review IS NOT NULL;

CREATE TABLE attempts (
    job_seq      BIGINT  NOT NULL REFERENCES jobs (seq),
    n            BIGINT  NOT NULL,
    started_at   BIGINT  NOT NULL,
    request_id   TEXT,
    outcome      TEXT,        -- NULL while open; accepted, completed, failed, expired, unknown, refused, rejected, not_sent
    detail       TEXT,
    finished_at  BIGINT,
    PRIMARY KEY (job_seq, n)
);

CREATE TABLE charges (
    request_id      TEXT PRIMARY KEY,
    job_seq         BIGINT  NOT NULL REFERENCES jobs (seq),
    status          TEXT,
    credits         DOUBLE PRECISION,
    created_at      BIGINT,
    generation_url  TEXT,
    how             TEXT    NOT NULL,   -- attempt, adopted, duplicate, found
    seen_at         BIGINT  NOT NULL
);
CREATE INDEX charges_job ON charges (job_seq);

CREATE TABLE counters (
    name   TEXT PRIMARY KEY,
    value  BIGINT NOT NULL
);

CREATE TABLE settings (
    key         TEXT PRIMARY KEY,
    value       TEXT    NOT NULL,
    updated_at  BIGINT  NOT NULL
);

CREATE TABLE facts (
    key      TEXT PRIMARY KEY,
    value    TEXT    NOT NULL,
    detail   TEXT    NOT NULL DEFAULT '',
    seen_at  BIGINT  NOT NULL
);

CREATE TABLE timing_models (
    class       TEXT PRIMARY KEY,
    mu          DOUBLE PRECISION NOT NULL,
    sigma       DOUBLE PRECISION NOT NULL,
    jobs        BIGINT  NOT NULL,
    updated_at  BIGINT  NOT NULL
);

-- The first timing table (SQLite's 0006 era): only an old SQLite campaign has rows in it, but the
-- query that reads it is shared, so it exists here too (always empty).
CREATE TABLE durations (
    class          TEXT PRIMARY KEY,
    samples        BIGINT  NOT NULL,
    first_poll_ms  DOUBLE PRECISION NOT NULL,
    second_spread  DOUBLE PRECISION NOT NULL,
    updated_at     BIGINT  NOT NULL
);

CREATE TABLE local_files (
    path         TEXT PRIMARY KEY,
    sha256       TEXT    NOT NULL,
    bytes        BIGINT  NOT NULL,
    media_type   TEXT    NOT NULL,
    imported_at  BIGINT  NOT NULL
);

CREATE TABLE assets (
    sha256       TEXT PRIMARY KEY,
    url          TEXT    NOT NULL,
    bytes        BIGINT  NOT NULL,
    uploaded_at  BIGINT  NOT NULL
);

CREATE TABLE upload_intents (
    sha256       TEXT PRIMARY KEY,
    started_at   BIGINT  NOT NULL
);

CREATE TABLE runners (
    id            TEXT PRIMARY KEY,
    host          TEXT    NOT NULL,
    pid           BIGINT  NOT NULL,
    key_hash      TEXT    NOT NULL,
    started_at    BIGINT  NOT NULL,
    heartbeat_at  BIGINT  NOT NULL,
    stopped_at    BIGINT
);
