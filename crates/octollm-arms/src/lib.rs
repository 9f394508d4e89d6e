//! The six specialist arms. Each has one client trait, implemented in process here and over
//! HTTP by `octollm-http`, so the orchestrator never knows which one it talks to.
//!
//! # Layout
//! - [`context`]: the call context (task, step, budget share), outcomes and errors shared by all arms.
//! - [`planner`]: goal → plan, schema- and grammar-constrained.
//! - [`coder`]: code generation and friends, with a syntax check.
//! - [`executor`]: runs allowlisted programs, argv only, inside bubblewrap.
//! - [`retriever`]: ingestion and BM25 / vector / hybrid search.
//! - [`judge`]: acceptance criteria, deterministic checks first, then LLM verdicts.
//! - [`guardian`]: PII, secret and injection checks with redaction.
//! - [`syntax`]: parse-only syntax checks and code extraction shared by coder and judge.

use std::sync::Arc;

pub mod coder;
pub mod context;
pub mod executor;
pub mod guardian;
pub mod judge;
pub mod planner;
pub mod retriever;
pub mod syntax;

pub use coder::CoderArm;
pub use context::{ArmError, ArmInfo, ArmOutcome, CallContext};
pub use executor::ExecutorArm;
pub use guardian::GuardianArm;
pub use judge::JudgeArm;
pub use planner::PlannerArm;
pub use retriever::RetrieverArm;

/// What the in-process arms are built with.
#[derive(Debug, Clone)]
pub struct InProcessSettings {
    pub executor: executor::ExecutorConfig,
    pub planner: planner::PlannerConfig,
    pub coder_max_tokens: u32,
}

impl Default for InProcessSettings {
    fn default() -> Self {
        Self {
            executor: executor::ExecutorConfig::default(),
            planner: planner::PlannerConfig::default(),
            coder_max_tokens: 384,
        }
    }
}

/// One client per arm: what the orchestrator holds. In embedded mode every field is the
/// in-process implementation; in distributed mode, HTTP clients.
#[derive(Clone)]
pub struct Arms {
    pub planner: Arc<dyn PlannerArm>,
    pub coder: Arc<dyn CoderArm>,
    pub executor: Arc<dyn ExecutorArm>,
    pub retriever: Arc<dyn RetrieverArm>,
    pub judge: Arc<dyn JudgeArm>,
    pub guardian: Arc<dyn GuardianArm>,
}

impl Arms {
    /// Every arm in this process, sharing one model: what the embedded mode runs. The judge
    /// runs code through the same sandboxed executor.
    pub fn in_process(
        llm: octollm_llm::MeteredLlm,
        knowledge: Arc<dyn octollm_store::KnowledgeStore>,
        embedder: Arc<dyn octollm_llm::Embedder>,
        settings: InProcessSettings,
    ) -> Self {
        let executor: Arc<dyn ExecutorArm> =
            Arc::new(executor::LocalExecutor::new(settings.executor));
        Self {
            planner: Arc::new(planner::LlmPlanner::new(llm.clone(), settings.planner)),
            coder: Arc::new(coder::LlmCoder::new(llm.clone(), settings.coder_max_tokens)),
            executor: executor.clone(),
            retriever: Arc::new(retriever::Retriever::new(knowledge, embedder)),
            judge: Arc::new(judge::Judge::new(llm, Some(executor))),
            guardian: Arc::new(guardian::Guardian::new()),
        }
    }
}
