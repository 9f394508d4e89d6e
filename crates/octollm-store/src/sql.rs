//! The task store on SQL, written once for SQLite and PostgreSQL.
//!
//! Both backends take the same statements: `$N` placeholders (sqlx binds `$N` by number on
//! SQLite too), `CAST(… AS …)` rather than `::`, `ON CONFLICT` upserts, integer milliseconds
//! for time. Where the two differ (how a worker claims a task, how concurrent submissions of
//! one idempotency key are serialised) each backend supplies a [`Dialect`]; everything else is
//! [`task_store_impl!`], expanded once per backend.
//!
//! Every write that changes a task's row is a *fenced update*: it names the status it
//! leaves the task in, and its `WHERE` admits only the statuses that may become that one
//! ([`TaskStatus::can_become`]), plus the lease owner for a worker's writes. So the state
//! machine the property tests check is the one the store applies; an update that matches no
//! row means the caller lost the task ([`StoreError::LeaseLost`]).

use std::sync::LazyLock;

use octollm_core::TaskStatus;

/// What differs between the backends' task stores.
pub(crate) trait Dialect {
    /// Claims the most urgent [`claimable`] task for `$1` (owner) until `$2` at `$3` (now),
    /// returning its `task_columns!`.
    fn claim() -> &'static str;
    /// Run first in a submission's transaction, bound to the stored idempotency key, so two
    /// submissions of one key cannot both insert (`None`: the backend serialises writes).
    const LOCK_IDEMPOTENCY_KEY: Option<&'static str>;
}

/// `'queued', 'processing'`: the statuses that may become `to`, as SQL literals.
pub(crate) fn sources(to: TaskStatus) -> String {
    TaskStatus::sources(to)
        .map(|s| format!("'{}'", s.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `UPDATE tasks SET <set> WHERE id = $1 AND lease_owner = $2 AND status IN (…)`: a worker's
/// write, taking effect only while it holds the lease and the task may become `to`. `set`
/// binds from `$3`.
pub(crate) fn fenced(set: &str, to: TaskStatus) -> String {
    format!(
        "UPDATE tasks SET {set} WHERE id = $1 AND lease_owner = $2 AND status IN ({})",
        sources(to)
    )
}

/// The claim condition: a task that may become `processing` and holds no live lease.
pub(crate) fn claimable() -> String {
    format!(
        "status IN ({}) AND (lease_expires_at IS NULL OR lease_expires_at < $3)",
        sources(TaskStatus::Processing)
    )
}

macro_rules! fenced_statement {
    ($name:ident, $to:expr, $set:literal) => {
        pub(crate) static $name: LazyLock<String> = LazyLock::new(|| fenced($set, $to));
    };
}

fenced_statement!(HEARTBEAT, TaskStatus::Processing, "lease_expires_at = $3");
fenced_statement!(
    SET_PHASE,
    TaskStatus::Processing,
    "phase = $3, updated_at = $4"
);
fenced_statement!(
    START_UNIT,
    TaskStatus::Processing,
    "current_step = $3, updated_at = $4"
);
fenced_statement!(
    SAVE_UNIT,
    TaskStatus::Processing,
    "prompt_tokens = $3, completion_tokens = $4, cost_dollars = $5, arms_used = $6, \
     completed_steps = $7, total_steps = $8, current_step = $9, updated_at = $10"
);
fenced_statement!(
    COMPLETE,
    TaskStatus::Completed,
    "status = 'completed', result = $3, error = NULL, prompt_tokens = $4, completion_tokens = $5, \
     cost_dollars = $6, finished_at = $7, updated_at = $7, lease_owner = NULL, lease_expires_at = NULL"
);
fenced_statement!(
    FAIL,
    TaskStatus::Failed,
    "status = 'failed', result = $3, error = $8, prompt_tokens = $4, completion_tokens = $5, \
     cost_dollars = $6, finished_at = $7, updated_at = $7, lease_owner = NULL, lease_expires_at = NULL"
);

/// Cancelling needs no lease: any task that may become `cancelled` is.
pub(crate) static CANCEL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE tasks SET status = 'cancelled', error = $2, finished_at = $3, updated_at = $3, \
             lease_owner = NULL, lease_expires_at = NULL \
         WHERE id = $1 AND status IN ({})",
        sources(TaskStatus::Cancelled)
    )
});

pub(crate) const RELEASE: &str = "UPDATE tasks SET lease_owner = NULL, lease_expires_at = NULL \
                                   WHERE id = $1 AND lease_owner = $2";
pub(crate) const STATUS_OF: &str = "SELECT status FROM tasks WHERE id = $1";
pub(crate) const FREE_IDEMPOTENCY_KEY: &str =
    "UPDATE tasks SET idempotency_key = NULL WHERE idempotency_key = $1 AND created_at < $2";
pub(crate) const INSERT_EVENT: &str = "INSERT INTO task_events (task_id, kind, data, created_at) \
                                        VALUES ($1, $2, $3, $4) RETURNING seq";
pub(crate) const SAVE_STEP_ROW: &str = "INSERT INTO task_steps \
         (task_id, step_key, arm_id, status, output, provenance, error, seq) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, (SELECT COUNT(*) FROM task_steps WHERE task_id = $1)) \
     ON CONFLICT (task_id, step_key) DO UPDATE SET arm_id = excluded.arm_id, \
         status = excluded.status, output = excluded.output, \
         provenance = excluded.provenance, error = excluded.error";
pub(crate) const STEPS: &str = "SELECT step_key, arm_id, status, output, provenance, error \
                                 FROM task_steps WHERE task_id = $1 ORDER BY seq";
pub(crate) const EVENTS_SINCE: &str = "SELECT seq, kind, data, created_at FROM task_events \
                                        WHERE task_id = $1 AND seq > $2 ORDER BY seq";
pub(crate) const QUEUE_DEPTH: &str = "SELECT COUNT(*) FROM tasks WHERE status = 'queued'";
pub(crate) const PRUNE: &str = "DELETE FROM tasks \
     WHERE status IN ('completed', 'failed', 'cancelled') AND finished_at < $1";
pub(crate) const PING: &str = "SELECT 1";

/// The task store's trait implementation for one backend: `$store` (on sqlx database `$db`)
/// has `pool()`, `publish(TaskEvent)`, `subscriber()`, `events_connected()` and a [`Dialect`].
macro_rules! task_store_impl {
    ($store:ty, $db:ty) => {
        impl $store {
            /// Appends an event inside `conn`'s transaction.
            async fn insert_event(
                conn: &mut <$db as sqlx::Database>::Connection,
                id: &octollm_core::TaskId,
                kind: $crate::model::TaskEventKind,
                data: serde_json::Value,
                now: chrono::DateTime<chrono::Utc>,
            ) -> Result<$crate::model::TaskEvent, $crate::error::StoreError> {
                let at = $crate::rows::ms(now);
                let seq: i64 = sqlx::query_scalar($crate::sql::INSERT_EVENT)
                    .bind(id.as_str())
                    .bind(kind.as_str())
                    .bind(data.to_string())
                    .bind(at)
                    .fetch_one(&mut *conn)
                    .await?;
                // The time as stored (milliseconds), so a live event and its replay are equal.
                Ok($crate::model::TaskEvent {
                    seq,
                    task_id: id.clone(),
                    kind,
                    data,
                    created_at: $crate::rows::from_ms(at)?,
                })
            }

            /// A lease-fenced update and its event, in one transaction; the event is
            /// published once committed. The caller's lease still holds, or nothing changes
            /// ([`StoreError::LeaseLost`](crate::error::StoreError::LeaseLost)).
            async fn fenced_update<'q>(
                &self,
                id: &octollm_core::TaskId,
                update: sqlx::query::Query<'q, $db, <$db as sqlx::Database>::Arguments>,
                kind: $crate::model::TaskEventKind,
                data: serde_json::Value,
                now: chrono::DateTime<chrono::Utc>,
            ) -> Result<(), $crate::error::StoreError> {
                let mut tx = self.pool().begin().await?;
                let rows = update.execute(&mut *tx).await?.rows_affected();
                Self::fence(id, rows)?;
                let event = Self::insert_event(&mut tx, id, kind, data, now).await?;
                tx.commit().await?;
                self.publish(event);
                Ok(())
            }

            /// One row changed, or the caller has lost the task.
            fn fence(
                id: &octollm_core::TaskId,
                rows: u64,
            ) -> Result<(), $crate::error::StoreError> {
                if rows == 1 {
                    Ok(())
                } else {
                    Err($crate::error::StoreError::LeaseLost(id.clone()))
                }
            }

            async fn task_row(
                &self,
                id: &octollm_core::TaskId,
            ) -> Result<Option<$crate::model::TaskRecord>, $crate::error::StoreError> {
                let row = sqlx::query(concat!(
                    "SELECT ",
                    $crate::rows::task_columns!(),
                    " FROM tasks WHERE id = $1"
                ))
                .bind(id.as_str())
                .fetch_optional(self.pool())
                .await?;
                row.as_ref().map(Self::task_from_row).transpose()
            }

            fn task_from_row(
                row: &<$db as sqlx::Database>::Row,
            ) -> Result<$crate::model::TaskRecord, $crate::error::StoreError> {
                <$crate::rows::TaskRow as sqlx::FromRow<_>>::from_row(row)?.into_record()
            }
        }

        #[async_trait::async_trait]
        impl $crate::tasks::TaskStore for $store {
            #[tracing::instrument(skip_all, fields(task_id = %task.id))]
            async fn create_task(
                &self,
                task: $crate::model::NewTask,
            ) -> Result<$crate::model::CreateOutcome, $crate::error::StoreError> {
                use $crate::sql::Dialect as _;
                let now = $crate::rows::ms(task.created_at);
                let mut tx = self.pool().begin().await?;
                let idempotency_key = task.stored_idempotency_key();
                if let Some(key) = &idempotency_key {
                    if let Some(lock) = <$store>::LOCK_IDEMPOTENCY_KEY {
                        sqlx::query(lock).bind(key).execute(&mut *tx).await?;
                    }
                    // An old use of the key no longer counts: free it for this task.
                    sqlx::query($crate::sql::FREE_IDEMPOTENCY_KEY)
                        .bind(key)
                        .bind(now - $crate::rows::IDEMPOTENCY_WINDOW_MS)
                        .execute(&mut *tx)
                        .await?;
                    let existing = sqlx::query(concat!(
                        "SELECT ",
                        $crate::rows::task_columns!(),
                        " FROM tasks WHERE idempotency_key = $1"
                    ))
                    .bind(key)
                    .fetch_optional(&mut *tx)
                    .await?;
                    if let Some(row) = existing {
                        tx.commit().await?;
                        return Ok($crate::model::CreateOutcome::Existing(
                            Self::task_from_row(&row)?,
                        ));
                    }
                }
                let row = sqlx::query(concat!(
                    "INSERT INTO tasks (id, status, priority, spec, raw_input, idempotency_key, \
                         created_at, updated_at, trace_parent, owner_key) \
                     VALUES ($1, 'queued', $2, $3, $4, $5, $6, $6, $7, $8) RETURNING ",
                    $crate::rows::task_columns!()
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
                let record = Self::task_from_row(&row)?;
                let event = Self::insert_event(
                    &mut tx,
                    &task.id,
                    $crate::model::TaskEventKind::Status,
                    serde_json::json!({"status": octollm_core::TaskStatus::Queued}),
                    task.created_at,
                )
                .await?;
                tx.commit().await?;
                self.publish(event);
                Ok($crate::model::CreateOutcome::Created(record))
            }

            async fn get_task(
                &self,
                id: &octollm_core::TaskId,
            ) -> Result<Option<$crate::model::TaskRecord>, $crate::error::StoreError> {
                self.task_row(id).await
            }

            async fn list_tasks(
                &self,
                filter: $crate::model::ListFilter,
            ) -> Result<$crate::model::TaskPage, $crate::error::StoreError> {
                let limit = filter.limit.clamp(1, 100);
                let (cursor_ts, cursor_id) = match &filter.cursor {
                    Some(c) => {
                        let (ts, id) = $crate::rows::decode_cursor(c)?;
                        (Some(ts), Some(id.to_string()))
                    }
                    None => (None, None),
                };
                let rows = sqlx::query(concat!(
                    "SELECT ",
                    $crate::rows::task_columns!(),
                    " FROM tasks \
                     WHERE (CAST($1 AS TEXT) IS NULL OR status = $1) \
                       AND (CAST($2 AS BIGINT) IS NULL OR created_at < $2 \
                            OR (created_at = $2 AND id < $3)) \
                       AND (CAST($5 AS TEXT) IS NULL OR owner_key = $5) \
                     ORDER BY created_at DESC, id DESC LIMIT $4"
                ))
                .bind(filter.status.map(|s| s.as_str()))
                .bind(cursor_ts)
                .bind(cursor_id)
                .bind(i64::from(limit) + 1)
                .bind(filter.owner.as_deref())
                .fetch_all(self.pool())
                .await?;
                let mut tasks = rows
                    .iter()
                    .map(Self::task_from_row)
                    .collect::<Result<Vec<_>, _>>()?;
                let next_cursor = if tasks.len() > limit as usize {
                    tasks.truncate(limit as usize);
                    tasks.last().map(|t| {
                        $crate::rows::encode_cursor($crate::rows::ms(t.created_at), t.id.as_str())
                    })
                } else {
                    None
                };
                Ok($crate::model::TaskPage { tasks, next_cursor })
            }

            #[tracing::instrument(skip_all, fields(owner))]
            async fn claim_next(
                &self,
                owner: &str,
                lease: std::time::Duration,
                now: chrono::DateTime<chrono::Utc>,
            ) -> Result<Option<$crate::model::TaskRecord>, $crate::error::StoreError> {
                use $crate::sql::Dialect as _;
                let now_ms = $crate::rows::ms(now);
                let mut tx = self.pool().begin().await?;
                let row = sqlx::query(<$store>::claim())
                    .bind(owner)
                    .bind(now_ms.saturating_add($crate::rows::lease_ms(lease)))
                    .bind(now_ms)
                    .fetch_optional(&mut *tx)
                    .await?;
                let Some(row) = row else {
                    tx.commit().await?;
                    return Ok(None);
                };
                let record = Self::task_from_row(&row)?;
                let event = Self::insert_event(
                    &mut tx,
                    &record.id,
                    $crate::model::TaskEventKind::Status,
                    serde_json::json!({
                        "status": octollm_core::TaskStatus::Processing,
                        "attempt": record.attempts,
                    }),
                    now,
                )
                .await?;
                tx.commit().await?;
                self.publish(event);
                Ok(Some(record))
            }

            async fn heartbeat(
                &self,
                id: &octollm_core::TaskId,
                owner: &str,
                lease: std::time::Duration,
                now: chrono::DateTime<chrono::Utc>,
            ) -> Result<$crate::model::LeaseState, $crate::error::StoreError> {
                let expires = $crate::rows::ms(now).saturating_add($crate::rows::lease_ms(lease));
                let updated = sqlx::query($crate::sql::HEARTBEAT.as_str())
                    .bind(id.as_str())
                    .bind(owner)
                    .bind(expires)
                    .execute(self.pool())
                    .await?
                    .rows_affected();
                if updated == 1 {
                    return Ok($crate::model::LeaseState::Held);
                }
                let status: Option<String> = sqlx::query_scalar($crate::sql::STATUS_OF)
                    .bind(id.as_str())
                    .fetch_optional(self.pool())
                    .await?;
                Ok(if status.as_deref() == Some("cancelled") {
                    $crate::model::LeaseState::Cancelled
                } else {
                    $crate::model::LeaseState::Lost
                })
            }

            async fn release(
                &self,
                id: &octollm_core::TaskId,
                owner: &str,
            ) -> Result<(), $crate::error::StoreError> {
                sqlx::query($crate::sql::RELEASE)
                    .bind(id.as_str())
                    .bind(owner)
                    .execute(self.pool())
                    .await?;
                Ok(())
            }

            async fn set_phase(
                &self,
                id: &octollm_core::TaskId,
                owner: &str,
                phase: octollm_core::Phase,
                now: chrono::DateTime<chrono::Utc>,
            ) -> Result<(), $crate::error::StoreError> {
                let update = sqlx::query($crate::sql::SET_PHASE.as_str())
                    .bind(id.as_str())
                    .bind(owner)
                    .bind(phase.as_str())
                    .bind($crate::rows::ms(now));
                let data = serde_json::json!({"phase": phase});
                self.fenced_update(id, update, $crate::model::TaskEventKind::Phase, data, now)
                    .await
            }

            async fn start_unit(
                &self,
                id: &octollm_core::TaskId,
                owner: &str,
                unit: &octollm_core::UnitKey,
                arm: octollm_core::ArmKind,
                attempt: u32,
                now: chrono::DateTime<chrono::Utc>,
            ) -> Result<(), $crate::error::StoreError> {
                let update = sqlx::query($crate::sql::START_UNIT.as_str())
                    .bind(id.as_str())
                    .bind(owner)
                    .bind(unit.to_string())
                    .bind($crate::rows::ms(now));
                let data = serde_json::json!({"step_id": unit, "arm_id": arm, "attempt": attempt});
                self.fenced_update(id, update, $crate::model::TaskEventKind::StepStarted, data, now)
                    .await
            }

            #[tracing::instrument(skip_all, fields(task_id = %id, unit = %done.record.unit))]
            async fn save_unit(
                &self,
                id: &octollm_core::TaskId,
                owner: &str,
                done: $crate::model::UnitDone<'_>,
                now: chrono::DateTime<chrono::Utc>,
            ) -> Result<(), $crate::error::StoreError> {
                let step = done.record;
                let mut tx = self.pool().begin().await?;
                let rows = sqlx::query($crate::sql::SAVE_UNIT.as_str())
                    .bind(id.as_str())
                    .bind(owner)
                    .bind($crate::rows::tokens(done.usage.prompt_tokens))
                    .bind($crate::rows::tokens(done.usage.completion_tokens))
                    .bind(done.usage.cost_dollars)
                    .bind(serde_json::to_string(done.arms_used)?)
                    .bind(i64::from(done.progress.completed_steps))
                    .bind(i64::from(done.progress.total_steps))
                    .bind(done.progress.current_unit.as_ref().map(ToString::to_string))
                    .bind($crate::rows::ms(now))
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                Self::fence(id, rows)?;
                // The task row is locked by the update above, so the step count is stable.
                sqlx::query($crate::sql::SAVE_STEP_ROW)
                    .bind(id.as_str())
                    .bind(step.unit.to_string())
                    .bind(step.arm_id.id())
                    .bind($crate::rows::step_status(step.status))
                    .bind(step.output.to_string())
                    .bind(serde_json::to_string(&step.provenance)?)
                    .bind(step.error.as_deref())
                    .execute(&mut *tx)
                    .await?;
                let mut events = Vec::with_capacity(2 + done.screening.len());
                for data in done.screening {
                    events.push(
                        Self::insert_event(
                            &mut tx,
                            id,
                            $crate::model::TaskEventKind::Screening,
                            data.clone(),
                            now,
                        )
                        .await?,
                    );
                }
                for (kind, data) in $crate::rows::unit_events(step) {
                    events.push(Self::insert_event(&mut tx, id, kind, data, now).await?);
                }
                tx.commit().await?;
                for event in events {
                    self.publish(event);
                }
                Ok(())
            }

            async fn units(
                &self,
                id: &octollm_core::TaskId,
            ) -> Result<Vec<$crate::model::StepRecord>, $crate::error::StoreError> {
                let rows = sqlx::query($crate::sql::STEPS)
                    .bind(id.as_str())
                    .fetch_all(self.pool())
                    .await?;
                rows.iter()
                    .map(|row| {
                        <$crate::rows::StepRow as sqlx::FromRow<_>>::from_row(row)?.into_record()
                    })
                    .collect()
            }

            #[tracing::instrument(skip_all, fields(task_id = %id))]
            async fn finish(
                &self,
                id: &octollm_core::TaskId,
                owner: &str,
                finish: $crate::model::Finish,
                usage: octollm_core::budget::Usage,
                now: chrono::DateTime<chrono::Utc>,
            ) -> Result<(), $crate::error::StoreError> {
                use $crate::model::Finish;
                let (statement, result, error) = match &finish {
                    Finish::Completed(r) => ($crate::sql::COMPLETE.as_str(), Some(r), None),
                    Finish::Failed { error, partial } => {
                        ($crate::sql::FAIL.as_str(), partial.as_ref(), Some(error))
                    }
                };
                let mut update = sqlx::query(statement)
                    .bind(id.as_str())
                    .bind(owner)
                    .bind(result.map(serde_json::to_string).transpose()?)
                    .bind($crate::rows::tokens(usage.prompt_tokens))
                    .bind($crate::rows::tokens(usage.completion_tokens))
                    .bind(usage.cost_dollars)
                    .bind($crate::rows::ms(now));
                if let Some(error) = error {
                    update = update.bind(serde_json::to_string(error)?);
                }
                let mut data = serde_json::json!({"status": finish.status()});
                if let Some(error) = error {
                    data["error"] = serde_json::to_value(error)?;
                }
                self.fenced_update(id, update, $crate::model::TaskEventKind::Status, data, now)
                    .await
            }

            async fn cancel(
                &self,
                id: &octollm_core::TaskId,
                now: chrono::DateTime<chrono::Utc>,
            ) -> Result<Option<$crate::model::TaskRecord>, $crate::error::StoreError> {
                let error = octollm_core::TaskError::new(
                    octollm_core::TaskErrorKind::Cancelled,
                    "cancelled by request",
                );
                let mut tx = self.pool().begin().await?;
                let updated = sqlx::query($crate::sql::CANCEL.as_str())
                    .bind(id.as_str())
                    .bind(serde_json::to_string(&error)?)
                    .bind($crate::rows::ms(now))
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                let event = if updated == 1 {
                    Some(
                        Self::insert_event(
                            &mut tx,
                            id,
                            $crate::model::TaskEventKind::Status,
                            serde_json::json!({"status": octollm_core::TaskStatus::Cancelled}),
                            now,
                        )
                        .await?,
                    )
                } else {
                    None
                };
                let row = sqlx::query(concat!(
                    "SELECT ",
                    $crate::rows::task_columns!(),
                    " FROM tasks WHERE id = $1"
                ))
                .bind(id.as_str())
                .fetch_optional(&mut *tx)
                .await?;
                tx.commit().await?;
                if let Some(event) = event {
                    self.publish(event);
                }
                row.as_ref().map(Self::task_from_row).transpose()
            }

            async fn events_since(
                &self,
                id: &octollm_core::TaskId,
                after_seq: i64,
            ) -> Result<Vec<$crate::model::TaskEvent>, $crate::error::StoreError> {
                let rows = sqlx::query($crate::sql::EVENTS_SINCE)
                    .bind(id.as_str())
                    .bind(after_seq)
                    .fetch_all(self.pool())
                    .await?;
                rows.iter()
                    .map(|row| {
                        <$crate::rows::EventRow as sqlx::FromRow<_>>::from_row(row)?
                            .into_event(id)
                    })
                    .collect()
            }

            fn subscribe(&self) -> tokio::sync::broadcast::Receiver<$crate::model::TaskEvent> {
                self.subscriber()
            }

            async fn queue_depth(&self) -> Result<u64, $crate::error::StoreError> {
                let n: i64 = sqlx::query_scalar($crate::sql::QUEUE_DEPTH)
                    .fetch_one(self.pool())
                    .await?;
                Ok(u64::try_from(n).unwrap_or(0))
            }

            async fn prune_finished(
                &self,
                before: chrono::DateTime<chrono::Utc>,
            ) -> Result<u64, $crate::error::StoreError> {
                let n = sqlx::query($crate::sql::PRUNE)
                    .bind($crate::rows::ms(before))
                    .execute(self.pool())
                    .await?
                    .rows_affected();
                Ok(n)
            }

            async fn ping(&self) -> Result<(), $crate::error::StoreError> {
                sqlx::query($crate::sql::PING).execute(self.pool()).await?;
                Ok(())
            }

            fn shared_events_connected(&self) -> Option<bool> {
                self.events_connected()
            }
        }
    };
}
pub(crate) use task_store_impl;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_change_starts_only_where_the_state_machine_allows() {
        assert_eq!(sources(TaskStatus::Processing), "'queued', 'processing'");
        assert_eq!(sources(TaskStatus::Completed), "'processing'");
        assert_eq!(sources(TaskStatus::Cancelled), "'queued', 'processing'");
        assert_eq!(sources(TaskStatus::Queued), "");
        assert!(
            COMPLETE.ends_with("status IN ('processing')"),
            "{}",
            *COMPLETE
        );
        assert!(
            CANCEL.ends_with("status IN ('queued', 'processing')"),
            "{}",
            *CANCEL
        );
        assert!(claimable().starts_with("status IN ('queued', 'processing')"));
    }
}
