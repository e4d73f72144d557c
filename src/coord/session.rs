//! A session: a lease kept alive in the background, with a signal when it is
//! lost.
//!
//! Liveness is judged locally and conservatively: the session is alive only
//! until `ttl` after the last keep-alive that etcd acknowledged was *sent*.
//! A process frozen past that instant (SIGSTOP, a long GC-like pause, a
//! partition) finds itself dead the moment it looks, before its keep-alive
//! task has even run, so it cannot act on a lease the cluster has already
//! expired.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::{CoordError, Coordinator, LeaseId, Result};

/// How many keep-alives per TTL: three gives two chances to recover from a
/// failed one before the lease lapses.
const KEEPALIVES_PER_TTL: u32 = 3;

/// After a failed keep-alive, the next comes this soon (at most half a
/// period), not a whole period later. A busy etcd refuses a renewal while
/// its applied index trails by more than a second ("waiting for the
/// applied index took too long"), and then takes the next one: at one
/// attempt a period, two refusals in a row cost the session and every
/// tick it held (issue M's `max`, run 4).
const KEEPALIVE_RETRY: Duration = Duration::from_millis(500);

pub struct Session {
    lease: LeaseId,
    ttl: Duration,
    /// `Some(deadline)` while alive; `None` once lost or revoked.
    alive_until: watch::Receiver<Option<Instant>>,
    keeper: tokio::task::JoinHandle<()>,
    coord: Arc<dyn Coordinator>,
}

impl Session {
    /// Grant a lease of `ttl` and start keeping it alive.
    pub async fn start(coord: Arc<dyn Coordinator>, ttl: Duration) -> Result<Session> {
        let sent = Instant::now();
        let lease = coord.grant(ttl).await?;
        let (tx, alive_until) = watch::channel(Some(sent + ttl));
        let keeper = tokio::spawn(keep_alive(coord.clone(), lease, ttl, sent + ttl, tx));
        Ok(Session {
            lease,
            ttl,
            alive_until,
            keeper,
            coord,
        })
    }

    pub fn lease(&self) -> LeaseId {
        self.lease
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Alive right now: not lost, and the local deadline not passed.
    pub fn is_alive(&self) -> bool {
        matches!(*self.alive_until.borrow(), Some(deadline) if Instant::now() < deadline)
    }

    /// A receiver that changes to `None` when the session is lost.
    pub fn watch(&self) -> watch::Receiver<Option<Instant>> {
        self.alive_until.clone()
    }

    /// Resolves when the session is lost (keep-alive refused, or no
    /// acknowledged keep-alive within the TTL).
    pub async fn lost(&self) {
        wait_lost(self.alive_until.clone()).await
    }

    /// A token that is alive exactly as long as this session.
    pub fn token(&self) -> LivenessToken {
        LivenessToken {
            lease: self.lease,
            alive_until: self.alive_until.clone(),
        }
    }

    /// End the session now, deleting every key attached to its lease.
    pub async fn revoke(self) -> Result<()> {
        self.keeper.abort();
        self.coord.revoke(self.lease).await
    }
}

/// Resolves when the session behind `alive_until` is lost.
pub async fn wait_lost(mut alive_until: watch::Receiver<Option<Instant>>) {
    loop {
        let deadline = *alive_until.borrow_and_update();
        let Some(deadline) = deadline else { return };
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => {
                if !matches!(*alive_until.borrow(), Some(d) if Instant::now() < d) { return }
            }
            changed = alive_until.changed() => if changed.is_err() { return },
        }
    }
}

/// Proof that the worker's session was alive when a tick was claimed; a run
/// checks it right before starting its process. Every token of a session
/// dies at once when the session is lost.
#[derive(Clone, Debug)]
pub struct LivenessToken {
    lease: LeaseId,
    alive_until: watch::Receiver<Option<Instant>>,
}

impl LivenessToken {
    pub fn is_alive(&self) -> bool {
        matches!(*self.alive_until.borrow(), Some(deadline) if Instant::now() < deadline)
    }

    /// The session lease, for keys that must end with the session.
    pub fn lease(&self) -> LeaseId {
        self.lease
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.keeper.abort();
    }
}

async fn keep_alive(
    coord: Arc<dyn Coordinator>,
    lease: LeaseId,
    ttl: Duration,
    mut deadline: Instant,
    alive: watch::Sender<Option<Instant>>,
) {
    let period = ttl / KEEPALIVES_PER_TTL;
    let retry = KEEPALIVE_RETRY.min(period / 2);
    // Counted from the last send, so a slow answer does not push the next
    // keep-alive later.
    let mut next = Instant::now() + period;
    loop {
        tokio::time::sleep_until(next).await;
        if Instant::now() >= deadline {
            tracing::warn!(
                lease,
                "session lost: no keep-alive acknowledged within the TTL"
            );
            let _ = alive.send(None);
            return;
        }
        let sent = Instant::now();
        match coord.keep_alive(lease).await {
            Ok(_) => {
                next = sent + period;
                deadline = sent + ttl;
                if alive.send(Some(deadline)).is_err() {
                    return;
                }
            }
            Err(CoordError::LeaseNotFound(_)) => {
                tracing::warn!(lease, "session lost: lease expired or revoked");
                let _ = alive.send(None);
                return;
            }
            Err(error) => {
                tracing::warn!(lease, %error, "keep-alive failed; retrying until the TTL runs out");
                next = Instant::now() + retry;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coord::faulty::Faulty;
    use std::sync::atomic::Ordering;

    #[tokio::test(start_paused = true)]
    async fn a_session_outlives_keep_alives_refused_for_less_than_its_ttl() {
        let faulty = Arc::new(Faulty::in_memory());
        let coord: Arc<dyn Coordinator> = faulty.clone();
        // TTL 3 s: a keep-alive every second, then every 500 ms after a
        // refusal. The ones at 1, 1.5 and 2 s are refused; 2.5 s lands.
        let session = Session::start(coord, Duration::from_secs(3)).await.unwrap();
        faulty.failing_keep_alives.store(3, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(4_000)).await;
        assert_eq!(faulty.failing_keep_alives.load(Ordering::SeqCst), 0);
        assert!(
            session.is_alive(),
            "one attempt a period would have lost it at 3 s"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_session_is_lost_when_no_keep_alive_lands_within_its_ttl() {
        let faulty = Arc::new(Faulty::in_memory());
        let coord: Arc<dyn Coordinator> = faulty.clone();
        let session = Session::start(coord, Duration::from_secs(3)).await.unwrap();
        faulty
            .failing_keep_alives
            .store(usize::MAX, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(3_100)).await;
        assert!(!session.is_alive());
        assert!(session.watch().borrow().is_none(), "the keeper said so");
    }
}
