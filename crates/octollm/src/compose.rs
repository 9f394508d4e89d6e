//! Composition: builds the embedded system (every component in this process) from the
//! configuration.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use async_trait::async_trait;
use octollm_arms::policy::PolicyHandle;
use octollm_arms::{Arms, InProcessSettings};
use octollm_http::arm_client::ArmClient;
use octollm_http::registry::Registry;
use octollm_llm::{Embedder, LlmError, LlmProvider, MeteredLlm};
use octollm_orchestrator::Orchestrator;
use octollm_store::{
    ApiKeyStore, ArmRegistry, AuditLog, KnowledgeStore, PostgresKnowledge, PostgresStore,
    SqliteStore, TaskStore,
};
use tokio::sync::OnceCell;

use crate::config::{Config, Database, LlmConfig, ProviderKind};

pub struct System {
    pub orchestrator: Arc<Orchestrator>,
    /// The arms called over HTTP.
    pub remote_arms: Vec<Arc<ArmClient>>,
    /// The arm registry, when `arms.registry_token` is set.
    pub registry: Option<Arc<Registry>>,
    pub keys: Arc<dyn ApiKeyStore>,
    pub audit: Arc<dyn AuditLog>,
    /// The guardian policy in force (watched for changes by `serve`).
    pub policy: PolicyHandle,
}

/// The configured guardian policy, validated (an invalid file is refused with its line), or
/// the built-in one.
pub fn policy(config: &Config) -> anyhow::Result<PolicyHandle> {
    if config.policy.path.is_empty() {
        return Ok(PolicyHandle::default());
    }
    Ok(PolicyHandle::from_file(std::path::Path::new(
        &config.policy.path,
    ))?)
}

/// The database the tasks live in, as the task store, the arm registry and the API keys.
pub struct Stores {
    pub tasks: Arc<dyn TaskStore>,
    pub registry: Arc<dyn ArmRegistry>,
    pub keys: Arc<dyn ApiKeyStore>,
    pub audit: Arc<dyn AuditLog>,
}

pub async fn open_store(config: &Config) -> anyhow::Result<SqliteStore> {
    let path = config.database_path();
    SqliteStore::open(&path)
        .await
        .with_context(|| format!("cannot open the database at {}", path.display()))
}

/// The task store: the SQLite file (`embedded`, the same store as the knowledge base) or
/// PostgreSQL, migrated at start unless `storage.migrate_on_start` is off, with task events
/// shared over Redis when `REDIS_URL` is set.
pub async fn open_task_store(config: &Config, embedded: &SqliteStore) -> anyhow::Result<Stores> {
    Ok(match config.database() {
        Database::Sqlite(_) => Stores {
            tasks: Arc::new(embedded.clone()),
            registry: Arc::new(embedded.clone()),
            keys: Arc::new(embedded.clone()),
            audit: Arc::new(embedded.clone()),
        },
        Database::Postgres(url) => {
            let mut store = connect_postgres(&url, config).await?;
            if config.storage.migrate_on_start {
                store
                    .migrate()
                    .await
                    .context("cannot migrate the PostgreSQL schema")?;
            }
            // With Redis, a client may follow a task's live events from any replica.
            let redis = config.reflex.redis_url.expose();
            if !redis.is_empty() {
                store = store.with_events(&octollm_store::RedisEvents::new(redis, "octollm")?);
            }
            Stores {
                tasks: Arc::new(store.clone()),
                registry: Arc::new(store.clone()),
                keys: Arc::new(store.clone()),
                audit: Arc::new(store),
            }
        }
    })
}

/// The knowledge base: the SQLite file (embedded), or PostgreSQL shared by every retriever
/// instance when `DATABASE_URL` is PostgreSQL (vectors in Qdrant when `QDRANT_URL` is set).
pub async fn knowledge(
    config: &Config,
    embedded: &SqliteStore,
) -> anyhow::Result<Arc<dyn KnowledgeStore>> {
    let Database::Postgres(url) = config.database() else {
        return Ok(Arc::new(embedded.clone()));
    };
    let store = connect_postgres(&url, config).await?;
    if config.storage.migrate_on_start {
        store
            .migrate()
            .await
            .context("cannot migrate the PostgreSQL schema")?;
    }
    Ok(Arc::new(PostgresKnowledge::new(
        store.pool().clone(),
        qdrant(config)?,
    )))
}

#[cfg(feature = "qdrant")]
fn qdrant(config: &Config) -> anyhow::Result<Option<Arc<dyn octollm_store::VectorStore>>> {
    if config.storage.qdrant_url.is_empty() {
        return Ok(None);
    }
    let key = config.storage.qdrant_api_key.expose();
    let store = octollm_store::QdrantStore::connect(
        &config.storage.qdrant_url,
        (!key.is_empty()).then(|| key.to_owned()),
    )?;
    Ok(Some(Arc::new(store)))
}

#[cfg(not(feature = "qdrant"))]
fn qdrant(config: &Config) -> anyhow::Result<Option<Arc<dyn octollm_store::VectorStore>>> {
    if config.storage.qdrant_url.is_empty() {
        return Ok(None);
    }
    anyhow::bail!("QDRANT_URL is set but this build has no Qdrant client (cargo feature `qdrant`)")
}

pub async fn connect_postgres(url: &str, config: &Config) -> anyhow::Result<PostgresStore> {
    PostgresStore::connect(url, config.storage.pool_size)
        .await
        .with_context(|| format!("cannot connect to {}", without_credentials(url)))
}

/// A database URL without its user and password, for messages.
pub fn without_credentials(url: &str) -> String {
    match (url.split_once("://"), url.rsplit_once('@')) {
        (Some((scheme, _)), Some((_, host))) => format!("{scheme}://…@{host}"),
        _ => url.to_owned(),
    }
}

/// The provider `llm` names (`[llm]`, or one arm's settings from [`Config::llm_for`]).
pub async fn provider(config: &Config, llm: &LlmConfig) -> anyhow::Result<Arc<dyn LlmProvider>> {
    let timeout = Duration::from_secs(llm.timeout_seconds);
    Ok(match llm.provider {
        ProviderKind::Scripted => {
            let path = llm
                .script_path
                .clone()
                .context("llm.script_path is required for the scripted provider")?;
            Arc::new(octollm_llm::scripted::ScriptedProvider::from_file(
                &path,
                llm.script_log.clone(),
            )?)
        }
        ProviderKind::Openai => Arc::new(octollm_llm::openai::OpenAiProvider::new(
            octollm_llm::openai::OpenAiConfig {
                base_url: llm.base_url.clone(),
                api_key: llm.api_key.clone(),
                model: llm.model.clone(),
                timeout,
                api_version: llm.api_version.clone(),
            },
        )?),
        ProviderKind::Anthropic => Arc::new(octollm_llm::anthropic::AnthropicProvider::new(
            octollm_llm::anthropic::AnthropicConfig {
                // The OpenAI default base URL means none was set.
                base_url: if llm.base_url == LlmConfig::default().base_url {
                    "https://api.anthropic.com".into()
                } else {
                    llm.base_url.clone()
                },
                api_key: llm.api_key.clone(),
                model: llm.model.clone(),
                timeout,
            },
        )?),
        ProviderKind::Local => local_provider(config).await?,
    })
}

#[cfg(feature = "local")]
async fn local_provider(config: &Config) -> anyhow::Result<Arc<dyn LlmProvider>> {
    let local = octollm_llm::local::LocalConfig {
        model_path: config.llm_model_path(),
        threads: config.llm.threads,
        context_tokens: config.llm.context_tokens,
    };
    let llm =
        tokio::task::spawn_blocking(move || octollm_llm::local::LocalLlm::load(local)).await??;
    Ok(Arc::new(llm))
}

#[cfg(not(feature = "local"))]
async fn local_provider(_config: &Config) -> anyhow::Result<Arc<dyn LlmProvider>> {
    anyhow::bail!(
        "this build has no local model support (feature `local`); set OCTOLLM_LLM_PROVIDER=openai"
    )
}

/// Loads the embedding model on first use, so a process that never searches never pays for it,
/// and a missing model is reported where it is needed, with the command that fixes it.
pub struct LazyEmbedder {
    path: PathBuf,
    inner: OnceCell<Arc<dyn Embedder>>,
}

impl LazyEmbedder {
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            inner: OnceCell::new(),
        }
    }

    async fn get(&self) -> Result<&Arc<dyn Embedder>, LlmError> {
        self.inner
            .get_or_try_init(|| async {
                let path = self.path.clone();
                load_embedder(path).await
            })
            .await
    }
}

#[cfg(feature = "embed")]
async fn load_embedder(path: PathBuf) -> Result<Arc<dyn Embedder>, LlmError> {
    let model = tokio::task::spawn_blocking(move || {
        octollm_llm::embed::minilm::MiniLmEmbedder::load(&path)
    })
    .await
    .map_err(|e| LlmError::Inference(e.to_string()))??;
    Ok(Arc::new(model))
}

#[cfg(feature = "embed")]
fn embedder_files(path: &std::path::Path) -> Result<(), LlmError> {
    octollm_llm::embed::minilm::MiniLmEmbedder::check_files(path)
}

#[cfg(not(feature = "embed"))]
fn embedder_files(_path: &std::path::Path) -> Result<(), LlmError> {
    Err(LlmError::Config(
        "this build has no embedding support (feature `embed`)".into(),
    ))
}

#[cfg(not(feature = "embed"))]
async fn load_embedder(_path: PathBuf) -> Result<Arc<dyn Embedder>, LlmError> {
    Err(LlmError::Config(
        "this build has no embedding support (feature `embed`)".into(),
    ))
}

#[async_trait]
impl Embedder for LazyEmbedder {
    fn model(&self) -> &str {
        "all-MiniLM-L6-v2"
    }

    fn dimensions(&self) -> usize {
        384
    }

    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, LlmError> {
        self.get().await?.embed(texts).await
    }

    /// Available once loaded, or while its files are where it would load them from.
    fn available(&self) -> Result<(), String> {
        if self.inner.initialized() {
            return Ok(());
        }
        embedder_files(&self.path).map_err(|e| e.to_string())
    }
}

/// `llm`'s provider with its price (list price unless configured) and prompt logging.
async fn metered(config: &Config, llm: &LlmConfig) -> anyhow::Result<MeteredLlm> {
    let provider = provider(config, llm).await?;
    let price = match config.price(provider.model()) {
        Some(price) => price,
        None => {
            if matches!(llm.provider, ProviderKind::Openai | ProviderKind::Anthropic) {
                tracing::warn!(
                    model = provider.model(),
                    "no price for this model: its calls cost $0 and max_cost_dollars cannot bind; set [llm.prices]"
                );
            }
            octollm_core::budget::Price::default()
        }
    };
    Ok(MeteredLlm::new(provider, price).with_text_logging(config.log.prompts))
}

/// Every arm in this process, then each arm that has endpoints (configured, or from the
/// registry when it is enabled) replaced by its HTTP client; returns the clients too.
/// `serving`: the one arm an arm service runs (the others are built but never called, so
/// only the retriever's service opens the shared knowledge base).
pub async fn arms(
    config: &Config,
    store: &SqliteStore,
    serving: Option<octollm_core::ArmKind>,
    audit: Arc<dyn octollm_store::AuditLog>,
    policy: &PolicyHandle,
) -> anyhow::Result<(Arms, Vec<Arc<ArmClient>>)> {
    use octollm_core::ArmKind;
    // An arm runs here when this service serves it, or (the orchestrator) when no instance
    // elsewhere is configured and the registry is off.
    let runs_here = |kind: ArmKind| match serving {
        Some(arm) => arm == kind,
        None => config.arms.urls(kind).is_empty() && !config.arms.registry_enabled(),
    };
    // Only a service running an arm that calls a model loads one (128 MB for the default),
    // and each model arm with settings of its own gets its own provider.
    let mut shared: Option<MeteredLlm> = None;
    let mut models = Vec::new();
    for &kind in ArmKind::ALL.iter().filter(|k| k.uses_model()) {
        let llm = if !runs_here(kind) {
            MeteredLlm::new(Arc::new(octollm_llm::provider::NoModel), Default::default())
        } else if config.llm.arms.contains_key(kind.id()) {
            metered(config, &config.llm_for(kind)).await?
        } else {
            match &shared {
                Some(llm) => llm.clone(),
                None => shared.insert(metered(config, &config.llm).await?).clone(),
            }
        };
        models.push((kind, llm));
    }
    let model_of = |kind: ArmKind| {
        models
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, llm)| llm.clone())
            .unwrap_or_else(|| {
                MeteredLlm::new(Arc::new(octollm_llm::provider::NoModel), Default::default())
            })
    };
    let models = octollm_arms::ArmModels {
        planner: model_of(ArmKind::Planner),
        coder: model_of(ArmKind::Coder),
        judge: model_of(ArmKind::Judge),
    };
    let embedder: Arc<dyn Embedder> = Arc::new(LazyEmbedder::new(config.embedding_model_path()));
    let settings = InProcessSettings {
        executor: config.executor.clone(),
        planner: config.planner.clone(),
        coder_max_tokens: config.coder.max_tokens,
        policy: policy.clone(),
    };
    let knowledge: Arc<dyn KnowledgeStore> = if runs_here(ArmKind::Retriever) {
        knowledge(config, store).await?
    } else {
        Arc::new(store.clone())
    };
    let mut arms = Arms::in_process_with(models, knowledge, embedder, settings);
    octollm_arms::guard::AuditedExecutor::wrap(&mut arms, audit);
    let breaker = octollm_http::arm_client::BreakerSettings {
        failures: config.arms.breaker_failures,
        cool_down: Duration::from_secs(config.arms.breaker_cool_down_seconds),
    };
    let mut clients = Vec::new();
    for &kind in ArmKind::ALL {
        let urls = config.arms.urls(kind);
        if urls.is_empty() && !config.arms.registry_enabled() {
            continue;
        }
        let client = Arc::new(
            ArmClient::with_configured(
                kind,
                &urls,
                Duration::from_secs(config.arms.timeout_seconds),
                breaker,
            )
            .map_err(anyhow::Error::msg)?
            .with_signer(config.arms.token_signer()?),
        );
        tracing::info!(
            arm = kind.id(),
            configured = urls.len(),
            registry = config.arms.registry_enabled(),
            "arm over HTTP"
        );
        arms = octollm_http::arm_client::with_remote(arms, Arc::clone(&client));
        clients.push(client);
    }
    Ok((arms, clients))
}

/// The revoked capability tokens: in Redis with `REDIS_URL` (every orchestrator and arm
/// instance sees the same list), else this process's own list.
pub fn revocations(config: &Config) -> anyhow::Result<Arc<dyn octollm_store::Revocations>> {
    let redis = config.reflex.redis_url.expose();
    Ok(if redis.is_empty() {
        Arc::new(octollm_store::MemoryRevocations::new())
    } else {
        Arc::new(octollm_store::RedisRevocations::new(redis, "octollm")?)
    })
}

pub async fn build(config: &Config) -> anyhow::Result<System> {
    let store = open_store(config).await?;
    let stores = open_task_store(config, &store).await?;
    let keys = stores.keys;
    let audit = stores.audit;
    let policy = policy(config)?;
    let (arms, remote_arms) = arms(config, &store, None, audit.clone(), &policy).await?;
    let orchestrator = Orchestrator::new(
        stores.tasks,
        audit.clone(),
        arms,
        config.orchestrator.clone(),
    );
    orchestrator.use_policy(policy.clone());
    if config.arms.token_signer()?.is_some() {
        orchestrator.revoke_tokens_in(revocations(config)?, config.arms.token_ttl_seconds);
    }
    let registry = config.arms.registry_enabled().then(|| {
        Arc::new(Registry::new(
            stores.registry,
            config.arms.registry_token.expose().to_owned(),
            Duration::from_secs(config.arms.registry_ttl_seconds),
            remote_arms.clone(),
        ))
    });
    Ok(System {
        orchestrator,
        remote_arms,
        registry,
        keys,
        audit,
        policy,
    })
}

#[cfg(test)]
mod tests {
    use super::without_credentials;

    #[test]
    fn messages_never_carry_database_credentials() {
        assert_eq!(
            without_credentials("postgres://app:s3cret@db:5432/octollm"),
            "postgres://…@db:5432/octollm"
        );
        assert_eq!(
            without_credentials("postgres://db:5432/octollm"),
            "postgres://db:5432/octollm"
        );
    }
}
