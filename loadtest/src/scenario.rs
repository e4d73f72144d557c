//! A scenario file (`loadtest/scenarios/<name>.json`): the cluster's shape,
//! the jobs, how long to measure, what chaos to cause, and what must hold.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub managers: usize,
    pub workers: usize,
    /// Length of the measured window (of each step, with `ramp`).
    pub duration_secs: u64,
    /// After the jobs are saved, at least this long before measuring, so
    /// every worker has taken its share.
    #[serde(default = "default_settle")]
    pub settle_secs: u64,
    /// After the window, time for the last records to reach the run log.
    #[serde(default = "default_drain")]
    pub drain_secs: u64,
    pub jobs: Vec<JobGroup>,
    #[serde(default)]
    pub chaos: Vec<Chaos>,
    #[serde(default)]
    pub expect: Expect,
    /// For `max`: runs per minute of the first job group, step by step,
    /// until a step misses a tick or breaks an expectation.
    #[serde(default)]
    pub ramp: Vec<usize>,
    /// Extra `DISTCRON_*` settings for every worker.
    #[serde(default)]
    pub worker_env: Vec<(String, String)>,
    /// Each run appends `<job> <tick> <run id>` to a ledger, and executions
    /// are counted from it as well as records from the run log.
    #[serde(default)]
    pub ledger: bool,
    /// `compare`: run APScheduler on the same jobs afterwards.
    #[serde(default)]
    pub peer: Option<crate::peer::PeerSpec>,
}

/// `count` jobs named `<prefix>-00000`...
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JobGroup {
    pub prefix: String,
    pub count: usize,
    /// One expression for every job of the group; without it, job `i`
    /// fires once a minute at second `i % 60`, spreading the group over
    /// the minute.
    #[serde(default)]
    pub cron_expr: Option<String>,
    pub command: String,
    /// How long a run takes: ticks that cannot have ended before the
    /// run log is read are left out of the verification.
    #[serde(default)]
    pub run_secs: u64,
    /// The jobs' `onLost` (`ignore` when absent).
    #[serde(default)]
    pub on_lost: Option<String>,
    /// With the ledger: each run holds a lock of its job while it runs, and
    /// a run that finds it held writes `overlap` to the ledger (two runs of
    /// one tick, or of one `forbid` job, at once).
    #[serde(default)]
    pub exclusive: bool,
}

impl JobGroup {
    pub fn name(&self, i: usize) -> String {
        format!("{}-{i:05}", self.prefix)
    }

    pub fn cron_expr(&self, i: usize) -> String {
        self.cron_expr
            .clone()
            .unwrap_or_else(|| format!("{} * * * * *", i % 60))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Chaos {
    /// Seconds into the measured window.
    pub at_secs: u64,
    pub action: ChaosAction,
    /// Which worker (index), for the worker actions.
    #[serde(default)]
    pub worker: usize,
    /// How long a stop lasts.
    #[serde(default)]
    pub for_secs: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ChaosAction {
    /// SIGKILL a worker; it stays down, or starts again (same id) after
    /// `forSecs` when that is set.
    KillWorker,
    /// Stop every worker in turn gracefully (SIGTERM) and start it again,
    /// `forSecs` apart: a rolling restart.
    RollingRestart,
    /// Start one more worker.
    AddWorker,
    /// SIGKILL every etcd member; they start again after `forSecs`.
    StopEtcd,
    /// SIGSTOP a worker for `forSecs`, then SIGCONT.
    StopWorker,
    /// SIGKILL the etcd leader; it restarts 10 s later with its data.
    KillEtcdLeader,
    /// SIGKILL the run log's server; it restarts after `forSecs`.
    StopLogStore,
}

/// What the run must show; the harness exits 1 when any is broken.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Expect {
    #[serde(default)]
    pub max_missing: u64,
    #[serde(default)]
    pub max_duplicates: u64,
    /// Runs that did not succeed (failed, timed out, killed, lost).
    #[serde(default = "unlimited")]
    pub max_failed: u64,
    #[serde(default)]
    pub max_p99_ms: Option<i64>,
    /// Every run started within this long of its tick.
    #[serde(default)]
    pub max_lateness_ms: Option<i64>,
    /// With chaos: ticks missed outside the failover windows.
    #[serde(default)]
    pub max_missing_outside_chaos: u64,
    /// With a ledger: executions the run log has no record of (unchecked
    /// when absent).
    #[serde(default)]
    pub max_executions_without_record: Option<u64>,
    /// With a ledger: planned ticks with neither an execution nor a record
    /// saying why not (unchecked when absent).
    #[serde(default)]
    pub max_ticks_without_execution_or_record: Option<u64>,
}

impl Default for Expect {
    fn default() -> Expect {
        Expect {
            max_missing: 0,
            max_duplicates: 0,
            max_failed: u64::MAX,
            max_p99_ms: None,
            max_lateness_ms: None,
            max_missing_outside_chaos: 0,
            max_executions_without_record: None,
            max_ticks_without_execution_or_record: None,
        }
    }
}

fn default_settle() -> u64 {
    20
}

fn default_drain() -> u64 {
    10
}

fn unlimited() -> u64 {
    u64::MAX
}

/// `name` is a file, or a scenario in `loadtest/scenarios/`.
pub fn load(name: &str, scenarios_dir: &Path) -> Result<Scenario, String> {
    let path = if Path::new(name).is_file() {
        PathBuf::from(name)
    } else {
        scenarios_dir.join(format!("{name}.json"))
    };
    let text =
        std::fs::read_to_string(&path).map_err(|e| format!("scenario {}: {e}", path.display()))?;
    let scenario: Scenario =
        serde_json::from_str(&text).map_err(|e| format!("scenario {}: {e}", path.display()))?;
    if scenario.workers == 0 || scenario.managers == 0 {
        return Err(format!(
            "scenario {}: needs at least one manager and one worker",
            path.display()
        ));
    }
    let targets_a_worker =
        |a: ChaosAction| matches!(a, ChaosAction::KillWorker | ChaosAction::StopWorker);
    if let Some(bad) = scenario
        .chaos
        .iter()
        .find(|c| c.worker >= scenario.workers && targets_a_worker(c.action))
    {
        return Err(format!(
            "scenario {}: chaos at {} s names worker {}, but there are {}",
            path.display(),
            bad.at_secs,
            bad.worker,
            scenario.workers
        ));
    }
    Ok(scenario)
}
