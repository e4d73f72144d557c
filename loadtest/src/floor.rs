//! The machine's floor: how fast this machine starts, captures and reaps
//! the scenarios' command (`true`) with nothing else running, measured
//! before each scenario, so every figure of a run is read against what the
//! machine can do at all (issue M).
//!
//! Each start is what a worker does for a run: `sh -c true` in a process
//! group of its own, stdout and stderr piped and read to their end, then
//! reaped; spawned from as many threads as a worker spawns from (one,
//! today). Two measurements: a burst of as many starts as the scenario asks
//! in one second (start lateness: burst begin to each spawn's return), and
//! a batch of [`THROUGHPUT_BATCH`] starts (runs a minute).

use std::process::{Command, Stdio};
use std::time::Instant;

use serde::Serialize;

use crate::scenario::Scenario;

/// Starts in the throughput batch: enough that the rate is not the
/// first fork's.
pub const THROUGHPUT_BATCH: usize = 5_000;
/// Threads spawning at once: as many as a worker's default `runThreads`
/// (before issue M, the one actor thread).
pub fn worker_spawn_threads() -> usize {
    distcron::runner::launcher::default_threads()
}

/// How a process is started: std's default, which is `posix_spawn` (a
/// `vfork`-style clone that copies no page tables) when nothing must run
/// in the child; or `fork` then `exec`, which any hook in the child (such
/// as `runAs`) forces, and which a pre-forked helper process also does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum SpawnPath {
    PosixSpawn,
    ForkExec,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Percentiles {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Burst {
    pub starts: usize,
    pub threads: usize,
    /// Burst begin to each spawn's return.
    pub lateness: Percentiles,
    /// Until the last process was reaped.
    pub elapsed_ms: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Floor {
    /// The scenario's busiest second.
    pub burst: Burst,
    /// The throughput batch.
    pub batch: Burst,
    /// The same batch started with fork and exec: what a worker would pay
    /// without `posix_spawn` (the faster one is what workers use).
    #[serde(default)]
    pub batch_fork_exec: Option<Burst>,
    /// Runs a minute the batch shows the machine can spawn and reap.
    pub runs_per_minute: f64,
}

/// Nearest-rank percentiles of `samples` (any order). Pure.
pub fn percentiles(mut samples: Vec<f64>) -> Percentiles {
    if samples.is_empty() {
        return Percentiles {
            p50_ms: 0.0,
            p99_ms: 0.0,
            max_ms: 0.0,
        };
    }
    samples.sort_by(f64::total_cmp);
    let rank = |p: f64| {
        let i = ((p * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
        samples[i - 1]
    };
    Percentiles {
        p50_ms: rank(0.50),
        p99_ms: rank(0.99),
        max_ms: samples[samples.len() - 1],
    }
}

/// Runs a minute from `starts` done in `elapsed_ms`. Pure.
pub fn runs_per_minute(starts: usize, elapsed_ms: f64) -> f64 {
    if elapsed_ms <= 0.0 {
        return 0.0;
    }
    starts as f64 * 60_000.0 / elapsed_ms
}

/// A scenario's rate as a fraction of the floor's. Pure.
pub fn fraction_of_floor(runs_per_minute: f64, floor: &Floor) -> f64 {
    if floor.runs_per_minute <= 0.0 {
        return 0.0;
    }
    runs_per_minute / floor.runs_per_minute
}

/// How far a scenario's lateness p99 is above the floor's for its busiest
/// second, in ms (negative: below it). Pure.
pub fn p99_over_floor_ms(p99_ms: f64, floor: &Floor) -> f64 {
    p99_ms - floor.burst.lateness.p99_ms
}

/// Starts the scenario asks for in its busiest second: a group spread over
/// the minute adds `count / 60` (rounded up) a second; a group on its own
/// expression starts all at once, and counts when no group is spread (a
/// burst scenario). A ramp's top rate stands for its first group. Pure.
pub fn busiest_second(scenario: &Scenario) -> usize {
    let mut spread = 0;
    let mut together = 0;
    for (i, group) in scenario.jobs.iter().enumerate() {
        let count = match (i, scenario.ramp.iter().max()) {
            (0, Some(top)) => *top,
            _ => group.count,
        };
        if group.cron_expr.is_none() {
            spread += count.div_ceil(60);
        } else {
            together += count;
        }
    }
    if spread > 0 { spread } else { together.max(1) }
}

/// Start `starts` runs of `sh -c true` from `threads` threads at once,
/// then read each one's output to its end and reap it.
pub fn measure_burst(starts: usize, threads: usize, path: SpawnPath) -> std::io::Result<Burst> {
    use std::os::unix::process::CommandExt;
    let threads = threads.clamp(1, starts.max(1));
    let begin = Instant::now();
    let per_thread = starts.div_ceil(threads);
    let results: Vec<std::io::Result<Vec<f64>>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let mine = per_thread.min(starts.saturating_sub(t * per_thread));
                scope.spawn(move || {
                    let mut children = Vec::with_capacity(mine);
                    let mut spawned = Vec::with_capacity(mine);
                    for _ in 0..mine {
                        let mut command = Command::new("/bin/sh");
                        command
                            .args(["-c", "true"])
                            .stdin(Stdio::null())
                            .stdout(Stdio::piped())
                            .stderr(Stdio::piped())
                            .process_group(0);
                        if path == SpawnPath::ForkExec {
                            // SAFETY: the hook does nothing; its presence
                            // makes std fork and exec.
                            unsafe {
                                command.pre_exec(|| Ok(()));
                            }
                        }
                        let child = command.spawn()?;
                        spawned.push(begin.elapsed().as_secs_f64() * 1000.0);
                        children.push(child);
                    }
                    for child in children {
                        child.wait_with_output()?;
                    }
                    Ok(spawned)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(std::io::Error::other("a spawning thread panicked")))
            })
            .collect()
    });
    let mut lateness = Vec::with_capacity(starts);
    for result in results {
        lateness.extend(result?);
    }
    Ok(Burst {
        starts,
        threads,
        lateness: percentiles(lateness),
        elapsed_ms: begin.elapsed().as_secs_f64() * 1000.0,
    })
}

/// The floor for `scenario`, measured now.
pub fn measure(scenario: &Scenario) -> std::io::Result<Floor> {
    let threads = worker_spawn_threads();
    let burst = measure_burst(busiest_second(scenario), threads, SpawnPath::PosixSpawn)?;
    let batch = measure_burst(THROUGHPUT_BATCH, threads, SpawnPath::PosixSpawn)?;
    let fork_exec = measure_burst(THROUGHPUT_BATCH, threads, SpawnPath::ForkExec)?;
    Ok(Floor {
        runs_per_minute: runs_per_minute(batch.starts, batch.elapsed_ms),
        burst,
        batch,
        batch_fork_exec: Some(fork_exec),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scenario(json: &str) -> Scenario {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let samples: Vec<f64> = (1..=100).map(f64::from).collect();
        let p = percentiles(samples.into_iter().rev().collect());
        assert_eq!((p.p50_ms, p.p99_ms, p.max_ms), (50.0, 99.0, 100.0));
        let one = percentiles(vec![7.0]);
        assert_eq!((one.p50_ms, one.p99_ms, one.max_ms), (7.0, 7.0, 7.0));
        assert_eq!(percentiles(Vec::new()).max_ms, 0.0);
    }

    #[test]
    fn rates_and_comparisons_with_the_floor() {
        assert_eq!(runs_per_minute(5_000, 2_000.0), 150_000.0);
        assert_eq!(runs_per_minute(10, 0.0), 0.0);
        let floor = Floor {
            burst: Burst {
                starts: 167,
                threads: 1,
                lateness: Percentiles {
                    p50_ms: 20.0,
                    p99_ms: 40.0,
                    max_ms: 41.0,
                },
                elapsed_ms: 60.0,
            },
            batch: Burst {
                starts: 5_000,
                threads: 1,
                lateness: percentiles(vec![1.0]),
                elapsed_ms: 3_000.0,
            },
            batch_fork_exec: None,
            runs_per_minute: 100_000.0,
        };
        assert_eq!(fraction_of_floor(85_000.0, &floor), 0.85);
        assert_eq!(p99_over_floor_ms(61.0, &floor), 21.0);
        assert_eq!(p99_over_floor_ms(30.0, &floor), -10.0);
    }

    #[test]
    fn the_busiest_second_of_each_scenario_shape() {
        let seed = scenario(
            r#"{"name": "s", "managers": 1, "workers": 1, "durationSecs": 60, "jobs": [
                {"prefix": "tick", "count": 10000, "command": "true"},
                {"prefix": "long", "count": 10, "cronExpr": "0 */5 * * * *", "command": "sleep 120"}]}"#,
        );
        assert_eq!(busiest_second(&seed), 167);
        let burst = scenario(
            r#"{"name": "b", "managers": 1, "workers": 1, "durationSecs": 60, "jobs": [
                {"prefix": "b", "count": 5000, "cronExpr": "0 * * * * *", "command": "true"}]}"#,
        );
        assert_eq!(busiest_second(&burst), 5_000);
        let ramp = scenario(
            r#"{"name": "m", "managers": 1, "workers": 1, "durationSecs": 60, "ramp": [30000, 90000],
                "jobs": [{"prefix": "m", "count": 0, "command": "true"}]}"#,
        );
        assert_eq!(busiest_second(&ramp), 1_500);
    }

    #[test]
    fn a_small_burst_is_measured() {
        for path in [SpawnPath::PosixSpawn, SpawnPath::ForkExec] {
            let burst = measure_burst(20, 2, path).unwrap();
            assert_eq!((burst.starts, burst.threads), (20, 2), "{path:?}");
            assert!(burst.lateness.p50_ms <= burst.lateness.p99_ms, "{path:?}");
            assert!(burst.lateness.max_ms <= burst.elapsed_ms, "{path:?}");
        }
    }
}
