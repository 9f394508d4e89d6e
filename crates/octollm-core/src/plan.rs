//! The plan: a DAG of steps, each sent to one arm.
//!
//! A plan arrives as untrusted JSON (an LLM wrote it) in the shape of [`RawPlan`] and becomes
//! a [`Plan`] only through [`Plan::validate`]: 1..=10 steps, unique ids, known step arms,
//! dependencies that exist, no cycles, input mappings that point at dependencies.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use crate::arm::ArmKind;
use crate::ids::StepId;
use crate::token::{ExecutorGrant, PYTHON_PROGRAM};

/// `run \`ls -la\`` → the argv in backticks, split on whitespace (never a shell): the only
/// way a plan step names a command.
pub fn backticked_command(description: &str) -> Option<Vec<String>> {
    let start = description.find('`')?;
    let rest = &description[start + 1..];
    let end = rest.find('`')?;
    let argv: Vec<String> = rest[..end].split_whitespace().map(str::to_owned).collect();
    (!argv.is_empty()).then_some(argv)
}

pub const MAX_STEPS: usize = 10;
pub const MAX_DESCRIPTION_CHARS: usize = 2000;

/// A plan as a model wrote it, before any check.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RawPlan {
    #[serde(default)]
    pub steps: Vec<RawPlanStep>,
}

/// One step as the model wrote it: `input_mapping` maps an input name to
/// `"<dependency>.output"`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RawPlanStep {
    #[serde(default)]
    pub step_id: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub arm_id: String,
    #[serde(default)]
    pub dependencies: Vec<String>,
    #[serde(default)]
    pub input_mapping: BTreeMap<String, String>,
    #[serde(default)]
    pub expected_output: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanStep {
    pub step_id: StepId,
    pub description: String,
    pub arm_id: ArmKind,
    pub dependencies: Vec<StepId>,
    /// `name → dependency`: which dependency's output feeds which input (written
    /// `"name": "step_id.output"` on the wire).
    #[serde(with = "output_refs")]
    pub input_mapping: BTreeMap<String, StepId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_output: Option<String>,
}

/// A validated plan. Steps are stored in a topological order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub steps: Vec<PlanStep>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("a plan needs 1 to {MAX_STEPS} steps, got {0}")]
    StepCount(usize),
    #[error("step {index}: invalid step id: {reason}")]
    BadStepId { index: usize, reason: String },
    #[error("step id {0} is used twice")]
    DuplicateStep(String),
    #[error(
        "step {step}: unknown arm {arm:?}; steps may use {}", ArmKind::plan_step_arms().map(ArmKind::id).collect::<Vec<_>>().join(", ")
    )]
    UnknownArm { step: String, arm: String },
    #[error("step {step}: description must be 1 to {MAX_DESCRIPTION_CHARS} characters")]
    BadDescription { step: String },
    #[error("step {step} depends on {missing}, which is not in the plan")]
    MissingDependency { step: String, missing: String },
    #[error("step {0} depends on itself")]
    SelfDependency(String),
    #[error("the plan has a cycle through {0}")]
    Cycle(String),
    #[error(
        "step {0} (executor) has nothing to run: it must depend on a coder step, or name a command in backticks"
    )]
    NothingToExecute(String),
    #[error("step {step}: input {input} maps from {source_ref:?}; expected `<dependency>.output`")]
    BadInputMapping {
        step: String,
        input: String,
        source_ref: String,
    },
}

impl Plan {
    pub fn validate(raw: RawPlan) -> Result<Plan, PlanError> {
        if raw.steps.is_empty() || raw.steps.len() > MAX_STEPS {
            return Err(PlanError::StepCount(raw.steps.len()));
        }
        let mut steps = Vec::with_capacity(raw.steps.len());
        let mut seen = BTreeSet::new();
        for (index, raw_step) in raw.steps.into_iter().enumerate() {
            let step_id =
                StepId::parse(raw_step.step_id.trim()).map_err(|e| PlanError::BadStepId {
                    index,
                    reason: e.reason.to_owned(),
                })?;
            if !seen.insert(step_id.clone()) {
                return Err(PlanError::DuplicateStep(step_id.to_string()));
            }
            let arm_id = raw_step
                .arm_id
                .trim()
                .to_ascii_lowercase()
                .parse::<ArmKind>()
                .ok()
                .filter(|arm| arm.is_plan_step())
                .ok_or_else(|| PlanError::UnknownArm {
                    step: step_id.to_string(),
                    arm: raw_step.arm_id.chars().take(40).collect(),
                })?;
            let description = raw_step.description.trim().to_owned();
            let chars = description.chars().count();
            if chars == 0 || chars > MAX_DESCRIPTION_CHARS {
                return Err(PlanError::BadDescription {
                    step: step_id.to_string(),
                });
            }
            let mut dependencies = Vec::new();
            for dep in &raw_step.dependencies {
                let dep = StepId::parse(dep.trim()).map_err(|_| PlanError::MissingDependency {
                    step: step_id.to_string(),
                    missing: dep.chars().take(40).collect(),
                })?;
                if dep == step_id {
                    return Err(PlanError::SelfDependency(step_id.to_string()));
                }
                if !dependencies.contains(&dep) {
                    dependencies.push(dep);
                }
            }
            steps.push((step_id, description, arm_id, dependencies, raw_step));
        }
        let ids: BTreeSet<&StepId> = steps.iter().map(|s| &s.0).collect();
        for (step_id, _, _, deps, _) in &steps {
            if let Some(missing) = deps.iter().find(|d| !ids.contains(d)) {
                return Err(PlanError::MissingDependency {
                    step: step_id.to_string(),
                    missing: missing.to_string(),
                });
            }
        }
        let mut plan_steps = Vec::with_capacity(steps.len());
        for (step_id, description, arm_id, dependencies, raw_step) in steps {
            let mut input_mapping = BTreeMap::new();
            for (input, source) in raw_step.input_mapping {
                let source_step = source
                    .strip_suffix(".output")
                    .and_then(|s| StepId::parse(s).ok());
                match source_step {
                    Some(s) if dependencies.contains(&s) => {
                        input_mapping.insert(input, s);
                    }
                    _ => {
                        return Err(PlanError::BadInputMapping {
                            step: step_id.to_string(),
                            input,
                            source_ref: source.chars().take(80).collect(),
                        });
                    }
                }
            }
            // Every dependency feeds its step, named after itself, unless mapped explicitly.
            for dep in &dependencies {
                if !input_mapping.values().any(|v| v == dep) {
                    input_mapping.insert(dep.to_string(), dep.clone());
                }
            }
            plan_steps.push(PlanStep {
                step_id,
                description,
                arm_id,
                dependencies,
                input_mapping,
                expected_output: raw_step.expected_output.filter(|s| !s.trim().is_empty()),
            });
        }
        // An executor runs code a coder wrote, or a command the step names; nothing else.
        for step in &plan_steps {
            let names_command = step.description.matches('`').count() >= 2;
            let has_code = step.dependencies.iter().any(|d| {
                plan_steps
                    .iter()
                    .any(|s| &s.step_id == d && s.arm_id == ArmKind::Coder)
            });
            if step.arm_id == ArmKind::Executor && !names_command && !has_code {
                return Err(PlanError::NothingToExecute(step.step_id.to_string()));
            }
        }
        let ordered = topological_order(plan_steps)?;
        Ok(Plan { steps: ordered })
    }

    pub fn step(&self, id: &StepId) -> Option<&PlanStep> {
        self.steps.iter().find(|s| &s.step_id == id)
    }

    /// Steps not yet done whose dependencies are all done.
    pub fn ready<'a>(
        &'a self,
        done: &BTreeSet<StepId>,
        running: &BTreeSet<StepId>,
    ) -> Vec<&'a PlanStep> {
        self.steps
            .iter()
            .filter(|s| !done.contains(&s.step_id) && !running.contains(&s.step_id))
            .filter(|s| s.dependencies.iter().all(|d| done.contains(d)))
            .collect()
    }

    /// Steps nothing depends on: together, they hold the plan's result.
    pub fn sinks(&self) -> Vec<&PlanStep> {
        let depended: BTreeSet<&StepId> = self
            .steps
            .iter()
            .flat_map(|s| s.dependencies.iter())
            .collect();
        self.steps
            .iter()
            .filter(|s| !depended.contains(&s.step_id))
            .collect()
    }

    pub fn arms(&self) -> BTreeSet<ArmKind> {
        self.steps.iter().map(|s| s.arm_id).collect()
    }

    /// What the executor may run for `step`, fixed by the plan before any step runs and
    /// before any untrusted content is read: the program a `command` in backticks in the
    /// step's description names, and `python3` when a coder step feeds it code. Never the
    /// network: that takes a policy grant. Nothing a model writes later can widen it.
    pub fn executor_grant(&self, step: &PlanStep) -> ExecutorGrant {
        let mut programs = Vec::new();
        if step.arm_id != ArmKind::Executor {
            return ExecutorGrant::default();
        }
        if let Some(program) =
            backticked_command(&step.description).and_then(|a| a.into_iter().next())
        {
            programs.push(program);
        }
        let fed_code = step
            .dependencies
            .iter()
            .filter_map(|d| self.step(d))
            .any(|d| d.arm_id == ArmKind::Coder);
        if fed_code && !programs.iter().any(|p| p == PYTHON_PROGRAM) {
            programs.push(PYTHON_PROGRAM.to_owned());
        }
        ExecutorGrant {
            programs,
            network: false,
        }
    }
}

/// Kahn's algorithm, stable with respect to the original order.
fn topological_order(steps: Vec<PlanStep>) -> Result<Vec<PlanStep>, PlanError> {
    let position: HashMap<StepId, usize> = steps
        .iter()
        .enumerate()
        .map(|(i, s)| (s.step_id.clone(), i))
        .collect();
    let mut remaining_deps: Vec<usize> = steps.iter().map(|s| s.dependencies.len()).collect();
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); steps.len()];
    for (i, s) in steps.iter().enumerate() {
        for d in &s.dependencies {
            if let Some(&j) = position.get(d) {
                dependents[j].push(i);
            }
        }
    }
    let mut ready: BTreeSet<usize> = (0..steps.len())
        .filter(|&i| remaining_deps[i] == 0)
        .collect();
    let mut order = Vec::with_capacity(steps.len());
    while let Some(i) = ready.pop_first() {
        order.push(i);
        for &k in &dependents[i] {
            remaining_deps[k] -= 1;
            if remaining_deps[k] == 0 {
                ready.insert(k);
            }
        }
    }
    if order.len() != steps.len() {
        let stuck = (0..steps.len()).find(|i| !order.contains(i)).unwrap_or(0);
        return Err(PlanError::Cycle(steps[stuck].step_id.to_string()));
    }
    let mut slots: Vec<Option<PlanStep>> = steps.into_iter().map(Some).collect();
    Ok(order.into_iter().filter_map(|i| slots[i].take()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn step(id: &str, arm: &str, deps: &[&str]) -> RawPlanStep {
        RawPlanStep {
            step_id: id.into(),
            description: format!("do {id}"),
            arm_id: arm.into(),
            dependencies: deps.iter().map(|d| d.to_string()).collect(),
            ..Default::default()
        }
    }

    fn raw(steps: Vec<RawPlanStep>) -> RawPlan {
        RawPlan { steps }
    }

    #[test]
    fn valid_plan_is_ordered_and_mapped() {
        let plan = Plan::validate(raw(vec![
            step("run", "executor", &["code"]),
            step("code", "coder", &[]),
        ]))
        .unwrap();
        assert_eq!(plan.steps[0].step_id.as_str(), "code");
        assert_eq!(
            plan.steps[1].input_mapping.get("code").map(StepId::as_str),
            Some("code")
        );
        assert_eq!(plan.sinks().len(), 1);
    }

    #[test]
    fn executor_grants_follow_from_the_plan_alone() {
        let mut listing = step("ls", "executor", &[]);
        listing.description = "list the files with `ls -la /workspace`".into();
        let plan = Plan::validate(raw(vec![
            step("code", "coder", &[]),
            step("run", "executor", &["code"]),
            listing,
            step("check", "judge", &["run"]),
        ]))
        .unwrap();
        let grant = |id: &str| plan.executor_grant(plan.step(&StepId::parse(id).unwrap()).unwrap());
        assert_eq!(grant("run").programs, ["python3"]);
        assert_eq!(grant("ls").programs, ["ls"]);
        assert!(grant("check").programs.is_empty());
        assert!(!grant("run").network && !grant("ls").network);
        // What a request asks for must lie inside its step's grant.
        let curl = ExecutorGrant {
            programs: vec!["curl".into()],
            network: true,
        };
        assert_eq!(
            grant("run").covers(&curl),
            Err(crate::token::GrantDenied::Program("curl".into()))
        );
        let python_online = ExecutorGrant {
            programs: vec!["python3".into()],
            network: true,
        };
        assert_eq!(
            grant("run").covers(&python_online),
            Err(crate::token::GrantDenied::Network)
        );
        assert_eq!(
            grant("run").covers(&ExecutorGrant {
                programs: vec!["python3".into()],
                network: false
            }),
            Ok(())
        );
    }

    #[test]
    fn refusals() {
        assert_eq!(Plan::validate(raw(vec![])), Err(PlanError::StepCount(0)));
        let eleven = (0..11)
            .map(|i| step(&format!("s{i}"), "coder", &[]))
            .collect();
        assert_eq!(Plan::validate(raw(eleven)), Err(PlanError::StepCount(11)));
        assert!(matches!(
            Plan::validate(raw(vec![step("a", "brain", &[])])),
            Err(PlanError::UnknownArm { .. })
        ));
        assert!(matches!(
            Plan::validate(raw(vec![step("a", "planner", &[])])),
            Err(PlanError::UnknownArm { .. })
        ));
        assert!(matches!(
            Plan::validate(raw(vec![step("a", "coder", &["zz"])])),
            Err(PlanError::MissingDependency { .. })
        ));
        assert!(matches!(
            Plan::validate(raw(vec![step("a", "coder", &["a"])])),
            Err(PlanError::SelfDependency(_))
        ));
        assert!(matches!(
            Plan::validate(raw(vec![
                step("a", "coder", &["b"]),
                step("b", "coder", &["a"])
            ])),
            Err(PlanError::Cycle(_))
        ));
        assert!(matches!(
            Plan::validate(raw(vec![step("a", "coder", &[]), step("a", "coder", &[])])),
            Err(PlanError::DuplicateStep(_))
        ));
        assert_eq!(
            Plan::validate(raw(vec![step("a", "executor", &[])])),
            Err(PlanError::NothingToExecute("a".into()))
        );
        let mut named = step("a", "executor", &[]);
        named.description = "run `ls -l`".into();
        assert!(Plan::validate(raw(vec![named])).is_ok());
        let mut bad_map = step("b", "coder", &["a"]);
        bad_map.input_mapping.insert("x".into(), "c.output".into());
        assert!(matches!(
            Plan::validate(raw(vec![step("a", "coder", &[]), bad_map])),
            Err(PlanError::BadInputMapping { .. })
        ));
    }

    #[test]
    fn input_mappings_name_their_dependency_on_the_wire() {
        let mut run = step("run", "executor", &["code"]);
        run.input_mapping
            .insert("script".into(), "code.output".into());
        let plan = Plan::validate(raw(vec![step("code", "coder", &[]), run])).unwrap();
        assert_eq!(plan.steps[1].input_mapping["script"].as_str(), "code");
        assert_eq!(
            plan.steps[1].input_mapping.len(),
            1,
            "an explicit mapping replaces the default one"
        );
        let json = serde_json::to_value(&plan).unwrap();
        assert_eq!(json["steps"][1]["input_mapping"]["script"], "code.output");
        assert_eq!(serde_json::from_value::<Plan>(json).unwrap(), plan);
    }

    #[test]
    fn dotted_and_reserved_step_ids_are_refused() {
        for id in ["a.b", "plan", "replan"] {
            assert!(
                matches!(
                    Plan::validate(raw(vec![step(id, "coder", &[])])),
                    Err(PlanError::BadStepId { .. })
                ),
                "{id}"
            );
        }
    }

    proptest! {
        /// Any DAG whose edges point backwards validates, and the order respects every edge.
        #[test]
        fn dags_validate_in_dependency_order(
            n in 1usize..=10,
            edges in proptest::collection::vec((0usize..10, 0usize..10), 0..30),
            shuffle_seed in 0usize..1000,
        ) {
            let mut steps: Vec<RawPlanStep> = (0..n).map(|i| step(&format!("s{i}"), "coder", &[])).collect();
            for (a, b) in edges {
                let (a, b) = (a % n, b % n);
                if a > b {
                    let dep = format!("s{b}");
                    if !steps[a].dependencies.contains(&dep) {
                        steps[a].dependencies.push(dep);
                    }
                }
            }
            steps.rotate_left(shuffle_seed % n);
            let plan = Plan::validate(raw(steps)).unwrap();
            let mut done = BTreeSet::new();
            for s in &plan.steps {
                for d in &s.dependencies {
                    prop_assert!(done.contains(d));
                }
                done.insert(s.step_id.clone());
            }
            prop_assert!(!plan.sinks().is_empty());
        }

        /// Adding a back edge to a chain always makes a cycle, which is always refused.
        #[test]
        fn cycles_are_refused(n in 2usize..=10, from in 0usize..10) {
            let mut steps: Vec<RawPlanStep> = (0..n)
                .map(|i| if i == 0 { step("s0", "coder", &[]) } else { step(&format!("s{i}"), "coder", &[&format!("s{}", i - 1)]) })
                .collect();
            let last = format!("s{}", n - 1);
            steps[from % (n - 1)].dependencies.push(last);
            prop_assert!(Plan::validate(raw(steps)).is_err());
        }
    }
}

/// `{name: StepId}` as `{name: "step_id.output"}`.
mod output_refs {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serializer};

    use crate::ids::StepId;

    const SUFFIX: &str = ".output";

    pub fn serialize<S: Serializer>(
        map: &BTreeMap<String, StepId>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_map(
            map.iter()
                .map(|(name, step)| (name, format!("{step}{SUFFIX}"))),
        )
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<String, StepId>, D::Error> {
        let raw = BTreeMap::<String, String>::deserialize(d)?;
        raw.into_iter()
            .map(|(name, source)| {
                let step = source.strip_suffix(SUFFIX).ok_or_else(|| {
                    serde::de::Error::custom(format!("{source:?} is not `<step>.output`"))
                })?;
                let step = StepId::parse(step).map_err(serde::de::Error::custom)?;
                Ok((name, step))
            })
            .collect()
    }
}
