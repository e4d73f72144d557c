//! What every actor of a worker shares: its identity, the coordinator, the
//! clock, the other actors' addresses and the runs in progress.

use std::sync::Arc;

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
}
