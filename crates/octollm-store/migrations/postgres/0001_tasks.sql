-- Tasks, their steps and their events, shared by every orchestrator replica.
-- Timestamps are Unix milliseconds, as in the SQLite schema, so both backends decode alike.
CREATE TABLE tasks (
    id                TEXT PRIMARY KEY,
    status            TEXT NOT NULL CHECK (status IN ('queued','processing','completed','failed','cancelled')),
    priority          BIGINT NOT NULL,
    spec              TEXT NOT NULL,           -- validated, redacted TaskSpec as JSON
    raw_input         TEXT,                    -- only with OCTOLLM_STORE_RAW_INPUT=true
    idempotency_key   TEXT,
    phase             TEXT,
    plan              TEXT,
    result            TEXT,
    error             TEXT,
    prompt_tokens     BIGINT NOT NULL DEFAULT 0,
    completion_tokens BIGINT NOT NULL DEFAULT 0,
    cost_dollars      DOUBLE PRECISION NOT NULL DEFAULT 0,
    arms_used         TEXT NOT NULL DEFAULT '[]',
    completed_steps   BIGINT NOT NULL DEFAULT 0,
    total_steps       BIGINT NOT NULL DEFAULT 0,
    current_step      TEXT,
    attempts          BIGINT NOT NULL DEFAULT 0,
    lease_owner       TEXT,
    lease_expires_at  BIGINT,
    created_at        BIGINT NOT NULL,
    updated_at        BIGINT NOT NULL,
    started_at        BIGINT,
    finished_at       BIGINT
);
CREATE UNIQUE INDEX tasks_idempotency ON tasks (idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX tasks_claimable ON tasks (priority DESC, created_at) WHERE status IN ('queued','processing');
CREATE INDEX tasks_listing ON tasks (created_at DESC, id DESC);

CREATE TABLE task_steps (
    task_id     TEXT NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    step_key    TEXT NOT NULL,
    arm_id      TEXT NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('completed','failed')),
    output      TEXT NOT NULL,
    provenance  TEXT NOT NULL,
    error       TEXT,
    seq         BIGINT NOT NULL,
    PRIMARY KEY (task_id, step_key)
);

CREATE TABLE task_events (
    seq        BIGSERIAL PRIMARY KEY,
    task_id    TEXT NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    kind       TEXT NOT NULL,
    data       TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX task_events_by_task ON task_events (task_id, seq);
