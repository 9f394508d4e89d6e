//! The distributed task store: tasks, the durable queue, steps and events in PostgreSQL,
//! shared by any number of orchestrator replicas.
//!
//! Claims take the most urgent claimable row with `FOR UPDATE SKIP LOCKED`, so replicas never
//! wait on each other's claims and never claim the same task twice; every later write is
//! guarded by the lease owner, so a replica whose lease expired and was taken over can no
//! longer write. Events are stored in the task's transaction; live subscribers of this
//! process get them through [`TaskStore::subscribe`] (other replicas read them from the table).

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use tokio::sync::broadcast;

use crate::error::StoreError;
use crate::events::{EventSender, RedisEvents};
use crate::model::TaskEvent;
use crate::rows::task_columns;
use crate::sql::{Dialect, claimable, task_store_impl};

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
        crate::migrations::run(crate::migrations::Backend::Postgres, &self.pool).await
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

    fn subscriber(&self) -> broadcast::Receiver<TaskEvent> {
        self.events.subscribe()
    }

    fn events_connected(&self) -> Option<bool> {
        self.bus.as_ref().map(EventSender::connected)
    }
}

impl Dialect for PostgresStore {
    /// `SKIP LOCKED`: a row another replica is claiming right now is passed over, not waited
    /// on, so replicas never wait on each other's claims and never claim a task twice.
    fn claim() -> &'static str {
        static CLAIM: LazyLock<String> = LazyLock::new(|| {
            format!(
                "WITH next AS ( \
                     SELECT id AS next_id FROM tasks WHERE {} \
                     ORDER BY priority DESC, created_at ASC LIMIT 1 FOR UPDATE SKIP LOCKED) \
                 UPDATE tasks SET status = 'processing', lease_owner = $1, lease_expires_at = $2, \
                     attempts = attempts + 1, started_at = COALESCE(started_at, $3), updated_at = $3 \
                 FROM next WHERE tasks.id = next.next_id \
                 RETURNING {}",
                claimable(),
                task_columns!()
            )
        });
        CLAIM.as_str()
    }

    /// The unique index alone would turn two racing submissions of one key into an error
    /// instead of the first task.
    const LOCK_IDEMPOTENCY_KEY: Option<&'static str> =
        Some("SELECT pg_advisory_xact_lock(hashtext($1))");
}

task_store_impl!(PostgresStore, sqlx::Postgres);
