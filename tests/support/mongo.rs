//! A MongoDB-wire server (nx-27017) owned by one test, for cases that stop
//! and restart it. The binary comes from `NX_27017_BIN` (set by
//! scripts/services.sh) or PATH. The one place the Rust tests start it;
//! scripts/services.sh starts the shared one for the scripts, and the load
//! harness its own measured `log-store` process (loadtest/src/cluster.rs).

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{OwnedServer, free_port};

pub struct MongoProcess {
    child: Option<Child>,
    data_dir: tempfile::TempDir,
    port: u16,
}

impl MongoProcess {
    pub async fn start() -> MongoProcess {
        let mut server = MongoProcess {
            child: None,
            data_dir: tempfile::tempdir().expect("temp dir for the MongoDB-wire server"),
            port: free_port(),
        };
        server.spawn().await;
        server
    }

    pub fn uri(&self) -> String {
        format!("mongodb://127.0.0.1:{}/?directConnection=true", self.port)
    }
}

impl OwnedServer for MongoProcess {
    fn child(&mut self) -> &mut Option<Child> {
        &mut self.child
    }

    async fn spawn(&mut self) {
        let bin = std::env::var("NX_27017_BIN").unwrap_or_else(|_| "nx-27017".into());
        let dir = self.data_dir.path();
        let child = Command::new(&bin)
            .args([
                "--host",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "--data-dir",
            ])
            .arg(dir.join("data"))
            .arg("--log-file")
            .arg(dir.join("server.log"))
            .arg("--pid-file")
            .arg(dir.join("server.pid"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {bin} (run scripts/test.sh): {e}"));
        self.child = Some(child);
        let port = self.port;
        super::eventually(
            "the MongoDB-wire server to accept connections",
            Duration::from_secs(30),
            || async move {
                tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .ok()
                    .map(|_| ())
            },
        )
        .await;
    }
}

impl Drop for MongoProcess {
    fn drop(&mut self) {
        self.stop();
    }
}
