//! The knowledge base through the orchestrator's API: documents go to the retriever arm
//! (in process or its service) and searches come back from it, so clients reach the
//! knowledge base through the public entry and the arms stay internal.

use octollm_arms::retriever::{DocumentRequest, DocumentResponse, SearchRequest, SearchResponse};
use octollm_arms::{ArmError, CallContext};
use octollm_core::BudgetTracker;

use crate::Orchestrator;

impl Orchestrator {
    /// Adds a document to the knowledge base (chunked, embedded, indexed by the retriever).
    pub async fn ingest(
        &self,
        request: DocumentRequest,
        request_id: String,
    ) -> Result<DocumentResponse, ArmError> {
        let ctx = self.direct_call(request_id);
        Ok(self
            .arms
            .call::<octollm_arms::Ingest>(request, ctx)
            .await?
            .response)
    }

    /// Searches the knowledge base.
    pub async fn search(
        &self,
        request: SearchRequest,
        request_id: String,
    ) -> Result<SearchResponse, ArmError> {
        let ctx = self.direct_call(request_id);
        Ok(self
            .arms
            .call::<octollm_arms::Search>(request, ctx)
            .await?
            .response)
    }

    /// A call outside any task, with the default task budget (the retriever spends no tokens;
    /// the wall-time limit bounds it).
    fn direct_call(&self, request_id: String) -> CallContext {
        CallContext::standalone(
            request_id,
            BudgetTracker::new(
                &self.config.default_budget,
                chrono::Utc::now().timestamp_millis(),
                Default::default(),
            ),
        )
    }
}
