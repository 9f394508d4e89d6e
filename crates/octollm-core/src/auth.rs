//! API keys and what they allow (SPEC §8): scopes, the key format and its hash, and the
//! principal a request acts as.
//!
//! A key is `octo_<id>_<secret>`: the 12-character id names the stored record (so a lookup
//! is one indexed read), the 43-character secret carries 256 random bits. Only the SHA-256
//! of the whole key is stored; a key that high in entropy needs no slow hash.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use rand::Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::secret::Secret;

#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
pub enum Scope {
    #[serde(rename = "tasks:submit")]
    TasksSubmit,
    #[serde(rename = "tasks:read")]
    TasksRead,
    #[serde(rename = "tasks:cancel")]
    TasksCancel,
    /// Every other scope, every key's tasks, key management and the audit log.
    #[serde(rename = "admin")]
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 4] = [
        Scope::TasksSubmit,
        Scope::TasksRead,
        Scope::TasksCancel,
        Scope::Admin,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::TasksSubmit => "tasks:submit",
            Scope::TasksRead => "tasks:read",
            Scope::TasksCancel => "tasks:cancel",
            Scope::Admin => "admin",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    #[error("unknown scope {0:?} (expected tasks:submit, tasks:read, tasks:cancel or admin)")]
    Unknown(String),
    #[error("a key needs at least one scope")]
    Empty,
}

impl FromStr for Scope {
    type Err = ScopeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Scope::ALL
            .into_iter()
            .find(|scope| scope.as_str() == s)
            .ok_or_else(|| ScopeError::Unknown(s.chars().take(40).collect()))
    }
}

/// A non-empty set of scopes, written `tasks:submit,tasks:read`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scopes(BTreeSet<Scope>);

impl Scopes {
    pub fn all() -> Self {
        Scopes(Scope::ALL.into_iter().collect())
    }

    /// Admin allows everything.
    pub fn allows(&self, scope: Scope) -> bool {
        self.0.contains(&scope) || self.0.contains(&Scope::Admin)
    }

    pub fn iter(&self) -> impl Iterator<Item = Scope> + '_ {
        self.0.iter().copied()
    }
}

impl FromStr for Scopes {
    type Err = ScopeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let scopes = s
            .split(',')
            .map(str::trim)
            .filter(|part| !part.is_empty())
            .map(Scope::from_str)
            .collect::<Result<BTreeSet<_>, _>>()?;
        if scopes.is_empty() {
            return Err(ScopeError::Empty);
        }
        Ok(Scopes(scopes))
    }
}

impl fmt::Display for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.0.iter().map(|s| s.as_str()).collect();
        f.write_str(&names.join(","))
    }
}

const KEY_PREFIX: &str = "octo_";
const KEY_ID_LEN: usize = 12;
const KEY_SECRET_LEN: usize = 43;
/// URL-safe, no padding, no look-alike trouble in headers or shells.
const KEY_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// A freshly made key: shown once, then only its hash is kept.
pub struct NewApiKey {
    pub id: String,
    pub key: Secret,
    pub hash: String,
}

impl NewApiKey {
    pub fn generate() -> Self {
        let mut rng = rand::rng();
        let mut draw = |n: usize| -> String {
            (0..n)
                .map(|_| char::from(KEY_ALPHABET[rng.random_range(0..KEY_ALPHABET.len())]))
                .collect()
        };
        let id = draw(KEY_ID_LEN);
        let key = format!("{KEY_PREFIX}{id}_{}", draw(KEY_SECRET_LEN));
        let hash = hash_key(&key);
        NewApiKey {
            id,
            key: Secret::new(key),
            hash,
        }
    }
}

/// The id part of a presented key, when it has the key's shape at all.
pub fn key_id(presented: &str) -> Option<&str> {
    let rest = presented.strip_prefix(KEY_PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    let well_formed = id.len() == KEY_ID_LEN
        && secret.len() == KEY_SECRET_LEN
        && id
            .bytes()
            .chain(secret.bytes())
            .all(|b| KEY_ALPHABET.contains(&b));
    well_formed.then_some(id)
}

/// Hex SHA-256 of the whole key.
pub fn hash_key(key: &str) -> String {
    let digest = Sha256::digest(key.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `presented` is the key whose hash is `stored`, in time independent of where they
/// differ.
pub fn key_matches(presented: &str, stored: &str) -> bool {
    let computed = hash_key(presented);
    computed.len() == stored.len()
        && computed
            .bytes()
            .zip(stored.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// Who a request acts as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The API key's id; `None` for a request the configuration lets in without a key.
    pub key_id: Option<String>,
    pub scopes: Scopes,
}

impl Principal {
    /// A request without a key where keys are not required (a loopback bind): it may do
    /// everything, and the tasks it submits belong to no key.
    pub fn unauthenticated() -> Self {
        Principal {
            key_id: None,
            scopes: Scopes::all(),
        }
    }

    pub fn allows(&self, scope: Scope) -> bool {
        self.scopes.allows(scope)
    }

    /// The owner recorded on the tasks it submits.
    pub fn owner(&self) -> Option<&str> {
        self.key_id.as_deref()
    }

    /// Whether it may see or cancel a task owned by `owner`: its own, or any with admin.
    pub fn sees(&self, owner: Option<&str>) -> bool {
        self.allows(Scope::Admin) || (self.key_id.is_some() && owner == self.key_id.as_deref())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    #[test]
    fn generated_keys_have_their_id_and_match_their_hash_only() {
        let a = NewApiKey::generate();
        let b = NewApiKey::generate();
        assert_eq!(key_id(a.key.expose()), Some(a.id.as_str()));
        assert!(key_matches(a.key.expose(), &a.hash));
        assert!(!key_matches(b.key.expose(), &a.hash));
        assert_ne!(a.key.expose(), b.key.expose());
        // The hash never contains the key.
        assert!(!a.hash.contains(&a.id));
    }

    #[test]
    fn malformed_keys_have_no_id() {
        let good = NewApiKey::generate();
        let good = good.key.expose();
        for bad in [
            "",
            "octo_",
            "octo_abc_def",
            &good[1..],
            &good[..good.len() - 1],
            &format!("{good}x"),
            &good.replace("octo_", "otco_"),
            &format!("{}!{}", &good[..10], &good[11..]),
        ] {
            assert_eq!(key_id(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn scopes_parse_and_admin_allows_everything() {
        let s: Scopes = "tasks:read, tasks:submit".parse().unwrap();
        assert!(s.allows(Scope::TasksRead) && s.allows(Scope::TasksSubmit));
        assert!(!s.allows(Scope::TasksCancel) && !s.allows(Scope::Admin));
        assert_eq!(s.to_string(), "tasks:submit,tasks:read");
        let admin: Scopes = "admin".parse().unwrap();
        assert!(Scope::ALL.iter().all(|&scope| admin.allows(scope)));
        assert_eq!("".parse::<Scopes>(), Err(ScopeError::Empty));
        assert!(matches!(
            "tasks:write".parse::<Scopes>(),
            Err(ScopeError::Unknown(_))
        ));
    }

    #[test]
    fn a_key_sees_its_own_tasks_and_admin_sees_all() {
        let reader = Principal {
            key_id: Some("aaaaaaaaaaaa".into()),
            scopes: "tasks:read".parse().unwrap(),
        };
        assert!(reader.sees(Some("aaaaaaaaaaaa")));
        assert!(!reader.sees(Some("bbbbbbbbbbbb")));
        assert!(!reader.sees(None));
        let admin = Principal {
            key_id: Some("cccccccccccc".into()),
            scopes: "admin".parse().unwrap(),
        };
        assert!(admin.sees(Some("aaaaaaaaaaaa")) && admin.sees(None));
        assert!(Principal::unauthenticated().sees(Some("aaaaaaaaaaaa")));
    }
}
