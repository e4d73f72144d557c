//! An etcd server owned by one test, for cases that stop and restart it.
//! The one place the Rust tests start etcd. scripts/services.sh starts the
//! shared test server for shell scripts, and the load harness
//! (loadtest/src/cluster.rs) its own measured members: each says why it
//! does not use this.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{OwnedServer, free_port};

/// An `etcd` member on loopback: its name, data directory, client and peer
/// URLs, and the `--initial-cluster` list (`name=peer-url,...`).
pub fn etcd_command(
    name: &str,
    data_dir: &Path,
    client: &str,
    peer: &str,
    cluster: &str,
) -> Command {
    let mut command = Command::new("etcd");
    command
        .args(["--name", name, "--data-dir"])
        .arg(data_dir)
        .args([
            "--listen-client-urls",
            client,
            "--advertise-client-urls",
            client,
        ])
        .args([
            "--listen-peer-urls",
            peer,
            "--initial-advertise-peer-urls",
            peer,
        ])
        .arg(format!("--initial-cluster={cluster}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    command
}

pub struct EtcdProcess {
    child: Option<Child>,
    data_dir: tempfile::TempDir,
    client_port: u16,
    peer_port: u16,
}

impl EtcdProcess {
    /// Start etcd (Debian's `etcd-server`, on PATH) on loopback with a fresh
    /// data directory, and wait until it answers.
    pub async fn start() -> EtcdProcess {
        let mut etcd = EtcdProcess {
            child: None,
            data_dir: tempfile::tempdir().expect("temp dir for etcd"),
            client_port: free_port(),
            peer_port: free_port(),
        };
        etcd.spawn().await;
        etcd
    }

    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    fn log_path(&self) -> PathBuf {
        self.data_dir.path().join("etcd.log")
    }
}

impl OwnedServer for EtcdProcess {
    fn child(&mut self) -> &mut Option<Child> {
        &mut self.child
    }

    async fn spawn(&mut self) {
        let client = format!("http://127.0.0.1:{}", self.client_port);
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("etcd log file");
        let child = etcd_command(
            "test",
            &self.data_dir.path().join("data"),
            &client,
            &peer,
            &format!("test={peer}"),
        )
        .stderr(log)
        .spawn()
        .expect("start etcd (install etcd-server, or run scripts/test.sh)");
        self.child = Some(child);
        let health = format!("{client}/health");
        super::eventually("etcd to answer /health", Duration::from_secs(30), || {
            let health = health.clone();
            async move {
                let ok = tokio::process::Command::new("curl")
                    .args(["-sf", &health])
                    .stdout(Stdio::null())
                    .status()
                    .await
                    .is_ok_and(|s| s.success());
                ok.then_some(())
            }
        })
        .await;
    }
}

impl Drop for EtcdProcess {
    fn drop(&mut self) {
        self.stop();
    }
}
