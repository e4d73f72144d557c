//! A coordinator that fails on cue, over the embedded engine (compiled for
//! tests only): answers lost after the write landed (an etcd leader
//! election), a whole outage, reads that fail for a while after one.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;

use super::embedded::EmbeddedCoordinator;
use super::{
    BatchPut, Claim, CondPut, Condition, CoordError, Coordinator, KeyValue, LeaseId, Result,
    WatchStream, Write,
};

pub struct Faulty {
    pub inner: EmbeddedCoordinator,
    /// Put-if-absent answers to lose after the write lands.
    pub lose_claims: AtomicUsize,
    /// With `lose_claims`: another worker's claim lands instead of ours.
    pub steal: bool,
    /// Compare-and-swaps that land, after which etcd goes down.
    pub down_after_swaps: AtomicUsize,
    /// Every call fails while set.
    pub down: AtomicBool,
    /// Reads that fail once etcd is back.
    pub failing_gets: AtomicUsize,
    /// Keep-alives refused (etcd's applied index trailing).
    pub failing_keep_alives: AtomicUsize,
    /// How long each range read takes, in ms (a slow etcd).
    pub list_ms: AtomicU64,
    /// Range reads answered, in flight now, and most in flight at once.
    pub lists: AtomicUsize,
    pub lists_in_flight: AtomicUsize,
    pub most_lists_in_flight: AtomicUsize,
    /// Batches of unconditional writes sent, and how long each takes (ms).
    pub write_batches: AtomicUsize,
    pub write_ms: AtomicU64,
    /// Writes panic while set (a bug in a coordinator).
    pub panic_on_write: AtomicBool,
}

impl Faulty {
    pub fn in_memory() -> Faulty {
        Faulty {
            inner: EmbeddedCoordinator::in_memory(),
            lose_claims: AtomicUsize::new(0),
            steal: false,
            down_after_swaps: AtomicUsize::new(0),
            down: AtomicBool::new(false),
            failing_gets: AtomicUsize::new(0),
            failing_keep_alives: AtomicUsize::new(0),
            list_ms: AtomicU64::new(0),
            lists: AtomicUsize::new(0),
            lists_in_flight: AtomicUsize::new(0),
            most_lists_in_flight: AtomicUsize::new(0),
            write_batches: AtomicUsize::new(0),
            write_ms: AtomicU64::new(0),
            panic_on_write: AtomicBool::new(false),
        }
    }

    fn check(&self) -> Result<()> {
        if self.down.load(Ordering::SeqCst) {
            return Err(CoordError::Unavailable("etcd is down (test)".into()));
        }
        Ok(())
    }

    /// Take one from `counter` if any is left.
    fn take(counter: &AtomicUsize) -> bool {
        counter
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }
}

fn lost() -> CoordError {
    CoordError::Unavailable("request timed out (leader changed)".into())
}

#[async_trait]
impl Coordinator for Faulty {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        self.check()?;
        if Faulty::take(&self.failing_gets) {
            return Err(CoordError::Unavailable("no leader yet (test)".into()));
        }
        self.inner.get(key).await
    }
    async fn list(&self, prefix: &str) -> Result<(Vec<KeyValue>, i64)> {
        self.check()?;
        let now = self.lists_in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_lists_in_flight.fetch_max(now, Ordering::SeqCst);
        let ms = self.list_ms.load(Ordering::SeqCst);
        if ms > 0 {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        let answer = self.inner.list(prefix).await;
        self.lists_in_flight.fetch_sub(1, Ordering::SeqCst);
        self.lists.fetch_add(1, Ordering::SeqCst);
        answer
    }
    async fn list_first(&self, prefix: &str, limit: u64) -> Result<Vec<KeyValue>> {
        self.check()?;
        self.inner.list_first(prefix, limit).await
    }
    async fn put(&self, key: &str, value: Vec<u8>, lease: Option<LeaseId>) -> Result<i64> {
        self.check()?;
        self.inner.put(key, value, lease).await
    }
    async fn delete(&self, key: &str) -> Result<Option<KeyValue>> {
        self.check()?;
        self.inner.delete(key).await
    }
    async fn put_if_absent(
        &self,
        key: &str,
        value: Vec<u8>,
        lease: Option<LeaseId>,
    ) -> Result<Claim> {
        self.check()?;
        if !Faulty::take(&self.lose_claims) {
            return self.inner.put_if_absent(key, value, lease).await;
        }
        let written = if self.steal {
            b"w9 other".to_vec()
        } else {
            value
        };
        self.inner.put_if_absent(key, written, lease).await?;
        Err(lost())
    }
    async fn put_if_value(
        &self,
        key: &str,
        expected: &[u8],
        value: Vec<u8>,
        lease: Option<LeaseId>,
    ) -> Result<bool> {
        self.check()?;
        let swapped = self.inner.put_if_value(key, expected, value, lease).await?;
        if Faulty::take(&self.down_after_swaps) {
            self.down.store(true, Ordering::SeqCst);
            return Err(lost());
        }
        Ok(swapped)
    }
    /// A batch of claims counts against `lose_claims`, a batch of
    /// compare-and-swaps against `down_after_swaps`, as one call each.
    async fn put_all_if(&self, puts: &[CondPut]) -> Result<BatchPut> {
        self.check()?;
        let claims = puts.iter().any(|p| p.when == Condition::Absent);
        if claims && Faulty::take(&self.lose_claims) {
            let mut written = puts.to_vec();
            if self.steal {
                for put in &mut written {
                    put.value = b"w9 other".to_vec();
                }
            }
            self.inner.put_all_if(&written).await?;
            return Err(lost());
        }
        let result = self.inner.put_all_if(puts).await?;
        let swaps = puts.iter().any(|p| matches!(p.when, Condition::ValueIs(_)));
        if swaps
            && matches!(result, BatchPut::AllPut { .. })
            && Faulty::take(&self.down_after_swaps)
        {
            self.down.store(true, Ordering::SeqCst);
            return Err(lost());
        }
        Ok(result)
    }
    async fn write_all(&self, writes: &[Write]) -> Result<i64> {
        self.check()?;
        self.write_batches.fetch_add(1, Ordering::SeqCst);
        assert!(
            !self.panic_on_write.load(Ordering::SeqCst),
            "write_all panics (test)"
        );
        let ms = self.write_ms.load(Ordering::SeqCst);
        if ms > 0 {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        self.inner.write_all(writes).await
    }
    async fn watch(&self, prefix: &str, from: i64) -> Result<WatchStream> {
        self.check()?;
        self.inner.watch(prefix, from).await
    }
    async fn grant(&self, ttl: Duration) -> Result<LeaseId> {
        self.check()?;
        self.inner.grant(ttl).await
    }
    async fn keep_alive(&self, lease: LeaseId) -> Result<Duration> {
        self.check()?;
        if Faulty::take(&self.failing_keep_alives) {
            return Err(CoordError::Unavailable(
                "etcdserver: request timed out, waiting for the applied index took too long (test)"
                    .into(),
            ));
        }
        self.inner.keep_alive(lease).await
    }
    async fn revoke(&self, lease: LeaseId) -> Result<()> {
        self.check()?;
        self.inner.revoke(lease).await
    }
}
