//! Console sessions: a random id in an HttpOnly cookie, stored as its
//! SHA-256 at `auth/sessions/<hash>` on a lease of the idle time, so an
//! unused session ends by itself in every manager, and sign-out (revoking
//! the lease) ends it everywhere. Each session has a CSRF token that the
//! console sends back in a header on every mutating request.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{AuthError, Principal, random_hex, sha256_hex};
use crate::coord::{CoordError, Coordinator, LeaseId};

pub const PREFIX: &str = "auth/sessions/";
pub const COOKIE: &str = "distcron_session";
pub const CSRF_HEADER: &str = "x-csrf-token";

/// What a session key holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Session {
    pub principal: Principal,
    pub csrf: String,
    pub lease: LeaseId,
}

/// A new session: the cookie value and the stored session.
pub struct NewSession {
    pub cookie: String,
    pub session: Session,
}

/// Sessions, with a short cache so a page's requests do not each read the
/// store; a sign-out elsewhere takes effect within [`CACHE_FOR`].
pub struct Sessions {
    idle: Duration,
    /// cookie hash -> (session, read at, lease last refreshed at).
    cache: Mutex<HashMap<String, Cached>>,
}

#[derive(Clone)]
struct Cached {
    session: Session,
    read_at: Instant,
    refreshed_at: Instant,
}

const CACHE_FOR: Duration = Duration::from_secs(2);

impl Sessions {
    pub fn new(idle: Duration) -> Sessions {
        Sessions {
            idle,
            cache: Mutex::default(),
        }
    }

    pub fn idle(&self) -> Duration {
        self.idle
    }

    pub async fn create(
        &self,
        coord: &dyn Coordinator,
        principal: Principal,
    ) -> Result<NewSession, AuthError> {
        let cookie = random_hex(32);
        let lease = coord.grant(self.idle).await?;
        let session = Session {
            principal,
            csrf: random_hex(32),
            lease,
        };
        let value = serde_json::to_vec(&session).expect("a session serialises");
        coord
            .put(&key(&cookie), value, Some(lease))
            .await
            .map_err(AuthError::from)?;
        Ok(NewSession { cookie, session })
    }

    /// The live session of a cookie, refreshing its idle timer now and then.
    pub async fn find(
        &self,
        coord: &dyn Coordinator,
        cookie: &str,
    ) -> Result<Option<Session>, AuthError> {
        if cookie.len() != 64 || !cookie.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(None);
        }
        let hash = sha256_hex(cookie.as_bytes());
        let cached = self.lock().get(&hash).cloned();
        let mut entry = match cached {
            Some(c) if c.read_at.elapsed() < CACHE_FOR => c,
            _ => {
                let Some(kv) = coord.get(&format!("{PREFIX}{hash}")).await? else {
                    self.lock().remove(&hash);
                    return Ok(None);
                };
                let Ok(session) = serde_json::from_slice::<Session>(&kv.value) else {
                    return Ok(None);
                };
                Cached {
                    session,
                    read_at: Instant::now(),
                    refreshed_at: Instant::now() - self.idle,
                }
            }
        };
        // Refresh the idle timer at most a few times per idle period.
        if entry.refreshed_at.elapsed() >= self.idle / 4 {
            match coord.keep_alive(entry.session.lease).await {
                Ok(_) => entry.refreshed_at = Instant::now(),
                Err(CoordError::LeaseNotFound(_)) => {
                    self.lock().remove(&hash);
                    return Ok(None);
                }
                Err(e) => return Err(e.into()),
            }
        }
        let session = entry.session.clone();
        let mut cache = self.lock();
        if cache.len() > 10_000 {
            cache.clear();
        }
        cache.insert(hash, entry);
        Ok(Some(session))
    }

    /// End a session everywhere.
    pub async fn end(&self, coord: &dyn Coordinator, cookie: &str) -> Result<(), AuthError> {
        let hash = sha256_hex(cookie.as_bytes());
        self.lock().remove(&hash);
        if let Some(kv) = coord.get(&format!("{PREFIX}{hash}")).await?
            && let Ok(session) = serde_json::from_slice::<Session>(&kv.value)
        {
            coord.revoke(session.lease).await?;
        }
        coord.delete(&format!("{PREFIX}{hash}")).await?;
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Cached>> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn key(cookie: &str) -> String {
    format!("{PREFIX}{}", sha256_hex(cookie.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Role;
    use crate::coord::embedded::EmbeddedCoordinator;

    fn alice() -> Principal {
        Principal {
            id: "user:alice".into(),
            name: "alice".into(),
            role: Role::Viewer,
            group: None,
        }
    }

    #[tokio::test]
    async fn a_session_lives_until_it_is_ended() {
        let coord = EmbeddedCoordinator::in_memory();
        let sessions = Sessions::new(Duration::from_secs(60));
        let new = sessions.create(&coord, alice()).await.unwrap();
        let found = sessions.find(&coord, &new.cookie).await.unwrap().unwrap();
        assert_eq!(found.principal, alice());
        assert_eq!(found.csrf, new.session.csrf);
        let (stored, _) = coord.list(PREFIX).await.unwrap();
        assert!(
            !stored[0].key.contains(&new.cookie),
            "only the hash is stored"
        );

        sessions.end(&coord, &new.cookie).await.unwrap();
        assert_eq!(sessions.find(&coord, &new.cookie).await.unwrap(), None);
        assert_eq!(sessions.find(&coord, "nothex").await.unwrap(), None);
    }
}
