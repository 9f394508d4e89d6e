//! An arm service announcing itself to the arm registry (`ARM_REGISTRY_URL`): registers
//! at start, renews every third of the registration's lifetime, retries while the registry
//! is unreachable, and deregisters first thing on shutdown so no new call is sent its way.

use std::time::Duration;

use octollm_core::{ArmKind, Secret};
use octollm_http::registry::{Registered, RegistrationRequest};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub struct Announcement {
    pub registry_url: String,
    pub token: Secret,
    pub arm: ArmKind,
    /// This instance's base URL as the orchestrators reach it.
    pub url: String,
}

/// Wait before retrying a failed registration.
const RETRY: Duration = Duration::from_secs(2);

pub async fn announce(announcement: Announcement, shutdown: CancellationToken) {
    let http = match reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            warn!(error = %e, "arm registry: no HTTP client; not registering");
            return;
        }
    };
    let body = RegistrationRequest {
        arm: announcement.arm,
        url: announcement.url.clone(),
    };
    let mut registered = false;
    loop {
        let wait = match register(&http, &announcement, &body).await {
            Ok(ttl) => {
                if !registered {
                    info!(registry = %announcement.registry_url, url = %announcement.url, "registered with the arm registry");
                    registered = true;
                }
                (ttl / 3).max(Duration::from_secs(1))
            }
            Err(e) => {
                warn!(registry = %announcement.registry_url, error = %e, "arm registry: registration failed; retrying");
                RETRY
            }
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = shutdown.cancelled() => break,
        }
    }
    let left = http
        .delete(&announcement.registry_url)
        .bearer_auth(announcement.token.expose())
        .timeout(Duration::from_secs(2))
        .json(&body)
        .send()
        .await;
    match left {
        Ok(r) if r.status().is_success() => info!("deregistered from the arm registry"),
        Ok(r) => warn!(
            status = r.status().as_u16(),
            "arm registry: deregistration refused"
        ),
        Err(e) => {
            warn!(error = %e, "arm registry: deregistration failed; the registration lapses by itself")
        }
    }
}

/// One registration; the lifetime the registry granted.
async fn register(
    http: &reqwest::Client,
    announcement: &Announcement,
    body: &RegistrationRequest,
) -> Result<Duration, String> {
    let response = http
        .post(&announcement.registry_url)
        .bearer_auth(announcement.token.expose())
        .json(body)
        .send()
        .await
        .map_err(|e| {
            if e.is_connect() {
                "unreachable".to_owned()
            } else {
                e.to_string()
            }
        })?;
    let status = response.status();
    if !status.is_success() {
        let text = response.text().await.unwrap_or_default();
        return Err(format!(
            "status {}: {}",
            status.as_u16(),
            text.chars().take(300).collect::<String>()
        ));
    }
    let granted: Registered = response.json().await.map_err(|e| e.to_string())?;
    Ok(Duration::from_secs(granted.ttl_seconds))
}
