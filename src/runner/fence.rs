//! The fence: a small process per worker that kills the worker's runs when
//! the worker can no longer vouch for them.
//!
//! A worker that is SIGKILLed leaves its children running; one that is
//! frozen (SIGSTOP, a stalled VM) keeps them running while its peers declare
//! them lost and may run them again. Nothing inside the worker can act then,
//! so the fence lives outside it: the worker starts it as a child (the same
//! binary, `__fence`), in its own process group, and writes to its stdin
//!
//! - `alive <ms>`: my session is good for `ms` more milliseconds (sent after
//!   every acknowledged keep-alive, from the session's own conservative
//!   deadline, so it never reaches past the lease's end in etcd);
//! - `add <pgid>` / `remove <pgid>`: a run's process group started / ended.
//!
//! When the last deadline passes with no newer `alive`, the fence SIGKILLs
//! every group it holds. On end of input (the worker died, or stopped) it
//! waits for that deadline too, so a run already started may finish its
//! work while the lease still holds, kills what is left, and exits. Peers
//! record a lost run, and rerun it, only `killGraceMs` after the lease ended,
//! so two runs of one tick never overlap.

use std::collections::BTreeSet;
use std::io::{BufRead, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The argument that makes a distcron binary serve as a fence.
pub const FENCE_ARG: &str = "__fence";

/// What the fence knows: the groups it holds and until when the worker
/// vouched for them. Pure: the process loop feeds it lines and the clock.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct FenceState {
    pub groups: BTreeSet<i32>,
    pub deadline: Option<Instant>,
    /// Input ended: exit once the deadline has been dealt with.
    pub closed: bool,
}

impl FenceState {
    /// Take in one line from the worker (unknown lines are ignored).
    pub fn apply(&mut self, line: &str, now: Instant) {
        let mut words = line.split_whitespace();
        let (Some(verb), Some(arg)) = (words.next(), words.next()) else {
            return;
        };
        let Ok(n) = arg.parse::<u64>() else { return };
        match verb {
            "alive" => self.deadline = Some(now + Duration::from_millis(n)),
            "add" if n > 0 && n <= i32::MAX as u64 => {
                self.groups.insert(n as i32);
            }
            "remove" => {
                self.groups.remove(&(n as i32));
            }
            _ => {}
        }
    }

    /// The groups to kill now (emptying the set): the deadline passed, or
    /// the input ended with no deadline to wait for.
    pub fn due(&mut self, now: Instant) -> Vec<i32> {
        let expired = match self.deadline {
            Some(deadline) => now >= deadline,
            None => self.closed,
        };
        if !expired || self.groups.is_empty() {
            return Vec::new();
        }
        self.deadline = None;
        std::mem::take(&mut self.groups).into_iter().collect()
    }

    /// The input ended and nothing is left to guard.
    pub fn finished(&self, now: Instant) -> bool {
        self.closed && (self.groups.is_empty() || self.deadline.is_none_or(|d| now >= d))
    }
}

/// Serve as a fence if this process was started as one (call first thing
/// in `main`).
pub fn serve_if_asked() {
    if std::env::args().nth(1).as_deref() == Some(FENCE_ARG) {
        serve();
    }
}

/// The fence process: read the worker's lines from stdin until it ends,
/// killing groups when the worker's word runs out. Never returns.
pub fn serve() -> ! {
    // Not the terminal's: a ^C meant for the worker must not stop the fence.
    ignore_interrupts();
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut state = FenceState::default();
    loop {
        let now = Instant::now();
        let groups = state.due(now);
        if !groups.is_empty() {
            eprintln!(
                "distcron fence: the worker's session ran out; killing {} run(s)",
                groups.len()
            );
            for pgid in groups {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pgid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        if state.finished(now) {
            std::process::exit(0);
        }
        let wait = state
            .deadline
            .map_or(Duration::from_secs(3600), |d| {
                d.saturating_duration_since(now)
            })
            .max(Duration::from_millis(1));
        match rx.recv_timeout(wait) {
            Ok(line) => state.apply(&line, Instant::now()),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                state.closed = true;
                if let Some(deadline) = state.deadline.filter(|_| !state.groups.is_empty()) {
                    std::thread::sleep(deadline.saturating_duration_since(Instant::now()));
                }
            }
        }
    }
}

fn ignore_interrupts() {
    use nix::sys::signal::{SigHandler, Signal, signal};
    for sig in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        // SAFETY: SIG_IGN installs no handler code.
        let _ = unsafe { signal(sig, SigHandler::SigIgn) };
    }
}

/// The worker's handle on its fence: cheap to clone, never blocks the
/// caller (a thread writes the lines). Dropping the last handle closes the
/// fence's input; it then kills what is left at the deadline and exits.
#[derive(Clone, Debug)]
pub struct Fence {
    tx: mpsc::Sender<String>,
}

impl Fence {
    /// Start `program __fence` as this process's child, in its own process
    /// group.
    pub fn start(program: &Path) -> std::io::Result<Fence> {
        use std::os::unix::process::CommandExt;
        let mut child = Command::new(program)
            .arg(FENCE_ARG)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .process_group(0)
            .spawn()?;
        let stdin = child
            .stdin
            .take()
            .ok_or_else(|| std::io::Error::other("fence has no stdin"))?;
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("fence-writer".into())
            .spawn(move || write_lines(rx, stdin, child))?;
        Ok(Fence { tx })
    }

    /// The session is good for `left` more.
    pub fn alive(&self, left: Duration) {
        let _ = self.tx.send(format!("alive {}", left.as_millis()));
    }

    pub fn add(&self, pgid: i32) {
        let _ = self.tx.send(format!("add {pgid}"));
    }

    pub fn remove(&self, pgid: i32) {
        let _ = self.tx.send(format!("remove {pgid}"));
    }
}

fn write_lines(rx: mpsc::Receiver<String>, mut stdin: ChildStdin, mut child: Child) {
    for line in rx {
        if writeln!(stdin, "{line}").is_err() {
            tracing::error!("the fence process is gone: runs are no longer fenced");
            break;
        }
    }
    drop(stdin);
    let _ = child.wait();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fence_kills_its_groups_when_the_workers_word_runs_out() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut fence = FenceState::default();
        fence.apply("add 100", t0);
        assert!(
            fence.due(t0 + ms(10_000)).is_empty(),
            "no word yet: nothing to judge"
        );
        fence.apply("alive 4000", t0);
        fence.apply("add 200", t0);
        fence.apply("remove 100", t0);
        fence.apply("add nonsense", t0);
        fence.apply("add 0", t0);
        assert!(fence.due(t0 + ms(3_999)).is_empty());
        fence.apply("alive 4000", t0 + ms(3_000));
        assert!(fence.due(t0 + ms(6_999)).is_empty(), "renewed");
        assert_eq!(fence.due(t0 + ms(7_000)), [200]);
        assert!(fence.groups.is_empty() && fence.deadline.is_none());
        assert!(fence.due(t0 + ms(9_000)).is_empty(), "killed once");
    }

    #[test]
    fn at_end_of_input_the_fence_waits_for_the_deadline_then_exits() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut fence = FenceState::default();
        fence.apply("alive 2000", t0);
        fence.apply("add 300", t0);
        fence.closed = true;
        assert!(fence.due(t0 + ms(1_000)).is_empty() && !fence.finished(t0 + ms(1_000)));
        assert_eq!(fence.due(t0 + ms(2_000)), [300]);
        assert!(fence.finished(t0 + ms(2_000)));
        // Closed with groups and no deadline at all: kill at once.
        let mut early = FenceState::default();
        early.apply("add 400", t0);
        early.closed = true;
        assert_eq!(early.due(t0), [400]);
        assert!(early.finished(t0));
    }
}
