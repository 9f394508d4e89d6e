//! Clients of a running server: `octollm task …` and `octollm healthcheck`.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Subcommand;
use futures::StreamExt;
use octollm_core::Secret;

#[derive(Debug, Subcommand)]
pub enum TaskCommand {
    /// Submit a task; prints its id.
    Submit {
        goal: String,
        #[arg(long = "criterion")]
        criteria: Vec<String>,
        #[arg(long)]
        max_tokens: Option<u64>,
        #[arg(long)]
        idempotency_key: Option<String>,
    },
    /// Print a task as JSON.
    Status { id: String },
    /// Follow a task's events until it ends.
    Watch { id: String },
    /// Cancel a task.
    Cancel { id: String },
    /// List recent tasks.
    List {
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
}

fn http(api_key: Option<&Secret>) -> anyhow::Result<reqwest::Client> {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(key) = api_key {
        let mut value = reqwest::header::HeaderValue::from_str(key.expose())
            .context("the API key is not a valid header value")?;
        value.set_sensitive(true);
        headers.insert("x-api-key", value);
    }
    Ok(reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .default_headers(headers)
        .build()?)
}

async fn answer(response: reqwest::Response) -> anyhow::Result<serde_json::Value> {
    let status = response.status();
    let body: serde_json::Value = response.json().await.unwrap_or(serde_json::Value::Null);
    if !status.is_success() {
        let message = body
            .get("message")
            .and_then(|m| m.as_str())
            .unwrap_or("no message");
        let code = body.get("code").and_then(|m| m.as_str()).unwrap_or("error");
        anyhow::bail!("server answered {status}: {code}: {message}");
    }
    Ok(body)
}

pub async fn task(
    server: &str,
    api_key: Option<&Secret>,
    command: TaskCommand,
) -> anyhow::Result<ExitCode> {
    let base = server.trim_end_matches('/');
    let client = http(api_key)?;
    let mut out = std::io::stdout().lock();
    match command {
        TaskCommand::Submit {
            goal,
            criteria,
            max_tokens,
            idempotency_key,
        } => {
            let mut body = serde_json::json!({"goal": goal, "acceptance_criteria": criteria});
            if let Some(t) = max_tokens {
                body["budget"] = serde_json::json!({"max_tokens": t});
            }
            if let Some(k) = idempotency_key {
                body["idempotency_key"] = serde_json::Value::String(k);
            }
            let v = answer(
                client
                    .post(format!("{base}/tasks"))
                    .json(&body)
                    .send()
                    .await
                    .context("cannot reach the server")?,
            )
            .await?;
            writeln!(
                out,
                "{}",
                v.get("task_id")
                    .and_then(|t| t.as_str())
                    .unwrap_or_default()
            )?;
        }
        TaskCommand::Status { id } => {
            let v = answer(
                client
                    .get(format!("{base}/tasks/{id}"))
                    .send()
                    .await
                    .context("cannot reach the server")?,
            )
            .await?;
            writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
            let completed = v.get("status").and_then(|s| s.as_str()) == Some("completed");
            return Ok(if completed {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            });
        }
        TaskCommand::Cancel { id } => {
            let v = answer(
                client
                    .delete(format!("{base}/tasks/{id}"))
                    .send()
                    .await
                    .context("cannot reach the server")?,
            )
            .await?;
            writeln!(
                out,
                "{}",
                v.get("status").and_then(|s| s.as_str()).unwrap_or_default()
            )?;
        }
        TaskCommand::List { status, limit } => {
            let mut url = format!("{base}/tasks?limit={limit}");
            if let Some(s) = status {
                url.push_str(&format!("&status={s}"));
            }
            let v = answer(
                client
                    .get(url)
                    .send()
                    .await
                    .context("cannot reach the server")?,
            )
            .await?;
            for t in v
                .get("tasks")
                .and_then(|t| t.as_array())
                .cloned()
                .unwrap_or_default()
            {
                let s = |k: &str| {
                    t.get(k)
                        .and_then(|v| v.as_str())
                        .unwrap_or_default()
                        .to_owned()
                };
                writeln!(
                    out,
                    "{}  {:<10}  {}  {}",
                    s("task_id"),
                    s("status"),
                    s("created_at"),
                    s("goal").chars().take(60).collect::<String>()
                )?;
            }
        }
        TaskCommand::Watch { id } => {
            let response = client
                .get(format!("{base}/tasks/{id}/events"))
                .send()
                .await
                .context("cannot reach the server")?;
            if !response.status().is_success() {
                answer(response).await?;
                return Ok(ExitCode::from(1));
            }
            let mut stream = response.bytes_stream();
            let mut buffer = String::new();
            let mut last_status = String::new();
            while let Some(chunk) = stream.next().await {
                buffer.push_str(&String::from_utf8_lossy(&chunk?));
                while let Some(end) = buffer.find("\n\n") {
                    let frame: String = buffer.drain(..end + 2).collect();
                    let kind = frame
                        .lines()
                        .find_map(|l| l.strip_prefix("event:"))
                        .map(str::trim)
                        .unwrap_or("");
                    let data = frame
                        .lines()
                        .find_map(|l| l.strip_prefix("data:"))
                        .map(str::trim)
                        .unwrap_or("");
                    if kind.is_empty() {
                        continue;
                    }
                    writeln!(out, "{kind:<15} {data}")?;
                    if kind == "status"
                        && let Ok(v) = serde_json::from_str::<serde_json::Value>(data)
                        && let Some(s) = v.pointer("/data/status").and_then(|s| s.as_str())
                    {
                        last_status = s.to_owned();
                    }
                }
            }
            return Ok(if last_status == "completed" {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            });
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn healthcheck(url: &str) -> anyhow::Result<ExitCode> {
    let response = http(None)?
        .get(url)
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    Ok(match response {
        Ok(r) if r.status().is_success() => ExitCode::SUCCESS,
        _ => ExitCode::from(1),
    })
}
