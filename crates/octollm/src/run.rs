//! `octollm run "<goal>"`: the main job in one process. Submits the task durably, runs it
//! with live progress on stderr, prints the result and the steps. Exit code 0 only for
//! `completed`.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context as _;
use futures::StreamExt;
use octollm_core::budget::Budget;
use octollm_core::{Principal, TaskStatus, TaskSubmission};
use octollm_http::views::TaskView;
use octollm_orchestrator::Origin;
use octollm_store::{TaskEvent, TaskEventKind};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::compose;
use crate::config::Config;

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// What to achieve (10 to 2000 characters).
    pub goal: String,
    /// An acceptance criterion the judge checks; repeat for more.
    #[arg(long = "criterion")]
    pub criteria: Vec<String>,
    /// A constraint for the planner and coder; repeat for more.
    #[arg(long = "constraint")]
    pub constraints: Vec<String>,
    /// A JSON object file given to the task as context.
    #[arg(long)]
    pub context_file: Option<PathBuf>,
    #[arg(long)]
    pub max_tokens: Option<u64>,
    #[arg(long)]
    pub max_time: Option<u64>,
    #[arg(long)]
    pub max_cost: Option<f64>,
    /// Print the task document as JSON instead of the summary.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(config: Config, args: RunArgs) -> anyhow::Result<ExitCode> {
    let context = match &args.context_file {
        None => None,
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            let value: serde_json::Value = serde_json::from_str(&text)
                .with_context(|| format!("{} is not JSON", path.display()))?;
            match value {
                serde_json::Value::Object(map) => Some(map),
                _ => anyhow::bail!("{} must hold a JSON object", path.display()),
            }
        }
    };
    let budget = (args.max_tokens.is_some() || args.max_time.is_some() || args.max_cost.is_some())
        .then_some(octollm_core::task::BudgetSubmission {
            max_tokens: args.max_tokens,
            max_time_seconds: args.max_time,
            max_cost_dollars: args.max_cost,
        });
    let submission = TaskSubmission {
        goal: args.goal.clone(),
        constraints: args.constraints.clone(),
        acceptance_criteria: args.criteria.clone(),
        context,
        budget,
        priority: None,
        idempotency_key: None,
    };
    // Refuse bad input before loading a model.
    submission
        .clone()
        .validate(&Budget::default())
        .map_err(|e| anyhow::anyhow!("{e}"))?;

    let clock = Instant::now();
    let mut err = std::io::stderr().lock();
    let live = std::io::stderr().is_terminal() && !args.json;
    if !args.json {
        writeln!(err, "loading models…")?;
    }
    drop(err);
    let system = compose::build(&config).await?;
    let orchestrator = system.orchestrator.clone();
    let submitted = orchestrator
        .submit(submission, Origin::local())
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let id = submitted.task.id.clone();
    let principal = Principal::unauthenticated();
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    orchestrator.spawn_workers(&tracker, shutdown.clone());
    let ctrl_c = shutdown.clone();
    tracker.spawn(async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => ctrl_c.cancel(),
            () = ctrl_c.cancelled() => {}
        }
    });

    // The stream replays the task's events from its start and ends after its final status.
    let mut events = Box::pin(orchestrator.events(&principal, &id, 0).await?);
    loop {
        let event = tokio::select! {
            e = events.next() => e,
            () = shutdown.cancelled() => break,
        };
        let Some(event) = event else { break };
        if !args.json {
            progress(&event, clock, live)?;
        }
    }
    shutdown.cancel();
    tracker.close();
    tracker.wait().await;

    let detail = orchestrator.task(&principal, &id).await?;
    let task = &detail.task;
    let view = TaskView::detailed(&detail);
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&view)?)?;
    } else {
        summary(&mut out, &view)?;
        if !task.status.is_terminal() {
            writeln!(
                out,
                "interrupted; the task stays queued and resumes on the next `octollm serve` (task {id})"
            )?;
        }
    }
    Ok(if task.status == TaskStatus::Completed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn progress(event: &TaskEvent, clock: Instant, _live: bool) -> std::io::Result<()> {
    let t = clock.elapsed().as_secs_f64();
    let d = &event.data;
    let s = |k: &str| d.get(k).and_then(|v| v.as_str()).unwrap_or("").to_owned();
    let line = match event.kind {
        TaskEventKind::Status => format!("status {}", s("status")),
        TaskEventKind::Phase => format!("phase  {}", s("phase")),
        TaskEventKind::Plan => {
            let steps = d
                .get("steps")
                .and_then(|v| v.as_array())
                .cloned()
                .unwrap_or_default();
            let list: Vec<String> = steps
                .iter()
                .map(|st| {
                    format!(
                        "{}→{}",
                        st.get("step_id").and_then(|v| v.as_str()).unwrap_or("?"),
                        st.get("arm_id").and_then(|v| v.as_str()).unwrap_or("?")
                    )
                })
                .collect();
            format!("plan   {} steps: {}", steps.len(), list.join(", "))
        }
        TaskEventKind::StepStarted => format!(
            "step   {} on {} (attempt {})",
            s("step_id"),
            s("arm_id"),
            d.get("attempt").and_then(|v| v.as_u64()).unwrap_or(1)
        ),
        TaskEventKind::StepCompleted => format!(
            "done   {} on {} in {} ms, {} tokens",
            s("step_id"),
            s("arm_id"),
            d.get("duration_ms").and_then(|v| v.as_u64()).unwrap_or(0),
            d.get("tokens").and_then(|v| v.as_u64()).unwrap_or(0)
        ),
        TaskEventKind::StepFailed => {
            format!("FAILED {} on {}: {}", s("step_id"), s("arm_id"), s("error"))
        }
        TaskEventKind::Screening => format!(
            "screen {} on {}: {} ({})",
            s("step_id"),
            s("arm_id"),
            d.get("types")
                .and_then(|v| v.as_array())
                .map(|t| t
                    .iter()
                    .filter_map(|x| x.as_str())
                    .collect::<Vec<_>>()
                    .join(", "))
                .unwrap_or_default(),
            s("action")
        ),
    };
    writeln!(std::io::stderr().lock(), "[{t:6.1}s] {line}")
}

fn summary(out: &mut impl Write, view: &TaskView) -> std::io::Result<()> {
    writeln!(
        out,
        "task {}  status {}",
        view.task_id,
        serde_json::to_value(view.status)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    )?;
    if let Some(steps) = &view.steps {
        writeln!(out, "\nsteps:")?;
        for s in steps {
            writeln!(
                out,
                "  {:<12} {:<9} {:<9} {:>7} ms {:>6} tokens  ${:.6}{}",
                s.step_id,
                s.arm_id.id(),
                if s.status == octollm_store::StepStatus::Completed {
                    "completed"
                } else {
                    "failed"
                },
                s.provenance.duration_ms,
                s.provenance.tokens,
                s.provenance.cost,
                s.description
                    .as_ref()
                    .map(|d| format!("  {}", d.chars().take(60).collect::<String>()))
                    .unwrap_or_default()
            )?;
        }
    }
    let m = &view.metadata;
    writeln!(
        out,
        "\narms used: {}  tokens: {}  cost: ${:.6}  time: {:.2} s",
        m.arms_used
            .iter()
            .map(|a| a.id())
            .collect::<Vec<_>>()
            .join(", "),
        m.tokens_used,
        m.cost_dollars,
        m.duration_seconds
    )?;
    if let Some(result) = &view.result {
        let heading = if result.validation_passed {
            "result"
        } else {
            "partial result, not validated"
        };
        writeln!(
            out,
            "\n{heading} (confidence {:.2}):\n{}",
            result.confidence, result.output
        )?;
    }
    if let Some(error) = &view.error {
        writeln!(out, "\nerror {}: {}", error.kind.as_str(), error.message)?;
        if let Some(details) = &error.details {
            writeln!(out, "{details}")?;
        }
    }
    Ok(())
}
