-- wanbatch schema. Times are integer milliseconds since the Unix epoch (UTC).
-- `jobs.seq` is manifest order; `jobs.id` is the user-visible job id (also the file name).

CREATE TABLE jobs (
    seq                 INTEGER PRIMARY KEY,
    id                  TEXT    NOT NULL UNIQUE,
    params              TEXT    NOT NULL,          -- canonical JSON body sent to the API
    params_hash         TEXT    NOT NULL,          -- sha256 of params, to detect a changed row
    source              TEXT    NOT NULL,          -- "file:line" the job came from
    state               TEXT    NOT NULL,          -- see src/state.rs
    attempts            INTEGER NOT NULL DEFAULT 0, -- submit attempts started (each may be billed)
    request_id          TEXT,                       -- current attempt's request id
    status_url          TEXT,
    response_url        TEXT,
    submitted_at        INTEGER,                    -- current attempt's accepted time
    due_at              INTEGER NOT NULL DEFAULT 0, -- earliest time the next action may run
    polls               INTEGER NOT NULL DEFAULT 0, -- API GETs spent on this job (all attempts)
    attempt_polls       INTEGER NOT NULL DEFAULT 0, -- polls of the current attempt that saw it pending
    errors_in_row       INTEGER NOT NULL DEFAULT 0, -- transient errors since the last progress
    last_pending_at     INTEGER,                    -- last poll that saw the job still running
    output_url          TEXT,
    output_size         INTEGER,                    -- video.file_size reported by the API
    completed_at        INTEGER,                    -- when we saw COMPLETED
    cost                REAL,                       -- metrics.cost reported by the API
    output_path         TEXT,
    bytes               INTEGER,
    sha256              TEXT,
    downloaded_at       INTEGER,
    error               TEXT,                       -- why the job failed (or the last trouble)
    resubmits_unknown   INTEGER NOT NULL DEFAULT 0, -- resubmitted after a submit with a lost answer
    resubmits_expired   INTEGER NOT NULL DEFAULT 0, -- resubmitted after the result record expired
    resubmits_failed    INTEGER NOT NULL DEFAULT 0, -- resubmitted by `retry` after FAILED
    maybe_billed_twice  INTEGER NOT NULL DEFAULT 0, -- a lost-answer submit may have created a job
    created_at          INTEGER NOT NULL,
    updated_at          INTEGER NOT NULL
);

CREATE INDEX jobs_state_due ON jobs (state, due_at);

-- One row per submit attempt: written as an intent before the POST leaves, completed after.
CREATE TABLE attempts (
    job_seq      INTEGER NOT NULL REFERENCES jobs (seq),
    n            INTEGER NOT NULL,
    started_at   INTEGER NOT NULL,
    request_id   TEXT,
    outcome      TEXT,        -- NULL while open; accepted, completed, failed, expired, unknown, refused, rejected, not_sent
    detail       TEXT,
    finished_at  INTEGER,
    PRIMARY KEY (job_seq, n)
);

-- Learned poll timing per parameter class, kept across runs (see src/engine/schedule.rs).
CREATE TABLE durations (
    class          TEXT PRIMARY KEY,   -- "resolution|num_frames|go_fast"
    samples        INTEGER NOT NULL,   -- completions observed
    first_poll_ms  REAL    NOT NULL,   -- when to poll first, ms after submit (a tracked quantile)
    second_spread  REAL    NOT NULL,   -- second poll at first_poll_ms × (1 + second_spread)
    updated_at     INTEGER NOT NULL
);
