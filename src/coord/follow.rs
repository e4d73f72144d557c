//! List-then-watch, written once: follow some prefixes of the coordinator
//! and deliver a full listing, then the changes, and a fresh listing after
//! every resync (compaction, a cancelled watch, an outage).
//!
//! The follower owns its task and the watches under it; dropping the
//! [`Follower`] ends them all, so a resync never leaves an old watch behind.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::{Coordinator, KeyValue, WatchEvent, WatchItem};

/// Pause before listing again after a failure.
const RETRY: Duration = Duration::from_secs(1);

/// What a follower delivers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Followed {
    /// Every key of every prefix, at one point: replace what you knew.
    Listed(Vec<(&'static str, Vec<KeyValue>)>),
    /// Changes under one prefix, in revision order.
    Changed(&'static str, Vec<WatchEvent>),
}

/// A running follow; dropping it stops the task and its watches.
pub struct Follower {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Follow `prefixes`. `deliver` gets every listing and change; it answers
/// `false` once nobody wants them any more, which ends the follow.
pub fn follow(
    coord: Arc<dyn Coordinator>,
    prefixes: &[&'static str],
    deliver: impl Fn(Followed) -> bool + Send + Sync + 'static,
) -> Follower {
    let prefixes = prefixes.to_vec();
    let task = tokio::spawn(async move {
        loop {
            match follow_once(&*coord, &prefixes, &deliver).await {
                Ended::Unwanted => return,
                Ended::Resync(reason) => {
                    tracing::info!(?prefixes, %reason, "listing again");
                }
                Ended::Failed(error) => {
                    tracing::warn!(?prefixes, %error, "cannot follow the keyspace; listing again");
                    tokio::time::sleep(RETRY).await;
                }
            }
        }
    });
    Follower { task }
}

enum Ended {
    Unwanted,
    Resync(String),
    Failed(String),
}

/// Aborts the watch forwarders of one listing when it ends.
struct Forwarders(Vec<tokio::task::JoinHandle<()>>);

impl Drop for Forwarders {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

async fn follow_once(
    coord: &dyn Coordinator,
    prefixes: &[&'static str],
    deliver: &(impl Fn(Followed) -> bool + Send + Sync),
) -> Ended {
    let mut lists = Vec::new();
    let mut streams = Vec::new();
    for prefix in prefixes {
        let (kvs, revision) = match coord.list(prefix).await {
            Ok(listed) => listed,
            Err(error) => return Ended::Failed(error.to_string()),
        };
        match coord.watch(prefix, revision + 1).await {
            Ok(stream) => streams.push((*prefix, stream)),
            Err(error) => return Ended::Failed(error.to_string()),
        }
        lists.push((*prefix, kvs));
    }
    if !deliver(Followed::Listed(lists)) {
        return Ended::Unwanted;
    }
    let (tx, mut rx) = mpsc::channel(64);
    let _forwarders = Forwarders(
        streams
            .into_iter()
            .map(|(prefix, mut stream)| {
                let tx = tx.clone();
                tokio::spawn(async move {
                    while let Some(item) = stream.recv().await {
                        if tx.send((prefix, Some(item))).await.is_err() {
                            return;
                        }
                    }
                    let _ = tx.send((prefix, None)).await;
                })
            })
            .collect(),
    );
    drop(tx);
    loop {
        match rx.recv().await {
            Some((prefix, Some(WatchItem::Events(events)))) => {
                if !deliver(Followed::Changed(prefix, events)) {
                    return Ended::Unwanted;
                }
            }
            Some((prefix, Some(WatchItem::Resync { reason }))) => {
                return Ended::Resync(format!("{prefix}: {reason}"));
            }
            Some((prefix, None)) => return Ended::Failed(format!("the watch on {prefix} ended")),
            None => return Ended::Failed("every watch ended".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coord::embedded::EmbeddedCoordinator;

    #[tokio::test]
    async fn a_follower_lists_then_watches_and_stops_when_dropped() {
        let coord: Arc<dyn Coordinator> = Arc::new(EmbeddedCoordinator::in_memory());
        coord.put("jobs/a", b"1".to_vec(), None).await.unwrap();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let follower = follow(coord.clone(), &["jobs/", "kill/"], move |f| {
            tx.send(f).is_ok()
        });
        let Some(Followed::Listed(lists)) = rx.recv().await else {
            panic!("a listing first");
        };
        assert_eq!(lists.len(), 2);
        assert_eq!(lists[0].1.len(), 1, "jobs/a");
        coord.put("kill/a", b"now".to_vec(), None).await.unwrap();
        match rx.recv().await {
            Some(Followed::Changed("kill/", events)) => assert_eq!(events[0].key(), "kill/a"),
            other => panic!("the change: {other:?}"),
        }
        drop(follower);
        coord.put("jobs/b", b"2".to_vec(), None).await.unwrap();
        // The task and its watches are gone: the channel closes.
        let after = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await;
        assert!(
            matches!(after, Ok(None)),
            "nothing after the drop: {after:?}"
        );
    }
}
