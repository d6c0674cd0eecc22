-- no-transaction
-- The jobs table again, with a CHECK on its state (the database refuses a state the state
-- machine does not have, whatever writes it) and the lease columns of several runners
-- (`lease_owner`: the runner working the job; `lease_epoch`: bumped each time the job changes
-- hands, checked by every transition). SQLite cannot add a CHECK to a table, so the table is
-- made anew and its rows copied (the documented way: foreign keys off around one transaction).
-- Columns keep their names, types and order; the indexes are made again.
PRAGMA foreign_keys = OFF;

BEGIN;

CREATE TABLE jobs_new (
    seq                 INTEGER PRIMARY KEY,
    id                  TEXT    NOT NULL UNIQUE,
    params              TEXT    NOT NULL,
    params_hash         TEXT    NOT NULL,
    source              TEXT    NOT NULL,
    state               TEXT    NOT NULL CHECK (state IN (
                            'pending', 'submitting', 'unknown', 'running', 'downloading', 'done', 'failed',
                            'cancelled')),
    attempts            INTEGER NOT NULL DEFAULT 0,
    request_id          TEXT,
    status_url          TEXT,
    response_url        TEXT,
    submitted_at        INTEGER,
    due_at              INTEGER NOT NULL DEFAULT 0,
    polls               INTEGER NOT NULL DEFAULT 0,
    attempt_polls       INTEGER NOT NULL DEFAULT 0,
    errors_in_row       INTEGER NOT NULL DEFAULT 0,
    last_pending_at     INTEGER,
    output_url          TEXT,
    output_size         INTEGER,
    completed_at        INTEGER,
    cost                REAL,
    output_path         TEXT,
    bytes               INTEGER,
    sha256              TEXT,
    downloaded_at       INTEGER,
    error               TEXT,
    resubmits_unknown   INTEGER NOT NULL DEFAULT 0,
    resubmits_expired   INTEGER NOT NULL DEFAULT 0,
    resubmits_failed    INTEGER NOT NULL DEFAULT 0,
    maybe_billed_twice  INTEGER NOT NULL DEFAULT 0,
    created_at          INTEGER NOT NULL,
    updated_at          INTEGER NOT NULL,
    unknown_adopted     INTEGER NOT NULL DEFAULT 0,
    unknown_absent      INTEGER NOT NULL DEFAULT 0,
    unknown_unprovable  INTEGER NOT NULL DEFAULT 0,
    history_recovered   INTEGER NOT NULL DEFAULT 0,
    billed_duplicates   INTEGER NOT NULL DEFAULT 0,
    true_cost           REAL,
    double_charges      INTEGER,
    reconciled_at       INTEGER,
    video_width         INTEGER,
    video_height        INTEGER,
    video_frames        INTEGER,
    video_fps           REAL,
    video_duration      REAL,
    video_codec         TEXT,
    video_mismatch      TEXT,
    review              TEXT CHECK (review IN ('keep', 'reject')),
    review_note         TEXT,
    reviewed_at         INTEGER,
    resubmits_rejected  INTEGER NOT NULL DEFAULT 0,
    lease_owner         TEXT,
    lease_epoch         INTEGER NOT NULL DEFAULT 0
);

INSERT INTO jobs_new (
    seq, id, params, params_hash, source, state, attempts, request_id, status_url, response_url,
    submitted_at, due_at, polls, attempt_polls, errors_in_row, last_pending_at, output_url,
    output_size, completed_at, cost, output_path, bytes, sha256, downloaded_at, error,
    resubmits_unknown, resubmits_expired, resubmits_failed, maybe_billed_twice, created_at,
    updated_at, unknown_adopted, unknown_absent, unknown_unprovable, history_recovered,
    billed_duplicates, true_cost, double_charges, reconciled_at, video_width, video_height,
    video_frames, video_fps, video_duration, video_codec, video_mismatch, review, review_note,
    reviewed_at, resubmits_rejected)
SELECT
    seq, id, params, params_hash, source, state, attempts, request_id, status_url, response_url,
    submitted_at, due_at, polls, attempt_polls, errors_in_row, last_pending_at, output_url,
    output_size, completed_at, cost, output_path, bytes, sha256, downloaded_at, error,
    resubmits_unknown, resubmits_expired, resubmits_failed, maybe_billed_twice, created_at,
    updated_at, unknown_adopted, unknown_absent, unknown_unprovable, history_recovered,
    billed_duplicates, true_cost, double_charges, reconciled_at, video_width, video_height,
    video_frames, video_fps, video_duration, video_codec, video_mismatch, review, review_note,
    reviewed_at, resubmits_rejected
FROM jobs;

DROP TABLE jobs;
ALTER TABLE jobs_new RENAME TO jobs;

CREATE INDEX jobs_tally ON jobs (
    state, attempts, resubmits_unknown, resubmits_expired, resubmits_failed, maybe_billed_twice, cost, completed_at
);
CREATE INDEX jobs_billed_twice ON jobs (seq) WHERE maybe_billed_twice <> 0;
CREATE INDEX jobs_state_seq ON jobs (state, seq);
CREATE INDEX jobs_history ON jobs (seq)
    WHERE unknown_adopted + unknown_absent + unknown_unprovable + history_recovered + billed_duplicates > 0
       OR reconciled_at IS NOT NULL;
CREATE INDEX jobs_flags ON jobs (seq) WHERE video_mismatch IS NOT NULL OR review IS NOT NULL;

-- The runners that work (or worked) the campaign: a runner holds its jobs while its heartbeat
-- is fresh. With SQLite one runner at a time (the run lock), so a new one takes over every job.
CREATE TABLE IF NOT EXISTS runners (
    id            TEXT PRIMARY KEY,
    host          TEXT    NOT NULL,
    pid           INTEGER NOT NULL,
    key_hash      TEXT    NOT NULL,
    started_at    INTEGER NOT NULL,
    heartbeat_at  INTEGER NOT NULL,
    stopped_at    INTEGER
);

COMMIT;

PRAGMA foreign_keys = ON;
