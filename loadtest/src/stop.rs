//! Stopping a run early. The first SIGINT or SIGTERM asks the harness to
//! stop where it next waits (saving jobs, waiting for a window, the window
//! itself); it then stops every process it started and writes the report
//! of the steps it finished, marked as stopped, so a run cut short still
//! leaves its figures. A second signal exits at once (what was started is
//! then left running).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use signal_hook::consts::{SIGINT, SIGTERM};

static REQUESTED: OnceLock<Arc<AtomicBool>> = OnceLock::new();

/// How often a wait looks whether a stop was asked.
const LOOK_EVERY: Duration = Duration::from_millis(200);

/// Catch SIGINT and SIGTERM from now on.
pub fn install() -> std::io::Result<()> {
    let flag = REQUESTED
        .get_or_init(|| Arc::new(AtomicBool::new(false)))
        .clone();
    for signal in [SIGINT, SIGTERM] {
        // Registered first, so it exits only on a signal after the one
        // that sets the flag below.
        signal_hook::flag::register_conditional_shutdown(signal, 130, flag.clone())?;
        signal_hook::flag::register(signal, flag.clone())?;
    }
    Ok(())
}

/// Whether a stop was asked.
pub fn requested() -> bool {
    REQUESTED
        .get()
        .is_some_and(|flag| flag.load(Ordering::SeqCst))
}

/// Sleep until `at` (wall clock); `false` when a stop was asked first.
pub async fn sleep_until(at: DateTime<Utc>) -> bool {
    loop {
        if requested() {
            return false;
        }
        let left = (at - Utc::now()).num_milliseconds();
        if left <= 0 {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(left as u64).min(LOOK_EVERY)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_wait_ends_when_its_instant_passes_or_at_the_first_signal() {
        assert!(sleep_until(Utc::now() - chrono::Duration::seconds(1)).await);
        install().unwrap();
        assert!(!requested());
        // Only one signal in this process: a second would exit it.
        nix::sys::signal::raise(nix::sys::signal::Signal::SIGTERM).unwrap();
        assert!(requested());
        let in_an_hour = Utc::now() + chrono::Duration::hours(1);
        assert!(!sleep_until(in_an_hour).await, "ended by the signal");
    }
}
