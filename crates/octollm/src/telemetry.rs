//! Logging: JSON or human-readable, to stderr, filtered by `log.level` (RUST_LOG syntax).

use tracing_subscriber::EnvFilter;

use crate::config::{Config, LogFormat};

pub struct Guard;

/// `quiet` lowers the default level for interactive commands whose output is the point.
pub fn init(config: &Config, quiet: bool) -> anyhow::Result<Guard> {
    let level = if quiet && config.log.level == "info" {
        "warn"
    } else {
        config.log.level.as_str()
    };
    // llama.cpp and sqlx are chatty at info.
    let filter = EnvFilter::try_new(format!("{level},sqlx=warn,hyper=warn"))
        .map_err(|e| anyhow::anyhow!("invalid log level {level:?}: {e}"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let installed = match config.log.format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
        LogFormat::Pretty => builder.compact().try_init(),
    };
    installed.map_err(|e| anyhow::anyhow!("cannot install the logger: {e}"))?;
    Ok(Guard)
}
