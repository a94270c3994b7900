//! API keys: generation, hashing, roles.
//!
//! A key is `cgk_` + 64 hex digits (256 random bits from the OS). Only its SHA-256
//! is stored: a fast hash is enough because the input is high-entropy (there is
//! nothing to brute-force), and the plaintext is printed once and never again.
//! The stored hash is compared in constant time.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Prefix of every secret key, so a leaked one is recognisable in logs and scanners.
pub const KEY_PREFIX: &str = "cgk_";

/// What a key may do. See `ARCHITECTURE.md` for the full matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Everything, including keys and approval rules.
    Admin,
    /// Reads, and approves or denies approval requests.
    Reviewer,
    /// Reads only.
    Analyst,
    /// Automation: performs sensitive actions (gated like anyone's) and reads.
    Agent,
}

impl Role {
    /// Every role, in a stable order.
    pub const ALL: [Role; 4] = [Role::Admin, Role::Reviewer, Role::Analyst, Role::Agent];

    /// The role's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Reviewer => "reviewer",
            Role::Analyst => "analyst",
            Role::Agent => "agent",
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
