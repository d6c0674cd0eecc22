-- The campaign's settings (rpm, out, price, budgets, …): what `run` was given, so that a bare
-- `wanbatch run` resumes the campaign as it was run. One row per setting, the value as JSON.
CREATE TABLE settings (
    key         TEXT PRIMARY KEY,
    value       TEXT    NOT NULL,
    updated_at  INTEGER NOT NULL
);
