//! Wall-clock time for scheduling, injected so tests control it.
//!
//! Timers run on tokio's clock (which tests can pause); [`TokioClock`] ties
//! the wall clock to it so paused tests see consistent instants.

use std::sync::Arc;

/// Unix epoch milliseconds now.
pub trait Clock: Send + Sync + 'static {
    fn now_ms(&self) -> i64;
}

pub type SharedClock = Arc<dyn Clock>;

/// The system's real-time clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64)
    }
}

/// A wall clock that advances with tokio's clock from a fixed start, so
/// `tokio::time::pause()` / `advance()` move it too.
pub struct TokioClock {
    start_ms: i64,
    start: tokio::time::Instant,
}

impl TokioClock {
    pub fn starting_at(start_ms: i64) -> TokioClock {
        TokioClock {
            start_ms,
            start: tokio::time::Instant::now(),
        }
    }
}

impl Clock for TokioClock {
    fn now_ms(&self) -> i64 {
        self.start_ms + self.start.elapsed().as_millis() as i64
    }
}
