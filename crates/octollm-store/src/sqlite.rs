//! The embedded backend: one SQLite file (WAL) holding tasks, steps, events, documents and
//! vectors. The queue is safe across processes sharing the file: every claim and every write
//! is guarded by the lease owner, so a worker whose lease was taken can no longer write.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use octollm_core::budget::Usage;
use octollm_core::plan::Plan;
use octollm_core::{ArmKind, Phase, TaskError, TaskErrorKind, TaskId};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{FromRow, Row, SqlitePool};
use tokio::sync::{RwLock, broadcast};
use tracing::instrument;

use crate::error::StoreError;
use crate::knowledge::{
    ChunkHit, KnowledgeStore, NewChunk, VectorHit, VectorStore, cosine, decode_vector,
    encode_vector,
};
use crate::model::{
    CreateOutcome, Finish, LeaseState, ListFilter, NewTask, Progress, StepRecord, TaskEvent,
    TaskPage, TaskRecord,
};
use crate::rows::{
    EventRow, IDEMPOTENCY_WINDOW_MS, StepRow, TaskRow, decode_cursor, encode_cursor, lease_ms, ms,
    plan_event, step_event, step_status, task_columns, tokens,
};
use crate::tasks::TaskStore;

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
        sqlx::migrate!("./migrations/sqlite")
            .run(&self.pool)
            .await?;
        Ok(())
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    fn publish(&self, event: TaskEvent) {
        // No subscribers is normal.
        let _ = self.events.send(event);
    }

    async fn insert_event(
        &self,
        conn: &mut sqlx::SqliteConnection,
        id: &TaskId,
        kind: &str,
        data: &serde_json::Value,
        now: DateTime<Utc>,
    ) -> Result<TaskEvent, StoreError> {
        let seq: i64 = sqlx::query_scalar(
            "INSERT INTO task_events (task_id, kind, data, created_at) VALUES (?, ?, ?, ?) RETURNING seq",
        )
        .bind(id.as_str())
        .bind(kind)
        .bind(data.to_string())
        .bind(now.timestamp_millis())
        .fetch_one(&mut *conn)
        .await?;
        Ok(TaskEvent {
            seq,
            task_id: id.clone(),
            kind: kind.to_owned(),
            data: data.clone(),
            created_at: now,
        })
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

fn task_from_row(row: &SqliteRow) -> Result<TaskRecord, StoreError> {
    TaskRow::from_row(row)?.into_record()
}

#[async_trait]
impl TaskStore for SqliteStore {
    #[instrument(skip_all, fields(task_id = %task.id))]
    async fn create_task(&self, task: NewTask) -> Result<CreateOutcome, StoreError> {
        let now = ms(task.created_at);
        let mut tx = self.pool.begin().await?;
        let idempotency_key = task.stored_idempotency_key();
        if let Some(key) = &idempotency_key {
            // An old use of the key no longer counts: free it for this task.
            sqlx::query("UPDATE tasks SET idempotency_key = NULL WHERE idempotency_key = ? AND created_at < ?")
                .bind(key)
                .bind(now - IDEMPOTENCY_WINDOW_MS)
                .execute(&mut *tx)
                .await?;
            let existing = sqlx::query(concat!(
                "SELECT ",
                task_columns!(),
                " FROM tasks WHERE idempotency_key = ?"
            ))
            .bind(key)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(row) = existing {
                tx.commit().await?;
                return Ok(CreateOutcome::Existing(task_from_row(&row)?));
            }
        }
        let row = sqlx::query(concat!("INSERT INTO tasks (id, status, priority, spec, raw_input, idempotency_key, created_at, updated_at, trace_parent, owner_key) \
             VALUES (?, 'queued', ?, ?, ?, ?, ?, ?, ?, ?) RETURNING ", task_columns!(), ""))
        .bind(task.id.as_str())
        .bind(task.spec.priority.rank())
        .bind(serde_json::to_string(&task.spec)?)
        .bind(task.raw_input.as_deref())
        .bind(idempotency_key.as_deref())
        .bind(now)
        .bind(now)
        .bind(task.trace.map(|t| t.header()))
        .bind(task.owner.as_deref())
        .fetch_one(&mut *tx)
        .await?;
        let record = task_from_row(&row)?;
        let event = self
            .insert_event(
                &mut tx,
                &task.id,
                "status",
                &serde_json::json!({"status": "queued"}),
                task.created_at,
            )
            .await?;
        tx.commit().await?;
        self.publish(event);
        Ok(CreateOutcome::Created(record))
    }

    async fn get_task(&self, id: &TaskId) -> Result<Option<TaskRecord>, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            task_columns!(),
            " FROM tasks WHERE id = ?"
        ))
        .bind(id.as_str())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(task_from_row).transpose()
    }

    async fn list_tasks(&self, filter: ListFilter) -> Result<TaskPage, StoreError> {
        let limit = filter.limit.clamp(1, 100);
        let (cursor_ts, cursor_id) = match &filter.cursor {
            Some(c) => {
                let (ts, id) = decode_cursor(c)?;
                (Some(ts), Some(id.to_string()))
            }
            None => (None, None),
        };
        let rows = sqlx::query(concat!(
            "SELECT ",
            task_columns!(),
            " FROM tasks \
             WHERE (?1 IS NULL OR status = ?1) \
               AND (?2 IS NULL OR created_at < ?2 OR (created_at = ?2 AND id < ?3)) \
               AND (?5 IS NULL OR owner_key = ?5) \
             ORDER BY created_at DESC, id DESC LIMIT ?4"
        ))
        .bind(filter.status.map(|s| s.as_str()))
        .bind(cursor_ts)
        .bind(cursor_id)
        .bind(i64::from(limit) + 1)
        .bind(filter.owner.as_deref())
        .fetch_all(&self.pool)
        .await?;
        let mut tasks = rows
            .iter()
            .map(task_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let next_cursor = if tasks.len() > limit as usize {
            tasks.truncate(limit as usize);
            tasks
                .last()
                .map(|t| encode_cursor(ms(t.created_at), t.id.as_str()))
        } else {
            None
        };
        Ok(TaskPage { tasks, next_cursor })
    }

    #[instrument(skip_all, fields(owner))]
    async fn claim_next(
        &self,
        owner: &str,
        lease: Duration,
        now: DateTime<Utc>,
    ) -> Result<Option<TaskRecord>, StoreError> {
        let now_ms = ms(now);
        let expires = now_ms + lease_ms(lease);
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(concat!("UPDATE tasks SET status = 'processing', lease_owner = ?1, lease_expires_at = ?2, \
                 attempts = attempts + 1, started_at = COALESCE(started_at, ?3), updated_at = ?3 \
             WHERE id = (SELECT id FROM tasks \
                 WHERE status = 'queued' OR (status = 'processing' AND (lease_expires_at IS NULL OR lease_expires_at < ?3)) \
                 ORDER BY priority DESC, created_at ASC LIMIT 1) \
             RETURNING ", task_columns!(), ""))
        .bind(owner)
        .bind(expires)
        .bind(now_ms)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            tx.commit().await?;
            return Ok(None);
        };
        let record = task_from_row(&row)?;
        let event = self
            .insert_event(
                &mut tx,
                &record.id,
                "status",
                &serde_json::json!({"status": "processing", "attempt": record.attempts}),
                now,
            )
            .await?;
        tx.commit().await?;
        self.publish(event);
        Ok(Some(record))
    }

    async fn heartbeat(
        &self,
        id: &TaskId,
        owner: &str,
        lease: Duration,
        now: DateTime<Utc>,
    ) -> Result<LeaseState, StoreError> {
        let expires = ms(now) + lease_ms(lease);
        let updated = sqlx::query(
            "UPDATE tasks SET lease_expires_at = ? WHERE id = ? AND lease_owner = ? AND status = 'processing'",
        )
        .bind(expires)
        .bind(id.as_str())
        .bind(owner)
        .execute(&self.pool)
        .await?
        .rows_affected();
        if updated == 1 {
            return Ok(LeaseState::Held);
        }
        let status: Option<String> = sqlx::query_scalar("SELECT status FROM tasks WHERE id = ?")
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await?;
        Ok(if status.as_deref() == Some("cancelled") {
            LeaseState::Cancelled
        } else {
            LeaseState::Lost
        })
    }

    async fn release(&self, id: &TaskId, owner: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE tasks SET lease_owner = NULL, lease_expires_at = NULL WHERE id = ? AND lease_owner = ?")
            .bind(id.as_str())
            .bind(owner)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn save_plan(
        &self,
        id: &TaskId,
        owner: &str,
        plan: &Plan,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        let updated = sqlx::query(
            "UPDATE tasks SET plan = ?, total_steps = ?, updated_at = ? \
             WHERE id = ? AND lease_owner = ? AND status = 'processing'",
        )
        .bind(serde_json::to_string(plan)?)
        .bind(i64::try_from(plan.steps.len()).unwrap_or(0))
        .bind(ms(now))
        .bind(id.as_str())
        .bind(owner)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if updated != 1 {
            return Err(StoreError::LeaseLost(id.clone()));
        }
        let event = self
            .insert_event(&mut tx, id, "plan", &plan_event(plan), now)
            .await?;
        tx.commit().await?;
        self.publish(event);
        Ok(())
    }

    async fn set_phase(
        &self,
        id: &TaskId,
        owner: &str,
        phase: Phase,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        let updated = sqlx::query(
            "UPDATE tasks SET phase = ?, updated_at = ? WHERE id = ? AND lease_owner = ? AND status = 'processing'",
        )
        .bind(phase.as_str())
        .bind(ms(now))
        .bind(id.as_str())
        .bind(owner)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if updated != 1 {
            return Err(StoreError::LeaseLost(id.clone()));
        }
        let event = self
            .insert_event(
                &mut tx,
                id,
                "phase",
                &serde_json::json!({"phase": phase}),
                now,
            )
            .await?;
        tx.commit().await?;
        self.publish(event);
        Ok(())
    }

    #[instrument(skip_all, fields(task_id = %id, step = %step.step_key))]
    async fn save_step(
        &self,
        id: &TaskId,
        owner: &str,
        step: &StepRecord,
        usage: Usage,
        arms_used: &[ArmKind],
        progress: &Progress,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        let updated = sqlx::query(
            "UPDATE tasks SET prompt_tokens = ?, completion_tokens = ?, cost_dollars = ?, arms_used = ?, \
                 completed_steps = ?, total_steps = ?, current_step = ?, updated_at = ? \
             WHERE id = ? AND lease_owner = ? AND status = 'processing'",
        )
        .bind(tokens(usage.prompt_tokens))
        .bind(tokens(usage.completion_tokens))
        .bind(usage.cost_dollars)
        .bind(serde_json::to_string(arms_used)?)
        .bind(i64::from(progress.completed_steps))
        .bind(i64::from(progress.total_steps))
        .bind(progress.current_step.as_deref())
        .bind(ms(now))
        .bind(id.as_str())
        .bind(owner)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if updated != 1 {
            return Err(StoreError::LeaseLost(id.clone()));
        }
        let seq: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM task_steps WHERE task_id = ?")
            .bind(id.as_str())
            .fetch_one(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT OR REPLACE INTO task_steps (task_id, step_key, arm_id, status, output, provenance, error, seq) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(id.as_str())
        .bind(&step.step_key)
        .bind(step.arm_id.id())
        .bind(step_status(step.status))
        .bind(step.output.to_string())
        .bind(serde_json::to_string(&step.provenance)?)
        .bind(step.error.as_deref())
        .bind(seq)
        .execute(&mut *tx)
        .await?;
        let (kind, data) = step_event(step);
        let event = self.insert_event(&mut tx, id, kind, &data, now).await?;
        tx.commit().await?;
        self.publish(event);
        Ok(())
    }

    async fn steps(&self, id: &TaskId) -> Result<Vec<StepRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT step_key, arm_id, status, output, provenance, error FROM task_steps WHERE task_id = ? ORDER BY seq",
        )
        .bind(id.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| StepRow::from_row(row)?.into_record())
            .collect()
    }

    #[instrument(skip_all, fields(task_id = %id))]
    async fn finish(
        &self,
        id: &TaskId,
        owner: &str,
        finish: Finish,
        usage: Usage,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let (status, result, error) = match &finish {
            Finish::Completed(r) => ("completed", Some(serde_json::to_string(r)?), None),
            Finish::Failed(e) => ("failed", None, Some(serde_json::to_string(e)?)),
        };
        let mut tx = self.pool.begin().await?;
        let updated = sqlx::query(
            "UPDATE tasks SET status = ?, result = ?, error = ?, prompt_tokens = ?, completion_tokens = ?, \
                 cost_dollars = ?, finished_at = ?, updated_at = ?, current_step = NULL, \
                 lease_owner = NULL, lease_expires_at = NULL \
             WHERE id = ? AND lease_owner = ? AND status = 'processing'",
        )
        .bind(status)
        .bind(result)
        .bind(error)
        .bind(tokens(usage.prompt_tokens))
        .bind(tokens(usage.completion_tokens))
        .bind(usage.cost_dollars)
        .bind(ms(now))
        .bind(ms(now))
        .bind(id.as_str())
        .bind(owner)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if updated != 1 {
            return Err(StoreError::LeaseLost(id.clone()));
        }
        let mut data = serde_json::json!({"status": status});
        if let Finish::Failed(e) = &finish {
            data["error"] = serde_json::to_value(e)?;
        }
        let event = self.insert_event(&mut tx, id, "status", &data, now).await?;
        tx.commit().await?;
        self.publish(event);
        Ok(())
    }

    async fn cancel(
        &self,
        id: &TaskId,
        now: DateTime<Utc>,
    ) -> Result<Option<TaskRecord>, StoreError> {
        let error = TaskError::new(TaskErrorKind::Cancelled, "cancelled by request");
        let mut tx = self.pool.begin().await?;
        let updated = sqlx::query(
            "UPDATE tasks SET status = 'cancelled', error = ?, finished_at = ?, updated_at = ?, \
                 current_step = NULL, lease_owner = NULL, lease_expires_at = NULL \
             WHERE id = ? AND status IN ('queued', 'processing')",
        )
        .bind(serde_json::to_string(&error)?)
        .bind(ms(now))
        .bind(ms(now))
        .bind(id.as_str())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let event = if updated == 1 {
            Some(
                self.insert_event(
                    &mut tx,
                    id,
                    "status",
                    &serde_json::json!({"status": "cancelled"}),
                    now,
                )
                .await?,
            )
        } else {
            None
        };
        let row = sqlx::query(concat!(
            "SELECT ",
            task_columns!(),
            " FROM tasks WHERE id = ?"
        ))
        .bind(id.as_str())
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        if let Some(event) = event {
            self.publish(event);
        }
        row.as_ref().map(task_from_row).transpose()
    }

    async fn append_event(
        &self,
        id: &TaskId,
        kind: &str,
        data: serde_json::Value,
        now: DateTime<Utc>,
    ) -> Result<TaskEvent, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let event = self.insert_event(&mut conn, id, kind, &data, now).await?;
        self.publish(event.clone());
        Ok(event)
    }

    async fn events_since(
        &self,
        id: &TaskId,
        after_seq: i64,
    ) -> Result<Vec<TaskEvent>, StoreError> {
        let rows = sqlx::query("SELECT seq, kind, data, created_at FROM task_events WHERE task_id = ? AND seq > ? ORDER BY seq")
            .bind(id.as_str())
            .bind(after_seq)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| EventRow::from_row(row)?.into_event(id))
            .collect()
    }

    fn subscribe(&self) -> broadcast::Receiver<TaskEvent> {
        self.events.subscribe()
    }

    async fn queue_depth(&self) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM tasks WHERE status = 'queued'")
            .fetch_one(&self.pool)
            .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn prune_finished(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        let n = sqlx::query("DELETE FROM tasks WHERE status IN ('completed', 'failed', 'cancelled') AND finished_at < ?")
            .bind(ms(before))
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(n)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}

/// FTS5 query syntax treats many characters as operators; search for the words only.
fn fts_query(query: &str) -> Option<String> {
    let terms: Vec<String> = query
        .split(|c: char| !c.is_alphanumeric())
        .filter(|t| !t.is_empty())
        .map(|t| format!("\"{}\"", t.to_lowercase()))
        .collect();
    (!terms.is_empty()).then(|| terms.join(" OR "))
}

#[async_trait]
impl KnowledgeStore for SqliteStore {
    async fn add_document(
        &self,
        source: &str,
        metadata: serde_json::Value,
        chunks: Vec<NewChunk>,
    ) -> Result<i64, StoreError> {
        // Load the cache before writing: loaded after, it would already hold this document's
        // vectors and the extend below would add them twice.
        self.load_vectors().await?;
        let mut tx = self.pool.begin().await?;
        let doc_id: i64 = sqlx::query_scalar(
            "INSERT INTO documents (source, metadata, created_at) VALUES (?, ?, ?) RETURNING id",
        )
        .bind(source)
        .bind(metadata.to_string())
        .bind(Utc::now().timestamp_millis())
        .fetch_one(&mut *tx)
        .await?;
        let mut vectors = Vec::with_capacity(chunks.len());
        for (ord, chunk) in chunks.into_iter().enumerate() {
            let chunk_id: i64 = sqlx::query_scalar(
                "INSERT INTO chunks (document_id, ord, content) VALUES (?, ?, ?) RETURNING id",
            )
            .bind(doc_id)
            .bind(i64::try_from(ord).unwrap_or(0))
            .bind(&chunk.content)
            .fetch_one(&mut *tx)
            .await?;
            let payload = serde_json::json!({"chunk_id": chunk_id, "document_id": doc_id});
            sqlx::query("INSERT OR REPLACE INTO vectors (collection, id, vector, payload) VALUES (?, ?, ?, ?)")
                .bind(KNOWLEDGE_COLLECTION)
                .bind(chunk_id.to_string())
                .bind(encode_vector(&chunk.embedding))
                .bind(payload.to_string())
                .execute(&mut *tx)
                .await?;
            vectors.push((chunk_id.to_string(), chunk.embedding, payload));
        }
        tx.commit().await?;
        if let Some(cache) = self.vectors.write().await.as_mut() {
            cache
                .entry(KNOWLEDGE_COLLECTION.to_owned())
                .or_default()
                .extend(vectors);
        }
        Ok(doc_id)
    }

    async fn keyword_search(&self, query: &str, limit: u32) -> Result<Vec<ChunkHit>, StoreError> {
        let Some(fts) = fts_query(query) else {
            return Ok(Vec::new());
        };
        // bm25() is lower-is-better and negative; negate so higher is better.
        let rows = sqlx::query(
            "SELECT c.id, c.content, d.source, d.metadata, -bm25(chunks_fts) AS score \
             FROM chunks_fts JOIN chunks c ON c.id = chunks_fts.rowid JOIN documents d ON d.id = c.document_id \
             WHERE chunks_fts MATCH ? ORDER BY bm25(chunks_fts) LIMIT ?",
        )
        .bind(fts)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(chunk_hit).collect()
    }

    async fn vector_search(
        &self,
        embedding: &[f32],
        limit: u32,
    ) -> Result<Vec<ChunkHit>, StoreError> {
        let hits = self.search(KNOWLEDGE_COLLECTION, embedding, limit).await?;
        let mut out = Vec::with_capacity(hits.len());
        for hit in hits {
            let row = sqlx::query(
                "SELECT c.id, c.content, d.source, d.metadata, 0.0 AS score FROM chunks c \
                 JOIN documents d ON d.id = c.document_id WHERE c.id = ?",
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

    async fn document_count(&self) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM documents")
            .fetch_one(&self.pool)
            .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }
}

fn chunk_hit(row: &SqliteRow) -> Result<ChunkHit, StoreError> {
    let metadata: String = row.try_get("metadata")?;
    Ok(ChunkHit {
        chunk_id: row.try_get("id")?,
        content: row.try_get("content")?,
        source: row.try_get("source")?,
        metadata: serde_json::from_str(&metadata)?,
        score: row.try_get("score")?,
    })
}

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
        sqlx::query(
            "INSERT OR REPLACE INTO vectors (collection, id, vector, payload) VALUES (?, ?, ?, ?)",
        )
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
