//! The knowledge base (documents, chunks, BM25 keyword search) and the vector index.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::StoreError;

#[derive(Debug, Clone)]
pub struct NewChunk {
    pub content: String,
    pub embedding: Vec<f32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChunkHit {
    pub chunk_id: i64,
    pub content: String,
    pub source: String,
    pub metadata: serde_json::Value,
    /// Higher is better; the scale depends on the method.
    pub score: f64,
}

#[async_trait]
pub trait KnowledgeStore: Send + Sync {
    /// Stores a document and its chunks; returns the document id.
    async fn add_document(
        &self,
        source: &str,
        metadata: serde_json::Value,
        chunks: Vec<NewChunk>,
    ) -> Result<i64, StoreError>;

    /// BM25 over chunk text. Scores are BM25 (higher is better).
    async fn keyword_search(&self, query: &str, limit: u32) -> Result<Vec<ChunkHit>, StoreError>;

    /// Cosine similarity over chunk embeddings.
    async fn vector_search(
        &self,
        embedding: &[f32],
        limit: u32,
    ) -> Result<Vec<ChunkHit>, StoreError>;

    async fn document_count(&self) -> Result<u64, StoreError>;
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VectorHit {
    pub id: String,
    pub score: f32,
    pub payload: serde_json::Value,
}

/// A collection-based vector index (Qdrant's model): the embedded index and Qdrant both
/// implement it.
#[async_trait]
pub trait VectorStore: Send + Sync {
    async fn upsert(
        &self,
        collection: &str,
        id: &str,
        vector: &[f32],
        payload: serde_json::Value,
    ) -> Result<(), StoreError>;

    /// Nearest by cosine similarity, best first.
    async fn search(
        &self,
        collection: &str,
        vector: &[f32],
        limit: u32,
    ) -> Result<Vec<VectorHit>, StoreError>;

    async fn delete(&self, collection: &str, id: &str) -> Result<bool, StoreError>;
}

/// The words of a search query, lower-cased: letters and digits only, so nothing in them is
/// query syntax on either backend (FTS5 `MATCH`, PostgreSQL `to_tsquery`).
pub(crate) fn query_words(query: &str) -> Vec<String> {
    query
        .split(|c: char| !c.is_alphanumeric())
        .filter(|t| !t.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// What the vector index keeps with a chunk's embedding.
pub(crate) fn chunk_payload(chunk_id: i64, document_id: i64) -> serde_json::Value {
    serde_json::json!({"chunk_id": chunk_id, "document_id": document_id})
}

/// A search hit from a row of `id, content, source, metadata, score`, either backend.
pub(crate) fn chunk_hit<R>(row: &R) -> Result<ChunkHit, StoreError>
where
    R: sqlx::Row,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> f64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'n> &'n str: sqlx::ColumnIndex<R>,
{
    let metadata: String = row.try_get("metadata")?;
    Ok(ChunkHit {
        chunk_id: row.try_get("id")?,
        content: row.try_get("content")?,
        source: row.try_get("source")?,
        metadata: serde_json::from_str(&metadata)?,
        score: row.try_get("score")?,
    })
}

pub(crate) fn cosine(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() || a.is_empty() {
        return 0.0;
    }
    let (mut dot, mut na, mut nb) = (0.0f32, 0.0f32, 0.0f32);
    for (x, y) in a.iter().zip(b) {
        dot += x * y;
        na += x * x;
        nb += y * y;
    }
    if na == 0.0 || nb == 0.0 {
        0.0
    } else {
        dot / (na.sqrt() * nb.sqrt())
    }
}

pub(crate) fn encode_vector(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

pub(crate) fn decode_vector(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}
