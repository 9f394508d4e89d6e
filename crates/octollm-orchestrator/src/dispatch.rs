//! Turns a plan step plus its inputs into a call on the right arm, and an arm's answer into
//! the step's stored output and its text form for later steps and synthesis.

use std::collections::BTreeMap;

use octollm_arms::coder::{CodeOperation, CodeRequest, CodeResponse};
use octollm_arms::executor::{CommandType, ExecuteRequest, ExecuteResponse};
use octollm_arms::guardian::{CheckRequest, CheckType};
use octollm_arms::judge::ValidateRequest;
use octollm_arms::retriever::{SearchMethod, SearchRequest};
use octollm_arms::{ArmError, Arms, CallContext};
use octollm_core::budget::Usage;
use octollm_core::plan::PlanStep;
use octollm_core::{ArmKind, TaskSpec};

/// What a step produced.
#[derive(Debug, Clone)]
pub struct StepOutput {
    pub value: serde_json::Value,
    pub usage: Usage,
    pub model: Option<String>,
}

/// Everything a step needs besides its own definition.
pub struct StepInput<'a> {
    pub spec: &'a TaskSpec,
    /// Dependency outputs by input name.
    pub inputs: BTreeMap<String, serde_json::Value>,
    /// The judge's issues, in a repair round.
    pub feedback: Option<&'a str>,
}

fn to_value<T: serde::Serialize>(v: &T) -> Result<serde_json::Value, ArmError> {
    serde_json::to_value(v)
        .map_err(|e| ArmError::Internal(format!("cannot serialise arm output: {e}")))
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

/// The text form of a step output, used as input to later steps and in the final answer.
pub fn render(arm: ArmKind, value: &serde_json::Value) -> String {
    let s = |k: &str| {
        value
            .get(k)
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_owned()
    };
    match arm {
        ArmKind::Coder => {
            let mut out = format!("```{}\n{}\n```", s("language"), s("code"));
            let explanation = s("explanation");
            if !explanation.is_empty() {
                out.push('\n');
                out.push_str(&explanation);
            }
            out
        }
        ArmKind::Executor => {
            let code = value
                .get("exit_code")
                .and_then(|v| v.as_i64())
                .unwrap_or(-1);
            let mut out = format!("Ran it (exit code {code}).");
            let stdout = s("stdout");
            if !stdout.trim().is_empty() {
                out.push_str(&format!("\nOutput:\n```\n{}\n```", stdout.trim_end()));
            }
            let stderr = s("stderr");
            if code != 0 && !stderr.trim().is_empty() {
                out.push_str(&format!("\nErrors:\n```\n{}\n```", stderr.trim_end()));
            }
            out
        }
        ArmKind::Retriever => {
            let results = value
                .get("results")
                .and_then(|r| r.as_array())
                .cloned()
                .unwrap_or_default();
            if results.is_empty() {
                return "No matching knowledge found.".into();
            }
            results
                .iter()
                .map(|r| {
                    format!(
                        "[{}] {}",
                        r.get("source").and_then(|v| v.as_str()).unwrap_or("?"),
                        r.get("content")
                            .and_then(|v| v.as_str())
                            .unwrap_or_default()
                    )
                })
                .collect::<Vec<_>>()
                .join("\n")
        }
        ArmKind::Judge => {
            let valid = value
                .get("valid")
                .and_then(|v| v.as_bool())
                .unwrap_or(false);
            format!("Check {}.", if valid { "passed" } else { "failed" })
        }
        ArmKind::Guardian => value
            .get("sanitized_content")
            .and_then(|v| v.as_str())
            .map(str::to_owned)
            .unwrap_or_else(|| "Checked for private data.".into()),
        ArmKind::Planner => String::new(),
    }
}

fn inputs_text(input: &StepInput<'_>, arms_of: &BTreeMap<String, ArmKind>) -> String {
    input
        .inputs
        .iter()
        .map(|(name, v)| render(arms_of.get(name).copied().unwrap_or(ArmKind::Coder), v))
        .collect::<Vec<_>>()
        .join("\n\n")
}

/// The latest code among the inputs, with its language.
fn code_input(input: &StepInput<'_>) -> Option<(String, String)> {
    input.inputs.values().rev().find_map(|v| {
        let code = v.get("code")?.as_str()?;
        let language = v
            .get("language")
            .and_then(|l| l.as_str())
            .unwrap_or("python");
        (!code.trim().is_empty()).then(|| (code.to_owned(), language.to_owned()))
    })
}

/// `run \`ls -la\`` → the argv in backticks, split on whitespace (never a shell).
fn backticked_command(description: &str) -> Option<Vec<String>> {
    let start = description.find('`')?;
    let rest = &description[start + 1..];
    let end = rest.find('`')?;
    let argv: Vec<String> = rest[..end].split_whitespace().map(str::to_owned).collect();
    (!argv.is_empty()).then_some(argv)
}

pub async fn dispatch(
    arms: &Arms,
    step: &PlanStep,
    input: StepInput<'_>,
    arms_of: &BTreeMap<String, ArmKind>,
    ctx: CallContext,
) -> Result<StepOutput, ArmError> {
    match step.arm_id {
        ArmKind::Coder => {
            let mut prompt = format!("{}\nOverall goal: {}", step.description, input.spec.goal);
            for c in &input.spec.constraints {
                prompt.push_str(&format!("\nConstraint: {c}"));
            }
            let context = inputs_text(&input, arms_of);
            let existing = code_input(&input);
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
            let out = arms.coder.code(request, ctx).await?;
            Ok(StepOutput {
                value: to_value::<CodeResponse>(&out.response)?,
                usage: out.usage,
                model: out.model,
            })
        }
        ArmKind::Executor => {
            let request = if let Some((code, language)) = code_input(&input) {
                if !matches!(language.as_str(), "python" | "python3" | "py") {
                    return Err(ArmError::InvalidRequest(format!(
                        "the executor runs Python code; the code is {language}"
                    )));
                }
                ExecuteRequest {
                    command: code,
                    command_type: CommandType::Python,
                    args: Vec::new(),
                    env: BTreeMap::new(),
                    timeout_seconds: 30,
                    allow_network: false,
                    files: BTreeMap::new(),
                }
            } else if let Some(argv) = backticked_command(&step.description) {
                let mut argv = argv.into_iter();
                let program = argv.next().unwrap_or_default();
                ExecuteRequest {
                    command: program,
                    command_type: CommandType::Shell,
                    args: argv.collect(),
                    env: BTreeMap::new(),
                    timeout_seconds: 30,
                    allow_network: false,
                    files: BTreeMap::new(),
                }
            } else {
                return Err(ArmError::InvalidRequest(
                    "nothing to execute: no code from an earlier step and no `command` in the step description".into(),
                ));
            };
            let out = arms.executor.execute(request, ctx).await?;
            Ok(StepOutput {
                value: to_value::<ExecuteResponse>(&out.response)?,
                usage: out.usage,
                model: None,
            })
        }
        ArmKind::Retriever => {
            let query: String = step.description.chars().take(500).collect();
            let request = SearchRequest {
                query,
                method: SearchMethod::Hybrid,
                max_results: 5,
                min_score: 0.0,
                filters: None,
            };
            let out = arms.retriever.search(request, ctx).await?;
            Ok(StepOutput {
                value: to_value(&out.response)?,
                usage: out.usage,
                model: None,
            })
        }
        ArmKind::Judge => {
            let mut criteria = input.spec.acceptance_criteria.clone();
            if let Some(expected) = &step.expected_output {
                criteria.push(expected.clone());
            }
            let request = ValidateRequest {
                output: inputs_text(&input, arms_of),
                acceptance_criteria: criteria,
                output_type: None,
                context: None,
            };
            let out = arms.judge.validate(request, ctx).await?;
            Ok(StepOutput {
                value: to_value(&out.response)?,
                usage: out.usage,
                model: out.model,
            })
        }
        ArmKind::Guardian => {
            let content = if input.inputs.is_empty() {
                input.spec.goal.clone()
            } else {
                inputs_text(&input, arms_of)
            };
            let request = CheckRequest {
                content,
                check_types: vec![CheckType::Pii, CheckType::Injection],
                sanitize: true,
            };
            let out = arms.guardian.check(request, ctx).await?;
            Ok(StepOutput {
                value: to_value(&out.response)?,
                usage: out.usage,
                model: None,
            })
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
    fn renders_code_and_runs() {
        let code = serde_json::json!({"language": "python", "code": "print(1)", "explanation": ""});
        assert_eq!(render(ArmKind::Coder, &code), "```python\nprint(1)\n```");
        let run = serde_json::json!({"exit_code": 0, "stdout": "1\n", "stderr": ""});
        assert_eq!(
            render(ArmKind::Executor, &run),
            "Ran it (exit code 0).\nOutput:\n```\n1\n```"
        );
    }

    #[test]
    fn language_defaults_to_python() {
        assert_eq!(language_of("Write a function that adds"), "python");
        assert_eq!(language_of("Write a Rust function"), "rust");
    }
}
