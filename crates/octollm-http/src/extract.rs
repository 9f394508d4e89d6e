//! A JSON extractor that answers malformed input in our error shape: 415 without a JSON
//! content type, 413 over the body limit, 400 for bad JSON or unknown fields.

use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, Request};
use bytes::Bytes;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// The body limit, set once by the router (axum's `DefaultBodyLimit` enforces it; this
/// value only words the error).
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit(pub usize);

pub struct ApiJson<T>(pub T);

fn is_json(request: &Request) -> bool {
    request
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|mime| {
            let mime = mime.trim().to_ascii_lowercase();
            mime == "application/json"
                || (mime.starts_with("application/") && mime.ends_with("+json"))
        })
        .unwrap_or(false)
}

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(&request) {
            return Err(ApiError::UnsupportedMediaType);
        }
        let limit = request
            .extensions()
            .get::<BodyLimit>()
            .map(|l| l.0)
            .unwrap_or(1024 * 1024);
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|e| match e {
                BytesRejection::FailedToBufferBody(_)
                    if e.status() == http::StatusCode::PAYLOAD_TOO_LARGE =>
                {
                    ApiError::PayloadTooLarge { limit }
                }
                other => {
                    ApiError::validation(format!("cannot read the body: {}", other.body_text()))
                }
            })?;
        let value = serde_json::from_slice::<T>(&bytes).map_err(|e| {
            let kind = if e.is_syntax() || e.is_eof() {
                "malformed JSON"
            } else {
                "invalid request"
            };
            ApiError::Validation {
                message: format!("{kind}: {e}"),
                details: Some(serde_json::json!({"line": e.line(), "column": e.column()})),
            }
        })?;
        Ok(ApiJson(value))
    }
}
