-- The audit trail (SPEC §8): refusals and key changes, with the request and the key involved.
-- Never the presented key, a token or the input text: `detail` holds types and reasons only.
CREATE TABLE audit_log (
    seq         {serial},
    at          {int} NOT NULL,
    kind        TEXT NOT NULL,
    request_id  TEXT,
    key_id      TEXT,
    detail      TEXT NOT NULL
);
CREATE INDEX audit_log_kind ON audit_log (kind, seq);
