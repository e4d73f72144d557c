//! A 3-member etcd cluster on loopback: the etcd engine, given all three
//! endpoints, keeps working when one member is SIGKILLed under a live
//! watch and session.

mod support;

use std::process::Child;
use std::sync::Arc;
use std::time::Duration;

use distcron::coord::etcd::{EtcdCoordinator, EtcdOptions};
use distcron::coord::session::Session;
use distcron::coord::{Coordinator, WatchItem};
use support::etcd::etcd_command;
use support::{eventually, free_port};

struct Member {
    child: Child,
    client: String,
}

impl Drop for Member {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_cluster(dir: &std::path::Path) -> Vec<Member> {
    let peers: Vec<(String, u16, u16)> = (0..3)
        .map(|i| (format!("m{i}"), free_port(), free_port()))
        .collect();
    let initial: Vec<String> = peers
        .iter()
        .map(|(n, _, p)| format!("{n}=http://127.0.0.1:{p}"))
        .collect();
    peers
        .iter()
        .map(|(name, client_port, peer_port)| {
            let client = format!("http://127.0.0.1:{client_port}");
            let peer = format!("http://127.0.0.1:{peer_port}");
            let child = etcd_command(name, &dir.join(name), &client, &peer, &initial.join(","))
                .args([
                    "--initial-cluster-state",
                    "new",
                    "--initial-cluster-token",
                    "distcron-test",
                ])
                .spawn()
                .expect("start etcd");
            Member {
                child,
                client: format!("127.0.0.1:{client_port}"),
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_member_cluster_survives_the_loss_of_one_member() {
    let dir = tempfile::tempdir().unwrap();
    let mut members = start_cluster(dir.path());
    let endpoints: Vec<String> = members.iter().map(|m| m.client.clone()).collect();
    let mut options = EtcdOptions::new(endpoints, "/distcron/");
    options.request_timeout = Duration::from_secs(2);
    options.dial_timeout = Duration::from_secs(1);
    let c: Arc<dyn Coordinator> = Arc::new(EtcdCoordinator::connect(options).await.unwrap());
    eventually(
        "the cluster to elect a leader and take writes",
        Duration::from_secs(30),
        || {
            let c = c.clone();
            async move { c.put("jobs/first", b"1".to_vec(), None).await.ok() }
        },
    )
    .await;
    let (_, revision) = c.list("jobs/").await.unwrap();
    let mut watch = c.watch("jobs/", revision + 1).await.unwrap();
    // The default session TTL: the loss of a member (an election, and the
    // client moving to a live endpoint) must fit in it. With 5 s it did not
    // always, on two cores shared with the rest of the test suite.
    let session = Session::start(c.clone(), Duration::from_secs(10))
        .await
        .unwrap();

    // Lose one member: quorum (2 of 3) remains.
    drop(members.remove(0));
    let revision = eventually(
        "writes through the surviving members",
        Duration::from_secs(20),
        || {
            let c = c.clone();
            async move { c.put("jobs/after", b"2".to_vec(), None).await.ok() }
        },
    )
    .await;
    assert_eq!(
        c.get("jobs/after").await.unwrap().map(|kv| kv.value),
        Some(b"2".to_vec())
    );
    let seen = eventually(
        "the watch to deliver the write",
        Duration::from_secs(20),
        || {
            let item = watch.try_recv().ok();
            async move { item }
        },
    )
    .await;
    match seen {
        WatchItem::Events(events) => {
            assert!(
                events
                    .iter()
                    .any(|e| e.key() == "jobs/after" && e.revision() == revision),
                "{events:?}"
            );
        }
        WatchItem::Resync { reason } => panic!("unexpected resync: {reason}"),
    }
    // The session is kept alive through the remaining members for 3 TTLs.
    let lost = tokio::time::timeout(Duration::from_secs(30), session.lost()).await;
    assert!(
        lost.is_err() && session.is_alive(),
        "the session must survive the loss of one member"
    );
}
