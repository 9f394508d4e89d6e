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
