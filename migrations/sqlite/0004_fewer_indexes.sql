-- Fewer indexes: each one is written for every imported row and every state change.
-- `jobs_state_due` served the engine's "what is due?" queries; the engine now keeps its agenda
-- in memory and reads the queue by (state, seq). `jobs_open` served "the oldest waiting job";
-- jobs are numbered in import order, so the oldest waiting job is the lowest seq among the
-- waiting states, found with `jobs_state_seq` (one probe per state).
DROP INDEX jobs_state_due;
DROP INDEX jobs_open;
