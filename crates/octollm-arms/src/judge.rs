//! The judge arm: checks output against acceptance criteria. Deterministic checks first
//! ("must contain", JSON, code syntax, "runs without error" from the run its caller made);
//! every criterion no rule understands gets one LLM yes/no verdict with a reason.
//! `valid` = no critical or high issue and no failed criterion.
//!
//! The judge never runs code itself: whoever asks it (the orchestrator) runs the output's code
//! through the executor arm — the same grant, token, sandbox and audit as any step — and
//! passes the result in [`ValidateRequest::run`].

use std::sync::OnceLock;

use async_trait::async_trait;
use octollm_llm::{CompletionRequest, Message, MeteredLlm};
use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::Validate;
use crate::context::{ArmError, ArmOutcome, CallContext};
use crate::contract::{ArmStatus, Handler, Health};
use crate::syntax;

/// `POST /validate`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ValidateRequest {
    pub output: String,
    #[serde(default)]
    pub acceptance_criteria: Vec<String>,
    #[serde(default)]
    pub output_type: Option<String>,
    #[serde(default)]
    pub context: Option<serde_json::Value>,
    /// The result of running the output's code, for criteria that say it must run; the
    /// caller runs it through the executor arm. Without it such a criterion fails as not run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<CodeRun>,
}

/// What running an output's code did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CodeRun {
    pub success: bool,
    #[serde(deserialize_with = "octollm_core::wire::whole")]
    pub exit_code: i32,
    /// The end of stderr (or why it could not run), at most 300 characters.
    #[serde(default)]
    pub error_tail: String,
}

impl CodeRun {
    /// From an executor's answer.
    pub fn of(response: &crate::executor::ExecuteResponse) -> Self {
        Self {
            success: response.success,
            exit_code: response.exit_code,
            error_tail: tail(&response.stderr, 300),
        }
    }

    /// A run the executor refused or could not start.
    pub fn refused(why: &str) -> Self {
        Self {
            success: false,
            exit_code: -1,
            error_tail: tail(why, 300),
        }
    }
}

fn tail(text: &str, chars: usize) -> String {
    let n = text.chars().count();
    text.chars()
        .skip(n.saturating_sub(chars))
        .collect::<String>()
        .trim()
        .to_owned()
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum IssueSeverity {
    Low,
    Medium,
    High,
    Critical,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ValidationIssue {
    pub severity: IssueSeverity,
    pub category: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suggestion: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ValidateResponse {
    pub valid: bool,
    pub confidence: f64,
    pub issues: Vec<ValidationIssue>,
    pub passed_criteria: Vec<String>,
    pub failed_criteria: Vec<String>,
    pub quality_score: f64,
    pub suggestions: Vec<String>,
}

/// How one criterion is checked.
#[derive(Debug, Clone, PartialEq)]
pub enum Check {
    Contains { needle: String, negated: bool },
    Json,
    PythonSyntax,
    Runs,
    Llm,
}

type Rule = (Regex, fn(&regex::Captures<'_>) -> Check);

fn rules() -> &'static [Rule] {
    static RULES: OnceLock<Vec<Rule>> = OnceLock::new();
    RULES.get_or_init(|| {
        let r = |re: &str, f: fn(&regex::Captures<'_>) -> Check| Regex::new(re).ok().map(|re| (re, f));
        [
            r(r#"(?i)^(?:the\s+)?(?:output|result|answer|code|response)?\s*(?:must|should|has to|needs to)?\s*(not\s+|never\s+)?(?:contains?|includes?|mentions?)\s+(?:the\s+(?:word|text|string|phrase)\s+)?["'`“]([^"'`”]+)["'`”]\s*\.?$"#,
              |c| Check::Contains { needle: c.get(2).map(|m| m.as_str().to_owned()).unwrap_or_default(), negated: c.get(1).is_some() }),
            r(r"(?i)\b(?:valid json|is json|a json (?:object|document))\b", |_| Check::Json),
            r(r"(?i)\b(?:valid python|python syntax|syntactically (?:valid|correct) python|python code that (?:compiles|parses))\b", |_| Check::PythonSyntax),
            r(r"(?i)\b(?:runs? without (?:an? )?errors?|tests? pass(?:es)?|exits? (?:with )?(?:code |status )?0|executes? successfully)\b", |_| Check::Runs),
        ]
        .into_iter()
        .flatten()
        .collect()
    })
}

pub fn classify(criterion: &str) -> Check {
    let criterion = criterion.trim();
    rules()
        .iter()
        .find_map(|(re, make)| re.captures(criterion).map(|c| make(&c)))
        .unwrap_or(Check::Llm)
}

const VERDICT_GRAMMAR: &str =
    r#"root ::= "{\"verdict\":\"" ("yes" | "no") "\",\"reason\":\"" [^"\\\n]{0,200} "\"}""#;

#[derive(Deserialize)]
struct Verdict {
    verdict: String,
    #[serde(default)]
    reason: String,
}

pub struct Judge {
    llm: MeteredLlm,
    max_tokens: u32,
}

impl Judge {
    pub fn new(llm: MeteredLlm) -> Self {
        Self {
            llm,
            max_tokens: 96,
        }
    }

    /// A criterion that says the code must run, from the run the caller made.
    fn ran(run: Option<&CodeRun>) -> Result<(), String> {
        match run {
            Some(r) if r.success => Ok(()),
            Some(r) => Err(format!("exit code {}: {}", r.exit_code, r.error_tail)),
            None => Err(
                "the code was not run: the judge runs no code; its caller passes the result of running it through the executor arm"
                    .into(),
            ),
        }
    }

    async fn ask(
        &self,
        output: &str,
        criterion: &str,
        ctx: &mut CallContext,
    ) -> Result<(bool, String), ArmError> {
        let excerpt: String = output.chars().take(6000).collect();
        let request = CompletionRequest::new(
            "judge.criterion",
            vec![
                Message::system("You check whether an output meets one acceptance criterion. Answer JSON: {\"verdict\":\"yes\"|\"no\",\"reason\":\"...\"}."),
                Message::user(format!("Criterion: {criterion}\n\nOutput:\n{excerpt}")),
            ],
            self.max_tokens,
        )
        .json(
            serde_json::json!({"type": "object", "required": ["verdict", "reason"], "properties": {"verdict": {"enum": ["yes", "no"]}, "reason": {"type": "string"}}}),
            Some(VERDICT_GRAMMAR.to_owned()),
        );
        let completion = self
            .llm
            .complete(request, &mut ctx.budget)
            .await
            .map_err(|e| ArmError::from_metered(e, ctx.budget.used))?;
        let verdict: Verdict =
            serde_json::from_str(completion.text.trim()).map_err(|e| ArmError::InvalidOutput {
                message: format!("the verdict is not valid JSON: {e}"),
                usage: ctx.budget.used,
            })?;
        Ok((
            verdict.verdict.trim().eq_ignore_ascii_case("yes"),
            verdict.reason,
        ))
    }
}

#[async_trait]
impl Handler<Validate> for Judge {
    fn status(&self) -> ArmStatus {
        ArmStatus::in_process(Health::Healthy)
    }

    async fn handle(
        &self,
        request: ValidateRequest,
        mut ctx: CallContext,
    ) -> Result<ArmOutcome<ValidateResponse>, ArmError> {
        let mut issues = Vec::new();
        let mut passed = Vec::new();
        let mut failed = Vec::new();
        let mut used_llm = false;
        let mut model = None;
        if request.output.trim().is_empty() {
            issues.push(ValidationIssue {
                severity: IssueSeverity::High,
                category: "empty_output".into(),
                message: "the output is empty".into(),
                location: None,
                suggestion: Some("produce an answer before validation".into()),
            });
        }
        for criterion in &request.acceptance_criteria {
            let check = classify(criterion);
            let verdict: Result<(), String> = match &check {
                Check::Contains { needle, negated } => {
                    let found = request
                        .output
                        .to_lowercase()
                        .contains(&needle.to_lowercase());
                    match (found, negated) {
                        (true, false) | (false, true) => Ok(()),
                        (false, false) => Err(format!("the output does not contain {needle:?}")),
                        (true, true) => Err(format!("the output contains {needle:?}")),
                    }
                }
                Check::Json => serde_json::from_str::<serde_json::Value>(
                    syntax::extract_code(&request.output).0.trim(),
                )
                .map(|_| ())
                .map_err(|e| format!("the output is not valid JSON: {e}")),
                Check::PythonSyntax => {
                    match syntax::check("python", &syntax::extract_code(&request.output).0).await {
                        Some(r) => r.map_err(|e| format!("python syntax error: {e}")),
                        None => Err("no python checker on this machine".into()),
                    }
                }
                Check::Runs => Self::ran(request.run.as_ref()),
                Check::Llm => {
                    used_llm = true;
                    model = Some(self.llm.model().to_owned());
                    let (yes, reason) = self.ask(&request.output, criterion, &mut ctx).await?;
                    if yes {
                        Ok(())
                    } else {
                        Err(if reason.is_empty() {
                            "the judge model said no".into()
                        } else {
                            reason
                        })
                    }
                }
            };
            match verdict {
                Ok(()) => passed.push(criterion.clone()),
                Err(message) => {
                    issues.push(ValidationIssue {
                        severity: IssueSeverity::High,
                        category: "acceptance_criterion".into(),
                        message: format!("{criterion}: {message}"),
                        location: None,
                        suggestion: Some(format!(
                            "revise the output so that it meets: {criterion}"
                        )),
                    });
                    failed.push(criterion.clone());
                }
            }
        }
        let blocking = issues.iter().any(|i| i.severity >= IssueSeverity::High);
        let valid = !blocking && failed.is_empty();
        let total = request.acceptance_criteria.len().max(1) as f64;
        let quality_score = if request.acceptance_criteria.is_empty() {
            if blocking { 0.0 } else { 1.0 }
        } else {
            passed.len() as f64 / total
        };
        let confidence = if used_llm { 0.6 } else { 0.95 };
        let suggestions = issues.iter().filter_map(|i| i.suggestion.clone()).collect();
        Ok(ArmOutcome::metered(
            ValidateResponse {
                valid,
                confidence,
                issues,
                passed_criteria: passed,
                failed_criteria: failed,
                quality_score,
                suggestions,
            },
            ctx.budget.used,
            model,
        ))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_run_reads_integers_as_json_schema_means_them() {
        let run: CodeRun =
            serde_json::from_value(serde_json::json!({"success": false, "exit_code": -871.0}))
                .unwrap();
        assert_eq!(run.exit_code, -871);
        assert!(
            serde_json::from_value::<CodeRun>(
                serde_json::json!({"success": false, "exit_code": 1.5})
            )
            .is_err()
        );
    }

    use super::*;

    #[test]
    fn classifies_criteria() {
        assert_eq!(
            classify("Output must contain \"fib\""),
            Check::Contains {
                needle: "fib".into(),
                negated: false
            }
        );
        assert_eq!(
            classify("must not contain 'TODO'."),
            Check::Contains {
                needle: "TODO".into(),
                negated: true
            }
        );
        assert_eq!(classify("The answer is valid JSON"), Check::Json);
        assert_eq!(classify("The code is valid Python"), Check::PythonSyntax);
        assert_eq!(classify("The code runs without errors"), Check::Runs);
        assert_eq!(
            classify("The function handles negative input gracefully"),
            Check::Llm
        );
    }
}
