//! The distributed task store: tasks, the durable queue, steps and events in PostgreSQL,
//! shared by any number of orchestrator replicas.
//!
//! Claims take the most urgent claimable row with `FOR UPDATE SKIP LOCKED`, so replicas never
//! wait on each other's claims and never claim the same task twice; every later write is
//! guarded by the lease owner, so a replica whose lease expired and was taken over can no
//! longer write. Events are stored in the task's transaction; live subscribers of this
//! process get them through [`TaskStore::subscribe`] (other replicas read them from the table).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use octollm_core::budget::Usage;
use octollm_core::plan::Plan;
use octollm_core::{ArmKind, Phase, TaskError, TaskErrorKind, TaskId};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::{FromRow, PgPool};
use tokio::sync::broadcast;
use tracing::instrument;

use crate::error::StoreError;
use crate::events::{EventSender, RedisEvents};
use crate::model::{
    CreateOutcome, Finish, LeaseState, ListFilter, NewTask, Progress, StepRecord, TaskEvent,
    TaskPage, TaskRecord,
};
use crate::rows::{
    EventRow, IDEMPOTENCY_WINDOW_MS, StepRow, TaskRow, decode_cursor, encode_cursor, lease_ms, ms,
    plan_event, step_event, step_status, task_columns, tokens,
};
use crate::tasks::TaskStore;

#[derive(Clone)]
pub struct PostgresStore {
    pool: PgPool,
    events: broadcast::Sender<TaskEvent>,
    /// Shares events with the other replicas (Redis pub/sub), when configured.
    bus: Option<EventSender>,
}

impl PostgresStore {
    /// Connects (`postgres://user:password@host:port/db`); does not migrate.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, StoreError> {
        let options: PgConnectOptions = url
            .parse()
            .map_err(|e: sqlx::Error| StoreError::Unavailable(format!("bad database URL: {e}")))?;
        let pool = PgPoolOptions::new()
            .max_connections(max_connections.max(1))
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await?;
        Ok(Self::from_pool(pool))
    }

    pub fn from_pool(pool: PgPool) -> Self {
        let (events, _) = broadcast::channel(1024);
        Self {
            pool,
            events,
            bus: None,
        }
    }

    /// Publishes this store's events on Redis and delivers the other replicas' events to
    /// [`TaskStore::subscribe`] (must be called inside a Tokio runtime: it starts the relay).
    pub fn with_events(mut self, bus: &Arc<RedisEvents>) -> Self {
        self.bus = Some(bus.start(self.events.clone()));
        self
    }

    /// Creates or upgrades the schema (`octollm migrate`); safe to run from several replicas
    /// at once (sqlx takes an advisory lock).
    pub async fn migrate(&self) -> Result<(), StoreError> {
        sqlx::migrate!("./migrations/postgres")
            .run(&self.pool)
            .await?;
        Ok(())
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Delivers a stored event to local subscribers and to the other replicas.
    fn publish(&self, event: TaskEvent) {
        if let Some(bus) = &self.bus {
            // The event is stored; a Redis outage only costs other replicas' live views
            // (their clients replay from the table when they reconnect).
            bus.send(event.clone());
        }
        // No subscribers is normal.
        let _ = self.events.send(event);
    }

    async fn insert_event(
        conn: &mut sqlx::PgConnection,
        id: &TaskId,
        kind: &str,
        data: &serde_json::Value,
        now: DateTime<Utc>,
    ) -> Result<TaskEvent, StoreError> {
        let seq: i64 = sqlx::query_scalar(
            "INSERT INTO task_events (task_id, kind, data, created_at) VALUES ($1, $2, $3, $4) RETURNING seq",
        )
        .bind(id.as_str())
        .bind(kind)
        .bind(data.to_string())
        .bind(ms(now))
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

    /// Runs `update` (which must bind the lease owner and task id) and fails with `LeaseLost`
    /// unless exactly one row changed; then stores the event, all in one transaction.
    async fn guarded_write(
        &self,
        id: &TaskId,
        update: sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments>,
        kind: &str,
        data: &serde_json::Value,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        let updated = update.execute(&mut *tx).await?.rows_affected();
        if updated != 1 {
            return Err(StoreError::LeaseLost(id.clone()));
        }
        let event = Self::insert_event(&mut tx, id, kind, data, now).await?;
        tx.commit().await?;
        self.publish(event);
        Ok(())
    }
}

fn task_from_row(row: &PgRow) -> Result<TaskRecord, StoreError> {
    TaskRow::from_row(row)?.into_record()
}

#[async_trait]
impl TaskStore for PostgresStore {
    #[instrument(skip_all, fields(task_id = %task.id))]
    async fn create_task(&self, task: NewTask) -> Result<CreateOutcome, StoreError> {
        let now = ms(task.created_at);
        let mut tx = self.pool.begin().await?;
        let idempotency_key = task.stored_idempotency_key();
        if let Some(key) = &idempotency_key {
            // Serialise submissions of one key: the unique index alone would turn a race
            // into an error instead of the first task.
            sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
                .bind(key)
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "UPDATE tasks SET idempotency_key = NULL WHERE idempotency_key = $1 AND created_at < $2",
            )
            .bind(key)
            .bind(now - IDEMPOTENCY_WINDOW_MS)
            .execute(&mut *tx)
            .await?;
            let existing = sqlx::query(concat!(
                "SELECT ",
                task_columns!(),
                " FROM tasks WHERE idempotency_key = $1"
            ))
            .bind(key)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(row) = existing {
                tx.commit().await?;
                return Ok(CreateOutcome::Existing(task_from_row(&row)?));
            }
        }
        let row = sqlx::query(concat!(
            "INSERT INTO tasks (id, status, priority, spec, raw_input, idempotency_key, created_at, updated_at, trace_parent, owner_key) \
             VALUES ($1, 'queued', $2, $3, $4, $5, $6, $6, $7, $8) RETURNING ",
            task_columns!()
        ))
        .bind(task.id.as_str())
        .bind(task.spec.priority.rank())
        .bind(serde_json::to_string(&task.spec)?)
        .bind(task.raw_input.as_deref())
        .bind(idempotency_key.as_deref())
        .bind(now)
        .bind(task.trace.map(|t| t.header()))
        .bind(task.owner.as_deref())
        .fetch_one(&mut *tx)
        .await?;
        let record = task_from_row(&row)?;
        let event = Self::insert_event(
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
            " FROM tasks WHERE id = $1"
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
             WHERE ($1::TEXT IS NULL OR status = $1) \
               AND ($2::BIGINT IS NULL OR created_at < $2 OR (created_at = $2 AND id < $3)) \
               AND ($5::TEXT IS NULL OR owner_key = $5) \
             ORDER BY created_at DESC, id DESC LIMIT $4"
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
        let mut tx = self.pool.begin().await?;
        // SKIP LOCKED: a row another replica is claiming right now is passed over, not waited on.
        let row = sqlx::query(concat!(
            "WITH next AS ( \
                 SELECT id AS next_id FROM tasks \
                 WHERE status = 'queued' \
                    OR (status = 'processing' AND (lease_expires_at IS NULL OR lease_expires_at < $3)) \
                 ORDER BY priority DESC, created_at ASC \
                 LIMIT 1 \
                 FOR UPDATE SKIP LOCKED) \
             UPDATE tasks SET status = 'processing', lease_owner = $1, lease_expires_at = $2, \
                 attempts = attempts + 1, started_at = COALESCE(started_at, $3), updated_at = $3 \
             FROM next WHERE tasks.id = next.next_id \
             RETURNING ",
            task_columns!()
        ))
        .bind(owner)
        .bind(now_ms + lease_ms(lease))
        .bind(now_ms)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            tx.commit().await?;
            return Ok(None);
        };
        let record = task_from_row(&row)?;
        let event = Self::insert_event(
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
        let updated = sqlx::query(
            "UPDATE tasks SET lease_expires_at = $1 WHERE id = $2 AND lease_owner = $3 AND status = 'processing'",
        )
        .bind(ms(now) + lease_ms(lease))
        .bind(id.as_str())
        .bind(owner)
        .execute(&self.pool)
        .await?
        .rows_affected();
        if updated == 1 {
            return Ok(LeaseState::Held);
        }
        let status: Option<String> = sqlx::query_scalar("SELECT status FROM tasks WHERE id = $1")
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
        sqlx::query(
            "UPDATE tasks SET lease_owner = NULL, lease_expires_at = NULL WHERE id = $1 AND lease_owner = $2",
        )
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
        let update = sqlx::query(
            "UPDATE tasks SET plan = $1, total_steps = $2, updated_at = $3 \
             WHERE id = $4 AND lease_owner = $5 AND status = 'processing'",
        )
        .bind(serde_json::to_string(plan)?)
        .bind(i64::try_from(plan.steps.len()).unwrap_or(0))
        .bind(ms(now))
        .bind(id.as_str())
        .bind(owner);
        self.guarded_write(id, update, "plan", &plan_event(plan), now)
            .await
    }

    async fn set_phase(
        &self,
        id: &TaskId,
        owner: &str,
        phase: Phase,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let update = sqlx::query(
            "UPDATE tasks SET phase = $1, updated_at = $2 \
             WHERE id = $3 AND lease_owner = $4 AND status = 'processing'",
        )
        .bind(phase.as_str())
        .bind(ms(now))
        .bind(id.as_str())
        .bind(owner);
        let data = serde_json::json!({"phase": phase});
        self.guarded_write(id, update, "phase", &data, now).await
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
            "UPDATE tasks SET prompt_tokens = $1, completion_tokens = $2, cost_dollars = $3, arms_used = $4, \
                 completed_steps = $5, total_steps = $6, current_step = $7, updated_at = $8 \
             WHERE id = $9 AND lease_owner = $10 AND status = 'processing'",
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
        // The task row is locked by the update above, so the count is stable.
        sqlx::query(
            "INSERT INTO task_steps (task_id, step_key, arm_id, status, output, provenance, error, seq) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, (SELECT COUNT(*) FROM task_steps WHERE task_id = $1)) \
             ON CONFLICT (task_id, step_key) DO UPDATE SET arm_id = EXCLUDED.arm_id, \
                 status = EXCLUDED.status, output = EXCLUDED.output, \
                 provenance = EXCLUDED.provenance, error = EXCLUDED.error",
        )
        .bind(id.as_str())
        .bind(&step.step_key)
        .bind(step.arm_id.id())
        .bind(step_status(step.status))
        .bind(step.output.to_string())
        .bind(serde_json::to_string(&step.provenance)?)
        .bind(step.error.as_deref())
        .execute(&mut *tx)
        .await?;
        let (kind, data) = step_event(step);
        let event = Self::insert_event(&mut tx, id, kind, &data, now).await?;
        tx.commit().await?;
        self.publish(event);
        Ok(())
    }

    async fn steps(&self, id: &TaskId) -> Result<Vec<StepRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT step_key, arm_id, status, output, provenance, error FROM task_steps \
             WHERE task_id = $1 ORDER BY seq",
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
        let update = sqlx::query(
            "UPDATE tasks SET status = $1, result = $2, error = $3, prompt_tokens = $4, \
                 completion_tokens = $5, cost_dollars = $6, finished_at = $7, updated_at = $7, \
                 current_step = NULL, lease_owner = NULL, lease_expires_at = NULL \
             WHERE id = $8 AND lease_owner = $9 AND status = 'processing'",
        )
        .bind(status)
        .bind(result)
        .bind(error)
        .bind(tokens(usage.prompt_tokens))
        .bind(tokens(usage.completion_tokens))
        .bind(usage.cost_dollars)
        .bind(ms(now))
        .bind(id.as_str())
        .bind(owner);
        let mut data = serde_json::json!({"status": status});
        if let Finish::Failed(e) = &finish {
            data["error"] = serde_json::to_value(e)?;
        }
        self.guarded_write(id, update, "status", &data, now).await
    }

    async fn cancel(
        &self,
        id: &TaskId,
        now: DateTime<Utc>,
    ) -> Result<Option<TaskRecord>, StoreError> {
        let error = TaskError::new(TaskErrorKind::Cancelled, "cancelled by request");
        let mut tx = self.pool.begin().await?;
        let updated = sqlx::query(
            "UPDATE tasks SET status = 'cancelled', error = $1, finished_at = $2, updated_at = $2, \
                 current_step = NULL, lease_owner = NULL, lease_expires_at = NULL \
             WHERE id = $3 AND status IN ('queued', 'processing')",
        )
        .bind(serde_json::to_string(&error)?)
        .bind(ms(now))
        .bind(id.as_str())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let event = if updated == 1 {
            Some(
                Self::insert_event(
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
            " FROM tasks WHERE id = $1"
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
        let event = Self::insert_event(&mut conn, id, kind, &data, now).await?;
        self.publish(event.clone());
        Ok(event)
    }

    async fn events_since(
        &self,
        id: &TaskId,
        after_seq: i64,
    ) -> Result<Vec<TaskEvent>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, kind, data, created_at FROM task_events \
             WHERE task_id = $1 AND seq > $2 ORDER BY seq",
        )
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
        let n = sqlx::query(
            "DELETE FROM tasks WHERE status IN ('completed', 'failed', 'cancelled') AND finished_at < $1",
        )
        .bind(ms(before))
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n)
    }

    fn shared_events_connected(&self) -> Option<bool> {
        self.bus.as_ref().map(EventSender::connected)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}
