-- The dispatcher takes pending jobs in manifest order, a few at a time: walking this index
-- finds them without sorting a million-job queue on every pick.
CREATE INDEX jobs_state_seq ON jobs (state, seq);

-- `cancelled` (added with `wanbatch cancel`) is finished too: the oldest waiting job is never one.
DROP INDEX jobs_open;
CREATE INDEX jobs_open ON jobs (created_at, seq) WHERE state NOT IN ('done', 'failed', 'cancelled');
