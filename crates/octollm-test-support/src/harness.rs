//! The in-process arms on the scripted model, for tests of the orchestrator and the services.

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use octollm_arms::{Arms, InProcessSettings};
use octollm_core::budget::Price;
use octollm_llm::scripted::ScriptedProvider;
use octollm_llm::{Embedder, LlmError, MeteredLlm};
use octollm_store::KnowledgeStore;

/// For tests that never search: an embedder call is a bug in the test's setup.
pub struct NoEmbedder;

#[async_trait]
impl Embedder for NoEmbedder {
    fn model(&self) -> &str {
        "none"
    }

    fn dimensions(&self) -> usize {
        384
    }

    async fn embed(&self, _texts: &[String]) -> Result<Vec<Vec<f32>>, LlmError> {
        Err(LlmError::Config("no embedder in this test".into()))
    }
}

/// A deterministic stand-in for the embedding model: each word is hashed into one of 384
/// dimensions, so texts that share words are near each other. For tests that ingest and
/// search without loading MiniLM.
pub struct WordHashEmbedder;

#[async_trait]
impl Embedder for WordHashEmbedder {
    fn model(&self) -> &str {
        "word-hash-384"
    }

    fn dimensions(&self) -> usize {
        384
    }

    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, LlmError> {
        Ok(texts
            .iter()
            .map(|text| {
                let mut v = vec![0.0f32; 384];
                for word in text
                    .split(|c: char| !c.is_alphanumeric())
                    .filter(|w| !w.is_empty())
                {
                    // FNV-1a: the same word lands in the same dimension in every run.
                    let h = word
                        .to_lowercase()
                        .bytes()
                        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
                        });
                    v[(h % 384) as usize] += 1.0;
                }
                let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-6);
                v.iter_mut().for_each(|x| *x /= norm);
                v
            })
            .collect())
    }
}

/// The scripted model replaying `script`, logging its calls to `log` when given.
pub fn scripted_llm(script: serde_json::Value, log: Option<PathBuf>) -> MeteredLlm {
    let provider =
        ScriptedProvider::from_script(serde_json::from_value(script).unwrap(), log).unwrap();
    MeteredLlm::new(Arc::new(provider), Price::default())
}

/// Every arm in process on the scripted model, with the real executor and judge.
pub fn scripted_arms(
    script: serde_json::Value,
    log: Option<PathBuf>,
    knowledge: Arc<dyn KnowledgeStore>,
) -> Arms {
    scripted_arms_with(script, log, knowledge, Arc::new(NoEmbedder))
}

/// [`scripted_arms`] with an embedder, for tests that ingest and search.
pub fn scripted_arms_with(
    script: serde_json::Value,
    log: Option<PathBuf>,
    knowledge: Arc<dyn KnowledgeStore>,
    embedder: Arc<dyn Embedder>,
) -> Arms {
    Arms::in_process(
        scripted_llm(script, log),
        knowledge,
        embedder,
        InProcessSettings::default(),
    )
}
