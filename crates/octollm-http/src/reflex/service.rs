//! The reflex layer's policy, knowing nothing of HTTP: verdicts and their cache, rate limits
//! per client and per key, and the screening of a submission before it is forwarded.

use std::sync::Arc;
use std::time::Instant;

use octollm_reflex::{Finding, FindingKind, Redactor, ScanOptions, ScanReport, Scanner};
use octollm_store::{CacheStats, Decision, RateLimiter, ResponseCache, StoreError, Tier};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub const INPUT_MAX_CHARS: usize = 50_000;
pub const DETECTIONS: &str = "octollm_reflex_detections_total";
pub const VERDICTS: &str = "octollm_reflex_verdicts_total";
pub const CACHE_LOOKUPS: &str = "octollm_reflex_cache_lookups_total";
pub const RATE_LIMITED: &str = "octollm_reflex_rate_limited_total";
pub const SCAN_SECONDS: &str = "octollm_reflex_scan_duration_seconds";
pub const CLASSIFIER_ERRORS: &str = "octollm_reflex_classifier_errors_total";

/// What happens when the rate-limit store is unreachable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailMode {
    /// Refuse with a clear 503 (never a misleading 429).
    Closed,
    /// Let the request through and log it.
    Open,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitSettings {
    pub enabled: bool,
    pub per_key: Tier,
    pub per_ip: Tier,
    pub on_store_error: FailMode,
}

impl Default for RateLimitSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            per_key: Tier {
                capacity: 600,
                window_seconds: 60,
            },
            per_ip: Tier {
                capacity: 300,
                window_seconds: 60,
            },
            on_store_error: FailMode::Closed,
        }
    }
}

/// `POST /preprocess`.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PreprocessRequest {
    /// 1 to 50,000 characters.
    #[schemars(length(min = 1, max = INPUT_MAX_CHARS))]
    pub input_text: String,
    #[serde(default = "yes")]
    pub check_cache: bool,
    #[serde(default = "yes")]
    pub detect_pii: bool,
    #[serde(default = "yes")]
    pub detect_injection: bool,
}

fn yes() -> bool {
    true
}

/// One detection: what, where (byte offsets into `input_text`), how bad, how sure.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Match {
    pub kind: FindingKind,
    #[serde(rename = "type")]
    pub label: String,
    pub start: usize,
    pub end: usize,
    pub severity: octollm_reflex::Severity,
    /// For the rules, how sure the rule is; for `kind: classifier`, the classifier's score.
    pub confidence: f32,
    /// For `kind: classifier`: the score at which it blocks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f32>,
}

impl From<&Finding> for Match {
    fn from(f: &Finding) -> Self {
        Match {
            kind: f.kind,
            label: f.label.to_owned(),
            start: f.start,
            end: f.end,
            severity: f.severity,
            confidence: f.confidence,
            threshold: None,
        }
    }
}

/// The matches of a report, the classifier's with its threshold.
fn matches_of<'a>(report: &ScanReport, findings: impl Iterator<Item = &'a Finding>) -> Vec<Match> {
    findings
        .map(|f| {
            let mut m = Match::from(f);
            if f.kind == FindingKind::Classifier {
                m.threshold = report.classifier.map(|c| c.threshold);
            }
            m
        })
        .collect()
}

/// The part of the answer that depends only on the input and the options: what is cached.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Verdict {
    pub pii_detected: bool,
    pub pii_types: Vec<String>,
    pub injection_detected: bool,
    pub risk_score: f32,
    pub sanitized_input: String,
    pub should_proceed: bool,
    pub matches: Vec<Match>,
}

/// Who is asking: a verified API key (its id, never the key) or nobody. Cache entries live
/// in this namespace, so one tenant's inputs never answer another's lookups; rate limits
/// count per tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant(String);

impl Tenant {
    /// The tenant of a verified key (by its id), or nobody.
    pub fn of(key_id: Option<&str>) -> Self {
        match key_id {
            Some(id) => Tenant(format!("key:{id}")),
            None => Tenant("anonymous".to_owned()),
        }
    }

    fn is_anonymous(&self) -> bool {
        self.0 == "anonymous"
    }
}

fn push_hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
}

/// The cache key covers the tenant, the detector version and every option that changes the
/// answer, and the exact input: offsets and the sanitised text depend on the exact bytes, so
/// two inputs that only normalise alike must not share an answer.
/// The verdict's cache key: detector version (v2: the rules of the external-corpus work and
/// the classifier), whether the classifier is on, tenant, options, text digest.
fn cache_key(tenant: &Tenant, request: &PreprocessRequest, classifier: bool) -> String {
    let digest = Sha256::digest(request.input_text.as_bytes());
    let mut key = String::with_capacity(48 + tenant.0.len() + 2 * digest.len());
    key.push_str(if classifier {
        "reflex:v2c:"
    } else {
        "reflex:v2:"
    });
    key.push_str(&tenant.0);
    key.push_str(if request.detect_pii {
        ":pii=1"
    } else {
        ":pii=0"
    });
    key.push_str(if request.detect_injection {
        ":inj=1:"
    } else {
        ":inj=0:"
    });
    push_hex(&mut key, &digest);
    key
}

fn kind_label(kind: FindingKind) -> &'static str {
    match kind {
        FindingKind::Pii => "pii",
        FindingKind::Secret => "secret",
        FindingKind::Injection => "injection",
        FindingKind::Classifier => "classifier",
    }
}

/// A verdict as JSON bytes: what the cache holds, and the start of the answer.
#[derive(Debug, Clone)]
pub struct CachedVerdict {
    /// A JSON object (`{…}`) with the fields of [`Verdict`].
    pub json: bytes::Bytes,
    pub should_proceed: bool,
}

impl CachedVerdict {
    fn serialise(verdict: &Verdict) -> Result<Self, serde_json::Error> {
        Ok(Self {
            json: serde_json::to_vec(verdict)?.into(),
            should_proceed: verdict.should_proceed,
        })
    }

    /// Accepts cached bytes only when they read back as a whole verdict object (a Redis entry
    /// may come from another version or have been written by hand).
    fn check(json: bytes::Bytes) -> Result<Self, serde_json::Error> {
        let verdict: Verdict = serde_json::from_slice(&json)?;
        if json.first() != Some(&b'{') || json.last() != Some(&b'}') {
            return Err(serde::de::Error::custom("not a compact JSON object"));
        }
        Ok(Self {
            json,
            should_proceed: verdict.should_proceed,
        })
    }
}

/// A preprocessing answer: the verdict and whether it came from the cache.
#[derive(Debug, Clone)]
pub struct Preprocessed {
    pub verdict: CachedVerdict,
    pub cache_hit: bool,
}

/// Why a request may not go on.
#[derive(Debug, thiserror::Error)]
pub enum ReflexError {
    #[error("input_text must be 1 to {INPUT_MAX_CHARS} characters, got {0}")]
    InputLength(usize),
    #[error("rate limit exceeded")]
    RateLimited(Decision),
    #[error("the rate-limit store is unavailable")]
    LimiterDown(StoreError),
    #[error("cannot serialise the verdict: {0}")]
    Serialise(#[from] serde_json::Error),
    #[error(transparent)]
    Store(StoreError),
}

/// The reflex layer's state and decisions.
#[derive(Clone)]
pub struct ReflexService {
    pub scanner: Scanner,
    pub cache: Arc<dyn ResponseCache>,
    pub limiter: Arc<dyn RateLimiter>,
    pub limits: RateLimitSettings,
}

impl ReflexService {
    fn verdict(&self, text: &str, options: ScanOptions) -> Verdict {
        let report = self.scanner.scan(text, options);
        if let Some(e) = &report.classifier_error {
            // The rules' verdict stands; the failure is counted and logged.
            metrics::counter!(CLASSIFIER_ERRORS).increment(1);
            tracing::warn!(error = %e, "injection classifier failed; rules only for this text");
        }
        for f in &report.findings {
            metrics::counter!(DETECTIONS, "kind" => kind_label(f.kind), "type" => f.label)
                .increment(1);
        }
        let sanitized_input = if report.pii_detected {
            Redactor::new().redact(text, &report.findings)
        } else {
            text.to_owned()
        };
        Verdict {
            pii_detected: report.pii_detected,
            pii_types: report.pii_types().into_iter().map(str::to_owned).collect(),
            injection_detected: report.injection_detected,
            risk_score: report.risk_score,
            sanitized_input,
            should_proceed: !report.should_block,
            matches: matches_of(&report, report.findings.iter()),
        }
    }

    /// The verdict on `request.input_text` for `tenant`, from the cache when allowed and
    /// present; a computed verdict is cached. A cache that fails costs a computation, never
    /// the answer.
    pub async fn preprocess(
        &self,
        tenant: &Tenant,
        request: &PreprocessRequest,
    ) -> Result<Preprocessed, ReflexError> {
        let chars = request.input_text.chars().count();
        if chars == 0 || chars > INPUT_MAX_CHARS {
            return Err(ReflexError::InputLength(chars));
        }
        let key = cache_key(tenant, request, self.scanner.classifier().is_some());
        let cached = if request.check_cache {
            let hit = self.cache.get(&key).await.unwrap_or_else(|e| {
                tracing::warn!(error = %e, "cache lookup failed; computing");
                None
            });
            metrics::counter!(CACHE_LOOKUPS, "result" => if hit.is_some() { "hit" } else { "miss" })
                .increment(1);
            hit.and_then(|bytes| match CachedVerdict::check(bytes) {
                Ok(cached) => Some(cached),
                Err(e) => {
                    tracing::warn!(error = %e, "unreadable cache entry; computing");
                    None
                }
            })
        } else {
            None
        };
        let cache_hit = cached.is_some();
        let verdict = match cached {
            Some(v) => v,
            None => {
                let options = ScanOptions {
                    detect_pii: request.detect_pii,
                    detect_injection: request.detect_injection,
                };
                let clock = Instant::now();
                let v = self.verdict(&request.input_text, options);
                metrics::histogram!(SCAN_SECONDS).record(clock.elapsed().as_secs_f64());
                let cached = CachedVerdict::serialise(&v)?;
                if let Err(e) = self.cache.put(&key, cached.json.clone()).await {
                    tracing::warn!(error = %e, "cache store failed");
                }
                cached
            }
        };
        metrics::counter!(VERDICTS, "verdict" => if verdict.should_proceed { "proceed" } else { "block" })
            .increment(1);
        Ok(Preprocessed { verdict, cache_hit })
    }

    /// Token buckets per client IP and per API key (when one is sent): the tighter answer,
    /// `None` when limits are off or the store is down and the service fails open.
    pub async fn admit(&self, ip: &str, tenant: &Tenant) -> Result<Option<Decision>, ReflexError> {
        if !self.limits.enabled {
            return Ok(None);
        }
        let mut checks = vec![(format!("ip:{ip}"), self.limits.per_ip)];
        if !tenant.is_anonymous() {
            checks.push((tenant.0.clone(), self.limits.per_key));
        }
        let mut tightest: Option<Decision> = None;
        for (identity, tier) in checks {
            match self.limiter.check(&identity, tier).await {
                Ok(d) => {
                    let tighter = tightest.is_none_or(|t| {
                        (!d.allowed && t.allowed)
                            || (d.allowed == t.allowed && d.remaining < t.remaining)
                    });
                    if tighter {
                        tightest = Some(d);
                    }
                }
                Err(e) => match self.limits.on_store_error {
                    FailMode::Closed => return Err(ReflexError::LimiterDown(e)),
                    FailMode::Open => {
                        tracing::warn!(error = %e, "rate-limit store down; failing open");
                    }
                },
            }
        }
        match tightest {
            Some(d) if !d.allowed => {
                metrics::counter!(RATE_LIMITED).increment(1);
                Err(ReflexError::RateLimited(d))
            }
            other => Ok(other),
        }
    }

    /// The injections in a submission about to be forwarded, if it must be blocked. Every
    /// string in it is screened; the orchestrator redacts PII itself.
    pub fn screen_submission(&self, body: &[u8]) -> Result<(), Vec<Match>> {
        if body.is_empty() {
            return Ok(());
        }
        let text = String::from_utf8_lossy(body);
        let report = self.scanner.scan(
            &text,
            ScanOptions {
                detect_pii: false,
                detect_injection: true,
            },
        );
        if report.should_block {
            metrics::counter!(VERDICTS, "verdict" => "block").increment(1);
            return Err(matches_of(&report, report.injections()));
        }
        Ok(())
    }

    pub async fn cache_stats(&self) -> Result<CacheStats, ReflexError> {
        self.cache.stats().await.map_err(ReflexError::Store)
    }

    pub async fn clear_cache(&self) -> Result<(), ReflexError> {
        self.cache.clear().await.map_err(ReflexError::Store)
    }

    /// Ready while the cache answers.
    /// Ready when the cache answers a ping (never a count of its entries: a probe runs every
    /// few seconds on every replica).
    pub async fn ready(&self) -> Result<(), ReflexError> {
        self.cache.ping().await.map_err(ReflexError::Store)
    }
}
