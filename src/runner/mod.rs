//! Runner: one run of a job, from process start to run record.
//!
//! `sh -c COMMAND` in a new process group, stdin from /dev/null, the job's
//! environment plus `DISTCRON_JOB`, `DISTCRON_TICK` and `DISTCRON_RUN_ID`;
//! stdout and stderr captured together up to a cap. A timeout or a kill
//! request ends the whole group (SIGTERM, then SIGKILL after a grace), so
//! grandchildren go too; processes a finished command left behind in its
//! group are ended the same way, and every one is reaped.

pub mod fence;
mod gate;
pub mod launcher;
pub mod live;
pub mod process;
pub mod slots;

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;
use tokio::sync::watch;

use crate::clock::SharedClock;
use crate::job::Job;
use crate::runlog::{RunRecord, RunStatus};
pub use gate::{AheadBudget, Prepared};
pub use live::LiveOutput;

/// Everything that identifies one run.
#[derive(Debug, Clone)]
pub struct RunSpec {
    pub job: Job,
    pub run_id: String,
    pub worker: String,
    /// The tick (epoch ms).
    pub plan_time: i64,
    /// When the tick was claimed (epoch ms).
    pub schedule_time: i64,
    /// 0 for the first attempt, then 1, 2... for retries.
    pub attempt: u32,
    /// Who asked for the run, when a person did (`POST /job/run`).
    pub requested_by: Option<String>,
    /// `env` overrides the run was asked with; already merged into
    /// `job.env`, kept here for the record.
    pub params: std::collections::BTreeMap<String, String>,
    /// The run whose end started this one (a job chain).
    pub triggered_by: Option<String>,
}

/// Limits that apply to every run of a worker.
#[derive(Debug, Clone)]
pub struct RunLimits {
    /// The part of the worker's own environment a command gets (the
    /// `jobEnvAllowlist` variables that are set); nothing else of it.
    pub inherited_env: Arc<Vec<(String, String)>>,
    pub output_cap: usize,
    /// Between SIGTERM and SIGKILL.
    pub kill_grace: Duration,
    /// How long to keep reading output after the command exited, for
    /// processes it left behind that still hold the pipe.
    pub output_linger: Duration,
    /// The worker's fence, told of every run's process group.
    pub fence: Option<fence::Fence>,
    /// How many runs may go at once (`maxConcurrentRuns`, `maxConcurrent`).
    pub slots: slots::RunSlots,
    /// Where runs execute (off the actors' thread in a worker).
    pub launcher: launcher::Launcher,
    /// How many shells may wait at their gates, started ahead of their
    /// ticks ([`Prepared`]).
    pub ahead: AheadBudget,
}

impl Default for RunLimits {
    fn default() -> RunLimits {
        RunLimits {
            inherited_env: Arc::new(inherited_env(&["PATH", "HOME", "LANG", "TZ"])),
            output_cap: crate::runlog::DEFAULT_OUTPUT_CAP,
            kill_grace: Duration::from_secs(5),
            output_linger: Duration::from_millis(200),
            fence: None,
            slots: slots::RunSlots::default(),
            launcher: launcher::Launcher::default(),
            ahead: AheadBudget::for_this_process(),
        }
    }
}

/// The allowlisted variables of this process's environment that are set.
pub fn inherited_env(allowlist: &[impl AsRef<str>]) -> Vec<(String, String)> {
    allowlist
        .iter()
        .filter_map(|name| {
            let name = name.as_ref();
            std::env::var(name).ok().map(|v| (name.to_string(), v))
        })
        .collect()
}

/// The command for a run, without starting it. Its environment is built
/// from nothing: the allowlisted variables, the job's `env`, then the run's
/// `DISTCRON_*` variables, so the worker's own secrets never reach a job.
/// An error says why the run cannot start (a `runAs` the worker cannot use).
/// The shell every command runs under, by absolute path: with `PATH` in
/// the child's environment and a bare `sh`, std cannot use `posix_spawn`
/// and forks instead, copying the worker's page tables for every start
/// (a third of a worker's CPU in a burst of 5,000, by `perf`).
pub const SHELL: &str = "/bin/sh";

/// When a command's shell goes on to the command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// At once.
    Now,
    /// Once its gate is opened ([`Prepared`]).
    AtGate,
}

pub fn build_command(
    spec: &RunSpec,
    inherited: &[(String, String)],
    start: Start,
) -> Result<Command, String> {
    let (text, stdin) = match start {
        Start::Now => (spec.job.command.clone(), Stdio::null()),
        Start::AtGate => (
            format!("{}{}", gate::GATE, spec.job.command),
            Stdio::piped(),
        ),
    };
    let mut command = Command::new(SHELL);
    command
        .arg("-c")
        .arg(text)
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .env_clear()
        .envs(inherited.iter().map(|(k, v)| (k, v)));
    if let Some(user) = &spec.job.run_as {
        let identity = process::switch_user(user, &spec.worker)?;
        command
            .env("HOME", &identity.home)
            .env("USER", user)
            .env("LOGNAME", user);
        process::become_on_exec(&mut command, identity);
    }
    command
        .envs(&spec.job.env)
        .env("DISTCRON_JOB", &spec.job.name)
        .env("DISTCRON_TICK", spec.plan_time.to_string())
        .env("DISTCRON_RUN_ID", &spec.run_id);
    if let Some(dir) = &spec.job.workdir {
        command.current_dir(dir);
    }
    Ok(command)
}

/// Job name -> run id -> the run's kill switch (`Some(reason)` ends it).
type RunsByJob = HashMap<String, HashMap<String, watch::Sender<Option<String>>>>;

/// Runs in progress on this worker, by job, with a way to kill each, and
/// their output so far, by run id, for followers.
#[derive(Clone, Default)]
pub struct RunningRuns {
    inner: Arc<Mutex<RunsByJob>>,
    live: Arc<Mutex<HashMap<String, Arc<LiveOutput>>>>,
}

impl RunningRuns {
    fn register(
        &self,
        job: &str,
        run_id: &str,
        output_cap: usize,
    ) -> (watch::Receiver<Option<String>>, Arc<LiveOutput>) {
        let (tx, rx) = watch::channel(None);
        self.lock()
            .entry(job.to_string())
            .or_default()
            .insert(run_id.to_string(), tx);
        let output = Arc::new(LiveOutput::new(run_id, output_cap));
        self.live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(run_id.to_string(), output.clone());
        (rx, output)
    }

    fn unregister(&self, job: &str, run_id: &str) {
        let mut runs = self.lock();
        if let Some(of_job) = runs.get_mut(job) {
            of_job.remove(run_id);
            if of_job.is_empty() {
                runs.remove(job);
            }
        }
    }

    /// Its output stops being offered to new followers (those following
    /// keep their handle until they have read it all).
    fn unpublish(&self, run_id: &str) {
        self.live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(run_id);
    }

    /// The output of run `run_id`, while it runs here.
    pub fn follow(&self, run_id: &str) -> Option<Arc<LiveOutput>> {
        self.live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(run_id)
            .cloned()
    }

    /// Ask every run of `job` to end; returns how many were asked.
    pub fn kill(&self, job: &str, reason: &str) -> usize {
        let runs = self.lock();
        let Some(of_job) = runs.get(job) else {
            return 0;
        };
        for tx in of_job.values() {
            let _ = tx.send(Some(reason.to_string()));
        }
        of_job.len()
    }

    /// Ask every run of every job to end.
    pub fn kill_all(&self, reason: &str) {
        for of_job in self.lock().values() {
            for tx in of_job.values() {
                let _ = tx.send(Some(reason.to_string()));
            }
        }
    }

    pub fn count(&self, job: &str) -> usize {
        self.lock().get(job).map_or(0, HashMap::len)
    }

    pub fn total(&self) -> usize {
        self.lock().values().map(HashMap::len).sum()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RunsByJob> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What the runner hands back while a run starts: its process group, so the
/// caller can register the run (`running/` key) before waiting.
pub struct Started {
    pub pgid: i32,
}

/// Run `spec` to completion and describe it as a run record: in the shell
/// `prepared` for it, if there is one, else in one started now.
/// `on_start` is called once the process exists.
pub async fn run(
    spec: RunSpec,
    prepared: Option<Prepared>,
    limits: RunLimits,
    clock: SharedClock,
    running: RunningRuns,
    on_start: impl FnOnce(Started),
) -> RunRecord {
    let start_time = clock.now_ms();
    let mut record = RunRecord {
        run_id: spec.run_id.clone(),
        job_name: spec.job.name.clone(),
        command: spec.job.command.clone(),
        worker: spec.worker.clone(),
        plan_time: spec.plan_time,
        schedule_time: spec.schedule_time,
        start_time,
        end_time: start_time,
        status: RunStatus::Failed,
        exit_code: None,
        signal: None,
        output: String::new(),
        truncated: false,
        err: String::new(),
        requested_by: spec.requested_by.clone(),
        params: spec.params.clone(),
        triggered_by: spec.triggered_by.clone(),
    };
    let (mut kill_rx, output) = running.register(&spec.job.name, &spec.run_id, limits.output_cap);
    // A prepared shell is fenced before its gate opens; one started now,
    // right after its start.
    let spawned = match prepared {
        Some(prepared) => {
            if let Some(fence) = &limits.fence {
                fence.add(prepared.pgid());
            }
            Ok(prepared.open().await)
        }
        None => build_command(&spec, &limits.inherited_env, Start::Now)
            .and_then(|mut c| c.spawn().map_err(|e| format!("cannot start sh: {e}")))
            .inspect(|child| {
                if let Some(fence) = &limits.fence {
                    fence.add(child.id().map_or(0, |id| id as i32));
                }
            }),
    };
    let mut child = match spawned {
        Ok(child) => child,
        Err(error) => {
            running.unregister(&spec.job.name, &spec.run_id);
            running.unpublish(&spec.run_id);
            tracing::warn!(job = %spec.job.name, run_id = %spec.run_id, %error, "run could not start");
            record.err = error;
            record.end_time = clock.now_ms();
            output.finish(&record);
            return record;
        }
    };
    let pgid = child.id().map_or(0, |id| id as i32);
    let mut abandoned = process::GroupGuard(pgid);
    on_start(Started { pgid });

    let readers = [
        child
            .stdout
            .take()
            .map(|s| tokio::spawn(capture(s, output.clone()))),
        child
            .stderr
            .take()
            .map(|s| tokio::spawn(capture(s, output.clone()))),
    ];

    let timeout = spec.job.timeout.map(Duration::from_secs);
    let deadline = async {
        match timeout {
            Some(t) => tokio::time::sleep(t).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(deadline);
    let mut ended_by: Option<(RunStatus, String)> = None;
    let status = loop {
        tokio::select! {
            status = child.wait() => break status,
            _ = &mut deadline, if ended_by.is_none() => {
                let t = timeout.unwrap_or_default();
                ended_by = Some((RunStatus::TimedOut, format!("timed out after {}s", t.as_secs())));
                let grace = limits.kill_grace;
                tokio::spawn(process::terminate_group(pgid, grace));
            }
            changed = kill_rx.changed(), if ended_by.is_none() => {
                if changed.is_ok() && let Some(reason) = kill_rx.borrow().clone() {
                    ended_by = Some((RunStatus::Killed, reason));
                    tokio::spawn(process::terminate_group(pgid, limits.kill_grace));
                }
            }
        }
    };
    // Processes the command left in its group end with the run.
    process::terminate_group(pgid, limits.kill_grace).await;
    process::reap_group(pgid);
    abandoned.disarm();
    if let Some(fence) = &limits.fence {
        fence.remove(pgid);
    }
    for reader in readers.into_iter().flatten() {
        if tokio::time::timeout(limits.output_linger, reader)
            .await
            .is_err()
        {
            tracing::debug!(job = %spec.job.name, run_id = %spec.run_id, "output still held open after the run; cut");
        }
    }
    running.unregister(&spec.job.name, &spec.run_id);

    record.end_time = clock.now_ms();
    (record.output, record.truncated) = output.text();
    match status {
        Ok(status) => {
            use std::os::unix::process::ExitStatusExt;
            record.exit_code = status.code();
            record.signal = status.signal();
            record.status = match &ended_by {
                Some((status, _)) => *status,
                None if status.success() => RunStatus::Succeeded,
                None => RunStatus::Failed,
            };
        }
        Err(error) => record.err = format!("cannot wait for the command: {error}"),
    }
    if let Some((_, reason)) = ended_by {
        record.err = reason;
    }
    output.finish(&record);
    running.unpublish(&spec.run_id);
    record
}

async fn capture(mut stream: impl AsyncRead + Unpin, into: Arc<LiveOutput>) {
    let mut buf = [0u8; 8192];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => into.push(&buf[..n]),
        }
    }
}

#[cfg(test)]
mod tests;
