//! What every actor of a worker shares: its identity, the coordinator, the
//! clock, the other actors' addresses and the runs in progress.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use actix::Addr;

use super::lock::LockActor;
use super::log_batcher::LogBatcher;
use crate::clock::SharedClock;
use crate::coord::Coordinator;
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
