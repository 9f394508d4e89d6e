//! Hard budgets. A call is authorised only if its worst case fits in what is left;
//! the call that would exceed a limit is never made.
//!
//! The same [`BudgetTracker`] works on both sides of an arm call: the orchestrator
//! hands an arm [`BudgetTracker::allowance`] (the remainder), the arm spends from it,
//! reports its [`Usage`], and the orchestrator records that usage on the task.

use serde::{Deserialize, Serialize};

use crate::task::{BudgetSubmission, ValidationError};

pub const MAX_TOKENS_RANGE: (u64, u64) = (100, 1_000_000);
pub const MAX_TIME_RANGE: (u64, u64) = (1, 3600);
pub const MAX_COST_RANGE: (f64, f64) = (0.0, 1000.0);

/// The smallest completion worth asking a model for. Below this a call is refused
/// as over budget rather than made with a uselessly small cap.
pub const MIN_COMPLETION_TOKENS: u32 = 16;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Budget {
    pub max_tokens: u64,
    pub max_time_seconds: u64,
    pub max_cost_dollars: f64,
}

impl Default for Budget {
    fn default() -> Self {
        Self {
            max_tokens: 50_000,
            max_time_seconds: 600,
            max_cost_dollars: 1.0,
        }
    }
}

impl Budget {
    pub fn validate(&self) -> Result<(), ValidationError> {
        let (lo, hi) = MAX_TOKENS_RANGE;
        if !(lo..=hi).contains(&self.max_tokens) {
            return Err(ValidationError::new(
                "budget.max_tokens",
                format!("must be {lo} to {hi}"),
            ));
        }
        let (lo, hi) = MAX_TIME_RANGE;
        if !(lo..=hi).contains(&self.max_time_seconds) {
            return Err(ValidationError::new(
                "budget.max_time_seconds",
                format!("must be {lo} to {hi}"),
            ));
        }
        let (lo, hi) = MAX_COST_RANGE;
        if !self.max_cost_dollars.is_finite() || !(lo..=hi).contains(&self.max_cost_dollars) {
            return Err(ValidationError::new(
                "budget.max_cost_dollars",
                format!("must be {lo} to {hi}"),
            ));
        }
        Ok(())
    }

    pub(crate) fn from_submission(
        s: &BudgetSubmission,
        defaults: &Budget,
    ) -> Result<Budget, ValidationError> {
        let budget = Budget {
            max_tokens: s.max_tokens.unwrap_or(defaults.max_tokens),
            max_time_seconds: s.max_time_seconds.unwrap_or(defaults.max_time_seconds),
            max_cost_dollars: s.max_cost_dollars.unwrap_or(defaults.max_cost_dollars),
        };
        budget.validate()?;
        Ok(budget)
    }
}

/// Tokens and dollars spent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cost_dollars: f64,
}

impl Usage {
    pub fn total_tokens(&self) -> u64 {
        self.prompt_tokens + self.completion_tokens
    }

    pub fn add(&mut self, other: Usage) {
        self.prompt_tokens += other.prompt_tokens;
        self.completion_tokens += other.completion_tokens;
        self.cost_dollars += other.cost_dollars;
    }
}

/// Per-model prices, dollars per 1,000 tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    pub prompt_per_1k: f64,
    pub completion_per_1k: f64,
}

impl Price {
    pub fn cost(&self, prompt_tokens: u64, completion_tokens: u64) -> f64 {
        (prompt_tokens as f64 * self.prompt_per_1k
            + completion_tokens as f64 * self.completion_per_1k)
            / 1000.0
    }
}

/// The worst case of one call, used to decide whether it may be made.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CallEstimate {
    pub tokens: u64,
    pub cost_dollars: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BudgetExceeded {
    #[error("token budget exceeded: {used} used, {needed} more needed, limit {limit}")]
    Tokens { limit: u64, used: u64, needed: u64 },
    #[error("cost budget exceeded: ${used:.6} used, ${needed:.6} more needed, limit ${limit:.6}")]
    Cost { limit: f64, used: f64, needed: f64 },
    #[error("time budget exceeded: deadline passed")]
    Time { deadline_unix_ms: i64 },
}

/// Limits and spending for one task (or for one arm call's share of a task).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BudgetTracker {
    pub token_limit: u64,
    pub cost_limit: f64,
    /// Wall-clock deadline, Unix milliseconds.
    pub deadline_unix_ms: i64,
    pub used: Usage,
}

impl BudgetTracker {
    /// `started_unix_ms` is when the task first started processing; the wall-time budget
    /// counts from there, across restarts.
    pub fn new(budget: &Budget, started_unix_ms: i64, used: Usage) -> Self {
        let seconds = i64::try_from(budget.max_time_seconds).unwrap_or(i64::MAX / 1000);
        Self {
            token_limit: budget.max_tokens,
            cost_limit: budget.max_cost_dollars,
            deadline_unix_ms: started_unix_ms.saturating_add(seconds.saturating_mul(1000)),
            used,
        }
    }

    pub fn tokens_remaining(&self) -> u64 {
        self.token_limit.saturating_sub(self.used.total_tokens())
    }

    pub fn cost_remaining(&self) -> f64 {
        (self.cost_limit - self.used.cost_dollars).max(0.0)
    }

    /// Milliseconds until the deadline (0 once it has passed).
    pub fn time_remaining_ms(&self, now_unix_ms: i64) -> u64 {
        u64::try_from(self.deadline_unix_ms.saturating_sub(now_unix_ms)).unwrap_or(0)
    }

    pub fn check_time(&self, now_unix_ms: i64) -> Result<(), BudgetExceeded> {
        if now_unix_ms >= self.deadline_unix_ms {
            return Err(BudgetExceeded::Time {
                deadline_unix_ms: self.deadline_unix_ms,
            });
        }
        Ok(())
    }

    /// May a call with this worst case be made now?
    pub fn authorize(
        &self,
        estimate: CallEstimate,
        now_unix_ms: i64,
    ) -> Result<(), BudgetExceeded> {
        self.check_time(now_unix_ms)?;
        let used = self.used.total_tokens();
        if used.saturating_add(estimate.tokens) > self.token_limit {
            return Err(BudgetExceeded::Tokens {
                limit: self.token_limit,
                used,
                needed: estimate.tokens,
            });
        }
        if self.used.cost_dollars + estimate.cost_dollars > self.cost_limit + 1e-12 {
            return Err(BudgetExceeded::Cost {
                limit: self.cost_limit,
                used: self.used.cost_dollars,
                needed: estimate.cost_dollars,
            });
        }
        Ok(())
    }

    /// The largest completion cap that keeps an LLM call within budget, at most `requested`.
    /// Refuses when fewer than [`MIN_COMPLETION_TOKENS`] would fit.
    pub fn fit_completion(
        &self,
        prompt_tokens: u64,
        requested: u32,
        price: Price,
        now_unix_ms: i64,
    ) -> Result<u32, BudgetExceeded> {
        self.check_time(now_unix_ms)?;
        let by_tokens = self.tokens_remaining().saturating_sub(prompt_tokens);
        let prompt_cost = price.cost(prompt_tokens, 0);
        let by_cost = if price.completion_per_1k > 0.0 {
            let left = self.cost_remaining() - prompt_cost;
            if left <= 0.0 {
                0
            } else {
                (left * 1000.0 / price.completion_per_1k).floor() as u64
            }
        } else if prompt_cost > self.cost_remaining() + 1e-12 {
            0
        } else {
            u64::MAX
        };
        let cap = by_tokens.min(by_cost).min(u64::from(requested));
        if cap < u64::from(MIN_COMPLETION_TOKENS) {
            let needed = prompt_tokens + u64::from(MIN_COMPLETION_TOKENS);
            if by_tokens < u64::from(MIN_COMPLETION_TOKENS) {
                return Err(BudgetExceeded::Tokens {
                    limit: self.token_limit,
                    used: self.used.total_tokens(),
                    needed,
                });
            }
            return Err(BudgetExceeded::Cost {
                limit: self.cost_limit,
                used: self.used.cost_dollars,
                needed: price.cost(prompt_tokens, u64::from(MIN_COMPLETION_TOKENS)),
            });
        }
        Ok(u32::try_from(cap).unwrap_or(requested))
    }

    pub fn record(&mut self, usage: Usage) {
        self.used.add(usage);
    }

    /// What is left, as a fresh tracker an arm can spend from.
    pub fn allowance(&self) -> BudgetTracker {
        BudgetTracker {
            token_limit: self.tokens_remaining(),
            cost_limit: self.cost_remaining(),
            deadline_unix_ms: self.deadline_unix_ms,
            used: Usage::default(),
        }
    }

    /// True once any limit is spent beyond its value (a provider reported more than it was allowed).
    pub fn overspent(&self) -> Option<BudgetExceeded> {
        if self.used.total_tokens() > self.token_limit {
            return Some(BudgetExceeded::Tokens {
                limit: self.token_limit,
                used: self.used.total_tokens(),
                needed: 0,
            });
        }
        if self.used.cost_dollars > self.cost_limit + 1e-12 {
            return Some(BudgetExceeded::Cost {
                limit: self.cost_limit,
                used: self.used.cost_dollars,
                needed: 0.0,
            });
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn tracker(tokens: u64) -> BudgetTracker {
        let budget = Budget {
            max_tokens: tokens,
            max_time_seconds: 10,
            max_cost_dollars: 1.0,
        };
        BudgetTracker::new(&budget, 0, Usage::default())
    }

    #[test]
    fn ranges_are_enforced() {
        let mut b = Budget {
            max_tokens: 99,
            ..Budget::default()
        };
        assert_eq!(b.validate().unwrap_err().field, "budget.max_tokens");
        b.max_tokens = 100;
        b.max_time_seconds = 0;
        assert_eq!(b.validate().unwrap_err().field, "budget.max_time_seconds");
        b.max_time_seconds = 3600;
        b.max_cost_dollars = f64::NAN;
        assert_eq!(b.validate().unwrap_err().field, "budget.max_cost_dollars");
        b.max_cost_dollars = 0.0;
        assert!(b.validate().is_ok());
    }

    #[test]
    fn the_call_that_would_exceed_is_refused() {
        let mut t = tracker(1000);
        t.record(Usage {
            prompt_tokens: 500,
            completion_tokens: 400,
            cost_dollars: 0.0,
        });
        assert!(
            t.authorize(
                CallEstimate {
                    tokens: 100,
                    cost_dollars: 0.0
                },
                1
            )
            .is_ok()
        );
        assert!(matches!(
            t.authorize(
                CallEstimate {
                    tokens: 101,
                    cost_dollars: 0.0
                },
                1
            ),
            Err(BudgetExceeded::Tokens { .. })
        ));
    }

    #[test]
    fn completion_cap_shrinks_then_refuses() {
        let t = tracker(1000);
        assert_eq!(t.fit_completion(100, 512, Price::default(), 0), Ok(512));
        assert_eq!(t.fit_completion(700, 512, Price::default(), 0), Ok(300));
        assert!(t.fit_completion(990, 512, Price::default(), 0).is_err());
    }

    #[test]
    fn cost_caps_completion() {
        let t = tracker(100_000);
        let price = Price {
            prompt_per_1k: 0.0,
            completion_per_1k: 10.0,
        };
        // $1 at $10/1k = 100 tokens.
        assert_eq!(t.fit_completion(10, 512, price, 0), Ok(100));
    }

    #[test]
    fn deadline_refuses_everything() {
        let t = tracker(1000);
        assert!(matches!(
            t.check_time(10_000),
            Err(BudgetExceeded::Time { .. })
        ));
        assert!(t.check_time(9_999).is_ok());
        assert!(t.fit_completion(1, 100, Price::default(), 10_000).is_err());
    }

    proptest! {
        #[test]
        fn spending_only_what_is_fitted_never_overspends(
            limit in 100u64..5000,
            calls in proptest::collection::vec((1u64..400, 1u32..600), 1..30),
        ) {
            let mut t = tracker(limit);
            for (prompt, requested) in calls {
                if let Ok(cap) = t.fit_completion(prompt, requested, Price::default(), 0) {
                    t.record(Usage { prompt_tokens: prompt, completion_tokens: u64::from(cap), cost_dollars: 0.0 });
                }
                prop_assert!(t.used.total_tokens() <= limit);
                prop_assert!(t.overspent().is_none());
            }
        }

        #[test]
        fn allowance_plus_used_is_the_limit(limit in 100u64..5000, spent in 0u64..5000) {
            let mut t = tracker(limit);
            t.record(Usage { prompt_tokens: spent.min(limit), completion_tokens: 0, cost_dollars: 0.0 });
            prop_assert_eq!(t.allowance().token_limit + t.used.total_tokens(), limit);
        }
    }
}
