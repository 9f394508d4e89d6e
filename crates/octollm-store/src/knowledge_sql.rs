//! The knowledge base on SQL, written once for SQLite and PostgreSQL: adding a document and
//! its chunks, keyword search and the document count. What differs (where an embedding
//! goes, the full-text engine, vector search) is each backend's own.

use crate::knowledge::NewChunk;

/// A chunk as its document's transaction stores it.
pub(crate) struct ChunkRow<'a> {
    pub document_id: i64,
    pub ord: i64,
    pub chunk: &'a NewChunk,
}

/// A document just committed: its id and its chunks with theirs.
pub(crate) struct Added {
    pub document_id: i64,
    pub chunks: Vec<(i64, NewChunk)>,
}

pub(crate) const INSERT_DOCUMENT: &str =
    "INSERT INTO documents (source, metadata, created_at) VALUES ($1, $2, $3) RETURNING id";
pub(crate) const COUNT_DOCUMENTS: &str = "SELECT COUNT(*) FROM documents";

/// [`crate::knowledge::KnowledgeStore`] for `$store` on database `$db`. The store has, as
/// inherent items:
/// - `fn pool(&self) -> &sqlx::Pool<$db>`;
/// - `const KEYWORD_SEARCH: &str`, a query taking the search terms (`$1`) and a limit (`$2`)
///   and answering `id, content, source, metadata, score` (higher is better), and
///   `fn keyword_terms(query: &str) -> Option<String>`, the terms for a query (none: no hits);
/// - `async fn before_adding(&self)`, `async fn insert_chunk(conn, ChunkRow) -> chunk id`
///   (inside the document's transaction) and `async fn indexed(&self, &Added)` (after it
///   commits; an error takes the document back out);
/// - `async fn nearest(&self, embedding, limit)`: the vector search.
macro_rules! knowledge_store_impl {
    ($store:ty, $db:ty) => {
        #[async_trait::async_trait]
        impl $crate::knowledge::KnowledgeStore for $store {
            async fn add_document(
                &self,
                source: &str,
                metadata: serde_json::Value,
                chunks: Vec<$crate::knowledge::NewChunk>,
            ) -> Result<i64, $crate::error::StoreError> {
                self.before_adding().await?;
                let mut tx = self.pool().begin().await?;
                let document_id: i64 = sqlx::query_scalar($crate::knowledge_sql::INSERT_DOCUMENT)
                    .bind(source)
                    .bind(metadata.to_string())
                    .bind(chrono::Utc::now().timestamp_millis())
                    .fetch_one(&mut *tx)
                    .await?;
                let mut chunk_ids = Vec::with_capacity(chunks.len());
                for (ord, chunk) in chunks.iter().enumerate() {
                    let row = $crate::knowledge_sql::ChunkRow {
                        document_id,
                        ord: i64::try_from(ord).unwrap_or(i64::MAX),
                        chunk,
                    };
                    chunk_ids.push(Self::insert_chunk(&mut tx, row).await?);
                }
                tx.commit().await?;
                let added = $crate::knowledge_sql::Added {
                    document_id,
                    chunks: chunk_ids.into_iter().zip(chunks).collect(),
                };
                if let Err(e) = self.indexed(&added).await {
                    // Without its vectors the document would be half there: take it out.
                    sqlx::query("DELETE FROM documents WHERE id = $1")
                        .bind(document_id)
                        .execute(self.pool())
                        .await?;
                    return Err(e);
                }
                Ok(document_id)
            }

            async fn keyword_search(
                &self,
                query: &str,
                limit: u32,
            ) -> Result<Vec<$crate::knowledge::ChunkHit>, $crate::error::StoreError> {
                let Some(terms) = Self::keyword_terms(query) else {
                    return Ok(Vec::new());
                };
                let rows = sqlx::query(Self::KEYWORD_SEARCH)
                    .bind(terms)
                    .bind(i64::from(limit))
                    .fetch_all(self.pool())
                    .await?;
                rows.iter().map($crate::knowledge::chunk_hit).collect()
            }

            async fn vector_search(
                &self,
                embedding: &[f32],
                limit: u32,
            ) -> Result<Vec<$crate::knowledge::ChunkHit>, $crate::error::StoreError> {
                self.nearest(embedding, limit).await
            }

            async fn document_count(&self) -> Result<u64, $crate::error::StoreError> {
                let n: i64 = sqlx::query_scalar($crate::knowledge_sql::COUNT_DOCUMENTS)
                    .fetch_one(self.pool())
                    .await?;
                Ok(u64::try_from(n).unwrap_or(0))
            }
        }
    };
}
pub(crate) use knowledge_store_impl;
