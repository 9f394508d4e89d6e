//! Accepting a task: validate, screen with the reflex layer, redact, store durably, wake a
//! worker. The 202 is only sent after the task is on disk.

use std::collections::BTreeMap;

use chrono::Utc;
use octollm_core::{Principal, TaskId, TaskSpec, TaskSubmission, TraceContext};
use octollm_reflex::{FindingKind, Redactor, ScanOptions};
use octollm_store::{AuditEntry, AuditKind, CreateOutcome, NewTask, TaskRecord};
use tracing::instrument;

use crate::Orchestrator;
use crate::error::OrchestratorError;
use crate::metrics as m;

#[derive(Debug, Clone)]
pub struct Submitted {
    pub task: TaskRecord,
    /// False when an idempotency key returned an earlier task.
    pub created: bool,
}

/// Who submits, and from which request: the task belongs to the principal's key and its
/// work continues the request's trace.
#[derive(Debug, Clone)]
pub struct Origin<'a> {
    pub principal: &'a Principal,
    pub trace: Option<TraceContext>,
    pub request_id: Option<String>,
}

impl Origin<'static> {
    /// A submission from this process with no key and no request (`octollm run`, tests).
    pub fn local() -> Self {
        static LOCAL: std::sync::LazyLock<Principal> =
            std::sync::LazyLock::new(Principal::unauthenticated);
        Origin {
            principal: &LOCAL,
            trace: None,
            request_id: None,
        }
    }
}

impl Orchestrator {
    /// Validates, screens and stores a task; wakes a worker. A blocked input is audited
    /// (the field and the detector types, never the text).
    #[instrument(skip_all)]
    pub async fn submit(
        &self,
        submission: TaskSubmission,
        origin: Origin<'_>,
    ) -> Result<Submitted, OrchestratorError> {
        let raw_input = self
            .config
            .store_raw_input
            .then(|| serde_json::to_string(&submission).unwrap_or_default());
        let spec = submission.validate(&self.config.default_budget)?;
        let spec = match self.screen(spec) {
            Ok(spec) => spec,
            Err(OrchestratorError::Blocked { field, matches }) => {
                let types: Vec<&str> = matches.iter().map(|m| m.label).collect();
                let entry = AuditEntry {
                    at: Utc::now(),
                    kind: AuditKind::InputBlocked,
                    request_id: origin.request_id.clone(),
                    key_id: origin.principal.key_id.clone(),
                    detail: serde_json::json!({"field": field, "types": types}),
                };
                if let Err(e) = self.audit.record(&entry).await {
                    tracing::warn!(error = %e, "audit entry not written");
                }
                return Err(OrchestratorError::Blocked { field, matches });
            }
            Err(e) => return Err(e),
        };
        let outcome = self
            .store
            .create_task(NewTask {
                id: TaskId::generate(),
                spec,
                raw_input,
                created_at: Utc::now(),
                trace: origin.trace,
                owner: origin.principal.owner().map(str::to_owned),
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
    fn screen(&self, mut spec: TaskSpec) -> Result<TaskSpec, OrchestratorError> {
        let mut redactor = Redactor::new();
        let options = ScanOptions::default();
        let mut screen_one = |field: &str, text: &str| -> Result<String, OrchestratorError> {
            let report = self.scanner.scan(text, options);
            for f in &report.findings {
                let kind = match f.kind {
                    FindingKind::Pii => "pii",
                    FindingKind::Secret => "secret",
                    FindingKind::Injection => "injection",
                    FindingKind::Classifier => "classifier",
                };
                metrics::counter!(m::REFLEX_DETECTIONS, "kind" => kind, "type" => f.label)
                    .increment(1);
            }
            if report.should_block {
                metrics::counter!(m::TASKS_BLOCKED).increment(1);
                return Err(OrchestratorError::Blocked {
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
    screen: &mut impl FnMut(&str, &str) -> Result<String, OrchestratorError>,
) -> Result<serde_json::Value, OrchestratorError> {
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
