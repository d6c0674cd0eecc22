-- One request budget per API key, shared by every runner that uses that key: see
-- migrations/sqlite/0010_budgets.sql.
CREATE TABLE IF NOT EXISTS budgets (
    key_hash      TEXT PRIMARY KEY,
    next_slot_us  BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);
