//! Three worker processes on a real etcd and the MongoDB-wire server run 100
//! jobs for 60 s while one worker is SIGKILLed and another SIGSTOPped past
//! its lease. Verified from the run log: no tick ran twice; every tick ran
//! except ticks of the affected workers' jobs inside the failover window;
//! one `lost` record per run the dead workers had in progress.

mod support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use distcron::actors::job::RunningEntry;
use distcron::actors::supervisor::rendezvous_owner;
use distcron::coord::Coordinator;
use distcron::coord::etcd::{EtcdCoordinator, EtcdOptions};
use distcron::job::Job;
use distcron::runlog::mongo::{MongoOptions, MongoRunLog};
use distcron::runlog::{RunLog, RunQuery, RunRecord, RunStatus};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use support::{eventually, service_endpoint, unique};

const TTL_SECS: i64 = 4;
const SHORT_JOBS: usize = 95;
const LONG_JOBS: usize = 5;
const WORKERS: [&str; 3] = ["w1", "w2", "w3"];

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

struct WorkerProcess {
    child: Child,
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGCONT);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_worker(
    id: &str,
    etcd: &str,
    prefix: &str,
    mongo: &str,
    database: &str,
    data_dir: &std::path::Path,
) -> WorkerProcess {
    let child = Command::new(env!("CARGO_BIN_EXE_distcron-worker"))
        .env_remove("DISTCRON_CONFIG")
        .env("DISTCRON_ETCD_ENDPOINTS", etcd)
        .env("DISTCRON_ETCD_PREFIX", prefix)
        .env("DISTCRON_MONGODB_URI", mongo)
        .env("DISTCRON_MONGODB_DATABASE", database)
        .env("DISTCRON_WORKER_ID", id)
        .env("DISTCRON_SESSION_TTL_SECS", TTL_SECS.to_string())
        .env("DISTCRON_DATA_DIR", data_dir)
        .env("DISTCRON_BATCH_DELAY_MS", "200")
        .env("DISTCRON_STOP_GRACE_SECS", "10")
        .env("DISTCRON_LOG_LEVEL", "warn")
        .args([
            "--config",
            concat!(env!("CARGO_MANIFEST_DIR"), "/config/worker.json"),
        ])
        .stdin(Stdio::null())
        .spawn()
        .expect("start distcron-worker");
    WorkerProcess { child }
}

/// One test's fleet: the shared etcd and MongoDB-wire server, under a fresh
/// key prefix and database, and a fresh data directory for its workers.
struct Fleet {
    etcd: String,
    mongo: String,
    prefix: String,
    database: String,
    coord: Arc<dyn Coordinator>,
    data_dir: tempfile::TempDir,
}

async fn fleet(label: &str) -> Fleet {
    let (etcd, mongo) = (
        service_endpoint("ETCD_ENDPOINTS"),
        service_endpoint("MONGODB_URI"),
    );
    let prefix = format!("/{}/", unique(label));
    let coord = connect(&etcd, &prefix).await;
    Fleet {
        database: unique(label).replace('-', "_"),
        data_dir: tempfile::tempdir().unwrap(),
        etcd,
        mongo,
        prefix,
        coord,
    }
}

impl Fleet {
    fn start(&self, id: &str) -> WorkerProcess {
        start_worker(
            id,
            &self.etcd,
            &self.prefix,
            &self.mongo,
            &self.database,
            self.data_dir.path(),
        )
    }
}

async fn connect(etcd: &str, prefix: &str) -> Arc<dyn Coordinator> {
    let endpoints = etcd.split(',').map(String::from).collect();
    Arc::new(
        EtcdCoordinator::connect(EtcdOptions::new(endpoints, prefix))
            .await
            .unwrap(),
    )
}

fn signal(worker: &WorkerProcess, sig: Signal) {
    kill(Pid::from_raw(worker.child.id() as i32), sig).expect("signal worker");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_run_every_tick_once_through_a_kill_and_a_freeze() {
    let fleet = fleet("cluster").await;
    let coord = fleet.coord.clone();
    let mut mongo_options = MongoOptions::new(&fleet.mongo);
    mongo_options.database = fleet.database.clone();
    let run_log = MongoRunLog::connect(&mongo_options).await.unwrap();

    let mut jobs = Vec::new();
    for i in 0..SHORT_JOBS {
        jobs.push(Job::new(&format!("short-{i:02}"), "true", "* * * * * *"));
    }
    for i in 0..LONG_JOBS {
        jobs.push(Job::new(&format!("long-{i}"), "sleep 5", "*/10 * * * * *"));
    }
    for job in &jobs {
        coord
            .put(
                &format!("jobs/{}", job.name),
                serde_json::to_vec(job).unwrap(),
                None,
            )
            .await
            .unwrap();
    }

    let mut workers: HashMap<&str, WorkerProcess> =
        WORKERS.iter().map(|id| (*id, fleet.start(id))).collect();
    eventually("three workers registered", Duration::from_secs(30), || {
        let coord = coord.clone();
        async move { (coord.list("workers/").await.ok()?.0.len() == 3).then_some(()) }
    })
    .await;
    let window_start = now_ms() + 3_000;

    // SIGKILL w1 at about 20 s, 2 s into the long jobs' 5 s runs.
    tokio::time::sleep(Duration::from_secs(18)).await;
    while (now_ms() / 1000) % 10 != 2 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
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
    let mut expected_lost = in_progress("w1").await;
    let killed_at = now_ms();
    signal(&workers["w1"], Signal::SIGKILL);

    // SIGSTOP w2 about 10 s later, past its lease, then SIGCONT.
    tokio::time::sleep(Duration::from_secs(9)).await;
    while (now_ms() / 1000) % 10 != 2 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    expected_lost.extend(in_progress("w2").await);
    let stopped_at = now_ms();
    signal(&workers["w2"], Signal::SIGSTOP);
    tokio::time::sleep(Duration::from_secs(TTL_SECS as u64 + 3)).await;
    signal(&workers["w2"], Signal::SIGCONT);

    tokio::time::sleep(Duration::from_secs(20)).await;
    let window_end = now_ms() - 2_000;
    for id in ["w2", "w3"] {
        signal(&workers[id], Signal::SIGTERM);
    }
    for id in ["w2", "w3"] {
        let worker = workers.get_mut(id).unwrap();
        let status = tokio::task::block_in_place(|| worker.child.wait()).unwrap();
        assert!(status.success(), "{id} stopped gracefully: {status}");
    }

    // --- Verify from the run log ---
    // A job's owner at each incident: among all three at the kill, among
    // the two survivors at the freeze.
    let owner_at_kill = |job: &str| rendezvous_owner(job, WORKERS).unwrap();
    let owner_at_freeze = |job: &str| rendezvous_owner(job, ["w2", "w3"]).unwrap();
    let failover_ms = (TTL_SECS + 2) * 1000;
    let mut missing = Vec::new();
    let mut lost_seen = HashSet::new();
    for job in &jobs {
        let runs: Vec<RunRecord> = run_log
            .page(&RunQuery {
                job_name: job.name.clone(),
                status: None,
                skip: 0,
                limit: 1_000,
            })
            .await
            .unwrap();
        let mut by_tick: BTreeMap<i64, Vec<&RunRecord>> = BTreeMap::new();
        for run in &runs {
            by_tick.entry(run.plan_time).or_default().push(run);
            if run.status == RunStatus::Lost {
                assert!(
                    ["w1", "w2"].contains(&run.worker.as_str()),
                    "lost run of a live worker: {run:?}"
                );
                lost_seen.insert(run.run_id.clone());
            }
        }
        for (tick, records) in &by_tick {
            assert_eq!(
                records.len(),
                1,
                "{} tick {tick} ran {} times: {records:#?}",
                job.name,
                records.len()
            );
        }
        let period = if job.name.starts_with("long-") {
            10_000
        } else {
            1_000
        };
        let first = (window_start / period + 1) * period;
        for tick in (first..window_end).step_by(period as usize) {
            if by_tick.contains_key(&tick) {
                continue;
            }
            // A SIGKILL also loses the records still in the killed worker's
            // log batcher (issue J): the last tick before the kill may have
            // run without a record, as when a loaded machine delivers the
            // kill just after a tick.
            let excused = (owner_at_kill(&job.name) == "w1"
                && tick >= killed_at - 1_000
                && tick <= killed_at + failover_ms)
                || (owner_at_freeze(&job.name) == "w2"
                    && tick >= stopped_at
                    && tick <= stopped_at + failover_ms);
            if !excused {
                missing.push(format!("{} @ {tick}", job.name));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "{} ticks missing outside failover windows: {missing:?}",
        missing.len()
    );
    assert!(
        !expected_lost.is_empty(),
        "the test should catch long runs in progress"
    );
    // Every long run caught in progress is lost exactly once (one record per
    // tick, checked above), and nothing else is: a short run ends before it
    // registers under running/ (REGISTER_AFTER), so it is never declared lost.
    assert_eq!(
        lost_seen, expected_lost,
        "lost records differ from the runs in progress on the dead workers"
    );
}

/// `@delay 3s` on a job that takes 2 s: a run starts about every 5 s, never
/// while another runs, and the chain goes on after its owner is SIGKILLed.
/// Executions are counted from the command's own ledger.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixed_delay_neither_overlaps_nor_stops_across_a_worker_kill() {
    let fleet = fleet("delay").await;
    let coord = fleet.coord.clone();
    let ledger = fleet.data_dir.path().join("ledger");
    let command = format!(
        "echo \"start $(date +%s%3N) $DISTCRON_RUN_ID\" >> {l}; sleep 2; echo \"end $(date +%s%3N) $DISTCRON_RUN_ID\" >> {l}",
        l = ledger.display()
    );
    let job = Job::new("chain", &command, "@delay 3s");
    let owner = rendezvous_owner(&job.name, ["w1", "w2"]).unwrap();
    let survivor = if owner == "w1" { "w2" } else { "w1" };
    let mut workers: HashMap<&str, WorkerProcess> = ["w1", "w2"]
        .iter()
        .map(|id| (*id, fleet.start(id)))
        .collect();
    eventually("two workers registered", Duration::from_secs(30), || {
        let coord = coord.clone();
        async move { (coord.list("workers/").await.ok()?.0.len() == 2).then_some(()) }
    })
    .await;
    coord
        .put("jobs/chain", serde_json::to_vec(&job).unwrap(), None)
        .await
        .unwrap();

    // (kind, epoch ms, run id) from the ledger.
    let read_ledger = || -> Vec<(String, i64, String)> {
        std::fs::read_to_string(&ledger)
            .unwrap_or_default()
            .lines()
            .map(|line| {
                let mut parts = line.split(' ');
                let kind = parts.next().unwrap().to_string();
                let at = parts.next().unwrap().parse().unwrap();
                (kind, at, parts.next().unwrap_or("").to_string())
            })
            .collect()
    };
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
    // run every 5 s. Across the kill the end was never recorded (its worker
    // died first), so the new owner starts at once once the old run's
    // registration expires: after the run, never during it.
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

/// A rolling restart: each of three workers in turn is stopped gracefully
/// (SIGTERM) and started again while every-second jobs run. Counted from the
/// commands' own ledger: every planned tick ran exactly once; none was lost
/// at a stop or at a rejoin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_runs_every_tick_exactly_once() {
    let fleet = fleet("rolling").await;
    let coord = fleet.coord.clone();
    let ledger = fleet.data_dir.path().join("ledger");
    let command = format!(
        "echo \"$DISTCRON_JOB $DISTCRON_TICK\" >> {}",
        ledger.display()
    );
    const JOBS: usize = 30;
    for i in 0..JOBS {
        let job = Job::new(&format!("tick-{i:02}"), &command, "* * * * * *");
        coord
            .put(
                &format!("jobs/{}", job.name),
                serde_json::to_vec(&job).unwrap(),
                None,
            )
            .await
            .unwrap();
    }
    let start = |id: &str| fleet.start(id);
    let mut workers: HashMap<&str, WorkerProcess> =
        WORKERS.iter().map(|id| (*id, start(id))).collect();
    let registered = |n: usize| {
        let coord = coord.clone();
        move || {
            let coord = coord.clone();
            async move { (coord.list("workers/").await.ok()?.0.len() == n).then_some(()) }
        }
    };
    eventually(
        "three workers registered",
        Duration::from_secs(30),
        registered(3),
    )
    .await;
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
        eventually("the worker back", Duration::from_secs(30), registered(3)).await;
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
