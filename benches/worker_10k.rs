//! One `distcron-worker` process (release build) runs 10,000 jobs spread
//! evenly over the minute, each running `true`. Not a test: it prints runs
//! per minute, start lateness, missed ticks, the worker's CPU and RSS, and
//! etcd client writes per run, for the README.
//!
//! Run: `scripts/bench.sh worker_10k` (fresh etcd and MongoDB-wire server).
//! `WORKER_10K_MINUTES` sets the measured minutes (default 2, after 1 of
//! warm-up).

mod support;

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use distcron::coord::Coordinator;
use distcron::coord::etcd::{EtcdCoordinator, EtcdOptions};
use distcron::job::Job;
use distcron::runlog::mongo::{MongoOptions, MongoRunLog};
use distcron::runlog::{RunLog, RunRecord};

const JOBS: usize = 10_000;
const PREFIX: &str = "/bench-10k/";
const DATABASE: &str = "bench_10k";

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64
}

/// etcd's client write requests so far (Put, Txn, DeleteRange), from its
/// own Prometheus endpoint.
fn etcd_writes(endpoint: &str) -> u64 {
    let out = Command::new("curl")
        .args(["-sf", &format!("http://{endpoint}/metrics")])
        .output()
        .expect("curl etcd metrics");
    distcron::coord::etcd::client_writes_in_metrics(&String::from_utf8_lossy(&out.stdout))
}

/// (CPU seconds, current RSS MiB, peak RSS MiB) of a process.
fn process_usage(pid: u32) -> (f64, f64, f64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(") ")
        .map_or(vec![], |(_, r)| r.split_whitespace().collect());
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let cpu = (ticks(11) + ticks(12)) / 100.0;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (cpu, kib("VmRSS:") / 1024.0, kib("VmHWM:") / 1024.0)
}

fn percentile(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[actix_rt::main]
async fn main() {
    if !support::requested() {
        return;
    }
    let Some((etcd, mongo)) = support::servers() else {
        return;
    };
    let minutes: i64 = std::env::var("WORKER_10K_MINUTES")
        .ok()
        .and_then(|m| m.parse().ok())
        .unwrap_or(2);
    let endpoint = etcd.split(',').next().expect("an endpoint").to_string();
    let coord: Arc<dyn Coordinator> = Arc::new(
        EtcdCoordinator::connect(EtcdOptions::new(vec![endpoint.clone()], PREFIX))
            .await
            .expect("connect to etcd"),
    );
    for i in 0..JOBS {
        // 10,000 jobs over 60 seconds: about 167 start at each second.
        let job = Job::new(
            &format!("job-{i:05}"),
            "true",
            &format!("{} * * * * *", i % 60),
        );
        coord
            .put(
                &format!("jobs/{}", job.name),
                serde_json::to_vec(&job).expect("job JSON"),
                None,
            )
            .await
            .expect("save job");
    }
    let data_dir = tempfile::tempdir().expect("temp dir");
    let mut worker = Command::new(env!("CARGO_BIN_EXE_distcron-worker"))
        .env("DISTCRON_ETCD_ENDPOINTS", &etcd)
        .env("DISTCRON_ETCD_PREFIX", PREFIX)
        .env("DISTCRON_MONGODB_URI", &mongo)
        .env("DISTCRON_MONGODB_DATABASE", DATABASE)
        .env("DISTCRON_WORKER_ID", "bench-worker")
        .env("DISTCRON_DATA_DIR", data_dir.path())
        .env("DISTCRON_LOG_LEVEL", "warn")
        .stdin(Stdio::null())
        .spawn()
        .expect("start distcron-worker");
    let pid = worker.id();

    // One minute of warm-up, then the measured window on whole minutes.
    let start = (now_ms() / 60_000 + 2) * 60_000;
    let end = start + minutes * 60_000;
    println!("worker_10k: {JOBS} jobs, 1 worker; measuring {minutes} min from {start}");
    tokio::time::sleep(Duration::from_millis((start - now_ms()).max(0) as u64)).await;
    let (cpu0, _, _) = process_usage(pid);
    let writes0 = etcd_writes(&endpoint);
    tokio::time::sleep(Duration::from_millis((end - now_ms()).max(0) as u64)).await;
    let (cpu1, rss, peak_rss) = process_usage(pid);
    let writes1 = etcd_writes(&endpoint);
    // Let the last runs finish and their records be written.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let _ = worker.wait();

    let mut options = MongoOptions::new(&mongo);
    options.database = DATABASE.into();
    let run_log = MongoRunLog::connect(&options)
        .await
        .expect("connect to the run log");
    let all: Vec<RunRecord> = run_log
        .recent(JOBS as u64 * (minutes as u64 + 3))
        .await
        .expect("read runs");
    let window: Vec<&RunRecord> = all
        .iter()
        .filter(|r| r.plan_time >= start && r.plan_time < end)
        .collect();
    let mut per_tick: HashMap<(&str, i64), usize> = HashMap::new();
    for r in &window {
        *per_tick
            .entry((r.job_name.as_str(), r.plan_time))
            .or_default() += 1;
    }
    let expected = JOBS * minutes as usize;
    let duplicates = per_tick.values().filter(|n| **n > 1).count();
    let failed = window
        .iter()
        .filter(|r| r.status != distcron::runlog::RunStatus::Succeeded)
        .count();
    let sorted = |f: &dyn Fn(&RunRecord) -> i64| {
        let mut v: Vec<i64> = window.iter().map(|r| f(r)).collect();
        v.sort_unstable();
        v
    };
    let lateness = sorted(&|r| r.start_time - r.plan_time);
    let claiming = sorted(&|r| r.schedule_time - r.plan_time);
    println!(
        "  runs in window:   {} of {expected} expected ({} per minute)",
        per_tick.len(),
        per_tick.len() as i64 / minutes
    );
    println!(
        "  missed:           {}",
        expected.saturating_sub(per_tick.len())
    );
    println!("  duplicated ticks: {duplicates}");
    println!("  not succeeded:    {failed}");
    println!(
        "  start lateness:   p50 {} ms, p99 {} ms, max {} ms",
        percentile(&lateness, 0.5),
        percentile(&lateness, 0.99),
        lateness.last().copied().unwrap_or(0)
    );
    println!(
        "  of which claim:   p50 {} ms, p99 {} ms (tick to claim won)",
        percentile(&claiming, 0.5),
        percentile(&claiming, 0.99)
    );
    println!(
        "  worker CPU:       {:.1} s over {minutes} min ({:.0}% of a core); RSS {rss:.0} MiB, peak {peak_rss:.0} MiB",
        cpu1 - cpu0,
        (cpu1 - cpu0) * 100.0 / (minutes as f64 * 60.0)
    );
    println!(
        "  etcd writes/run:  {:.2} ({} client writes for {} runs)",
        (writes1 - writes0) as f64 / per_tick.len().max(1) as f64,
        writes1 - writes0,
        per_tick.len()
    );
}
