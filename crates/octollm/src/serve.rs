//! `octollm serve`: the API and the workers in one process (embedded mode), with graceful
//! shutdown: on SIGTERM stop accepting, let in-flight requests and steps finish within the
//! grace period, release leases, exit 0.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use std::sync::Arc;

use octollm_http::api::{ApiState, router};
use octollm_http::auth::Auth;
use octollm_store::{
    MemoryCache, MemoryRateLimiter, RateLimiter, RedisCache, RedisRateLimiter, ResponseCache,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::compose;
use crate::config::Config;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Component {
    All,
    /// The orchestrator alone (SPEC §3), behind `serve reflex`: its API and workers without
    /// the reflex layer's routes and limits, which the reflex service in front provides.
    Orchestrator,
    Reflex,
    Arm,
}

/// One arm as its own service (in process behind HTTP), with graceful shutdown.
pub async fn serve_arm(
    config: Config,
    arm: octollm_core::ArmKind,
    bind: Option<std::net::SocketAddr>,
) -> anyhow::Result<ExitCode> {
    let bind = bind.unwrap_or_else(|| std::net::SocketAddr::from(([127, 0, 0, 1], arm.port())));
    // With token public keys the arm authenticates every call itself.
    if config.arms.token_verifier()?.is_none() {
        refuse_unauthenticated(bind, &config)?;
    }
    // An arm service runs its arm itself, never another service's.
    let mut local = config.clone();
    local.arms = Default::default();
    let store = compose::open_store(&local).await?;
    // API keys and the audit log in the configured database (PostgreSQL: shared with the
    // orchestrators).
    let stores = compose::open_task_store(&config, &store).await?;
    // With a registry to report to, its refusals go to the orchestrators' shared audit log.
    let audit: Arc<dyn octollm_store::AuditLog> =
        if config.arms.registry_url.is_empty() || config.arms.registry_token.is_empty() {
            stores.audit.clone()
        } else {
            Arc::new(octollm_http::audit_relay::RelayedAudit::new(
                &config.arms.registry_url,
                config.arms.registry_token.clone(),
                arm,
                reqwest::Client::new(),
                stores.audit.clone(),
            ))
        };
    let policy = compose::policy(&config)?;
    let (arms, _) = compose::arms(&local, &store, Some(arm), audit.clone(), &policy).await?;
    let listener = bind_listener(bind).await?;
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    tracker.spawn(policy.watch(
        Duration::from_secs(config.policy.reload_seconds),
        shutdown.clone(),
    ));
    if !config.arms.registry_url.is_empty() {
        let advertised = advertise_url(&config, listener.local_addr()?)?;
        tracker.spawn(crate::announce::announce(
            crate::announce::Announcement {
                registry_url: config.arms.registry_url.clone(),
                token: config.arms.registry_token.clone(),
                arm,
                url: advertised,
            },
            shutdown.clone(),
        ));
    }
    // With public keys, the orchestrator's calls need its capability token; direct callers
    // need API keys where the orchestrator would ask for them. Refusals are audited.
    let verifier = config.arms.token_verifier()?;
    if verifier.is_some() && config.reflex.redis_url.is_empty() {
        warn!("capability tokens without REDIS_URL: revocations reach this instance only");
    }
    let guard = octollm_arms::guard::ArmGuard::new(
        verifier,
        Some(config.arms.registry_token.clone()),
        Some(audit),
        crate::compose::revocations(&config)?,
    );
    let auth = Auth::new(
        stores.keys.clone(),
        stores.audit.clone(),
        api_keys_required(bind, &config),
    );
    info!(
        arm = arm.id(),
        tokens_required = guard.requires_tokens(),
        api_keys_required = auth.required(),
        "authentication"
    );
    let app = octollm_http::arm_service::router(
        octollm_http::arm_service::ArmService {
            kind: arm,
            arms,
            guard,
            auth,
            direct_budget: config.arms.direct_budget(arm),
            // The document publishes this executor's own limit.
            limits: vec![(
                "/components/schemas/ExecuteRequest/properties/timeout_seconds/maximum".into(),
                serde_json::Value::from(config.executor.max_timeout_seconds),
            )],
            version: env!("CARGO_PKG_VERSION"),
        },
        config.server.body_limit_bytes,
    );
    let grace = Duration::from_secs(config.server.shutdown_grace_seconds);
    serve_until_shutdown(listener, app, grace, shutdown, tracker).await?;
    Ok(ExitCode::SUCCESS)
}

/// The base URL an arm registers: `arms.advertise_url`, else the bound address, with the
/// host name in place of an unspecified address (`0.0.0.0` in a container).
fn advertise_url(config: &Config, bound: std::net::SocketAddr) -> anyhow::Result<String> {
    if !config.arms.advertise_url.is_empty() {
        return Ok(config.arms.advertise_url.trim_end_matches('/').to_owned());
    }
    if !bound.ip().is_unspecified() {
        return Ok(format!("http://{bound}"));
    }
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .filter(|h| !h.is_empty())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "cannot tell the URL to register at: set OCTOLLM_ARM_ADVERTISE_URL (http://host:port)"
            )
        })?;
    Ok(format!("http://{host}:{}", bound.port()))
}

/// The reflex layer's screening, verdict cache and rate limits: in Redis with `REDIS_URL`
/// (shared by every replica), else in this process.
fn reflex_service(config: &Config) -> anyhow::Result<octollm_http::reflex::ReflexService> {
    let ttl = Duration::from_secs(config.reflex.cache_ttl_seconds);
    let (cache, limiter): (Arc<dyn ResponseCache>, Arc<dyn RateLimiter>) =
        if config.reflex.redis_url.is_empty() {
            let max_bytes = config.reflex.cache_max_mb * 1024 * 1024;
            (
                Arc::new(MemoryCache::new(max_bytes, ttl)),
                Arc::new(MemoryRateLimiter::new()),
            )
        } else {
            let url = config.reflex.redis_url.expose();
            (
                Arc::new(RedisCache::new(url, "octollm", ttl)?),
                Arc::new(RedisRateLimiter::new(url, "octollm")?),
            )
        };
    Ok(octollm_http::reflex::ReflexService {
        scanner: reflex_scanner(config)?,
        cache,
        limiter,
        limits: config.reflex.rate_limit.clone(),
    })
}

/// The rules, and the classifier after them when `reflex.classifier` is on (its model must be
/// there: a configured classifier that cannot load is a startup error, not a silent downgrade).
fn reflex_scanner(config: &Config) -> anyhow::Result<octollm_reflex::Scanner> {
    if !config.reflex.classifier {
        return Ok(octollm_reflex::Scanner::new());
    }
    classifier_scanner(config)
}

#[cfg(not(feature = "embed"))]
fn classifier_scanner(_: &Config) -> anyhow::Result<octollm_reflex::Scanner> {
    anyhow::bail!("reflex.classifier needs a build with the `embed` feature")
}

#[cfg(feature = "embed")]
fn classifier_scanner(config: &Config) -> anyhow::Result<octollm_reflex::Scanner> {
    let dir = config.embedding_model_path();
    let features = octollm_llm::embed::token_features::TokenFeatures::load(&dir)
        .map_err(|e| anyhow::anyhow!("reflex.classifier: {e}"))?;
    let weights = octollm_reflex::classifier::Weights::shipped().map_err(anyhow::Error::msg)?;
    let classifier =
        octollm_reflex::Classifier::new(weights, Arc::new(features)).map_err(anyhow::Error::msg)?;
    tracing::info!(
        threshold = classifier.threshold(),
        "injection classifier on"
    );
    Ok(octollm_reflex::Scanner::with_classifier(Arc::new(
        classifier,
    )))
}

/// The reflex service alone: screening, cache, rate limits, forwarding to the orchestrators.
pub async fn serve_reflex(config: Config) -> anyhow::Result<ExitCode> {
    let bind = config.reflex.bind;
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .build()?;
    // With orchestrators behind it, their keys open its routes; alone, it has none to check.
    let keys: Arc<dyn octollm_http::reflex::keys::Keys> = match &config.reflex.orchestrator_url {
        Some(urls) => Arc::new(octollm_http::reflex::keys::OrchestratorKeys::new(
            urls,
            client.clone(),
        )),
        None => {
            refuse_unauthenticated(bind, &config)?;
            Arc::new(octollm_http::reflex::keys::NoKeys)
        }
    };
    let state = octollm_http::reflex::ReflexState {
        service: reflex_service(&config)?,
        keys,
        trusted_proxies: config.reflex.trusted_proxies()?,
        orchestrator_url: config.reflex.orchestrator_url.clone(),
        client,
        started: Instant::now(),
        version: env!("CARGO_PKG_VERSION"),
    };
    let listener = bind_listener(bind).await?;
    let app = octollm_http::reflex::router(state, config.server.body_limit_bytes);
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    serve_metrics_port(&config, &tracker, shutdown.clone()).await?;
    let grace = Duration::from_secs(config.server.shutdown_grace_seconds);
    serve_until_shutdown(listener, app, grace, shutdown, tracker).await?;
    Ok(ExitCode::SUCCESS)
}

/// The orchestrator's API and workers. `embedded` (`octollm serve`, one process): the reflex
/// layer's routes and rate limits in front of it too, as `serve reflex` gives the
/// distributed mode (SPEC §2: no feature in one mode only).
pub async fn serve(config: Config, embedded: bool) -> anyhow::Result<ExitCode> {
    let bind = config.server.bind;
    let system = compose::build(&config).await?;
    let listener = bind_listener(bind).await?;
    let shutdown = CancellationToken::new();
    let shutdown_for_metrics = shutdown.clone();
    let tracker = TaskTracker::new();
    system
        .orchestrator
        .spawn_workers(&tracker, shutdown.clone());
    tracker.spawn(retention(
        system.orchestrator.clone(),
        config.storage.retention_days,
        shutdown.clone(),
    ));
    tracker.spawn(system.policy.clone().watch(
        Duration::from_secs(config.policy.reload_seconds),
        shutdown.clone(),
    ));

    if !system.remote_arms.is_empty() {
        tracker.spawn(octollm_http::registry::watch_arms(
            system.registry.clone(),
            system.remote_arms.clone(),
            Duration::from_secs(config.arms.health_poll_seconds),
            Duration::from_secs(2),
            shutdown.clone(),
        ));
    }
    let state = ApiState {
        orchestrator: system.orchestrator.clone(),
        started: Instant::now(),
        version: env!("CARGO_PKG_VERSION"),
        registry: system.registry.clone(),
        auth: Auth::new(
            system.keys.clone(),
            system.audit.clone(),
            api_keys_required(bind, &config),
        ),
    };
    info!(api_keys_required = state.auth.required(), "authentication");
    let auth = state.auth.clone();
    let mut app = router(state, config.server.body_limit_bytes);
    if embedded {
        let reflex = octollm_http::reflex::ReflexState {
            service: reflex_service(&config)?,
            keys: Arc::new(octollm_http::reflex::keys::LocalKeys(auth)),
            trusted_proxies: config.reflex.trusted_proxies()?,
            orchestrator_url: None,
            client: reqwest::Client::new(),
            started: Instant::now(),
            version: env!("CARGO_PKG_VERSION"),
        };
        app = octollm_http::reflex::in_front(app, reflex, config.server.body_limit_bytes);
    }
    serve_metrics_port(&config, &tracker, shutdown_for_metrics).await?;
    let grace = Duration::from_secs(config.server.shutdown_grace_seconds);
    serve_until_shutdown(listener, app, grace, shutdown, tracker).await?;
    Ok(ExitCode::SUCCESS)
}

/// With `OCTOLLM_METRICS_BIND`, a second listener with only `/metrics`: Prometheus scrapes
/// there, and since the port carries nothing else it needs no API key.
async fn serve_metrics_port(
    config: &Config,
    tracker: &TaskTracker,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let Some(metrics_bind) = config.server.metrics_bind else {
        return Ok(());
    };
    let metrics = bind_listener(metrics_bind).await?;
    let routes = axum::Router::new().route(
        "/metrics",
        axum::routing::get(octollm_http::observe::render),
    );
    tracker.spawn(async move {
        if let Err(e) = octollm_http::server::serve(metrics, routes, shutdown).await {
            warn!(error = %e, "metrics listener stopped");
        }
    });
    Ok(())
}

/// A reflex service without an orchestrator has no keys to check (the orchestrator behind it does), nor does an
/// arm service without token public keys, so off loopback they serve only when told that the
/// network in front of them authenticates.
fn refuse_unauthenticated(bind: std::net::SocketAddr, config: &Config) -> anyhow::Result<()> {
    if !bind.ip().is_loopback() && !config.server.allow_unauthenticated {
        anyhow::bail!(
            "refusing to serve on {bind} without authentication; bind a loopback address, or set \
             OCTOLLM_ALLOW_UNAUTHENTICATED=true where only the orchestrator and a gateway can reach it"
        );
    }
    Ok(())
}

/// Keys are required on any non-loopback bind unless a gateway in front authenticates
/// (`OCTOLLM_ALLOW_UNAUTHENTICATED`), and anywhere with `OCTOLLM_REQUIRE_API_KEYS`.
fn api_keys_required(bind: std::net::SocketAddr, config: &Config) -> bool {
    config.server.require_api_keys
        || (!bind.ip().is_loopback() && !config.server.allow_unauthenticated)
}

async fn bind_listener(bind: std::net::SocketAddr) -> anyhow::Result<TcpListener> {
    let listener = TcpListener::bind(bind)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {bind}: {e}"))?;
    info!(addr = %listener.local_addr()?, "listening");
    Ok(listener)
}

/// Serves until SIGTERM/Ctrl-C (or `shutdown`), then gives open requests the grace period,
/// then gives the background tasks on `tracker` the grace period, then returns.
async fn serve_until_shutdown(
    listener: TcpListener,
    app: axum::Router,
    grace: Duration,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) -> anyhow::Result<()> {
    tracker.spawn(signals(shutdown.clone()));
    let server = octollm_http::server::serve(listener, app, shutdown.clone());
    tokio::pin!(server);
    tokio::select! {
        result = &mut server => result?,
        () = async { shutdown.cancelled().await; tokio::time::sleep(grace).await } => {
            warn!("grace period over with requests still open (event streams); closing them");
        }
    }
    shutdown.cancel();
    tracker.close();
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        warn!(
            "grace period over with steps still running; their leases will expire and another worker resumes them"
        );
    }
    info!("stopped");
    Ok(())
}

async fn signals(shutdown: CancellationToken) {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
        () = shutdown.cancelled() => return,
    }
    info!("shutdown signal received");
    shutdown.cancel();
}

async fn retention(
    orchestrator: std::sync::Arc<octollm_orchestrator::Orchestrator>,
    days: u32,
    shutdown: CancellationToken,
) {
    loop {
        let cutoff = chrono::Utc::now() - chrono::TimeDelta::days(i64::from(days));
        match orchestrator.prune(cutoff).await {
            Ok(0) => {}
            Ok(n) => info!(pruned = n, "removed finished tasks past retention"),
            Err(e) => warn!(error = %e, "retention pruning failed"),
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(3600)) => {}
            () = shutdown.cancelled() => return,
        }
    }
}
