//! Messages that cross actors. An actor's private timer messages stay in its
//! own file.

use actix::Message;

use super::log_batcher::BatcherCounters;
use crate::runlog::RunRecord;

/// A finished (or skipped, or lost) run, for the log batcher.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Record(pub RunRecord);

/// Graceful stop: write or spool everything held in memory; answers with
/// the final counters once nothing is left outside the store or spool.
#[derive(Debug, Message)]
#[rtype(result = "BatcherCounters")]
pub struct Drain;

/// The log batcher's counters, for `/metrics` and tests.
#[derive(Debug, Message)]
#[rtype(result = "BatcherCounters")]
pub struct GetCounters;

/// The last step of a worker's stop: end the actor now.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Shutdown;

/// `Handler<Shutdown>` for actors that just stop.
macro_rules! stops_on_shutdown {
    ($($actor:ty),*) => {$(
        impl actix::Handler<$crate::actors::messages::Shutdown> for $actor {
            type Result = ();

            fn handle(&mut self, _: $crate::actors::messages::Shutdown, ctx: &mut Self::Context) {
                actix::ActorContext::stop(ctx);
            }
        }
    )*};
}

stops_on_shutdown!(
    super::supervisor::JobSupervisor,
    super::kill_watcher::KillWatcher,
    super::registrar::Registrar,
    super::log_batcher::LogBatcher
);
