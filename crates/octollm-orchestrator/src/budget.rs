//! A task's budget shared by its concurrently running steps. Each arm call reserves a share
//! of what is left before it starts and settles what it really spent when it ends, so
//! parallel steps together can never spend more than the task has.

use std::sync::Mutex;

use octollm_core::budget::{Budget, BudgetExceeded, BudgetTracker, Usage};

#[derive(Debug)]
pub struct TaskBudget {
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    tracker: BudgetTracker,
    reserved_tokens: u64,
    reserved_cost: f64,
}

impl TaskBudget {
    pub fn new(budget: &Budget, started_unix_ms: i64, used: Usage) -> Self {
        Self {
            inner: Mutex::new(Inner {
                tracker: BudgetTracker::new(budget, started_unix_ms, used),
                reserved_tokens: 0,
                reserved_cost: 0.0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A poisoned lock only means another step panicked mid-update of plain numbers.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Reserves `1/share_of` of the unreserved remainder for one call.
    pub fn reserve(
        &self,
        share_of: usize,
        now_unix_ms: i64,
    ) -> Result<BudgetTracker, BudgetExceeded> {
        let mut inner = self.lock();
        inner.tracker.check_time(now_unix_ms)?;
        let share_of = share_of.max(1);
        let tokens = inner
            .tracker
            .tokens_remaining()
            .saturating_sub(inner.reserved_tokens)
            / share_of as u64;
        let cost =
            (inner.tracker.cost_remaining() - inner.reserved_cost).max(0.0) / share_of as f64;
        inner.reserved_tokens += tokens;
        inner.reserved_cost += cost;
        Ok(BudgetTracker {
            token_limit: tokens,
            cost_limit: cost,
            deadline_unix_ms: inner.tracker.deadline_unix_ms,
            used: Usage::default(),
        })
    }

    /// Returns a reservation and records what the call spent.
    pub fn settle(&self, allowance: &BudgetTracker, spent: Usage) {
        let mut inner = self.lock();
        inner.reserved_tokens = inner.reserved_tokens.saturating_sub(allowance.token_limit);
        inner.reserved_cost = (inner.reserved_cost - allowance.cost_limit).max(0.0);
        inner.tracker.record(spent);
    }

    pub fn used(&self) -> Usage {
        self.lock().tracker.used
    }

    pub fn check_time(&self, now_unix_ms: i64) -> Result<(), BudgetExceeded> {
        self.lock().tracker.check_time(now_unix_ms)
    }

    pub fn time_remaining_ms(&self, now_unix_ms: i64) -> u64 {
        self.lock().tracker.time_remaining_ms(now_unix_ms)
    }

    pub fn overspent(&self) -> Option<BudgetExceeded> {
        self.lock().tracker.overspent()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parallel_reservations_never_exceed_the_remainder() {
        let b = TaskBudget::new(
            &Budget {
                max_tokens: 1000,
                max_time_seconds: 60,
                max_cost_dollars: 1.0,
            },
            0,
            Usage::default(),
        );
        let a = b.reserve(2, 0).unwrap();
        let c = b.reserve(1, 0).unwrap();
        assert_eq!(a.token_limit + c.token_limit, 1000);
        b.settle(
            &a,
            Usage {
                prompt_tokens: 100,
                completion_tokens: 0,
                cost_dollars: 0.0,
            },
        );
        b.settle(
            &c,
            Usage {
                prompt_tokens: 200,
                completion_tokens: 0,
                cost_dollars: 0.0,
            },
        );
        assert_eq!(b.reserve(1, 0).unwrap().token_limit, 700);
    }

    #[test]
    fn deadline_refuses_reservations() {
        let b = TaskBudget::new(
            &Budget {
                max_tokens: 1000,
                max_time_seconds: 1,
                max_cost_dollars: 1.0,
            },
            0,
            Usage::default(),
        );
        assert!(b.reserve(1, 999).is_ok());
        assert!(matches!(
            b.reserve(1, 1000),
            Err(BudgetExceeded::Time { .. })
        ));
    }
}
