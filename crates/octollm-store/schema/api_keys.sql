-- API keys (SPEC §8). Only the SHA-256 of each key is kept; a revoked key stays listed.
CREATE TABLE api_keys (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    key_hash    TEXT NOT NULL,
    scopes      TEXT NOT NULL,
    created_at  {int} NOT NULL,
    revoked_at  {int}
);
-- The key that submitted the task (its id); NULL for tasks submitted without one.
ALTER TABLE tasks ADD COLUMN owner_key TEXT;
CREATE INDEX tasks_owner ON tasks (owner_key, created_at);
