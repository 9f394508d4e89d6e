//! The provider trait and its types.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub role: Role,
    pub content: String,
}

impl Message {
    pub fn system(content: impl Into<String>) -> Self {
        Self {
            role: Role::System,
            content: content.into(),
        }
    }
    pub fn user(content: impl Into<String>) -> Self {
        Self {
            role: Role::User,
            content: content.into(),
        }
    }
}

/// What shape the answer must have.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum OutputFormat {
    #[default]
    Text,
    /// JSON matching `schema`. Providers that constrain decoding with a grammar use `grammar`
    /// (GBNF, root rule `root`) when given; HTTP providers send the schema.
    Json {
        schema: serde_json::Value,
        grammar: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct CompletionRequest {
    /// Who asks, e.g. `planner.plan`: a metrics label and the key the scripted provider matches.
    pub purpose: String,
    pub messages: Vec<Message>,
    pub max_tokens: u32,
    pub temperature: f32,
    pub output: OutputFormat,
}

impl CompletionRequest {
    pub fn new(purpose: impl Into<String>, messages: Vec<Message>, max_tokens: u32) -> Self {
        Self {
            purpose: purpose.into(),
            messages,
            max_tokens,
            temperature: 0.0,
            output: OutputFormat::Text,
        }
    }

    pub fn json(mut self, schema: serde_json::Value, grammar: Option<String>) -> Self {
        self.output = OutputFormat::Json { schema, grammar };
        self
    }

    /// All message text, for token estimates and scripted matching.
    pub fn prompt_text(&self) -> String {
        let mut text = String::new();
        for m in &self.messages {
            text.push_str(&m.content);
            text.push('\n');
        }
        text
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FinishReason {
    Stop,
    Length,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    pub text: String,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub model: String,
    pub finish_reason: FinishReason,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LlmError {
    #[error(
        "model file not found at {path}; run `octollm model pull` to fetch the default model, or set OCTOLLM_LLM_MODEL_PATH"
    )]
    ModelMissing { path: String },
    #[error("LLM provider misconfigured: {0}")]
    Config(String),
    #[error("LLM provider unavailable: {0}")]
    Unavailable(String),
    #[error("LLM provider rate limited the request")]
    RateLimited { retry_after_seconds: Option<u64> },
    #[error("LLM provider refused the request: {0}")]
    Rejected(String),
    #[error("LLM response could not be used: {0}")]
    InvalidResponse(String),
    #[error("the scripted provider has no response left for {purpose}")]
    ScriptExhausted { purpose: String },
    #[error("LLM inference failed: {0}")]
    Inference(String),
}

impl LlmError {
    /// Worth trying again (possibly elsewhere)?
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            LlmError::Unavailable(_) | LlmError::RateLimited { .. }
        )
    }
}

#[async_trait]
pub trait LlmProvider: Send + Sync {
    /// The model name recorded in provenance and metrics.
    fn model(&self) -> &str;

    /// Estimated prompt tokens, used to decide before a call whether it fits the budget.
    /// Providers with a tokenizer count exactly; the default is a conservative estimate.
    fn count_tokens(&self, text: &str) -> u64 {
        estimate_tokens(text)
    }

    async fn complete(&self, request: CompletionRequest) -> Result<Completion, LlmError>;
}

/// The provider of a service that runs no arm calling a model (the executor, guardian and
/// retriever services; an orchestrator whose arms all run elsewhere): nothing is loaded, and
/// a call, which none of its routes makes, is refused with the reason.
pub struct NoModel;

#[async_trait]
impl LlmProvider for NoModel {
    fn model(&self) -> &str {
        "none"
    }

    async fn complete(&self, _request: CompletionRequest) -> Result<Completion, LlmError> {
        Err(LlmError::Config(
            "this service runs no arm that calls a model, so none is loaded".into(),
        ))
    }
}

/// Roughly one token per 3 bytes of English or code: errs on the high side, which is the
/// safe side for budget checks.
pub fn estimate_tokens(text: &str) -> u64 {
    (text.len() as u64).div_ceil(3) + 4
}
