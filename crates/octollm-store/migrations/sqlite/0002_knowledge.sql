-- Knowledge base: documents split into chunks, with an FTS5 index for BM25 and
-- embeddings stored as little-endian f32 blobs for the embedded vector index.
CREATE TABLE documents (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    source     TEXT NOT NULL,
    metadata   TEXT NOT NULL DEFAULT '{}',
    created_at INTEGER NOT NULL
);

CREATE TABLE chunks (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    document_id INTEGER NOT NULL REFERENCES documents (id) ON DELETE CASCADE,
    ord         INTEGER NOT NULL,
    content     TEXT NOT NULL
);
CREATE INDEX chunks_by_document ON chunks (document_id, ord);

CREATE VIRTUAL TABLE chunks_fts USING fts5 (content, content = 'chunks', content_rowid = 'id');
CREATE TRIGGER chunks_ai AFTER INSERT ON chunks BEGIN
    INSERT INTO chunks_fts (rowid, content) VALUES (new.id, new.content);
END;
CREATE TRIGGER chunks_ad AFTER DELETE ON chunks BEGIN
    INSERT INTO chunks_fts (chunks_fts, rowid, content) VALUES ('delete', old.id, old.content);
END;

CREATE TABLE vectors (
    collection TEXT NOT NULL,
    id         TEXT NOT NULL,
    vector     BLOB NOT NULL,
    payload    TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (collection, id)
) WITHOUT ROWID;
