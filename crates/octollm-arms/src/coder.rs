//! The coder arm: writes, debugs, refactors, explains and tests code with an LLM, then checks
//! the syntax of what it wrote where a checker exists.

use async_trait::async_trait;
use octollm_llm::{CompletionRequest, Message, MeteredLlm};
use serde::{Deserialize, Serialize};

use crate::Code;
use crate::context::{ArmError, ArmOutcome, CallContext};
use crate::contract::{ArmStatus, Handler, Health};
use crate::syntax;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum CodeOperation {
    Generate,
    Debug,
    Refactor,
    Explain,
    Test,
}

/// `POST /code`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CodeRequest {
    pub operation: CodeOperation,
    /// What to write, fix, change, explain or test.
    #[schemars(length(min = PROMPT_CHARS.0, max = PROMPT_CHARS.1))]
    pub prompt: String,
    #[schemars(length(min = 1, max = LANGUAGE_MAX_CHARS), pattern(octollm_core::task::NOT_BLANK_PATTERN))]
    pub language: String,
    #[serde(default)]
    pub existing_code: Option<String>,
    #[serde(default)]
    pub style_guide: Option<String>,
    #[serde(default)]
    pub include_tests: bool,
    #[serde(default)]
    pub include_docstrings: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CodeResponse {
    pub success: bool,
    pub code: String,
    pub explanation: String,
    pub language: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tests: Option<String>,
    pub confidence: f64,
    pub warnings: Vec<String>,
}

pub const PROMPT_CHARS: (usize, usize) = (10, 5000);
pub const LANGUAGE_MAX_CHARS: usize = 40;

impl CodeRequest {
    pub fn validate(&self) -> Result<(), ArmError> {
        let n = self.prompt.chars().count();
        if !(PROMPT_CHARS.0..=PROMPT_CHARS.1).contains(&n) {
            return Err(ArmError::InvalidRequest(format!(
                "prompt must be {} to {} characters, got {n}",
                PROMPT_CHARS.0, PROMPT_CHARS.1
            )));
        }
        let n = self.language.chars().count();
        if octollm_core::task::is_blank(&self.language) || n > LANGUAGE_MAX_CHARS {
            return Err(ArmError::InvalidRequest(format!(
                "language must be 1 to {LANGUAGE_MAX_CHARS} characters, not blank"
            )));
        }
        Ok(())
    }
}

pub struct LlmCoder {
    llm: MeteredLlm,
    max_tokens: u32,
}

impl LlmCoder {
    pub fn new(llm: MeteredLlm, max_tokens: u32) -> Self {
        Self { llm, max_tokens }
    }
}

fn instruction(op: CodeOperation) -> &'static str {
    match op {
        CodeOperation::Generate => "Write the code the user asks for.",
        CodeOperation::Debug => "Find and fix the bug in the user's code.",
        CodeOperation::Refactor => "Refactor the user's code without changing its behaviour.",
        CodeOperation::Explain => "Explain what the user's code does.",
        CodeOperation::Test => "Write tests for the user's code.",
    }
}

#[async_trait]
impl Handler<Code> for LlmCoder {
    fn status(&self) -> ArmStatus {
        ArmStatus::in_process(Health::Healthy)
    }

    async fn handle(
        &self,
        request: CodeRequest,
        mut ctx: CallContext,
    ) -> Result<ArmOutcome<CodeResponse>, ArmError> {
        request.validate()?;
        let mut system = format!(
            "You are an expert {} programmer. {} Answer with one fenced code block first, then at most two sentences.",
            request.language,
            instruction(request.operation)
        );
        if request.include_docstrings {
            system.push_str(" Include docstrings.");
        }
        if request.include_tests {
            system.push_str(" Include a few assert-based tests at the end of the code.");
        }
        if let Some(style) = &request.style_guide {
            system.push_str(&format!(" Follow this style guide: {style}"));
        }
        let mut user = request.prompt.clone();
        if let Some(existing) = &request.existing_code {
            user.push_str(&format!(
                "\n\nExisting code:\n```{}\n{existing}\n```",
                request.language
            ));
        }
        let completion = self
            .llm
            .complete(
                CompletionRequest::new(
                    format!(
                        "coder.{}",
                        serde_json::to_value(request.operation)
                            .ok()
                            .and_then(|v| v.as_str().map(str::to_owned))
                            .unwrap_or_default()
                    ),
                    vec![Message::system(system), Message::user(user)],
                    self.max_tokens,
                ),
                &mut ctx.budget,
            )
            .await
            .map_err(|e| ArmError::from_metered(e, ctx.budget.used))?;
        let (code, fenced_language) = syntax::extract_code(&completion.text);
        let explanation = completion
            .text
            .rsplit("```")
            .next()
            .filter(|_| completion.text.contains("```"))
            .map(|s| s.trim().to_owned())
            .unwrap_or_default();
        let language = fenced_language.unwrap_or_else(|| request.language.clone());
        let mut warnings = Vec::new();
        let mut success = !code.trim().is_empty();
        if !success {
            warnings.push("the model produced no code".to_owned());
        }
        let checked = if request.operation == CodeOperation::Explain {
            None
        } else {
            syntax::check(&request.language, &code).await
        };
        let has_checker = checked.is_some();
        match checked {
            Some(Ok(())) => {}
            Some(Err(e)) => {
                success = false;
                warnings.push(format!("syntax error: {e}"));
            }
            None if request.operation != CodeOperation::Explain => {
                warnings.push(format!(
                    "no syntax checker for {} on this machine",
                    request.language
                ));
            }
            None => {}
        }
        if completion.finish_reason == octollm_llm::FinishReason::Length {
            warnings.push("the answer was cut at the token limit".to_owned());
        }
        let confidence = match (success, has_checker) {
            (true, true) => 0.8,
            (true, false) => 0.6,
            (false, _) => 0.2,
        };
        Ok(ArmOutcome::metered(
            CodeResponse {
                success,
                code,
                explanation,
                language,
                tests: None,
                confidence,
                warnings,
            },
            ctx.budget.used,
            Some(completion.model),
        ))
    }
}
