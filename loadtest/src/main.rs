//! `loadtest <scenario>`: start a whole distcron cluster on 127.0.0.1,
//! create a scenario's jobs through the HTTP API, measure a window, cause
//! the scenario's chaos, then verify every planned tick against the run log
//! and report. Exits 1 when the scenario's expectations are not met.
//!
//! Needs release builds of the binaries (`cargo build --release --bins`),
//! `etcd` on PATH, and `nx-27017` (`NX_27017_BIN`, or the test venv that
//! `scripts/services.sh` installs). `scripts/loadtest.sh` sees to all three.

mod api;
mod cluster;
mod floor;
mod peer;
mod report;
mod scenario;
mod stop;
mod verify;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use chrono::{DateTime, Utc};

use cluster::{Cluster, Signal, Tools};
use report::{Report, Step};
use scenario::{ChaosAction, Scenario};
use verify::{ChaosWindow, PlannedJob};

/// After a chaos action, how long ticks may be missed: the session TTL
/// (10 s by default), the 2 s handover and some slack.
const FAILOVER_SECS: i64 = 20;

const USAGE: &str = "usage: loadtest <scenario name or file> [--bin-dir DIR] [--reports DIR]";

fn main() -> ExitCode {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("loadtest/ has a parent")
        .to_path_buf();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (mut name, mut bin_dir, mut reports) = (
        None,
        root.join("target/release"),
        root.join("loadtest/reports"),
    );
    let mut i = 0;
    while i < args.len() {
        match (args[i].as_str(), args.get(i + 1)) {
            ("--bin-dir", Some(v)) => {
                bin_dir = PathBuf::from(v);
                i += 1;
            }
            ("--reports", Some(v)) => {
                reports = PathBuf::from(v);
                i += 1;
            }
            (a, _) if !a.starts_with('-') && name.is_none() => name = Some(a.to_string()),
            _ => {
                eprintln!("{USAGE}");
                return ExitCode::from(2);
            }
        }
        i += 1;
    }
    let Some(name) = name else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let scenario = match scenario::load(&name, &root.join("loadtest/scenarios")) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("loadtest: {e}");
            return ExitCode::from(2);
        }
    };
    let tools = Tools {
        mongo_server: std::env::var_os("NX_27017_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target/test-venv/bin/nx-27017")),
        bin_dir,
    };
    for needed in [
        tools.bin_dir.join("distcron-manager"),
        tools.bin_dir.join("distcron-worker"),
        tools.mongo_server.clone(),
    ] {
        if !needed.exists() {
            eprintln!(
                "loadtest: {} is missing (run scripts/loadtest.sh, which builds and installs what is needed)",
                needed.display()
            );
            return ExitCode::from(2);
        }
    }
    if let Err(e) = stop::install() {
        eprintln!("loadtest: cannot catch SIGINT and SIGTERM: {e}");
        return ExitCode::from(2);
    }
    let run_dir = root.join("target/loadtest").join(&scenario.name);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let report = match runtime.block_on(run(&scenario, &tools, &run_dir)) {
        Ok(report) => report,
        Err(e) => {
            eprintln!(
                "loadtest {}: {e} (process logs in {})",
                scenario.name,
                run_dir.display()
            );
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = report::write(&report, &reports) {
        eprintln!("loadtest: cannot write the report: {e}");
    }
    println!("{}", report::markdown(&report));
    println!(
        "report: {}/{}.{{json,md}}; process logs in {}",
        reports.display(),
        scenario.name,
        run_dir.display()
    );
    if report.passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn now() -> DateTime<Utc> {
    Utc::now()
}

pub(crate) fn say(text: &str) {
    eprintln!("[{}] {text}", now().format("%H:%M:%S"));
}

/// The jobs of every group, with the first group at `first_count` jobs.
/// With a ledger, each command first appends its execution to it.
fn planned_jobs(
    scenario: &Scenario,
    first_count: usize,
    run_dir: &Path,
) -> Vec<(PlannedJob, serde_json::Value)> {
    let mut out = Vec::new();
    for (g, group) in scenario.jobs.iter().enumerate() {
        let count = if g == 0 { first_count } else { group.count };
        let command = if scenario.ledger {
            ledger_command(group, run_dir)
        } else {
            group.command.clone()
        };
        for i in 0..count {
            let planned = PlannedJob {
                name: group.name(i),
                cron_expr: group.cron_expr(i),
                run_secs: group.run_secs,
                rerun_lost: group.on_lost.as_deref() == Some("rerun"),
            };
            let mut json = serde_json::json!({
                "name": planned.name,
                "command": command,
                "cronExpr": planned.cron_expr,
            });
            if let Some(on_lost) = &group.on_lost {
                json["onLost"] = on_lost.clone().into();
            }
            out.push((planned, json));
        }
    }
    out
}

/// A group's command that records each execution in the ledger first; an
/// exclusive one holds its job's lock while it runs.
fn ledger_command(group: &scenario::JobGroup, run_dir: &Path) -> String {
    let ledger = run_dir.join("ledger").display().to_string();
    let entry = "$DISTCRON_JOB $DISTCRON_TICK $DISTCRON_RUN_ID";
    if group.exclusive {
        let locks = run_dir.join("locks").display().to_string();
        format!(
            "flock -n {locks}/$DISTCRON_JOB sh -c 'echo \"{entry}\" >> {ledger}; {}' || echo \"overlap {entry}\" >> {ledger}",
            group.command
        )
    } else {
        format!("echo \"{entry}\" >> {ledger}; {}", group.command)
    }
}

/// Save jobs through the managers, 8 requests in flight; returns saves/s.
fn save_jobs(managers: &[String], jobs: &[serde_json::Value]) -> Result<f64, String> {
    let started = std::time::Instant::now();
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        let lanes: Vec<_> = (0..8)
            .map(|_| {
                scope.spawn(|| {
                    loop {
                        if stop::requested() {
                            return Err("stopped by a signal".to_string());
                        }
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(job) = jobs.get(i) else {
                            return Ok(());
                        };
                        save_with_retries(&managers[i % managers.len()], job)?;
                    }
                })
            })
            .collect();
        lanes
            .into_iter()
            .map(|lane| {
                lane.join()
                    .unwrap_or_else(|_| Err("a save lane panicked".into()))
            })
            .collect::<Result<Vec<()>, String>>()
    })?;
    Ok(jobs.len() as f64 / started.elapsed().as_secs_f64().max(0.001))
}

/// A save that meets a busy etcd (503) is retried a few times, as a client
/// would, before the step is given up.
fn save_with_retries(manager: &str, job: &serde_json::Value) -> Result<(), String> {
    let mut attempt = 0;
    loop {
        match api::save_job(manager, job) {
            Ok(()) => return Ok(()),
            Err(e) if attempt < 5 && e.contains(" 503 ") => {
                attempt += 1;
                std::thread::sleep(Duration::from_millis(500 << attempt));
            }
            Err(e) => return Err(e),
        }
    }
}

/// One chaos step on the timeline.
enum Action {
    Do(ChaosAction, usize, u64),
    ContinueWorker(usize),
    RestartWorker(usize),
    CycleWorker(usize),
    RestartEtcd,
    RestartEtcdAll,
    RestartLogStore,
}

/// Run the window `[from, to)`, applying the chaos timeline; returns the
/// spans where ticks may be missed, or `None` when a stop was asked.
async fn run_window(
    cluster: &mut Cluster,
    scenario: &Scenario,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Option<Vec<ChaosWindow>>, String> {
    let mut timeline: Vec<(i64, Action)> = scenario
        .chaos
        .iter()
        .map(|c| {
            let at = from.timestamp_millis() + c.at_secs as i64 * 1000;
            (at, Action::Do(c.action, c.worker, c.for_secs))
        })
        .collect();
    let mut windows = Vec::new();
    let mut killed_member = None;
    loop {
        timeline.sort_by_key(|(at, _)| *at);
        if timeline.is_empty() {
            break;
        }
        let (at, action) = timeline.remove(0);
        let at_time = DateTime::<Utc>::from_timestamp_millis(at).unwrap_or_default();
        if !stop::sleep_until(at_time).await {
            return Ok(None);
        }
        match action {
            Action::Do(kind, worker, for_secs) => {
                let mut span_end = at + (for_secs as i64 + FAILOVER_SECS) * 1000;
                let label = match kind {
                    ChaosAction::KillWorker if for_secs > 0 => {
                        cluster.workers[worker].kill();
                        timeline.push((at + for_secs as i64 * 1000, Action::RestartWorker(worker)));
                        format!("SIGKILL worker-{worker}, started again after {for_secs} s")
                    }
                    ChaosAction::KillWorker => {
                        cluster.workers[worker].kill();
                        format!("SIGKILL worker-{worker}")
                    }
                    ChaosAction::RollingRestart => {
                        let n = cluster.workers.len();
                        for w in 0..n {
                            timeline.push((
                                at + (w * for_secs as usize) as i64 * 1000,
                                Action::CycleWorker(w),
                            ));
                        }
                        span_end = at + ((n as u64 * for_secs) as i64 + FAILOVER_SECS) * 1000;
                        format!("rolling restart of {n} workers, {for_secs} s apart")
                    }
                    ChaosAction::AddWorker => {
                        cluster.add_worker()?;
                        format!("worker-{} joins", cluster.workers.len() - 1)
                    }
                    ChaosAction::StopEtcd => {
                        for member in &mut cluster.etcd {
                            member.kill();
                        }
                        timeline.push((at + for_secs as i64 * 1000, Action::RestartEtcdAll));
                        format!("etcd down (every member) for {for_secs} s")
                    }
                    ChaosAction::StopWorker => {
                        cluster.workers[worker].signal(Signal::SIGSTOP);
                        timeline
                            .push((at + for_secs as i64 * 1000, Action::ContinueWorker(worker)));
                        format!("SIGSTOP worker-{worker} for {for_secs} s")
                    }
                    ChaosAction::KillEtcdLeader => {
                        let leader = cluster
                            .etcd_leader()
                            .ok_or("no etcd member says it is the leader")?;
                        cluster.etcd[leader].kill();
                        killed_member = Some(leader);
                        timeline.push((at + 10_000, Action::RestartEtcd));
                        format!("SIGKILL etcd leader (etcd-{leader}), restarted after 10 s")
                    }
                    ChaosAction::StopLogStore => {
                        cluster.log_store.kill();
                        timeline.push((at + for_secs as i64 * 1000, Action::RestartLogStore));
                        format!("log store down for {for_secs} s")
                    }
                };
                say(&format!("chaos: {label}"));
                windows.push(ChaosWindow {
                    action: label,
                    from_ms: at - 1000,
                    to_ms: span_end,
                    ..ChaosWindow::default()
                });
            }
            Action::ContinueWorker(worker) => {
                cluster.workers[worker].signal(Signal::SIGCONT);
                say(&format!("chaos: SIGCONT worker-{worker}"));
            }
            Action::RestartWorker(worker) => {
                cluster.restart_worker(worker)?;
                say(&format!("chaos: worker-{worker} started again"));
            }
            Action::CycleWorker(worker) => {
                say(&format!(
                    "chaos: SIGTERM worker-{worker}, then start it again"
                ));
                cluster.cycle_worker(worker)?;
            }
            Action::RestartEtcdAll => {
                for member in 0..cluster.etcd.len() {
                    cluster.restart_etcd(member)?;
                }
                say("chaos: etcd members started again");
            }
            Action::RestartEtcd => {
                if let Some(member) = killed_member.take() {
                    cluster.restart_etcd(member)?;
                    say(&format!("chaos: etcd-{member} restarted"));
                }
            }
            Action::RestartLogStore => {
                cluster.restart_log_store()?;
                say("chaos: log store restarted");
            }
        }
    }
    if !stop::sleep_until(to).await {
        return Ok(None);
    }
    Ok(Some(windows))
}

/// The first whole minute at least `settle` from now.
pub(crate) fn next_minute_after(settle: Duration) -> DateTime<Utc> {
    let earliest = now() + chrono::Duration::from_std(settle).unwrap_or_default();
    let ms = earliest.timestamp_millis();
    let minute = (ms + 59_999) / 60_000 * 60_000;
    DateTime::<Utc>::from_timestamp_millis(minute).unwrap_or_default()
}

async fn run(scenario: &Scenario, tools: &Tools, run_dir: &Path) -> Result<Report, String> {
    let started = now();
    // Before anything else runs: what this machine can do at all.
    let floor = floor::measure(scenario).map_err(|e| format!("measuring the floor: {e}"))?;
    say(&format!(
        "floor: {:.0} runs a minute of `sh -c true` started as a worker does ({} thread); a burst of {}: lateness p99 {:.1} ms",
        floor.runs_per_minute, floor.batch.threads, floor.burst.starts, floor.burst.lateness.p99_ms
    ));
    say(&format!(
        "starting 3 etcd members, the log store, {} manager(s), {} worker(s) in {}",
        scenario.managers,
        scenario.workers,
        run_dir.display()
    ));
    let mut cluster = Cluster::start(
        tools,
        run_dir,
        scenario.managers,
        scenario.workers,
        &scenario.worker_env,
    )?;
    std::fs::create_dir_all(run_dir.join("locks")).map_err(|e| format!("locks: {e}"))?;
    let client = mongodb::Client::with_uri_str(&cluster.mongo_uri)
        .await
        .map_err(|e| format!("log store: {e}"))?;
    let runs = client
        .database("distcron")
        .collection::<mongodb::bson::Document>("runs");

    // With a ramp, each step raises the first group; without, one step.
    let steps: Vec<usize> = if scenario.ramp.is_empty() {
        vec![scenario.jobs.first().map_or(0, |g| g.count)]
    } else {
        scenario.ramp.clone()
    };
    let mut saved = std::collections::HashSet::new();
    let mut save_rates = Vec::new();
    let mut results = Vec::new();
    let mut best = None;
    let mut stopped_by = None;
    for first_count in steps {
        let jobs = planned_jobs(scenario, first_count, run_dir);
        // Jobs saved by an earlier step stay as they are.
        let new: Vec<serde_json::Value> = jobs
            .iter()
            .filter(|(planned, _)| !saved.contains(&planned.name))
            .map(|(_, json)| json.clone())
            .collect();
        say(&format!("saving {} jobs through the API", new.len()));
        let rate = match save_jobs(&cluster.manager_urls, &new) {
            Ok(rate) => rate,
            Err(_) if stop::requested() => {
                stopped_by = Some(format!(
                    "stopped by a signal while saving the jobs for {first_count} runs a minute"
                ));
                break;
            }
            // A ramp reports what it reached; the first step must save.
            Err(e) if !results.is_empty() => {
                say(&format!("the ramp stops: saving its next jobs failed: {e}"));
                stopped_by = Some(format!(
                    "saving the jobs for {first_count} runs a minute failed: {e}"
                ));
                break;
            }
            Err(e) => return Err(e),
        };
        save_rates.push(rate);
        saved.extend(jobs.iter().map(|(planned, _)| planned.name.clone()));
        let from = next_minute_after(Duration::from_secs(scenario.settle_secs));
        let to = from + chrono::Duration::seconds(scenario.duration_secs as i64);
        say(&format!(
            "{} jobs ({} runs a minute asked of the first group); measuring {} to {}",
            jobs.len(),
            first_count,
            from.format("%H:%M:%S"),
            to.format("%H:%M:%S")
        ));
        let stopped_in_window = || {
            Some(format!(
                "stopped by a signal before the window for {first_count} runs a minute ended (not counted)"
            ))
        };
        if !stop::sleep_until(from).await {
            stopped_by = stopped_in_window();
            break;
        }
        let writes_before = cluster.etcd_writes();
        let (requests_before, proposals_before) = cluster.etcd_requests_and_proposals();
        let Some(chaos) = run_window(&mut cluster, scenario, from, to).await? else {
            stopped_by = stopped_in_window();
            break;
        };
        let writes = cluster.etcd_writes().saturating_sub(writes_before);
        let (requests, proposals) = cluster.etcd_requests_and_proposals();
        let (requests, proposals) = (
            requests.saturating_sub(requests_before),
            proposals.saturating_sub(proposals_before),
        );
        say(&format!(
            "window over; {} s for the last records",
            scenario.drain_secs
        ));
        tokio::time::sleep(Duration::from_secs(scenario.drain_secs)).await;
        let planned: Vec<PlannedJob> = jobs.into_iter().map(|(p, _)| p).collect();
        let ledger = scenario.ledger.then(|| run_dir.join("ledger"));
        let result =
            verify::verify(&runs, &planned, from, to, now(), chaos, ledger.as_deref()).await?;
        let problems = check(scenario, &result);
        let step = Step {
            target_per_minute: first_count,
            etcd_writes_per_run: writes as f64 / result.runs.max(1) as f64,
            etcd_requests_per_run: requests as f64 / result.runs.max(1) as f64,
            raft_proposals_per_run: proposals as f64 / result.runs.max(1) as f64,
            passed: problems.is_empty(),
            problems,
            result,
        };
        say(&format!(
            "{} runs/min, missing {}, duplicates {}, failed {}, lateness p99 {} ms: {}",
            step.result.runs_per_minute.round(),
            step.result.missing,
            step.result.duplicates,
            step.result.failed_total(),
            step.result.lateness.p99_ms,
            if step.passed { "pass" } else { "FAIL" }
        ));
        let ok = step.result.missing == 0 && step.result.duplicates == 0;
        if ok {
            best = Some(first_count);
        }
        results.push(step);
        if !ok {
            break;
        }
    }
    let processes = cluster.usage();
    let journal = cluster
        .manager_urls
        .first()
        .and_then(|base| api::manager_metrics(base))
        .and_then(|text| report::JournalCost::from_metrics(&text));
    say("stopping everything");
    cluster.stop();
    drop(cluster);
    // The peer runs alone, after distcron, on the same jobs.
    let peer = match &scenario.peer {
        Some(spec) if !stop::requested() => {
            let jobs = scenario.jobs.iter().map(|g| g.count).sum();
            let root = Path::new(env!("CARGO_MANIFEST_DIR"));
            let python = std::env::var_os("APSCHEDULER_PYTHON")
                .map(PathBuf::from)
                .unwrap_or_else(|| root.join("../target/test-venv/bin/python"));
            let script = root.join("peers/apscheduler_cron.py");
            let window = Duration::from_secs(scenario.duration_secs);
            let result = peer::run_apscheduler(
                &python,
                &script,
                spec,
                jobs,
                Duration::from_secs(20),
                window,
                run_dir,
            )
            .await?;
            say(&format!(
                "APScheduler: started {} of {}, lateness p99 {:.0} ms",
                result.started, result.expected_ticks, result.lateness.p99_ms
            ));
            Some(result)
        }
        _ => None,
    };
    let ramp = !scenario.ramp.is_empty();
    let steps_passed: Vec<bool> = results.iter().map(|s| s.passed).collect();
    let passed = report::scenario_passed(&steps_passed, stopped_by.as_deref());
    Ok(Report {
        scenario: scenario.clone(),
        started: started.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        machine: report::machine(),
        jobs_saved: saved.len(),
        saves_per_sec: save_rates.iter().sum::<f64>() / save_rates.len().max(1) as f64,
        steps: results,
        max_per_minute_with_zero_missing: if ramp { best } else { None },
        ramp_stopped_by: stopped_by,
        processes,
        journal,
        floor: Some(floor),
        peer,
        passed,
    })
}

/// The scenario's expectations broken by `result`.
fn check(scenario: &Scenario, result: &verify::WindowResult) -> Vec<String> {
    let e = &scenario.expect;
    let mut problems = Vec::new();
    if result.expected_ticks == 0 {
        problems.push("no tick was expected: the window is empty".into());
    }
    // With a ledger, executions decide (every tick must have run, chaos or
    // not; late is fine); what the run log lacks is checked on its own.
    let missing = if scenario.chaos.is_empty() {
        result.missing
    } else {
        result.missing_outside_chaos
    };
    if let Some(ledger) = &result.ledger {
        if let Some(max) = e.max_executions_without_record
            && ledger.executions_without_record > max
        {
            problems.push(format!(
                "{} executions without a run record (at most {max})",
                ledger.executions_without_record
            ));
        }
        if let Some(max) = e.max_ticks_without_execution_or_record
            && ledger.ticks_without_execution_or_record > max
        {
            problems.push(format!(
                "{} planned ticks with neither an execution nor a record (at most {max})",
                ledger.ticks_without_execution_or_record
            ));
        }
        if ledger.missing > 0 {
            problems.push(format!(
                "{} planned ticks never executed (by ledger)",
                ledger.missing
            ));
        }
        if ledger.duplicates > e.max_duplicates {
            problems.push(format!(
                "{} ticks executed twice (by ledger)",
                ledger.duplicates
            ));
        }
        if ledger.overlaps > 0 {
            problems.push(format!(
                "{} runs overlapped another of their job",
                ledger.overlaps
            ));
        }
    }
    if scenario.chaos.is_empty() && !scenario.ledger && missing > e.max_missing {
        problems.push(format!("{missing} missing (at most {})", e.max_missing));
    }
    if !scenario.chaos.is_empty() && !scenario.ledger && missing > e.max_missing_outside_chaos {
        problems.push(format!(
            "{missing} missing outside the chaos spans (at most {})",
            e.max_missing_outside_chaos
        ));
    }
    if result.duplicates > e.max_duplicates {
        problems.push(format!(
            "{} duplicates (at most {})",
            result.duplicates, e.max_duplicates
        ));
    }
    if result.failed_total() > e.max_failed {
        problems.push(format!(
            "{} failed (at most {})",
            result.failed_total(),
            e.max_failed
        ));
    }
    if let Some(max) = e.max_p99_ms
        && result.lateness.p99_ms > max
    {
        problems.push(format!(
            "lateness p99 {} ms (at most {max})",
            result.lateness.p99_ms
        ));
    }
    if let Some(max) = e.max_lateness_ms
        && result.lateness.max_ms > max
    {
        problems.push(format!(
            "lateness max {} ms (at most {max})",
            result.lateness.max_ms
        ));
    }
    problems
}
