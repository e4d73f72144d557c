//! The manager's HTTP API under load: `POST /job/save` into etcd, and
//! `GET /job/list?limit=50` and `GET /job/log` with 10,000 jobs and
//! 1,000,000 run records. Not a test: it prints requests per second and
//! p99 latency as measured by wrk, for the README.
//!
//! `/job/log` is measured twice: from a manager on the MongoDB-wire server,
//! and from `distcron standalone` on the embedded run log.
//!
//! Run: `scripts/bench.sh http_load` (fresh etcd and MongoDB-wire server;
//! installs wrk).

mod support;

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use distcron::coord::Coordinator;
use distcron::coord::etcd::{EtcdCoordinator, EtcdOptions};
use distcron::job::Job;
use distcron::runlog::embedded::EmbeddedRunLog;
use distcron::runlog::mongo::{MongoOptions, MongoRunLog};
use distcron::runlog::{RunLog, RunRecord, RunStatus};

const JOBS: usize = 10_000;
const RECORDS: usize = 1_000_000;
const PREFIX: &str = "/bench-http/";
const DATABASE: &str = "bench_http";

fn record(i: usize) -> RunRecord {
    let job = i % JOBS;
    let start = 1_700_000_000_000 + (i / JOBS) as i64 * 60_000 + job as i64;
    RunRecord {
        params: Default::default(),
        triggered_by: None,
        run_id: format!("job-{job:05}-{start}"),
        job_name: format!("job-{job:05}"),
        command: "true".into(),
        worker: "bench".into(),
        plan_time: start,
        schedule_time: start,
        start_time: start,
        end_time: start + 2,
        status: RunStatus::Succeeded,
        exit_code: Some(0),
        signal: None,
        output: "ok\n".into(),
        truncated: false,
        err: String::new(),
        requested_by: None,
    }
}

/// The admin token the benchmark's servers accept and wrk sends.
const BENCH_TOKEN: &str = "bench-admin-token-0123456789";

/// (requests/s, p99 ms) from `wrk --latency` output.
fn wrk(url: &str, script: Option<&str>) -> (f64, f64) {
    let mut command = Command::new("wrk");
    command.args(["-t2", "-c32", "-d10s", "--latency"]);
    command.args(["-H", &format!("Authorization: Bearer {BENCH_TOKEN}")]);
    if let Some(script) = script {
        command.args(["-s", script]);
    }
    let out = command
        .arg(url)
        .output()
        .expect("run wrk (apt-get install wrk)");
    let text = String::from_utf8_lossy(&out.stdout);
    let rate = text
        .lines()
        .find(|l| l.starts_with("Requests/sec:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0.0);
    let p99 = text
        .lines()
        .find(|l| l.trim_start().starts_with("99%"))
        .and_then(|l| l.split_whitespace().nth(1))
        .map(|v| {
            let (number, unit) = v.split_at(v.find(|c: char| c.is_alphabetic()).unwrap_or(v.len()));
            let n: f64 = number.parse().unwrap_or(0.0);
            match unit {
                "us" => n / 1000.0,
                "s" => n * 1000.0,
                _ => n,
            }
        })
        .unwrap_or(0.0);
    let errors = text
        .lines()
        .find(|l| l.contains("Non-2xx") || l.contains("Socket errors"));
    if let Some(line) = errors {
        println!("    wrk reports: {}", line.trim());
    }
    (rate, p99)
}

#[tokio::main]
async fn main() {
    if !support::requested() {
        return;
    }
    let Some((etcd, mongo)) = support::servers() else {
        return;
    };
    let coord: Arc<dyn Coordinator> = Arc::new(
        EtcdCoordinator::connect(EtcdOptions::new(vec![etcd.clone()], PREFIX))
            .await
            .expect("connect to etcd"),
    );
    let started = Instant::now();
    let mut puts = tokio::task::JoinSet::new();
    for chunk in 0..16 {
        let coord = coord.clone();
        puts.spawn(async move {
            for i in (chunk..JOBS).step_by(16) {
                let job = Job::new(&format!("job-{i:05}"), "true", "@yearly");
                let value = serde_json::to_vec(&job).expect("job JSON");
                coord
                    .put(&format!("jobs/{}", job.name), value, None)
                    .await
                    .expect("save job");
            }
        });
    }
    puts.join_all().await;
    println!(
        "http_load: {JOBS} jobs stored in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let mut options = MongoOptions::new(&mongo);
    options.database = DATABASE.into();
    options.server_selection_timeout = Duration::from_secs(30);
    let run_log = Arc::new(
        MongoRunLog::connect(&options)
            .await
            .expect("connect to the run log"),
    );
    let started = Instant::now();
    let mut inserts = tokio::task::JoinSet::new();
    for lane in 0..4 {
        let run_log = run_log.clone();
        inserts.spawn(async move {
            for batch in (lane * 1_000..RECORDS).step_by(4_000) {
                let records: Vec<RunRecord> = (batch..batch + 1_000).map(record).collect();
                run_log.insert_batch(&records).await.expect("insert runs");
            }
        });
    }
    inserts.join_all().await;
    println!(
        "http_load: {RECORDS} run records stored in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let mut manager = Command::new(env!("CARGO_BIN_EXE_distcron-manager"))
        .env_remove("DISTCRON_CONFIG")
        .env("DISTCRON_LISTEN", format!("127.0.0.1:{port}"))
        .env("DISTCRON_ETCD_ENDPOINTS", &etcd)
        .env("DISTCRON_ETCD_PREFIX", PREFIX)
        .env("DISTCRON_MONGODB_URI", &mongo)
        .env("DISTCRON_MONGODB_DATABASE", DATABASE)
        .env("DISTCRON_LOG_LEVEL", "warn")
        .env("DISTCRON_ADMIN_TOKEN", BENCH_TOKEN)
        .stdin(Stdio::null())
        .spawn()
        .expect("start distcron-manager");
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(&base).await;

    // Each save a new job name, as a client creating jobs would.
    let script = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(
        script.path(),
        r#"counter = 0
request = function()
  counter = counter + 1
  local job = string.format('{"name":"load-%d-%d","command":"true","cronExpr":"@yearly"}', math.random(1, 1000000000), counter)
  return wrk.format("POST", "/job/save", {["Content-Type"] = "application/json"}, job)
end
"#,
    )
    .expect("write wrk script");
    println!("http_load: wrk, 2 threads, 32 connections, 10 s each");
    for (label, url, script) in [
        (
            "POST /job/save",
            format!("{base}/job/save"),
            Some(script.path().to_str().expect("utf-8 path")),
        ),
        (
            "GET /job/list?limit=50",
            format!("{base}/job/list?limit=50"),
            None,
        ),
        (
            "GET /job/log",
            format!("{base}/job/log?name=job-04242&limit=20"),
            None,
        ),
    ] {
        let (rate, p99) = wrk(&url, script);
        println!("  {label:<24} {rate:>8.0} requests/s, p99 {p99:.1} ms");
    }
    let _ = manager.kill();
    let _ = manager.wait();
    standalone_log().await;
}

/// `/job/log` once more, from `distcron standalone` on the embedded run log
/// holding the same 1,000,000 records: the same handler and query, without
/// the Python MongoDB-wire server in the path.
async fn standalone_log() {
    let data_dir = tempfile::tempdir().expect("temp dir");
    let started = Instant::now();
    {
        let run_log =
            EmbeddedRunLog::open(&data_dir.path().join("runs.redb")).expect("open runs.redb");
        for batch in (0..RECORDS).step_by(10_000) {
            let records: Vec<RunRecord> = (batch..batch + 10_000).map(record).collect();
            run_log.insert_batch(&records).await.expect("insert runs");
        }
    }
    println!(
        "http_load: {RECORDS} run records stored in the embedded run log in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let mut standalone = Command::new(env!("CARGO_BIN_EXE_distcron"))
        .arg("standalone")
        .env_remove("DISTCRON_CONFIG")
        .env("DISTCRON_LISTEN", format!("127.0.0.1:{port}"))
        .env("DISTCRON_DATA_DIR", data_dir.path())
        .env("DISTCRON_LOG_LEVEL", "warn")
        .env("DISTCRON_ADMIN_TOKEN", BENCH_TOKEN)
        .stdin(Stdio::null())
        .spawn()
        .expect("start distcron standalone");
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(&base).await;
    let (rate, p99) = wrk(&format!("{base}/job/log?name=job-04242&limit=20"), None);
    println!(
        "  {:<24} {rate:>8.0} requests/s, p99 {p99:.1} ms (standalone, embedded run log)",
        "GET /job/log"
    );
    let _ = standalone.kill();
    let _ = standalone.wait();
}

async fn wait_ready(base: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Command::new("curl")
        .args(["-sf", &format!("{base}/readyz")])
        .output()
        .is_ok_and(|o| !o.status.success())
    {
        assert!(Instant::now() < deadline, "{base} did not become ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
