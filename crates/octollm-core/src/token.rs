//! Capability tokens between the orchestrator and the arms (SPEC §8): the orchestrator signs
//! one per arm call with Ed25519, naming the task, the arm, the audience (the deployment),
//! the action, and for the executor the programs and the network grant; an arm holds only
//! public keys (two during a rotation) and refuses anything else.
//!
//! Wire form: `v1.<claims>.<signature>`, both parts base64url without padding; the signature
//! covers `v1.<claims>`.

use std::collections::BTreeSet;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::arm::ArmKind;
use crate::secret::Secret;

const VERSION: &str = "v1";
/// How long a token is good for unless configured otherwise.
pub const DEFAULT_TTL_SECONDS: u64 = 300;
/// Leeway for clocks of different hosts.
const CLOCK_SKEW_SECONDS: i64 = 30;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Claims {
    /// Unique per token, for revocation.
    pub jti: String,
    pub task_id: Option<String>,
    pub arm: ArmKind,
    /// The deployment the token is for (`OCTOLLM_TOKEN_AUDIENCE`): a staging token is
    /// worthless in production.
    pub aud: String,
    /// What the arm may do with it: its operation (`plan`, `code`, `execute`, ...).
    pub actions: BTreeSet<String>,
    /// Executor only: the programs the step may run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub programs: Vec<String>,
    /// Executor only: whether the step may use the network.
    #[serde(default)]
    pub network: bool,
    /// Unix seconds.
    pub iat: i64,
    pub exp: i64,
}

/// Why a token was refused. The first three mean "no valid token" (401), the rest "valid,
/// but not for this" (403).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("missing capability token")]
    Missing,
    #[error("malformed capability token")]
    Malformed,
    #[error("capability token signature does not verify")]
    BadSignature,
    #[error("capability token expired")]
    Expired,
    #[error("capability token revoked")]
    Revoked,
    #[error("capability token is for audience {0:?}")]
    WrongAudience(String),
    #[error("capability token is for the {0} arm")]
    WrongArm(ArmKind),
    #[error("capability token does not grant `{0}`")]
    ActionNotGranted(String),
}

impl TokenError {
    /// The reason as a metric label and audit detail.
    pub fn reason(&self) -> &'static str {
        match self {
            TokenError::Missing => "missing",
            TokenError::Malformed => "malformed",
            TokenError::BadSignature => "bad_signature",
            TokenError::Expired => "expired",
            TokenError::Revoked => "revoked",
            TokenError::WrongAudience(_) => "wrong_audience",
            TokenError::WrongArm(_) => "wrong_arm",
            TokenError::ActionNotGranted(_) => "action_not_granted",
        }
    }

    /// Whether the caller has no valid token at all (401) rather than the wrong one (403).
    pub fn is_unauthenticated(&self) -> bool {
        matches!(
            self,
            TokenError::Missing
                | TokenError::Malformed
                | TokenError::BadSignature
                | TokenError::Expired
                | TokenError::Revoked
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct KeyError(String);

fn decode_32(what: &str, text: &str) -> Result<[u8; 32], KeyError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(text.trim().trim_end_matches('='))
        .or_else(|_| base64::engine::general_purpose::STANDARD.decode(text.trim()))
        .map_err(|_| KeyError(format!("{what} is not base64")))?;
    bytes
        .try_into()
        .map_err(|_| KeyError(format!("{what} must be 32 bytes")))
}

/// The orchestrator's side: signs tokens.
pub struct TokenSigner {
    key: SigningKey,
    audience: String,
    ttl_seconds: u64,
}

impl TokenSigner {
    /// From the base64 32-byte seed of `octollm tokens keygen`.
    pub fn from_seed(seed: &Secret, audience: &str, ttl_seconds: u64) -> Result<Self, KeyError> {
        let seed = decode_32("the token signing key", seed.expose())?;
        Ok(TokenSigner {
            key: SigningKey::from_bytes(&seed),
            audience: audience.to_owned(),
            ttl_seconds,
        })
    }

    pub fn audience(&self) -> &str {
        &self.audience
    }

    /// A token for one call of `arm` doing `action` at `now` (Unix seconds).
    pub fn issue(
        &self,
        arm: ArmKind,
        action: &str,
        task_id: Option<&str>,
        grant: ExecutorGrant,
        now: i64,
    ) -> String {
        let claims = Claims {
            jti: random_id(),
            task_id: task_id.map(str::to_owned),
            arm,
            aud: self.audience.clone(),
            actions: BTreeSet::from([action.to_owned()]),
            programs: grant.programs,
            network: grant.network,
            iat: now,
            exp: now.saturating_add(i64::try_from(self.ttl_seconds).unwrap_or(i64::MAX)),
        };
        self.sign(&claims)
    }

    /// Signs any claims (tests make expired or mis-scoped tokens with it).
    pub fn sign(&self, claims: &Claims) -> String {
        // Serialising a struct of strings and numbers cannot fail.
        let json = serde_json::to_vec(claims).unwrap_or_default();
        let signed = format!("{VERSION}.{}", URL_SAFE_NO_PAD.encode(json));
        let signature = self.key.sign(signed.as_bytes());
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes()))
    }
}

/// The program a `command_type: python` request runs.
pub const PYTHON_PROGRAM: &str = "python3";

/// What the executor may run for one step.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecutorGrant {
    pub programs: Vec<String>,
    pub network: bool,
}

/// Why a request is outside a grant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrantDenied {
    #[error("running `{0}` was not granted")]
    Program(String),
    #[error("network access was not granted")]
    Network,
}

impl GrantDenied {
    /// The audit entry's and the metric's reason.
    pub fn reason(&self) -> &'static str {
        match self {
            GrantDenied::Program(_) => "program_not_granted",
            GrantDenied::Network => "network_not_granted",
        }
    }
}

impl ExecutorGrant {
    /// Whether `wanted` asks for nothing beyond this grant.
    pub fn covers(&self, wanted: &ExecutorGrant) -> Result<(), GrantDenied> {
        if let Some(program) = wanted.programs.iter().find(|p| !self.programs.contains(p)) {
            return Err(GrantDenied::Program(program.clone()));
        }
        if wanted.network && !self.network {
            return Err(GrantDenied::Network);
        }
        Ok(())
    }
}

/// A new signing key: (seed, public key), both base64url.
pub fn generate_keypair() -> (Secret, String) {
    let mut seed = [0u8; 32];
    rand::rng().fill(&mut seed);
    let key = SigningKey::from_bytes(&seed);
    (
        Secret::new(URL_SAFE_NO_PAD.encode(seed)),
        URL_SAFE_NO_PAD.encode(key.verifying_key().to_bytes()),
    )
}

fn random_id() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..22)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect()
}

/// An arm's side: checks tokens against the public keys it holds.
#[derive(Debug, Clone)]
pub struct TokenVerifier {
    keys: Vec<VerifyingKey>,
    audience: String,
}

impl TokenVerifier {
    /// From comma-separated base64 public keys (two while a key is being rotated).
    pub fn from_public_keys(keys: &str, audience: &str) -> Result<Self, KeyError> {
        let keys = keys
            .split(',')
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .map(|k| {
                let bytes = decode_32("a token public key", k)?;
                VerifyingKey::from_bytes(&bytes)
                    .map_err(|_| KeyError("a token public key is not an Ed25519 key".into()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if keys.is_empty() {
            return Err(KeyError("no token public key".into()));
        }
        Ok(TokenVerifier {
            keys,
            audience: audience.to_owned(),
        })
    }

    /// The claims of `token` if one of the keys signed it, it has not expired at `now` (Unix
    /// seconds), and it is for this audience, `arm` and `action`. Revocation is the caller's
    /// check (it holds the revoked ids).
    pub fn verify(
        &self,
        token: &str,
        arm: ArmKind,
        action: &str,
        now: i64,
    ) -> Result<Claims, TokenError> {
        let (signed, signature) = token.rsplit_once('.').ok_or(TokenError::Malformed)?;
        let (version, payload) = signed.split_once('.').ok_or(TokenError::Malformed)?;
        if version != VERSION {
            return Err(TokenError::Malformed);
        }
        let signature: [u8; 64] = URL_SAFE_NO_PAD
            .decode(signature)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or(TokenError::Malformed)?;
        let signature = Signature::from_bytes(&signature);
        if !self
            .keys
            .iter()
            .any(|key| key.verify(signed.as_bytes(), &signature).is_ok())
        {
            return Err(TokenError::BadSignature);
        }
        let claims: Claims = URL_SAFE_NO_PAD
            .decode(payload)
            .ok()
            .and_then(|json| serde_json::from_slice(&json).ok())
            .ok_or(TokenError::Malformed)?;
        if claims.exp < now.saturating_sub(CLOCK_SKEW_SECONDS) {
            return Err(TokenError::Expired);
        }
        if claims.aud != self.audience {
            return Err(TokenError::WrongAudience(claims.aud));
        }
        if claims.arm != arm {
            return Err(TokenError::WrongArm(claims.arm));
        }
        if !claims.actions.contains(action) {
            return Err(TokenError::ActionNotGranted(action.to_owned()));
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    const NOW: i64 = 1_800_000_000;

    fn pair(audience: &str) -> (TokenSigner, TokenVerifier) {
        let (seed, public) = generate_keypair();
        (
            TokenSigner::from_seed(&seed, audience, 300).unwrap(),
            TokenVerifier::from_public_keys(&public, audience).unwrap(),
        )
    }

    fn token(signer: &TokenSigner) -> String {
        signer.issue(
            ArmKind::Executor,
            "execute",
            Some("task_aaaaaaaaaaaaaaaa"),
            ExecutorGrant {
                programs: vec!["python3".into()],
                network: false,
            },
            NOW,
        )
    }

    #[test]
    fn a_token_verifies_for_its_arm_action_and_audience_only() {
        let (signer, verifier) = pair("prod");
        let t = token(&signer);
        let claims = verifier
            .verify(&t, ArmKind::Executor, "execute", NOW + 10)
            .unwrap();
        assert_eq!(claims.programs, ["python3"]);
        assert_eq!(claims.task_id.as_deref(), Some("task_aaaaaaaaaaaaaaaa"));
        assert_eq!(claims.exp, NOW + 300);
        assert_eq!(
            verifier.verify(&t, ArmKind::Coder, "execute", NOW),
            Err(TokenError::WrongArm(ArmKind::Executor))
        );
        assert_eq!(
            verifier.verify(&t, ArmKind::Executor, "plan", NOW),
            Err(TokenError::ActionNotGranted("plan".into()))
        );
        assert_eq!(
            verifier.verify(&t, ArmKind::Executor, "execute", NOW + 300 + 31),
            Err(TokenError::Expired)
        );
        let (_, staging) = pair("staging");
        let staging = TokenVerifier {
            keys: verifier.keys.clone(),
            audience: staging.audience,
        };
        assert_eq!(
            staging.verify(&t, ArmKind::Executor, "execute", NOW),
            Err(TokenError::WrongAudience("prod".into()))
        );
    }

    #[test]
    fn forged_and_mangled_tokens_are_refused() {
        let (signer, verifier) = pair("prod");
        let (other, _) = pair("prod");
        let forged = token(&other);
        assert_eq!(
            verifier.verify(&forged, ArmKind::Executor, "execute", NOW),
            Err(TokenError::BadSignature)
        );
        // Claims swapped under a real signature.
        let real = token(&signer);
        let (_, payload, signature) = {
            let mut parts = real.split('.');
            (
                parts.next().unwrap(),
                parts.next().unwrap(),
                parts.next().unwrap(),
            )
        };
        let mut claims: Claims =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
        claims.programs = vec!["curl".into()];
        let tampered = format!(
            "v1.{}.{signature}",
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap())
        );
        assert_eq!(
            verifier.verify(&tampered, ArmKind::Executor, "execute", NOW),
            Err(TokenError::BadSignature)
        );
        for bad in [
            "",
            "v1",
            "v1.abc",
            "v2.abc.def",
            &real.replace("v1.", "v2."),
        ] {
            assert!(
                verifier
                    .verify(bad, ArmKind::Executor, "execute", NOW)
                    .is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn during_a_rotation_both_keys_verify() {
        let (old_seed, old_public) = generate_keypair();
        let (new_seed, new_public) = generate_keypair();
        let verifier =
            TokenVerifier::from_public_keys(&format!("{old_public},{new_public}"), "prod").unwrap();
        for seed in [old_seed, new_seed] {
            let signer = TokenSigner::from_seed(&seed, "prod", 60).unwrap();
            assert!(
                verifier
                    .verify(&token(&signer), ArmKind::Executor, "execute", NOW)
                    .is_ok()
            );
        }
        assert!(TokenVerifier::from_public_keys("", "prod").is_err());
        assert!(TokenVerifier::from_public_keys("not base64!", "prod").is_err());
        assert!(TokenSigner::from_seed(&Secret::new("c2hvcnQ"), "prod", 60).is_err());
    }
}
