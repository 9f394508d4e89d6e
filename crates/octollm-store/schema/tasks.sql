--pg: -- Tasks, their steps and their events, shared by every orchestrator replica.
--pg: -- Timestamps are Unix milliseconds, as in the SQLite schema, so both backends decode alike.
--sqlite: -- Tasks, their steps and their events. Timestamps are Unix milliseconds.
CREATE TABLE tasks (
--pg:     id                TEXT PRIMARY KEY,
--sqlite:     id                TEXT PRIMARY KEY NOT NULL,
    status            TEXT NOT NULL CHECK (status IN ('queued','processing','completed','failed','cancelled')),
    priority          {int} NOT NULL,
    spec              TEXT NOT NULL,           -- validated, redacted TaskSpec as JSON
    raw_input         TEXT,                    -- only with OCTOLLM_STORE_RAW_INPUT=true
    idempotency_key   TEXT,
    phase             TEXT,
    plan              TEXT,
    result            TEXT,
    error             TEXT,
    prompt_tokens     {int} NOT NULL DEFAULT 0,
    completion_tokens {int} NOT NULL DEFAULT 0,
    cost_dollars      {real} NOT NULL DEFAULT 0,
    arms_used         TEXT NOT NULL DEFAULT '[]',
    completed_steps   {int} NOT NULL DEFAULT 0,
    total_steps       {int} NOT NULL DEFAULT 0,
    current_step      TEXT,
    attempts          {int} NOT NULL DEFAULT 0,
    lease_owner       TEXT,
    lease_expires_at  {int},
    created_at        {int} NOT NULL,
    updated_at        {int} NOT NULL,
    started_at        {int},
    finished_at       {int}
);
CREATE UNIQUE INDEX tasks_idempotency ON tasks (idempotency_key) WHERE idempotency_key IS NOT NULL;
--pg: CREATE INDEX tasks_claimable ON tasks (priority DESC, created_at) WHERE status IN ('queued','processing');
--sqlite: CREATE INDEX tasks_claimable ON tasks (status, priority DESC, created_at) WHERE status IN ('queued','processing');
CREATE INDEX tasks_listing ON tasks (created_at DESC, id DESC);

CREATE TABLE task_steps (
    task_id     TEXT NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    step_key    TEXT NOT NULL,
    arm_id      TEXT NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('completed','failed')),
    output      TEXT NOT NULL,
    provenance  TEXT NOT NULL,
    error       TEXT,
    seq         {int} NOT NULL,
    PRIMARY KEY (task_id, step_key)
){without_rowid};

CREATE TABLE task_events (
    seq        {serial},
    task_id    TEXT NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    kind       TEXT NOT NULL,
    data       TEXT NOT NULL,
    created_at {int} NOT NULL
);
CREATE INDEX task_events_by_task ON task_events (task_id, seq);
