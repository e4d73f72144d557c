//! Open lease keep-alive streams, one per lease kept alive, so a refresh is
//! one message on a stream that stays open, as etcd's own clients do.
//!
//! etcd-client opens a keep-alive stream by sending a refresh and waiting
//! for its answer; opening a stream for every refresh, then refreshing on
//! it to read the TTL, cost every session two refreshes (and a stream) per
//! keep-alive: half of the keep-alives the load test counted.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use etcd_client::{LeaseKeepAliveStream, LeaseKeeper};

use super::LeaseId;

/// A lease's keep-alive stream: the sender of refreshes and their answers.
pub type OpenStream = (LeaseKeeper, LeaseKeepAliveStream);

/// A lease's open stream, or `None` until one is opened (or after it broke).
pub type Keeper = Arc<tokio::sync::Mutex<Option<OpenStream>>>;

/// Streams kept open at most: a worker needs one (its session), a manager
/// one per web session being refreshed. Past it, the least recently used
/// is closed.
const MAX_OPEN: usize = 64;

#[derive(Clone, Default)]
pub struct Keepers(Arc<Mutex<HashMap<LeaseId, (Instant, Keeper)>>>);

impl Keepers {
    /// The keeper of `lease`, added (closing the least recently used one if
    /// full) when it has none.
    pub fn of(&self, lease: LeaseId) -> Keeper {
        let mut open = self.lock();
        if !open.contains_key(&lease)
            && open.len() >= MAX_OPEN
            && let Some(oldest) = open
                .iter()
                .min_by_key(|(_, (used, _))| *used)
                .map(|(l, _)| *l)
        {
            open.remove(&oldest);
        }
        let entry = open
            .entry(lease)
            .or_insert_with(|| (Instant::now(), Keeper::default()));
        entry.0 = Instant::now();
        entry.1.clone()
    }

    /// Close `lease`'s stream (the lease ended, or its stream failed).
    pub fn close(&self, lease: LeaseId) {
        self.lock().remove(&lease);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<LeaseId, (Instant, Keeper)>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_least_recently_used_stream_is_closed_when_full() {
        let keepers = Keepers::default();
        for lease in 0..MAX_OPEN as i64 {
            keepers.of(lease);
        }
        keepers.of(0); // used again: now the most recent
        keepers.of(1_000);
        let open = keepers.lock();
        assert_eq!(open.len(), MAX_OPEN);
        assert!(open.contains_key(&0) && open.contains_key(&1_000));
        assert!(
            !open.contains_key(&1),
            "lease 1 was the least recently used"
        );
    }
}
