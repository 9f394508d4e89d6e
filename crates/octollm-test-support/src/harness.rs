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
    Arms::in_process(
        scripted_llm(script, log),
        knowledge,
        Arc::new(NoEmbedder),
        InProcessSettings::default(),
    )
}
