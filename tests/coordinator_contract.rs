//! The coordinator contract: one suite, run against the embedded engine and
//! against a real etcd (`ETCD_ENDPOINTS`, started by `scripts/test.sh`).

mod support;

use std::sync::Arc;
use std::time::Duration;

use distcron::coord::embedded::EmbeddedCoordinator;
use distcron::coord::etcd::{EtcdCoordinator, EtcdOptions};
use distcron::coord::session::Session;
use distcron::coord::{Claim, CoordError, Coordinator, WatchEvent, WatchItem, WatchStream, Write};
use support::{OwnedServer, eventually, service_endpoint, unique};

/// Generous bound for anything etcd does on a loaded 2-core machine.
const DEADLINE: Duration = Duration::from_secs(20);

async fn embedded() -> Option<Arc<dyn Coordinator>> {
    Some(Arc::new(EmbeddedCoordinator::in_memory()))
}

async fn etcd() -> Option<Arc<dyn Coordinator>> {
    let endpoints = service_endpoint("ETCD_ENDPOINTS");
    let prefix = format!("/{}/", unique("contract"));
    let options = EtcdOptions::new(endpoints.split(',').map(String::from).collect(), &prefix);
    Some(Arc::new(
        EtcdCoordinator::connect(options)
            .await
            .expect("connect to etcd"),
    ))
}

/// Receive watch items until `want` events have arrived.
async fn collect_events(stream: &mut WatchStream, want: usize) -> Vec<WatchEvent> {
    let mut events = Vec::new();
    while events.len() < want {
        match tokio::time::timeout(DEADLINE, stream.recv()).await {
            Ok(Some(WatchItem::Events(batch))) => events.extend(batch),
            Ok(Some(WatchItem::Resync { reason })) => panic!("unexpected resync: {reason}"),
            Ok(None) => panic!("watch ended after {} events", events.len()),
            Err(_) => panic!(
                "timed out with {} of {want} events: {events:?}",
                events.len()
            ),
        }
    }
    events
}

/// Instantiate every contract test for one engine.
macro_rules! contract_suite {
    ($engine:ident) => {
        mod $engine {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn put_get_list_delete_round_trip() {
                let Some(c) = super::$engine().await else {
                    return;
                };
                let r1 = c.put("jobs/a", b"1".to_vec(), None).await.unwrap();
                let r2 = c.put("jobs/b", b"2".to_vec(), None).await.unwrap();
                c.put("workers/x", b"w".to_vec(), None).await.unwrap();
                assert!(r2 > r1, "revisions grow");
                let a = c.get("jobs/a").await.unwrap().expect("jobs/a exists");
                assert_eq!(
                    (a.key.as_str(), a.value.as_slice(), a.mod_revision),
                    ("jobs/a", &b"1"[..], r1)
                );

                let r3 = c.put("jobs/a", b"1b".to_vec(), None).await.unwrap();
                let a = c.get("jobs/a").await.unwrap().unwrap();
                assert_eq!(
                    (a.create_revision, a.mod_revision),
                    (r1, r3),
                    "update keeps create revision"
                );

                let (jobs, revision) = c.list("jobs/").await.unwrap();
                assert_eq!(
                    jobs.iter().map(|kv| kv.key.as_str()).collect::<Vec<_>>(),
                    ["jobs/a", "jobs/b"]
                );
                assert!(revision >= r3);

                let deleted = c.delete("jobs/a").await.unwrap().expect("deleted value");
                assert_eq!(deleted.value, b"1b");
                assert_eq!(c.get("jobs/a").await.unwrap(), None);
                assert_eq!(
                    c.delete("jobs/a").await.unwrap(),
                    None,
                    "second delete finds nothing"
                );
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn write_all_applies_puts_and_deletes_in_one_revision_or_none() {
                let Some(c) = super::$engine().await else {
                    return;
                };
                let before = c.put("running/old", b"o".to_vec(), None).await.unwrap();
                let lease = c.grant(Duration::from_secs(30)).await.unwrap();
                let mut watch = c.watch("running/", before + 1).await.unwrap();
                let put = |key: &str, lease| Write::Put {
                    key: key.into(),
                    value: b"v".to_vec(),
                    lease,
                };
                let delete = |key: &str| Write::Delete { key: key.into() };
                let batch = [
                    put("running/a", Some(lease)),
                    put("running/b", None),
                    delete("running/old"),
                    delete("running/never"),
                ];
                let revision = c.write_all(&batch).await.unwrap();
                assert!(revision > before);
                let a = c.get("running/a").await.unwrap().expect("running/a put");
                assert_eq!((a.mod_revision, a.lease), (revision, lease));
                let b = c.get("running/b").await.unwrap().expect("running/b put");
                assert_eq!((b.mod_revision, b.lease), (revision, 0));
                assert_eq!(c.get("running/old").await.unwrap(), None);
                let events = collect_events(&mut watch, 3).await;
                assert!(
                    events.iter().all(|e| e.revision() == revision),
                    "one revision: {events:?}"
                );
                let mut keys: Vec<&str> = events.iter().map(WatchEvent::key).collect();
                keys.sort();
                assert_eq!(keys, ["running/a", "running/b", "running/old"]);

                // A put on an ended lease fails the batch: its delete stays undone.
                c.revoke(lease).await.unwrap();
                let refused = c
                    .write_all(&[put("running/c", Some(lease)), delete("running/b")])
                    .await;
                assert_eq!(refused, Err(CoordError::LeaseNotFound(lease)));
                assert!(c.get("running/b").await.unwrap().is_some());
                assert_eq!(c.get("running/c").await.unwrap(), None);

                // Deleting only what is absent changes nothing.
                let (_, now) = c.list("running/").await.unwrap();
                let same = c.write_all(&[delete("running/never")]).await.unwrap();
                assert_eq!(same, now);
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn list_first_pages_a_prefix_in_key_order() {
                let Some(c) = super::$engine().await else {
                    return;
                };
                for name in ["c", "a", "d", "b"] {
                    c.put(&format!("jobs/{name}"), b"j".to_vec(), None)
                        .await
                        .unwrap();
                }
                c.put("jobsx/z", b"other prefix".to_vec(), None)
                    .await
                    .unwrap();
                let keys = |kvs: Vec<distcron::coord::KeyValue>| {
                    kvs.into_iter().map(|kv| kv.key).collect::<Vec<_>>()
                };
                assert_eq!(
                    keys(c.list_first("jobs/", 2).await.unwrap()),
                    ["jobs/a", "jobs/b"]
                );
                assert_eq!(
                    keys(c.list_first("jobs/", 10).await.unwrap()),
                    ["jobs/a", "jobs/b", "jobs/c", "jobs/d"]
                );
                assert!(c.list_first("jobs/", 0).await.unwrap().is_empty());
            }

            /// More keys than one page (10,000) and more bytes than one gRPC
            /// message (4 MiB) in a page: all of them, in key order, nothing
            /// from a neighbouring prefix.
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn list_reads_a_prefix_larger_than_a_page_and_a_message() {
                let Some(c) = super::$engine().await else {
                    return;
                };
                let value = |i: usize| format!("{i:05}{}", "v".repeat(500)).into_bytes();
                let mut last_revision = 0;
                for chunk in (0..10_100).collect::<Vec<usize>>().chunks(100) {
                    let puts: Vec<distcron::coord::CondPut> = chunk
                        .iter()
                        .map(|i| distcron::coord::CondPut {
                            key: format!("big/{i:05}"),
                            when: distcron::coord::Condition::Absent,
                            value: value(*i),
                            lease: None,
                        })
                        .collect();
                    match c.put_all_if(&puts).await.unwrap() {
                        distcron::coord::BatchPut::AllPut { revision } => last_revision = revision,
                        other => panic!("fresh keys not put: {other:?}"),
                    }
                }
                c.put("bigx/z", b"other prefix".to_vec(), None)
                    .await
                    .unwrap();
                let (kvs, revision) = c.list("big/").await.unwrap();
                assert_eq!(kvs.len(), 10_100, "every key under the prefix");
                for (i, kv) in kvs.iter().enumerate() {
                    assert_eq!(kv.key, format!("big/{i:05}"), "key order");
                    assert_eq!(kv.value, value(i), "the value of {}", kv.key);
                }
                assert!(revision >= last_revision, "{revision} < {last_revision}");
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn put_if_absent_names_the_holder() {
                let Some(c) = super::$engine().await else {
                    return;
                };
                assert!(matches!(
                    c.put_if_absent("ticks/j/1", b"w1".to_vec(), None)
                        .await
                        .unwrap(),
                    Claim::Won { .. }
                ));
                match c
                    .put_if_absent("ticks/j/1", b"w2".to_vec(), None)
                    .await
                    .unwrap()
                {
                    Claim::Held(holder) => assert_eq!(holder.value, b"w1"),
                    other => panic!("second claim should lose, got {other:?}"),
                }
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn put_if_value_replaces_only_the_expected_value_and_moves_the_lease() {
                let Some(c) = super::$engine().await else {
                    return;
                };
                let session = c.grant(Duration::from_secs(30)).await.unwrap();
                let kept = c.grant(Duration::from_secs(300)).await.unwrap();
                c.put_if_absent("ticks/cas/1", b"w1 n1".to_vec(), Some(session))
                    .await
                    .unwrap();
                assert!(
                    !c.put_if_value("ticks/cas/1", b"w2 n2", b"w2 n2".to_vec(), Some(kept))
                        .await
                        .unwrap(),
                    "another value is not replaced"
                );
                assert!(
                    !c.put_if_value("ticks/cas/absent", b"", b"x".to_vec(), None)
                        .await
                        .unwrap(),
                    "a missing key never matches"
                );
                assert_eq!(c.get("ticks/cas/absent").await.unwrap(), None);
                assert!(
                    c.put_if_value("ticks/cas/1", b"w1 n1", b"w1 n1".to_vec(), Some(kept))
                        .await
                        .unwrap()
                );
                assert_eq!(c.get("ticks/cas/1").await.unwrap().unwrap().lease, kept);
                // Moved off the session lease: it outlives the session.
                c.revoke(session).await.unwrap();
                let kv = c.get("ticks/cas/1").await.unwrap().expect("kept");
                assert_eq!(kv.value, b"w1 n1");
                c.revoke(kept).await.unwrap();
                assert_eq!(c.get("ticks/cas/1").await.unwrap(), None);
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn thousand_races_of_two_contenders_have_one_winner_each() {
                let Some(c) = super::$engine().await else {
                    return;
                };
                let mut races = tokio::task::JoinSet::new();
                for i in 0..1000 {
                    let (a, b) = (c.clone(), c.clone());
                    races.spawn(async move {
                        let key = format!("ticks/race/{i}");
                        let (ra, rb) = tokio::join!(
                            a.put_if_absent(&key, b"a".to_vec(), None),
                            b.put_if_absent(&key, b"b".to_vec(), None)
                        );
                        (ra.unwrap(), rb.unwrap())
                    });
                }
                let mut winners = 0;
                while let Some(result) = races.join_next().await {
                    match result.unwrap() {
                        (Claim::Won { .. }, Claim::Held(h)) => {
                            assert_eq!(h.value, b"a");
                            winners += 1;
                        }
                        (Claim::Held(h), Claim::Won { .. }) => {
                            assert_eq!(h.value, b"b");
                            winners += 1;
                        }
                        other => panic!("expected exactly one winner, got {other:?}"),
                    }
                }
                assert_eq!(winners, 1000);
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn lease_expiry_deletes_its_keys_and_emits_delete_events() {
                let Some(c) = super::$engine().await else {
                    return;
                };
                let (_, revision) = c.list("running/").await.unwrap();
                let mut watch = c.watch("running/", revision + 1).await.unwrap();
                let lease = c.grant(Duration::from_secs(2)).await.unwrap();
                c.put("running/j/1", b"r".to_vec(), Some(lease))
                    .await
                    .unwrap();
                c.put("running/j/2", b"r".to_vec(), Some(lease))
                    .await
                    .unwrap();
                let events = collect_events(&mut watch, 4).await;
                let deletes: Vec<&str> = events
                    .iter()
                    .filter_map(|e| match e {
                        WatchEvent::Delete { key, .. } => Some(key.as_str()),
                        _ => None,
                    })
                    .collect();
                assert_eq!(deletes, ["running/j/1", "running/j/2"]);
                assert_eq!(c.list("running/").await.unwrap().0, vec![]);
                assert_eq!(
                    c.keep_alive(lease).await,
                    Err(CoordError::LeaseNotFound(lease))
                );
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn keep_alive_holds_a_lease_past_its_ttl() {
                let Some(c) = super::$engine().await else {
                    return;
                };
                let lease = c.grant(Duration::from_secs(2)).await.unwrap();
                c.put("workers/w", b"w".to_vec(), Some(lease))
                    .await
                    .unwrap();
                let until = tokio::time::Instant::now() + Duration::from_secs(5);
                while tokio::time::Instant::now() < until {
                    assert!(c.keep_alive(lease).await.unwrap() >= Duration::from_secs(1));
                    assert!(
                        c.get("workers/w").await.unwrap().is_some(),
                        "key outlived its TTL"
                    );
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn revoke_deletes_keys_and_the_lease_is_gone() {
                let Some(c) = super::$engine().await else {
                    return;
                };
                let lease = c.grant(Duration::from_secs(30)).await.unwrap();
                c.put("kill/j", b"k".to_vec(), Some(lease)).await.unwrap();
                c.revoke(lease).await.unwrap();
                assert_eq!(c.get("kill/j").await.unwrap(), None);
                assert_eq!(
                    c.keep_alive(lease).await,
                    Err(CoordError::LeaseNotFound(lease))
                );
                assert_eq!(
                    c.put("kill/j", b"k".to_vec(), Some(lease)).await,
                    Err(CoordError::LeaseNotFound(lease)),
                    "a put on a dead lease fails and stores nothing"
                );
                assert_eq!(c.get("kill/j").await.unwrap(), None);
                c.revoke(lease).await.expect("revoking twice is fine");
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn watch_resumed_from_a_revision_misses_nothing() {
                let Some(c) = super::$engine().await else {
                    return;
                };
                let mut revisions = Vec::new();
                for i in 0..10 {
                    revisions.push(c.put(&format!("jobs/j{i}"), vec![i], None).await.unwrap());
                }
                c.put("other/x", b"x".to_vec(), None).await.unwrap();
                // Resume as a caller that had seen up to j4.
                let mut watch = c.watch("jobs/", revisions[5]).await.unwrap();
                c.delete("jobs/j0").await.unwrap();
                c.put("jobs/j10", vec![10], None).await.unwrap();
                let events = collect_events(&mut watch, 7).await;
                let seen: Vec<String> = events
                    .iter()
                    .map(|e| match e {
                        WatchEvent::Put(kv) => format!("put {}", kv.key),
                        WatchEvent::Delete { key, .. } => format!("delete {key}"),
                    })
                    .collect();
                assert_eq!(
                    seen,
                    [
                        "put jobs/j5",
                        "put jobs/j6",
                        "put jobs/j7",
                        "put jobs/j8",
                        "put jobs/j9",
                        "delete jobs/j0",
                        "put jobs/j10"
                    ]
                );
                let revs: Vec<i64> = events.iter().map(|e| e.revision()).collect();
                assert!(
                    revs.windows(2).all(|w| w[0] < w[1]),
                    "in revision order: {revs:?}"
                );
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn session_signals_loss_when_its_lease_ends() {
                let Some(c) = super::$engine().await else {
                    return;
                };
                let session = Session::start(c.clone(), Duration::from_secs(3))
                    .await
                    .unwrap();
                assert!(session.is_alive());
                c.revoke(session.lease()).await.unwrap();
                tokio::time::timeout(DEADLINE, session.lost())
                    .await
                    .expect("loss signalled within the deadline");
                assert!(!session.is_alive());
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn session_stays_alive_while_kept_and_revoke_ends_it() {
                let Some(c) = super::$engine().await else {
                    return;
                };
                let session = Session::start(c.clone(), Duration::from_secs(2))
                    .await
                    .unwrap();
                c.put("workers/me", b"me".to_vec(), Some(session.lease()))
                    .await
                    .unwrap();
                let lost = tokio::time::timeout(Duration::from_secs(5), session.lost()).await;
                assert!(
                    lost.is_err(),
                    "session must survive 2.5 TTLs while kept alive"
                );
                assert!(session.is_alive());
                assert!(c.get("workers/me").await.unwrap().is_some());
                session.revoke().await.unwrap();
                assert_eq!(c.get("workers/me").await.unwrap(), None);
            }
        }
    };
}

contract_suite!(embedded);
contract_suite!(etcd);

// --- Engine-specific cases -------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_keeps_unleased_keys_across_a_restart_but_not_leased_ones() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("coord.redb");
    let revision = {
        let c = EmbeddedCoordinator::open(&path).unwrap();
        c.put("jobs/keep", b"job".to_vec(), None).await.unwrap();
        c.put("jobs/gone", b"job".to_vec(), None).await.unwrap();
        c.delete("jobs/gone").await.unwrap();
        let lease = c.grant(Duration::from_secs(60)).await.unwrap();
        c.put("workers/w", b"w".to_vec(), Some(lease))
            .await
            .unwrap();
        c.list("").await.unwrap().1
    };
    // The dropped store's lease reaper (another thread) may hold the last
    // handle for a moment; a real restart is a new process and never waits.
    let c = eventually("the store's file lock to be released", DEADLINE, || {
        let path = path.clone();
        async move { EmbeddedCoordinator::open(&path).ok() }
    })
    .await;
    let (keys, after) = c.list("").await.unwrap();
    assert_eq!(
        keys.iter().map(|kv| kv.key.as_str()).collect::<Vec<_>>(),
        ["jobs/keep"]
    );
    assert_eq!(keys[0].value, b"job");
    assert!(
        after <= revision,
        "revisions never go past what was handed out"
    );
    let next = c.put("jobs/new", b"n".to_vec(), None).await.unwrap();
    assert!(
        next > keys[0].mod_revision,
        "revisions keep growing after a restart"
    );
    // History from before the restart is gone: such a watch must resync.
    let mut watch = c.watch("jobs/", 1).await.unwrap();
    assert!(matches!(watch.recv().await, Some(WatchItem::Resync { .. })));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_keeps_confirmed_tick_claims_across_a_restart_until_their_lease_ends() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("coord.redb");
    {
        let c = EmbeddedCoordinator::open(&path).unwrap();
        let session = c.grant(Duration::from_secs(10)).await.unwrap();
        let bucket = c.grant(Duration::from_secs(120)).await.unwrap();
        let short = c.grant(Duration::from_secs(61)).await.unwrap();
        c.put_if_absent("ticks/j/1", b"w1 a".to_vec(), Some(session))
            .await
            .unwrap();
        c.put_if_absent("ticks/j/2", b"w1 b".to_vec(), Some(session))
            .await
            .unwrap();
        // Tick 1 started (confirmed onto its bucket); tick 2 never did.
        assert!(
            c.put_if_value("ticks/j/1", b"w1 a", b"w1 a".to_vec(), Some(bucket))
                .await
                .unwrap()
        );
        c.put_if_absent("ticks/j/3", b"w1 c".to_vec(), Some(short))
            .await
            .unwrap();
        c.put("running/j/r", b"r".to_vec(), Some(bucket))
            .await
            .unwrap();
    }
    let c = eventually("the store's file lock to be released", DEADLINE, || {
        let path = path.clone();
        async move { EmbeddedCoordinator::open(&path).ok() }
    })
    .await;
    let (keys, _) = c.list("").await.unwrap();
    let names: Vec<&str> = keys.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(
        names,
        ["ticks/j/1", "ticks/j/3"],
        "confirmed claims are back; the session's claim and runs are not"
    );
    assert_eq!(keys[0].value, b"w1 a");
    assert_ne!(keys[0].lease, keys[1].lease, "each keeps its own lease end");
    // The restored lease ends when the old one would have (~61 s).
    let ttl = c.keep_alive(keys[1].lease).await.unwrap();
    assert!(ttl <= Duration::from_secs(61), "{ttl:?}");
    c.revoke(keys[1].lease).await.unwrap();
    drop(c);
    let c = eventually("the store's file lock to be released", DEADLINE, || {
        let path = path.clone();
        async move { EmbeddedCoordinator::open(&path).ok() }
    })
    .await;
    let names: Vec<String> = c
        .list("")
        .await
        .unwrap()
        .0
        .into_iter()
        .map(|kv| kv.key)
        .collect();
    assert_eq!(names, ["ticks/j/1"], "a claim whose lease ended stays gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_watch_from_a_compacted_revision_asks_for_resync() {
    let endpoints = service_endpoint("ETCD_ENDPOINTS");
    let prefix = format!("/{}/", unique("compact"));
    let c = EtcdCoordinator::connect(EtcdOptions::new(vec![endpoints], &prefix))
        .await
        .unwrap();
    let first = c.put("jobs/a", b"1".to_vec(), None).await.unwrap();
    let last = c.put("jobs/a", b"2".to_vec(), None).await.unwrap();
    c.client().compact(last, None).await.unwrap();
    let mut watch = c.watch("jobs/", first).await.unwrap();
    match tokio::time::timeout(DEADLINE, watch.recv()).await {
        Ok(Some(WatchItem::Resync { reason })) => assert!(reason.contains("compacted"), "{reason}"),
        other => panic!("expected a resync, got {other:?}"),
    }
}

/// etcd restarted under a live watch and a live session: the watch carries
/// on with the events written after the restart, and a session whose lease
/// could not be kept alive through a long outage reports the loss.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_restart_under_a_live_watch_and_session() {
    let mut server = support::etcd::EtcdProcess::start().await;
    let mut options = EtcdOptions::new(vec![server.endpoint()], "/distcron/");
    options.request_timeout = Duration::from_secs(2);
    options.dial_timeout = Duration::from_secs(1);
    let c: Arc<dyn Coordinator> = Arc::new(EtcdCoordinator::connect(options).await.unwrap());

    let (_, revision) = c.list("jobs/").await.unwrap();
    let mut watch = c.watch("jobs/", revision + 1).await.unwrap();
    c.put("jobs/before", b"1".to_vec(), None).await.unwrap();
    assert_eq!(collect_events(&mut watch, 1).await[0].key(), "jobs/before");

    // A short outage: the session (TTL 10 s) rides through it.
    let session = Session::start(c.clone(), Duration::from_secs(10))
        .await
        .unwrap();
    server.restart().await;
    let revision = eventually("etcd to take writes again", DEADLINE, || {
        let c = c.clone();
        async move { c.put("jobs/after", b"2".to_vec(), None).await.ok() }
    })
    .await;
    let events = collect_events(&mut watch, 1).await;
    assert_eq!(
        (events[0].key(), events[0].revision()),
        ("jobs/after", revision)
    );
    assert!(
        session.is_alive(),
        "a short outage must not end a 10 s session"
    );

    // A long outage: nothing can be acknowledged for longer than the TTL.
    let short = Session::start(c.clone(), Duration::from_secs(3))
        .await
        .unwrap();
    server.stop();
    tokio::time::timeout(DEADLINE, short.lost())
        .await
        .expect("a session without keep-alives for its TTL reports the loss");
    assert!(!short.is_alive());
    server.restart().await;
    eventually("etcd to take writes again", DEADLINE, || {
        let c = c.clone();
        async move { c.put("jobs/later", b"3".to_vec(), None).await.ok() }
    })
    .await;
    let events = collect_events(&mut watch, 1).await;
    assert_eq!(
        events[0].key(),
        "jobs/later",
        "the watch resumes after a long outage too"
    );
}
