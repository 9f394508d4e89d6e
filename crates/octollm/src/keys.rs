//! `octollm keys create|list|revoke`: API keys in the configured database (the SQLite file,
//! or PostgreSQL with `DATABASE_URL`). A new key is printed once; only its hash is stored.

use std::io::Write;
use std::process::ExitCode;

use chrono::Utc;
use clap::Subcommand;
use octollm_core::Scopes;
use octollm_core::auth::NewApiKey;
use octollm_store::{ApiKeyRecord, AuditEntry, AuditKind};

use crate::compose;
use crate::config::Config;

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Make a key and print it (once: it cannot be shown again).
    Create {
        /// Who or what the key is for.
        #[arg(long)]
        name: String,
        /// Comma-separated: tasks:submit, tasks:read, tasks:cancel, admin.
        #[arg(long, value_parser = parse_scopes)]
        scopes: Scopes,
    },
    /// Every key with its scopes and state (never the key itself).
    List,
    /// Refuse a key from now on.
    Revoke { id: String },
}

fn parse_scopes(raw: &str) -> Result<Scopes, String> {
    raw.parse()
        .map_err(|e: octollm_core::auth::ScopeError| e.to_string())
}

const MAX_NAME: usize = 100;

pub async fn run(config: &Config, command: KeysCommand) -> anyhow::Result<ExitCode> {
    let embedded = compose::open_store(config).await?;
    let stores = compose::open_task_store(config, &embedded).await?;
    let (keys, audit) = (stores.keys, stores.audit);
    let record = |kind, key_id: &str, detail| AuditEntry {
        at: Utc::now(),
        kind,
        request_id: None,
        key_id: Some(key_id.to_owned()),
        detail,
    };
    let mut out = std::io::stdout().lock();
    match command {
        KeysCommand::Create { name, scopes } => {
            let name = name.trim();
            if name.is_empty()
                || name.chars().count() > MAX_NAME
                || name.chars().any(char::is_control)
            {
                anyhow::bail!("--name must be 1 to {MAX_NAME} printable characters");
            }
            let key = NewApiKey::generate();
            let scopes_text = scopes.to_string();
            keys.create_key(&ApiKeyRecord {
                id: key.id.clone(),
                name: name.to_owned(),
                key_hash: key.hash,
                scopes,
                created_at: Utc::now(),
                revoked_at: None,
            })
            .await?;
            audit
                .record(&record(
                    AuditKind::KeyCreated,
                    &key.id,
                    serde_json::json!({"name": name, "scopes": scopes_text, "via": "cli"}),
                ))
                .await?;
            writeln!(out, "{}", key.key.expose())?;
            let mut err = std::io::stderr().lock();
            writeln!(
                err,
                "created key {} ({name}); it is shown once: store it now",
                key.id
            )?;
        }
        KeysCommand::List => {
            writeln!(
                out,
                "{:<12}  {:<8}  {:<20}  {:<40}  name",
                "id", "state", "created", "scopes"
            )?;
            for key in keys.list_keys().await? {
                let state = if key.revoked_at.is_some() {
                    "revoked"
                } else {
                    "active"
                };
                writeln!(
                    out,
                    "{:<12}  {:<8}  {:<20}  {:<40}  {}",
                    key.id,
                    state,
                    key.created_at.format("%Y-%m-%dT%H:%M:%SZ"),
                    key.scopes.to_string(),
                    key.name
                )?;
            }
        }
        KeysCommand::Revoke { id } => {
            if keys.revoke_key(&id, Utc::now()).await? {
                audit
                    .record(&record(
                        AuditKind::KeyRevoked,
                        &id,
                        serde_json::json!({"via": "cli"}),
                    ))
                    .await?;
                writeln!(out, "revoked {id}")?;
            } else {
                let mut err = std::io::stderr().lock();
                writeln!(err, "no active key {id}")?;
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `octollm tokens keygen`: a new Ed25519 signing key for the orchestrators and its public key
/// for the arm services, as the environment lines that configure them.
pub fn token_keygen() -> anyhow::Result<ExitCode> {
    let (seed, public) = octollm_core::token::generate_keypair();
    let mut out = std::io::stdout().lock();
    writeln!(out, "OCTOLLM_TOKEN_SIGNING_KEY={}", seed.expose())?;
    writeln!(out, "OCTOLLM_TOKEN_PUBLIC_KEYS={public}")?;
    let mut err = std::io::stderr().lock();
    writeln!(
        err,
        "the signing key goes to the orchestrators only (a secret); the public key to every arm \
         service (while rotating: old,new)"
    )?;
    Ok(ExitCode::SUCCESS)
}

/// `octollm tokens revoke ID [--task]`: until the longest a token can live from now.
pub async fn token_revoke(config: &Config, id: &str, task: bool) -> anyhow::Result<ExitCode> {
    if config.reflex.redis_url.is_empty() {
        anyhow::bail!(
            "revocations are shared through Redis: set REDIS_URL to the one the arm services use \
             (one process alone keeps its own list; an arm service also takes POST /tokens/revoked)"
        );
    }
    let valid = if task {
        octollm_core::TaskId::parse(id).is_ok()
    } else {
        (1..=128).contains(&id.len())
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if !valid {
        anyhow::bail!(
            "{id:?} is not a {}",
            if task {
                "task id (task_ and 16 letters or digits)"
            } else {
                "token id"
            }
        );
    }
    let revocations = crate::compose::revocations(config)?;
    let until = chrono::Utc::now()
        .timestamp()
        .saturating_add(i64::try_from(config.arms.token_ttl_seconds).unwrap_or(i64::MAX / 2));
    if task {
        revocations.revoke_task(id, until).await?;
    } else {
        revocations.revoke_token(id, until).await?;
    }
    writeln!(
        std::io::stderr().lock(),
        "revoked {} {id} on every arm instance that reads this Redis",
        if task { "every token of task" } else { "token" }
    )?;
    Ok(ExitCode::SUCCESS)
}
