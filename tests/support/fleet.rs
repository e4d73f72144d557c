//! A fleet of `distcron-worker` processes on the shared etcd and a
//! MongoDB-wire server, under a fresh key prefix, database and data
//! directory: what the multi-process tests start, signal and stop.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use distcron::coord::Coordinator;
use distcron::coord::etcd::{EtcdCoordinator, EtcdOptions};
use distcron::job::Job;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::{eventually, service_endpoint, unique};

pub const TTL_SECS: i64 = 4;
pub const KILL_GRACE_MS: u64 = 1_000;

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

pub struct WorkerProcess {
    pub child: Child,
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGCONT);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_worker(fleet: &Fleet, id: &str) -> WorkerProcess {
    let (etcd, prefix, mongo) = (&fleet.etcd, &fleet.prefix, &fleet.mongo);
    let (database, data_dir) = (&fleet.database, fleet.data_dir.path());
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
        .env("DISTCRON_KILL_GRACE_MS", KILL_GRACE_MS.to_string())
        .env("DISTCRON_LOG_LEVEL", "warn")
        .envs(fleet.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
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
pub struct Fleet {
    pub etcd: String,
    pub mongo: String,
    pub prefix: String,
    pub database: String,
    pub coord: Arc<dyn Coordinator>,
    pub data_dir: tempfile::TempDir,
    /// More `DISTCRON_*` settings for every worker started from now on.
    pub env: Vec<(String, String)>,
}

pub async fn fleet(label: &str) -> Fleet {
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
        env: Vec::new(),
    }
}

impl Fleet {
    /// Wait until `n` workers are registered.
    pub async fn wait_registered(&self, n: usize) {
        let what = format!("{n} workers registered");
        eventually(&what, Duration::from_secs(30), || {
            let coord = self.coord.clone();
            async move { (coord.list("workers/").await.ok()?.0.len() == n).then_some(()) }
        })
        .await;
    }

    /// Store `job` as saved now (no tick before now is ever run late).
    pub async fn save(&self, job: &mut Job) {
        job.updated_at = Some(now_ms());
        let value = serde_json::to_vec(&*job).unwrap();
        self.coord
            .put(&format!("jobs/{}", job.name), value, None)
            .await
            .unwrap();
    }

    pub fn start(&self, id: &str) -> WorkerProcess {
        start_worker(self, id)
    }
}

pub async fn connect(etcd: &str, prefix: &str) -> Arc<dyn Coordinator> {
    let endpoints = etcd.split(',').map(String::from).collect();
    Arc::new(
        EtcdCoordinator::connect(EtcdOptions::new(endpoints, prefix))
            .await
            .unwrap(),
    )
}

pub fn signal(worker: &WorkerProcess, sig: Signal) {
    kill(Pid::from_raw(worker.child.id() as i32), sig).expect("signal worker");
}
