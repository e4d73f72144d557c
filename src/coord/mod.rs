//! The coordinator: where jobs, workers, tick claims, runs in progress and
//! kill requests live (see DESIGN.md, "Keyspace").
//!
//! One trait, two engines: [`etcd::EtcdCoordinator`] for clusters and
//! [`embedded::EmbeddedCoordinator`] for `distcron standalone`. Both pass the
//! same contract suite (`tests/coordinator_contract.rs`).
//!
//! Keys are relative: the etcd engine adds its configured prefix
//! (`/distcron/` by default), so callers write `jobs/backup`.

pub mod claims;
pub mod embedded;
pub mod etcd;
#[cfg(test)]
pub mod faulty;
pub mod follow;
pub mod group_commit;
pub mod keepers;
pub mod session;
pub mod write_queue;

use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc;

/// A store revision: every change gets a larger one.
pub type Revision = i64;
/// A lease id; keys attached to a lease are deleted when it ends.
pub type LeaseId = i64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The key, relative to the coordinator's prefix.
    pub key: String,
    pub value: Vec<u8>,
    /// Revision of the key's creation; a put-if-absent compares this with 0.
    pub create_revision: Revision,
    pub mod_revision: Revision,
    /// The lease the key is attached to, 0 for none.
    pub lease: LeaseId,
}

impl KeyValue {
    pub fn value_str(&self) -> &str {
        std::str::from_utf8(&self.value).unwrap_or("")
    }
}

/// One change seen by a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    Put(KeyValue),
    Delete { key: String, revision: Revision },
}

impl WatchEvent {
    pub fn key(&self) -> &str {
        match self {
            WatchEvent::Put(kv) => &kv.key,
            WatchEvent::Delete { key, .. } => key,
        }
    }

    pub fn revision(&self) -> Revision {
        match self {
            WatchEvent::Put(kv) => kv.mod_revision,
            WatchEvent::Delete { revision, .. } => *revision,
        }
    }
}

/// What a watch yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchItem {
    /// Changes, in revision order.
    Events(Vec<WatchEvent>),
    /// The watch cannot continue from where it was (history compacted, or
    /// the watch was cancelled). The stream ends after this: list the prefix
    /// again and watch from the list's revision + 1.
    Resync { reason: String },
}

/// The receiving end of a watch; dropping it cancels the watch.
pub type WatchStream = mpsc::Receiver<WatchItem>;

/// The result of a put-if-absent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The key did not exist and now holds our value.
    Won { revision: Revision },
    /// The key already existed; this is who holds it.
    Held(KeyValue),
}

/// What must hold of a key for a [`CondPut`] to land.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    /// The key does not exist (a put-if-absent).
    Absent,
    /// The key holds exactly this value (a compare-and-swap).
    ValueIs(Vec<u8>),
}

/// One conditional put of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CondPut {
    pub key: String,
    pub when: Condition,
    pub value: Vec<u8>,
    pub lease: Option<LeaseId>,
}

impl CondPut {
    /// Whether `current` (what the key held) meets this put's condition.
    pub fn holds_for(&self, current: Option<&KeyValue>) -> bool {
        match (&self.when, current) {
            (Condition::Absent, held) => held.is_none(),
            (Condition::ValueIs(expected), Some(kv)) => kv.value == *expected,
            (Condition::ValueIs(_), None) => false,
        }
    }
}

/// The outcome of [`Coordinator::put_all_if`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchPut {
    /// Every condition held: every put landed, in one revision.
    AllPut { revision: Revision },
    /// Some condition failed, so nothing was put. What each key held at
    /// that moment, in the order of the puts: enough to tell exactly which
    /// conditions failed.
    NonePut(Vec<Option<KeyValue>>),
}

/// One unconditional write of [`Coordinator::write_all`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    /// Create or replace `key`, optionally on a lease.
    Put {
        key: String,
        value: Vec<u8>,
        lease: Option<LeaseId>,
    },
    /// Delete `key` (nothing happens if it is absent).
    Delete { key: String },
}

impl Write {
    pub fn key(&self) -> &str {
        match self {
            Write::Put { key, .. } | Write::Delete { key } => key,
        }
    }

    /// The lease a put goes on.
    pub fn lease(&self) -> Option<LeaseId> {
        match self {
            Write::Put { lease, .. } => *lease,
            Write::Delete { .. } => None,
        }
    }
}

/// The most puts one batch may hold: etcd's default `--max-txn-ops`.
pub const MAX_BATCH: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CoordError {
    /// The backend could not be reached or did not answer in time.
    #[error("coordinator unavailable: {0}")]
    Unavailable(String),
    /// The lease does not exist (it expired or was revoked).
    #[error("lease {0:x} not found (expired or revoked)")]
    LeaseNotFound(LeaseId),
    /// The embedded store's file could not be read or written.
    #[error("embedded coordinator storage: {0}")]
    Storage(String),
}

pub type Result<T> = std::result::Result<T, CoordError>;

#[async_trait]
pub trait Coordinator: Send + Sync + 'static {
    /// One key, if present.
    async fn get(&self, key: &str) -> Result<Option<KeyValue>>;

    /// Every key under `prefix` in key order, and the store revision the
    /// listing reflects (watch from `revision + 1` to miss nothing).
    async fn list(&self, prefix: &str) -> Result<(Vec<KeyValue>, Revision)>;

    /// The first `limit` keys under `prefix`, in key order: a page without
    /// reading the whole prefix.
    async fn list_first(&self, prefix: &str, limit: u64) -> Result<Vec<KeyValue>>;

    /// Create or replace a key, optionally attached to a lease. Returns the
    /// new revision.
    async fn put(&self, key: &str, value: Vec<u8>, lease: Option<LeaseId>) -> Result<Revision>;

    /// Delete a key; returns what it held, if anything.
    async fn delete(&self, key: &str) -> Result<Option<KeyValue>>;

    /// Create `key` only if it does not exist, atomically.
    async fn put_if_absent(
        &self,
        key: &str,
        value: Vec<u8>,
        lease: Option<LeaseId>,
    ) -> Result<Claim>;

    /// Replace `key`'s value and lease only if it holds `expected` right
    /// now, atomically; answers whether it did. A missing key never matches.
    async fn put_if_value(
        &self,
        key: &str,
        expected: &[u8],
        value: Vec<u8>,
        lease: Option<LeaseId>,
    ) -> Result<bool>;

    /// Apply every put of `puts` if every one's condition holds, atomically
    /// (one etcd transaction); otherwise apply none and say what each key
    /// held. Keys must be distinct and at most [`MAX_BATCH`].
    async fn put_all_if(&self, puts: &[CondPut]) -> Result<BatchPut>;

    /// Apply every put and delete of `writes`, atomically and with no
    /// condition (one etcd transaction, one revision); returns that
    /// revision. A put on a lease that has ended fails the whole batch with
    /// [`CoordError::LeaseNotFound`]. Keys must be distinct and at most
    /// [`MAX_BATCH`].
    async fn write_all(&self, writes: &[Write]) -> Result<Revision>;

    /// Watch every key under `prefix`, starting at revision `from`
    /// (inclusive). Transient disconnections are retried inside; the caller
    /// sees only events, or a [`WatchItem::Resync`] when events were lost.
    async fn watch(&self, prefix: &str, from: Revision) -> Result<WatchStream>;

    /// Grant a lease that ends `ttl` after its last keep-alive.
    async fn grant(&self, ttl: Duration) -> Result<LeaseId>;

    /// Refresh a lease; returns its TTL, or [`CoordError::LeaseNotFound`]
    /// when it has already ended.
    async fn keep_alive(&self, lease: LeaseId) -> Result<Duration>;

    /// End a lease now, deleting its keys. Revoking an unknown lease is not
    /// an error.
    async fn revoke(&self, lease: LeaseId) -> Result<()>;
}

/// Lease TTLs are whole seconds in etcd: round up, and never below one.
pub(crate) fn ttl_seconds(ttl: Duration) -> i64 {
    (ttl.as_millis().div_ceil(1000) as i64).max(1)
}

/// Pauses between retries of an unknown outcome: 50 ms, doubling, at most
/// 500 ms.
const RETRY_FIRST_PAUSE: Duration = Duration::from_millis(50);
const RETRY_MAX_PAUSE: Duration = Duration::from_millis(500);

/// Call `op` until it answers, retrying errors after which the write may or
/// may not have landed, for at least `patience`.
pub(crate) async fn retry_unknown<T, F, Fut>(patience: Duration, mut op: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let give_up = tokio::time::Instant::now() + patience;
    let mut pause = RETRY_FIRST_PAUSE;
    loop {
        match op().await {
            Err(error) if retryable(&error) && tokio::time::Instant::now() + pause < give_up => {
                tracing::debug!(%error, "claim outcome unknown; retrying");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(RETRY_MAX_PAUSE);
            }
            other => return other,
        }
    }
}

/// Errors after which the claim may or may not have been written.
fn retryable(error: &CoordError) -> bool {
    matches!(error, CoordError::Unavailable(_))
}
