//! Console users: a name, a role and an argon2id password hash, stored at
//! `auth/users/<name>`. Made with `distcron user add`; they sign in to the
//! console with `POST /auth/login {"user", "password"}`.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use serde::{Deserialize, Serialize};

use super::{AuthError, Principal, Role};
use crate::coord::Coordinator;

pub const PREFIX: &str = "auth/users/";
/// Shorter passwords are refused: argon2 slows guessing, it cannot save a
/// four-letter password.
pub const MIN_PASSWORD_LEN: usize = 12;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserRecord {
    pub name: String,
    pub role: Role,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// The argon2id hash in PHC string form (algorithm, parameters, salt).
    pub password_hash: String,
    pub created_at: i64,
}

impl UserRecord {
    pub fn principal(&self) -> Principal {
        Principal {
            id: format!("user:{}", self.name),
            name: self.name.clone(),
            role: self.role,
            group: self.group.clone(),
        }
    }
}

fn hash_password(password: &str) -> Result<String, AuthError> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).expect("the operating system's random source answers");
    let salt = SaltString::encode_b64(&salt).map_err(|e| AuthError::Invalid(e.to_string()))?;
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AuthError::Invalid(format!("password: {e}")))
}

/// Create or replace a user.
pub async fn add(
    coord: &dyn Coordinator,
    name: &str,
    password: &str,
    role: Role,
    group: Option<String>,
    now_ms: i64,
) -> Result<UserRecord, AuthError> {
    crate::job::validate_name(name)
        .map_err(|e| AuthError::Invalid(format!("user name: {}", e.message)))?;
    if password.chars().count() < MIN_PASSWORD_LEN {
        return Err(AuthError::Invalid(format!(
            "password: must be at least {MIN_PASSWORD_LEN} characters"
        )));
    }
    let record = UserRecord {
        name: name.to_string(),
        role,
        group,
        password_hash: hash_password(password)?,
        created_at: now_ms,
    };
    let value = serde_json::to_vec(&record).expect("a user record serialises");
    coord.put(&format!("{PREFIX}{name}"), value, None).await?;
    Ok(record)
}

/// The user's principal when the password is right; `None` otherwise
/// (unknown user and wrong password are not told apart).
pub async fn verify(
    coord: &dyn Coordinator,
    name: &str,
    password: &str,
) -> Result<Option<Principal>, AuthError> {
    if crate::job::validate_name(name).is_err() {
        return Ok(None);
    }
    let Some(kv) = coord.get(&format!("{PREFIX}{name}")).await? else {
        return Ok(None);
    };
    let Ok(record) = serde_json::from_slice::<UserRecord>(&kv.value) else {
        return Ok(None);
    };
    let password = password.to_string();
    let hash = record.password_hash.clone();
    // argon2 takes tens of milliseconds of CPU by design: off the async thread.
    let matches = tokio::task::spawn_blocking(move || {
        PasswordHash::new(&hash).is_ok_and(|parsed| {
            argon2::Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
    })
    .await
    .unwrap_or(false);
    Ok(matches.then(|| record.principal()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coord::embedded::EmbeddedCoordinator;

    #[tokio::test]
    async fn passwords_are_hashed_with_argon2id_and_verified() {
        let coord = EmbeddedCoordinator::in_memory();
        add(
            &coord,
            "alice",
            "correct horse battery",
            Role::Operator,
            None,
            0,
        )
        .await
        .unwrap();
        let stored = coord.get("auth/users/alice").await.unwrap().unwrap();
        assert!(stored.value_str().contains("$argon2id$"));
        assert!(!stored.value_str().contains("correct horse"));
        let p = verify(&coord, "alice", "correct horse battery")
            .await
            .unwrap()
            .unwrap();
        assert_eq!((p.id.as_str(), p.role), ("user:alice", Role::Operator));
        assert_eq!(verify(&coord, "alice", "wrong").await.unwrap(), None);
        assert_eq!(verify(&coord, "bob", "x").await.unwrap(), None);
    }

    #[tokio::test]
    async fn short_passwords_and_bad_names_are_refused() {
        let coord = EmbeddedCoordinator::in_memory();
        let err = add(&coord, "alice", "short", Role::Admin, None, 0)
            .await
            .unwrap_err();
        assert!(err.to_string().starts_with("password:"));
        let err = add(&coord, "a/b", "long enough password", Role::Admin, None, 0)
            .await
            .unwrap_err();
        assert!(err.to_string().starts_with("user name:"));
    }
}
