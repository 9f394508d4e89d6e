//! Accepting a task: validate, screen with the reflex layer, redact, store durably, wake a
//! worker. The 202 is only sent after the task is on disk.

use std::collections::BTreeMap;

use chrono::Utc;
use octollm_core::{TaskId, TaskSpec, TaskSubmission, TraceContext, ValidationError};
use octollm_reflex::{Finding, FindingKind, Redactor, ScanOptions};
use octollm_store::{CreateOutcome, NewTask, StoreError, TaskRecord};
use tracing::instrument;

use crate::Orchestrator;
use crate::metrics as m;

#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("invalid task: {0}")]
    Invalid(#[from] ValidationError),
    #[error("the input was blocked as a prompt injection")]
    Blocked {
        field: String,
        matches: Vec<Finding>,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Debug, Clone)]
pub struct Submitted {
    pub task: TaskRecord,
    /// False when an idempotency key returned an earlier task.
    pub created: bool,
}

impl Orchestrator {
    pub async fn submit(&self, submission: TaskSubmission) -> Result<Submitted, SubmitError> {
        self.submit_traced(submission, None, None).await
    }

    /// [`Orchestrator::submit`] from a request in a trace (the task's work continues it) on
    /// behalf of an API key (`owner`, its id: the task is that key's).
    #[instrument(skip_all)]
    pub async fn submit_traced(
        &self,
        submission: TaskSubmission,
        trace: Option<TraceContext>,
        owner: Option<String>,
    ) -> Result<Submitted, SubmitError> {
        let raw_input = self
            .config
            .store_raw_input
            .then(|| serde_json::to_string(&submission).unwrap_or_default());
        let spec = submission.validate(&self.config.default_budget)?;
        let spec = self.screen(spec)?;
        let outcome = self
            .store
            .create_task(NewTask {
                id: TaskId::generate(),
                spec,
                raw_input,
                created_at: Utc::now(),
                trace,
                owner,
            })
            .await?;
        let submitted = match outcome {
            CreateOutcome::Created(task) => {
                metrics::counter!(m::TASKS_SUBMITTED).increment(1);
                self.wake.notify_waiters();
                self.wake.notify_one();
                Submitted {
                    task,
                    created: true,
                }
            }
            CreateOutcome::Existing(task) => Submitted {
                task,
                created: false,
            },
        };
        Ok(submitted)
    }

    /// Blocks injections in any field and redacts PII and secrets from all of them, with
    /// placeholders that are stable across the fields of this one task.
    fn screen(&self, mut spec: TaskSpec) -> Result<TaskSpec, SubmitError> {
        let mut redactor = Redactor::new();
        let options = ScanOptions::default();
        let mut screen_one = |field: &str, text: &str| -> Result<String, SubmitError> {
            let report = self.scanner.scan(text, options);
            for f in &report.findings {
                let kind = match f.kind {
                    FindingKind::Pii => "pii",
                    FindingKind::Secret => "secret",
                    FindingKind::Injection => "injection",
                };
                metrics::counter!(m::REFLEX_DETECTIONS, "kind" => kind, "type" => f.label)
                    .increment(1);
            }
            if report.should_block {
                metrics::counter!(m::TASKS_BLOCKED).increment(1);
                return Err(SubmitError::Blocked {
                    field: field.to_owned(),
                    matches: report.injections().cloned().collect(),
                });
            }
            Ok(if report.pii_detected {
                redactor.redact(text, &report.findings)
            } else {
                text.to_owned()
            })
        };
        spec.goal = screen_one("goal", &spec.goal)?;
        for (i, c) in spec.constraints.iter_mut().enumerate() {
            *c = screen_one(&format!("constraints[{i}]"), c)?;
        }
        for (i, c) in spec.acceptance_criteria.iter_mut().enumerate() {
            *c = screen_one(&format!("acceptance_criteria[{i}]"), c)?;
        }
        let mut context = BTreeMap::new();
        for (key, value) in std::mem::take(&mut spec.context) {
            context.insert(
                key.clone(),
                screen_value(&format!("context.{key}"), value, &mut screen_one)?,
            );
        }
        spec.context = context;
        Ok(spec)
    }
}

/// Screens every string inside a JSON value.
fn screen_value(
    path: &str,
    value: serde_json::Value,
    screen: &mut impl FnMut(&str, &str) -> Result<String, SubmitError>,
) -> Result<serde_json::Value, SubmitError> {
    use serde_json::Value;
    Ok(match value {
        Value::String(s) => Value::String(screen(path, &s)?),
        Value::Array(items) => Value::Array(
            items
                .into_iter()
                .enumerate()
                .map(|(i, v)| screen_value(&format!("{path}[{i}]"), v, screen))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| {
                    let child = format!("{path}.{k}");
                    screen_value(&child, v, screen).map(|v| (k, v))
                })
                .collect::<Result<_, _>>()?,
        ),
        other => other,
    })
}
