//! Failed sign-ins per source address: after [`MAX_FAILURES`] in a
//! [`WINDOW`], `POST /auth/login` answers 429 from that address until the
//! window ends. It slows down guessing passwords and spares the CPU the
//! argon2id work; each manager counts on its own.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const MAX_FAILURES: u32 = 10;
pub const WINDOW: Duration = Duration::from_secs(300);
/// Addresses remembered at most; expired ones are dropped first.
const MAX_SOURCES: usize = 100_000;

#[derive(Default)]
pub struct LoginThrottle {
    /// Source address -> (failures, start of its window).
    failures: Mutex<HashMap<String, (u32, Instant)>>,
}

impl LoginThrottle {
    /// `Err(wait)` while `source` has used up its failures.
    pub fn check(&self, source: &str, now: Instant) -> Result<(), Duration> {
        let failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        match failures.get(source) {
            Some(&(count, since)) if count >= MAX_FAILURES => {
                let ends = since + WINDOW;
                if now < ends { Err(ends - now) } else { Ok(()) }
            }
            _ => Ok(()),
        }
    }

    pub fn failed(&self, source: &str, now: Instant) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if failures.len() >= MAX_SOURCES {
            failures.retain(|_, (_, since)| now.duration_since(*since) < WINDOW);
        }
        if failures.len() >= MAX_SOURCES && !failures.contains_key(source) {
            return; // a flood of addresses: count none rather than grow
        }
        let entry = failures.entry(source.to_string()).or_insert((0, now));
        if now.duration_since(entry.1) >= WINDOW {
            *entry = (0, now);
        }
        entry.0 += 1;
    }

    /// A successful sign-in clears the address's count.
    pub fn succeeded(&self, source: &str) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        failures.remove(source);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_refused_after_its_failures_until_the_window_ends() {
        let throttle = LoginThrottle::default();
        let t0 = Instant::now();
        let at = |secs| t0 + Duration::from_secs(secs);
        for _ in 0..MAX_FAILURES - 1 {
            throttle.failed("10.0.0.1", t0);
        }
        assert_eq!(throttle.check("10.0.0.1", t0), Ok(()), "one attempt left");
        throttle.failed("10.0.0.1", at(1));
        assert_eq!(
            throttle.check("10.0.0.1", at(1)),
            Err(WINDOW - Duration::from_secs(1))
        );
        assert_eq!(
            throttle.check("10.0.0.2", at(1)),
            Ok(()),
            "other addresses unaffected"
        );
        assert_eq!(
            throttle.check("10.0.0.1", at(300)),
            Ok(()),
            "the window ended"
        );
        // A new window starts counting from one.
        throttle.failed("10.0.0.1", at(301));
        assert_eq!(throttle.check("10.0.0.1", at(301)), Ok(()));
    }

    #[test]
    fn a_success_clears_the_count() {
        let throttle = LoginThrottle::default();
        let t0 = Instant::now();
        for _ in 0..MAX_FAILURES {
            throttle.failed("10.0.0.1", t0);
        }
        assert!(throttle.check("10.0.0.1", t0).is_err());
        throttle.succeeded("10.0.0.1");
        assert_eq!(throttle.check("10.0.0.1", t0), Ok(()));
    }
}
