//! Runs started ahead of their tick and held at a gate (issue M).
//!
//! A start's cost is the shell's `posix_spawn`: at 10,000 ticks a minute,
//! 167 of them fall due in the same millisecond, and the last waited for
//! every spawn before it, after the tick's confirm had already made it
//! wait for etcd. A tick won a second ahead therefore starts its shell
//! right away, held before the command by a gate: the shell reads one line
//! from its stdin and goes on only if it gets one. At the tick, once the
//! claim is confirmed, [`super::run`] opens the gate with one write. The
//! command still begins only after the confirm, as before; only the
//! shell's start moved ahead.
//!
//! A gate never opened ends its shell before the command: dropped (the
//! tick skipped, its claim not ours after all, the job changed or stopped),
//! the process group is killed; if the worker dies, the pipe closes, the
//! shell reads end of file and exits.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::AsyncWriteExt;
use tokio::process::{Child, ChildStdin};

use super::process::GroupGuard;
use super::{RunLimits, RunSpec, Start, build_command};

/// What the shell runs before the command when held: wait for the gate's
/// line (end of file: exit without running it), then give the command
/// the empty stdin every run gets. On the command's own first line, so
/// the line numbers in the shell's messages stay the command's.
pub(super) const GATE: &str = "read -r _ || exit 125; exec </dev/null; ";

/// How many shells a worker may hold at their gates at once. Each holds
/// three of the worker's file descriptors (the gate and two output pipes)
/// and a process; a burst of 5,000 ticks must not take them all.
#[derive(Debug, Clone)]
pub struct AheadBudget {
    held: Arc<AtomicUsize>,
    limit: usize,
}

/// At most this many held shells, whatever the open-file limit.
const MOST_HELD: usize = 4_096;

impl AheadBudget {
    pub fn new(limit: usize) -> AheadBudget {
        AheadBudget {
            held: Arc::default(),
            limit,
        }
    }

    /// An eighth of this process's open-file limit (three eighths of its
    /// descriptors), at most [`MOST_HELD`].
    pub fn for_this_process() -> AheadBudget {
        use nix::sys::resource::{Resource, getrlimit};
        let open_files = getrlimit(Resource::RLIMIT_NOFILE).map_or(1024, |(soft, _)| soft);
        AheadBudget::new(
            usize::try_from(open_files / 8)
                .unwrap_or(MOST_HELD)
                .min(MOST_HELD),
        )
    }

    fn try_hold(&self) -> Option<Hold> {
        let taken = self
            .held
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |held| {
                (held < self.limit).then_some(held + 1)
            });
        taken.ok().map(|_| Hold(self.held.clone()))
    }

    /// Shells held now.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::SeqCst)
    }
}

/// One held shell's place in the budget, given back when dropped.
struct Hold(Arc<AtomicUsize>);

impl Drop for Hold {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A run's shell, started and held at its gate.
pub struct Prepared {
    /// The run it was started for; a run of another spec starts anew.
    job: crate::job::Job,
    run_id: String,
    child: Child,
    gate: Option<ChildStdin>,
    /// Kills the group if the gate is never opened.
    guard: GroupGuard,
    _hold: Hold,
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared")
            .field("run_id", &self.run_id)
            .field("pgid", &self.guard.0)
            .finish()
    }
}

impl Prepared {
    /// Start `spec`'s shell, held at the gate; `None` if the worker holds
    /// as many as its budget allows (the run then starts its shell at the
    /// tick).
    pub fn start(spec: &RunSpec, limits: &RunLimits) -> Option<Result<Prepared, String>> {
        let hold = limits.ahead.try_hold()?;
        Some(Prepared::start_held(spec, limits, hold))
    }

    fn start_held(spec: &RunSpec, limits: &RunLimits, hold: Hold) -> Result<Prepared, String> {
        let mut child = build_command(spec, &limits.inherited_env, Start::AtGate)?
            .spawn()
            .map_err(|e| format!("cannot start sh: {e}"))?;
        let gate = child.stdin.take();
        let pgid = child.id().map_or(0, |id| id as i32);
        Ok(Prepared {
            job: spec.job.clone(),
            run_id: spec.run_id.clone(),
            child,
            gate,
            guard: GroupGuard(pgid),
            _hold: hold,
        })
    }

    /// Whether this shell was started for `spec` (same run, same job
    /// definition: a job saved in between starts its new command).
    pub fn is_for(&self, spec: &RunSpec) -> bool {
        self.run_id == spec.run_id && self.job == spec.job
    }

    pub(super) fn pgid(&self) -> i32 {
        self.guard.0
    }

    /// Let the command run; the child is then the run's to wait for.
    pub(super) async fn open(mut self) -> Child {
        if let Some(mut gate) = self.gate.take() {
            // A shell already gone (a syntax error on the command's first
            // line) ends the run with its own status and message.
            let _ = gate.write_all(b"\n").await;
        }
        self.guard.disarm();
        self.child
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::Job;

    #[tokio::test]
    async fn a_gate_closed_without_its_line_ends_the_shell_before_the_command() {
        // As when the worker dies: its end of the pipe closes.
        let dir = tempfile::tempdir().unwrap();
        let ran = dir.path().join("ran");
        let spec = RunSpec {
            job: Job::new("job1", &format!("touch {}", ran.display()), "@hourly"),
            run_id: "run-1".into(),
            worker: "w1".into(),
            plan_time: 1_000,
            schedule_time: 1_001,
            attempt: 0,
            requested_by: None,
            params: Default::default(),
            triggered_by: None,
        };
        let limits = RunLimits::default();
        let mut prepared = Prepared::start(&spec, &limits).unwrap().unwrap();
        drop(prepared.gate.take());
        let status =
            tokio::time::timeout(std::time::Duration::from_secs(10), prepared.child.wait())
                .await
                .expect("the shell ended")
                .unwrap();
        prepared.guard.disarm();
        assert_eq!(status.code(), Some(125));
        assert!(!ran.exists(), "the command ran without its gate's line");
    }

    #[test]
    fn the_budget_holds_at_most_its_limit_and_takes_back_what_is_let_go() {
        let budget = AheadBudget::new(2);
        let first = budget.try_hold().expect("one of two");
        let second = budget.try_hold().expect("two of two");
        assert!(budget.try_hold().is_none(), "a third is over the limit");
        assert_eq!(budget.held(), 2);
        drop(first);
        let third = budget.try_hold().expect("a place was given back");
        drop((second, third));
        assert_eq!(budget.held(), 0);
        assert!(AheadBudget::new(0).try_hold().is_none());
    }
}
