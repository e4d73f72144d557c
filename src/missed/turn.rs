//! Whose turn it is to sweep. Every manager can sweep, but one at a time
//! does: the one holding the `sweeper` key on a session of its own. Two
//! managers sweeping the same ticks read every claim twice and ask the run
//! log about every tick twice, for the same records (each sweep's writes
//! are exact either way: claims decide, run ids are per tick).
//!
//! When the sweeping manager dies, its key ends with its session (at most
//! [`TURN_TTL`] later) and the next manager to look takes the turn. It does
//! not know how far the last sweeper got, so its first sweep checks every
//! tick whose claim is still kept ([`super::MissedSweep::catch_up`]).

use std::sync::Arc;
use std::time::Duration;

use crate::coord::session::Session;
use crate::coord::{Claim, Coordinator, Result};
use crate::keyspace;

/// How long the turn outlives a manager that stopped keeping it alive.
pub const TURN_TTL: Duration = Duration::from_secs(15);

pub struct SweepTurn {
    coord: Arc<dyn Coordinator>,
    /// `<manager> <nonce>`: a restarted manager is someone else.
    value: Vec<u8>,
    session: Option<Session>,
}

impl SweepTurn {
    pub fn new(coord: Arc<dyn Coordinator>, manager: &str) -> SweepTurn {
        let value = format!("{manager} {}", crate::auth::random_hex(8)).into_bytes();
        SweepTurn {
            coord,
            value,
            session: None,
        }
    }

    /// Whether this manager sweeps now: it holds the turn, or takes it
    /// because nobody does. One read while the turn is held.
    pub async fn take(&mut self) -> Result<bool> {
        if let Some(held) = self.coord.get(keyspace::SWEEPER).await? {
            return Ok(held.value == self.value);
        }
        if !self.session.as_ref().is_some_and(Session::is_alive) {
            self.session = Some(Session::start(self.coord.clone(), TURN_TTL).await?);
        }
        let lease = self.session.as_ref().map(Session::lease);
        Ok(
            match self
                .coord
                .put_if_absent(keyspace::SWEEPER, self.value.clone(), lease)
                .await?
            {
                Claim::Won { .. } => true,
                Claim::Held(kv) => kv.value == self.value,
            },
        )
    }

    /// Hand the turn on now (a manager stopping): the next manager takes it
    /// at its next sweep instead of after [`TURN_TTL`].
    pub async fn give_up(mut self) -> Result<()> {
        match self.session.take() {
            Some(session) => session.revoke().await,
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coord::embedded::EmbeddedCoordinator;

    #[tokio::test]
    async fn one_manager_sweeps_at_a_time_and_the_next_takes_over_when_it_stops() {
        let coord: Arc<dyn Coordinator> = Arc::new(EmbeddedCoordinator::in_memory());
        let mut first = SweepTurn::new(coord.clone(), "manager@a");
        let mut second = SweepTurn::new(coord.clone(), "manager@b");
        assert!(first.take().await.unwrap(), "nobody held it");
        assert!(!second.take().await.unwrap(), "the first holds it");
        assert!(first.take().await.unwrap(), "still the first's");
        first.give_up().await.unwrap();
        assert!(second.take().await.unwrap(), "handed on");
        // A restart of the first manager is someone else: it waits.
        let mut restarted = SweepTurn::new(coord.clone(), "manager@a");
        assert!(!restarted.take().await.unwrap());
    }
}
