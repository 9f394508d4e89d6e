//! The knowledge base on PostgreSQL, shared by every retriever instance: documents and
//! chunks in tables, keyword search with PostgreSQL full-text search (`ts_rank_cd`, any of
//! the query's words), vector search in a [`VectorStore`] (Qdrant) when one is given, else
//! over the embeddings kept in the chunk rows, cached in memory and topped up with the rows
//! other processes added since the last search.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::Utc;
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};
use tokio::sync::RwLock;

use crate::error::StoreError;
use crate::knowledge::{
    ChunkHit, KnowledgeStore, NewChunk, VectorStore, cosine, decode_vector, encode_vector,
};

/// The vector collection of the knowledge base (SPEC §10).
pub const KNOWLEDGE_COLLECTION: &str = "knowledge_base";

#[derive(Default)]
struct Embeddings {
    /// The highest chunk id loaded; chunks are only ever added, so newer rows have higher ids.
    last_id: i64,
    rows: Vec<(i64, Vec<f32>)>,
}

#[derive(Clone)]
pub struct PostgresKnowledge {
    pool: PgPool,
    vectors: Option<Arc<dyn VectorStore>>,
    embeddings: Arc<RwLock<Embeddings>>,
}

/// The words of a query as an OR tsquery (`a | b`), or None when it has none. Words are
/// letters and digits only, so nothing in them is tsquery syntax.
fn tsquery(query: &str) -> Option<String> {
    let terms: Vec<String> = query
        .split(|c: char| !c.is_alphanumeric())
        .filter(|t| !t.is_empty())
        .map(str::to_lowercase)
        .collect();
    (!terms.is_empty()).then(|| terms.join(" | "))
}

fn hit(row: &PgRow) -> Result<ChunkHit, StoreError> {
    let metadata: String = row.try_get("metadata")?;
    Ok(ChunkHit {
        chunk_id: row.try_get("id")?,
        content: row.try_get("content")?,
        source: row.try_get("source")?,
        metadata: serde_json::from_str(&metadata)?,
        score: row.try_get("score")?,
    })
}

impl PostgresKnowledge {
    /// `vectors`: where chunk embeddings are indexed (Qdrant); None searches the embeddings
    /// stored with the chunks.
    pub fn new(pool: PgPool, vectors: Option<Arc<dyn VectorStore>>) -> Self {
        Self {
            pool,
            vectors,
            embeddings: Arc::new(RwLock::new(Embeddings::default())),
        }
    }

    /// Loads the embeddings of chunks added since the last call (by any process).
    async fn top_up(&self) -> Result<(), StoreError> {
        let last_id = self.embeddings.read().await.last_id;
        let rows = sqlx::query("SELECT id, embedding FROM chunks WHERE id > $1 ORDER BY id")
            .bind(last_id)
            .fetch_all(&self.pool)
            .await?;
        if rows.is_empty() {
            return Ok(());
        }
        let mut cache = self.embeddings.write().await;
        for row in rows {
            let id: i64 = row.try_get("id")?;
            // Another search may have loaded it meanwhile.
            if id <= cache.last_id {
                continue;
            }
            let bytes: Vec<u8> = row.try_get("embedding")?;
            cache.rows.push((id, decode_vector(&bytes)));
            cache.last_id = id;
        }
        Ok(())
    }

    /// The chunks with these ids, in the order given, scored as given.
    async fn chunks(&self, scored: &[(i64, f64)]) -> Result<Vec<ChunkHit>, StoreError> {
        let ids: Vec<i64> = scored.iter().map(|(id, _)| *id).collect();
        let rows = sqlx::query(
            "SELECT c.id, c.content, d.source, d.metadata, 0.0::float8 AS score FROM chunks c \
             JOIN documents d ON d.id = c.document_id WHERE c.id = ANY($1)",
        )
        .bind(&ids)
        .fetch_all(&self.pool)
        .await?;
        let mut found: Vec<ChunkHit> = rows.iter().map(hit).collect::<Result<_, _>>()?;
        let mut out = Vec::with_capacity(scored.len());
        for (id, score) in scored {
            if let Some(pos) = found.iter().position(|h| h.chunk_id == *id) {
                let mut h = found.swap_remove(pos);
                h.score = *score;
                out.push(h);
            }
        }
        Ok(out)
    }
}

#[async_trait]
impl KnowledgeStore for PostgresKnowledge {
    async fn add_document(
        &self,
        source: &str,
        metadata: serde_json::Value,
        chunks: Vec<NewChunk>,
    ) -> Result<i64, StoreError> {
        let mut tx = self.pool.begin().await?;
        let doc_id: i64 = sqlx::query_scalar(
            "INSERT INTO documents (source, metadata, created_at) VALUES ($1, $2, $3) RETURNING id",
        )
        .bind(source)
        .bind(metadata.to_string())
        .bind(Utc::now().timestamp_millis())
        .fetch_one(&mut *tx)
        .await?;
        let mut added = Vec::with_capacity(chunks.len());
        for (ord, chunk) in chunks.into_iter().enumerate() {
            let chunk_id: i64 = sqlx::query_scalar(
                "INSERT INTO chunks (document_id, ord, content, embedding) VALUES ($1, $2, $3, $4) RETURNING id",
            )
            .bind(doc_id)
            .bind(i64::try_from(ord).unwrap_or(0))
            .bind(&chunk.content)
            .bind(encode_vector(&chunk.embedding))
            .fetch_one(&mut *tx)
            .await?;
            added.push((chunk_id, chunk.embedding));
        }
        tx.commit().await?;
        if let Some(vectors) = &self.vectors {
            for (chunk_id, embedding) in &added {
                let payload = serde_json::json!({"chunk_id": chunk_id, "document_id": doc_id});
                let indexed = vectors
                    .upsert(
                        KNOWLEDGE_COLLECTION,
                        &chunk_id.to_string(),
                        embedding,
                        payload,
                    )
                    .await;
                if let Err(e) = indexed {
                    // Without its vectors the document would be half there: take it back out.
                    for (indexed_id, _) in &added {
                        let _ = vectors
                            .delete(KNOWLEDGE_COLLECTION, &indexed_id.to_string())
                            .await;
                    }
                    sqlx::query("DELETE FROM documents WHERE id = $1")
                        .bind(doc_id)
                        .execute(&self.pool)
                        .await?;
                    return Err(e);
                }
            }
        }
        Ok(doc_id)
    }

    async fn keyword_search(&self, query: &str, limit: u32) -> Result<Vec<ChunkHit>, StoreError> {
        let Some(terms) = tsquery(query) else {
            return Ok(Vec::new());
        };
        let rows = sqlx::query(
            "SELECT c.id, c.content, d.source, d.metadata, \
                    ts_rank_cd(c.tsv, q)::float8 AS score \
             FROM chunks c JOIN documents d ON d.id = c.document_id, \
                  to_tsquery('simple', $1) q \
             WHERE c.tsv @@ q ORDER BY score DESC, c.id LIMIT $2",
        )
        .bind(terms)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(hit).collect()
    }

    async fn vector_search(
        &self,
        embedding: &[f32],
        limit: u32,
    ) -> Result<Vec<ChunkHit>, StoreError> {
        let scored: Vec<(i64, f64)> = match &self.vectors {
            Some(vectors) => vectors
                .search(KNOWLEDGE_COLLECTION, embedding, limit)
                .await?
                .into_iter()
                .filter_map(|h| Some((h.id.parse::<i64>().ok()?, f64::from(h.score))))
                .collect(),
            None => {
                self.top_up().await?;
                let cache = self.embeddings.read().await;
                let mut scored: Vec<(i64, f64)> = cache
                    .rows
                    .iter()
                    .map(|(id, v)| (*id, f64::from(cosine(embedding, v))))
                    .collect();
                scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
                scored.truncate(limit as usize);
                scored
            }
        };
        self.chunks(&scored).await
    }

    async fn document_count(&self) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM documents")
            .fetch_one(&self.pool)
            .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::tsquery;

    #[test]
    fn queries_become_words_joined_by_or() {
        assert_eq!(
            tsquery("How does a cephalopod hide?").as_deref(),
            Some("how | does | a | cephalopod | hide")
        );
        assert_eq!(tsquery("a&b|!c:*").as_deref(), Some("a | b | c"));
        assert_eq!(tsquery("?!-"), None);
    }
}
