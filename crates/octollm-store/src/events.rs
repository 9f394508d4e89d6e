//! Task events across replicas (SPEC §10: Redis pub/sub for task events).
//!
//! Every event is stored first (the table is the record; `GET /tasks/{id}/events` replays it
//! from any replica), then published on a Redis channel. Each process relays what the other
//! processes publish into its local broadcast, so a client streaming a task's events from one
//! replica sees the live events of a task another replica runs. A process skips its own
//! messages (it already delivered them locally). While Redis is down, events are still stored
//! and delivered locally; the relay reconnects by itself.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;

use crate::error::StoreError;
use crate::model::TaskEvent;

#[derive(Serialize, Deserialize)]
struct Envelope {
    origin: String,
    event: TaskEvent,
}

/// Events waiting to be published; beyond this (Redis slow or down) new ones are dropped
/// from the live feed (they are stored all the same).
const OUTBOX: usize = 4096;

/// Where a store hands its events for the other replicas.
#[derive(Clone)]
pub struct EventSender {
    tx: mpsc::Sender<TaskEvent>,
    connected: Arc<AtomicBool>,
}

impl EventSender {
    /// Whether the last exchange with Redis worked (the relay is subscribed and the last
    /// publish went through): with it down, other replicas' live views lag.
    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    pub fn send(&self, event: TaskEvent) {
        if self.tx.try_send(event).is_err() {
            tracing::warn!("task event outbox full; other replicas miss a live event");
        }
    }
}

/// Publishes this process's events and relays the others'.
pub struct RedisEvents {
    client: redis::Client,
    publisher: tokio::sync::Mutex<Option<redis::aio::MultiplexedConnection>>,
    channel: String,
    /// Distinguishes this process's messages from the others'.
    origin: String,
    connected: Arc<AtomicBool>,
}

fn unavailable(e: redis::RedisError) -> StoreError {
    StoreError::Unavailable(format!("redis: {}", e.category()))
}

impl RedisEvents {
    /// `namespace` separates deployments sharing one Redis.
    pub fn new(url: &str, namespace: &str) -> Result<Arc<Self>, StoreError> {
        let client = redis::Client::open(url)
            .map_err(|e| StoreError::Unavailable(format!("invalid Redis URL: {}", e.category())))?;
        let origin = format!(
            "{}-{}",
            std::process::id(),
            octollm_core::TaskId::generate().as_str()
        );
        Ok(Arc::new(Self {
            client,
            publisher: tokio::sync::Mutex::new(None),
            channel: format!("{namespace}:task-events"),
            origin,
            connected: Arc::new(AtomicBool::new(false)),
        }))
    }

    /// Publishes one stored event to the other processes.
    async fn publish(&self, event: &TaskEvent) -> Result<(), StoreError> {
        let payload = serde_json::to_string(&Envelope {
            origin: self.origin.clone(),
            event: event.clone(),
        })?;
        let mut slot = self.publisher.lock().await;
        if slot.is_none() {
            let conn = tokio::time::timeout(
                Duration::from_millis(500),
                self.client.get_multiplexed_async_connection(),
            )
            .await
            .map_err(|_| StoreError::Unavailable("redis: connect timed out".into()))?
            .map_err(unavailable)?;
            *slot = Some(conn);
        }
        let Some(conn) = slot.as_mut() else {
            return Err(StoreError::Unavailable("redis: no connection".into()));
        };
        let sent: Result<i64, _> = tokio::time::timeout(
            Duration::from_millis(500),
            redis::cmd("PUBLISH")
                .arg(&self.channel)
                .arg(payload)
                .query_async(conn),
        )
        .await
        .map_err(|_| StoreError::Unavailable("redis: publish timed out".into()))?;
        if let Err(e) = sent {
            // Make a new connection next time.
            *slot = None;
            return Err(unavailable(e));
        }
        Ok(())
    }

    /// Starts publishing (in order, from one task) and relaying into `local`; returns the
    /// sender this process's events go to.
    pub fn start(self: &Arc<Self>, local: broadcast::Sender<TaskEvent>) -> EventSender {
        let (tx, mut rx) = mpsc::channel::<TaskEvent>(OUTBOX);
        let this = Arc::clone(self);
        tokio::spawn(async move {
            while let Some(event) = rx.recv().await {
                match this.publish(&event).await {
                    Ok(()) => this.connected.store(true, Ordering::Relaxed),
                    Err(e) => {
                        this.connected.store(false, Ordering::Relaxed);
                        tracing::warn!(error = %e, "task event not published to other replicas");
                    }
                }
            }
        });
        self.relay(local);
        EventSender {
            tx,
            connected: Arc::clone(&self.connected),
        }
    }

    /// Forwards the other processes' events into `local` until the process ends,
    /// resubscribing after Redis outages.
    fn relay(self: &Arc<Self>, local: broadcast::Sender<TaskEvent>) -> JoinHandle<()> {
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(100);
            loop {
                let outcome = this.subscribe_once(&local).await;
                this.connected.store(false, Ordering::Relaxed);
                match outcome {
                    Ok(()) => backoff = Duration::from_millis(100),
                    Err(e) => {
                        tracing::warn!(error = %e, "task event relay: Redis unavailable; retrying");
                    }
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        })
    }

    /// One subscription, until the connection ends.
    async fn subscribe_once(&self, local: &broadcast::Sender<TaskEvent>) -> Result<(), StoreError> {
        let mut pubsub = self.client.get_async_pubsub().await.map_err(unavailable)?;
        pubsub.subscribe(&self.channel).await.map_err(unavailable)?;
        self.connected.store(true, Ordering::Relaxed);
        let mut messages = pubsub.into_on_message();
        while let Some(message) = messages.next().await {
            let Ok(payload) = message.get_payload::<String>() else {
                continue;
            };
            match serde_json::from_str::<Envelope>(&payload) {
                Ok(envelope) if envelope.origin != self.origin => {
                    // No local subscribers is normal.
                    let _ = local.send(envelope.event);
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "task event relay: unreadable message"),
            }
        }
        Ok(())
    }
}
