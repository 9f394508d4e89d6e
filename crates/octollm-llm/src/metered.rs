//! Budget metering around a provider: every call is fitted into what the budget has left
//! before it is made, bounded by the time left, and its usage recorded and priced.

use std::sync::Arc;
use std::time::Duration;

use octollm_core::budget::{BudgetExceeded, BudgetTracker, Price, Usage};

use crate::provider::{Completion, CompletionRequest, LlmError, LlmProvider};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MeteredError {
    #[error(transparent)]
    Budget(#[from] BudgetExceeded),
    #[error(transparent)]
    Llm(#[from] LlmError),
}

#[derive(Clone)]
pub struct MeteredLlm {
    provider: Arc<dyn LlmProvider>,
    price: Price,
    /// Log prompts and completions at debug level (`OCTOLLM_LOG_PROMPTS`, a debugging switch).
    log_text: bool,
}

impl MeteredLlm {
    pub fn new(provider: Arc<dyn LlmProvider>, price: Price) -> Self {
        Self {
            provider,
            price,
            log_text: false,
        }
    }

    pub fn with_text_logging(mut self, on: bool) -> Self {
        self.log_text = on;
        self
    }

    pub fn model(&self) -> &str {
        self.provider.model()
    }

    pub fn provider(&self) -> &Arc<dyn LlmProvider> {
        &self.provider
    }

    pub async fn complete(
        &self,
        mut request: CompletionRequest,
        budget: &mut BudgetTracker,
    ) -> Result<Completion, MeteredError> {
        let now = chrono::Utc::now().timestamp_millis();
        let prompt_tokens = self.provider.count_tokens(&request.prompt_text());
        request.max_tokens =
            budget.fit_completion(prompt_tokens, request.max_tokens, self.price, now)?;
        let time_left = Duration::from_millis(budget.time_remaining_ms(now));
        let purpose = request.purpose.clone();
        if self.log_text {
            tracing::debug!(purpose = %purpose, prompt = %request.prompt_text(), "llm request");
        }
        let completion = tokio::time::timeout(time_left, self.provider.complete(request))
            .await
            .map_err(|_| BudgetExceeded::Time {
                deadline_unix_ms: budget.deadline_unix_ms,
            })??;
        budget.record(Usage {
            prompt_tokens: completion.prompt_tokens,
            completion_tokens: completion.completion_tokens,
            cost_dollars: self
                .price
                .cost(completion.prompt_tokens, completion.completion_tokens),
        });
        if self.log_text {
            tracing::debug!(purpose = %purpose, completion = %completion.text, "llm response");
        }
        Ok(completion)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::{FinishReason, Message};
    use async_trait::async_trait;
    use octollm_core::budget::Budget;
    use std::sync::atomic::{AtomicU32, Ordering};

    struct Echo {
        calls: AtomicU32,
        seen_max_tokens: AtomicU32,
    }

    #[async_trait]
    impl LlmProvider for Echo {
        fn model(&self) -> &str {
            "echo"
        }
        fn count_tokens(&self, _text: &str) -> u64 {
            50
        }
        async fn complete(&self, request: CompletionRequest) -> Result<Completion, LlmError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            self.seen_max_tokens
                .store(request.max_tokens, Ordering::SeqCst);
            Ok(Completion {
                text: "ok".into(),
                prompt_tokens: 50,
                completion_tokens: u64::from(request.max_tokens),
                model: "echo".into(),
                finish_reason: FinishReason::Length,
            })
        }
    }

    #[tokio::test]
    async fn calls_are_capped_then_refused() {
        let echo = Arc::new(Echo {
            calls: AtomicU32::new(0),
            seen_max_tokens: AtomicU32::new(0),
        });
        let llm = MeteredLlm::new(
            echo.clone(),
            Price {
                prompt_per_1k: 1.0,
                completion_per_1k: 2.0,
            },
        );
        let budget = Budget {
            max_tokens: 300,
            max_time_seconds: 60,
            max_cost_dollars: 10.0,
        };
        let mut tracker = BudgetTracker::new(
            &budget,
            chrono::Utc::now().timestamp_millis(),
            Usage::default(),
        );
        let request = CompletionRequest::new("test", vec![Message::user("hi")], 200);
        llm.complete(request.clone(), &mut tracker).await.unwrap();
        assert_eq!(echo.seen_max_tokens.load(Ordering::SeqCst), 200);
        assert_eq!(tracker.used.total_tokens(), 250);
        assert!((tracker.used.cost_dollars - (0.05 + 0.4)).abs() < 1e-9);
        // 50 left, the prompt alone takes 50: refused without calling the provider.
        let err = llm.complete(request, &mut tracker).await.unwrap_err();
        assert!(matches!(
            err,
            MeteredError::Budget(BudgetExceeded::Tokens { .. })
        ));
        assert_eq!(echo.calls.load(Ordering::SeqCst), 1);
    }
}
