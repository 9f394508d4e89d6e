//! A task's event stream: the stored events after a point (`Last-Event-ID`), then the live
//! ones as they happen, ending after the final status.
//!
//! Live events come from the store's feed, and from the table when the feed missed some (a
//! slow reader) or cannot carry them (the Redis relay between replicas is down), so a stream
//! never stalls on a task another replica runs.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use octollm_core::{Principal, TaskId};
use octollm_store::{TaskEvent, TaskStore};
use tokio::sync::broadcast;

use crate::Orchestrator;
use crate::error::OrchestratorError;

/// How often a stream reads the table while the live feed cannot be trusted (Redis down).
const EVENT_POLL: Duration = Duration::from_secs(1);

impl Orchestrator {
    /// The events of a task `principal` may see, after sequence number `after`.
    pub async fn events(
        &self,
        principal: &Principal,
        id: &TaskId,
        after: i64,
    ) -> Result<impl Stream<Item = TaskEvent> + Send + use<>, OrchestratorError> {
        // Subscribe before reading history so nothing falls between the two.
        let live = self.store.subscribe();
        let task = self.visible(principal, id).await?;
        let history = self.store.events_since(id, after).await?;
        let last_seq = history.last().map(|e| e.seq).unwrap_or(after);
        let done = task.status.is_terminal() || history.iter().any(TaskEvent::is_final);
        let replay = futures::stream::iter(history);
        let live = if done {
            futures::stream::empty().boxed()
        } else {
            live_events(self.store.clone(), id.clone(), live, last_seq).boxed()
        };
        // End right after the final status: a sentinel follows it, so the stream closes
        // without waiting for another event that will never come.
        Ok(replay
            .chain(live)
            .flat_map(|e| {
                let last = e.is_final();
                futures::stream::iter([Some(e)].into_iter().chain(last.then_some(None)))
            })
            .take_while(|e| futures::future::ready(e.is_some()))
            .filter_map(futures::future::ready))
    }
}

struct Feed {
    store: Arc<dyn TaskStore>,
    id: TaskId,
    live: broadcast::Receiver<TaskEvent>,
    tick: tokio::time::Interval,
    last_seq: i64,
    pending: VecDeque<TaskEvent>,
}

impl Feed {
    /// Queues what the table holds beyond `last_seq`; false when the store fails.
    async fn catch_up(&mut self) -> bool {
        match self.store.events_since(&self.id, self.last_seq).await {
            Ok(events) => {
                self.pending.extend(events);
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, task_id = %self.id, "event stream cannot read the table");
                false
            }
        }
    }
}

/// The task's events after `last_seq` as they happen.
fn live_events(
    store: Arc<dyn TaskStore>,
    id: TaskId,
    live: broadcast::Receiver<TaskEvent>,
    last_seq: i64,
) -> impl Stream<Item = TaskEvent> {
    let mut tick = tokio::time::interval(EVENT_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let feed = Feed {
        store,
        id,
        live,
        tick,
        last_seq,
        pending: VecDeque::new(),
    };
    futures::stream::unfold(feed, |mut feed| async move {
        loop {
            if let Some(event) = feed.pending.pop_front() {
                if event.seq > feed.last_seq {
                    feed.last_seq = event.seq;
                    return Some((event, feed));
                }
                continue;
            }
            tokio::select! {
                received = feed.live.recv() => match received {
                    Ok(e) if e.task_id == feed.id => feed.pending.push_back(e),
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        // The missed events are in the table.
                        if !feed.catch_up().await {
                            return None;
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
                _ = feed.tick.tick() => {
                    if feed.store.shared_events_connected() == Some(false) {
                        feed.catch_up().await;
                    }
                }
            }
        }
    })
}
