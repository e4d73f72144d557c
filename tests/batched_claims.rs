//! Batched claims (issue M): the contract of `put_all_if` and of claims
//! and confirms that share one transaction, against the embedded engine
//! and a real etcd (`ETCD_ENDPOINTS`, started by `scripts/test.sh`).

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use distcron::coord::claims::{ClaimPolicy, TickClaim, TickClaims, tick_key};
use distcron::coord::embedded::EmbeddedCoordinator;
use distcron::coord::etcd::{EtcdCoordinator, EtcdOptions};
use distcron::coord::{
    BatchPut, Claim, CondPut, Condition, CoordError, Coordinator, KeyValue, LeaseId, MAX_BATCH,
    Result, Revision, WatchStream, Write,
};
use support::{service_endpoint, unique};

async fn embedded() -> Arc<dyn Coordinator> {
    Arc::new(EmbeddedCoordinator::in_memory())
}

async fn etcd() -> Arc<dyn Coordinator> {
    let endpoints = service_endpoint("ETCD_ENDPOINTS");
    let prefix = format!("/{}/", unique("batched"));
    let options = EtcdOptions::new(endpoints.split(',').map(String::from).collect(), &prefix);
    Arc::new(
        EtcdCoordinator::connect(options)
            .await
            .expect("connect to etcd"),
    )
}

/// A coordinator whose next `lose` batches land but answer with an error,
/// as when etcd's leader changes after the commit.
struct LosesAnswers {
    inner: Arc<dyn Coordinator>,
    lose: AtomicUsize,
    batches: AtomicUsize,
}

#[async_trait]
impl Coordinator for LosesAnswers {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        self.inner.get(key).await
    }
    async fn list(&self, prefix: &str) -> Result<(Vec<KeyValue>, Revision)> {
        self.inner.list(prefix).await
    }
    async fn list_first(&self, prefix: &str, limit: u64) -> Result<Vec<KeyValue>> {
        self.inner.list_first(prefix, limit).await
    }
    async fn put(&self, key: &str, value: Vec<u8>, lease: Option<LeaseId>) -> Result<Revision> {
        self.inner.put(key, value, lease).await
    }
    async fn delete(&self, key: &str) -> Result<Option<KeyValue>> {
        self.inner.delete(key).await
    }
    async fn put_if_absent(&self, k: &str, v: Vec<u8>, l: Option<LeaseId>) -> Result<Claim> {
        self.inner.put_if_absent(k, v, l).await
    }
    async fn put_if_value(
        &self,
        key: &str,
        expected: &[u8],
        value: Vec<u8>,
        lease: Option<LeaseId>,
    ) -> Result<bool> {
        self.inner.put_if_value(key, expected, value, lease).await
    }
    async fn put_all_if(&self, puts: &[CondPut]) -> Result<BatchPut> {
        self.batches.fetch_add(1, Ordering::SeqCst);
        let result = self.inner.put_all_if(puts).await?;
        let lost = self
            .lose
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if lost {
            return Err(CoordError::Unavailable("answer lost (test)".into()));
        }
        Ok(result)
    }
    async fn write_all(&self, writes: &[Write]) -> Result<Revision> {
        self.inner.write_all(writes).await
    }
    async fn watch(&self, prefix: &str, from: Revision) -> Result<WatchStream> {
        self.inner.watch(prefix, from).await
    }
    async fn grant(&self, ttl: Duration) -> Result<LeaseId> {
        self.inner.grant(ttl).await
    }
    async fn keep_alive(&self, lease: LeaseId) -> Result<Duration> {
        self.inner.keep_alive(lease).await
    }
    async fn revoke(&self, lease: LeaseId) -> Result<()> {
        self.inner.revoke(lease).await
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// One worker's claims: its own session lease and name.
struct Claimer {
    name: &'static str,
    claims: Arc<TickClaims>,
    session: LeaseId,
}

impl Claimer {
    async fn new(coord: Arc<dyn Coordinator>, name: &'static str) -> Claimer {
        let session = coord.grant(Duration::from_secs(30)).await.unwrap();
        Claimer {
            name,
            claims: Arc::new(TickClaims::new(coord, ClaimPolicy::default())),
            session,
        }
    }

    /// Claim every tick of `ticks` of `job` at once (as a worker's job
    /// actors do when their timers fire together); each outcome by tick.
    async fn claim_all(&self, job: &str, ticks: &[i64]) -> BTreeMap<i64, TickClaim> {
        let now = now_ms();
        let claims = ticks.iter().map(|&tick| {
            let claims = self.claims.clone();
            let (job, name, session) = (job.to_string(), self.name, self.session);
            async move {
                let claim = claims.claim(&job, tick, name, now, session).await;
                (tick, claim.expect("every claim gets an answer"))
            }
        });
        futures_util::future::join_all(claims)
            .await
            .into_iter()
            .collect()
    }
}

fn holder_of(stored: &KeyValue) -> String {
    distcron::coord::claims::claim_holder(&stored.value)
}

/// Instantiate every test for one engine.
macro_rules! batched_suite {
    ($engine:ident) => {
        mod $engine {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_batch_lands_whole_or_not_at_all_and_says_what_each_key_held() {
                let c = super::$engine().await;
                c.put("ticks/b/2", b"w2 x".to_vec(), None).await.unwrap();
                let put = |key: &str, when| CondPut {
                    key: key.into(),
                    when,
                    value: b"w1 y".to_vec(),
                    lease: None,
                };
                let failing = [
                    put("ticks/b/1", Condition::Absent),
                    put("ticks/b/2", Condition::Absent),
                ];
                let BatchPut::NonePut(held) = c.put_all_if(&failing).await.unwrap() else {
                    panic!("a held key must fail the whole batch");
                };
                assert_eq!(held.len(), 2);
                assert_eq!(held[0], None, "the free key was not written");
                assert_eq!(held[1].as_ref().unwrap().value, b"w2 x");
                assert_eq!(c.get("ticks/b/1").await.unwrap(), None);

                let landing = [
                    put("ticks/b/1", Condition::Absent),
                    put("ticks/b/2", Condition::ValueIs(b"w2 x".to_vec())),
                ];
                let BatchPut::AllPut { revision } = c.put_all_if(&landing).await.unwrap() else {
                    panic!("every condition held");
                };
                for key in ["ticks/b/1", "ticks/b/2"] {
                    let kv = c.get(key).await.unwrap().unwrap();
                    assert_eq!(kv.value, b"w1 y", "{key}");
                    assert_eq!(kv.mod_revision, revision, "{key}: one revision for the batch");
                }
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn two_workers_claiming_overlapping_windows_win_each_tick_once() {
                let c = super::$engine().await;
                let (a, b) = (Claimer::new(c.clone(), "w1").await, Claimer::new(c.clone(), "w2").await);
                // A hand-off: both workers believe they own the job for
                // 150 of these ticks; more than one batch each.
                let base = now_ms() + 60_000;
                let a_ticks: Vec<i64> = (0..300).map(|i| base + i * 1000).collect();
                let b_ticks: Vec<i64> = (150..450).map(|i| base + i * 1000).collect();
                let (won_a, won_b) = tokio::join!(a.claim_all("handoff", &a_ticks), b.claim_all("handoff", &b_ticks));
                let (kvs, _) = c.list("ticks/handoff/").await.unwrap();
                assert_eq!(kvs.len(), 450, "every tick claimed once");
                let stored: BTreeMap<String, String> =
                    kvs.iter().map(|kv| (kv.key.clone(), holder_of(kv))).collect();
                let mut both_won = 0;
                for tick in (0..450).map(|i| base + i * 1000) {
                    let key = tick_key("handoff", tick);
                    let winners: Vec<&str> = [(&won_a, "w1"), (&won_b, "w2")]
                        .iter()
                        .filter(|(won, _)| matches!(won.get(&tick), Some(TickClaim::Won(_))))
                        .map(|(_, name)| *name)
                        .collect();
                    assert_eq!(winners.len(), 1, "tick {tick}: winners {winners:?}");
                    assert_eq!(stored[&key], winners[0], "tick {tick}: the stored holder is the winner");
                    for (won, _) in [(&won_a, "w1"), (&won_b, "w2")] {
                        if let Some(TickClaim::Held { holder }) = won.get(&tick) {
                            assert_eq!(holder, winners[0], "tick {tick}: the loser names the winner");
                        }
                    }
                    both_won += usize::from(won_a.contains_key(&tick) && won_b.contains_key(&tick));
                }
                assert_eq!(both_won, 150, "the overlap was contended");
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_conflict_in_a_batch_falls_back_to_an_exact_winner_for_each_tick() {
                let c = super::$engine().await;
                let (a, b) = (Claimer::new(c.clone(), "w1").await, Claimer::new(c.clone(), "w2").await);
                let base = now_ms() + 60_000;
                let ticks: Vec<i64> = (0..40).map(|i| base + i * 1000).collect();
                // w2 took every third tick first.
                let taken: Vec<i64> = ticks.iter().copied().step_by(3).collect();
                let first = b.claim_all("conflict", &taken).await;
                assert!(first.values().all(|o| matches!(o, TickClaim::Won(_))));
                let outcomes = a.claim_all("conflict", &ticks).await;
                for tick in &ticks {
                    match (&outcomes[tick], taken.contains(tick)) {
                        (TickClaim::Held { holder }, true) => assert_eq!(holder, "w2"),
                        (TickClaim::Won(won), false) => {
                            assert!(a.claims.confirm(won, now_ms()).await.unwrap(), "tick {tick}: confirmed");
                        }
                        (other, taken) => panic!("tick {tick} (taken by w2: {taken}): {other:?}"),
                    }
                }
                let (kvs, _) = c.list("ticks/conflict/").await.unwrap();
                let w1 = kvs.iter().filter(|kv| holder_of(kv) == "w1").count();
                assert_eq!((kvs.len(), w1), (40, 40 - taken.len()));
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_batch_whose_answer_is_lost_is_retried_without_a_duplicate() {
                let inner = super::$engine().await;
                let lossy = Arc::new(LosesAnswers {
                    inner: inner.clone(),
                    lose: AtomicUsize::new(1),
                    batches: AtomicUsize::new(0),
                });
                let a = Claimer::new(lossy.clone(), "w1").await;
                let b = Claimer::new(inner.clone(), "w2").await;
                let base = now_ms() + 60_000;
                let ticks: Vec<i64> = (0..50).map(|i| base + i * 1000).collect();
                let outcomes = a.claim_all("lost", &ticks).await;
                assert!(lossy.batches.load(Ordering::SeqCst) >= 2, "the batch was sent again");
                let won: Vec<_> = outcomes
                    .values()
                    .map(|o| match o {
                        TickClaim::Won(won) => won.clone(),
                        other => panic!("the landed batch is ours: {other:?}"),
                    })
                    .collect();
                // A second worker finds every tick taken.
                let others = b.claim_all("lost", &ticks).await;
                assert!(others.values().all(|o| matches!(o, TickClaim::Held { holder } if holder == "w1")));
                // A confirm batch whose answer is lost is retried too.
                lossy.lose.store(1, Ordering::SeqCst);
                let confirms = won.iter().map(|w| a.claims.confirm(w, now_ms()));
                let confirmed = futures_util::future::join_all(confirms).await;
                assert!(confirmed.iter().all(|c| matches!(c, Ok(true))), "{confirmed:?}");
                // Confirmed claims outlive the session.
                inner.revoke(a.session).await.unwrap();
                let (kvs, _) = inner.list("ticks/lost/").await.unwrap();
                assert_eq!(kvs.len(), 50);
                assert!(kvs.iter().all(|kv| holder_of(kv) == "w1"));
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn claims_made_together_go_in_few_transactions() {
                let inner = super::$engine().await;
                let counted = Arc::new(LosesAnswers {
                    inner,
                    lose: AtomicUsize::new(0),
                    batches: AtomicUsize::new(0),
                });
                let a = Claimer::new(counted.clone(), "w1").await;
                let base = now_ms() + 60_000;
                let ticks: Vec<i64> = (0..(2 * MAX_BATCH as i64 + 10)).map(|i| base + i).collect();
                let outcomes = a.claim_all("few", &ticks).await;
                assert!(outcomes.values().all(|o| matches!(o, TickClaim::Won(_))));
                let batches = counted.batches.load(Ordering::SeqCst);
                assert!(batches <= 4, "{} claims took {batches} transactions", ticks.len());
            }
        }
    };
}

batched_suite!(embedded);
batched_suite!(etcd);
