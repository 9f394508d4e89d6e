//! The specialist arms.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The arm table: one row per arm. Everything that names arms (parsing, the capabilities
/// listing, the service ports, which arms a plan step may use, which services load a model)
/// reads it. An arm's operations (routes and wire types) are listed beside its logic in
/// `octollm-arms`.
macro_rules! arm_table {
    ($(
        $(#[$doc:meta])*
        $variant:ident {
            id: $id:literal,
            name: $name:literal,
            port: $port:literal,
            cost_tier: $tier:literal,
            plan_step: $step:literal,
            model: $model:literal,
            description: $description:literal,
            capabilities: [$($capability:literal),* $(,)?] $(,)?
        }
    ),* $(,)?) => {
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
            schemars::JsonSchema,
        )]
        #[serde(rename_all = "lowercase")]
        pub enum ArmKind {
            $($(#[$doc])* $variant,)*
        }

        impl ArmKind {
            pub const ALL: &'static [ArmKind] = &[$(ArmKind::$variant),*];

            pub fn id(self) -> &'static str {
                match self { $(ArmKind::$variant => $id,)* }
            }

            pub fn display_name(self) -> &'static str {
                match self { $(ArmKind::$variant => $name,)* }
            }

            pub fn description(self) -> &'static str {
                match self { $(ArmKind::$variant => $description,)* }
            }

            pub fn capabilities(self) -> &'static [&'static str] {
                match self { $(ArmKind::$variant => &[$($capability),*],)* }
            }

            /// Relative cost, 1 (cheap, no LLM) to 5.
            pub fn cost_tier(self) -> u8 {
                match self { $(ArmKind::$variant => $tier,)* }
            }

            /// The service port of SPEC §3 (`octollm serve arm NAME` binds it by default).
            pub fn port(self) -> u16 {
                match self { $(ArmKind::$variant => $port,)* }
            }

            /// Whether the arm calls a language model (a service of an arm that does not
            /// never loads one).
            pub fn uses_model(self) -> bool {
                match self { $(ArmKind::$variant => $model,)* }
            }

            /// Whether a plan step may name this arm (the planner plans; it is not a step of
            /// its own plan).
            pub fn is_plan_step(self) -> bool {
                match self { $(ArmKind::$variant => $step,)* }
            }
        }
    };
}

arm_table! {
    Planner {
        id: "planner",
        name: "Planner Arm",
        port: 8105,
        cost_tier: 3,
        plan_step: false,
        model: true,
        description: "Breaks a goal into a validated plan of steps for the other arms.",
        capabilities: ["task_decomposition", "planning"],
    },
    Coder {
        id: "coder",
        name: "Coder Arm",
        port: 8102,
        cost_tier: 4,
        plan_step: true,
        model: true,
        description: "Writes, debugs, refactors, explains and tests code.",
        capabilities: ["code_generation", "debugging", "refactoring", "explanation", "testing"],
    },
    Executor {
        id: "executor",
        name: "Executor Arm",
        port: 8104,
        cost_tier: 2,
        plan_step: true,
        model: false,
        description: "Runs allowlisted programs without a shell inside a bubblewrap sandbox.",
        capabilities: ["command_execution", "python_execution", "sandboxing"],
    },
    Retriever {
        id: "retriever",
        name: "Retriever Arm",
        port: 8106,
        cost_tier: 1,
        plan_step: true,
        model: false,
        description: "Searches the knowledge base by keyword (BM25), vector or both fused.",
        capabilities: ["keyword_search", "vector_search", "hybrid_search", "ingestion"],
    },
    Judge {
        id: "judge",
        name: "Judge Arm",
        port: 8103,
        cost_tier: 3,
        plan_step: true,
        model: true,
        description: "Checks output against acceptance criteria: deterministic checks, then an LLM verdict.",
        capabilities: ["validation", "acceptance_criteria", "quality_scoring"],
    },
    Guardian {
        id: "guardian",
        name: "Safety Guardian Arm",
        port: 8107,
        cost_tier: 1,
        plan_step: true,
        model: false,
        description: "Detects and redacts PII and secrets, flags injection attempts.",
        capabilities: ["pii_detection", "secret_detection", "injection_detection", "redaction"],
    },
}

impl ArmKind {
    /// Arms a plan step may name.
    pub fn plan_step_arms() -> impl Iterator<Item = ArmKind> {
        Self::ALL.iter().copied().filter(|a| a.is_plan_step())
    }
}

impl fmt::Display for ArmKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown arm {0:?}; known arms: {known}", known = ArmKind::ALL.iter().map(|a| a.id()).collect::<Vec<_>>().join(", "))]
pub struct UnknownArm(pub String);

impl FromStr for ArmKind {
    type Err = UnknownArm;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ArmKind::ALL
            .iter()
            .copied()
            .find(|arm| arm.id() == s)
            .ok_or_else(|| UnknownArm(s.chars().take(40).collect()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip() {
        for &arm in ArmKind::ALL {
            assert_eq!(arm.id().parse::<ArmKind>(), Ok(arm));
            assert_eq!(
                serde_json::to_string(&arm).unwrap(),
                format!("\"{}\"", arm.id())
            );
        }
        assert!("brain".parse::<ArmKind>().is_err());
    }
}
