//! What units of work produce, typed: the plan, and each arm's answer. The store keeps them
//! as JSON; they are decoded once, where a run loads them, and read by field from then on.

use octollm_arms::coder::CodeResponse;
use octollm_arms::executor::ExecuteResponse;
use octollm_arms::guardian::CheckResponse;
use octollm_arms::judge::ValidateResponse;
use octollm_arms::retriever::SearchResponse;
use octollm_core::plan::Plan;
use octollm_core::{ArmKind, ContentOrigin, UnitKey};

/// A unit's output. Which variant a stored output is follows from its unit and arm.
#[derive(Debug, Clone, PartialEq)]
pub enum UnitOutput {
    Plan(Plan),
    Code(CodeResponse),
    Execution(ExecuteResponse),
    Search(SearchResponse),
    Validation(ValidateResponse),
    Check(CheckResponse),
}

impl UnitOutput {
    /// Reads a stored output: a plan for the plan units, a verdict for validations, else the
    /// answer of the step's arm.
    pub fn decode(
        unit: &UnitKey,
        arm: ArmKind,
        json: serde_json::Value,
    ) -> Result<Self, serde_json::Error> {
        use serde_json::from_value;
        Ok(match (unit, arm) {
            (UnitKey::Plan | UnitKey::Replan, _) => UnitOutput::Plan(from_value(json)?),
            (UnitKey::Validation { .. }, _) | (UnitKey::Step(_), ArmKind::Judge) => {
                UnitOutput::Validation(from_value(json)?)
            }
            (UnitKey::Step(_), ArmKind::Coder) => UnitOutput::Code(from_value(json)?),
            (UnitKey::Step(_), ArmKind::Executor) => UnitOutput::Execution(from_value(json)?),
            (UnitKey::Step(_), ArmKind::Retriever) => UnitOutput::Search(from_value(json)?),
            (UnitKey::Step(_), ArmKind::Guardian) => UnitOutput::Check(from_value(json)?),
            (UnitKey::Step(_), ArmKind::Planner) => {
                return Err(serde::de::Error::custom(
                    "a plan step cannot be the planner's",
                ));
            }
        })
    }

    /// As stored and shown on the wire: the plan, or the arm's answer as it sent it.
    pub fn to_json(&self) -> Result<serde_json::Value, serde_json::Error> {
        match self {
            UnitOutput::Plan(p) => serde_json::to_value(p),
            UnitOutput::Code(c) => serde_json::to_value(c),
            UnitOutput::Execution(e) => serde_json::to_value(e),
            UnitOutput::Search(s) => serde_json::to_value(s),
            UnitOutput::Validation(v) => serde_json::to_value(v),
            UnitOutput::Check(c) => serde_json::to_value(c),
        }
    }

    /// Every text field of the output that came from outside the trusted inputs, with its
    /// origin, for screening in place. The plan is not among them: the planner sees only the
    /// submission and the system's prompt, and grants follow from the plan.
    pub fn untrusted_texts_mut(
        &mut self,
        unit: &UnitKey,
        arm: ArmKind,
    ) -> Vec<(ContentOrigin, &mut String)> {
        let answer = || ContentOrigin::StepOutput {
            unit: unit.clone(),
            arm,
        };
        match self {
            UnitOutput::Plan(_) => Vec::new(),
            UnitOutput::Code(c) => {
                let mut texts = vec![(answer(), &mut c.code), (answer(), &mut c.explanation)];
                if let Some(tests) = c.tests.as_mut() {
                    texts.push((answer(), tests));
                }
                texts.extend(c.warnings.iter_mut().map(|w| (answer(), w)));
                texts
            }
            UnitOutput::Execution(e) => {
                let origin = ContentOrigin::ExecutorOutput { unit: unit.clone() };
                vec![(origin.clone(), &mut e.stdout), (origin, &mut e.stderr)]
            }
            UnitOutput::Search(s) => s
                .results
                .iter_mut()
                .flat_map(|r| {
                    let origin = ContentOrigin::Retrieved {
                        unit: unit.clone(),
                        source: r.source.chars().take(200).collect(),
                    };
                    [(origin.clone(), &mut r.content), (origin, &mut r.source)]
                })
                .collect(),
            UnitOutput::Validation(v) => {
                let mut texts: Vec<(ContentOrigin, &mut String)> = Vec::new();
                for issue in &mut v.issues {
                    texts.push((answer(), &mut issue.message));
                    if let Some(s) = issue.suggestion.as_mut() {
                        texts.push((answer(), s));
                    }
                }
                texts.extend(v.suggestions.iter_mut().map(|s| (answer(), s)));
                texts
            }
            UnitOutput::Check(c) => c
                .sanitized_content
                .as_mut()
                .map(|t| vec![(answer(), t)])
                .unwrap_or_default(),
        }
    }

    /// The code and its language, for code a coder wrote.
    pub fn code(&self) -> Option<(&str, &str)> {
        match self {
            UnitOutput::Code(c) if !c.code.trim().is_empty() => {
                Some((c.code.as_str(), c.language.as_str()))
            }
            _ => None,
        }
    }

    /// The text form: what later steps read and the final answer is made of.
    pub fn text(&self) -> String {
        match self {
            UnitOutput::Plan(_) => String::new(),
            UnitOutput::Code(c) => {
                let mut out = format!("```{}\n{}\n```", c.language, c.code);
                if !c.explanation.is_empty() {
                    out.push('\n');
                    out.push_str(&c.explanation);
                }
                out
            }
            UnitOutput::Execution(e) => {
                let mut out = format!("Ran it (exit code {}).", e.exit_code);
                if !e.stdout.trim().is_empty() {
                    out.push_str(&format!("\nOutput:\n```\n{}\n```", e.stdout.trim_end()));
                }
                if e.exit_code != 0 && !e.stderr.trim().is_empty() {
                    out.push_str(&format!("\nErrors:\n```\n{}\n```", e.stderr.trim_end()));
                }
                out
            }
            UnitOutput::Search(s) => {
                if s.results.is_empty() {
                    return "No matching knowledge found.".into();
                }
                s.results
                    .iter()
                    .map(|r| format!("[{}] {}", r.source, r.content))
                    .collect::<Vec<_>>()
                    .join("\n")
            }
            UnitOutput::Validation(v) => {
                format!("Check {}.", if v.valid { "passed" } else { "failed" })
            }
            UnitOutput::Check(c) => c
                .sanitized_content
                .clone()
                .unwrap_or_else(|| "Checked for private data.".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use octollm_core::{PlanNo, StepId};

    fn step() -> UnitKey {
        UnitKey::step(PlanNo::First, 0, StepId::parse("s1").unwrap())
    }

    #[test]
    fn renders_code_and_runs() {
        let code = serde_json::json!({"success": true, "code": "print(1)", "explanation": "", "language": "python", "confidence": 0.8, "warnings": []});
        let code = UnitOutput::decode(&step(), ArmKind::Coder, code).unwrap();
        assert_eq!(code.text(), "```python\nprint(1)\n```");
        assert_eq!(code.code(), Some(("print(1)", "python")));
        let run = serde_json::json!({"success": true, "exit_code": 0, "stdout": "1\n", "stderr": "", "duration_seconds": 0.1,
            "sandbox_info": {"sandbox": "bubblewrap", "network": false, "timed_out": false, "stdout_truncated": false, "stderr_truncated": false, "killed_by_signal": null, "program": "python3"}});
        let run = UnitOutput::decode(&step(), ArmKind::Executor, run).unwrap();
        assert_eq!(run.text(), "Ran it (exit code 0).\nOutput:\n```\n1\n```");
        assert_eq!(run.code(), None);
    }

    #[test]
    fn what_an_output_is_follows_from_its_unit_and_arm() {
        let plan = serde_json::json!({"steps": [{"step_id": "s1", "description": "d", "arm_id": "coder", "dependencies": [], "input_mapping": {}}]});
        assert!(matches!(
            UnitOutput::decode(&UnitKey::Replan, ArmKind::Planner, plan.clone()).unwrap(),
            UnitOutput::Plan(_)
        ));
        // The same JSON is no coder answer.
        assert!(UnitOutput::decode(&step(), ArmKind::Coder, plan).is_err());
        assert!(UnitOutput::decode(&step(), ArmKind::Planner, serde_json::json!({})).is_err());
    }
}
