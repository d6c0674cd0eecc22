-- Indexes that let `status` answer from small index scans on a million-job database.

-- Every figure `status` sums, per state: one covering scan, no table read.
CREATE INDEX jobs_tally ON jobs (
    state, attempts, resubmits_unknown, resubmits_expired, resubmits_failed, maybe_billed_twice, cost, completed_at
);

-- Unfinished jobs by age: the oldest waiting job is the first entry.
CREATE INDEX jobs_open ON jobs (created_at, seq) WHERE state NOT IN ('done', 'failed');

-- The few jobs that may have been billed twice.
CREATE INDEX jobs_billed_twice ON jobs (seq) WHERE maybe_billed_twice <> 0;
