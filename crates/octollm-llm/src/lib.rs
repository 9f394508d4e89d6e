//! LLM providers and the embedder, each behind one trait, plus budget metering.
//!
//! # Layout
//! - [`provider`]: the [`LlmProvider`] trait, request and completion types, errors.
//! - [`metered`]: [`MeteredLlm`], which fits every call inside a task's budget and prices it.
//! - [`openai`]: OpenAI-compatible Chat Completions (OpenAI, vLLM, Ollama, llama.cpp server, LM Studio).
//! - [`scripted`]: replays responses from a file; for tests and demos, chosen only explicitly.
//! - [`local`] (feature `local`): llama.cpp in process through `llama-cpp-2`, grammar-constrained output.
//! - [`embed`]: the [`Embedder`] trait; with feature `embed`, all-MiniLM-L6-v2 through candle.
//! - [`models`]: where model files live and how `octollm model pull` fetches them.
//! - [`prices`]: the shipped list prices per model, so cost budgets bind out of the box.

pub mod anthropic;
pub mod embed;
pub mod gullible;
#[cfg(feature = "local")]
pub mod local;
pub mod metered;
pub mod models;
pub mod openai;
pub mod prices;
pub mod provider;
pub mod scripted;

pub use embed::Embedder;
pub use metered::{MeteredError, MeteredLlm};
pub use provider::{
    Completion, CompletionRequest, FinishReason, LlmError, LlmProvider, Message, OutputFormat, Role,
};
