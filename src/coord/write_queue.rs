//! Unconditional writes batched while one is in flight: a worker's
//! `running/` registrations and unregistrations.
//!
//! A write goes at once when nothing else is in flight; writes submitted
//! while a batch is out wait and leave together as the next one
//! ([`Coordinator::write_all`], one transaction). So a quiet worker adds no
//! delay, and a busy one (or one whose etcd is slow, when runs pass 1 s
//! and register in crowds) sends one request per round trip instead of one
//! per write: the slower etcd answers, the fewer requests it is sent.
//!
//! A batch names each key once and keeps each key's writes in the order
//! they were submitted ([`next_batch`]). A lease error, which cannot say
//! whose lease, sends that batch's writes one at a time, so each gets its
//! own answer.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use super::{CoordError, Coordinator, LeaseId, MAX_BATCH, Result, Write};

/// Batches writes to one coordinator; cheap to clone.
#[derive(Clone)]
pub struct WriteQueue {
    inner: Arc<Inner>,
}

struct Inner {
    coord: Arc<dyn Coordinator>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    waiting: VecDeque<Entry>,
    /// A sender task is at work: it takes what is waiting when its batch
    /// is answered.
    sending: bool,
}

struct Entry {
    write: Write,
    reply: oneshot::Sender<Result<()>>,
}

impl WriteQueue {
    pub fn new(coord: Arc<dyn Coordinator>) -> WriteQueue {
        WriteQueue {
            inner: Arc::new(Inner {
                coord,
                state: Mutex::new(State::default()),
            }),
        }
    }

    /// Create or replace `key`; answers once it landed or failed.
    pub async fn put(&self, key: String, value: Vec<u8>, lease: Option<LeaseId>) -> Result<()> {
        self.submit(Write::Put { key, value, lease }).await
    }

    /// Delete `key`; answers once it is gone or the delete failed.
    pub async fn delete(&self, key: String) -> Result<()> {
        self.submit(Write::Delete { key }).await
    }

    async fn submit(&self, write: Write) -> Result<()> {
        let (reply, answer) = oneshot::channel();
        let start_sender = {
            let mut state = self.inner.lock();
            state.waiting.push_back(Entry { write, reply });
            !std::mem::replace(&mut state.sending, true)
        };
        if start_sender {
            // Owned by the queue's backlog: it ends once nothing waits.
            tokio::spawn(send_all(self.inner.clone()));
        }
        answer
            .await
            .unwrap_or_else(|_| Err(CoordError::Unavailable("the write was dropped".into())))
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// How many of `keys` (the waiting writes' keys, oldest first) the next
/// batch takes: up to [`MAX_BATCH`], and never a key twice (etcd refuses a
/// transaction that writes a key twice), so it stops before the first
/// repeat. Pure, for table tests.
pub fn next_batch<'a>(keys: impl IntoIterator<Item = &'a str>) -> usize {
    let mut seen = HashSet::new();
    keys.into_iter()
        .take(MAX_BATCH)
        .take_while(|key| seen.insert(*key))
        .count()
}

/// Send batches until nothing waits.
async fn send_all(inner: Arc<Inner>) {
    let mut turn = Turn {
        inner: inner.clone(),
        finished: false,
    };
    loop {
        let batch: Vec<Entry> = {
            let mut state = inner.lock();
            let n = next_batch(state.waiting.iter().map(|e| e.write.key()));
            if n == 0 {
                state.sending = false;
                turn.finished = true;
                return;
            }
            state.waiting.drain(..n).collect()
        };
        send(&*inner.coord, batch).await;
    }
}

/// The sender's turn. Should its task end before nothing waits (a panic in
/// the coordinator, the runtime shutting down), the writes that wait are
/// failed and the next write starts a new sender, so nobody waits forever
/// on a sender that is gone.
struct Turn {
    inner: Arc<Inner>,
    finished: bool,
}

impl Drop for Turn {
    fn drop(&mut self) {
        if !self.finished {
            let mut state = self.inner.lock();
            state.sending = false;
            // Dropping their replies answers each with an error.
            state.waiting.clear();
        }
    }
}

/// Send one batch and answer each of its writes.
async fn send(coord: &dyn Coordinator, batch: Vec<Entry>) {
    let writes: Vec<Write> = batch.iter().map(|e| e.write.clone()).collect();
    let answer = match coord.write_all(&writes).await {
        Err(CoordError::LeaseNotFound(_)) if batch.len() > 1 => {
            return one_by_one(coord, batch).await;
        }
        other => other.map(|_| ()),
    };
    for entry in batch {
        let _ = entry.reply.send(answer.clone());
    }
}

/// Each write on its own, so each gets its own answer.
async fn one_by_one(coord: &dyn Coordinator, batch: Vec<Entry>) {
    for entry in batch {
        let answer = coord.write_all(std::slice::from_ref(&entry.write)).await;
        let _ = entry.reply.send(answer.map(|_| ()));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    use super::*;
    use crate::coord::embedded::EmbeddedCoordinator;
    use crate::coord::faulty::Faulty;

    #[test]
    fn a_batch_names_each_key_once_and_keeps_each_keys_order() {
        let many: Vec<String> = (0..MAX_BATCH + 5).map(|i| format!("k{i}")).collect();
        // (why, waiting keys oldest first, how many the batch takes)
        let table: [(&str, Vec<&str>, usize); 5] = [
            ("nothing waits", vec![], 0),
            ("distinct keys all go", vec!["a", "b", "c"], 3),
            (
                "a key's second write waits for the next batch",
                vec!["a", "b", "a", "c"],
                2,
            ),
            ("a put then its delete: one per batch", vec!["a", "a"], 1),
            (
                "at most etcd's max-txn-ops",
                many.iter().map(String::as_str).collect(),
                MAX_BATCH,
            ),
        ];
        for (why, keys, taken) in table {
            assert_eq!(next_batch(keys), taken, "{why}");
        }
    }

    #[tokio::test]
    async fn writes_submitted_together_leave_as_one_batch() {
        let faulty = Arc::new(Faulty::in_memory());
        let queue = WriteQueue::new(faulty.clone());
        // Ten registrations at once, then their unregistrations.
        let puts = (0..10).map(|i| queue.put(format!("running/j/r{i}"), b"x".to_vec(), None));
        for answer in futures_util::future::join_all(puts).await {
            answer.unwrap();
        }
        let (kvs, _) = faulty.list("running/").await.unwrap();
        assert_eq!(kvs.len(), 10);
        let deletes = (0..10).map(|i| queue.delete(format!("running/j/r{i}")));
        for answer in futures_util::future::join_all(deletes).await {
            answer.unwrap();
        }
        let (kvs, _) = faulty.list("running/").await.unwrap();
        assert!(kvs.is_empty(), "every key deleted: {kvs:?}");
        // Each round was submitted before the sender ran: one batch each.
        assert_eq!(faulty.write_batches.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn writes_submitted_while_one_is_in_flight_wait_and_leave_together() {
        let faulty = Arc::new(Faulty::in_memory());
        faulty.write_ms.store(50, Ordering::SeqCst);
        let queue = WriteQueue::new(faulty.clone());
        let first = tokio::spawn({
            let queue = queue.clone();
            async move {
                queue
                    .put("running/j/first".into(), b"x".to_vec(), None)
                    .await
            }
        });
        // Once the first is in flight, five more arrive.
        while faulty.write_batches.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        let more = (0..5).map(|i| queue.put(format!("running/j/r{i}"), b"x".to_vec(), None));
        for answer in futures_util::future::join_all(more).await {
            answer.unwrap();
        }
        first.await.unwrap().unwrap();
        assert_eq!(faulty.write_batches.load(Ordering::SeqCst), 2);
        assert_eq!(faulty.list("running/").await.unwrap().0.len(), 6);
    }

    #[tokio::test]
    async fn a_sender_that_dies_fails_its_writes_and_the_next_write_goes() {
        let faulty = Arc::new(Faulty::in_memory());
        faulty.panic_on_write.store(true, Ordering::SeqCst);
        let queue = WriteQueue::new(faulty.clone());
        // Without the turn's guard these would wait forever.
        let both = async {
            tokio::join!(
                queue.put("running/j/a".into(), b"x".to_vec(), None),
                queue.put("running/j/b".into(), b"x".to_vec(), None),
            )
        };
        let (a, b) = tokio::time::timeout(Duration::from_secs(10), both)
            .await
            .expect("the writes of a dead sender are answered");
        assert!(matches!(a, Err(CoordError::Unavailable(_))), "{a:?}");
        assert!(matches!(b, Err(CoordError::Unavailable(_))), "{b:?}");
        faulty.panic_on_write.store(false, Ordering::SeqCst);
        queue
            .put("running/j/a".into(), b"x".to_vec(), None)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_put_on_an_ended_lease_fails_alone() {
        let store = Arc::new(EmbeddedCoordinator::in_memory());
        let queue = WriteQueue::new(store.clone());
        let live = store.grant(Duration::from_secs(30)).await.unwrap();
        let ended = store.grant(Duration::from_secs(30)).await.unwrap();
        store.revoke(ended).await.unwrap();
        // One batch; the lease error sends its writes one at a time.
        let (first, on_live, on_ended, delete) = tokio::join!(
            queue.put("running/j/a".into(), b"x".to_vec(), Some(live)),
            queue.put("running/j/b".into(), b"x".to_vec(), Some(live)),
            queue.put("running/j/c".into(), b"x".to_vec(), Some(ended)),
            queue.delete("running/j/a".into()),
        );
        first.unwrap();
        on_live.unwrap();
        assert_eq!(on_ended, Err(CoordError::LeaseNotFound(ended)));
        delete.unwrap();
        let (kvs, _) = store.list("running/").await.unwrap();
        let keys: Vec<&str> = kvs.iter().map(|kv| kv.key.as_str()).collect();
        assert_eq!(keys, ["running/j/b"]);
    }

    #[tokio::test]
    async fn an_unreachable_store_fails_every_write_and_the_queue_goes_on() {
        let faulty = Arc::new(Faulty::in_memory());
        faulty.down.store(true, Ordering::SeqCst);
        let queue = WriteQueue::new(faulty.clone());
        let (a, b) = tokio::join!(
            queue.put("running/j/a".into(), b"x".to_vec(), None),
            queue.delete("running/j/b".into()),
        );
        assert!(matches!(a, Err(CoordError::Unavailable(_))), "{a:?}");
        assert!(matches!(b, Err(CoordError::Unavailable(_))), "{b:?}");
        faulty.down.store(false, Ordering::SeqCst);
        queue
            .put("running/j/a".into(), b"x".to_vec(), None)
            .await
            .unwrap();
        assert_eq!(faulty.list("running/").await.unwrap().0.len(), 1);
    }
}
