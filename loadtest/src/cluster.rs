//! Everything a scenario runs, as separate processes on 127.0.0.1 with
//! fresh data directories under the run folder: a 3-member etcd, the
//! MongoDB-wire server, managers and workers. Every process started is
//! stopped when the `Cluster` is dropped, whatever happened.

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use nix::sys::signal::Signal;
use nix::sys::signal::kill;
use nix::unistd::Pid;
use serde::Serialize;

/// What the harness needs to find on this machine.
pub struct Tools {
    /// Release builds of `distcron-manager` and `distcron-worker`.
    pub bin_dir: PathBuf,
    /// The MongoDB-wire server (`nx-27017`).
    pub mongo_server: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Role {
    Etcd,
    LogStore,
    Manager,
    Worker,
}

/// CPU seconds and peak RSS of one process, read from /proc.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    pub name: String,
    pub role: Option<Role>,
    pub cpu_secs: f64,
    pub peak_rss_mib: f64,
    /// Lines of a distcron process's log at WARN or ERROR (`None`: another
    /// program's log, not read).
    pub warnings: Option<u64>,
    /// The most frequent of them (their start, and how many).
    pub frequent_warnings: Vec<(String, u64)>,
}

/// How many of a log's lines are at WARN or ERROR (tracing's text format:
/// the level follows the timestamp), and the `most` most frequent ones,
/// told apart by their first 100 characters after the timestamp.
pub fn warnings_in_log(text: &str, most: usize) -> (u64, Vec<(String, u64)>) {
    let mut count = 0;
    let mut by_start: std::collections::HashMap<String, u64> = Default::default();
    for line in text.lines() {
        let Some((_, rest)) = line.split_once(' ') else {
            continue;
        };
        let rest = rest.trim_start();
        if !(rest.starts_with("WARN ") || rest.starts_with("ERROR ")) {
            continue;
        }
        count += 1;
        let start: String = rest.chars().take(100).collect();
        *by_start.entry(start).or_default() += 1;
    }
    let mut frequent: Vec<(String, u64)> = by_start.into_iter().collect();
    frequent.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    frequent.truncate(most);
    (count, frequent)
}

pub struct Proc {
    pub name: String,
    pub role: Role,
    child: Option<Child>,
    command: Vec<String>,
    env: Vec<(String, String)>,
    log: PathBuf,
    /// Usage of earlier incarnations (a restarted etcd member, say).
    earlier: Usage,
}

impl Proc {
    fn spawn(&mut self) -> Result<(), String> {
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| format!("{}: log file: {e}", self.name))?;
        let child = Command::new(&self.command[0])
            .args(&self.command[1..])
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env_remove("DISTCRON_CONFIG")
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("{}: cannot start {}: {e}", self.name, self.command[0]))?;
        self.child = Some(child);
        Ok(())
    }

    pub fn pid(&self) -> Option<i32> {
        self.child.as_ref().map(|c| c.id() as i32)
    }

    /// Usage so far, this incarnation and earlier ones together.
    pub fn usage(&self) -> Usage {
        let mut usage = self.earlier.clone();
        if let Some(pid) = self.pid() {
            let now = read_usage(pid);
            usage.cpu_secs += now.cpu_secs;
            usage.peak_rss_mib = usage.peak_rss_mib.max(now.peak_rss_mib);
        }
        usage.name = self.name.clone();
        usage.role = Some(self.role);
        usage
    }

    /// [`Proc::usage`] and, for distcron's own processes, the warnings in
    /// its log, which holds every incarnation's lines: read once, for the
    /// report.
    fn usage_with_warnings(&self) -> Usage {
        let mut usage = self.usage();
        if matches!(self.role, Role::Manager | Role::Worker) {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            let (count, frequent) = warnings_in_log(&text, 3);
            (usage.warnings, usage.frequent_warnings) = (Some(count), frequent);
        }
        usage
    }

    /// Send `signal` to the process.
    pub fn signal(&self, signal: Signal) {
        if let Some(pid) = self.pid() {
            let _ = kill(Pid::from_raw(pid), signal);
        }
    }

    /// SIGKILL it and reap it, keeping its usage.
    pub fn kill(&mut self) {
        self.earlier = self.usage();
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then SIGKILL after `grace`.
    fn stop(&mut self, grace: Duration) {
        self.earlier = self.usage();
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

fn read_usage(pid: i32) -> Usage {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(") ")
        .map_or(vec![], |(_, rest)| rest.split_whitespace().collect());
    let field = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok());
    // utime and stime, in clock ticks (100 a second on Linux).
    let cpu_secs = (field(11).unwrap_or(0.0) + field(12).unwrap_or(0.0)) / 100.0;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let peak_kib = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .unwrap_or(0.0);
    Usage {
        cpu_secs,
        peak_rss_mib: peak_kib / 1024.0,
        ..Usage::default()
    }
}

fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}

pub struct Cluster {
    pub etcd: Vec<Proc>,
    /// Client endpoints (`127.0.0.1:port`) of the etcd members.
    pub etcd_endpoints: Vec<String>,
    pub log_store: Proc,
    pub mongo_uri: String,
    pub managers: Vec<Proc>,
    /// `http://127.0.0.1:port` of each manager.
    pub manager_urls: Vec<String>,
    pub workers: Vec<Proc>,
    /// What a new worker needs: its environment and binary.
    worker_env: Vec<(String, String)>,
    worker_bin: String,
    run_dir: PathBuf,
}

impl Cluster {
    /// Start the whole cluster and wait until every part answers.
    pub fn start(
        tools: &Tools,
        run_dir: &Path,
        managers: usize,
        workers: usize,
        worker_env: &[(String, String)],
    ) -> Result<Cluster, String> {
        let _ = std::fs::remove_dir_all(run_dir);
        std::fs::create_dir_all(run_dir).map_err(|e| format!("{}: {e}", run_dir.display()))?;
        let dir = |name: &str| run_dir.join(name).display().to_string();

        // etcd: three members on loopback. The same flags as
        // tests/support/etcd.rs, written again here: the harness is its own
        // crate (no access to the test helpers) and starts each member as a
        // `Proc`, which measures its CPU seconds and restarts it for chaos.
        let names = ["etcd-0", "etcd-1", "etcd-2"];
        let mut clients = Vec::new();
        let mut peers = Vec::new();
        for _ in names {
            clients.push(format!("127.0.0.1:{}", free_port()?));
            peers.push(format!("http://127.0.0.1:{}", free_port()?));
        }
        let initial: Vec<String> = names
            .iter()
            .zip(&peers)
            .map(|(n, p)| format!("{n}={p}"))
            .collect();
        let etcd: Vec<Proc> = names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let client = format!("http://{}", clients[i]);
                proc_of(
                    name,
                    Role::Etcd,
                    run_dir,
                    vec![
                        "etcd".into(),
                        "--name".into(),
                        name.to_string(),
                        "--data-dir".into(),
                        dir(name),
                        "--listen-client-urls".into(),
                        client.clone(),
                        "--advertise-client-urls".into(),
                        client,
                        "--listen-peer-urls".into(),
                        peers[i].clone(),
                        "--initial-advertise-peer-urls".into(),
                        peers[i].clone(),
                        format!("--initial-cluster={}", initial.join(",")),
                        "--initial-cluster-state=new".into(),
                    ],
                    vec![],
                )
            })
            .collect();

        // The MongoDB-wire server, as a measured `Proc` of the run (the test
        // helpers' copy cannot be used from this crate).
        let mongo_port = free_port()?;
        let log_store = proc_of(
            "log-store",
            Role::LogStore,
            run_dir,
            vec![
                tools.mongo_server.display().to_string(),
                "--host".into(),
                "127.0.0.1".into(),
                "-p".into(),
                mongo_port.to_string(),
                "--data-dir".into(),
                dir("log-store"),
                // Its own pid file: the default one is shared by every
                // nx-27017 on the machine and refuses a second server.
                "--pid-file".into(),
                dir("log-store.pid"),
            ],
            vec![],
        );
        let mongo_uri = format!("mongodb://127.0.0.1:{mongo_port}/?directConnection=true");

        let mut cluster = Cluster {
            etcd,
            etcd_endpoints: clients,
            log_store,
            mongo_uri,
            managers: Vec::new(),
            manager_urls: Vec::new(),
            workers: Vec::new(),
            worker_env: Vec::new(),
            worker_bin: tools.bin_dir.join("distcron-worker").display().to_string(),
            run_dir: run_dir.to_path_buf(),
        };
        for member in &mut cluster.etcd {
            member.spawn()?;
        }
        cluster.log_store.spawn()?;
        cluster.wait_etcd()?;
        cluster.wait_log_store()?;

        let common = vec![
            (
                "DISTCRON_ETCD_ENDPOINTS".to_string(),
                cluster.etcd_endpoints.join(","),
            ),
            ("DISTCRON_MONGODB_URI".into(), cluster.mongo_uri.clone()),
            ("DISTCRON_LOG_LEVEL".into(), "warn".into()),
            (
                "DISTCRON_ADMIN_TOKEN".into(),
                crate::api::ADMIN_TOKEN.into(),
            ),
        ];
        let bin = |name: &str| tools.bin_dir.join(name).display().to_string();
        for i in 0..managers {
            let port = free_port()?;
            let mut env = common.clone();
            env.push(("DISTCRON_LISTEN".into(), format!("127.0.0.1:{port}")));
            env.push(("DISTCRON_WEBROOT".into(), String::new()));
            let mut manager = proc_of(
                &format!("manager-{i}"),
                Role::Manager,
                run_dir,
                vec![bin("distcron-manager")],
                env,
            );
            manager.spawn()?;
            cluster.managers.push(manager);
            cluster
                .manager_urls
                .push(format!("http://127.0.0.1:{port}"));
        }
        cluster.worker_env = common.clone();
        cluster.worker_env.extend(worker_env.iter().cloned());
        for _ in 0..workers {
            cluster.add_worker()?;
        }
        for url in cluster.manager_urls.clone() {
            wait_until(&format!("{url}/readyz"), Duration::from_secs(60), || {
                crate::api::get_ok(&format!("{url}/readyz"))
            })?;
        }
        let first = cluster.manager_urls[0].clone();
        wait_until("every worker registered", Duration::from_secs(60), || {
            crate::api::worker_count(&first) == Some(workers)
        })?;
        Ok(cluster)
    }

    fn wait_etcd(&self) -> Result<(), String> {
        for endpoint in &self.etcd_endpoints {
            let url = format!("http://{endpoint}/health");
            wait_until(&url, Duration::from_secs(60), || crate::api::get_ok(&url))?;
        }
        Ok(())
    }

    pub fn wait_log_store(&self) -> Result<(), String> {
        let address = self
            .mongo_uri
            .trim_start_matches("mongodb://")
            .split('/')
            .next()
            .unwrap_or_default()
            .to_string();
        wait_until("the log store to listen", Duration::from_secs(60), || {
            std::net::TcpStream::connect(&address).is_ok()
        })
    }

    /// Index of the etcd member that is leader now.
    pub fn etcd_leader(&self) -> Option<usize> {
        self.etcd_endpoints.iter().position(|endpoint| {
            crate::api::get_text(&format!("http://{endpoint}/metrics"))
                .is_some_and(|m| m.lines().any(|l| l == "etcd_server_is_leader 1"))
        })
    }

    /// Start one more worker, `worker-<n>`.
    pub fn add_worker(&mut self) -> Result<(), String> {
        let name = format!("worker-{}", self.workers.len());
        let mut env = self.worker_env.clone();
        env.push(("DISTCRON_WORKER_ID".into(), name.clone()));
        env.push((
            "DISTCRON_DATA_DIR".into(),
            self.run_dir.join(&name).display().to_string(),
        ));
        let mut worker = proc_of(
            &name,
            Role::Worker,
            &self.run_dir,
            vec![self.worker_bin.clone()],
            env,
        );
        worker.spawn()?;
        self.workers.push(worker);
        Ok(())
    }

    /// Start a worker again (same id and data) after it was killed.
    pub fn restart_worker(&mut self, worker: usize) -> Result<(), String> {
        self.workers[worker].spawn()
    }

    /// Stop a worker gracefully (SIGTERM, waiting for it to end) and start
    /// it again.
    pub fn cycle_worker(&mut self, worker: usize) -> Result<(), String> {
        self.workers[worker].stop(Duration::from_secs(60));
        self.workers[worker].spawn()
    }

    /// Restart a member that was killed, with its data.
    pub fn restart_etcd(&mut self, member: usize) -> Result<(), String> {
        self.etcd[member].spawn()
    }

    pub fn restart_log_store(&mut self) -> Result<(), String> {
        self.log_store.spawn()?;
        self.wait_log_store()
    }

    /// Client write requests (Put, Txn, DeleteRange) handled so far by all
    /// members together, from etcd's own metrics.
    pub fn etcd_writes(&self) -> u64 {
        self.etcd_endpoints
            .iter()
            .filter_map(|e| crate::api::get_text(&format!("http://{e}/metrics")))
            .map(|text| distcron::coord::etcd::client_writes_in_metrics(&text))
            .sum()
    }

    /// Client requests served and raft proposals committed so far, from
    /// etcd's own metrics: requests summed over the members, proposals
    /// from the member that has seen the most (each commits them all).
    pub fn etcd_requests_and_proposals(&self) -> (u64, u64) {
        let texts: Vec<String> = self
            .etcd_endpoints
            .iter()
            .filter_map(|e| crate::api::get_text(&format!("http://{e}/metrics")))
            .collect();
        let requests = texts
            .iter()
            .map(|t| distcron::coord::etcd::client_requests_in_metrics(t))
            .sum();
        let proposals = texts
            .iter()
            .map(|t| distcron::coord::etcd::proposals_committed_in_metrics(t))
            .max()
            .unwrap_or(0);
        (requests, proposals)
    }

    pub fn usage(&self) -> Vec<Usage> {
        self.etcd
            .iter()
            .chain(std::iter::once(&self.log_store))
            .chain(&self.managers)
            .chain(&self.workers)
            .map(Proc::usage_with_warnings)
            .collect()
    }

    /// Stop the workers first (they flush their run records), then the rest.
    pub fn stop(&mut self) {
        for worker in &mut self.workers {
            worker.signal(Signal::SIGCONT);
        }
        for worker in &mut self.workers {
            worker.stop(Duration::from_secs(15));
        }
        for manager in &mut self.managers {
            manager.stop(Duration::from_secs(5));
        }
        self.log_store.stop(Duration::from_secs(5));
        for member in &mut self.etcd {
            member.stop(Duration::from_secs(5));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
    }
}

fn proc_of(
    name: &str,
    role: Role,
    run_dir: &Path,
    command: Vec<String>,
    env: Vec<(String, String)>,
) -> Proc {
    Proc {
        name: name.to_string(),
        role,
        child: None,
        command,
        env,
        log: run_dir.join(format!("{name}.log")),
        earlier: Usage::default(),
    }
}

/// Poll `ready` every 100 ms until it holds, or fail naming `what`.
pub fn wait_until(
    what: &str,
    timeout: Duration,
    mut ready: impl FnMut() -> bool,
) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    while !ready() {
        if Instant::now() > deadline {
            return Err(format!("timed out waiting for {what}"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::warnings_in_log;

    #[test]
    fn warnings_are_counted_and_grouped_by_their_start() {
        let log = "\
2026-12-04T14:33:47.986211Z  WARN distcron::missed: the sweep failed; will retry error=a
2026-12-04T14:33:57.899484Z  WARN distcron::missed: the sweep failed; will retry error=a
2026-12-04T14:34:00.000000Z  INFO distcron::worker: started
2026-12-04T14:34:01.000000Z ERROR distcron::runlog: flush failed
not a log line
2026-12-04T14:34:02.000000Z DEBUG distcron::coord: WARN in a message is not a level
";
        let (count, frequent) = warnings_in_log(log, 1);
        assert_eq!(count, 3);
        assert_eq!(
            frequent,
            [(
                "WARN distcron::missed: the sweep failed; will retry error=a".to_string(),
                2
            )]
        );
        assert_eq!(warnings_in_log("", 3), (0, vec![]));
    }
}
