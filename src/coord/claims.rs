//! Tick claims: `ticks/<job>/<unix_ms>` created with put-if-absent, so each
//! tick is won by exactly one worker in the whole cluster.
//!
//! Claims must not pile up (etcd 3.4 slows down as keys accumulate), yet a
//! claim must outlive every attempt to claim the same tick again. So claims
//! are attached to shared leases, one per time bucket of ticks: the lease of
//! a bucket ends `retention` after the bucket's last tick. The live key count
//! then follows the tick rate (ticks per `bucket + retention`), not history,
//! and a worker grants one lease per bucket rather than one per claim.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;

use super::{Claim, CoordError, Coordinator, LeaseId, Result};

#[derive(Debug, Clone, Copy)]
pub struct ClaimPolicy {
    /// Ticks whose instants fall in the same bucket share a lease.
    pub bucket: Duration,
    /// How long after its bucket a claim is kept: longer than any delay with
    /// which a worker may still try to claim a tick (catch-up windows).
    pub retention: Duration,
}

impl Default for ClaimPolicy {
    fn default() -> ClaimPolicy {
        ClaimPolicy {
            // Small enough that a bucket's expiry stays a small etcd
            // transaction: at 50,000 ticks a minute, one-minute buckets put
            // ~12,000 keys on a lease, and revoking it stalled a 3-member
            // etcd past every worker's session TTL.
            bucket: Duration::from_secs(10),
            retention: Duration::from_secs(300),
        }
    }
}

pub struct TickClaims {
    coord: Arc<dyn Coordinator>,
    policy: ClaimPolicy,
    /// Bucket index -> its lease. Old buckets are forgotten, not revoked:
    /// their leases expire by themselves.
    leases: Mutex<BTreeMap<i64, LeaseId>>,
}

/// The key of one tick's claim.
pub fn tick_key(job: &str, tick_ms: i64) -> String {
    format!("ticks/{job}/{tick_ms}")
}

impl TickClaims {
    pub fn new(coord: Arc<dyn Coordinator>, policy: ClaimPolicy) -> TickClaims {
        TickClaims {
            coord,
            policy,
            leases: Mutex::new(BTreeMap::new()),
        }
    }

    /// Claim the tick of `job` planned at `tick_ms` (Unix milliseconds) for
    /// `holder`. `now_ms` is the current time, to size a new bucket lease.
    pub async fn claim(&self, job: &str, tick_ms: i64, holder: &str, now_ms: i64) -> Result<Claim> {
        let key = tick_key(job, tick_ms);
        let lease = self.lease_for(tick_ms, now_ms).await?;
        match self
            .coord
            .put_if_absent(&key, holder.as_bytes().to_vec(), Some(lease))
            .await
        {
            Err(CoordError::LeaseNotFound(_)) => {
                // The bucket's lease ended early (an etcd restart with a
                // fresh store, a revoke): forget it and try once more.
                self.leases.lock().await.remove(&self.bucket_of(tick_ms));
                let lease = self.lease_for(tick_ms, now_ms).await?;
                self.coord
                    .put_if_absent(&key, holder.as_bytes().to_vec(), Some(lease))
                    .await
            }
            other => other,
        }
    }

    fn bucket_of(&self, tick_ms: i64) -> i64 {
        tick_ms.div_euclid(self.policy.bucket.as_millis() as i64)
    }

    async fn lease_for(&self, tick_ms: i64, now_ms: i64) -> Result<LeaseId> {
        let bucket = self.bucket_of(tick_ms);
        let mut leases = self.leases.lock().await;
        if let Some(lease) = leases.get(&bucket) {
            return Ok(*lease);
        }
        let bucket_ms = self.policy.bucket.as_millis() as i64;
        let bucket_end_ms = (bucket + 1) * bucket_ms;
        let ttl_ms = (bucket_end_ms - now_ms).max(0) + self.policy.retention.as_millis() as i64;
        let lease = self
            .coord
            .grant(Duration::from_millis(ttl_ms as u64))
            .await?;
        leases.insert(bucket, lease);
        // Forget buckets whose leases have surely ended.
        let expired_before = self.bucket_of(now_ms - self.policy.retention.as_millis() as i64) - 1;
        leases.retain(|b, _| *b >= expired_before);
        Ok(lease)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coord::embedded::EmbeddedCoordinator;

    const MINUTE_MS: i64 = 60_000;

    #[tokio::test(start_paused = true)]
    async fn a_tick_is_won_once_and_claims_share_their_buckets_lease() {
        let coord: Arc<dyn Coordinator> = Arc::new(EmbeddedCoordinator::in_memory());
        let claims = TickClaims::new(coord.clone(), ClaimPolicy::default());
        let now = 10 * MINUTE_MS;
        assert!(matches!(
            claims.claim("a", now, "w1", now).await.unwrap(),
            Claim::Won { .. }
        ));
        match claims.claim("a", now, "w2", now).await.unwrap() {
            Claim::Held(holder) => assert_eq!(holder.value, b"w1"),
            other => panic!("second claim must lose: {other:?}"),
        }
        let bucket_ms = ClaimPolicy::default().bucket.as_millis() as i64;
        claims
            .claim("b", now + bucket_ms / 2, "w1", now)
            .await
            .unwrap();
        claims.claim("c", now + bucket_ms, "w1", now).await.unwrap();
        let (keys, _) = coord.list("ticks/").await.unwrap();
        let lease_of = |k: &str| keys.iter().find(|kv| kv.key == k).unwrap().lease;
        assert_eq!(
            lease_of(&tick_key("a", now)),
            lease_of(&tick_key("b", now + bucket_ms / 2))
        );
        assert_ne!(
            lease_of(&tick_key("a", now)),
            lease_of(&tick_key("c", now + bucket_ms))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn claims_expire_after_their_bucket_plus_retention() {
        let coord: Arc<dyn Coordinator> = Arc::new(EmbeddedCoordinator::in_memory());
        let policy = ClaimPolicy::default();
        let claims = TickClaims::new(coord.clone(), policy);
        let now = 10 * MINUTE_MS;
        claims.claim("a", now, "w1", now).await.unwrap();
        // Just before the bucket ends plus retention, the claim still guards the tick.
        tokio::time::sleep(policy.bucket + policy.retention - Duration::from_secs(2)).await;
        assert!(coord.get(&tick_key("a", now)).await.unwrap().is_some());
        tokio::time::sleep(Duration::from_secs(3)).await;
        // Give the reaper task its turn at the paused clock.
        tokio::task::yield_now().await;
        assert_eq!(coord.get(&tick_key("a", now)).await.unwrap(), None);
    }
}
