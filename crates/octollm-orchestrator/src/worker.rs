//! Worker loops: claim a task under a lease, keep the lease alive with heartbeats while the
//! run goes on, finish the task, repeat. On shutdown, running steps finish, then the lease
//! is released so another worker (or the next start) resumes at once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use octollm_core::TaskId;
use octollm_store::{Finish, LeaseState, TaskRecord};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, error, info, info_span, warn};

use crate::Orchestrator;
use crate::metrics as m;
use crate::pipeline::{Run, Stop};

/// How often the queue depth is measured (one `COUNT(*)` per orchestrator process).
const QUEUE_MEASURE_INTERVAL: Duration = Duration::from_secs(1);

impl Orchestrator {
    /// Starts `config.workers` worker loops on `tracker`; they stop when `shutdown` fires.
    pub fn spawn_workers(self: &Arc<Self>, tracker: &TaskTracker, shutdown: CancellationToken) {
        for n in 0..self.config.workers {
            let orch = Arc::clone(self);
            let shutdown = shutdown.clone();
            let owner = format!("{}-w{n}", self.instance);
            tracker.spawn(async move { orch.worker_loop(owner, shutdown).await });
        }
        let orch = Arc::clone(self);
        tracker.spawn(async move { orch.measure_queue(shutdown).await });
    }

    /// Keeps `octollm_queue_depth` current on its own clock: the workers are busiest, and
    /// never idle, exactly when a backlog builds.
    async fn measure_queue(self: Arc<Self>, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(QUEUE_MEASURE_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = shutdown.cancelled() => return,
            }
            match self.store.queue_depth().await {
                Ok(depth) => metrics::gauge!(m::QUEUE_DEPTH).set(depth as f64),
                Err(e) => warn!(error = %e, "cannot measure the queue"),
            }
        }
    }

    async fn worker_loop(self: Arc<Self>, owner: String, shutdown: CancellationToken) {
        let lease = Duration::from_secs(self.config.lease_seconds);
        let idle = Duration::from_millis(self.config.poll_interval_ms);
        let mut failures = 0u32;
        while !shutdown.is_cancelled() {
            match self.store.claim_next(&owner, lease, Utc::now()).await {
                Ok(Some(task)) => {
                    failures = 0;
                    self.process(task, &owner, &shutdown).await;
                }
                Ok(None) => {
                    tokio::select! {
                        () = self.wake.notified() => {}
                        () = tokio::time::sleep(idle) => {}
                        () = shutdown.cancelled() => {}
                    }
                }
                Err(e) => {
                    failures += 1;
                    let wait = Duration::from_millis(200 * u64::from(failures.min(25)));
                    warn!(error = %e, wait_ms = wait.as_millis() as u64, "cannot claim tasks; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = shutdown.cancelled() => {}
                    }
                }
            }
        }
    }

    /// Runs one claimed task to its end, or until cancellation, lease loss or shutdown.
    async fn process(&self, mut task: TaskRecord, owner: &str, shutdown: &CancellationToken) {
        let id = task.id.clone();
        let span = info_span!(
            "task",
            task_id = %id,
            attempt = task.attempts,
            trace_id = tracing::field::Empty
        );
        // The run continues the submitting request's trace, whenever and wherever it runs.
        let run_trace = crate::trace_link::attach(&span, task.trace);
        span.record(
            "trace_id",
            tracing::field::display(run_trace.trace_id_hex()),
        );
        // A task submitted outside any trace (the CLI) has its steps in this run's.
        task.trace.get_or_insert(run_trace);
        async {
            if task.attempts > 1 {
                metrics::counter!(m::LEASE_RESUMPTIONS).increment(1);
                info!("resuming task after an interrupted run");
            }
            let cancel = CancellationToken::new();
            self.running_tasks().insert(id.clone(), cancel.clone());
            let heartbeat = self.heartbeat(id.clone(), owner.to_owned(), cancel.clone());
            let clock = Instant::now();
            let started_at = task.started_at;
            let outcome = match Run::new(self, task, owner.to_owned(), cancel.clone(), shutdown.clone()).await {
                Ok(run) => {
                    let result = tokio::select! {
                        r = run.run() => r,
                        () = heartbeat => Err(Stop::Abandoned),
                    };
                    Some((result, run.usage()))
                }
                Err(e) => {
                    error!(error = %e, "cannot load the task's steps");
                    None
                }
            };
            self.running_tasks().remove(&id);
            cancel.cancel();
            let Some((result, usage)) = outcome else {
                let _ = self.store.release(&id, owner).await;
                return;
            };
            let finish = match result {
                Ok(result) => Some(Finish::Completed(result)),
                Err(Stop::Failed { error, partial }) => Some(Finish::Failed { error, partial }),
                Err(Stop::Abandoned) => {
                    info!("task cancelled or taken over; stopping");
                    None
                }
                Err(Stop::Shutdown) => {
                    info!("shutting down; releasing the lease for another worker");
                    let _ = self.store.release(&id, owner).await;
                    None
                }
                Err(Stop::Store(e)) => {
                    error!(error = %e, "storage failed during the run; releasing the lease");
                    let _ = self.store.release(&id, owner).await;
                    None
                }
            };
            if let Some(finish) = finish {
                let status = finish.status();
                if let Finish::Failed { error, .. } = &finish {
                    info!(error_type = error.kind.as_str(), message = %error.message, "task failed");
                }
                match self.store.finish(&id, owner, finish, usage, Utc::now()).await {
                    Ok(()) => {
                        self.revoke_task_tokens(&id).await;
                        metrics::counter!(m::TASKS_FINISHED, "status" => status.as_str()).increment(1);
                        let wall = started_at.map(|s| (Utc::now() - s).num_milliseconds() as f64 / 1000.0).unwrap_or(clock.elapsed().as_secs_f64());
                        metrics::histogram!(m::TASK_DURATION).record(wall);
                        info!(status = status.as_str(), seconds = wall, "task finished");
                    }
                    Err(e) => warn!(error = %e, "could not record the task's end (cancelled or taken over)"),
                }
            }
        }
        .instrument(span)
        .await;
    }

    /// Extends the lease every third of its length; resolves (ending the run) when the lease
    /// is lost or the task is cancelled.
    async fn heartbeat(&self, id: TaskId, owner: String, cancel: CancellationToken) {
        let lease = Duration::from_secs(self.config.lease_seconds);
        let every = lease / 3;
        loop {
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                () = cancel.cancelled() => return,
            }
            match self.store.heartbeat(&id, &owner, lease, Utc::now()).await {
                Ok(LeaseState::Held) => {}
                Ok(LeaseState::Cancelled) => {
                    info!(task_id = %id, "task cancelled");
                    return;
                }
                Ok(LeaseState::Lost) => {
                    warn!(task_id = %id, "lease lost to another worker");
                    return;
                }
                // A transient storage error: keep working, try again next beat.
                Err(e) => warn!(task_id = %id, error = %e, "heartbeat failed"),
            }
        }
    }
}
