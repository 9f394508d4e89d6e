-- Knowledge base shared by every retriever instance: documents split into chunks, full-text
-- search over chunk text ('simple' configuration: no stemming, like the embedded FTS5 index)
-- and each chunk's embedding (little-endian f32) for vector search.
CREATE TABLE documents (
    id         BIGSERIAL PRIMARY KEY,
    source     TEXT NOT NULL,
    metadata   TEXT NOT NULL DEFAULT '{}',
    created_at BIGINT NOT NULL
);

CREATE TABLE chunks (
    id          BIGSERIAL PRIMARY KEY,
    document_id BIGINT NOT NULL REFERENCES documents (id) ON DELETE CASCADE,
    ord         BIGINT NOT NULL,
    content     TEXT NOT NULL,
    embedding   BYTEA NOT NULL,
    tsv         TSVECTOR GENERATED ALWAYS AS (to_tsvector('simple', content)) STORED
);
CREATE INDEX chunks_by_document ON chunks (document_id, ord);
CREATE INDEX chunks_text ON chunks USING GIN (tsv);
