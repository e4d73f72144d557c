//! Helpers shared by the integration tests: real servers on loopback, and
//! waiting for a condition with a deadline instead of sleeping.
#![allow(dead_code)] // each test binary uses a different subset

pub mod etcd;
pub mod fleet;
pub mod mongo;

use std::future::Future;
use std::process::Child;
use std::time::Duration;

/// A server process one test owns, to stop (SIGKILL, the harshest case for
/// clients) and restart on the same ports and data.
pub trait OwnedServer {
    fn child(&mut self) -> &mut Option<Child>;

    /// Start the process and wait until it answers.
    fn spawn(&mut self) -> impl Future<Output = ()>;

    fn stop(&mut self) {
        if let Some(mut child) = self.child().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn restart(&mut self) -> impl Future<Output = ()> {
        async move {
            self.stop();
            self.spawn().await
        }
    }
}

/// A distcron process a test started; killed and reaped when dropped.
pub struct Process(pub Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Start a distcron binary with the test admin token and `env`, and no
/// config file.
pub fn spawn_distcron(binary: &str, env: &[(&str, String)]) -> Process {
    let mut command = std::process::Command::new(binary);
    command
        .env_remove("DISTCRON_CONFIG")
        .env("DISTCRON_ADMIN_TOKEN", ADMIN_TOKEN)
        .stdin(std::process::Stdio::null());
    for (key, value) in env {
        command.env(key, value);
    }
    Process(
        command
            .spawn()
            .unwrap_or_else(|e| panic!("start {binary}: {e}")),
    )
}

/// Start `n` managers with `common` settings on free loopback ports:
/// their processes and base URLs.
pub fn start_managers(n: usize, common: &[(&str, String)]) -> (Vec<Process>, Vec<String>) {
    let (mut processes, mut bases) = (Vec::new(), Vec::new());
    for _ in 0..n {
        let listen = format!("127.0.0.1:{}", free_port());
        let mut env = common.to_vec();
        env.push(("DISTCRON_LISTEN", listen.clone()));
        processes.push(spawn_distcron(env!("CARGO_BIN_EXE_distcron-manager"), &env));
        bases.push(format!("http://{listen}"));
    }
    (processes, bases)
}

/// Start a worker with id `id` and `common` settings.
pub fn start_worker(id: &str, common: &[(&str, String)]) -> Process {
    let mut env = common.to_vec();
    env.push(("DISTCRON_WORKER_ID", id.to_string()));
    spawn_distcron(env!("CARGO_BIN_EXE_distcron-worker"), &env)
}

/// The endpoint of a real service from the environment (`ETCD_ENDPOINTS`,
/// `MONGODB_URI`). A test that needs one fails without it, naming the
/// command that provides it: it never passes without running.
pub fn service_endpoint(var: &str) -> String {
    match std::env::var(var) {
        Ok(value) if !value.is_empty() => value,
        _ => panic!(
            "{var} is not set, and this test needs the real server. Run scripts/test.sh, \
             or start the servers in this shell first: \
             source scripts/services.sh && start_services && cargo test"
        ),
    }
}

/// A name unique to this process and call, for key prefixes and databases.
pub fn unique(label: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{label}-{}-{nanos}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Poll `check` until it returns `Some`, or panic after `deadline`.
pub async fn eventually<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let give_up = tokio::time::Instant::now() + deadline;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if tokio::time::Instant::now() >= give_up {
            panic!("timed out after {deadline:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A free TCP port on 127.0.0.1 (released before it is returned; good enough
/// for tests that start a server on it right away).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port on 127.0.0.1")
}

/// `distcron standalone` on a fresh port and data directory, started with
/// the test admin token; killed and reaped when dropped.
pub struct Standalone {
    pub child: Child,
    pub base: String,
    pub listen: String,
    pub dir: std::sync::Arc<tempfile::TempDir>,
}

impl Drop for Standalone {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Standalone {
    /// A new standalone with `extra` configuration flags.
    pub async fn start(extra: &[&str]) -> Standalone {
        let listen = format!("127.0.0.1:{}", free_port());
        let dir = std::sync::Arc::new(tempfile::tempdir().unwrap());
        Standalone::start_in(dir, listen, extra).await
    }

    /// A standalone on `listen` over the data in `dir` (a restart when reused).
    pub async fn start_in(
        dir: std::sync::Arc<tempfile::TempDir>,
        listen: String,
        extra: &[&str],
    ) -> Standalone {
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_distcron"))
            .args(["standalone", "--listen", &listen, "--log-level", "warn"])
            .args(["--kill-grace-ms", "500"])
            .arg("--data-dir")
            .arg(dir.path())
            .args(extra)
            .env("DISTCRON_ADMIN_TOKEN", ADMIN_TOKEN)
            .stdin(std::process::Stdio::null())
            .spawn()
            .expect("start distcron standalone");
        let base = format!("http://{listen}");
        wait_http_ok(&format!("{base}/healthz")).await;
        Standalone {
            child,
            base,
            listen,
            dir,
        }
    }
}

/// The admin token the end-to-end tests start every manager and standalone
/// with (`DISTCRON_ADMIN_TOKEN`), and that [`curl`] sends.
pub const ADMIN_TOKEN: &str = "e2e-admin-token-0123456789";

/// Run curl with the test admin token and parse its answer as JSON (None on
/// any failure), as an operator's client would call the API.
pub fn curl(args: &[&str]) -> Option<serde_json::Value> {
    let out = std::process::Command::new("curl")
        .args(["-H", &format!("Authorization: Bearer {ADMIN_TOKEN}")])
        .args(args)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).ok())
        .flatten()
}

/// Wait until `GET url` answers 200.
pub async fn wait_http_ok(url: &str) {
    let url = url.to_string();
    eventually(&format!("{url} to answer"), Duration::from_secs(30), || {
        let url = url.clone();
        async move { curl(&["-sf", &url]).map(|_| ()) }
    })
    .await;
}

/// Save a job through the old form API of the manager at `base`.
pub fn save_job(base: &str, job_json: &str) -> Option<serde_json::Value> {
    curl(&[
        "-sf",
        "-X",
        "POST",
        &format!("{base}/job/save"),
        "--data-urlencode",
        &format!("job={job_json}"),
    ])
}

/// `POST {base}{path}` with the form `name=...`.
pub fn post_name(base: &str, path: &str, name: &str) -> Option<serde_json::Value> {
    curl(&[
        "-sf",
        "-X",
        "POST",
        &format!("{base}{path}"),
        "-d",
        &format!("name={name}"),
    ])
}
