//! Anthropic's Messages API (`POST {base_url}/v1/messages`). System messages go in `system`;
//! JSON output is asked for as a forced tool call whose input schema is the wanted schema
//! (the API's way to constrain output), and the tool call's input is the answer's text.

use std::time::Duration;

use async_trait::async_trait;
use octollm_core::Secret;
use serde::Deserialize;

use crate::provider::{
    Completion, CompletionRequest, FinishReason, LlmError, LlmProvider, OutputFormat, Role,
};

/// The API version this client speaks (the `anthropic-version` header).
pub const API_VERSION: &str = "2023-06-01";

#[derive(Debug, Clone)]
pub struct AnthropicConfig {
    /// `https://api.anthropic.com` (without `/v1`).
    pub base_url: String,
    pub api_key: Secret,
    pub model: String,
    pub timeout: Duration,
}

pub struct AnthropicProvider {
    config: AnthropicConfig,
    client: reqwest::Client,
    endpoint: String,
}

impl AnthropicProvider {
    pub fn new(config: AnthropicConfig) -> Result<Self, LlmError> {
        if config.model.trim().is_empty() {
            return Err(LlmError::Config(
                "the Anthropic provider needs a model name (e.g. claude-3-5-haiku-latest)".into(),
            ));
        }
        if config.api_key.is_empty() {
            return Err(LlmError::Config(
                "the Anthropic provider needs an API key (ANTHROPIC_API_KEY)".into(),
            ));
        }
        let base = config.base_url.trim_end_matches('/');
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(LlmError::Config(format!(
                "base URL must start with http:// or https://, got {base:?}"
            )));
        }
        let base = base.strip_suffix("/v1").unwrap_or(base);
        let endpoint = format!("{base}/v1/messages");
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
struct MessagesResponse {
    #[serde(default)]
    model: Option<String>,
    content: Vec<Block>,
    #[serde(default)]
    stop_reason: Option<String>,
    usage: ApiUsage,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Block {
    Text {
        text: String,
    },
    ToolUse {
        input: serde_json::Value,
    },
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
struct ApiUsage {
    input_tokens: u64,
    output_tokens: u64,
}

/// The tool a JSON answer is forced through.
const OUTPUT_TOOL: &str = "answer";

#[async_trait]
impl LlmProvider for AnthropicProvider {
    fn model(&self) -> &str {
        &self.config.model
    }

    async fn complete(&self, request: CompletionRequest) -> Result<Completion, LlmError> {
        let system: Vec<&str> = request
            .messages
            .iter()
            .filter(|m| m.role == Role::System)
            .map(|m| m.content.as_str())
            .collect();
        let messages: Vec<serde_json::Value> = request
            .messages
            .iter()
            .filter(|m| m.role != Role::System)
            .map(|m| {
                serde_json::json!({
                    "role": if m.role == Role::Assistant { "assistant" } else { "user" },
                    "content": m.content,
                })
            })
            .collect();
        let mut body = serde_json::json!({
            "model": self.config.model,
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "messages": messages,
        });
        if !system.is_empty() {
            body["system"] = serde_json::Value::from(system.join("\n\n"));
        }
        let json_output = matches!(request.output, OutputFormat::Json { .. });
        if let OutputFormat::Json { schema, .. } = &request.output {
            body["tools"] = serde_json::json!([{
                "name": OUTPUT_TOOL,
                "description": "Give the answer in this form.",
                "input_schema": schema,
            }]);
            body["tool_choice"] = serde_json::json!({"type": "tool", "name": OUTPUT_TOOL});
        }
        let response = self
            .client
            .post(&self.endpoint)
            .header("x-api-key", self.config.api_key.expose())
            .header("anthropic-version", API_VERSION)
            .json(&body)
            .send()
            .await
            .map_err(|e| {
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
        // 529: overloaded, like a 5xx.
        if status.is_server_error() || status.as_u16() == 529 {
            return Err(LlmError::Unavailable(format!("provider answered {status}")));
        }
        if !status.is_success() {
            return Err(LlmError::Rejected(format!("provider answered {status}")));
        }
        let parsed: MessagesResponse = response
            .json()
            .await
            .map_err(|e| LlmError::InvalidResponse(format!("not a Messages answer: {e}")))?;
        let mut text = String::new();
        let mut tool_input = None;
        for block in parsed.content {
            match block {
                Block::Text { text: t } => text.push_str(&t),
                Block::ToolUse { input } => tool_input = Some(input),
                Block::Other => {}
            }
        }
        if json_output {
            text = match tool_input {
                Some(input) => input.to_string(),
                None => {
                    return Err(LlmError::InvalidResponse(
                        "asked for JSON, the answer has no tool call".into(),
                    ));
                }
            };
        }
        Ok(Completion {
            text,
            prompt_tokens: parsed.usage.input_tokens,
            completion_tokens: parsed.usage.output_tokens,
            model: parsed.model.unwrap_or_else(|| self.config.model.clone()),
            finish_reason: match parsed.stop_reason.as_deref() {
                Some("max_tokens") => FinishReason::Length,
                _ => FinishReason::Stop,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;
    use crate::provider::Message;
    use axum::{Json, Router, http::HeaderMap, http::StatusCode, routing::post};

    async fn serve(router: Router) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        format!("http://{addr}")
    }

    fn provider(base_url: String) -> AnthropicProvider {
        AnthropicProvider::new(AnthropicConfig {
            base_url,
            api_key: Secret::new("sk-ant-test"),
            model: "claude-3-5-haiku-latest".into(),
            timeout: Duration::from_secs(5),
        })
        .unwrap()
    }

    #[tokio::test]
    async fn speaks_the_messages_api_and_forces_json_through_a_tool() {
        let router = Router::new().route(
            "/v1/messages",
            post(|headers: HeaderMap, Json(body): Json<serde_json::Value>| async move {
                assert_eq!(headers["x-api-key"], "sk-ant-test");
                assert_eq!(headers["anthropic-version"], API_VERSION);
                assert!(headers.get("authorization").is_none());
                assert_eq!(body["system"], "Be brief.");
                assert_eq!(body["messages"][0]["role"], "user");
                assert_eq!(body["max_tokens"], 64);
                let json = body.get("tools").is_some();
                if json {
                    assert_eq!(body["tool_choice"]["name"], OUTPUT_TOOL);
                    assert_eq!(body["tools"][0]["input_schema"]["type"], "object");
                }
                Json(serde_json::json!({
                    "model": "claude-3-5-haiku-20241022",
                    "content": if json {
                        serde_json::json!([{"type": "tool_use", "id": "t1", "name": OUTPUT_TOOL, "input": {"steps": []}}])
                    } else {
                        serde_json::json!([{"type": "text", "text": "hello"}])
                    },
                    "stop_reason": if json { "tool_use" } else { "max_tokens" },
                    "usage": {"input_tokens": 12, "output_tokens": 3}
                }))
            }),
        );
        let p = provider(serve(router).await);
        let messages = vec![Message::system("Be brief."), Message::user("hi")];
        let text = p
            .complete(CompletionRequest::new("t", messages.clone(), 64))
            .await
            .unwrap();
        assert_eq!(text.text, "hello");
        assert_eq!((text.prompt_tokens, text.completion_tokens), (12, 3));
        assert_eq!(text.finish_reason, FinishReason::Length);
        assert_eq!(text.model, "claude-3-5-haiku-20241022");
        let json = p
            .complete(
                CompletionRequest::new("t", messages, 64)
                    .json(serde_json::json!({"type": "object"}), None),
            )
            .await
            .unwrap();
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&json.text).unwrap(),
            serde_json::json!({"steps": []})
        );
    }

    #[tokio::test]
    async fn overload_and_limits_are_retryable_and_refusals_are_not() {
        for (status, retryable) in [(429, true), (529, true), (500, true), (400, false)] {
            let router = Router::new().route(
                "/v1/messages",
                post(move || async move { StatusCode::from_u16(status).unwrap() }),
            );
            let p = provider(serve(router).await);
            let e = p
                .complete(CompletionRequest::new("t", vec![Message::user("hi")], 8))
                .await
                .unwrap_err();
            assert_eq!(e.is_retryable(), retryable, "{status}: {e}");
        }
    }

    #[test]
    fn refuses_a_configuration_it_cannot_use() {
        let config = |model: &str, key: &str, url: &str| AnthropicConfig {
            base_url: url.into(),
            api_key: Secret::new(key),
            model: model.into(),
            timeout: Duration::from_secs(1),
        };
        assert!(AnthropicProvider::new(config("", "k", "https://api.anthropic.com")).is_err());
        assert!(AnthropicProvider::new(config("m", "", "https://api.anthropic.com")).is_err());
        assert!(AnthropicProvider::new(config("m", "k", "api.anthropic.com")).is_err());
        let p = AnthropicProvider::new(config("m", "k", "https://api.anthropic.com/v1/")).unwrap();
        assert_eq!(p.endpoint, "https://api.anthropic.com/v1/messages");
    }
}
