//! Group commit of conditional puts: the claims and confirms a worker makes
//! within a few milliseconds of each other go to the coordinator as one
//! transaction ([`Coordinator::put_all_if`]) instead of one request each.
//!
//! At 10,000 ticks a minute a worker's claims for the next second and its
//! confirms for this one all come due in the same millisecond (their
//! timers fire together), so one transaction a second carries them.
//!
//! Exactness: when some condition of a batch fails, nothing is written and
//! the transaction's failure branch reads every key at that same revision.
//! A put whose condition failed in that read is decided (a claim lost to
//! the holder it names; a confirm no longer ours); the others all held
//! then, so they go again as a batch. Each failed round decides at least
//! one put, so this ends, and every outcome comes from an atomic compare,
//! as it would one put at a time. Errors that leave a batch's outcome
//! unknown are retried whole: a claim that had landed then finds its own
//! value (a win), a confirm that had landed writes the same value again.
//! A lease error, which cannot say whose lease, falls back to one put at a
//! time so each put gets its own answer.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;

use super::{BatchPut, Claim, CondPut, Condition, CoordError, Coordinator, KeyValue, MAX_BATCH};
use super::{Result, retry_unknown};

/// What happened to one put of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutOutcome {
    /// Its condition held and it landed.
    Put,
    /// Its condition failed; what the key held then (`None`: absent).
    NotPut(Option<KeyValue>),
}

/// Collects conditional puts for `linger` after the first of a batch (or
/// until [`MAX_BATCH`]) and commits them together.
#[derive(Clone)]
pub struct GroupCommit {
    inner: Arc<Inner>,
}

struct Inner {
    coord: Arc<dyn Coordinator>,
    linger: Duration,
    pending: Mutex<Pending>,
}

#[derive(Default)]
struct Pending {
    entries: Vec<Entry>,
    /// Bumped each time a batch is taken: a linger timer of an earlier
    /// batch finds it changed and does nothing.
    generation: u64,
}

struct Entry {
    put: CondPut,
    /// How long an unknown outcome is retried for this put.
    patience: Duration,
    reply: oneshot::Sender<Result<PutOutcome>>,
}

impl Pending {
    fn take(&mut self) -> Vec<Entry> {
        self.generation += 1;
        std::mem::take(&mut self.entries)
    }
}

impl GroupCommit {
    pub fn new(coord: Arc<dyn Coordinator>, linger: Duration) -> GroupCommit {
        GroupCommit {
            inner: Arc::new(Inner {
                coord,
                linger,
                pending: Mutex::new(Pending::default()),
            }),
        }
    }

    /// Put `put` with the next batch; answers once that batch is decided.
    /// An unknown outcome is retried for `patience` before it is an error.
    pub async fn submit(&self, put: CondPut, patience: Duration) -> Result<PutOutcome> {
        let (reply, answer) = oneshot::channel();
        let ready = {
            let mut pending = self.inner.lock();
            // A batch names each key once (etcd refuses a transaction that
            // writes a key twice): a second put of a key starts a new batch.
            let mut ready = Vec::new();
            if pending.entries.iter().any(|e| e.put.key == put.key) {
                ready.push(pending.take());
            }
            pending.entries.push(Entry {
                put,
                patience,
                reply,
            });
            if pending.entries.len() >= MAX_BATCH {
                ready.push(pending.take());
            } else if pending.entries.len() == 1 {
                let (inner, generation) = (self.inner.clone(), pending.generation);
                // Owned by the batch: it ends once the batch is committed.
                tokio::spawn(async move {
                    tokio::time::sleep(inner.linger).await;
                    let entries = {
                        let mut pending = inner.lock();
                        if pending.generation != generation {
                            return;
                        }
                        pending.take()
                    };
                    commit(&*inner.coord, entries).await;
                });
            }
            ready
        };
        for entries in ready.into_iter().filter(|e| !e.is_empty()) {
            let inner = self.inner.clone();
            tokio::spawn(async move { commit(&*inner.coord, entries).await });
        }
        answer
            .await
            .unwrap_or_else(|_| Err(CoordError::Unavailable("the batch was dropped".into())))
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Which puts of a failed batch are decided by what the keys held, and
/// which all held their conditions (and go again). Pure, for table tests.
pub fn split_failed(puts: &[CondPut], held: &[Option<KeyValue>]) -> (Vec<usize>, Vec<usize>) {
    (0..puts.len()).partition(|&i| !puts[i].holds_for(held.get(i).and_then(Option::as_ref)))
}

/// Commit one batch and answer each of its puts.
async fn commit(coord: &dyn Coordinator, mut open: Vec<Entry>) {
    let patience = open.iter().map(|e| e.patience).min().unwrap_or_default();
    while !open.is_empty() {
        let puts: Vec<CondPut> = open.iter().map(|e| e.put.clone()).collect();
        match retry_unknown(patience, || coord.put_all_if(&puts)).await {
            Ok(BatchPut::AllPut { .. }) => {
                for entry in open {
                    let _ = entry.reply.send(Ok(PutOutcome::Put));
                }
                return;
            }
            Ok(BatchPut::NonePut(mut held)) => {
                let (decided, _) = split_failed(&puts, &held);
                if decided.is_empty() {
                    // Every condition held yet nothing landed: do not guess.
                    return one_by_one(coord, open).await;
                }
                let mut rest = Vec::with_capacity(open.len() - decided.len());
                for (i, entry) in open.into_iter().enumerate() {
                    if decided.contains(&i) {
                        let _ = entry.reply.send(Ok(PutOutcome::NotPut(held[i].take())));
                    } else {
                        rest.push(entry);
                    }
                }
                open = rest;
            }
            Err(CoordError::LeaseNotFound(_)) if open.len() > 1 => {
                return one_by_one(coord, open).await;
            }
            Err(error) => {
                for entry in open {
                    let _ = entry.reply.send(Err(error.clone()));
                }
                return;
            }
        }
    }
}

/// Each put on its own, so each gets its own answer (or error).
async fn one_by_one(coord: &dyn Coordinator, entries: Vec<Entry>) {
    for entry in entries {
        let CondPut {
            key, value, lease, ..
        } = &entry.put;
        let outcome = match &entry.put.when {
            Condition::Absent => retry_unknown(entry.patience, || {
                coord.put_if_absent(key, value.clone(), *lease)
            })
            .await
            .map(|claim| match claim {
                Claim::Won { .. } => PutOutcome::Put,
                Claim::Held(kv) => PutOutcome::NotPut(Some(kv)),
            }),
            Condition::ValueIs(expected) => retry_unknown(entry.patience, || {
                coord.put_if_value(key, expected, value.clone(), *lease)
            })
            .await
            .map(|swapped| {
                if swapped {
                    PutOutcome::Put
                } else {
                    PutOutcome::NotPut(None)
                }
            }),
        };
        let _ = entry.reply.send(outcome);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(key: &str, value: &str) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: value.into(),
            create_revision: 1,
            mod_revision: 1,
            lease: 0,
        }
    }

    fn put(key: &str, when: Condition) -> CondPut {
        CondPut {
            key: key.into(),
            when,
            value: b"mine".to_vec(),
            lease: None,
        }
    }

    #[test]
    fn a_failed_batch_decides_exactly_the_puts_whose_condition_failed() {
        let claim = |k| put(k, Condition::Absent);
        let confirm = |k| put(k, Condition::ValueIs(b"mine".to_vec()));
        // (why, the batch, what each key held, the puts decided)
        type Case = (
            &'static str,
            Vec<CondPut>,
            Vec<Option<KeyValue>>,
            Vec<usize>,
        );
        let table: [Case; 4] = [
            (
                "a claim of a held key is decided, a free one goes again",
                vec![claim("a"), claim("b")],
                vec![Some(kv("a", "w2 x")), None],
                vec![0],
            ),
            (
                "a claim that had landed (own value) is decided too",
                vec![claim("a")],
                vec![Some(kv("a", "mine"))],
                vec![0],
            ),
            (
                "a confirm whose value changed or vanished is decided",
                vec![confirm("a"), confirm("b"), confirm("c")],
                vec![Some(kv("a", "mine")), Some(kv("b", "w2 x")), None],
                vec![1, 2],
            ),
            (
                "claims and confirms mixed",
                vec![claim("a"), confirm("b")],
                vec![None, Some(kv("b", "mine"))],
                vec![],
            ),
        ];
        for (why, puts, held, decided) in table {
            assert_eq!(split_failed(&puts, &held).0, decided, "{why}");
        }
    }
}
