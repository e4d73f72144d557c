//! Real processes: `sh`, signals and process groups.

use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::clock::SystemClock;

fn spec(command: &str) -> RunSpec {
    RunSpec {
        params: Default::default(),
        triggered_by: None,
        job: Job::new("job1", command, "@hourly"),
        run_id: "run-1".into(),
        worker: "w1".into(),
        plan_time: 1_000,
        schedule_time: 1_001,
        attempt: 0,
        requested_by: None,
    }
}

fn limits() -> RunLimits {
    RunLimits {
        kill_grace: Duration::from_millis(500),
        ..RunLimits::default()
    }
}

async fn run_spec(spec: RunSpec, running: RunningRuns) -> (RunRecord, i32) {
    let mut pgid = 0;
    let record = run(spec, None, limits(), Arc::new(SystemClock), running, |s| {
        pgid = s.pgid
    })
    .await;
    (record, pgid)
}

/// Every process whose process group is `pgid`, zombies included.
fn processes_in_group(pgid: i32) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // Fields after the parenthesised command: state ppid pgrp ...
        let Some(rest) = stat.rsplit_once(") ").map(|(_, r)| r) else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.get(2).and_then(|p| p.parse::<i32>().ok()) == Some(pgid) {
            found.push(stat);
        }
    }
    found
}

#[test]
fn build_command_sets_shell_environment_and_directory() {
    let mut s = spec("echo hi");
    s.job.env.insert("GREETING".into(), "hello".into());
    s.job.workdir = Some("/tmp".into());
    let inherited = [("PATH".to_string(), "/usr/bin:/bin".to_string())];
    let command = build_command(&s, &inherited, Start::Now).unwrap();
    let std = command.as_std();
    // By absolute path: with a bare name and PATH in the child's environment,
    // std forks instead of using posix_spawn.
    assert_eq!(std.get_program(), "/bin/sh");
    assert_eq!(std.get_args().collect::<Vec<_>>(), ["-c", "echo hi"]);
    let envs: Vec<(String, String)> = std
        .get_envs()
        .map(|(k, v)| {
            (
                k.to_string_lossy().into(),
                v.unwrap().to_string_lossy().into(),
            )
        })
        .collect();
    for pair in [
        ("GREETING", "hello"),
        ("DISTCRON_JOB", "job1"),
        ("DISTCRON_TICK", "1000"),
        ("DISTCRON_RUN_ID", "run-1"),
    ] {
        assert!(
            envs.contains(&(pair.0.into(), pair.1.into())),
            "{pair:?} in {envs:?}"
        );
    }
    assert_eq!(std.get_current_dir(), Some(std::path::Path::new("/tmp")));
    assert!(envs.contains(&("PATH".into(), "/usr/bin:/bin".into())));
}

#[tokio::test]
async fn a_run_sees_none_of_the_workers_own_environment() {
    // The worker's secrets (set here as a stand-in) never reach a job.
    // SAFETY: set before the runs below and never read concurrently.
    unsafe { std::env::set_var("DISTCRON_ETCD_PASSWORD", "hunter2-secret") };
    let mut s = spec("env");
    s.job.env.insert("MINE".into(), "yes".into());
    let (record, _) = run_spec(s, RunningRuns::default()).await;
    assert_eq!(record.status, RunStatus::Succeeded, "{}", record.err);
    assert!(
        !record.output.contains("hunter2-secret"),
        "{}",
        record.output
    );
    assert!(record.output.contains("MINE=yes"), "{}", record.output);
    let names: Vec<&str> = record
        .output
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, _)| k))
        .collect();
    for name in names {
        assert!(
            ["PATH", "HOME", "LANG", "TZ", "MINE", "PWD", "SHLVL", "_"].contains(&name)
                || name.starts_with("DISTCRON_") && name != "DISTCRON_ETCD_PASSWORD",
            "{name} leaked into the job's environment: {}",
            record.output
        );
    }
}

#[test]
fn run_as_an_unknown_user_is_a_clear_error() {
    let mut s = spec("true");
    s.job.run_as = Some("no-such-user-distcron".into());
    let err = build_command(&s, &[], Start::Now).unwrap_err();
    assert_eq!(
        err,
        format!(
            "runAs: user 'no-such-user-distcron' does not exist on worker {}",
            s.worker
        )
    );
}

#[tokio::test]
async fn run_as_runs_the_command_as_that_user() {
    if !nix::unistd::geteuid().is_root() {
        // Switching users needs root; a non-root worker refuses with a
        // clear error instead, which this checks.
        let mut s = spec("id -un");
        s.job.run_as = Some("nobody".into());
        let err = build_command(&s, &[], Start::Now).unwrap_err();
        assert!(err.contains("cannot switch to user 'nobody'"), "{err}");
        return;
    }
    let mut s = spec("id -un; id -G; echo $HOME");
    s.job.run_as = Some("nobody".into());
    let (record, _) = run_spec(s, RunningRuns::default()).await;
    assert_eq!(record.status, RunStatus::Succeeded, "{}", record.err);
    let lines: Vec<&str> = record.output.lines().collect();
    assert_eq!(lines[0], "nobody", "{}", record.output);
    assert!(
        !lines[1].split(' ').any(|g| g == "0"),
        "no root group: {}",
        lines[1]
    );
}

#[tokio::test]
async fn a_successful_run_records_output_and_environment() {
    let (record, _) = run_spec(
        spec(
            "echo out; echo err >&2; echo $DISTCRON_JOB $DISTCRON_RUN_ID; read x || echo no-stdin",
        ),
        RunningRuns::default(),
    )
    .await;
    assert_eq!(record.status, RunStatus::Succeeded);
    assert_eq!(record.exit_code, Some(0));
    for line in ["out", "err", "job1 run-1", "no-stdin"] {
        assert!(
            record.output.contains(line),
            "{line} in {:?}",
            record.output
        );
    }
    assert!(!record.truncated);
    assert!(record.end_time >= record.start_time);
}

#[tokio::test]
async fn a_failing_command_records_its_exit_code() {
    let (record, _) = run_spec(spec("exit 3"), RunningRuns::default()).await;
    assert_eq!(
        (record.status, record.exit_code),
        (RunStatus::Failed, Some(3))
    );
}

#[tokio::test]
async fn output_past_the_cap_is_cut_and_flagged() {
    let mut l = limits();
    l.output_cap = 1000;
    let record = run(
        spec("head -c 5000 /dev/zero | tr '\\0' x"),
        None,
        l,
        Arc::new(SystemClock),
        RunningRuns::default(),
        |_| {},
    )
    .await;
    assert_eq!(record.output.len(), 1000);
    assert!(record.truncated);
}

#[tokio::test]
async fn a_timeout_ends_the_run_as_timed_out() {
    let mut s = spec("sleep 30");
    s.job.timeout = Some(1);
    let (record, pgid) = run_spec(s, RunningRuns::default()).await;
    assert_eq!(record.status, RunStatus::TimedOut);
    assert_eq!(record.err, "timed out after 1s");
    assert!(processes_in_group(pgid).is_empty());
}

#[tokio::test]
async fn kill_reaches_grandchildren_that_trap_sigterm_and_leaves_no_zombies() {
    process::become_subreaper();
    let running = RunningRuns::default();
    // The shell and two grandchildren ignore SIGTERM; only SIGKILL ends them.
    // Each grandchild leaves a mark once its trap is set.
    let marks = tempfile::tempdir().unwrap();
    let (m1, m2) = (marks.path().join("m1"), marks.path().join("m2"));
    let command = format!(
        "trap '' TERM; (trap '' TERM; touch {m1}; sleep 300) & (sh -c \"trap '' TERM; touch {m2}; sleep 300\") & echo started; wait",
        m1 = m1.display(),
        m2 = m2.display()
    );
    let task = tokio::spawn(run_spec(spec(&command), running.clone()));
    // Wait until the run is registered and both grandchildren are set up.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while running.count("job1") == 0 || !m1.exists() || !m2.exists() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the run and its grandchildren did not start within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(running.kill("job1", "killed by operator"), 1);
    let (record, pgid) = tokio::time::timeout(Duration::from_secs(20), task)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.status, RunStatus::Killed);
    assert_eq!(record.err, "killed by operator");
    assert_eq!(
        record.signal,
        Some(9),
        "the shell ignored SIGTERM: SIGKILL ended it"
    );
    assert!(record.output.contains("started"));
    assert_eq!(
        processes_in_group(pgid),
        Vec::<String>::new(),
        "nothing of the group survives, not even a zombie"
    );
    assert_eq!(running.total(), 0);
}

#[tokio::test]
async fn background_processes_end_with_their_run() {
    process::become_subreaper();
    let (record, pgid) = run_spec(spec("sleep 300 & echo done"), RunningRuns::default()).await;
    assert_eq!(record.status, RunStatus::Succeeded);
    assert!(processes_in_group(pgid).is_empty());
}

#[tokio::test]
async fn a_command_that_cannot_start_is_recorded_with_the_reason() {
    let mut s = spec("true");
    s.job.workdir = Some("/nonexistent/dir".into());
    let (record, _) = run_spec(s, RunningRuns::default()).await;
    assert_eq!(record.status, RunStatus::Failed);
    assert!(record.err.starts_with("cannot start sh"), "{}", record.err);
}

#[tokio::test]
async fn an_abandoned_run_takes_its_process_group_with_it() {
    process::become_subreaper();
    let running = RunningRuns::default();
    let (pgid_tx, pgid_rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(run(
        spec("sleep 600 & sleep 600"),
        None,
        limits(),
        Arc::new(SystemClock),
        running.clone(),
        move |s| {
            let _ = pgid_tx.send(s.pgid);
        },
    ));
    let pgid = tokio::time::timeout(Duration::from_secs(10), pgid_rx)
        .await
        .expect("the run started")
        .unwrap();
    // The run's task is dropped mid-run, as when the worker's runtime ends.
    task.abort();
    let _ = task.await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while process::group_alive(pgid) {
        assert!(
            std::time::Instant::now() < deadline,
            "the abandoned run's processes live on: {:?}",
            processes_in_group(pgid)
        );
        process::reap_group(pgid);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Run `command` in a shell started ahead and held at its gate.
async fn run_prepared(command: &str) -> RunRecord {
    let s = spec(command);
    let prepared = Prepared::start(&s, &limits())
        .expect("a place in the budget")
        .expect("the shell starts");
    assert!(prepared.is_for(&s));
    run(
        s,
        Some(prepared),
        limits(),
        Arc::new(SystemClock),
        RunningRuns::default(),
        |_| {},
    )
    .await
}

#[tokio::test]
async fn a_run_in_a_shell_started_ahead_is_recorded_as_one_started_at_once() {
    let commands = [
        "echo out; echo err >&2; echo $DISTCRON_JOB $DISTCRON_RUN_ID; read x || echo no-stdin",
        "exit 3",
        // A syntax error on the first line: the shell never reaches the
        // gate, and says so with the command's own line number.
        "echo (",
        "echo one\necho two; echo $LINENO\nfalse",
    ];
    for command in commands {
        let (now, _) = run_spec(spec(command), RunningRuns::default()).await;
        let ahead = run_prepared(command).await;
        // stdout and stderr are two pipes: their lines interleave freely.
        let lines = |output: &str| {
            let mut lines: Vec<String> = output.lines().map(String::from).collect();
            lines.sort();
            lines
        };
        assert_eq!(
            (ahead.status, ahead.exit_code, lines(&ahead.output)),
            (now.status, now.exit_code, lines(&now.output)),
            "{command:?}"
        );
    }
}

/// The state letter of process `pid` (R, S, Z...), if it exists.
fn process_state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(") ")?.1.chars().next()
}

#[tokio::test]
async fn a_shell_whose_gate_never_opens_never_runs_its_command() {
    let dir = tempfile::tempdir().unwrap();
    let ran = dir.path().join("ran");
    let s = spec(&format!("touch {}", ran.display()));
    let prepared = Prepared::start(&s, &limits()).unwrap().unwrap();
    let pgid = prepared.pgid();
    // Held: asleep on the gate, the command not run.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while process_state(pgid) != Some('S') {
        assert!(
            std::time::Instant::now() < deadline,
            "the shell never waited at its gate"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(!ran.exists(), "the command ran before its gate opened");
    // Dropped unopened (the tick skipped, or not ours): killed.
    drop(prepared);
    while process::group_alive(pgid) {
        assert!(
            std::time::Instant::now() < deadline,
            "the unopened shell lives on: {:?}",
            processes_in_group(pgid)
        );
        process::reap_group(pgid);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!ran.exists(), "the command ran without its gate opening");
}
