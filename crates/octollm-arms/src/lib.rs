//! The six specialist arms. Each arm's operations are [`Operation`]s, listed in one table
//! below; each is answered by a [`Handler`], in process here or over HTTP by `octollm-http`,
//! so the orchestrator does not know which it talks to.
//!
//! # Layout
//! - [`contract`]: [`Operation`] (route and wire types), [`Handler`], arm status.
//! - [`context`]: the call context (task, unit, budget share), outcomes and errors shared by all arms.
//! - [`guard`]: who may call an arm service: capability tokens, their grants, revocations.
//! - [`planner`]: goal → plan, schema- and grammar-constrained.
//! - [`coder`]: code generation and friends, with a syntax check.
//! - [`executor`]: runs allowlisted programs, argv only, inside bubblewrap.
//! - [`retriever`]: ingestion and BM25 / vector / hybrid search.
//! - [`judge`]: acceptance criteria, deterministic checks first, then LLM verdicts.
//! - [`guardian`]: PII, secret and injection checks with redaction, and policy violations.
//! - [`policy`]: the guardian's YAML policy (rules by detector, pattern, keywords, arm, origin), reloaded on change.
//! - [`syntax`]: parse-only syntax checks and code extraction shared by coder and judge.

use std::sync::Arc;

use octollm_core::ArmKind;
use octollm_core::token::ExecutorGrant;

pub mod coder;
pub mod context;
pub mod contract;
pub mod executor;
pub mod guard;
pub mod guardian;
pub mod judge;
pub mod planner;
pub mod policy;
pub mod retriever;
pub mod syntax;

pub use coder::LlmCoder;

/// The model each arm that calls one uses (SPEC §9: a provider and model per arm).
#[derive(Clone)]
pub struct ArmModels {
    pub planner: octollm_llm::MeteredLlm,
    pub coder: octollm_llm::MeteredLlm,
    pub judge: octollm_llm::MeteredLlm,
}
pub use context::{ArmError, ArmInfo, ArmOutcome, CallContext};
pub use contract::{ArmStatus, Handler, Health, Operation, OperationVisitor};
pub use executor::LocalExecutor;
pub use guardian::Guardian;
pub use judge::Judge;
pub use planner::LlmPlanner;
pub use retriever::Retriever;

/// The operation table: one row per operation. From it come the operation types, [`Arms`]
/// (one handler per operation) and [`visit_operations`], which the HTTP services, clients
/// and OpenAPI documents are built from.
macro_rules! operations {
    ($(
        $(#[$doc:meta])*
        $op:ident {
            arm: $arm:ident,
            field: $field:ident,
            route: $route:literal,
            request: $request:ty,
            response: $response:ty,
            summary: $summary:literal
            $(, grant: $grant:path)? $(,)?
        }
    ),* $(,)?) => {
        $(
            $(#[$doc])*
            pub struct $op;

            impl Operation for $op {
                const ARM: ArmKind = ArmKind::$arm;
                const ROUTE: &'static str = $route;
                const SUMMARY: &'static str = $summary;
                type Request = $request;
                type Response = $response;

                fn handler(arms: &Arms) -> &Arc<dyn Handler<Self>> {
                    &arms.$field
                }

                fn replace(arms: &mut Arms, handler: Arc<dyn Handler<Self>>) {
                    arms.$field = handler;
                }

                $(
                    fn grant(request: &Self::Request) -> ExecutorGrant {
                        $grant(request)
                    }
                )?
            }
        )*

        /// One handler per operation: what the orchestrator and the arm services hold. In
        /// embedded mode every handler is the in-process arm; in distributed mode, HTTP clients.
        #[derive(Clone)]
        pub struct Arms {
            $(pub $field: Arc<dyn Handler<$op>>,)*
        }

        /// Shows `visitor` every operation, in table order.
        pub fn visit_operations(visitor: &mut impl OperationVisitor) {
            $(visitor.visit::<$op>();)*
        }

        impl Arms {
            /// The status of `arm`: that of its first operation's handler.
            pub fn status(&self, arm: ArmKind) -> ArmStatus {
                $(
                    if ArmKind::$arm == arm {
                        return self.$field.status();
                    }
                )*
                ArmStatus::in_process(Health::Unavailable("no operation".into()))
            }
        }
    };
}

operations! {
    /// `POST /plan`: a goal into a plan of steps.
    Plan {
        arm: Planner,
        field: plan,
        route: "/plan",
        request: planner::PlanRequest,
        response: planner::PlanResponse,
        summary: "Plan a goal into steps for the other arms",
    },
    /// `POST /code`: write, debug, refactor, explain or test code.
    Code {
        arm: Coder,
        field: code,
        route: "/code",
        request: coder::CodeRequest,
        response: coder::CodeResponse,
        summary: "Generate, debug, refactor, explain or test code",
    },
    /// `POST /execute`: run one allowlisted program in the sandbox.
    Execute {
        arm: Executor,
        field: execute,
        route: "/execute",
        request: executor::ExecuteRequest,
        response: executor::ExecuteResponse,
        summary: "Run one allowlisted program, argv only, in a sandbox",
        grant: executor::ExecuteRequest::grant,
    },
    /// `POST /search`: keyword, vector or hybrid search of the knowledge base.
    Search {
        arm: Retriever,
        field: search,
        route: "/search",
        request: retriever::SearchRequest,
        response: retriever::SearchResponse,
        summary: "Search the knowledge base (keyword, vector or hybrid)",
    },
    /// `POST /documents`: add a document to the knowledge base.
    Ingest {
        arm: Retriever,
        field: ingest,
        route: "/documents",
        request: retriever::DocumentRequest,
        response: retriever::DocumentResponse,
        summary: "Add a document to the knowledge base (chunked, embedded, indexed)",
    },
    /// `POST /validate`: check an output against acceptance criteria.
    Validate {
        arm: Judge,
        field: validate,
        route: "/validate",
        request: judge::ValidateRequest,
        response: judge::ValidateResponse,
        summary: "Check an output against acceptance criteria",
    },
    /// `POST /check`: PII, secret and injection checks with redaction.
    Check {
        arm: Guardian,
        field: check,
        route: "/check",
        request: guardian::CheckRequest,
        response: guardian::CheckResponse,
        summary: "Check content for PII, secrets and injections; redact on request",
    },
}

/// What the in-process arms are built with.
#[derive(Debug, Clone)]
pub struct InProcessSettings {
    pub executor: executor::ExecutorConfig,
    pub planner: planner::PlannerConfig,
    pub coder_max_tokens: u32,
    /// The guardian's policy.
    pub policy: policy::PolicyHandle,
}

impl Default for InProcessSettings {
    fn default() -> Self {
        Self {
            executor: executor::ExecutorConfig::default(),
            planner: planner::PlannerConfig::default(),
            coder_max_tokens: 384,
            policy: policy::PolicyHandle::default(),
        }
    }
}

impl Arms {
    /// Every arm in this process, sharing one model: what the embedded mode runs. The judge
    /// runs no code: the orchestrator runs it through the executor arm for the judge.
    pub fn in_process(
        llm: octollm_llm::MeteredLlm,
        knowledge: Arc<dyn octollm_store::KnowledgeStore>,
        embedder: Arc<dyn octollm_llm::Embedder>,
        settings: InProcessSettings,
    ) -> Self {
        let models = ArmModels {
            planner: llm.clone(),
            coder: llm.clone(),
            judge: llm,
        };
        Self::in_process_with(models, knowledge, embedder, settings)
    }

    /// [`Arms::in_process`] with a model per arm.
    pub fn in_process_with(
        models: ArmModels,
        knowledge: Arc<dyn octollm_store::KnowledgeStore>,
        embedder: Arc<dyn octollm_llm::Embedder>,
        settings: InProcessSettings,
    ) -> Self {
        let executor = Arc::new(LocalExecutor::new(settings.executor));
        let retriever = Arc::new(Retriever::new(knowledge, embedder));
        Self {
            plan: Arc::new(LlmPlanner::new(models.planner, settings.planner)),
            code: Arc::new(LlmCoder::new(models.coder, settings.coder_max_tokens)),
            execute: executor,
            search: retriever.clone(),
            ingest: retriever,
            validate: Arc::new(Judge::new(models.judge)),
            check: Arc::new(Guardian::with_policy(settings.policy)),
        }
    }

    /// Calls `O` on whichever handler holds it.
    pub async fn call<O: Operation>(
        &self,
        request: O::Request,
        ctx: CallContext,
    ) -> Result<ArmOutcome<O::Response>, ArmError> {
        O::handler(self).handle(request, ctx).await
    }
}
