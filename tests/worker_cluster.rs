//! Worker processes on a real etcd and the MongoDB-wire server, through
//! the faults of a fleet: graceful stops, SIGKILL, SIGSTOP past the lease,
//! rejoins and joins. Executions are counted from the commands' own ledger,
//! records from the run log.

mod support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use distcron::actors::job::RunningEntry;
use distcron::actors::supervisor::rendezvous_owner;
use distcron::job::{Job, OnLost};
use distcron::runlog::mongo::{MongoOptions, MongoRunLog};
use distcron::runlog::{RunLog, RunQuery, RunRecord, RunStatus};
use nix::sys::signal::Signal;
use support::eventually;
use support::fleet::{KILL_GRACE_MS, TTL_SECS, WorkerProcess, fleet, now_ms, signal};

const WORKERS: [&str; 3] = ["w1", "w2", "w3"];

/// One line of the ledger the jobs' commands write.
#[derive(Debug, Clone)]
struct Execution {
    /// `run` (short job), `start` (long job) or `overlap` (a long run found
    /// another run of its job still holding the job's lock).
    kind: String,
    job: String,
    tick: i64,
    run_id: String,
    /// The long run's shell, for the fence check.
    pid: Option<i32>,
}

fn read_ledger(path: &std::path::Path) -> Vec<Execution> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| {
            let mut parts = line.split(' ');
            Some(Execution {
                kind: parts.next()?.to_string(),
                job: parts.next()?.to_string(),
                tick: parts.next()?.parse().ok()?,
                run_id: parts.next()?.to_string(),
                pid: parts.next().and_then(|p| p.parse().ok()),
            })
        })
        .collect()
}

/// Wait for the next instant 2.3 s past a ten-second boundary: the long
/// jobs' runs (every 10 s, 8 s long) are then in progress.
async fn mid_long_runs() {
    tokio::time::sleep(Duration::from_millis(200)).await;
    while (now_ms() % 10_000 - 2_300).abs() > 60 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Long runs of `worker` the ledger shows started at `tick`.
fn long_runs_of(path: &std::path::Path, worker: &str, tick: i64) -> Vec<Execution> {
    read_ledger(path)
        .into_iter()
        .filter(|e| {
            e.kind == "start" && e.tick == tick && e.run_id.ends_with(&format!("-{worker}"))
        })
        .collect()
}

/// Within `limit` of `since`, every process of `runs` is gone (the fence).
async fn fenced(runs: &[Execution], since: tokio::time::Instant, limit: Duration, what: &str) {
    for run in runs {
        let pid = run.pid.expect("long runs write their pid");
        // Alive: present and not a zombie (a killed run's processes stay
        // zombies until the frozen worker, their reaper, resumes).
        let alive = || {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            stat.rsplit_once(") ")
                .is_some_and(|(_, rest)| !rest.starts_with('Z') && !rest.starts_with('X'))
        };
        while alive() {
            assert!(
                since.elapsed() < limit,
                "{what}: {} (pid {pid}) still alive {:?} after, past its lease and kill grace",
                run.run_id,
                since.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Three workers (lease 4 s) run 30 every-second jobs and 6 long jobs
/// (`overlap: forbid`, 8 s every 10 s, two of them `onLost: rerun`) while,
/// in turn, a worker is stopped gracefully with long runs in progress and
/// started again, one is SIGKILLed and started again, one is frozen past
/// its lease and resumed, and a fourth joins. Counted from the commands'
/// ledger: every planned tick executed exactly once (late is fine); no two
/// runs of a long job ever overlapped (each holds a lock while it runs);
/// the runs of the killed and the frozen worker died by their lease's end
/// plus the kill grace; every long run caught on them has a record of its end (`lost`, or the
/// frozen worker's own once it resumed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fault_runs_each_tick_exactly_once_by_ledger() {
    let fleet = fleet("faults").await;
    let coord = fleet.coord.clone();
    let mut mongo_options = MongoOptions::new(&fleet.mongo);
    mongo_options.database = fleet.database.clone();
    let run_log = MongoRunLog::connect(&mongo_options).await.unwrap();
    let dir = fleet.data_dir.path();
    let ledger = dir.join("ledger");
    let short_command = format!(
        "echo \"run $DISTCRON_JOB $DISTCRON_TICK $DISTCRON_RUN_ID\" >> {}",
        ledger.display()
    );
    // 8 s long: a run caught at 2.3 s must still be running when the fence
    // kills it (by the freeze plus the lease, 6.3 s); at 6 s, the run could
    // end on its own first, and the frozen worker then rightly recorded
    // `succeeded`.
    let long_command = format!(
        "flock -n {d}/$DISTCRON_JOB.lock sh -c 'echo \"start $DISTCRON_JOB $DISTCRON_TICK $DISTCRON_RUN_ID $$\" >> {l}; sleep 8' \
         || echo \"overlap $DISTCRON_JOB $DISTCRON_TICK $DISTCRON_RUN_ID\" >> {l}",
        d = dir.display(),
        l = ledger.display()
    );
    let mut jobs = Vec::new();
    for i in 0..30 {
        let mut job = Job::new(&format!("short-{i:02}"), &short_command, "* * * * * *");
        job.overlap = distcron::job::Overlap::Allow;
        jobs.push(job);
    }
    for i in 0..6 {
        let mut job = Job::new(&format!("long-{i}"), &long_command, "*/10 * * * * *");
        if i < 2 {
            job.on_lost = OnLost::Rerun;
        }
        jobs.push(job);
    }
    for job in &mut jobs {
        fleet.save(job).await;
    }
    let mut workers: HashMap<&str, WorkerProcess> =
        WORKERS.iter().map(|id| (*id, fleet.start(id))).collect();
    fleet.wait_registered(3).await;
    let window_start = now_ms() + 2_000;
    let in_progress = |worker: &'static str| {
        let coord = coord.clone();
        async move {
            coord
                .list("running/")
                .await
                .unwrap()
                .0
                .into_iter()
                .filter_map(|kv| serde_json::from_slice::<RunningEntry>(&kv.value).ok())
                .filter(|e| e.worker == worker && e.job_name.starts_with("long-"))
                .map(|e| e.run_id)
                .collect::<HashSet<_>>()
        }
    };
    let fence_limit = Duration::from_millis(TTL_SECS as u64 * 1000 + KILL_GRACE_MS + 1_500);
    let tick_of_now = || now_ms() / 10_000 * 10_000;

    // 1. A graceful stop with long runs in progress, then the worker back.
    mid_long_runs().await;
    signal(&workers["w1"], Signal::SIGTERM);
    let mut old = workers.remove("w1").unwrap();
    let status = tokio::task::block_in_place(|| old.child.wait()).unwrap();
    assert!(status.success(), "w1 stopped gracefully: {status}");
    workers.insert("w1", fleet.start("w1"));
    fleet.wait_registered(3).await;

    // 2. SIGKILL with long runs in progress: the fence ends them by the
    // lease's end plus the kill grace. Then the worker back.
    mid_long_runs().await;
    let mut expected_lost = in_progress("w2").await;
    let caught = long_runs_of(&ledger, "w2", tick_of_now());
    let killed_at = now_ms();
    let since = tokio::time::Instant::now();
    signal(&workers["w2"], Signal::SIGKILL);
    drop(workers.remove("w2"));
    fenced(&caught, since, fence_limit, "SIGKILL").await;
    workers.insert("w2", fleet.start("w2"));
    fleet.wait_registered(3).await;

    // 3. SIGSTOP past the lease, then SIGCONT: fenced the same way.
    mid_long_runs().await;
    expected_lost.extend(in_progress("w3").await);
    let caught_frozen = long_runs_of(&ledger, "w3", tick_of_now());
    let stopped_at = now_ms();
    let since = tokio::time::Instant::now();
    signal(&workers["w3"], Signal::SIGSTOP);
    fenced(&caught_frozen, since, fence_limit, "SIGSTOP").await;
    tokio::time::sleep(Duration::from_secs(TTL_SECS as u64 + 3).saturating_sub(since.elapsed()))
        .await;
    signal(&workers["w3"], Signal::SIGCONT);

    // 4. A fourth worker joins.
    workers.insert("w4", fleet.start("w4"));
    fleet.wait_registered(4).await;
    tokio::time::sleep(Duration::from_secs(12)).await;
    let window_end = now_ms() - 3_000;
    tokio::time::sleep(Duration::from_secs(1)).await;
    for worker in workers.values() {
        signal(worker, Signal::SIGTERM);
    }
    for (id, worker) in workers.iter_mut() {
        let status = tokio::task::block_in_place(|| worker.child.wait()).unwrap();
        assert!(status.success(), "{id} stopped gracefully: {status}");
    }

    // --- Verify by execution (the ledger) and by record (the run log) ---
    let executions = read_ledger(&ledger);
    let overlaps: Vec<&Execution> = executions.iter().filter(|e| e.kind == "overlap").collect();
    assert!(
        overlaps.is_empty(),
        "two runs of a forbid job at once: {overlaps:?}"
    );
    let mut count: BTreeMap<(String, i64), usize> = BTreeMap::new();
    for e in &executions {
        *count.entry((e.job.clone(), e.tick)).or_default() += 1;
    }
    // A claim's holder, read back from the claim keyspace.
    let holder = |job: String, tick: i64| {
        let coord = coord.clone();
        async move {
            let kv = coord.get(&format!("ticks/{job}/{tick}")).await.ok()??;
            Some(distcron::coord::claims::claim_holder(&kv.value))
        }
    };
    let (mut checked, mut missing, mut twice, mut died_with_worker) =
        (0, Vec::new(), Vec::new(), Vec::new());
    let mut lost_seen = HashSet::new();
    let mut status_of: HashMap<String, Vec<String>> = HashMap::new();
    for job in &jobs {
        let records: Vec<RunRecord> = run_log
            .page(&RunQuery {
                job_name: job.name.clone(),
                status: None,
                skip: 0,
                limit: 1_000,
            })
            .await
            .unwrap();
        // A run caught on a dead worker ends as `lost`; on the frozen one,
        // its own record of the fenced run, once it resumed, replaces the
        // peers' `lost` (a record only moves forward).
        let ended_on_resume = |r: &RunRecord| {
            r.worker == "w3" && matches!(r.status, RunStatus::Killed | RunStatus::Failed)
        };
        for run in &records {
            status_of
                .entry(run.run_id.clone())
                .or_default()
                .push(format!("{:?} by {}", run.status, run.worker));
        }
        for run in records
            .iter()
            .filter(|r| r.status == RunStatus::Lost || ended_on_resume(r))
        {
            lost_seen.insert(run.run_id.clone());
        }
        let recorded = |tick: i64, status: RunStatus| {
            records
                .iter()
                .any(|r| r.plan_time == tick && r.status == status)
        };
        let period = if job.name.starts_with("long-") {
            10_000
        } else {
            1_000
        };
        for tick in ((window_start / period + 1) * period..window_end).step_by(period as usize) {
            checked += 1;
            let n = count.get(&(job.name.clone(), tick)).copied().unwrap_or(0);
            let rerun = job.on_lost == OnLost::Rerun && recorded(tick, RunStatus::Lost);
            match n {
                1 => {}
                2 if rerun => {} // the lost run, then its rerun (never at once)
                0 if recorded(tick, RunStatus::Skipped) => {} // forbid: a run was in progress
                0 => {
                    // Won and confirmed by a worker in the instant before it
                    // was killed or frozen, never started: issue J records
                    // these as lost; nobody may run them, as nobody can tell.
                    let who = holder(job.name.clone(), tick).await;
                    let near = |at: i64| (tick - at).abs() <= 1_000;
                    match who.as_deref() {
                        Some("w2") if near(killed_at) => {
                            died_with_worker.push(format!("{} @ {tick}", job.name))
                        }
                        Some("w3") if near(stopped_at) => {
                            died_with_worker.push(format!("{} @ {tick}", job.name))
                        }
                        _ => missing.push(format!("{} @ {tick} (claimed by {who:?})", job.name)),
                    }
                }
                n => twice.push(format!("{} @ {tick}: {n} times", job.name)),
            }
        }
    }
    eprintln!(
        "faults, by ledger: {checked} planned ticks, {} missing, {} executed twice, {} won by a worker in the instant it died",
        missing.len(),
        twice.len(),
        died_with_worker.len()
    );
    assert!(twice.is_empty(), "ticks executed more than once: {twice:?}");
    assert!(
        missing.is_empty(),
        "{} ticks never executed: {missing:?}",
        missing.len()
    );
    assert!(
        died_with_worker.len() <= 3,
        "too many ticks died with their worker: {died_with_worker:?}"
    );
    assert!(
        !expected_lost.is_empty(),
        "the test should catch long runs in progress"
    );
    let unrecorded: Vec<(&String, Option<&Vec<String>>)> = expected_lost
        .difference(&lost_seen)
        .map(|id| (id, status_of.get(id)))
        .collect();
    assert!(
        unrecorded.is_empty(),
        "long runs caught on dead workers without a record of their end (id, records): {unrecorded:?}"
    );
}

/// `(kind, epoch ms, run id)` lines of a fixed-delay job's ledger.
fn timed_ledger(path: &std::path::Path) -> Vec<(String, i64, String)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| {
            let mut parts = line.split(' ');
            let kind = parts.next()?.to_string();
            let at = parts.next()?.parse().ok()?;
            Some((kind, at, parts.next()?.to_string()))
        })
        .collect()
}

/// Workers w1 and w2 started, then `job` saved: the workers, the job's
/// owner and the other one.
async fn two_workers_with(
    fleet: &support::fleet::Fleet,
    job: &mut Job,
) -> (
    HashMap<&'static str, WorkerProcess>,
    &'static str,
    &'static str,
) {
    let owner = rendezvous_owner(&job.name, ["w1", "w2"]).unwrap();
    let survivor = if owner == "w1" { "w2" } else { "w1" };
    let workers = ["w1", "w2"]
        .iter()
        .map(|id| (*id, fleet.start(id)))
        .collect();
    fleet.wait_registered(2).await;
    fleet.save(job).await;
    (workers, owner, survivor)
}

/// `@delay 3s` on a job that takes 2 s: a run starts about every 5 s, never
/// while another runs, and the chain goes on after its owner is SIGKILLed.
/// Executions are counted from the command's own ledger.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixed_delay_neither_overlaps_nor_stops_across_a_worker_kill() {
    let fleet = fleet("delay").await;
    let ledger = fleet.data_dir.path().join("ledger");
    let command = format!(
        "echo \"start $(date +%s%3N) $DISTCRON_RUN_ID\" >> {l}; sleep 2; echo \"end $(date +%s%3N) $DISTCRON_RUN_ID\" >> {l}",
        l = ledger.display()
    );
    let mut job = Job::new("chain", &command, "@delay 3s");
    let (mut workers, owner, survivor) = two_workers_with(&fleet, &mut job).await;

    let read_ledger = || timed_ledger(&ledger);
    let starts_by = |entries: &[(String, i64, String)], worker: &str| {
        entries
            .iter()
            .filter(|(k, _, id)| k == "start" && id.ends_with(&format!("-{worker}")))
            .count()
    };
    eventually("three runs by the owner", Duration::from_secs(30), || {
        let n = starts_by(&read_ledger(), owner);
        async move { (n >= 3).then_some(()) }
    })
    .await;
    // Kill the owner 1 s into a run: its child goes on to the end.
    eventually("the owner 1 s into a run", Duration::from_secs(10), || {
        let entries = read_ledger();
        let last_start = entries
            .iter()
            .rev()
            .find(|(k, _, _)| k == "start")
            .map(|e| e.1);
        let running = entries.last().is_some_and(|(k, _, _)| k == "start");
        async move { (running && now_ms() - last_start? >= 1_000).then_some(()) }
    })
    .await;
    signal(&workers[owner], Signal::SIGKILL);
    drop(workers.remove(owner));
    eventually(
        "three runs by the survivor",
        Duration::from_secs(40),
        || {
            let n = starts_by(&read_ledger(), survivor);
            async move { (n >= 3).then_some(()) }
        },
    )
    .await;
    drop(workers);

    let entries = read_ledger();
    // Never two runs at once: starts and ends alternate.
    for pair in entries.windows(2) {
        assert_ne!(
            pair[0].0, pair[1].0,
            "overlapping or lost runs: {entries:?}"
        );
    }
    // On one worker each start comes the delay after the previous end, so a
    // run every 5 s. Across the kill the chain's key never got the run's end
    // (its worker died first), so the new owner starts once the old run's
    // registration expired and `killGraceMs` passed: after the run, never
    // during it.
    for window in entries.windows(3).filter(|w| w[0].0 == "start") {
        let (start, end, next) = (&window[0], &window[1], &window[2]);
        let same_worker = start.2.rsplit('-').next() == next.2.rsplit('-').next();
        if same_worker {
            let pause = next.1 - end.1;
            assert!(
                pause >= 2_900,
                "{pause} ms from a run's end to the next start: {entries:?}"
            );
            assert!(
                next.1 - start.1 <= 6_500,
                "{} ms from start to start on one worker: {entries:?}",
                next.1 - start.1
            );
        } else {
            assert!(
                next.1 > end.1,
                "the new owner started during the old run: {entries:?}"
            );
        }
    }
}

/// `@delay 1s` on a job whose run (8 s, a beat every 100 ms) outlasts the
/// session TTL (4 s): its owner is SIGKILLed 1 s into a run. The dead
/// owner's fence kills the run when the lease runs out (it never writes its
/// end), and the new owner starts the next run only after that: the old run
/// writes nothing after the new run's start. Counted from the ledger.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixed_delay_waits_for_the_fence_of_a_dead_owner_s_long_run() {
    let fleet = fleet("delay-long").await;
    let ledger = fleet.data_dir.path().join("ledger");
    let line = |kind: &str| {
        format!(
            "echo \"{kind} $(date +%s%3N) $DISTCRON_RUN_ID\" >> {}",
            ledger.display()
        )
    };
    let command = format!(
        "{}; i=0; while [ $i -lt 80 ]; do {}; sleep 0.1; i=$((i+1)); done; {}",
        line("start"),
        line("beat"),
        line("end")
    );
    let mut job = Job::new("long-chain", &command, "@delay 1s");
    let (mut workers, owner, survivor) = two_workers_with(&fleet, &mut job).await;

    let read_ledger = || timed_ledger(&ledger);
    let first_start_by = |worker: &str| {
        read_ledger()
            .into_iter()
            .find(|(k, _, id)| k == "start" && id.ends_with(&format!("-{worker}")))
    };
    let (_, started, old_run) =
        eventually("the owner's first run", Duration::from_secs(20), || {
            let start = first_start_by(owner);
            async move { start }
        })
        .await;
    eventually("the run 1 s in", Duration::from_secs(5), || async move {
        (now_ms() - started >= 1_000).then_some(())
    })
    .await;
    signal(&workers[owner], Signal::SIGKILL);
    drop(workers.remove(owner));
    let (_, next_start, _) =
        eventually("the survivor's first run", Duration::from_secs(30), || {
            let start = first_start_by(survivor);
            async move { start }
        })
        .await;
    // Past the instant the old run would have ended by itself.
    eventually(
        "the old run's natural end",
        Duration::from_secs(30),
        || async move { (now_ms() > started + 10_000).then_some(()) },
    )
    .await;
    drop(workers);

    let old: Vec<(String, i64, String)> = read_ledger()
        .into_iter()
        .filter(|(_, _, id)| *id == old_run)
        .collect();
    assert!(
        old.iter().all(|(kind, ..)| kind != "end"),
        "the dead owner's run was not fenced: it ran to its end: {old:?}"
    );
    let last = old.iter().map(|(_, at, _)| *at).max().unwrap_or(started);
    assert!(
        last < next_start,
        "the old run wrote at {last}, after the new run started at {next_start}"
    );
    eprintln!(
        "fixed delay across a dead owner: its run was fenced {} ms after its start; the next run began {} ms after that",
        last - started,
        next_start - last
    );
}

/// A rolling restart: each of three workers in turn is stopped gracefully
/// (SIGTERM) and started again while every-second jobs run. Counted from the
/// commands' own ledger: every planned tick ran exactly once; none was lost
/// at a stop or at a rejoin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_runs_every_tick_exactly_once() {
    let fleet = fleet("rolling").await;
    let ledger = fleet.data_dir.path().join("ledger");
    let command = format!(
        "echo \"$DISTCRON_JOB $DISTCRON_TICK\" >> {}",
        ledger.display()
    );
    const JOBS: usize = 30;
    for i in 0..JOBS {
        let mut job = Job::new(&format!("tick-{i:02}"), &command, "* * * * * *");
        fleet.save(&mut job).await;
    }
    let start = |id: &str| fleet.start(id);
    let mut workers: HashMap<&str, WorkerProcess> =
        WORKERS.iter().map(|id| (*id, start(id))).collect();
    fleet.wait_registered(3).await;
    let window_start = now_ms() + 2_000;
    for id in WORKERS {
        tokio::time::sleep(Duration::from_secs(3)).await;
        let mut old = workers.remove(id).unwrap();
        signal(&old, Signal::SIGTERM);
        let stopped = tokio::time::Instant::now() + Duration::from_secs(30);
        while old.child.try_wait().unwrap().is_none() {
            assert!(
                tokio::time::Instant::now() < stopped,
                "{id} did not stop on SIGTERM"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        workers.insert(id, start(id));
        fleet.wait_registered(3).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let window_end = now_ms() - 2_000;
    // Let the last runs finish writing before the workers stop.
    tokio::time::sleep(Duration::from_secs(2)).await;
    drop(workers);

    let mut executions: BTreeMap<(String, i64), usize> = BTreeMap::new();
    for line in std::fs::read_to_string(&ledger).unwrap().lines() {
        let (job, tick) = line.split_once(' ').unwrap();
        *executions
            .entry((job.to_string(), tick.parse().unwrap()))
            .or_default() += 1;
    }
    let mut missing = Vec::new();
    let mut twice = Vec::new();
    let mut checked = 0;
    for i in 0..JOBS {
        let job = format!("tick-{i:02}");
        for tick in ((window_start / 1000 + 1) * 1000..window_end).step_by(1000) {
            checked += 1;
            match executions.get(&(job.clone(), tick)).copied().unwrap_or(0) {
                1 => {}
                0 => missing.push(format!("{job} @ {tick}")),
                n => twice.push(format!("{job} @ {tick}: {n} times")),
            }
        }
    }
    eprintln!(
        "rolling restart, by ledger: {checked} planned ticks, {} missing, {} executed twice",
        missing.len(),
        twice.len()
    );
    assert!(twice.is_empty(), "ticks executed more than once: {twice:?}");
    assert!(
        missing.is_empty(),
        "{} ticks never executed: {missing:?}",
        missing.len()
    );
}
