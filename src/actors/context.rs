//! What every actor of a worker shares: its identity, the coordinator, the
//! clock, the other actors' addresses and the runs in progress.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use actix::Addr;

use super::lock::LockActor;
use super::log_batcher::LogBatcher;
use crate::clock::SharedClock;
use crate::coord::claims::TickClaims;
use crate::coord::{Coordinator, MAX_BATCH, Write};
use crate::job::{Job, Overlap};
use crate::runner::{RunLimits, RunningRuns};

#[derive(Clone)]
pub struct WorkerContext {
    pub worker_id: String,
    pub group: String,
    pub coord: Arc<dyn Coordinator>,
    pub clock: SharedClock,
    pub lock: Addr<LockActor>,
    pub batcher: Addr<LogBatcher>,
    pub running: RunningRuns,
    pub limits: RunLimits,
    /// How long before its tick a tick is claimed.
    pub claim_lead: std::time::Duration,
    /// Runs in progress on other workers, per job, as `running/` shows them.
    pub cluster_runs: ClusterRuns,
    /// The tick claims (the LockActor's), read by misfire scans.
    pub claims: Arc<TickClaims>,
    /// How far back a new owner looks for ticks nobody ran, for jobs that
    /// do not set their own window (already held below claim retention).
    pub misfire_window: std::time::Duration,
    /// Bumped by the LockActor each time it holds a new session.
    pub sessions: tokio::sync::watch::Receiver<u64>,
    /// The `running/` registrations and unregistrations, batched.
    pub running_keys: crate::coord::write_queue::WriteQueue,
    /// `running/` keys of finished runs whose delete failed.
    pub unregister_backlog: UnregisterBacklog,
    /// The run log, read to close the open runs of a worker that died.
    pub run_log: Arc<dyn crate::runlog::RunLog>,
    /// Definitions of the jobs this worker owned, for its notifier.
    pub known_jobs: crate::notify::notifier::KnownJobs,
}

/// `running/` keys of runs that ended but could not be unregistered (etcd
/// was out). Left in place, they would end with the session and make a
/// finished run look lost (and rerun). Retried by the registrar's refresh,
/// and flushed before a lost session is revoked or the worker stops.
#[derive(Clone, Default)]
pub struct UnregisterBacklog(Arc<std::sync::Mutex<std::collections::BTreeSet<String>>>);

impl UnregisterBacklog {
    pub fn add(&self, key: String) {
        self.lock().insert(key);
    }

    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// Delete what can be deleted, up to [`MAX_BATCH`] keys a request (an
    /// outage can leave every long run that ended during it here); `Err`
    /// if some keys remain.
    pub async fn flush(&self, coord: &dyn Coordinator) -> crate::coord::Result<()> {
        let keys: Vec<String> = self.lock().iter().cloned().collect();
        for batch in keys.chunks(MAX_BATCH) {
            let deletes: Vec<Write> = batch
                .iter()
                .map(|key| Write::Delete { key: key.clone() })
                .collect();
            coord.write_all(&deletes).await?;
            let mut backlog = self.lock();
            for key in batch {
                backlog.remove(key);
            }
        }
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::BTreeSet<String>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What a won tick does about runs of its job already in progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverlapDecision {
    Start,
    /// Recorded as `skipped` (`overlap: forbid`).
    Skip,
    /// Kill the runs here, then start.
    ReplaceThenStart,
}

/// The overlap rule: `here` runs of the job on this worker, `elsewhere` on
/// others (a previous owner's run still counts for `forbid`; `replace` can
/// kill only the runs here).
pub fn overlap_decision(policy: Overlap, here: usize, elsewhere: usize) -> OverlapDecision {
    match (policy, here + elsewhere) {
        (_, 0) | (Overlap::Allow, _) => OverlapDecision::Start,
        (Overlap::Forbid, _) => OverlapDecision::Skip,
        (Overlap::Replace, _) => OverlapDecision::ReplaceThenStart,
    }
}

impl WorkerContext {
    pub fn overlap_decision(&self, job: &Job) -> OverlapDecision {
        overlap_decision(
            job.overlap,
            self.running.count(&job.name),
            self.cluster_runs.elsewhere(&job.name),
        )
    }
}

/// Runs in progress on other workers, per job: kept by the supervisor from
/// its watch on `running/`, read by job actors so `overlap: forbid` holds
/// across the cluster (a run registers there once it has lasted 1 s).
#[derive(Clone, Default)]
pub struct ClusterRuns(Arc<RwLock<HashMap<String, usize>>>);

impl ClusterRuns {
    pub fn elsewhere(&self, job: &str) -> usize {
        let counts = self.0.read().unwrap_or_else(|e| e.into_inner());
        counts.get(job).copied().unwrap_or(0)
    }

    pub fn replace(&self, counts: HashMap<String, usize>) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = counts;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_overlap_rule_counts_runs_anywhere_in_the_cluster() {
        use OverlapDecision::*;
        let table = [
            (Overlap::Forbid, 0, 0, Start),
            (Overlap::Forbid, 1, 0, Skip),
            (Overlap::Forbid, 0, 1, Skip),
            (Overlap::Allow, 3, 2, Start),
            (Overlap::Replace, 0, 0, Start),
            (Overlap::Replace, 1, 0, ReplaceThenStart),
            (Overlap::Replace, 0, 1, ReplaceThenStart),
        ];
        for (policy, here, elsewhere, expected) in table {
            assert_eq!(
                overlap_decision(policy, here, elsewhere),
                expected,
                "{policy:?} with {here} here and {elsewhere} elsewhere"
            );
        }
    }

    #[tokio::test]
    async fn the_unregister_backlog_flushes_in_batches_and_keeps_what_failed() {
        use crate::coord::faulty::Faulty;
        use std::sync::atomic::Ordering;
        let coord = Faulty::in_memory();
        let backlog = UnregisterBacklog::default();
        for i in 0..300 {
            let key = format!("running/j/r{i:03}");
            coord.put(&key, b"x".to_vec(), None).await.unwrap();
            backlog.add(key);
        }
        // etcd still out: nothing is deleted and every key stays.
        coord.down.store(true, Ordering::SeqCst);
        assert!(backlog.flush(&coord).await.is_err());
        assert_eq!(backlog.lock().len(), 300);
        coord.down.store(false, Ordering::SeqCst);
        backlog.flush(&coord).await.unwrap();
        assert!(backlog.is_empty());
        assert!(coord.list("running/").await.unwrap().0.is_empty());
        // 300 keys in batches of at most 128.
        assert_eq!(coord.write_batches.load(Ordering::SeqCst), 3);
    }
}
