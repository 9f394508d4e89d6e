//! OpenAI-compatible Chat Completions: OpenAI, Azure OpenAI, vLLM, Ollama, the llama.cpp
//! server, LM Studio. JSON output is requested with `response_format`. Azure: the base URL
//! is the deployment's (`https://RESOURCE.openai.azure.com/openai/deployments/NAME`) and an
//! `api_version` is set; the key then goes in the `api-key` header and the version in the
//! query, as Azure wants.

use std::time::Duration;

use async_trait::async_trait;
use octollm_core::Secret;
use serde::Deserialize;

use crate::provider::{
    Completion, CompletionRequest, FinishReason, LlmError, LlmProvider, OutputFormat,
};

#[derive(Debug, Clone)]
pub struct OpenAiConfig {
    /// e.g. `https://api.openai.com/v1` or `http://127.0.0.1:11434/v1`.
    pub base_url: String,
    pub api_key: Secret,
    pub model: String,
    pub timeout: Duration,
    /// Azure's `api-version` (e.g. `2024-06-01`); `None` for every other server.
    pub api_version: Option<String>,
}

pub struct OpenAiProvider {
    config: OpenAiConfig,
    client: reqwest::Client,
    endpoint: String,
}

impl OpenAiProvider {
    pub fn new(config: OpenAiConfig) -> Result<Self, LlmError> {
        if config.model.trim().is_empty() {
            return Err(LlmError::Config(
                "an OpenAI-compatible provider needs a model name".into(),
            ));
        }
        let base = config.base_url.trim_end_matches('/');
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(LlmError::Config(format!(
                "base URL must start with http:// or https://, got {base:?}"
            )));
        }
        let endpoint = match config.api_version.as_deref().filter(|v| !v.is_empty()) {
            None => format!("{base}/chat/completions"),
            Some(version) => {
                if !version
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
                {
                    return Err(LlmError::Config(format!(
                        "api_version {version:?} is not a version like 2024-06-01"
                    )));
                }
                format!("{base}/chat/completions?api-version={version}")
            }
        };
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .build()
            .map_err(|e| LlmError::Config(format!("cannot build HTTP client: {e}")))?;
        Ok(Self {
            config,
            client,
            endpoint,
        })
    }
}

#[derive(Deserialize)]
struct ChatResponse {
    #[serde(default)]
    model: Option<String>,
    choices: Vec<Choice>,
    #[serde(default)]
    usage: Option<ApiUsage>,
}

#[derive(Deserialize)]
struct Choice {
    message: ChoiceMessage,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct ChoiceMessage {
    #[serde(default)]
    content: Option<String>,
}

#[derive(Deserialize)]
struct ApiUsage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
}

#[async_trait]
impl LlmProvider for OpenAiProvider {
    fn model(&self) -> &str {
        &self.config.model
    }

    async fn complete(&self, request: CompletionRequest) -> Result<Completion, LlmError> {
        let mut body = serde_json::json!({
            "model": self.config.model,
            "messages": request.messages,
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
        });
        if let OutputFormat::Json { schema, .. } = &request.output {
            body["response_format"] = serde_json::json!({
                "type": "json_schema",
                "json_schema": {"name": "output", "schema": schema},
            });
        }
        let mut http = self.client.post(&self.endpoint).json(&body);
        if !self.config.api_key.is_empty() {
            http = if self.config.api_version.is_some() {
                http.header("api-key", self.config.api_key.expose())
            } else {
                http.bearer_auth(self.config.api_key.expose())
            };
        }
        let response = http.send().await.map_err(|e| {
            // Never include the URL's query or headers: only the kind of failure.
            LlmError::Unavailable(if e.is_timeout() {
                "timed out".into()
            } else {
                "connection failed".into()
            })
        })?;
        let status = response.status();
        if status.as_u16() == 429 {
            let retry_after_seconds = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok());
            return Err(LlmError::RateLimited {
                retry_after_seconds,
            });
        }
        if status.is_server_error() {
            return Err(LlmError::Unavailable(format!("provider answered {status}")));
        }
        if !status.is_success() {
            return Err(LlmError::Rejected(format!("provider answered {status}")));
        }
        let parsed: ChatResponse = response
            .json()
            .await
            .map_err(|e| LlmError::InvalidResponse(format!("not a chat completion: {e}")))?;
        let choice = parsed
            .choices
            .into_iter()
            .next()
            .ok_or_else(|| LlmError::InvalidResponse("no choices in the response".into()))?;
        let text = choice.message.content.unwrap_or_default();
        let usage = parsed.usage.ok_or_else(|| {
            LlmError::InvalidResponse("the response has no usage; cannot account for tokens".into())
        })?;
        Ok(Completion {
            text,
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
            model: parsed.model.unwrap_or_else(|| self.config.model.clone()),
            finish_reason: match choice.finish_reason.as_deref() {
                Some("length") => FinishReason::Length,
                _ => FinishReason::Stop,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::Message;
    use axum::{Json, Router, http::HeaderMap, routing::post};

    async fn serve(router: Router) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        format!("http://{addr}/v1")
    }

    fn provider(base_url: String) -> OpenAiProvider {
        OpenAiProvider::new(OpenAiConfig {
            base_url,
            api_key: Secret::new("sk-test"),
            model: "m".into(),
            timeout: Duration::from_secs(5),
            api_version: None,
        })
        .unwrap()
    }

    #[tokio::test]
    async fn azure_gets_its_key_header_and_api_version() {
        let router = Router::new().route(
            "/openai/deployments/gpt4o/chat/completions",
            post(
                |headers: HeaderMap,
                 axum::extract::Query(query): axum::extract::Query<
                    std::collections::HashMap<String, String>,
                >| async move {
                    assert_eq!(headers["api-key"], "azure-key");
                    assert!(headers.get("authorization").is_none());
                    assert_eq!(query["api-version"], "2024-06-01");
                    Json(serde_json::json!({
                        "choices": [{"message": {"content": "ok"}, "finish_reason": "stop"}],
                        "usage": {"prompt_tokens": 1, "completion_tokens": 1}
                    }))
                },
            ),
        );
        let base = serve(router)
            .await
            .replace("/v1", "/openai/deployments/gpt4o");
        let p = OpenAiProvider::new(OpenAiConfig {
            base_url: base,
            api_key: Secret::new("azure-key"),
            model: "gpt-4o".into(),
            timeout: Duration::from_secs(5),
            api_version: Some("2024-06-01".into()),
        })
        .unwrap();
        let c = p
            .complete(CompletionRequest::new("t", vec![Message::user("hi")], 8))
            .await
            .unwrap();
        assert_eq!(c.text, "ok");
        let bad = OpenAiProvider::new(OpenAiConfig {
            base_url: "https://x.openai.azure.com/openai/deployments/d".into(),
            api_key: Secret::new("k"),
            model: "m".into(),
            timeout: Duration::from_secs(5),
            api_version: Some("2024&evil=1".into()),
        });
        assert!(bad.is_err());
    }

    #[tokio::test]
    async fn sends_schema_and_key_and_reads_usage() {
        let router = Router::new().route(
            "/v1/chat/completions",
            post(|headers: HeaderMap, Json(body): Json<serde_json::Value>| async move {
                assert_eq!(headers["authorization"], "Bearer sk-test");
                assert_eq!(body["response_format"]["type"], "json_schema");
                assert_eq!(body["max_tokens"], 64);
                Json(serde_json::json!({
                    "model": "m-2024",
                    "choices": [{"message": {"role": "assistant", "content": "{}"}, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 11, "completion_tokens": 2}
                }))
            }),
        );
        let p = provider(serve(router).await);
        let req = CompletionRequest::new("t", vec![Message::user("hi")], 64)
            .json(serde_json::json!({"type": "object"}), None);
        let c = p.complete(req).await.unwrap();
        assert_eq!(
            (c.prompt_tokens, c.completion_tokens, c.model.as_str()),
            (11, 2, "m-2024")
        );
    }

    #[tokio::test]
    async fn maps_errors() {
        let router = Router::new()
            .route(
                "/a/v1/chat/completions",
                post(|| async {
                    (
                        axum::http::StatusCode::TOO_MANY_REQUESTS,
                        [("retry-after", "7")],
                        "",
                    )
                }),
            )
            .route(
                "/b/v1/chat/completions",
                post(|| async { (axum::http::StatusCode::BAD_GATEWAY, "") }),
            )
            .route(
                "/c/v1/chat/completions",
                post(|| async { (axum::http::StatusCode::BAD_REQUEST, "") }),
            );
        let base = serve(router).await;
        let root = base.trim_end_matches("/v1");
        let req = CompletionRequest::new("t", vec![Message::user("hi")], 8);
        let err = provider(format!("{root}/a/v1"))
            .complete(req.clone())
            .await
            .unwrap_err();
        assert_eq!(
            err,
            LlmError::RateLimited {
                retry_after_seconds: Some(7)
            }
        );
        let err = provider(format!("{root}/b/v1"))
            .complete(req.clone())
            .await
            .unwrap_err();
        assert!(err.is_retryable());
        let err = provider(format!("{root}/c/v1"))
            .complete(req)
            .await
            .unwrap_err();
        assert!(matches!(err, LlmError::Rejected(_)));
    }

    #[test]
    fn refuses_bad_urls() {
        assert!(
            OpenAiProvider::new(OpenAiConfig {
                base_url: "ftp://x".into(),
                api_key: Secret::default(),
                model: "m".into(),
                timeout: Duration::from_secs(1),
                api_version: None,
            })
            .is_err()
        );
    }
}
