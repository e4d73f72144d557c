//! The worker's actors (actix), one per file; messages that cross actors
//! live in [`messages`].
//!
//! - [`log_batcher::LogBatcher`]: batches run records into the run log,
//!   spooling to a local file while the store is unreachable.

pub mod log_batcher;
pub mod messages;
