//! Who may do what: API tokens, console users and sessions, roles, and the
//! one table from route to permission.
//!
//! Everything here is stored in the coordinator under `auth/` (see
//! [`crate::keyspace`]), so every manager of a cluster accepts the same
//! credentials, and `distcron token` works against etcd and the embedded
//! store alike. Secrets are never stored: a token is kept as the SHA-256 of
//! its secret part (tokens are 256 random bits, so a fast hash is enough), a
//! password as an argon2id hash, a session as the SHA-256 of its cookie.
//!
//! The HTTP side (the middleware that applies this) is [`crate::http::guard`].

pub mod permissions;
pub mod sessions;
pub mod throttle;
pub mod tokens;
pub mod users;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use permissions::{Permission, RouteRule, rule_for};

/// A role, from least to most privileged; each has every right of the ones
/// before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Every read; job `env` values are shown as `***`.
    Viewer,
    /// + run now, kill, pause, resume.
    Operator,
    /// + save, delete, tokens, users, audit.
    Admin,
}

impl Role {
    pub fn parse(text: &str) -> Option<Role> {
        match text {
            "viewer" => Some(Role::Viewer),
            "operator" => Some(Role::Operator),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

/// The identity a request acts as, once authenticated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Principal {
    /// `token:<id>`, `user:<name>` or `config:adminToken`.
    pub id: String,
    /// A person's or a script's name, for the console and the audit log.
    pub name: String,
    pub role: Role,
    /// When set, the principal acts only on jobs of this group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

impl Principal {
    /// Whether this principal may act on a job of `group`.
    pub fn may_act_on_group(&self, group: &str) -> bool {
        self.group.as_deref().is_none_or(|own| own == group)
    }
}

/// Hex of SHA-256: the stored form of token secrets and session ids.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// `n` random bytes from the operating system, as hex.
pub fn random_hex(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    getrandom::fill(&mut bytes).expect("the operating system's random source answers");
    hex::encode(bytes)
}

/// Compare two secrets (or their hashes) without leaking where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Input that names its field and what is wrong with it.
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Coord(#[from] crate::coord::CoordError),
}

/// Parse `30d`, `12h`, `45m`, `90s` (a whole number and a unit).
pub fn parse_duration(text: &str) -> Result<std::time::Duration, AuthError> {
    let bad = || {
        AuthError::Invalid(format!(
            "'{text}' is not a duration such as 30d, 12h, 45m or 90s (at most 9999d)"
        ))
    };
    let split = text.len().checked_sub(1).ok_or_else(bad)?;
    let (number, unit) = text.split_at(split);
    // Each unit's largest count keeps the pattern in openapi.json exact:
    // at most 9999d, 99999h, 9999999m or 999999999s (all under 32 years).
    let (unit_secs, max) = match unit {
        "d" => (86_400, 9_999),
        "h" => (3_600, 99_999),
        "m" => (60, 9_999_999),
        "s" => (1, 999_999_999),
        _ => return Err(bad()),
    };
    if number.is_empty() || number.starts_with('0') || !number.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let number: u64 = number.parse().map_err(|_| bad())?;
    if number > max {
        return Err(bad());
    }
    let seconds = number * unit_secs;
    Ok(std::time::Duration::from_secs(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_ordered_by_privilege() {
        assert!(Role::Viewer < Role::Operator && Role::Operator < Role::Admin);
        for role in [Role::Viewer, Role::Operator, Role::Admin] {
            assert_eq!(Role::parse(role.as_str()), Some(role));
        }
        assert_eq!(Role::parse("root"), None);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30d").unwrap().as_secs(), 30 * 86_400);
        assert_eq!(parse_duration("90s").unwrap().as_secs(), 90);
        assert_eq!(parse_duration("9999d").unwrap().as_secs(), 9_999 * 86_400);
        assert_eq!(parse_duration("999999999s").unwrap().as_secs(), 999_999_999);
        for bad in [
            "",
            "d",
            "30",
            "30w",
            "-1d",
            "+1d",
            "0h",
            "07d",
            "10000d",
            "100000h",
            "10000000m",
            "1000000000s",
            "99999999999d",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn group_scope() {
        let mut p = Principal {
            id: "token:a".into(),
            name: "ci".into(),
            role: Role::Admin,
            group: None,
        };
        assert!(p.may_act_on_group("any"));
        p.group = Some("etl".into());
        assert!(p.may_act_on_group("etl") && !p.may_act_on_group("default"));
    }

    #[test]
    fn secret_comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert_eq!(random_hex(16).len(), 32);
        assert_ne!(random_hex(16), random_hex(16));
    }
}
