//! Tick claims: `ticks/<job>/<unix_ms>` created with put-if-absent, so each
//! tick is won by exactly one worker in the whole cluster.
//!
//! A claim is made in two steps. Won, it is held on the winner's *session*
//! lease: if the winner dies (or freezes past its lease) before the tick
//! starts, the claim vanishes with the session and the tick is free for the
//! next owner to run late. Right before the process starts, the winner
//! *confirms* it: a compare-and-swap that moves the claim (still its own
//! value) onto a long-lived bucket lease. A confirmed claim means "this tick
//! was started or decided"; an unconfirmed one cannot outlive its holder.
//!
//! Confirmed claims must not pile up (etcd 3.4 slows down as keys
//! accumulate), yet a claim must outlive every attempt to claim the same
//! tick again. So they live on shared leases, one per time bucket of ticks:
//! the lease of a bucket ends `retention` after the bucket's last tick. The
//! live key count then follows the tick rate, not history, and a worker
//! grants one lease per bucket rather than one per claim.
//!
//! A claim's value is `<worker> <nonce>`, the nonce fresh for each claim. When
//! a claim's outcome is unknown (a timeout, an etcd leader election), it is
//! tried again until the tick is due: finding its own value there means the
//! lost attempt had won. So an election costs a claim latency, not the tick.
//!
//! Claims and confirms made within [`BATCH_LINGER`] of each other go as one
//! transaction ([`super::group_commit`]).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;

use super::group_commit::{GroupCommit, PutOutcome};
use super::{Claim, CondPut, Condition, CoordError, Coordinator, LeaseId, Result, retry_unknown};

#[derive(Debug, Clone, Copy)]
pub struct ClaimPolicy {
    /// Ticks whose instants fall in the same bucket share a lease.
    pub bucket: Duration,
    /// How long after its bucket a claim is kept: longer than any delay with
    /// which a worker may still try to claim a tick (misfire windows).
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

/// Slack between a misfire window and claim retention: a late tick is
/// claimed a little after the scan that found it free, and its bucket's
/// lease may have been granted up to a bucket earlier.
pub const RETENTION_SLACK: Duration = Duration::from_secs(30);

impl ClaimPolicy {
    /// The longest misfire window these claims can guard: a tick found free
    /// in the window must still show its claim to anyone who looks later.
    pub fn max_misfire_window(&self) -> Duration {
        self.retention.saturating_sub(RETENTION_SLACK)
    }
}

pub struct TickClaims {
    coord: Arc<dyn Coordinator>,
    policy: ClaimPolicy,
    /// Bucket index -> its lease. Old buckets are forgotten, not revoked:
    /// their leases expire by themselves.
    leases: Mutex<BTreeMap<i64, LeaseId>>,
    /// Claims and confirms made together go as one transaction.
    batch: GroupCommit,
    /// Look backs reading at once (see [`LOOK_BACK_READS`]).
    look_backs: Arc<tokio::sync::Semaphore>,
}

/// Most look backs (one range read of a job's claims each) in flight at
/// once from one process. A worker taking over 12,500 jobs, or getting its
/// session back, looks back for every one of them; unbounded, those reads
/// arrived at etcd all at once, and again every few seconds while etcd was
/// too slow to answer them, which kept it too slow (issue M's `max`, run 3).
pub const LOOK_BACK_READS: usize = 16;

/// How long a claim or confirm waits for others to share its transaction:
/// the claims and confirms of one instant arrive within a millisecond.
pub const BATCH_LINGER: Duration = Duration::from_millis(2);

/// A tick this worker won, held on its session lease until confirmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WonClaim {
    pub key: String,
    pub value: Vec<u8>,
    pub tick_ms: i64,
}

/// The outcome of a claim that got an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TickClaim {
    Won(WonClaim),
    /// Another worker holds it (confirmed or not).
    Held {
        holder: String,
    },
}

/// How long a claim with an unknown outcome keeps being retried, at least
/// (a tick already due gets this long; a future one, until it is due).
const RETRY_AT_LEAST: Duration = Duration::from_secs(2);

/// The worker named in a claim's value (`<worker> <nonce>`).
pub fn claim_holder(value: &[u8]) -> String {
    let text = String::from_utf8_lossy(value);
    text.split(' ').next().unwrap_or_default().to_string()
}

/// The ticks `worker` claimed at or before `until_ms`, as `(job, tick)`,
/// from a listing of `ticks/`: what a worker that died may have run
/// without a record reaching the run log. Pure, for table tests.
pub fn claims_of(
    kvs: &[crate::coord::KeyValue],
    worker: &str,
    until_ms: i64,
) -> Vec<(String, i64)> {
    kvs.iter()
        .filter(|kv| claim_holder(&kv.value) == worker)
        .filter_map(|kv| {
            let (job, tick) = parse_tick_key(&kv.key)?;
            (tick <= until_ms).then(|| (job.to_string(), tick))
        })
        .collect()
}

/// The key of one tick's claim.
pub fn tick_key(job: &str, tick_ms: i64) -> String {
    format!("ticks/{job}/{tick_ms}")
}

/// The job and tick of a claim's key (the inverse of [`tick_key`]).
pub fn parse_tick_key(key: &str) -> Option<(&str, i64)> {
    let (job, tick) = key.strip_prefix("ticks/")?.rsplit_once('/')?;
    Some((job, tick.parse().ok()?))
}

/// The prefix of every claim of one job.
pub fn job_ticks_prefix(job: &str) -> String {
    format!("ticks/{job}/")
}

impl TickClaims {
    pub fn new(coord: Arc<dyn Coordinator>, policy: ClaimPolicy) -> TickClaims {
        TickClaims {
            batch: GroupCommit::new(coord.clone(), BATCH_LINGER),
            coord,
            policy,
            leases: Mutex::new(BTreeMap::new()),
            look_backs: Arc::new(tokio::sync::Semaphore::new(LOOK_BACK_READS)),
        }
    }

    /// A turn to look back, waited for among this process's look backs.
    /// Hold it while choosing the window and reading it: a window chosen
    /// before a long wait could reach past the claims still kept.
    pub async fn look_back_turn(&self) -> tokio::sync::OwnedSemaphorePermit {
        self.look_backs
            .clone()
            .acquire_owned()
            .await
            .expect("the look-back semaphore is never closed")
    }

    pub fn policy(&self) -> ClaimPolicy {
        self.policy
    }

    /// Claim the tick of `job` planned at `tick_ms` (Unix milliseconds) for
    /// `holder`, held on `session` (the holder's session lease) until
    /// [`TickClaims::confirm`]. An error means the outcome stayed unknown
    /// until the tick was due, or the session is gone.
    pub async fn claim(
        &self,
        job: &str,
        tick_ms: i64,
        holder: &str,
        now_ms: i64,
        session: LeaseId,
    ) -> Result<TickClaim> {
        self.claim_key(tick_key(job, tick_ms), tick_ms, holder, now_ms, session)
            .await
    }

    /// Claim under any key (a chained run's is keyed by its parent run);
    /// `tick_ms` places the claim in its lease bucket.
    pub async fn claim_key(
        &self,
        key: String,
        tick_ms: i64,
        holder: &str,
        now_ms: i64,
        session: LeaseId,
    ) -> Result<TickClaim> {
        let value = format!("{holder} {}", crate::auth::random_hex(8)).into_bytes();
        let patience = Duration::from_millis((tick_ms - now_ms).max(0) as u64).max(RETRY_AT_LEAST);
        let won = |value: Vec<u8>| {
            Ok(TickClaim::Won(WonClaim {
                key: key.clone(),
                value,
                tick_ms,
            }))
        };
        let put = CondPut {
            key: key.clone(),
            when: Condition::Absent,
            value: value.clone(),
            lease: Some(session),
        };
        match self.batch.submit(put, patience).await? {
            PutOutcome::Put => won(value),
            // An earlier attempt whose answer was lost had won.
            PutOutcome::NotPut(Some(kv)) if kv.value == value => won(value),
            PutOutcome::NotPut(Some(kv)) => Ok(TickClaim::Held {
                holder: claim_holder(&kv.value),
            }),
            PutOutcome::NotPut(None) => Err(CoordError::Unavailable(format!(
                "claim of {key}: lost the race to a key that then disappeared"
            ))),
        }
    }

    /// Mark a won tick as started: move its claim onto its bucket's lease,
    /// if the claim is still ours. `false` when it is not (the session
    /// ended and someone else may run the tick): the tick must not start.
    pub async fn confirm(&self, won: &WonClaim, now_ms: i64) -> Result<bool> {
        let moved = |lease| {
            let put = CondPut {
                key: won.key.clone(),
                when: Condition::ValueIs(won.value.clone()),
                value: won.value.clone(),
                lease: Some(lease),
            };
            self.batch.submit(put, RETRY_AT_LEAST)
        };
        let lease = self.lease_for(won.tick_ms, now_ms).await?;
        let outcome = match moved(lease).await {
            Err(CoordError::LeaseNotFound(_)) => {
                // The bucket's lease ended early (an etcd restart with a
                // fresh store, a revoke): forget it and try once more.
                self.leases
                    .lock()
                    .await
                    .remove(&self.bucket_of(won.tick_ms));
                let lease = self.lease_for(won.tick_ms, now_ms).await?;
                moved(lease).await
            }
            other => other,
        }?;
        Ok(outcome == PutOutcome::Put)
    }

    /// Claim a tick that is decided at once (nothing will start): straight
    /// onto its bucket's lease, as if won and confirmed in one step. `Some`
    /// holder when someone else holds it already. A manager records the
    /// ticks nobody could run this way, so no late run races the record.
    pub async fn claim_decided(
        &self,
        job: &str,
        tick_ms: i64,
        holder: &str,
        now_ms: i64,
    ) -> Result<Option<String>> {
        let key = tick_key(job, tick_ms);
        let value = format!("{holder} {}", crate::auth::random_hex(8)).into_bytes();
        let put = |lease| self.coord.put_if_absent(&key, value.clone(), Some(lease));
        let lease = self.lease_for(tick_ms, now_ms).await?;
        let result = match retry_unknown(RETRY_AT_LEAST, || put(lease)).await {
            Err(CoordError::LeaseNotFound(_)) => {
                self.leases.lock().await.remove(&self.bucket_of(tick_ms));
                let lease = self.lease_for(tick_ms, now_ms).await?;
                retry_unknown(RETRY_AT_LEAST, || put(lease)).await?
            }
            other => other?,
        };
        Ok(match result {
            Claim::Won { .. } => None,
            Claim::Held(kv) if kv.value == value => None,
            Claim::Held(kv) => Some(claim_holder(&kv.value)),
        })
    }

    /// The ticks of `job` claimed at or after `from_ms` (confirmed or held):
    /// one range read, for a new owner looking for ticks nobody ran.
    pub async fn claimed_since(&self, job: &str, from_ms: i64) -> Result<BTreeSet<i64>> {
        let (kvs, _) = self.coord.list(&job_ticks_prefix(job)).await?;
        Ok(kvs
            .iter()
            .filter_map(|kv| Some(parse_tick_key(&kv.key)?.1))
            .filter(|tick| *tick >= from_ms)
            .collect())
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

    #[test]
    fn a_dead_workers_claims_are_found_by_holder_and_time() {
        let kv = |key: &str, value: &str| crate::coord::KeyValue {
            key: key.into(),
            value: value.as_bytes().to_vec(),
            create_revision: 1,
            mod_revision: 1,
            lease: 0,
        };
        let kvs = [
            kv("ticks/a/1000", "w2 n1"),
            kv("ticks/a/2000", "w1 n2"),
            kv("ticks/b/1000", "w2 n3"),
            kv("ticks/b/3000", "w2 n4"),
            kv("ticks/broken", "w2 n5"),
            kv("ticks/c/notatime", "w2 n6"),
            kv("ticks/w2x/1000", "w22 n7"),
        ];
        // (worker, until, claims found)
        type Found = &'static [(&'static str, i64)];
        let table: [(&str, i64, Found); 4] = [
            ("w2", 5000, &[("a", 1000), ("b", 1000), ("b", 3000)]),
            ("w2", 2000, &[("a", 1000), ("b", 1000)]),
            ("w1", 5000, &[("a", 2000)]),
            ("w9", 5000, &[]),
        ];
        for (worker, until, expected) in table {
            let found = claims_of(&kvs, worker, until);
            let expected: Vec<(String, i64)> =
                expected.iter().map(|(j, t)| (j.to_string(), *t)).collect();
            assert_eq!(found, expected, "{worker} until {until}");
        }
    }
    use crate::coord::embedded::EmbeddedCoordinator;

    const MINUTE_MS: i64 = 60_000;

    /// A session lease, and a claim on it confirmed at once.
    async fn session(coord: &Arc<dyn Coordinator>) -> LeaseId {
        coord.grant(Duration::from_secs(10)).await.unwrap()
    }

    async fn claim_and_confirm(
        claims: &TickClaims,
        job: &str,
        tick: i64,
        now: i64,
        lease: LeaseId,
    ) -> TickClaim {
        let outcome = claims.claim(job, tick, "w1", now, lease).await.unwrap();
        if let TickClaim::Won(won) = &outcome {
            assert!(claims.confirm(won, now).await.unwrap());
        }
        outcome
    }

    #[tokio::test(start_paused = true)]
    async fn a_tick_is_won_once_and_confirmed_claims_share_their_buckets_lease() {
        let coord: Arc<dyn Coordinator> = Arc::new(EmbeddedCoordinator::in_memory());
        let claims = TickClaims::new(coord.clone(), ClaimPolicy::default());
        let lease = session(&coord).await;
        let now = 10 * MINUTE_MS;
        assert!(matches!(
            claim_and_confirm(&claims, "a", now, now, lease).await,
            TickClaim::Won(_)
        ));
        match claims.claim("a", now, "w2", now, lease).await.unwrap() {
            TickClaim::Held { holder } => assert_eq!(holder, "w1"),
            other => panic!("second claim must lose: {other:?}"),
        }
        let bucket_ms = ClaimPolicy::default().bucket.as_millis() as i64;
        claim_and_confirm(&claims, "b", now + bucket_ms / 2, now, lease).await;
        claim_and_confirm(&claims, "c", now + bucket_ms, now, lease).await;
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
        let lease = session(&coord).await;
        claim_and_confirm(&claims, "a", now, now, lease).await;
        coord.revoke(lease).await.unwrap();
        // Just before the bucket ends plus retention, the claim still guards the tick.
        tokio::time::sleep(policy.bucket + policy.retention - Duration::from_secs(2)).await;
        assert!(coord.get(&tick_key("a", now)).await.unwrap().is_some());
        tokio::time::sleep(Duration::from_secs(3)).await;
        // Give the reaper task its turn at the paused clock.
        tokio::task::yield_now().await;
        assert_eq!(coord.get(&tick_key("a", now)).await.unwrap(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn an_unconfirmed_claim_ends_with_its_session_and_cannot_be_confirmed_after() {
        let coord: Arc<dyn Coordinator> = Arc::new(EmbeddedCoordinator::in_memory());
        let claims = TickClaims::new(coord.clone(), ClaimPolicy::default());
        let now = 10 * MINUTE_MS;
        let lease = session(&coord).await;
        let TickClaim::Won(won) = claims.claim("a", now, "w1", now, lease).await.unwrap() else {
            panic!("first claim wins");
        };
        coord.revoke(lease).await.unwrap();
        assert_eq!(
            coord.get(&won.key).await.unwrap(),
            None,
            "the claim went with the session"
        );
        assert!(
            !claims.confirm(&won, now).await.unwrap(),
            "nothing of ours left to confirm"
        );
        // The tick is free again, and the next owner's claim is not ours.
        let other = session(&coord).await;
        let TickClaim::Won(theirs) = claims.claim("a", now, "w2", now, other).await.unwrap() else {
            panic!("the freed tick can be won again");
        };
        assert!(
            !claims.confirm(&won, now).await.unwrap(),
            "w1 cannot take w2's claim"
        );
        assert!(claims.confirm(&theirs, now).await.unwrap());
        assert_eq!(
            claims.claimed_since("a", now).await.unwrap(),
            BTreeSet::from([now])
        );
        assert!(claims.claimed_since("a", now + 1).await.unwrap().is_empty());
    }

    /// Claims whose put-if-absent answers are lost `lose` times after the
    /// write lands; with `steal`, another worker's claim lands instead.
    async fn losing(lose: usize, steal: bool) -> (TickClaims, LeaseId) {
        let coord: Arc<dyn Coordinator> = Arc::new(crate::coord::faulty::Faulty {
            lose_claims: std::sync::atomic::AtomicUsize::new(lose),
            steal,
            ..crate::coord::faulty::Faulty::in_memory()
        });
        let lease = session(&coord).await;
        (TickClaims::new(coord, ClaimPolicy::default()), lease)
    }

    #[tokio::test(start_paused = true)]
    async fn a_claim_whose_answer_was_lost_is_retried_and_finds_its_own_win() {
        let now = 10 * MINUTE_MS;
        let (claims, lease) = losing(3, false).await;
        assert!(
            matches!(
                claims.claim("a", now + 500, "w1", now, lease).await,
                Ok(TickClaim::Won(_))
            ),
            "the first attempt wrote the claim; the retry recognises it"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_retried_claim_that_someone_else_took_is_lost() {
        let now = 10 * MINUTE_MS;
        let (claims, lease) = losing(1, true).await;
        match claims.claim("a", now + 500, "w1", now, lease).await {
            Ok(TickClaim::Held { holder }) => assert_eq!(holder, "w9"),
            other => panic!("expected the other worker's claim: {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_unknown_outcome_is_retried_until_the_tick_is_due_then_reported() {
        let now = 10 * MINUTE_MS;
        // A store that never answers: errors until the tick is due.
        let claims = TickClaims::new(Arc::new(Unreachable), ClaimPolicy::default());
        let started = tokio::time::Instant::now();
        assert!(claims.claim("c", now + 5_000, "w1", now, 1).await.is_err());
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(4_500) && waited <= Duration::from_secs(5),
            "retried for {waited:?}, the time left until the tick"
        );
    }

    /// A coordinator that never answers a claim.
    struct Unreachable;

    #[async_trait::async_trait]
    impl Coordinator for Unreachable {
        async fn get(&self, _: &str) -> Result<Option<crate::coord::KeyValue>> {
            Err(CoordError::Unavailable("down".into()))
        }
        async fn list(&self, _: &str) -> Result<(Vec<crate::coord::KeyValue>, i64)> {
            Err(CoordError::Unavailable("down".into()))
        }
        async fn list_first(&self, _: &str, _: u64) -> Result<Vec<crate::coord::KeyValue>> {
            Err(CoordError::Unavailable("down".into()))
        }
        async fn put(&self, _: &str, _: Vec<u8>, _: Option<LeaseId>) -> Result<i64> {
            Err(CoordError::Unavailable("down".into()))
        }
        async fn delete(&self, _: &str) -> Result<Option<crate::coord::KeyValue>> {
            Err(CoordError::Unavailable("down".into()))
        }
        async fn put_if_absent(&self, _: &str, _: Vec<u8>, _: Option<LeaseId>) -> Result<Claim> {
            Err(CoordError::Unavailable("down".into()))
        }
        async fn put_if_value(
            &self,
            _: &str,
            _: &[u8],
            _: Vec<u8>,
            _: Option<LeaseId>,
        ) -> Result<bool> {
            Err(CoordError::Unavailable("down".into()))
        }
        async fn put_all_if(&self, _: &[crate::coord::CondPut]) -> Result<crate::coord::BatchPut> {
            Err(CoordError::Unavailable("down".into()))
        }
        async fn write_all(&self, _: &[crate::coord::Write]) -> Result<i64> {
            Err(CoordError::Unavailable("down".into()))
        }
        async fn watch(&self, _: &str, _: i64) -> Result<crate::coord::WatchStream> {
            Err(CoordError::Unavailable("down".into()))
        }
        async fn grant(&self, _: Duration) -> Result<LeaseId> {
            Ok(1)
        }
        async fn keep_alive(&self, _: LeaseId) -> Result<Duration> {
            Err(CoordError::Unavailable("down".into()))
        }
        async fn revoke(&self, _: LeaseId) -> Result<()> {
            Ok(())
        }
    }
}
