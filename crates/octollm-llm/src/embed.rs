//! Text embeddings: the [`Embedder`] trait and, with feature `embed`, all-MiniLM-L6-v2
//! run in process through candle ([`minilm`]).

use async_trait::async_trait;

use crate::provider::LlmError;

#[cfg(feature = "embed")]
pub mod minilm;
#[cfg(feature = "embed")]
pub mod token_features;
#[cfg(feature = "embed")]
pub mod wordpiece;

#[async_trait]
pub trait Embedder: Send + Sync {
    fn model(&self) -> &str;
    fn dimensions(&self) -> usize;
    /// One L2-normalised vector per text, in order.
    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, LlmError>;

    /// Whether [`Embedder::embed`] can work here, without doing it (a model loaded on first
    /// use may be missing): why not, when it cannot.
    fn available(&self) -> Result<(), String> {
        Ok(())
    }
}
