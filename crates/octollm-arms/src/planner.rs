//! The planner arm: turns a goal into a plan with an LLM whose output is constrained to the
//! plan schema. For grammar-capable providers the grammar goes further and makes the plan a
//! DAG by construction: step `sK` may only depend on `s1..s(K-1)`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use async_trait::async_trait;
use octollm_core::plan::RawPlan;
use octollm_core::{ArmKind, task};
use octollm_llm::{CompletionRequest, Message, MeteredLlm};
use serde::{Deserialize, Serialize};

use crate::Plan;
use crate::context::{ArmError, ArmOutcome, CallContext};
use crate::contract::{ArmStatus, Handler, Health};

/// `POST /plan`: the goal and what the plan must respect, as in a task submission.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanRequest {
    #[schemars(length(min = task::GOAL_MIN_CHARS, max = task::GOAL_MAX_CHARS), pattern(task::NOT_BLANK_PATTERN))]
    pub goal: String,
    #[serde(default)]
    #[schemars(
        length(max = task::MAX_LIST_ITEMS),
        inner(length(min = 1, max = task::MAX_ITEM_CHARS), pattern(task::NOT_BLANK_PATTERN))
    )]
    pub constraints: Vec<String>,
    #[serde(default)]
    #[schemars(
        length(max = task::MAX_LIST_ITEMS),
        inner(length(min = 1, max = task::MAX_ITEM_CHARS), pattern(task::NOT_BLANK_PATTERN))
    )]
    pub acceptance_criteria: Vec<String>,
    #[serde(default)]
    pub context: BTreeMap<String, serde_json::Value>,
    /// Why the previous plan was refused, when re-asking.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = FEEDBACK_MAX_CHARS))]
    pub feedback: Option<String>,
}

/// The longest feedback a re-asked planner takes.
pub const FEEDBACK_MAX_CHARS: usize = 4000;

impl PlanRequest {
    /// The rules of a task submission's fields, and the feedback's length.
    pub fn validate(&self) -> Result<(), ArmError> {
        let invalid = |e: task::ValidationError| ArmError::InvalidRequest(e.to_string());
        task::check_text(
            "goal",
            &self.goal,
            task::GOAL_MIN_CHARS,
            task::GOAL_MAX_CHARS,
        )
        .map_err(invalid)?;
        task::check_list("constraints", self.constraints.clone()).map_err(invalid)?;
        task::check_list("acceptance_criteria", self.acceptance_criteria.clone())
            .map_err(invalid)?;
        if let Some(feedback) = &self.feedback {
            let n = feedback.chars().count();
            if !(1..=FEEDBACK_MAX_CHARS).contains(&n) {
                return Err(ArmError::InvalidRequest(format!(
                    "feedback must be 1 to {FEEDBACK_MAX_CHARS} characters, got {n}"
                )));
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PlanResponse {
    pub plan_id: String,
    /// As the model wrote them; the orchestrator validates them into a `Plan`.
    pub steps: Vec<octollm_core::plan::RawPlanStep>,
    pub estimated_duration_seconds: u64,
    pub estimated_cost_dollars: f64,
    pub complexity_score: f64,
    pub confidence: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PlannerConfig {
    /// Most steps a generated plan may have (1..=10).
    pub max_steps: usize,
    pub max_tokens: u32,
}

impl Default for PlannerConfig {
    fn default() -> Self {
        Self {
            max_steps: 5,
            max_tokens: 512,
        }
    }
}

pub struct LlmPlanner {
    llm: MeteredLlm,
    config: PlannerConfig,
}

const SYSTEM_PROMPT: &str = "You are the planner of a team of specialist arms. Break the user's goal into a short plan. \
Arms: coder (writes code), executor (runs the code an earlier coder step wrote, in a sandbox), \
retriever (searches the knowledge base), judge (checks a result), guardian (checks text for private data). \
An executor step must depend on the coder step whose code it runs. Answer with JSON only.";

/// One worked example, given as a previous turn: small models follow a shown answer far
/// better than a described one.
const EXAMPLE_GOAL: &str = "Goal: Write a Python script that prints the first 5 square numbers";
const EXAMPLE_PLAN: &str = "{\"steps\":[{\"step_id\":\"s1\",\"arm_id\":\"coder\",\"description\":\"Write a Python script that prints the first 5 square numbers\",\"dependencies\":[]},\
{\"step_id\":\"s2\",\"arm_id\":\"executor\",\"description\":\"Run the script and capture what it prints\",\"dependencies\":[\"s1\"]}]}";

impl LlmPlanner {
    pub fn new(llm: MeteredLlm, mut config: PlannerConfig) -> Self {
        config.max_steps = config.max_steps.clamp(1, octollm_core::plan::MAX_STEPS);
        Self { llm, config }
    }

    fn user_prompt(request: &PlanRequest) -> String {
        let mut prompt = format!("Goal: {}\n", request.goal);
        for c in &request.constraints {
            let _ = writeln!(prompt, "Constraint: {c}");
        }
        for c in &request.acceptance_criteria {
            let _ = writeln!(prompt, "Acceptance criterion: {c}");
        }
        if !request.context.is_empty() {
            let _ = writeln!(
                prompt,
                "Context: {}",
                serde_json::Value::Object(request.context.clone().into_iter().collect())
            );
        }
        if let Some(feedback) = &request.feedback {
            let _ = writeln!(
                prompt,
                "Your previous plan was refused: {feedback}. Write a corrected plan."
            );
        }
        prompt
    }
}

/// JSON schema of a plan, for providers that constrain output by schema.
pub fn plan_schema(max_steps: usize) -> serde_json::Value {
    let arms: Vec<&str> = ArmKind::plan_step_arms().map(ArmKind::id).collect();
    serde_json::json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["steps"],
        "properties": {"steps": {
            "type": "array", "minItems": 1, "maxItems": max_steps,
            "items": {
                "type": "object",
                "additionalProperties": false,
                "required": ["step_id", "arm_id", "description", "dependencies"],
                "properties": {
                    "step_id": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"},
                    "arm_id": {"type": "string", "enum": arms},
                    "description": {"type": "string", "minLength": 1, "maxLength": 2000},
                    "dependencies": {"type": "array", "items": {"type": "string"}},
                    "expected_output": {"type": "string"}
                }
            }
        }}
    })
}

/// GBNF for a plan of 1..=`max_steps` steps that is a DAG by construction: step `sK` may
/// depend only on `s1..s(K-1)`, and an executor step must depend on something (it runs what
/// an earlier step produced), so the first step is never an executor.
pub fn plan_grammar(max_steps: usize) -> String {
    let max_steps = max_steps.max(1);
    let mut g = String::new();
    let mut tail = String::new();
    for k in (2..=max_steps).rev() {
        tail = format!("(\",\" s{k} {tail})?");
    }
    let _ = writeln!(g, "root ::= \"{{\\\"steps\\\":[\" s1 {tail} \"]}}\"");
    let head = |k: usize| format!("\"{{\\\"step_id\\\":\\\"s{k}\\\",\\\"arm_id\\\":\"");
    let body = "\",\\\"description\\\":\" desc \",\\\"dependencies\\\":\"";
    for k in 1..=max_steps {
        if k == 1 {
            let _ = writeln!(g, "s1 ::= {} other {body} \"[]\" \"}}\"", head(1));
            continue;
        }
        let _ = writeln!(
            g,
            "s{k} ::= {} (exec {body} needs{k} | other {body} deps{k}) \"}}\"",
            head(k)
        );
        let choices: Vec<String> = (1..k).map(|j| format!("\"\\\"s{j}\\\"\"")).collect();
        let _ = writeln!(g, "dep{k} ::= {}", choices.join(" | "));
        let _ = writeln!(g, "needs{k} ::= \"[\" dep{k} (\",\" dep{k})* \"]\"");
        let _ = writeln!(g, "deps{k} ::= \"[]\" | needs{k}");
    }
    let others: Vec<String> = ArmKind::plan_step_arms()
        .filter(|a| *a != ArmKind::Executor)
        .map(|a| format!("\"\\\"{}\\\"\"", a.id()))
        .collect();
    let _ = writeln!(g, "exec ::= \"\\\"executor\\\"\"");
    let _ = writeln!(g, "other ::= {}", others.join(" | "));
    let _ = writeln!(g, "desc ::= \"\\\"\" [^\"\\\\\\n]{{3,120}} \"\\\"\"");
    g
}

#[async_trait]
impl Handler<Plan> for LlmPlanner {
    fn status(&self) -> ArmStatus {
        ArmStatus::in_process(Health::Healthy)
    }

    async fn handle(
        &self,
        request: PlanRequest,
        mut ctx: CallContext,
    ) -> Result<ArmOutcome<PlanResponse>, ArmError> {
        request.validate()?;
        let completion_request = CompletionRequest::new(
            "planner.plan",
            vec![
                Message::system(SYSTEM_PROMPT),
                Message::user(EXAMPLE_GOAL),
                Message {
                    role: octollm_llm::Role::Assistant,
                    content: EXAMPLE_PLAN.to_owned(),
                },
                Message::user(Self::user_prompt(&request)),
            ],
            self.config.max_tokens,
        )
        .json(
            plan_schema(self.config.max_steps),
            Some(plan_grammar(self.config.max_steps)),
        );
        let completion = self
            .llm
            .complete(completion_request, &mut ctx.budget)
            .await
            .map_err(|e| ArmError::from_metered(e, ctx.budget.used))?;
        let raw: RawPlan =
            serde_json::from_str(completion.text.trim()).map_err(|e| ArmError::InvalidOutput {
                message: format!("the plan is not valid JSON: {e}"),
                usage: ctx.budget.used,
            })?;
        let steps = raw.steps.len();
        let response = PlanResponse {
            plan_id: format!(
                "plan_{}",
                octollm_core::TaskId::generate()
                    .as_str()
                    .trim_start_matches("task_")
            ),
            estimated_duration_seconds: 10 * steps as u64,
            estimated_cost_dollars: ctx.budget.used.cost_dollars * steps as f64,
            complexity_score: (steps as f64 / octollm_core::plan::MAX_STEPS as f64).min(1.0),
            confidence: if completion.finish_reason == octollm_llm::FinishReason::Stop {
                0.7
            } else {
                0.3
            },
            steps: raw.steps,
        };
        Ok(ArmOutcome::metered(
            response,
            ctx.budget.used,
            Some(completion.model),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grammar_names_every_step_and_dependency_choice() {
        let g = plan_grammar(3);
        assert!(g.contains("s3 ::="));
        assert!(g.contains("dep3 ::= \"\\\"s1\\\"\" | \"\\\"s2\\\"\""));
        assert!(!g.contains("s4 ::="));
        assert!(g.contains("exec ::= \"\\\"executor\\\"\""));
        assert!(!g.contains("planner"));
        // The first step cannot be an executor; later executors need a dependency.
        let s1 = g.lines().find(|l| l.starts_with("s1 ::=")).unwrap();
        assert!(s1.contains(" other ") && !s1.contains("exec"), "{s1}");
        assert!(
            g.lines()
                .any(|l| l.starts_with("s2 ::=") && l.contains("exec") && l.contains("needs2"))
        );
    }

    #[test]
    fn schema_limits_steps_and_arms() {
        let s = plan_schema(4);
        assert_eq!(s["properties"]["steps"]["maxItems"], 4);
        assert_eq!(
            s["properties"]["steps"]["items"]["properties"]["arm_id"]["enum"]
                .as_array()
                .unwrap()
                .len(),
            5
        );
    }
}
