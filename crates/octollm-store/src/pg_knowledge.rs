//! The knowledge base on PostgreSQL, shared by every retriever instance: documents and
//! chunks in tables, keyword search with PostgreSQL full-text search (`ts_rank_cd`, any of
//! the query's words), vector search in a [`VectorStore`] (Qdrant) when one is given, else
//! over the embeddings kept in the chunk rows, cached in memory and topped up with the rows
//! other processes added since the last search.

use std::sync::Arc;

use sqlx::{PgConnection, PgPool, Row};
use tokio::sync::RwLock;

use crate::error::StoreError;
use crate::knowledge::{
    ChunkHit, VectorStore, chunk_hit, chunk_payload, cosine, decode_vector, encode_vector,
    query_words,
};
use crate::knowledge_sql::{Added, ChunkRow, knowledge_store_impl};

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

/// The words of a query as an OR tsquery (`a | b`), or None when it has none.
fn tsquery(query: &str) -> Option<String> {
    let words = query_words(query);
    (!words.is_empty()).then(|| words.join(" | "))
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
        let mut found: Vec<ChunkHit> = rows.iter().map(chunk_hit).collect::<Result<_, _>>()?;
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

/// What the shared implementation ([`knowledge_store_impl`]) asks of PostgreSQL.
impl PostgresKnowledge {
    fn pool(&self) -> &PgPool {
        &self.pool
    }

    const KEYWORD_SEARCH: &str = "SELECT c.id, c.content, d.source, d.metadata, \
            ts_rank_cd(c.tsv, q)::float8 AS score \
         FROM chunks c JOIN documents d ON d.id = c.document_id, to_tsquery('simple', $1) q \
         WHERE c.tsv @@ q ORDER BY score DESC, c.id LIMIT $2";

    fn keyword_terms(query: &str) -> Option<String> {
        tsquery(query)
    }

    async fn before_adding(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// The embedding stays in the chunk row (the vector search without Qdrant reads it).
    async fn insert_chunk(conn: &mut PgConnection, row: ChunkRow<'_>) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar(
            "INSERT INTO chunks (document_id, ord, content, embedding) \
             VALUES ($1, $2, $3, $4) RETURNING id",
        )
        .bind(row.document_id)
        .bind(row.ord)
        .bind(&row.chunk.content)
        .bind(encode_vector(&row.chunk.embedding))
        .fetch_one(conn)
        .await?)
    }

    /// With Qdrant, the embeddings go there too.
    async fn indexed(&self, added: &Added) -> Result<(), StoreError> {
        let Some(vectors) = &self.vectors else {
            return Ok(());
        };
        for (chunk_id, chunk) in &added.chunks {
            let indexed = vectors
                .upsert(
                    KNOWLEDGE_COLLECTION,
                    &chunk_id.to_string(),
                    &chunk.embedding,
                    chunk_payload(*chunk_id, added.document_id),
                )
                .await;
            if let Err(e) = indexed {
                for (indexed_id, _) in &added.chunks {
                    let _ = vectors
                        .delete(KNOWLEDGE_COLLECTION, &indexed_id.to_string())
                        .await;
                }
                return Err(e);
            }
        }
        Ok(())
    }

    async fn nearest(&self, embedding: &[f32], limit: u32) -> Result<Vec<ChunkHit>, StoreError> {
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
}

knowledge_store_impl!(PostgresKnowledge, sqlx::Postgres);

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
