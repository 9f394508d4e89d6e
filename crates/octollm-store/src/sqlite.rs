//! The embedded backend: one SQLite file (WAL) holding tasks, steps, events, documents and
//! vectors. The queue is safe across processes sharing the file: every claim and every write
//! is guarded by the lease owner, so a worker whose lease was taken can no longer write.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use std::sync::LazyLock;

use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqliteConnection, SqlitePool};
use tokio::sync::{RwLock, broadcast};

use crate::error::StoreError;
use crate::knowledge::{
    ChunkHit, VectorHit, VectorStore, chunk_hit, chunk_payload, cosine, decode_vector,
    encode_vector, query_words,
};
use crate::knowledge_sql::{Added, ChunkRow, knowledge_store_impl};
use crate::model::TaskEvent;
use crate::rows::task_columns;
use crate::sql::{Dialect, claimable, task_store_impl};

const KNOWLEDGE_COLLECTION: &str = "knowledge_base";

type VectorCache = HashMap<String, Vec<(String, Vec<f32>, serde_json::Value)>>;

#[derive(Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    events: broadcast::Sender<TaskEvent>,
    /// Vectors per collection, loaded on first use; searches scan this, writes go through.
    vectors: Arc<RwLock<Option<VectorCache>>>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and applies migrations.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::Unavailable(format!("cannot create {}: {e}", dir.display()))
            })?;
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        let store = Self::from_pool(pool);
        store.migrate().await?;
        Ok(store)
    }

    pub fn from_pool(pool: SqlitePool) -> Self {
        let (events, _) = broadcast::channel(1024);
        Self {
            pool,
            events,
            vectors: Arc::new(RwLock::new(None)),
        }
    }

    pub async fn migrate(&self) -> Result<(), StoreError> {
        crate::migrations::run(crate::migrations::Backend::Sqlite, &self.pool).await
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    fn publish(&self, event: TaskEvent) {
        // No subscribers is normal.
        let _ = self.events.send(event);
    }

    fn subscriber(&self) -> broadcast::Receiver<TaskEvent> {
        self.events.subscribe()
    }

    /// Events stay in this process (other processes on the file read the table).
    fn events_connected(&self) -> Option<bool> {
        None
    }

    async fn load_vectors(&self) -> Result<(), StoreError> {
        if self.vectors.read().await.is_some() {
            return Ok(());
        }
        let rows = sqlx::query("SELECT collection, id, vector, payload FROM vectors")
            .fetch_all(&self.pool)
            .await?;
        let mut cache: VectorCache = HashMap::new();
        for row in rows {
            let collection: String = row.try_get("collection")?;
            let id: String = row.try_get("id")?;
            let vector: Vec<u8> = row.try_get("vector")?;
            let payload: String = row.try_get("payload")?;
            cache.entry(collection).or_default().push((
                id,
                decode_vector(&vector),
                serde_json::from_str(&payload)?,
            ));
        }
        let mut guard = self.vectors.write().await;
        if guard.is_none() {
            *guard = Some(cache);
        }
        Ok(())
    }
}

impl Dialect for SqliteStore {
    /// One writer at a time holds the file, so a plain `UPDATE … WHERE id = (SELECT …)` cannot
    /// race another claim.
    fn claim() -> &'static str {
        static CLAIM: LazyLock<String> = LazyLock::new(|| {
            format!(
                "UPDATE tasks SET status = 'processing', lease_owner = $1, lease_expires_at = $2, \
                     attempts = attempts + 1, started_at = COALESCE(started_at, $3), updated_at = $3 \
                 WHERE id = (SELECT id FROM tasks WHERE {} \
                     ORDER BY priority DESC, created_at ASC LIMIT 1) \
                 RETURNING {}",
                claimable(),
                task_columns!()
            )
        });
        CLAIM.as_str()
    }

    const LOCK_IDEMPOTENCY_KEY: Option<&'static str> = None;
}

task_store_impl!(SqliteStore, sqlx::Sqlite);

/// FTS5 query syntax treats many characters as operators; search for the words only, each
/// quoted, any of them.
fn fts_query(query: &str) -> Option<String> {
    let words: Vec<String> = query_words(query)
        .iter()
        .map(|w| format!("\"{w}\""))
        .collect();
    (!words.is_empty()).then(|| words.join(" OR "))
}

const UPSERT_VECTOR: &str =
    "INSERT OR REPLACE INTO vectors (collection, id, vector, payload) VALUES ($1, $2, $3, $4)";

/// What the shared implementation ([`knowledge_store_impl`]) asks of SQLite.
impl SqliteStore {
    // bm25() is lower-is-better and negative; negated so higher is better.
    const KEYWORD_SEARCH: &str = "SELECT c.id, c.content, d.source, d.metadata, \
            -bm25(chunks_fts) AS score \
         FROM chunks_fts JOIN chunks c ON c.id = chunks_fts.rowid \
         JOIN documents d ON d.id = c.document_id \
         WHERE chunks_fts MATCH $1 ORDER BY bm25(chunks_fts) LIMIT $2";

    fn keyword_terms(query: &str) -> Option<String> {
        fts_query(query)
    }

    /// Loads the vector cache before writing: loaded after, it would already hold the new
    /// document's vectors and [`Self::indexed`] would add them twice.
    async fn before_adding(&self) -> Result<(), StoreError> {
        self.load_vectors().await
    }

    /// The embedding goes to the vector table, in the document's transaction.
    async fn insert_chunk(
        conn: &mut SqliteConnection,
        row: ChunkRow<'_>,
    ) -> Result<i64, StoreError> {
        let chunk_id: i64 = sqlx::query_scalar(
            "INSERT INTO chunks (document_id, ord, content) VALUES ($1, $2, $3) RETURNING id",
        )
        .bind(row.document_id)
        .bind(row.ord)
        .bind(&row.chunk.content)
        .fetch_one(&mut *conn)
        .await?;
        sqlx::query(UPSERT_VECTOR)
            .bind(KNOWLEDGE_COLLECTION)
            .bind(chunk_id.to_string())
            .bind(encode_vector(&row.chunk.embedding))
            .bind(chunk_payload(chunk_id, row.document_id).to_string())
            .execute(&mut *conn)
            .await?;
        Ok(chunk_id)
    }

    /// The committed vectors join the cache.
    async fn indexed(&self, added: &Added) -> Result<(), StoreError> {
        if let Some(cache) = self.vectors.write().await.as_mut() {
            let entries = cache.entry(KNOWLEDGE_COLLECTION.to_owned()).or_default();
            for (id, chunk) in &added.chunks {
                let payload = chunk_payload(*id, added.document_id);
                entries.push((id.to_string(), chunk.embedding.clone(), payload));
            }
        }
        Ok(())
    }

    async fn nearest(&self, embedding: &[f32], limit: u32) -> Result<Vec<ChunkHit>, StoreError> {
        let hits = self.search(KNOWLEDGE_COLLECTION, embedding, limit).await?;
        let mut out = Vec::with_capacity(hits.len());
        for hit in hits {
            let row = sqlx::query(
                "SELECT c.id, c.content, d.source, d.metadata, 0.0 AS score FROM chunks c \
                 JOIN documents d ON d.id = c.document_id WHERE c.id = $1",
            )
            .bind(
                hit.id
                    .parse::<i64>()
                    .map_err(|e| StoreError::Corrupt(e.to_string()))?,
            )
            .fetch_optional(&self.pool)
            .await?;
            if let Some(row) = row {
                let mut h = chunk_hit(&row)?;
                h.score = f64::from(hit.score);
                out.push(h);
            }
        }
        Ok(out)
    }
}

knowledge_store_impl!(SqliteStore, sqlx::Sqlite);

#[async_trait]
impl VectorStore for SqliteStore {
    async fn upsert(
        &self,
        collection: &str,
        id: &str,
        vector: &[f32],
        payload: serde_json::Value,
    ) -> Result<(), StoreError> {
        self.load_vectors().await?;
        sqlx::query(UPSERT_VECTOR)
            .bind(collection)
            .bind(id)
            .bind(encode_vector(vector))
            .bind(payload.to_string())
            .execute(&self.pool)
            .await?;
        if let Some(cache) = self.vectors.write().await.as_mut() {
            let entries = cache.entry(collection.to_owned()).or_default();
            entries.retain(|(existing, _, _)| existing != id);
            entries.push((id.to_owned(), vector.to_vec(), payload));
        }
        Ok(())
    }

    async fn search(
        &self,
        collection: &str,
        vector: &[f32],
        limit: u32,
    ) -> Result<Vec<VectorHit>, StoreError> {
        self.load_vectors().await?;
        let guard = self.vectors.read().await;
        let Some(entries) = guard.as_ref().and_then(|c| c.get(collection)) else {
            return Ok(Vec::new());
        };
        let mut scored: Vec<VectorHit> = entries
            .iter()
            .map(|(id, v, payload)| VectorHit {
                id: id.clone(),
                score: cosine(vector, v),
                payload: payload.clone(),
            })
            .collect();
        scored.sort_by(|a, b| b.score.total_cmp(&a.score));
        scored.truncate(limit as usize);
        Ok(scored)
    }

    async fn delete(&self, collection: &str, id: &str) -> Result<bool, StoreError> {
        self.load_vectors().await?;
        let n = sqlx::query("DELETE FROM vectors WHERE collection = ? AND id = ?")
            .bind(collection)
            .bind(id)
            .execute(&self.pool)
            .await?
            .rows_affected();
        if let Some(cache) = self.vectors.write().await.as_mut()
            && let Some(entries) = cache.get_mut(collection)
        {
            entries.retain(|(existing, _, _)| existing != id);
        }
        Ok(n > 0)
    }
}
