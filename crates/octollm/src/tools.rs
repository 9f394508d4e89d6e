//! Small commands: check-config, migrate, model pull, kb add.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use octollm_arms::retriever::DocumentRequest;
use octollm_arms::{Handler, Ingest};

use crate::compose;
use crate::config::Config;

pub fn check_config(config: &Config) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "# configuration is valid; secrets are masked")?;
    write!(out, "{}", config.to_masked_toml()?)?;
    Ok(ExitCode::SUCCESS)
}

pub async fn migrate(config: &Config) -> anyhow::Result<ExitCode> {
    // The SQLite file always: it holds the knowledge base in both modes.
    compose::open_store(config).await?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "database at {} is up to date",
        config.database_path().display()
    )?;
    if let crate::config::Database::Postgres(url) = config.database() {
        compose::connect_postgres(&url, config)
            .await?
            .migrate()
            .await
            .context("cannot migrate the PostgreSQL schema")?;
        writeln!(
            out,
            "database at {} is up to date",
            compose::without_credentials(&url)
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn model_pull(config: &Config) -> anyhow::Result<ExitCode> {
    let dir = &config.llm.model_dir;
    let report = octollm_llm::models::pull(dir).await?;
    let mut out = std::io::stdout().lock();
    for p in &report.fetched {
        writeln!(out, "fetched  {}", p.display())?;
    }
    for p in &report.already_present {
        writeln!(out, "present  {}", p.display())?;
    }
    Ok(ExitCode::SUCCESS)
}

fn collect_files(path: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    if path.is_file() {
        out.push(path.to_path_buf());
        return Ok(());
    }
    let mut entries: Vec<_> = std::fs::read_dir(path)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.path());
    for entry in entries {
        let p = entry.path();
        if p.is_dir() {
            collect_files(&p, out)?;
        } else if matches!(
            p.extension().and_then(|e| e.to_str()),
            Some("md" | "txt" | "rst")
        ) {
            out.push(p);
        }
    }
    Ok(())
}

pub async fn kb_add(
    config: &Config,
    path: &Path,
    source: Option<String>,
) -> anyhow::Result<ExitCode> {
    let mut files = Vec::new();
    collect_files(path, &mut files).with_context(|| format!("cannot read {}", path.display()))?;
    if files.is_empty() {
        anyhow::bail!("no .md, .txt or .rst files under {}", path.display());
    }
    let store = compose::open_store(config).await?;
    let knowledge = compose::knowledge(config, &store).await?;
    let embedder = std::sync::Arc::new(compose::LazyEmbedder::new(config.embedding_model_path()));
    let retriever = octollm_arms::retriever::Retriever::new(knowledge, embedder);
    let mut out = std::io::stdout().lock();
    for file in files {
        let content = std::fs::read_to_string(&file)
            .with_context(|| format!("cannot read {} as UTF-8 text", file.display()))?;
        let request = DocumentRequest {
            content,
            source: source.clone().unwrap_or_else(|| file.display().to_string()),
            metadata: Default::default(),
        };
        let ctx = octollm_arms::CallContext::standalone(
            "kb-add",
            octollm_core::budget::BudgetTracker::new(
                &Default::default(),
                chrono::Utc::now().timestamp_millis(),
                Default::default(),
            ),
        );
        let added = Handler::<Ingest>::handle(&retriever, request, ctx)
            .await
            .with_context(|| format!("cannot add {}", file.display()))?;
        writeln!(
            out,
            "added {} ({} chunks, document {})",
            file.display(),
            added.response.chunks,
            added.response.document_id
        )?;
    }
    Ok(ExitCode::SUCCESS)
}
