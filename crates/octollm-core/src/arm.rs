//! The specialist arms.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ArmKind {
    Planner,
    Coder,
    Executor,
    Retriever,
    Judge,
    Guardian,
}

impl ArmKind {
    pub const ALL: [ArmKind; 6] = [
        ArmKind::Planner,
        ArmKind::Coder,
        ArmKind::Executor,
        ArmKind::Retriever,
        ArmKind::Judge,
        ArmKind::Guardian,
    ];

    /// Arms a plan step may name. The planner plans; it is not a step of its own plan.
    pub const STEP_ARMS: [ArmKind; 5] = [
        ArmKind::Coder,
        ArmKind::Executor,
        ArmKind::Retriever,
        ArmKind::Judge,
        ArmKind::Guardian,
    ];

    pub fn id(self) -> &'static str {
        match self {
            ArmKind::Planner => "planner",
            ArmKind::Coder => "coder",
            ArmKind::Executor => "executor",
            ArmKind::Retriever => "retriever",
            ArmKind::Judge => "judge",
            ArmKind::Guardian => "guardian",
        }
    }

    pub fn display_name(self) -> &'static str {
        match self {
            ArmKind::Planner => "Planner Arm",
            ArmKind::Coder => "Coder Arm",
            ArmKind::Executor => "Executor Arm",
            ArmKind::Retriever => "Retriever Arm",
            ArmKind::Judge => "Judge Arm",
            ArmKind::Guardian => "Safety Guardian Arm",
        }
    }

    pub fn description(self) -> &'static str {
        match self {
            ArmKind::Planner => "Breaks a goal into a validated plan of steps for the other arms.",
            ArmKind::Coder => "Writes, debugs, refactors, explains and tests code.",
            ArmKind::Executor => {
                "Runs allowlisted programs without a shell inside a bubblewrap sandbox."
            }
            ArmKind::Retriever => {
                "Searches the knowledge base by keyword (BM25), vector or both fused."
            }
            ArmKind::Judge => {
                "Checks output against acceptance criteria: deterministic checks, then an LLM verdict."
            }
            ArmKind::Guardian => "Detects and redacts PII and secrets, flags injection attempts.",
        }
    }

    pub fn capabilities(self) -> &'static [&'static str] {
        match self {
            ArmKind::Planner => &["task_decomposition", "planning"],
            ArmKind::Coder => &[
                "code_generation",
                "debugging",
                "refactoring",
                "explanation",
                "testing",
            ],
            ArmKind::Executor => &["command_execution", "python_execution", "sandboxing"],
            ArmKind::Retriever => &[
                "keyword_search",
                "vector_search",
                "hybrid_search",
                "ingestion",
            ],
            ArmKind::Judge => &["validation", "acceptance_criteria", "quality_scoring"],
            ArmKind::Guardian => &[
                "pii_detection",
                "secret_detection",
                "injection_detection",
                "redaction",
            ],
        }
    }

    /// Relative cost, 1 (cheap, no LLM) to 5.
    pub fn cost_tier(self) -> u8 {
        match self {
            ArmKind::Planner => 3,
            ArmKind::Coder => 4,
            ArmKind::Executor => 2,
            ArmKind::Retriever => 1,
            ArmKind::Judge => 3,
            ArmKind::Guardian => 1,
        }
    }

    /// The service port of SPEC §3.
    pub fn port(self) -> u16 {
        match self {
            ArmKind::Coder => 8102,
            ArmKind::Judge => 8103,
            ArmKind::Executor => 8104,
            ArmKind::Planner => 8105,
            ArmKind::Retriever => 8106,
            ArmKind::Guardian => 8107,
        }
    }
}

impl fmt::Display for ArmKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown arm {0:?}; known arms: planner, coder, executor, retriever, judge, guardian")]
pub struct UnknownArm(pub String);

impl FromStr for ArmKind {
    type Err = UnknownArm;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ArmKind::ALL
            .into_iter()
            .find(|arm| arm.id() == s)
            .ok_or_else(|| UnknownArm(s.chars().take(40).collect()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip() {
        for arm in ArmKind::ALL {
            assert_eq!(arm.id().parse::<ArmKind>(), Ok(arm));
            assert_eq!(
                serde_json::to_string(&arm).unwrap(),
                format!("\"{}\"", arm.id())
            );
        }
        assert!("brain".parse::<ArmKind>().is_err());
    }
}
