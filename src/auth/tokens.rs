//! API tokens: `dct_<id>_<secret>`, sent as `Authorization: Bearer ...`.
//!
//! The id names the stored record (`auth/tokens/<id>`), so a lookup is one
//! key read; the record keeps only the SHA-256 of the secret, compared in
//! constant time. Revoking deletes the record. A token given in the
//! configuration (`adminToken`) is an admin token that is never stored.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{AuthError, Principal, Role, constant_time_eq, random_hex, sha256_hex};
use crate::coord::Coordinator;

pub const PREFIX: &str = "auth/tokens/";
const TOKEN_TAG: &str = "dct_";
/// The principal id of the configured admin token.
pub const CONFIG_ADMIN_ID: &str = "config:adminToken";

/// A stored token, without its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenRecord {
    pub id: String,
    pub name: String,
    pub role: Role,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    pub created_by: String,
    /// Epoch ms.
    pub created_at: i64,
    /// Epoch ms; none: never expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
    /// SHA-256 of the secret, hex. Never shown by the API.
    #[serde(default, skip_serializing)]
    pub secret_hash: String,
}

impl TokenRecord {
    pub fn principal(&self) -> Principal {
        Principal {
            id: format!("token:{}", self.id),
            name: self.name.clone(),
            role: self.role,
            group: self.group.clone(),
        }
    }

    pub fn expired(&self, now_ms: i64) -> bool {
        self.expires_at.is_some_and(|at| now_ms >= at)
    }
}

/// What `token create` asks for.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewToken {
    pub name: String,
    pub role: Role,
    #[serde(default)]
    pub group: Option<String>,
    /// A duration such as `30d`; none: never expires.
    #[serde(default)]
    pub expires: Option<String>,
}

/// A token just created: the only time its secret is shown.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CreatedToken {
    #[serde(flatten)]
    pub record: TokenRecord,
    pub token: String,
}

/// Split `dct_<id>_<secret>` into id and secret.
pub fn split(token: &str) -> Option<(&str, &str)> {
    let rest = token.strip_prefix(TOKEN_TAG)?;
    let (id, secret) = rest.split_once('_')?;
    let hex = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit());
    (hex(id) && hex(secret)).then_some((id, secret))
}

fn check_label(field: &str, value: &str) -> Result<(), AuthError> {
    let ok = !value.is_empty()
        && value.len() <= 128
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@' | ' '));
    if ok {
        Ok(())
    } else {
        Err(AuthError::Invalid(format!(
            "{field}: must be 1 to 128 characters of A-Z a-z 0-9 . _ - @ and space"
        )))
    }
}

/// Create and store a token; the returned secret is shown once.
pub async fn create(
    coord: &dyn Coordinator,
    request: &NewToken,
    created_by: &str,
    now_ms: i64,
) -> Result<CreatedToken, AuthError> {
    check_label("name", &request.name)?;
    if let Some(group) = &request.group {
        crate::job::validate_name(group)
            .map_err(|e| AuthError::Invalid(format!("group: {}", e.message)))?;
    }
    let expires_at = match &request.expires {
        None => None,
        Some(text) => {
            let ttl = super::parse_duration(text)
                .map_err(|e| AuthError::Invalid(format!("expires: {e}")))?;
            Some(now_ms + ttl.as_millis() as i64)
        }
    };
    let id = random_hex(8);
    let secret = random_hex(32);
    let record = TokenRecord {
        id: id.clone(),
        name: request.name.clone(),
        role: request.role,
        group: request.group.clone(),
        created_by: created_by.to_string(),
        created_at: now_ms,
        expires_at,
        secret_hash: sha256_hex(secret.as_bytes()),
    };
    coord
        .put(&format!("{PREFIX}{id}"), stored_bytes(&record), None)
        .await?;
    Ok(CreatedToken {
        record,
        token: format!("{TOKEN_TAG}{id}_{secret}"),
    })
}

/// The stored form keeps the hash, which the API form skips.
fn stored_bytes(record: &TokenRecord) -> Vec<u8> {
    let mut value = serde_json::to_value(record).expect("a token record serialises");
    value["secretHash"] = serde_json::Value::String(record.secret_hash.clone());
    value.to_string().into_bytes()
}

/// Every stored token, without secrets, in id order.
pub async fn list(coord: &dyn Coordinator) -> Result<Vec<TokenRecord>, AuthError> {
    let (kvs, _) = coord.list(PREFIX).await?;
    Ok(kvs
        .iter()
        .filter_map(|kv| serde_json::from_slice::<TokenRecord>(&kv.value).ok())
        .collect())
}

/// Revoke a token by id; answers what it was.
pub async fn revoke(coord: &dyn Coordinator, id: &str) -> Result<TokenRecord, AuthError> {
    let not_found = || AuthError::NotFound(format!("token {id} not found"));
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(not_found());
    }
    let kv = coord
        .delete(&format!("{PREFIX}{id}"))
        .await?
        .ok_or_else(not_found)?;
    serde_json::from_slice(&kv.value).map_err(|_| not_found())
}

/// How long a token lookup is trusted without reading the store again: a
/// revocation reaches the other managers within this time (this manager's
/// own revocations at once).
const CACHE_FOR: Duration = Duration::from_secs(2);

/// Verifies bearer tokens against the store and the configured admin token.
#[derive(Default)]
pub struct TokenVerifier {
    /// SHA-256 of the configured admin token, if any.
    admin_hash: Option<String>,
    /// id -> (record or none, when it was read).
    cache: Mutex<HashMap<String, (Option<TokenRecord>, Instant)>>,
}

impl TokenVerifier {
    pub fn new(admin_token: Option<&str>) -> TokenVerifier {
        TokenVerifier {
            admin_hash: admin_token
                .filter(|t| !t.is_empty())
                .map(|t| sha256_hex(t.as_bytes())),
            cache: Mutex::default(),
        }
    }

    pub fn has_admin_token(&self) -> bool {
        self.admin_hash.is_some()
    }

    /// The principal of a presented token, or `None` when it is unknown,
    /// expired, revoked or malformed.
    pub async fn verify(
        &self,
        coord: &dyn Coordinator,
        token: &str,
        now_ms: i64,
    ) -> Result<Option<Principal>, AuthError> {
        if let Some(admin) = &self.admin_hash
            && constant_time_eq(sha256_hex(token.as_bytes()).as_bytes(), admin.as_bytes())
        {
            return Ok(Some(Principal {
                id: CONFIG_ADMIN_ID.into(),
                name: "adminToken".into(),
                role: Role::Admin,
                group: None,
            }));
        }
        let Some((id, secret)) = split(token) else {
            return Ok(None);
        };
        let record = self.record(coord, id).await?;
        Ok(record
            .filter(|r| {
                constant_time_eq(
                    sha256_hex(secret.as_bytes()).as_bytes(),
                    r.secret_hash.as_bytes(),
                ) && !r.expired(now_ms)
            })
            .map(|r| r.principal()))
    }

    async fn record(
        &self,
        coord: &dyn Coordinator,
        id: &str,
    ) -> Result<Option<TokenRecord>, AuthError> {
        if let Some((record, at)) = self.lock().get(id)
            && at.elapsed() < CACHE_FOR
        {
            return Ok(record.clone());
        }
        let record = coord
            .get(&format!("{PREFIX}{id}"))
            .await?
            .and_then(|kv| serde_json::from_slice::<TokenRecord>(&kv.value).ok());
        let mut cache = self.lock();
        if cache.len() > 10_000 {
            cache.clear();
        }
        cache.insert(id.to_string(), (record.clone(), Instant::now()));
        Ok(record)
    }

    /// Forget a token at once (this manager revoked it).
    pub fn forget(&self, id: &str) {
        self.lock().remove(id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Option<TokenRecord>, Instant)>> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coord::embedded::EmbeddedCoordinator;

    fn request(role: Role) -> NewToken {
        NewToken {
            name: "ci".into(),
            role,
            group: None,
            expires: None,
        }
    }

    #[test]
    fn token_format() {
        assert_eq!(split("dct_ab12_ff00"), Some(("ab12", "ff00")));
        for bad in [
            "",
            "dct_",
            "dct_ab",
            "dct__ff",
            "xyz_ab_ff",
            "dct_zz_ff",
            "dct_ab_",
        ] {
            assert_eq!(split(bad), None, "{bad}");
        }
    }

    #[tokio::test]
    async fn created_tokens_verify_until_revoked_and_only_with_their_secret() {
        let coord = EmbeddedCoordinator::in_memory();
        let verifier = TokenVerifier::new(None);
        let created = create(&coord, &request(Role::Operator), "test", 0)
            .await
            .unwrap();
        let principal = verifier.verify(&coord, &created.token, 1).await.unwrap();
        assert_eq!(principal.unwrap().role, Role::Operator);

        let stored = coord
            .get(&format!("{PREFIX}{}", created.record.id))
            .await
            .unwrap()
            .unwrap();
        let (_, secret) = split(&created.token).unwrap();
        assert!(
            !stored.value_str().contains(secret),
            "the secret is never stored"
        );

        let mut wrong = created.token.clone();
        wrong.pop();
        wrong.push('0');
        if wrong == created.token {
            wrong.pop();
            wrong.push('1');
        }
        assert_eq!(verifier.verify(&coord, &wrong, 1).await.unwrap(), None);

        revoke(&coord, &created.record.id).await.unwrap();
        verifier.forget(&created.record.id);
        assert_eq!(
            verifier.verify(&coord, &created.token, 1).await.unwrap(),
            None
        );
        assert!(matches!(
            revoke(&coord, &created.record.id).await,
            Err(AuthError::NotFound(_))
        ));
    }

    #[tokio::test]
    async fn expired_tokens_are_refused() {
        let coord = EmbeddedCoordinator::in_memory();
        let verifier = TokenVerifier::new(None);
        let mut req = request(Role::Viewer);
        req.expires = Some("1h".into());
        let created = create(&coord, &req, "test", 0).await.unwrap();
        assert!(
            verifier
                .verify(&coord, &created.token, 3_599_999)
                .await
                .unwrap()
                .is_some()
        );
        assert_eq!(
            verifier
                .verify(&coord, &created.token, 3_600_000)
                .await
                .unwrap(),
            None
        );
    }

    #[tokio::test]
    async fn configured_admin_token() {
        let coord = EmbeddedCoordinator::in_memory();
        let verifier = TokenVerifier::new(Some("s3cret-admin"));
        let p = verifier
            .verify(&coord, "s3cret-admin", 0)
            .await
            .unwrap()
            .unwrap();
        assert_eq!((p.role, p.id.as_str()), (Role::Admin, CONFIG_ADMIN_ID));
        assert_eq!(
            verifier.verify(&coord, "s3cret-admim", 0).await.unwrap(),
            None
        );
    }

    #[tokio::test]
    async fn bad_requests_name_the_field() {
        let coord = EmbeddedCoordinator::in_memory();
        let mut req = request(Role::Admin);
        req.name = "<script>".into();
        let err = create(&coord, &req, "t", 0).await.unwrap_err().to_string();
        assert!(err.starts_with("name:"), "{err}");
        let mut req = request(Role::Admin);
        req.expires = Some("soon".into());
        let err = create(&coord, &req, "t", 0).await.unwrap_err().to_string();
        assert!(err.starts_with("expires:"), "{err}");
        assert!(list(&coord).await.unwrap().is_empty(), "nothing stored");
    }
}
