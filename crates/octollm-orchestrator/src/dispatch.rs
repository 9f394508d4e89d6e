//! Turns a plan step plus its inputs into a call on the right arm, and the arm's answer into
//! the step's typed output.

use octollm_arms::coder::{CodeOperation, CodeRequest};
use octollm_arms::executor::ExecuteRequest;
use octollm_arms::guardian::{CheckRequest, CheckType};
use octollm_arms::judge::{Check, CodeRun, ValidateRequest};
use octollm_arms::retriever::{SearchMethod, SearchRequest};
use octollm_arms::{ArmError, ArmOutcome, Arms, CallContext, Operation};
use octollm_core::budget::Usage;
use octollm_core::plan::{PlanStep, backticked_command};
use octollm_core::token::{ExecutorGrant, PYTHON_PROGRAM};
use octollm_core::{ArmKind, TaskSpec};

use crate::units::UnitOutput;

/// What a unit produced, with what it cost and who answered.
#[derive(Debug, Clone)]
pub struct Produced {
    pub output: UnitOutput,
    pub usage: Usage,
    pub model: Option<String>,
    pub instance: String,
}

impl Produced {
    pub fn of<T>(outcome: ArmOutcome<T>, wrap: impl FnOnce(T) -> UnitOutput) -> Self {
        Self {
            output: wrap(outcome.response),
            usage: outcome.usage,
            model: outcome.model,
            instance: outcome.instance,
        }
    }
}

/// Everything a step needs besides its own definition.
pub struct StepInput<'a> {
    pub spec: &'a TaskSpec,
    /// Dependency outputs by input name, in the step's dependency order.
    pub inputs: Vec<(String, UnitOutput)>,
    /// In a repair round, this step's own output in the round before (the code to fix).
    pub previous: Option<UnitOutput>,
    /// The judge's issues, in a repair round.
    pub feedback: Option<&'a str>,
}

impl StepInput<'_> {
    fn inputs_text(&self) -> String {
        self.inputs
            .iter()
            .map(|(_, output)| output.text())
            .filter(|t| !t.trim().is_empty())
            .collect::<Vec<_>>()
            .join("\n\n")
    }

    /// The code of the dependency listed last that wrote some, with its language.
    fn dependency_code(&self) -> Option<(String, String)> {
        self.inputs
            .iter()
            .rev()
            .find_map(|(_, output)| output.code())
            .map(|(code, language)| (code.to_owned(), language.to_owned()))
    }
}

/// The language a goal asks for; Python unless another is named.
pub fn language_of(goal: &str) -> &'static str {
    let g = goal.to_ascii_lowercase();
    for (needle, lang) in [
        ("rust", "rust"),
        ("javascript", "javascript"),
        ("typescript", "typescript"),
        (" go ", "go"),
        ("golang", "go"),
        ("bash", "bash"),
        ("shell script", "bash"),
        ("java ", "java"),
        ("sql", "sql"),
    ] {
        if g.contains(needle) {
            return lang;
        }
    }
    "python"
}

/// For criteria that say the code must run: runs the output's code through the executor arm
/// (granted `python3`, no network — the same grant, token, sandbox and audit as a step) and
/// returns what the judge needs. `None` when no criterion asks for a run.
pub async fn run_for_judge(
    arms: &Arms,
    output: &str,
    criteria: &[String],
    ctx: &CallContext,
) -> Result<Option<CodeRun>, ArmError> {
    if !criteria
        .iter()
        .any(|c| octollm_arms::judge::classify(c) == Check::Runs)
    {
        return Ok(None);
    }
    let (code, _) = octollm_arms::syntax::extract_code(output);
    let mut ctx = ctx.clone();
    ctx.grant = Some(ExecutorGrant {
        programs: vec![PYTHON_PROGRAM.to_owned()],
        network: false,
    });
    match arms
        .call::<octollm_arms::Execute>(ExecuteRequest::python(code), ctx)
        .await
    {
        Ok(out) => Ok(Some(CodeRun::of(&out.response))),
        // A refusal is the judge's finding (the code cannot run), not the unit's failure.
        Err(ArmError::Refused(why) | ArmError::InvalidRequest(why)) => {
            Ok(Some(CodeRun::refused(&why)))
        }
        Err(e) => Err(e),
    }
}

async fn call<O: Operation>(
    arms: &Arms,
    request: O::Request,
    ctx: CallContext,
    wrap: impl FnOnce(O::Response) -> UnitOutput,
) -> Result<Produced, ArmError> {
    Ok(Produced::of(arms.call::<O>(request, ctx).await?, wrap))
}

pub async fn dispatch(
    arms: &Arms,
    step: &PlanStep,
    input: StepInput<'_>,
    ctx: CallContext,
) -> Result<Produced, ArmError> {
    match step.arm_id {
        ArmKind::Coder => {
            let mut prompt = format!("{}\nOverall goal: {}", step.description, input.spec.goal);
            for c in &input.spec.constraints {
                prompt.push_str(&format!("\nConstraint: {c}"));
            }
            // A repair fixes the step's own earlier code; otherwise code from a dependency
            // is the code to work on, and anything else is context.
            let existing = input
                .previous
                .as_ref()
                .and_then(UnitOutput::code)
                .map(|(c, l)| (c.to_owned(), l.to_owned()))
                .or_else(|| input.dependency_code());
            let context = input.inputs_text();
            if !context.is_empty() && existing.is_none() {
                prompt.push_str(&format!("\nUseful context:\n{context}"));
            }
            if let Some(feedback) = input.feedback {
                prompt.push_str(&format!("\nA reviewer found these problems in the previous attempt; fix them:\n{feedback}"));
            }
            let request = CodeRequest {
                operation: if existing.is_some() && input.feedback.is_some() {
                    CodeOperation::Debug
                } else {
                    CodeOperation::Generate
                },
                prompt: prompt.chars().take(5000).collect(),
                language: existing
                    .as_ref()
                    .map(|(_, l)| l.clone())
                    .unwrap_or_else(|| language_of(&input.spec.goal).to_owned()),
                existing_code: existing.map(|(c, _)| c),
                style_guide: None,
                include_tests: false,
                include_docstrings: true,
            };
            call::<octollm_arms::Code>(arms, request, ctx, UnitOutput::Code).await
        }
        ArmKind::Executor => {
            let request = if let Some((code, language)) = input.dependency_code() {
                if !matches!(language.as_str(), "python" | "python3" | "py") {
                    return Err(ArmError::InvalidRequest(format!(
                        "the executor runs Python code; the code is {language}"
                    )));
                }
                ExecuteRequest::python(code)
            } else if let Some(argv) = backticked_command(&step.description) {
                let mut argv = argv.into_iter();
                let program = argv.next().unwrap_or_default();
                ExecuteRequest::shell(program, argv.collect())
            } else {
                return Err(ArmError::InvalidRequest(
                    "nothing to execute: no code from an earlier step and no `command` in the step description".into(),
                ));
            };
            call::<octollm_arms::Execute>(arms, request, ctx, UnitOutput::Execution).await
        }
        ArmKind::Retriever => {
            let request = SearchRequest {
                query: step.description.chars().take(500).collect(),
                method: SearchMethod::Hybrid,
                max_results: 5,
                min_score: 0.0,
                filters: None,
            };
            call::<octollm_arms::Search>(arms, request, ctx, UnitOutput::Search).await
        }
        ArmKind::Judge => {
            let mut criteria = input.spec.acceptance_criteria.clone();
            if let Some(expected) = &step.expected_output {
                criteria.push(expected.clone());
            }
            let output = input.inputs_text();
            let run = run_for_judge(arms, &output, &criteria, &ctx).await?;
            let request = ValidateRequest {
                output,
                acceptance_criteria: criteria,
                output_type: None,
                context: None,
                run,
            };
            call::<octollm_arms::Validate>(arms, request, ctx, UnitOutput::Validation).await
        }
        ArmKind::Guardian => {
            let content = if input.inputs.is_empty() {
                input.spec.goal.clone()
            } else {
                input.inputs_text()
            };
            let request = CheckRequest {
                content,
                check_types: vec![CheckType::Pii, CheckType::Injection],
                sanitize: true,
            };
            call::<octollm_arms::Check>(arms, request, ctx, UnitOutput::Check).await
        }
        ArmKind::Planner => Err(ArmError::InvalidRequest(
            "the planner is not a plan step".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_come_only_from_backticks() {
        assert_eq!(
            backticked_command("run `ls -la /workspace` now"),
            Some(vec!["ls".into(), "-la".into(), "/workspace".into()])
        );
        assert_eq!(backticked_command("run ls"), None);
        assert_eq!(backticked_command("run `  `"), None);
    }

    #[test]
    fn language_defaults_to_python() {
        assert_eq!(language_of("Write a function that adds"), "python");
        assert_eq!(language_of("Write a Rust function"), "rust");
    }
}
