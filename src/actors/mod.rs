//! The worker's actors (actix), one per file; messages that cross actors
//! live in [`messages`], the state they share in [`context`].
//!
//! - [`supervisor::JobSupervisor`]: which jobs this worker owns; one
//!   JobActor each; lost-run detection.
//! - [`job::JobActor`]: one job's timer, tick claim and overlap policy;
//!   [`fixed_delay`] adds the `@delay` chain to it, [`misfire`] the late
//!   run of ticks nobody ran.
//! - [`lock::LockActor`]: the session lease, tick claims, liveness tokens.
//! - [`registrar::Registrar`]: `workers/<id>` with load figures.
//! - [`kill_watcher::KillWatcher`]: kill requests to process groups.
//! - [`log_batcher::LogBatcher`]: batches run records into the run log,
//!   spooling to a local file while the store is unreachable.

pub mod context;
pub mod fixed_delay;
pub mod job;
pub mod kill_watcher;
pub mod lock;
pub mod log_batcher;
pub mod messages;
pub mod misfire;
pub mod ownership;
pub mod registrar;
pub mod supervisor;

#[cfg(test)]
mod tests;
