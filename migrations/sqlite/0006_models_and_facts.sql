-- Learned durations as fitted models (see src/engine/schedule.rs): per parameter class, and the
-- queue time over every class (`class = 'queue'`). ln(duration in ms) ~ N(mu, sigma²), fitted
-- to `jobs` completions in all. Replaces the quantile trackers of `durations` (kept for older
-- versions; a class learnt only there seeds its model from it, see Store::timing_models).
CREATE TABLE timing_models (
    class       TEXT PRIMARY KEY,
    mu          REAL    NOT NULL,
    sigma       REAL    NOT NULL,
    jobs        INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);

-- What has been seen of the account's API: e.g. `result_endpoint` = `pending_ok` (its result
-- endpoint answered 200 with QUEUED/PROCESSING for a pending request, so polling it directly is
-- safe) or `pending_404` (it did not: the documented flow, for good), with when and a detail.
CREATE TABLE facts (
    key      TEXT PRIMARY KEY,
    value    TEXT    NOT NULL,
    detail   TEXT    NOT NULL DEFAULT '',
    seen_at  INTEGER NOT NULL
);
