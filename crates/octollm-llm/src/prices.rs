//! The list prices OctoLLM ships, dollars per 1,000 tokens, so a task's `max_cost_dollars`
//! binds without configuration. `[llm.prices]` overrides or extends them (a negotiated
//! rate, a model not listed, a self-hosted model you want to charge for).
//!
//! A model name matches the longest entry it starts with, so dated snapshots
//! (`gpt-4o-mini-2024-07-18`, `claude-3-5-haiku-20241022`) take their family's price.
//! Prices are the providers' published list prices for standard (not batch, not cached)
//! input and output tokens as of 2025; check them against your contract.
//!
//! Local models (llama.cpp in process, the scripted provider) cost nothing here: the price is
//! the machine's, not per token.

use octollm_core::budget::Price;

const fn per_million(prompt: f64, completion: f64) -> Price {
    Price {
        prompt_per_1k: prompt / 1000.0,
        completion_per_1k: completion / 1000.0,
    }
}

/// Model name prefix → price.
pub const LIST_PRICES: &[(&str, Price)] = &[
    // OpenAI
    ("gpt-4o", per_million(2.50, 10.00)),
    ("gpt-4o-mini", per_million(0.15, 0.60)),
    ("gpt-4.1", per_million(2.00, 8.00)),
    ("gpt-4.1-mini", per_million(0.40, 1.60)),
    ("gpt-4.1-nano", per_million(0.10, 0.40)),
    ("gpt-4-turbo", per_million(10.00, 30.00)),
    ("gpt-3.5-turbo", per_million(0.50, 1.50)),
    ("o1", per_million(15.00, 60.00)),
    ("o1-mini", per_million(1.10, 4.40)),
    ("o3", per_million(2.00, 8.00)),
    ("o3-mini", per_million(1.10, 4.40)),
    ("o4-mini", per_million(1.10, 4.40)),
    // Anthropic
    ("claude-3-haiku", per_million(0.25, 1.25)),
    ("claude-3-5-haiku", per_million(0.80, 4.00)),
    ("claude-3-5-sonnet", per_million(3.00, 15.00)),
    ("claude-3-7-sonnet", per_million(3.00, 15.00)),
    ("claude-sonnet-4", per_million(3.00, 15.00)),
    ("claude-3-opus", per_million(15.00, 75.00)),
    ("claude-opus-4", per_million(15.00, 75.00)),
];

/// The entry of `table` that `model` starts with, the longest when several do.
pub fn lookup<'a>(table: impl IntoIterator<Item = (&'a str, Price)>, model: &str) -> Option<Price> {
    table
        .into_iter()
        .filter(|(prefix, _)| model.starts_with(prefix))
        .max_by_key(|(prefix, _)| prefix.len())
        .map(|(_, price)| price)
}

/// The shipped list price of `model`, if it has one.
pub fn list_price(model: &str) -> Option<Price> {
    lookup(LIST_PRICES.iter().copied(), model)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dated_snapshots_take_their_family_s_price_and_the_longest_prefix_wins() {
        let mini = list_price("gpt-4o-mini-2024-07-18").unwrap();
        assert_eq!(mini, per_million(0.15, 0.60));
        assert_eq!(
            list_price("gpt-4o-2024-08-06").unwrap(),
            per_million(2.50, 10.00)
        );
        assert_eq!(
            list_price("claude-3-5-haiku-20241022").unwrap(),
            per_million(0.80, 4.00)
        );
        assert_eq!(list_price("o3-mini").unwrap(), per_million(1.10, 4.40));
        assert_eq!(list_price("SmolLM2-135M-Instruct"), None);
        // A thousand prompt and a thousand completion tokens of gpt-4o-mini: $0.00075.
        assert!((mini.cost(1000, 1000) - 0.00075).abs() < 1e-12);
    }

    #[test]
    fn every_price_is_positive_and_every_prefix_listed_once() {
        let mut seen = std::collections::BTreeSet::new();
        for (prefix, price) in LIST_PRICES {
            assert!(seen.insert(*prefix), "{prefix} twice");
            assert!(price.prompt_per_1k > 0.0 && price.completion_per_1k >= price.prompt_per_1k);
        }
    }
}
