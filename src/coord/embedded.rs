//! The embedded engine of the coordinator, for `distcron standalone`: the
//! same semantics as etcd inside one process.
//!
//! Every key lives in memory; keys without a lease (job definitions) are
//! also written to a redb file and come back after a restart. Leased keys
//! of a session (workers, running runs, claims not yet confirmed) never
//! touch the disk: the session ends with the process. Confirmed tick claims
//! do (`ticks/` keys on a lease of a minute or more): they come back after a
//! restart on a lease with the time they had left, so a restarted
//! standalone looking for missed ticks never runs one twice. Leases really
//! expire on their TTL, driven by a reaper task on tokio's clock (so tests
//! can pause time).
//!
//! Watches replay a bounded in-memory history and then follow live changes;
//! a watch from before that history, or one that falls too far behind, gets
//! [`WatchItem::Resync`], just as etcd answers a compacted revision.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_trait::async_trait;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::{Notify, broadcast, mpsc};
use tokio::time::Instant;

use super::{
    BatchPut, Claim, CondPut, CoordError, Coordinator, KeyValue, LeaseId, Result, Revision,
    WatchEvent, WatchItem, WatchStream, Write, ttl_seconds,
};

/// Durable keys: key -> (create revision, mod revision, value).
const KEYS: TableDefinition<&str, (i64, i64, &[u8])> = TableDefinition::new("keys");
/// Store metadata: "revision" -> the last revision handed out.
const META: TableDefinition<&str, i64> = TableDefinition::new("meta");
/// Leased keys kept across a restart: key -> (value, expiry in Unix ms).
const LEASED: TableDefinition<&str, (&[u8], i64)> = TableDefinition::new("leased");

/// Leased keys under this prefix, on a lease at least this long, are kept
/// across a restart: tick claims once confirmed (sessions are shorter).
const DURABLE_LEASED_PREFIX: &str = "ticks/";
const DURABLE_LEASE_MIN: Duration = Duration::from_secs(60);

fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Changes kept for watches that resume from an older revision. Enough for
/// a watcher that was briefly busy; older than that, it must list again.
const HISTORY_LEN: usize = 100_000;
/// Revisions buffered per live watcher before it is told to resync.
const LIVE_BUFFER: usize = 16_384;
const WATCH_CHANNEL_DEPTH: usize = 1024;

#[derive(Clone)]
pub struct EmbeddedCoordinator {
    inner: Arc<Inner>,
}

struct Inner {
    state: Mutex<State>,
    /// Each change, as (revision, events), to live watchers.
    changes: broadcast::Sender<Arc<Vec<WatchEvent>>>,
    /// Wakes the reaper when a lease is granted.
    leases_changed: Arc<Notify>,
    /// `None` for a purely in-memory store (tests).
    db: Option<Database>,
}

struct State {
    revision: Revision,
    /// Revisions at or below this are not in `history` (compacted).
    compacted: Revision,
    keys: BTreeMap<String, KeyValue>,
    leases: HashMap<LeaseId, Lease>,
    next_lease: LeaseId,
    history: VecDeque<WatchEvent>,
}

struct Lease {
    ttl: Duration,
    deadline: Instant,
    keys: HashSet<String>,
}

fn storage(e: impl std::fmt::Display) -> CoordError {
    CoordError::Storage(e.to_string())
}

impl EmbeddedCoordinator {
    /// Open (or create) the store in `path`. Must be called inside a tokio
    /// runtime: it starts the lease reaper.
    pub fn open(path: &Path) -> Result<EmbeddedCoordinator> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(storage)?;
        }
        let db = Database::create(path).map_err(storage)?;
        let mut keys = BTreeMap::new();
        let mut durable = Vec::new();
        let mut revision = 0;
        {
            let write = db.begin_write().map_err(storage)?;
            write.open_table(KEYS).map_err(storage)?;
            write.open_table(META).map_err(storage)?;
            write.open_table(LEASED).map_err(storage)?;
            write.commit().map_err(storage)?;
            let read = db.begin_read().map_err(storage)?;
            let table = read.open_table(KEYS).map_err(storage)?;
            for entry in table.iter().map_err(storage)? {
                let (key, value) = entry.map_err(storage)?;
                let (create_revision, mod_revision, bytes) = value.value();
                keys.insert(
                    key.value().to_string(),
                    KeyValue {
                        key: key.value().to_string(),
                        value: bytes.to_vec(),
                        create_revision,
                        mod_revision,
                        lease: 0,
                    },
                );
            }
            let meta = read.open_table(META).map_err(storage)?;
            if let Some(r) = meta.get("revision").map_err(storage)? {
                revision = r.value();
            }
            let leased = read.open_table(LEASED).map_err(storage)?;
            for entry in leased.iter().map_err(storage)? {
                let (key, value) = entry.map_err(storage)?;
                let (bytes, expires_ms) = value.value();
                durable.push((key.value().to_string(), bytes.to_vec(), expires_ms));
            }
        }
        let coord = Self::start(Some(db), keys, revision);
        coord.restore_leased(durable);
        Ok(coord)
    }

    /// Put back the leased keys kept on disk, each on a lease ending when
    /// its old one would have; drop those already expired.
    fn restore_leased(&self, durable: Vec<(String, Vec<u8>, i64)>) {
        let now_ms = wall_ms();
        let mut state = self.lock();
        let mut by_expiry: BTreeMap<i64, LeaseId> = BTreeMap::new();
        for (key, value, expires_ms) in durable {
            if expires_ms <= now_ms {
                continue;
            }
            let lease = *by_expiry.entry(expires_ms).or_insert_with(|| {
                new_lease(
                    &mut state,
                    Duration::from_millis((expires_ms - now_ms) as u64),
                )
            });
            if let Some(l) = state.leases.get_mut(&lease) {
                l.keys.insert(key.clone());
            }
            let revision = state.revision;
            state.keys.insert(
                key.clone(),
                KeyValue {
                    key,
                    value,
                    create_revision: revision,
                    mod_revision: revision,
                    lease,
                },
            );
        }
        self.inner.leases_changed.notify_one();
    }

    /// Watches open now: a stopped worker leaves none behind.
    pub fn watchers(&self) -> usize {
        self.inner.changes.receiver_count()
    }

    /// A store that lives only in memory.
    pub fn in_memory() -> EmbeddedCoordinator {
        Self::start(None, BTreeMap::new(), 0)
    }

    fn start(db: Option<Database>, keys: BTreeMap<String, KeyValue>, revision: Revision) -> Self {
        let (changes, _) = broadcast::channel(LIVE_BUFFER);
        let inner = Arc::new(Inner {
            state: Mutex::new(State {
                revision,
                compacted: revision,
                keys,
                leases: HashMap::new(),
                next_lease: 1,
                history: VecDeque::new(),
            }),
            changes,
            leases_changed: Arc::new(Notify::new()),
            db,
        });
        tokio::spawn(reap_leases(
            Arc::downgrade(&inner),
            inner.leases_changed.clone(),
        ));
        EmbeddedCoordinator { inner }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock would be a bug in this file; the
        // state is still consistent per operation, so keep serving.
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Inner {
    /// Record `events` at the state's current revision: history, watchers,
    /// and the durable file for keys without a lease.
    fn commit(&self, state: &mut State, events: Vec<WatchEvent>) -> Result<()> {
        if let Some(db) = &self.db {
            // Leased keys to keep, with when their lease ends (wall clock).
            let expiry = |kv: &KeyValue| {
                let lease = state.leases.get(&kv.lease)?;
                let kept =
                    kv.key.starts_with(DURABLE_LEASED_PREFIX) && lease.ttl >= DURABLE_LEASE_MIN;
                kept.then(|| {
                    wall_ms()
                        + lease
                            .deadline
                            .saturating_duration_since(Instant::now())
                            .as_millis() as i64
                })
            };
            let durable: Vec<(&WatchEvent, Option<i64>)> = events
                .iter()
                .filter_map(|e| match e {
                    WatchEvent::Put(kv) if kv.lease == 0 => Some((e, None)),
                    WatchEvent::Put(kv) => expiry(kv).map(|at| (e, Some(at))),
                    WatchEvent::Delete { .. } => Some((e, None)),
                })
                .collect();
            if !durable.is_empty() {
                let write = db.begin_write().map_err(storage)?;
                {
                    let mut table = write.open_table(KEYS).map_err(storage)?;
                    let mut leased = write.open_table(LEASED).map_err(storage)?;
                    for (event, expires_ms) in durable {
                        match event {
                            WatchEvent::Put(kv) if kv.lease != 0 => {
                                let at = expires_ms.unwrap_or_default();
                                leased
                                    .insert(kv.key.as_str(), (kv.value.as_slice(), at))
                                    .map_err(storage)?;
                            }
                            WatchEvent::Put(kv) => {
                                table
                                    .insert(
                                        kv.key.as_str(),
                                        (kv.create_revision, kv.mod_revision, kv.value.as_slice()),
                                    )
                                    .map_err(storage)?;
                            }
                            WatchEvent::Delete { key, .. } => {
                                table.remove(key.as_str()).map_err(storage)?;
                                leased.remove(key.as_str()).map_err(storage)?;
                            }
                        }
                    }
                    let mut meta = write.open_table(META).map_err(storage)?;
                    meta.insert("revision", state.revision).map_err(storage)?;
                }
                write.commit().map_err(storage)?;
            }
        }
        for event in &events {
            if state.history.len() == HISTORY_LEN
                && let Some(oldest) = state.history.pop_front()
            {
                state.compacted = oldest.revision();
            }
            state.history.push_back(event.clone());
        }
        // No receivers is fine: nobody is watching.
        let _ = self.changes.send(Arc::new(events));
        Ok(())
    }
}

/// A new lease of `ttl`, from now.
fn new_lease(state: &mut State, ttl: Duration) -> LeaseId {
    let id = state.next_lease;
    state.next_lease += 1;
    let deadline = Instant::now() + ttl;
    let keys = HashSet::new();
    state.leases.insert(
        id,
        Lease {
            ttl,
            deadline,
            keys,
        },
    );
    id
}

/// Remove a key from the in-memory map and from its lease's key set.
fn remove_key(state: &mut State, key: &str) -> Option<KeyValue> {
    let old = state.keys.remove(key)?;
    if old.lease != 0
        && let Some(lease) = state.leases.get_mut(&old.lease)
    {
        lease.keys.remove(key);
    }
    Some(old)
}

fn put_locked(
    inner: &Inner,
    state: &mut State,
    key: &str,
    value: Vec<u8>,
    lease: Option<LeaseId>,
) -> Result<Revision> {
    check_lease(state, lease)?;
    state.revision += 1;
    let kv = apply_put(state, key, value, lease);
    inner.commit(state, vec![WatchEvent::Put(kv)])?;
    Ok(state.revision)
}

fn check_lease(state: &State, lease: Option<LeaseId>) -> Result<()> {
    match lease {
        Some(id) if id != 0 && !state.leases.contains_key(&id) => {
            Err(CoordError::LeaseNotFound(id))
        }
        _ => Ok(()),
    }
}

/// Put `key` at the state's current revision (the caller bumped it and
/// commits the event); the lease was checked.
fn apply_put(state: &mut State, key: &str, value: Vec<u8>, lease: Option<LeaseId>) -> KeyValue {
    let lease = lease.unwrap_or(0);
    let previous = remove_key(state, key);
    let kv = KeyValue {
        key: key.to_string(),
        value,
        create_revision: previous
            .as_ref()
            .map_or(state.revision, |p| p.create_revision),
        mod_revision: state.revision,
        lease,
    };
    if let Some(l) = state.leases.get_mut(&lease) {
        l.keys.insert(key.to_string());
    }
    state.keys.insert(key.to_string(), kv.clone());
    kv
}

/// Delete every key of a lease in one revision, as etcd does.
fn end_lease(inner: &Inner, state: &mut State, id: LeaseId) {
    let Some(lease) = state.leases.remove(&id) else {
        return;
    };
    if lease.keys.is_empty() {
        return;
    }
    state.revision += 1;
    let revision = state.revision;
    let mut events = Vec::new();
    for key in lease.keys {
        if state.keys.remove(&key).is_some() {
            events.push(WatchEvent::Delete { key, revision });
        }
    }
    events.sort_by(|a, b| a.key().cmp(b.key()));
    if let Err(error) = inner.commit(state, events) {
        tracing::error!(%error, lease = id, "embedded coordinator could not record lease expiry");
    }
}

/// Ends leases whose deadline has passed; sleeps until the next deadline or
/// until a lease changes. Stops when the coordinator is dropped.
async fn reap_leases(inner: Weak<Inner>, leases_changed: Arc<Notify>) {
    loop {
        let next_deadline = {
            let Some(inner) = inner.upgrade() else { return };
            let mut state = inner.state.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            let expired: Vec<LeaseId> = state
                .leases
                .iter()
                .filter(|(_, l)| l.deadline <= now)
                .map(|(id, _)| *id)
                .collect();
            for id in expired {
                end_lease(&inner, &mut state, id);
            }
            state.leases.values().map(|l| l.deadline).min()
        };
        // Wake at least once a second so a dropped coordinator stops the task.
        let wake = next_deadline
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(1))
            .min(Instant::now() + Duration::from_secs(1));
        tokio::select! {
            _ = tokio::time::sleep_until(wake) => {}
            _ = leases_changed.notified() => {}
        }
    }
}

#[async_trait]
impl Coordinator for EmbeddedCoordinator {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        Ok(self.lock().keys.get(key).cloned())
    }

    async fn list(&self, prefix: &str) -> Result<(Vec<KeyValue>, Revision)> {
        let state = self.lock();
        let kvs = state
            .keys
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, kv)| kv.clone())
            .collect();
        Ok((kvs, state.revision))
    }

    async fn list_first(&self, prefix: &str, limit: u64) -> Result<Vec<KeyValue>> {
        let state = self.lock();
        Ok(state
            .keys
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .take(usize::try_from(limit).unwrap_or(usize::MAX))
            .map(|(_, kv)| kv.clone())
            .collect())
    }

    async fn put(&self, key: &str, value: Vec<u8>, lease: Option<LeaseId>) -> Result<Revision> {
        let mut state = self.lock();
        put_locked(&self.inner, &mut state, key, value, lease)
    }

    async fn delete(&self, key: &str) -> Result<Option<KeyValue>> {
        let mut state = self.lock();
        let Some(old) = remove_key(&mut state, key) else {
            return Ok(None);
        };
        state.revision += 1;
        let revision = state.revision;
        self.inner.commit(
            &mut state,
            vec![WatchEvent::Delete {
                key: key.to_string(),
                revision,
            }],
        )?;
        Ok(Some(old))
    }

    async fn put_if_absent(
        &self,
        key: &str,
        value: Vec<u8>,
        lease: Option<LeaseId>,
    ) -> Result<Claim> {
        let mut state = self.lock();
        if let Some(holder) = state.keys.get(key) {
            return Ok(Claim::Held(holder.clone()));
        }
        let revision = put_locked(&self.inner, &mut state, key, value, lease)?;
        Ok(Claim::Won { revision })
    }

    async fn put_if_value(
        &self,
        key: &str,
        expected: &[u8],
        value: Vec<u8>,
        lease: Option<LeaseId>,
    ) -> Result<bool> {
        let mut state = self.lock();
        if state.keys.get(key).is_none_or(|kv| kv.value != expected) {
            return Ok(false);
        }
        put_locked(&self.inner, &mut state, key, value, lease)?;
        Ok(true)
    }

    async fn put_all_if(&self, puts: &[CondPut]) -> Result<BatchPut> {
        let mut state = self.lock();
        let held: Vec<Option<KeyValue>> = puts
            .iter()
            .map(|p| state.keys.get(&p.key).cloned())
            .collect();
        if !puts
            .iter()
            .zip(&held)
            .all(|(put, kv)| put.holds_for(kv.as_ref()))
        {
            return Ok(BatchPut::NonePut(held));
        }
        for put in puts {
            check_lease(&state, put.lease)?;
        }
        // One revision for the whole batch, as etcd gives a transaction.
        state.revision += 1;
        let events = puts
            .iter()
            .map(|put| {
                WatchEvent::Put(apply_put(
                    &mut state,
                    &put.key,
                    put.value.clone(),
                    put.lease,
                ))
            })
            .collect();
        self.inner.commit(&mut state, events)?;
        Ok(BatchPut::AllPut {
            revision: state.revision,
        })
    }

    async fn write_all(&self, writes: &[Write]) -> Result<Revision> {
        let mut state = self.lock();
        for write in writes {
            check_lease(&state, write.lease())?;
        }
        // A batch that changes nothing makes no revision, as in etcd.
        let changes = writes
            .iter()
            .any(|w| matches!(w, Write::Put { .. }) || state.keys.contains_key(w.key()));
        if !changes {
            return Ok(state.revision);
        }
        state.revision += 1;
        let revision = state.revision;
        let events = writes
            .iter()
            .filter_map(|write| match write {
                Write::Put { key, value, lease } => Some(WatchEvent::Put(apply_put(
                    &mut state,
                    key,
                    value.clone(),
                    *lease,
                ))),
                Write::Delete { key } => remove_key(&mut state, key).map(|_| WatchEvent::Delete {
                    key: key.clone(),
                    revision,
                }),
            })
            .collect();
        self.inner.commit(&mut state, events)?;
        Ok(revision)
    }

    async fn watch(&self, prefix: &str, from: Revision) -> Result<WatchStream> {
        let (tx, rx) = mpsc::channel(WATCH_CHANNEL_DEPTH);
        // Subscribe and copy history under one lock, so no change falls
        // between the replay and the live feed.
        let (mut live, backlog, compacted) = {
            let state = self.lock();
            let live = self.inner.changes.subscribe();
            let compacted = from <= state.compacted && from <= state.revision;
            let backlog: Vec<WatchEvent> = state
                .history
                .iter()
                .filter(|e| e.revision() >= from && e.key().starts_with(prefix))
                .cloned()
                .collect();
            (live, backlog, compacted)
        };
        let prefix = prefix.to_string();
        tokio::spawn(async move {
            if compacted {
                let _ = tx
                    .send(WatchItem::Resync {
                        reason: format!("revision {from} is older than the kept history"),
                    })
                    .await;
                return;
            }
            let mut next = from;
            if !backlog.is_empty() {
                next = backlog.last().map_or(from, |e| e.revision() + 1);
                if tx.send(WatchItem::Events(backlog)).await.is_err() {
                    return;
                }
            }
            loop {
                let change = tokio::select! {
                    change = live.recv() => change,
                    _ = tx.closed() => return,
                };
                let events = match change {
                    Ok(events) => events,
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        let _ = tx
                            .send(WatchItem::Resync {
                                reason: format!("watcher fell {missed} changes behind"),
                            })
                            .await;
                        return;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                let mine: Vec<WatchEvent> = events
                    .iter()
                    .filter(|e| e.revision() >= next && e.key().starts_with(&prefix))
                    .cloned()
                    .collect();
                if let Some(last) = mine.last() {
                    next = last.revision() + 1;
                    if tx.send(WatchItem::Events(mine)).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(rx)
    }

    async fn grant(&self, ttl: Duration) -> Result<LeaseId> {
        // Whole seconds, like etcd, so both engines expire leases alike.
        let ttl = Duration::from_secs(ttl_seconds(ttl) as u64);
        let id = new_lease(&mut self.lock(), ttl);
        self.inner.leases_changed.notify_one();
        Ok(id)
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<Duration> {
        let mut state = self.lock();
        let now = Instant::now();
        match state.leases.get_mut(&lease) {
            Some(l) if l.deadline > now => {
                l.deadline = now + l.ttl;
                Ok(l.ttl)
            }
            Some(_) => {
                // Past its deadline but not reaped yet: it is over.
                end_lease(&self.inner, &mut state, lease);
                Err(CoordError::LeaseNotFound(lease))
            }
            None => Err(CoordError::LeaseNotFound(lease)),
        }
    }

    async fn revoke(&self, lease: LeaseId) -> Result<()> {
        let mut state = self.lock();
        end_lease(&self.inner, &mut state, lease);
        Ok(())
    }
}
