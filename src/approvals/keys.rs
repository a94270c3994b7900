//! API keys: generation, hashing, roles, and the service's key operations
//! (create, authenticate, list, revoke).
//!
//! A key is `cgk_` + 64 hex digits (256 random bits from the OS). Only its SHA-256
//! is stored: a fast hash is enough because the input is high-entropy (there is
//! nothing to brute-force), and the plaintext is printed once and never again.
//! The stored hash is compared in constant time.
//!
//! A key may expire: at a time (`expires_at`) or after a lifetime counted from its
//! creation (`expires_in`, `keys create --expires-in 90d`); `[approvals]
//! max_key_lifetime` gives keys asked without one that lifetime and refuses longer
//! ones. Expiry is judged by the approvals clock, the one request expiry reads,
//! and an expired key is refused as such (`api_key_expired`), not as unknown.

use std::time::Duration;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::model::{ApiKey, Executed};
use super::{Actor, Approvals, AuthError, Change, Error, ROUNDS, conflict, contended, history};

/// Prefix of every secret key, so a leaked one is recognisable in logs and scanners.
pub const KEY_PREFIX: &str = "cgk_";

/// What a key may do. See `ARCHITECTURE.md` for the full matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything, including keys and approval rules.
    Admin,
    /// Reads, and approves or denies approval requests.
    Reviewer,
    /// Reads only.
    Analyst,
    /// Automation: performs sensitive actions (gated like anyone's) and reads.
    Agent,
    /// A checkout server: `POST /v1/payment_approvals` and nothing else (no reads:
    /// it runs where payments are taken, not where cardgate is administered).
    Payments,
}

impl Role {
    /// Every role, in a stable order.
    pub const ALL: [Role; 5] = [
        Role::Admin,
        Role::Reviewer,
        Role::Analyst,
        Role::Agent,
        Role::Payments,
    ];

    /// The role's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Reviewer => "reviewer",
            Role::Analyst => "analyst",
            Role::Agent => "agent",
            Role::Payments => "payments",
        }
    }

    /// Parses a role name.
    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// `n` random bytes as lowercase hex.
pub fn random_hex(n: usize) -> Result<String, getrandom::Error> {
    let mut buf = vec![0u8; n];
    getrandom::fill(&mut buf)?;
    Ok(hex::encode(buf))
}

/// A fresh secret key.
pub fn generate() -> Result<String, getrandom::Error> {
    Ok(format!("{KEY_PREFIX}{}", random_hex(32)?))
}

/// The stored form of a key: hex SHA-256.
pub fn hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Constant-time comparison of two stored hashes.
pub fn hashes_equal(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// Whether `s` has the shape of a key (cheap rejection before any lookup).
pub fn well_formed(s: &str) -> bool {
    s.len() == KEY_PREFIX.len() + 64
        && s.starts_with(KEY_PREFIX)
        && s[KEY_PREFIX.len()..].bytes().all(|b| b.is_ascii_hexdigit())
}

fn no_randomness(e: getrandom::Error) -> Error {
    Error::Storage(format!("no randomness: {e}"))
}

/// When a new key is asked to expire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KeyExpiry {
    /// Not asked: never, or `[approvals] max_key_lifetime` after creation.
    #[default]
    Unset,
    /// At this Unix time.
    At(i64),
    /// This many seconds after creation.
    After(i64),
}

impl KeyExpiry {
    /// The API's two optional fields as one choice; both at once is refused.
    pub fn from_fields(expires_at: Option<i64>, expires_in: Option<i64>) -> Result<Self, String> {
        match (expires_at, expires_in) {
            (Some(_), Some(_)) => Err("give expires_at or expires_in, not both".into()),
            (Some(at), None) => Ok(KeyExpiry::At(at)),
            (None, Some(secs)) if secs <= 0 => Err(format!(
                "expires_in {secs} must be a positive number of seconds"
            )),
            (None, Some(secs)) => Ok(KeyExpiry::After(secs)),
            (None, None) => Ok(KeyExpiry::Unset),
        }
    }

    /// The Unix time a key created at `now` expires (`None`: never), under an
    /// optional longest lifetime. Refuses an expiry that is not after `now` or
    /// that `max_lifetime` does not allow, naming the limit.
    pub fn resolve(self, now: i64, max_lifetime: Option<Duration>) -> Result<Option<i64>, String> {
        let max = max_lifetime.map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        let at = match self {
            KeyExpiry::Unset => return Ok(max.map(|m| now.saturating_add(m))),
            KeyExpiry::At(at) => at,
            KeyExpiry::After(secs) => now.saturating_add(secs),
        };
        if at <= now {
            return Err(format!(
                "expires_at {at} is not in the future (now is {now})"
            ));
        }
        if let (Some(m), Some(limit)) = (max, max_lifetime)
            && at.saturating_sub(now) > m
        {
            return Err(format!(
                "the key would live {}; [approvals] max_key_lifetime allows at most {}",
                humantime::format_duration(Duration::from_secs(
                    at.saturating_sub(now).unsigned_abs()
                )),
                humantime::format_duration(limit),
            ));
        }
        Ok(Some(at))
    }
}

/// A fresh key id and secret, and the hash that is all the store keeps.
pub(super) fn fresh() -> Result<(String, String, String), Error> {
    let secret = generate().map_err(no_randomness)?;
    let id = super::rand_id("key_")?;
    let hash = hash(&secret);
    Ok((id, secret, hash))
}

impl Approvals {
    /// Creates a key from the command line; returns `(id, secret)`. The secret is
    /// shown once.
    pub async fn create_key(
        &self,
        actor: &Actor,
        role: Role,
        name: Option<&str>,
    ) -> Result<(String, String), Error> {
        self.create_expiring_key(actor, role, name, KeyExpiry::Unset)
            .await
            .map(|(key, secret)| (key.id, secret))
    }

    /// [`create_key`](Self::create_key) with an expiry; returns the key and its
    /// secret (shown once).
    pub async fn create_expiring_key(
        &self,
        actor: &Actor,
        role: Role,
        name: Option<&str>,
        expiry: KeyExpiry,
    ) -> Result<(ApiKey, String), Error> {
        let (id, secret, hash) = fresh()?;
        let key = self
            .insert_key(actor, id, role, name.map(str::to_string), hash, expiry)
            .await?;
        Ok((key, secret))
    }

    /// The expiry a key asked for now would get, or why it is refused (400).
    pub(super) fn key_expiry(&self, expiry: KeyExpiry) -> Result<Option<i64>, Error> {
        expiry
            .resolve(self.now(), self.settings.max_key_lifetime)
            .map_err(super::invalid)
    }

    /// Stores key `id` with `hash` and records who created it. The expiry is
    /// resolved now, at creation: a lifetime counts from here, not from when a
    /// gated creation was asked for.
    pub(super) async fn insert_key(
        &self,
        actor: &Actor,
        id: String,
        role: Role,
        name: Option<String>,
        hash: String,
        expiry: KeyExpiry,
    ) -> Result<ApiKey, Error> {
        let now = self.now();
        let expires_at = self.key_expiry(expiry)?;
        let key = ApiKey {
            id,
            name,
            role,
            created: now,
            created_by: actor.key_id.clone(),
            revoked_at: None,
            expires_at,
        };
        let mut details = serde_json::json!({"role": role.as_str(), "name": key.name});
        if let Some(at) = key.expires_at {
            details["expires_at"] = at.into();
        }
        self.commit_unguarded(vec![
            Change::InsertKey {
                key: key.clone(),
                hash,
            },
            history("api_key.created", &actor.key_id, &key.id, now, details),
        ])
        .await?;
        Ok(key)
    }

    /// Authenticates a bearer secret.
    pub async fn authenticate(&self, secret: &str) -> Result<Actor, AuthError> {
        if !well_formed(secret) {
            return Err(AuthError::Unknown);
        }
        let hash = hash(secret);
        let found = self
            .store
            .key_by_hash(&hash)
            .await
            .map_err(|_| AuthError::Storage)?;
        let Some((key, stored)) = found else {
            return Err(AuthError::Unknown);
        };
        if !hashes_equal(&stored, &hash) {
            return Err(AuthError::Unknown);
        }
        if key.revoked_at.is_some() {
            return Err(AuthError::Revoked);
        }
        if key.expired(self.now()) {
            return Err(AuthError::Expired);
        }
        Ok(Actor {
            key_id: key.id,
            role: key.role,
            name: key.name,
        })
    }

    /// Every key (never a secret or hash), newest first.
    pub async fn list_keys(&self) -> Result<Vec<ApiKey>, Error> {
        Ok(self.store.keys().await?)
    }

    /// Revokes `id` from the command line (see README: the CLI is the operator's
    /// local escape hatch and is not gated, but it is recorded).
    pub async fn revoke_key_cli(&self, id: &str) -> Result<(), Error> {
        self.revoke_key(&Actor::cli(), id).await.map(|_| ())
    }

    /// Revokes key `id` for `actor`.
    pub(super) async fn revoke_key(&self, actor: &Actor, id: &str) -> Result<Executed, Error> {
        for _ in 0..ROUNDS {
            match self.store.key(id).await? {
                None => return Err(super::not_found("api_key", id)),
                Some(k) if k.revoked_at.is_some() => {
                    return Err(conflict(
                        "already_revoked",
                        format!("API key {id} is already revoked"),
                    ));
                }
                Some(_) => {}
            }
            let now = self.now();
            let changes = vec![
                Change::RevokeKey {
                    id: id.into(),
                    at: now,
                },
                history(
                    "api_key.revoked",
                    &actor.key_id,
                    id,
                    now,
                    serde_json::json!({}),
                ),
            ];
            if self.commit(changes).await? {
                return Ok(Executed::KeyRevoked {
                    id: id.into(),
                    revoked_at: now,
                });
            }
        }
        Err(contended())
    }

    /// Whether key `id` exists (revoked or not).
    pub(super) async fn key_exists(&self, id: &str) -> Result<(), Error> {
        match self.store.key(id).await? {
            Some(_) => Ok(()),
            None => Err(super::not_found("api_key", id)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_are_well_formed_and_distinct() {
        let a = generate().unwrap();
        let b = generate().unwrap();
        assert!(well_formed(&a) && well_formed(&b));
        assert_ne!(a, b);
        assert!(!well_formed("cgk_short"));
        assert!(!well_formed(&a.replace("cgk_", "sk__")));
    }

    #[test]
    fn hash_is_stable_and_compared_exactly() {
        let k = generate().unwrap();
        assert!(hashes_equal(&hash(&k), &hash(&k)));
        assert!(!hashes_equal(&hash(&k), &hash(&format!("{k}0"))));
        assert!(!hashes_equal("ab", "abc"));
    }

    #[test]
    fn roles_round_trip() {
        for r in Role::ALL {
            assert_eq!(Role::parse(r.as_str()), Some(r));
        }
        assert_eq!(Role::parse("root"), None);
    }
}
