//! Who holds the API keys the reflex layer checks. It keeps none itself: in the distributed
//! mode it asks the orchestrator (`GET /auth/whoami`, answers cached for
//! [`ANSWER_TTL`]); in the embedded mode the keys are in this process.
//!
//! Two uses: [`Keys::identify`] names a verified key for the per-key rate limit and the
//! verdict cache's tenant, silently (a made-up key is no key: it gets the per-client limit
//! only); [`Keys::admit`] is the refusal of a route that needs a key, recorded where the keys
//! live.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use http::HeaderMap;
use octollm_core::Scope;
use sha2::{Digest, Sha256};

use crate::api::WhoAmI;
use crate::auth::{Access, Auth};
use crate::error::ApiError;

/// How long an orchestrator's answer about a key is reused: a revoked key keeps its rate-limit
/// bucket and its cache namespace at most this long (the orchestrator refuses it at once).
pub const ANSWER_TTL: Duration = Duration::from_secs(30);

/// What a request's key is, as far as the rate limit and the cache care.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// A key that verified, by its id.
    Key(String),
    /// No key, or one that did not verify, or none could be checked.
    Unverified,
}

#[async_trait]
pub trait Keys: Send + Sync {
    /// The request's verified key, if it has one; records nothing.
    async fn identify(&self, headers: &HeaderMap) -> Identity;

    /// Who the request acts as on a route that needs `access`, or its refusal (401, 403, or
    /// 503 when the keys cannot be asked).
    async fn admit(&self, access: Access, headers: &HeaderMap) -> Result<WhoAmI, ApiError>;
}

fn allowed(who: WhoAmI, access: Access) -> Result<WhoAmI, ApiError> {
    match access {
        Access::Scope(scope)
            if !who.scopes.contains(&scope) && !who.scopes.contains(&Scope::Admin) =>
        {
            Err(ApiError::Forbidden(format!(
                "this API key lacks the {scope} scope"
            )))
        }
        _ => Ok(who),
    }
}

/// The keys of this process (the embedded mode).
pub struct LocalKeys(pub Auth);

#[async_trait]
impl Keys for LocalKeys {
    async fn identify(&self, headers: &HeaderMap) -> Identity {
        match self.0.identify(headers).await {
            Some(id) => Identity::Key(id),
            None => Identity::Unverified,
        }
    }

    async fn admit(&self, access: Access, headers: &HeaderMap) -> Result<WhoAmI, ApiError> {
        let principal = self.0.admit(access, headers).await?;
        Ok(WhoAmI {
            key_id: principal.key_id.clone(),
            scopes: principal.scopes.iter().collect(),
        })
    }
}

/// No keys anywhere: a reflex service without an orchestrator, which only starts on
/// loopback or where the network authenticates. Everyone may do everything.
pub struct NoKeys;

#[async_trait]
impl Keys for NoKeys {
    async fn identify(&self, _headers: &HeaderMap) -> Identity {
        Identity::Unverified
    }

    async fn admit(&self, _access: Access, _headers: &HeaderMap) -> Result<WhoAmI, ApiError> {
        Ok(WhoAmI {
            key_id: None,
            scopes: octollm_core::auth::Scopes::all().iter().collect(),
        })
    }
}

/// The orchestrator's answer about one presented credential (or none).
#[derive(Clone)]
enum Answer {
    Known(Arc<WhoAmI>),
    /// 401: not a valid key, with the orchestrator's message.
    Refused(Arc<str>),
}

/// The keys of the orchestrators (the distributed mode; they share one database, so any
/// of them answers for all).
pub struct OrchestratorKeys {
    bases: Vec<String>,
    client: reqwest::Client,
    answers: moka::sync::Cache<[u8; 32], Answer>,
}

impl OrchestratorKeys {
    /// `urls`: one orchestrator's base URL, or several separated by commas.
    pub fn new(urls: &str, client: reqwest::Client) -> Self {
        Self {
            bases: urls
                .split(',')
                .map(|u| u.trim().trim_end_matches('/').to_owned())
                .filter(|u| !u.is_empty())
                .collect(),
            client,
            answers: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(ANSWER_TTL)
                .build(),
        }
    }

    /// The credential headers a request presents, and a digest of them for the cache.
    fn credentials(headers: &HeaderMap) -> (Vec<(&'static str, http::HeaderValue)>, [u8; 32]) {
        let mut digest = Sha256::new();
        let mut sent = Vec::new();
        for name in ["authorization", "x-api-key"] {
            digest.update(name.as_bytes());
            if let Some(v) = headers.get(name) {
                digest.update(b"=");
                digest.update(v.as_bytes());
                sent.push((name, v.clone()));
            }
            digest.update(b"\n");
        }
        (sent, digest.finalize().into())
    }

    async fn ask(&self, headers: &HeaderMap) -> Result<Answer, ApiError> {
        let (sent, digest) = Self::credentials(headers);
        if let Some(answer) = self.answers.get(&digest) {
            return Ok(answer);
        }
        let down = |cause: String| ApiError::DependencyDown {
            dependency: "orchestrator",
            cause,
        };
        // The first orchestrator that can be reached answers.
        let mut failure = down("no orchestrator is configured".into());
        let mut answered = None;
        for base in &self.bases {
            let mut ask = self
                .client
                .get(format!("{base}/auth/whoami"))
                .timeout(Duration::from_secs(5));
            for (name, value) in &sent {
                ask = ask.header(*name, value.clone());
            }
            match ask.send().await {
                Ok(r) if r.status() != reqwest::StatusCode::SERVICE_UNAVAILABLE => {
                    answered = Some(r);
                    break;
                }
                Ok(r) => failure = down(format!("{base} answered {}", r.status())),
                Err(e) => failure = down(e.to_string()),
            }
        }
        let Some(response) = answered else {
            return Err(failure);
        };
        let answer = match response.status().as_u16() {
            200 => Answer::Known(Arc::new(
                response.json().await.map_err(|e| down(e.to_string()))?,
            )),
            401 => {
                let body: serde_json::Value = response.json().await.unwrap_or_default();
                let message = body["message"]
                    .as_str()
                    .unwrap_or("a valid API key is required");
                Answer::Refused(message.into())
            }
            status => return Err(down(format!("whoami answered {status}"))),
        };
        self.answers.insert(digest, answer.clone());
        Ok(answer)
    }
}

#[async_trait]
impl Keys for OrchestratorKeys {
    async fn identify(&self, headers: &HeaderMap) -> Identity {
        match self.ask(headers).await {
            Ok(Answer::Known(who)) => who
                .key_id
                .clone()
                .map_or(Identity::Unverified, Identity::Key),
            Ok(Answer::Refused(_)) => Identity::Unverified,
            Err(e) => {
                tracing::warn!(error = %e, "cannot check an API key with the orchestrator");
                Identity::Unverified
            }
        }
    }

    async fn admit(&self, access: Access, headers: &HeaderMap) -> Result<WhoAmI, ApiError> {
        match self.ask(headers).await? {
            Answer::Known(who) => allowed(WhoAmI::clone(&who), access),
            Answer::Refused(message) => Err(ApiError::Unauthorized(message.to_string())),
        }
    }
}
