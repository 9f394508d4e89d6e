//! Typed configuration, loaded once: defaults < `octollm.toml` (or `OCTOLLM_CONFIG`) <
//! environment. The environment names of the deployment manifests work as written
//! (`DATABASE_URL`, `LOG_LEVEL`, …); everything else is `OCTOLLM_*`, and any field can be set
//! as `OCTOLLM__SECTION__FIELD` (double underscores).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use octollm_arms::executor::ExecutorConfig;
use octollm_arms::planner::PlannerConfig;
use octollm_core::Secret;
use octollm_core::budget::Price;
use octollm_orchestrator::OrchestratorConfig;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub environment: String,
    pub log: LogConfig,
    pub server: ServerConfig,
    pub storage: StorageConfig,
    pub llm: LlmConfig,
    pub embedding: EmbeddingConfig,
    pub orchestrator: OrchestratorConfig,
    pub planner: PlannerConfig,
    pub coder: CoderConfig,
    pub executor: ExecutorConfig,
    pub reflex: ReflexConfig,
    pub arms: ArmsConfig,
    pub policy: PolicyConfig,
}

/// The guardian policy (`crates/octollm-arms/policy/default.yaml` is the built-in one): what
/// the orchestrator does with untrusted content and what the guardian's `policy_violation`
/// check reports.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// A policy YAML file (env `OCTOLLM_POLICY_PATH`); empty: the built-in policy.
    pub path: String,
    /// How often the file is checked for changes; a valid new version takes effect without
    /// a restart.
    pub reload_seconds: u64,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            path: String::new(),
            reload_seconds: 2,
        }
    }
}

/// Where the arms run: in this process unless an arm has endpoints.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ArmsConfig {
    /// By arm id: comma-separated base URLs of the arm's instances (`http://coder-arm:8102`,
    /// env `OCTOLLM_ARM_<ARM>_URLS`); none: the arm runs in this process.
    pub endpoints: BTreeMap<String, String>,
    /// By arm id: what a direct call to the arm's service may spend, when it does not carry
    /// the orchestrator's budget headers (which may lower it, never raise it).
    pub direct_budget: BTreeMap<String, octollm_core::Budget>,
    /// Longest wait for one call to one instance (less when the task's deadline is nearer).
    pub timeout_seconds: u64,
    /// Failures in a row that open an instance's circuit breaker, and for how long.
    pub breaker_failures: u32,
    pub breaker_cool_down_seconds: u64,
    /// Shared by the orchestrators and the arm services: with it, the orchestrator accepts
    /// self-registrations (`/registry`) and every arm it does not run itself comes from
    /// there (plus the configured instances); without it the registry is off.
    pub registry_token: Secret,
    /// On an arm service (`ARM_REGISTRY_URL`): where to register, e.g.
    /// `http://orchestrator:8000/registry`.
    pub registry_url: String,
    /// On an arm service: the base URL the orchestrators reach it at; empty: derived from
    /// the bind address (`http://<hostname>:<port>` when bound to every interface).
    pub advertise_url: String,
    /// How long a registration lives unless renewed (arms renew every third of it).
    pub registry_ttl_seconds: u64,
    /// How often each orchestrator re-reads the registrations and polls every instance's
    /// `/ready`.
    pub health_poll_seconds: u64,
    /// On the orchestrator: the Ed25519 seed (`octollm tokens keygen`) it signs a capability
    /// token for every arm call with; empty: calls carry none.
    pub token_signing_key: Secret,
    /// On an arm service: the public keys (comma-separated; two while rotating) whose tokens
    /// it accepts; empty: it takes calls without a token.
    pub token_public_keys: String,
    /// The deployment tokens are for: an arm refuses a token for another audience.
    pub token_audience: String,
    pub token_ttl_seconds: u64,
}

impl Default for ArmsConfig {
    fn default() -> Self {
        Self {
            endpoints: BTreeMap::new(),
            direct_budget: octollm_core::ArmKind::ALL
                .iter()
                .map(|arm| (arm.id().to_owned(), default_direct_budget()))
                .collect(),
            timeout_seconds: 120,
            breaker_failures: 3,
            breaker_cool_down_seconds: 10,
            registry_token: Secret::default(),
            registry_url: String::new(),
            advertise_url: String::new(),
            registry_ttl_seconds: 30,
            health_poll_seconds: 5,
            token_signing_key: Secret::default(),
            token_public_keys: String::new(),
            token_audience: "octollm".into(),
            token_ttl_seconds: octollm_core::token::DEFAULT_TTL_SECONDS,
        }
    }
}

/// A direct call's budget unless configured: room for one model call of any arm, and the
/// executor's longest command.
fn default_direct_budget() -> octollm_core::Budget {
    octollm_core::Budget {
        max_tokens: 8_000,
        max_time_seconds: 300,
        max_cost_dollars: 0.5,
    }
}

impl ArmsConfig {
    /// What a direct call to `arm`'s service may spend.
    pub fn direct_budget(&self, arm: octollm_core::ArmKind) -> octollm_core::Budget {
        self.direct_budget
            .get(arm.id())
            .cloned()
            .unwrap_or_else(default_direct_budget)
    }

    /// The signer of capability tokens, when a signing key is configured.
    pub fn token_signer(
        &self,
    ) -> Result<Option<std::sync::Arc<octollm_core::token::TokenSigner>>, ConfigError> {
        if self.token_signing_key.is_empty() {
            return Ok(None);
        }
        octollm_core::token::TokenSigner::from_seed(
            &self.token_signing_key,
            &self.token_audience,
            self.token_ttl_seconds,
        )
        .map(|s| Some(std::sync::Arc::new(s)))
        .map_err(|e| ConfigError::Invalid(format!("arms.token_signing_key: {e}")))
    }

    /// The verifier of capability tokens, when public keys are configured.
    pub fn token_verifier(
        &self,
    ) -> Result<Option<octollm_core::token::TokenVerifier>, ConfigError> {
        if self.token_public_keys.trim().is_empty() {
            return Ok(None);
        }
        octollm_core::token::TokenVerifier::from_public_keys(
            &self.token_public_keys,
            &self.token_audience,
        )
        .map(Some)
        .map_err(|e| ConfigError::Invalid(format!("arms.token_public_keys: {e}")))
    }

    /// Whether this orchestrator takes arm instances from the registry.
    pub fn registry_enabled(&self) -> bool {
        !self.registry_token.expose().is_empty()
    }

    /// The configured instances of `arm`.
    pub fn urls(&self, arm: octollm_core::ArmKind) -> Vec<String> {
        let raw = self.endpoints.get(arm.id()).map_or("", String::as_str);
        raw.split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(str::to_owned)
            .collect()
    }
}

/// The reflex service (`octollm serve reflex`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReflexConfig {
    pub bind: SocketAddr,
    /// Where `/tasks…` is forwarded after screening.
    pub orchestrator_url: Option<String>,
    pub cache_max_mb: u64,
    pub cache_ttl_seconds: u64,
    pub rate_limit: octollm_http::reflex::RateLimitSettings,
    /// `redis://…`: cache and rate limits shared by every replica; empty keeps them in process.
    pub redis_url: Secret,
    /// Comma-separated addresses and CIDR ranges of the proxies in front (the ingress
    /// controller's pods): only their `X-Forwarded-For` names the client for the per-client
    /// rate limit. Empty: the socket's peer is the client.
    pub trusted_proxies: String,
    /// The learned second stage of injection detection (MiniLM token features and the
    /// committed weights) after the rules (docs/reflex.md). Off by default until it passes
    /// its gate on the external corpus (it blocks 1.2 % of the benign texts there, 1 % is the
    /// budget); needs the MiniLM model (`octollm model pull`), and a server configured with it
    /// refuses to start without it.
    pub classifier: bool,
}

impl ReflexConfig {
    pub fn trusted_proxies(
        &self,
    ) -> Result<octollm_http::reflex::client::TrustedProxies, ConfigError> {
        octollm_http::reflex::client::TrustedProxies::parse(&self.trusted_proxies).map_err(|e| {
            ConfigError::Invalid(format!(
                "reflex.trusted_proxies (OCTOLLM_TRUSTED_PROXIES): {e}"
            ))
        })
    }
}

impl Default for ReflexConfig {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            orchestrator_url: None,
            cache_max_mb: 64,
            cache_ttl_seconds: 3600,
            rate_limit: Default::default(),
            redis_url: Secret::default(),
            trusted_proxies: String::new(),
            classifier: false,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            environment: "development".into(),
            log: LogConfig::default(),
            server: ServerConfig::default(),
            storage: StorageConfig::default(),
            llm: LlmConfig::default(),
            embedding: EmbeddingConfig::default(),
            orchestrator: OrchestratorConfig::default(),
            planner: PlannerConfig::default(),
            coder: CoderConfig::default(),
            executor: ExecutorConfig::default(),
            reflex: ReflexConfig::default(),
            arms: ArmsConfig::default(),
            policy: PolicyConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `RUST_LOG` syntax; `LOG_LEVEL` sets a plain level.
    pub level: String,
    pub format: LogFormat,
    /// OTLP/HTTP collector base URL (`http://otel-collector:4318`); spans go to `/v1/traces`
    /// under it. Empty (the default): no trace leaves the process.
    pub otlp_endpoint: String,
    /// The service name traces carry; empty: `octollm-<component>`.
    pub service_name: String,
    /// Debugging only: log every prompt and completion at debug level (still through the
    /// redacting writer). Off: no prompt or model text is ever logged.
    pub prompts: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::Pretty,
            otlp_endpoint: String::new(),
            service_name: String::new(),
            prompts: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Json,
    Pretty,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub bind: SocketAddr,
    pub body_limit_bytes: usize,
    /// In-flight requests and steps get this long after SIGTERM (below Kubernetes' 30 s).
    pub shutdown_grace_seconds: u64,
    /// API keys are required on a non-loopback bind; this serves requests without one there
    /// anyway (behind a gateway that authenticates). A presented key is checked either way.
    pub allow_unauthenticated: bool,
    /// Require API keys on a loopback bind too (they are optional there by default: the
    /// laptop's own user needs none).
    pub require_api_keys: bool,
    /// A second listener serving only `/metrics` (the orchestrator's 9090 in a deployment);
    /// off when unset. `/metrics` is on the API port as well.
    pub metrics_bind: Option<SocketAddr>,
    /// Runtime threads: 0 one per core, 1 a single-threaded runtime (the reflex layer's
    /// cheapest per request; scale it by replicas), n > 1 that many.
    pub worker_threads: u32,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 8000)),
            body_limit_bytes: 1024 * 1024,
            shutdown_grace_seconds: 25,
            allow_unauthenticated: false,
            require_api_keys: false,
            metrics_bind: None,
            worker_threads: 0,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Where the embedded database lives.
    pub data_dir: PathBuf,
    /// `sqlite://PATH` or `postgres://USER:PASSWORD@HOST:PORT/DB`; empty means
    /// `<data_dir>/octollm.db`.
    pub database_url: Secret,
    /// Finished tasks older than this are pruned.
    pub retention_days: u32,
    /// PostgreSQL connections per process.
    pub pool_size: u32,
    /// Apply PostgreSQL migrations at start (else only `octollm migrate` does).
    pub migrate_on_start: bool,
    /// Qdrant's gRPC URL (`http://qdrant:6334`) for the knowledge base's vectors when the
    /// knowledge base is on PostgreSQL; empty keeps them in PostgreSQL.
    pub qdrant_url: String,
    pub qdrant_api_key: Secret,
}

/// Where tasks are stored, from `storage.database_url`.
#[derive(Debug, Clone, PartialEq)]
pub enum Database {
    Sqlite(PathBuf),
    Postgres(String),
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            data_dir: default_data_dir(),
            database_url: Secret::default(),
            retention_days: 30,
            pool_size: 10,
            migrate_on_start: true,
            qdrant_url: String::new(),
            qdrant_api_key: Secret::default(),
        }
    }
}

fn default_data_dir() -> PathBuf {
    if let Some(xdg) = std::env::var_os("XDG_DATA_HOME") {
        return PathBuf::from(xdg).join("octollm");
    }
    if let Some(home) = std::env::var_os("HOME") {
        return PathBuf::from(home).join(".local/share/octollm");
    }
    PathBuf::from(".octollm")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// llama.cpp in process (the default model unless `model_path` says otherwise).
    Local,
    /// Any OpenAI-compatible Chat Completions endpoint (Azure OpenAI with `api_version`).
    Openai,
    /// Anthropic's Messages API.
    Anthropic,
    /// Replays `script_path`; tests and demos only.
    Scripted,
}

/// What one arm's model differs in from `[llm]` (`[llm.arms.coder]`, or
/// `OCTOLLM_LLM_<ARM>_{PROVIDER,MODEL,BASE_URL,API_KEY,API_VERSION}`): a stronger model for
/// the planner, a cheaper one for the judge, another provider for the coder.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ArmLlm {
    pub provider: Option<ProviderKind>,
    pub model: Option<String>,
    pub base_url: Option<String>,
    pub api_key: Option<Secret>,
    pub api_version: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LlmConfig {
    pub provider: ProviderKind,
    /// Where `octollm model pull` puts models.
    pub model_dir: PathBuf,
    /// A GGUF file for the local provider; empty means the default model in `model_dir`.
    pub model_path: Option<PathBuf>,
    pub threads: u32,
    pub context_tokens: u32,
    pub base_url: String,
    pub model: String,
    pub api_key: Secret,
    /// Azure OpenAI's `api-version` (the key then goes in the `api-key` header).
    pub api_version: Option<String>,
    pub timeout_seconds: u64,
    pub script_path: Option<PathBuf>,
    /// Appends one line per scripted call (for tests that count calls across restarts).
    pub script_log: Option<PathBuf>,
    /// Dollars per 1,000 tokens by model name (a prefix: `gpt-4o` prices
    /// `gpt-4o-2024-08-06`); overrides and extends the shipped list prices
    /// (`octollm_llm::prices`). A model in neither costs 0, and startup says so.
    pub prices: BTreeMap<String, Price>,
    /// By arm id (planner, coder, judge): that arm's provider and model.
    pub arms: BTreeMap<String, ArmLlm>,
}

impl Default for LlmConfig {
    fn default() -> Self {
        Self {
            provider: ProviderKind::Local,
            model_dir: octollm_llm::models::default_model_dir(),
            model_path: None,
            threads: 1,
            context_tokens: 4096,
            base_url: "https://api.openai.com/v1".into(),
            model: String::new(),
            api_key: Secret::default(),
            api_version: None,
            timeout_seconds: 120,
            script_path: None,
            script_log: None,
            prices: BTreeMap::new(),
            arms: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmbeddingConfig {
    /// The all-MiniLM-L6-v2 directory; empty means the default in the model directory.
    pub model_path: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CoderConfig {
    pub max_tokens: u32,
}

impl Default for CoderConfig {
    fn default() -> Self {
        Self { max_tokens: 384 }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not valid TOML: {source}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("environment variable {name}: {message}")]
    Env { name: String, message: String },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// Environment names of SPEC §11 and their places in the configuration.
const ENV_PATHS: &[(&str, &str)] = &[
    ("ENVIRONMENT", "environment"),
    ("LOG_FORMAT", "log.format"),
    ("DATABASE_URL", "storage.database_url"),
    ("LLM_API_KEY", "llm.api_key"),
    ("OPENAI_API_KEY", "llm.api_key"),
    ("ANTHROPIC_API_KEY", "llm.api_key"),
    ("OPENAI_API_VERSION", "llm.api_version"),
    ("OCTOLLM_LLM_API_VERSION", "llm.api_version"),
    ("OCTOLLM_DATA_DIR", "storage.data_dir"),
    ("OCTOLLM_BIND", "server.bind"),
    ("OCTOLLM_BODY_LIMIT_BYTES", "server.body_limit_bytes"),
    ("OCTOLLM_WORKER_THREADS", "server.worker_threads"),
    ("OCTOLLM_METRICS_BIND", "server.metrics_bind"),
    ("OCTOLLM_TRUSTED_PROXIES", "reflex.trusted_proxies"),
    ("OCTOLLM_REFLEX_CLASSIFIER", "reflex.classifier"),
    ("OTEL_EXPORTER_OTLP_ENDPOINT", "log.otlp_endpoint"),
    ("OTEL_SERVICE_NAME", "log.service_name"),
    ("OCTOLLM_LOG_PROMPTS", "log.prompts"),
    ("QDRANT_URL", "storage.qdrant_url"),
    ("OCTOLLM_QDRANT_API_KEY", "storage.qdrant_api_key"),
    ("ARM_REGISTRY_URL", "arms.registry_url"),
    ("OCTOLLM_ARM_REGISTRY_TOKEN", "arms.registry_token"),
    ("OCTOLLM_TOKEN_SIGNING_KEY", "arms.token_signing_key"),
    ("OCTOLLM_TOKEN_PUBLIC_KEYS", "arms.token_public_keys"),
    ("OCTOLLM_TOKEN_AUDIENCE", "arms.token_audience"),
    ("OCTOLLM_TOKEN_TTL_SECONDS", "arms.token_ttl_seconds"),
    ("OCTOLLM_ARM_ADVERTISE_URL", "arms.advertise_url"),
    (
        "OCTOLLM_ARM_REGISTRY_TTL_SECONDS",
        "arms.registry_ttl_seconds",
    ),
    (
        "OCTOLLM_ARM_HEALTH_POLL_SECONDS",
        "arms.health_poll_seconds",
    ),
    (
        "OCTOLLM_ALLOW_UNAUTHENTICATED",
        "server.allow_unauthenticated",
    ),
    ("OCTOLLM_REQUIRE_API_KEYS", "server.require_api_keys"),
    (
        "OCTOLLM_SHUTDOWN_GRACE_SECONDS",
        "server.shutdown_grace_seconds",
    ),
    ("OCTOLLM_RETENTION_DAYS", "storage.retention_days"),
    ("OCTOLLM_DB_POOL_SIZE", "storage.pool_size"),
    ("OCTOLLM_MIGRATE_ON_START", "storage.migrate_on_start"),
    ("OCTOLLM_LLM_PROVIDER", "llm.provider"),
    ("OCTOLLM_MODEL_DIR", "llm.model_dir"),
    ("OCTOLLM_LLM_MODEL_PATH", "llm.model_path"),
    ("OCTOLLM_LLM_THREADS", "llm.threads"),
    ("OCTOLLM_LLM_BASE_URL", "llm.base_url"),
    ("OCTOLLM_LLM_MODEL", "llm.model"),
    ("OCTOLLM_LLM_SCRIPT", "llm.script_path"),
    ("OCTOLLM_LLM_SCRIPT_LOG", "llm.script_log"),
    ("OCTOLLM_EMBEDDING_MODEL_PATH", "embedding.model_path"),
    ("OCTOLLM_WORKERS", "orchestrator.workers"),
    ("OCTOLLM_LEASE_SECONDS", "orchestrator.lease_seconds"),
    (
        "OCTOLLM_STEP_TIMEOUT_SECONDS",
        "orchestrator.step_timeout_seconds",
    ),
    ("OCTOLLM_MAX_REPAIRS", "orchestrator.max_repairs"),
    ("OCTOLLM_STORE_RAW_INPUT", "orchestrator.store_raw_input"),
    ("OCTOLLM_SCREENING_REDACT", "orchestrator.screening.redact"),
    ("OCTOLLM_POLICY_PATH", "policy.path"),
    ("OCTOLLM_POLICY_RELOAD_SECONDS", "policy.reload_seconds"),
    ("OCTOLLM_BWRAP_PATH", "executor.bwrap_path"),
    ("RATE_LIMIT_ENABLED", "reflex.rate_limit.enabled"),
    ("RATE_LIMIT_REQUESTS", "reflex.rate_limit.per_ip.capacity"),
    ("RATE_LIMIT_REQUESTS", "reflex.rate_limit.per_key.capacity"),
    (
        "RATE_LIMIT_WINDOW",
        "reflex.rate_limit.per_ip.window_seconds",
    ),
    (
        "RATE_LIMIT_WINDOW",
        "reflex.rate_limit.per_key.window_seconds",
    ),
    ("OCTOLLM_REFLEX_BIND", "reflex.bind"),
    ("REDIS_URL", "reflex.redis_url"),
    ("OCTOLLM_ORCHESTRATOR_URL", "reflex.orchestrator_url"),
];

impl Config {
    /// Loads defaults, then the file (`OCTOLLM_CONFIG`, else `./octollm.toml` if present),
    /// then the environment, then validates.
    pub fn load(env: &BTreeMap<String, String>) -> Result<Config, ConfigError> {
        let mut value = toml::Value::try_from(Config::default())
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        let file = env.get("OCTOLLM_CONFIG").map(PathBuf::from).or_else(|| {
            let local = PathBuf::from("octollm.toml");
            local.exists().then_some(local)
        });
        if let Some(path) = file {
            let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
                path: path.clone(),
                source,
            })?;
            let overlay: toml::Value =
                toml::from_str(&text).map_err(|source| ConfigError::Parse {
                    path: path.clone(),
                    source: Box::new(source),
                })?;
            merge(&mut value, overlay);
        }
        for (name, path) in ENV_PATHS {
            if let Some(raw) = env.get(*name).filter(|v| !v.is_empty()) {
                set_path(&mut value, path, raw, name)?;
            }
        }
        for arm in octollm_core::ArmKind::ALL {
            let name = format!("OCTOLLM_ARM_{}_URLS", arm.id().to_ascii_uppercase());
            if let Some(raw) = env.get(&name).filter(|v| !v.is_empty()) {
                set_path(
                    &mut value,
                    &format!("arms.endpoints.{}", arm.id()),
                    raw,
                    &name,
                )?;
            }
        }
        for arm in octollm_core::ArmKind::ALL.iter().filter(|a| a.uses_model()) {
            for field in ["provider", "model", "base_url", "api_key", "api_version"] {
                let name = format!(
                    "OCTOLLM_LLM_{}_{}",
                    arm.id().to_ascii_uppercase(),
                    field.to_ascii_uppercase()
                );
                if let Some(raw) = env.get(&name).filter(|v| !v.is_empty()) {
                    set_path(
                        &mut value,
                        &format!("llm.arms.{}.{field}", arm.id()),
                        raw,
                        &name,
                    )?;
                }
            }
        }
        if let Some(level) = env
            .get("RUST_LOG")
            .or_else(|| env.get("LOG_LEVEL"))
            .filter(|v| !v.is_empty())
        {
            set_path(&mut value, "log.level", &level.to_lowercase(), "LOG_LEVEL")?;
        }
        for (name, raw) in env {
            if let Some(rest) = name.strip_prefix("OCTOLLM__") {
                let path = rest.to_ascii_lowercase().replace("__", ".");
                set_path(&mut value, &path, raw, name)?;
            }
        }
        let config: Config = value
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Invalid(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        self.orchestrator.validate().map_err(ConfigError::Invalid)?;
        if !(1..=3600).contains(&self.policy.reload_seconds) {
            return Err(ConfigError::Invalid(
                "policy.reload_seconds must be 1 to 3600".into(),
            ));
        }
        self.reflex.trusted_proxies()?;
        if self.server.body_limit_bytes < 1024 {
            return Err(ConfigError::Invalid(
                "server.body_limit_bytes must be at least 1024".into(),
            ));
        }
        if !(1..=60).contains(&self.server.shutdown_grace_seconds) {
            return Err(ConfigError::Invalid(
                "server.shutdown_grace_seconds must be 1 to 60".into(),
            ));
        }
        for (id, budget) in &self.arms.direct_budget {
            id.parse::<octollm_core::ArmKind>()
                .map_err(|e| ConfigError::Invalid(format!("arms.direct_budget: {e}")))?;
            budget
                .validate()
                .map_err(|e| ConfigError::Invalid(format!("arms.direct_budget.{id}: {e}")))?;
        }
        for id in self.arms.endpoints.keys() {
            id.parse::<octollm_core::ArmKind>()
                .map_err(|e| ConfigError::Invalid(format!("arms.endpoints: {e}")))?;
        }
        for &arm in octollm_core::ArmKind::ALL {
            for url in self.arms.urls(arm) {
                octollm_http::arm_client::check_endpoint(arm, &url).map_err(|e| {
                    ConfigError::Invalid(format!("arms.endpoints.{}: {e}", arm.id()))
                })?;
            }
        }
        self.validate_registry()?;
        let otlp = &self.log.otlp_endpoint;
        let qdrant = &self.storage.qdrant_url;
        if !(qdrant.is_empty() || qdrant.starts_with("http://") || qdrant.starts_with("https://")) {
            return Err(ConfigError::Invalid(
                "storage.qdrant_url (QDRANT_URL) must be Qdrant's gRPC URL, http(s)://host:6334"
                    .into(),
            ));
        }
        let is_http = otlp.starts_with("http://") || otlp.starts_with("https://");
        if !otlp.is_empty() && !is_http {
            return Err(ConfigError::Invalid(
                "log.otlp_endpoint (OTEL_EXPORTER_OTLP_ENDPOINT) must be an http(s) URL of an OTLP/HTTP collector"
                    .into(),
            ));
        }
        if !(1..=600).contains(&self.arms.timeout_seconds) || self.arms.breaker_failures == 0 {
            return Err(ConfigError::Invalid(
                "arms.timeout_seconds must be 1 to 600 and arms.breaker_failures at least 1".into(),
            ));
        }
        if self.server.worker_threads > 256 {
            return Err(ConfigError::Invalid(
                "server.worker_threads must be 0 (one per core) to 256".into(),
            ));
        }
        if !matches!(
            self.environment.as_str(),
            "development" | "staging" | "production"
        ) {
            return Err(ConfigError::Invalid(format!(
                "environment (ENVIRONMENT) must be development, staging or production, not {:?}",
                self.environment
            )));
        }
        for id in self.llm.arms.keys() {
            let arm = id
                .parse::<octollm_core::ArmKind>()
                .map_err(|e| ConfigError::Invalid(format!("llm.arms: {e}")))?;
            if !arm.uses_model() {
                return Err(ConfigError::Invalid(format!(
                    "llm.arms.{id}: the {id} arm calls no model (only planner, coder and judge do)"
                )));
            }
        }
        for (what, llm) in std::iter::once(("llm".to_owned(), self.llm.clone())).chain(
            self.llm
                .arms
                .keys()
                .filter_map(|id| Some((format!("llm.arms.{id}"), self.llm_for(id.parse().ok()?)))),
        ) {
            match llm.provider {
                ProviderKind::Openai | ProviderKind::Anthropic if llm.model.trim().is_empty() => {
                    return Err(ConfigError::Invalid(format!(
                        "{what}: a model (OCTOLLM_LLM_MODEL) is required for the {} provider",
                        if llm.provider == ProviderKind::Openai {
                            "openai"
                        } else {
                            "anthropic"
                        }
                    )));
                }
                ProviderKind::Scripted if llm.script_path.is_none() => {
                    return Err(ConfigError::Invalid(
                        "llm.script_path (OCTOLLM_LLM_SCRIPT) is required for the scripted provider"
                            .into(),
                    ));
                }
                // Production runs no test double.
                ProviderKind::Scripted if self.environment == "production" => {
                    return Err(ConfigError::Invalid(format!(
                        "{what}: the scripted provider is for tests; ENVIRONMENT=production refuses it"
                    )));
                }
                _ => {}
            }
        }
        let rl = &self.reflex.rate_limit;
        if rl.per_ip.capacity == 0
            || rl.per_key.capacity == 0
            || rl.per_ip.window_seconds == 0
            || rl.per_key.window_seconds == 0
        {
            return Err(ConfigError::Invalid(
                "reflex.rate_limit capacities and windows must be positive".into(),
            ));
        }
        if let Some(urls) = &self.reflex.orchestrator_url
            && urls
                .split(',')
                .map(str::trim)
                .any(|url| !(url.starts_with("http://") || url.starts_with("https://")))
        {
            return Err(ConfigError::Invalid(
                "reflex.orchestrator_url: each URL (comma-separated) must start with http:// or https://".into(),
            ));
        }
        if !(1..=64).contains(&self.llm.threads) {
            return Err(ConfigError::Invalid("llm.threads must be 1 to 64".into()));
        }
        let db = self.storage.database_url.expose();
        if !db.is_empty()
            && !["sqlite:", "postgres://", "postgresql://"]
                .iter()
                .any(|scheme| db.starts_with(scheme))
        {
            return Err(ConfigError::Invalid(
                "storage.database_url (DATABASE_URL) must be sqlite:PATH or postgres://USER:PASSWORD@HOST:PORT/DB".into(),
            ));
        }
        if !(1..=200).contains(&self.storage.pool_size) {
            return Err(ConfigError::Invalid(
                "storage.pool_size must be 1 to 200".into(),
            ));
        }
        Ok(())
    }

    fn validate_registry(&self) -> Result<(), ConfigError> {
        let arms = &self.arms;
        arms.token_signer()?;
        arms.token_verifier()?;
        if !(10..=3600).contains(&arms.token_ttl_seconds) {
            return Err(ConfigError::Invalid(
                "arms.token_ttl_seconds (OCTOLLM_TOKEN_TTL_SECONDS) must be 10 to 3600".into(),
            ));
        }
        if arms.token_audience.trim().is_empty() {
            return Err(ConfigError::Invalid(
                "arms.token_audience (OCTOLLM_TOKEN_AUDIENCE) must not be empty".into(),
            ));
        }
        let token = arms.registry_token.expose();
        if !token.is_empty() && token.len() < 16 {
            return Err(ConfigError::Invalid(
                "arms.registry_token (OCTOLLM_ARM_REGISTRY_TOKEN) must be at least 16 characters"
                    .into(),
            ));
        }
        if !arms.registry_url.is_empty() {
            if !(arms.registry_url.starts_with("http://")
                || arms.registry_url.starts_with("https://"))
            {
                return Err(ConfigError::Invalid(
                    "arms.registry_url (ARM_REGISTRY_URL) must start with http:// or https://"
                        .into(),
                ));
            }
            if token.is_empty() {
                return Err(ConfigError::Invalid(
                    "ARM_REGISTRY_URL needs OCTOLLM_ARM_REGISTRY_TOKEN, the token the orchestrators accept registrations with".into(),
                ));
            }
        }
        if !arms.advertise_url.is_empty() {
            octollm_http::arm_client::check_endpoint(
                octollm_core::ArmKind::Coder,
                &arms.advertise_url,
            )
            .map_err(|_| {
                ConfigError::Invalid(
                    "arms.advertise_url (OCTOLLM_ARM_ADVERTISE_URL) must be http(s)://host[:port]"
                        .into(),
                )
            })?;
        }
        if !(5..=3600).contains(&arms.registry_ttl_seconds)
            || !(1..=300).contains(&arms.health_poll_seconds)
        {
            return Err(ConfigError::Invalid(
                "arms.registry_ttl_seconds must be 5 to 3600 and arms.health_poll_seconds 1 to 300"
                    .into(),
            ));
        }
        Ok(())
    }

    /// The task store the configuration names.
    pub fn database(&self) -> Database {
        let url = self.storage.database_url.expose();
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Database::Postgres(url.to_owned())
        } else {
            Database::Sqlite(self.database_path())
        }
    }

    /// The SQLite file to use (with PostgreSQL, the knowledge base's file until it moves
    /// there too).
    pub fn database_path(&self) -> PathBuf {
        let url = self.storage.database_url.expose();
        if let Some(path) = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
        {
            return PathBuf::from(path);
        }
        self.storage.data_dir.join("octollm.db")
    }

    #[cfg(feature = "local")]
    pub fn llm_model_path(&self) -> PathBuf {
        self.llm
            .model_path
            .clone()
            .unwrap_or_else(|| octollm_llm::models::default_llm_path(&self.llm.model_dir))
    }

    /// The model settings of `arm`: `[llm]` with the arm's own `[llm.arms.<arm>]` over it. A
    /// provider of its own starts from that provider's defaults (its base URL).
    pub fn llm_for(&self, arm: octollm_core::ArmKind) -> LlmConfig {
        let mut llm = self.llm.clone();
        let Some(own) = self.llm.arms.get(arm.id()) else {
            return llm;
        };
        if let Some(provider) = own.provider
            && provider != llm.provider
        {
            llm.provider = provider;
            llm.base_url = match provider {
                ProviderKind::Anthropic => "https://api.anthropic.com".into(),
                _ => LlmConfig::default().base_url,
            };
            llm.api_version = None;
        }
        if let Some(model) = &own.model {
            llm.model = model.clone();
        }
        if let Some(url) = &own.base_url {
            llm.base_url = url.clone();
        }
        if let Some(key) = &own.api_key {
            llm.api_key = key.clone();
        }
        if let Some(version) = &own.api_version {
            llm.api_version = Some(version.clone());
        }
        llm
    }

    /// What a call to `model` costs: the configured price, else the shipped list price.
    pub fn price(&self, model: &str) -> Option<Price> {
        octollm_llm::prices::lookup(
            self.llm
                .prices
                .iter()
                .map(|(prefix, price)| (prefix.as_str(), *price)),
            model,
        )
        .or_else(|| octollm_llm::prices::list_price(model))
    }

    pub fn embedding_model_path(&self) -> PathBuf {
        self.embedding
            .model_path
            .clone()
            .unwrap_or_else(|| octollm_llm::models::embedding_path(&self.llm.model_dir))
    }

    /// The effective configuration as TOML, secrets masked.
    pub fn to_masked_toml(&self) -> Result<String, ConfigError> {
        toml::to_string_pretty(self).map_err(|e| ConfigError::Invalid(e.to_string()))
    }
}

fn merge(base: &mut toml::Value, overlay: toml::Value) {
    match (base, overlay) {
        (toml::Value::Table(base), toml::Value::Table(overlay)) => {
            for (k, v) in overlay {
                match base.get_mut(&k) {
                    Some(existing) => merge(existing, v),
                    None => {
                        base.insert(k, v);
                    }
                }
            }
        }
        (base, overlay) => *base = overlay,
    }
}

/// Sets a dotted path from a string, typed like the default already there (so `"8"` becomes
/// an integer where the field is one). Unknown paths are refused by the typed parse later.
fn set_path(root: &mut toml::Value, path: &str, raw: &str, name: &str) -> Result<(), ConfigError> {
    let mut node = root;
    let parts: Vec<&str> = path.split('.').collect();
    for part in &parts[..parts.len() - 1] {
        let table = node.as_table_mut().ok_or_else(|| ConfigError::Env {
            name: name.into(),
            message: format!("{path} is not a section"),
        })?;
        node = table
            .entry((*part).to_owned())
            .or_insert_with(|| toml::Value::Table(Default::default()));
    }
    let table = node.as_table_mut().ok_or_else(|| ConfigError::Env {
        name: name.into(),
        message: format!("{path} is not a section"),
    })?;
    let leaf = parts[parts.len() - 1];
    let typed = match table.get(leaf) {
        Some(toml::Value::Integer(_)) => raw
            .trim()
            .parse::<i64>()
            .map(toml::Value::Integer)
            .map_err(|_| "must be an integer".to_owned()),
        Some(toml::Value::Float(_)) => raw
            .trim()
            .parse::<f64>()
            .map(toml::Value::Float)
            .map_err(|_| "must be a number".to_owned()),
        Some(toml::Value::Boolean(_)) => match raw.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Ok(toml::Value::Boolean(true)),
            "false" | "0" | "no" | "off" => Ok(toml::Value::Boolean(false)),
            _ => Err("must be true or false".to_owned()),
        },
        Some(toml::Value::Array(_)) | Some(toml::Value::Table(_)) => {
            toml::from_str::<toml::Value>(&format!("v = {raw}"))
                .ok()
                .and_then(|v| v.get("v").cloned())
                .ok_or_else(|| "must be a TOML array or table".to_owned())
        }
        _ => Ok(toml::Value::String(raw.to_owned())),
    }
    .map_err(|message| ConfigError::Env {
        name: name.into(),
        message,
    })?;
    table.insert(leaf.to_owned(), typed);
    Ok(())
}

/// Reads a file-or-env secret the Kubernetes way: `NAME_FILE` points at a mounted file.
pub fn expand_file_secrets(env: &mut BTreeMap<String, String>) -> Result<(), ConfigError> {
    let file_vars: Vec<(String, String)> = env
        .iter()
        .filter_map(|(k, v)| {
            k.strip_suffix("_FILE")
                .map(|base| (base.to_owned(), v.clone()))
        })
        .filter(|(base, _)| {
            [
                "DATABASE_URL",
                "REDIS_URL",
                "LLM_API_KEY",
                "OPENAI_API_KEY",
                "OCTOLLM_ARM_REGISTRY_TOKEN",
                "OCTOLLM_QDRANT_API_KEY",
                "OCTOLLM_TOKEN_SIGNING_KEY",
            ]
            .contains(&base.as_str())
        })
        .collect();
    for (base, path) in file_vars {
        let value =
            std::fs::read_to_string(Path::new(&path)).map_err(|source| ConfigError::Read {
                path: PathBuf::from(&path),
                source,
            })?;
        env.insert(base, value.trim().to_owned());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn environment_overrides_defaults_with_types() {
        let c = Config::load(&env(&[
            ("LOG_FORMAT", "json"),
            ("OCTOLLM_WORKERS", "7"),
            ("OCTOLLM_STORE_RAW_INPUT", "true"),
            ("OPENAI_API_KEY", "sk-secret"),
            ("OCTOLLM__ORCHESTRATOR__MAX_PARALLEL_STEPS", "2"),
        ]))
        .unwrap();
        assert_eq!(c.log.format, LogFormat::Json);
        assert_eq!(c.orchestrator.workers, 7);
        assert_eq!(c.orchestrator.max_parallel_steps, 2);
        assert!(c.orchestrator.store_raw_input);
        assert_eq!(c.llm.api_key.expose(), "sk-secret");
        let printed = c.to_masked_toml().unwrap();
        assert!(
            !printed.contains("sk-secret") && printed.contains("***"),
            "{printed}"
        );
    }

    #[test]
    fn file_then_environment() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "[orchestrator]\nworkers = 3\nlease_seconds = 9\n").unwrap();
        let c = Config::load(&env(&[
            ("OCTOLLM_CONFIG", file.to_str().unwrap()),
            ("OCTOLLM_WORKERS", "5"),
        ]))
        .unwrap();
        assert_eq!(
            (c.orchestrator.workers, c.orchestrator.lease_seconds),
            (5, 9)
        );
    }

    #[test]
    fn the_arm_registry_needs_a_real_token() {
        let token = "registry-token-0123456789";
        let c = Config::load(&env(&[
            ("ARM_REGISTRY_URL", "http://orchestrator:8000/registry"),
            ("OCTOLLM_ARM_REGISTRY_TOKEN", token),
        ]))
        .unwrap();
        assert!(c.arms.registry_enabled());
        assert_eq!(c.arms.registry_url, "http://orchestrator:8000/registry");
        assert!(!Config::load(&env(&[])).unwrap().arms.registry_enabled());
        for (pairs, expected) in [
            (
                vec![("ARM_REGISTRY_URL", "http://orchestrator:8000/registry")],
                "OCTOLLM_ARM_REGISTRY_TOKEN",
            ),
            (
                vec![("OCTOLLM_ARM_REGISTRY_TOKEN", "short")],
                "16 characters",
            ),
            (
                vec![
                    ("ARM_REGISTRY_URL", "orchestrator:8000/registry"),
                    ("OCTOLLM_ARM_REGISTRY_TOKEN", token),
                ],
                "http://",
            ),
            (
                vec![("OCTOLLM_ARM_ADVERTISE_URL", "http://u:p@coder:8102")],
                "OCTOLLM_ARM_ADVERTISE_URL",
            ),
            (
                vec![("OCTOLLM_ARM_CODER_URLS", "http://coder:8102/?q=1")],
                "arms.endpoints.coder",
            ),
            (
                vec![("OCTOLLM_ARM_REGISTRY_TTL_SECONDS", "1")],
                "registry_ttl",
            ),
            (vec![("QDRANT_URL", "qdrant:6334")], "QDRANT_URL"),
        ] {
            let err = Config::load(&env(&pairs)).unwrap_err().to_string();
            assert!(err.contains(expected), "{pairs:?}: {err}");
        }
        // The token is a secret: masked when the configuration is printed.
        let printed = c.to_masked_toml().unwrap();
        assert!(!printed.contains(token), "{printed}");
    }

    #[test]
    fn secrets_come_from_mounted_files() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "registry-token-from-a-file\n").unwrap();
        let mut vars = env(&[
            ("OCTOLLM_ARM_REGISTRY_TOKEN_FILE", token.to_str().unwrap()),
            ("OCTOLLM_WORKERS_FILE", token.to_str().unwrap()),
        ]);
        expand_file_secrets(&mut vars).unwrap();
        assert_eq!(
            vars.get("OCTOLLM_ARM_REGISTRY_TOKEN").map(String::as_str),
            Some("registry-token-from-a-file")
        );
        // Only secrets are read from files.
        assert!(!vars.contains_key("OCTOLLM_WORKERS"));
        let mut missing = env(&[("REDIS_URL_FILE", "/nonexistent/redis-url")]);
        let err = expand_file_secrets(&mut missing).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/redis-url"), "{err}");
    }

    #[test]
    fn traces_are_exported_only_to_an_http_collector_when_asked() {
        assert!(
            Config::load(&env(&[]))
                .unwrap()
                .log
                .otlp_endpoint
                .is_empty()
        );
        let c = Config::load(&env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://otel-collector:4318"),
            ("OTEL_SERVICE_NAME", "octollm-edge"),
        ]))
        .unwrap();
        assert_eq!(c.log.otlp_endpoint, "http://otel-collector:4318");
        assert_eq!(c.log.service_name, "octollm-edge");
        let err = Config::load(&env(&[(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "otel-collector:4317",
        )]))
        .unwrap_err()
        .to_string();
        assert!(err.contains("OTEL_EXPORTER_OTLP_ENDPOINT"), "{err}");
    }

    #[test]
    fn refusals_are_clear() {
        let err = Config::load(&env(&[("OCTOLLM_WORKERS", "many")]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("OCTOLLM_WORKERS") && err.contains("integer"),
            "{err}"
        );
        let err = Config::load(&env(&[("OCTOLLM__ORCHESTRATOR__NOPE", "1")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("nope"), "{err}");
        let err = Config::load(&env(&[("OCTOLLM_LLM_PROVIDER", "scripted")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("OCTOLLM_LLM_SCRIPT"), "{err}");
        let err = Config::load(&env(&[("OCTOLLM_WORKERS", "0")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("workers"), "{err}");
        let err = Config::load(&env(&[("OCTOLLM_WORKER_THREADS", "1000")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("worker_threads"), "{err}");
        let one = Config::load(&env(&[("OCTOLLM_WORKER_THREADS", "1")])).unwrap();
        assert_eq!(one.server.worker_threads, 1);
        let err = Config::load(&env(&[("DATABASE_URL", "mysql://db/x")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("postgres://"), "{err}");
        let pg = Config::load(&env(&[("DATABASE_URL", "postgres://u:p@db:5432/octollm")])).unwrap();
        assert_eq!(
            pg.database(),
            Database::Postgres("postgres://u:p@db:5432/octollm".into())
        );
        assert!(matches!(
            Config::load(&env(&[])).unwrap().database(),
            Database::Sqlite(_)
        ));
        let err = Config::load(&env(&[("OCTOLLM_ARM_CODER_URLS", "coder:8102")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("arms.endpoints.coder"), "{err}");
        let err = Config::load(&env(&[("OCTOLLM__ARMS__ENDPOINTS__BRAIN", "http://b:1")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown arm"), "{err}");
        // Direct calls get a budget per arm, configurable, and checked like a task's.
        let c = Config::load(&env(&[(
            "OCTOLLM__ARMS__DIRECT_BUDGET__CODER__MAX_TOKENS",
            "900",
        )]))
        .unwrap();
        assert_eq!(
            c.arms
                .direct_budget(octollm_core::ArmKind::Coder)
                .max_tokens,
            900
        );
        assert_eq!(
            c.arms
                .direct_budget(octollm_core::ArmKind::Judge)
                .max_tokens,
            8_000
        );
        let err = Config::load(&env(&[(
            "OCTOLLM__ARMS__DIRECT_BUDGET__CODER__MAX_TOKENS",
            "5",
        )]))
        .unwrap_err()
        .to_string();
        assert!(err.contains("arms.direct_budget.coder"), "{err}");
        let two = Config::load(&env(&[(
            "OCTOLLM_ARM_CODER_URLS",
            "http://a:8102, http://b:8102",
        )]))
        .unwrap();
        assert_eq!(
            two.arms.urls(octollm_core::ArmKind::Coder),
            ["http://a:8102", "http://b:8102"]
        );
        assert!(two.arms.urls(octollm_core::ArmKind::Judge).is_empty());
    }
}
