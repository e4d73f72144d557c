//! The fence process (`distcron __fence`) on real processes: it kills the
//! groups it holds when the worker's word runs out, and when its input ends
//! it waits for the last deadline first.

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn fence() -> Reaped {
    Reaped(
        Command::new(env!("CARGO_BIN_EXE_distcron"))
            .arg("__fence")
            .stdin(Stdio::piped())
            .spawn()
            .expect("start the fence"),
    )
}

/// A long command in a process group of its own, as a run is.
fn run() -> Reaped {
    Reaped(
        Command::new("sleep")
            .arg("600")
            .process_group(0)
            .spawn()
            .expect("start sleep"),
    )
}

/// How long after `since` the process ended; fails after `limit`.
fn ended_after(child: &mut Reaped, since: Instant, limit: Duration) -> Duration {
    loop {
        if child.0.try_wait().expect("wait").is_some() {
            return since.elapsed();
        }
        assert!(since.elapsed() < limit, "still running after {limit:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_silent_worker_s_runs_are_killed_at_its_deadline_and_not_before() {
    let mut fence = fence();
    let mut guarded = run();
    let mut released = run();
    let stdin = fence.0.stdin.as_mut().unwrap();
    let start = Instant::now();
    writeln!(stdin, "add {}", guarded.0.id()).unwrap();
    writeln!(stdin, "add {}", released.0.id()).unwrap();
    writeln!(stdin, "remove {}", released.0.id()).unwrap();
    writeln!(stdin, "alive 600").unwrap();
    stdin.flush().unwrap();
    let after = ended_after(&mut guarded, start, Duration::from_secs(5));
    assert!(
        after >= Duration::from_millis(550),
        "killed after {after:?}, before its deadline"
    );
    assert!(
        released.0.try_wait().unwrap().is_none(),
        "a group removed from the fence is left alone"
    );
}

#[test]
fn when_the_worker_dies_the_fence_waits_for_the_deadline_then_kills_and_exits() {
    let mut fence = fence();
    let mut guarded = run();
    let start = Instant::now();
    {
        let mut stdin = fence.0.stdin.take().unwrap();
        writeln!(stdin, "add {}", guarded.0.id()).unwrap();
        writeln!(stdin, "alive 500").unwrap();
    } // input closed: the worker is gone
    let after = ended_after(&mut guarded, start, Duration::from_secs(5));
    assert!(
        after >= Duration::from_millis(450),
        "killed after {after:?}"
    );
    ended_after(&mut fence, start, Duration::from_secs(5));
}
