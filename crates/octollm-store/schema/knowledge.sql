--pg: -- Knowledge base shared by every retriever instance: documents split into chunks, full-text
--pg: -- search over chunk text ('simple' configuration: no stemming, like the embedded FTS5 index)
--pg: -- and each chunk's embedding (little-endian f32) for vector search.
--sqlite: -- Knowledge base: documents split into chunks, with an FTS5 index for BM25 and
--sqlite: -- embeddings stored as little-endian f32 blobs for the embedded vector index.
CREATE TABLE documents (
    id         {serial},
    source     TEXT NOT NULL,
    metadata   TEXT NOT NULL DEFAULT '{}',
    created_at {int} NOT NULL
);

CREATE TABLE chunks (
    id          {serial},
    document_id {int} NOT NULL REFERENCES documents (id) ON DELETE CASCADE,
    ord         {int} NOT NULL,
--pg:     content     TEXT NOT NULL,
--pg:     embedding   BYTEA NOT NULL,
--pg:     tsv         TSVECTOR GENERATED ALWAYS AS (to_tsvector('simple', content)) STORED
--sqlite:     content     TEXT NOT NULL
);
CREATE INDEX chunks_by_document ON chunks (document_id, ord);
--pg: CREATE INDEX chunks_text ON chunks USING GIN (tsv);
--sqlite:
--sqlite: CREATE VIRTUAL TABLE chunks_fts USING fts5 (content, content = 'chunks', content_rowid = 'id');
--sqlite: CREATE TRIGGER chunks_ai AFTER INSERT ON chunks BEGIN
--sqlite:     INSERT INTO chunks_fts (rowid, content) VALUES (new.id, new.content);
--sqlite: END;
--sqlite: CREATE TRIGGER chunks_ad AFTER DELETE ON chunks BEGIN
--sqlite:     INSERT INTO chunks_fts (chunks_fts, rowid, content) VALUES ('delete', old.id, old.content);
--sqlite: END;
--sqlite:
--sqlite: CREATE TABLE vectors (
--sqlite:     collection TEXT NOT NULL,
--sqlite:     id         TEXT NOT NULL,
--sqlite:     vector     BLOB NOT NULL,
--sqlite:     payload    TEXT NOT NULL DEFAULT '{}',
--sqlite:     PRIMARY KEY (collection, id)
--sqlite: ) WITHOUT ROWID;
