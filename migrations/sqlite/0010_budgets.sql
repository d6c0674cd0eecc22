-- One request budget per API key, shared by every runner of the campaign that uses that key
-- (several runners need PostgreSQL; SQLite has one runner and keeps the table for one schema).
-- `key_hash`: a keyed hash of the API key, never the key. `next_slot_us`: the first request
-- slot not yet handed out (microseconds since the Unix epoch, the database's clock); runners take
-- slots `60 s / rpm` apart by moving it forward, so no window holds more than the limit.
CREATE TABLE IF NOT EXISTS budgets (
    key_hash      TEXT PRIMARY KEY,
    next_slot_us  INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
);
