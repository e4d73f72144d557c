//! The run log contract: one suite, run against the embedded engine and
//! against the MongoDB-wire server (`MONGODB_URI`, started by
//! `scripts/test.sh`; a real mongod works the same).

mod support;

use std::sync::Arc;

use distcron::audit::{AuditQuery, AuditRecord};
use distcron::notify::store::{Notice, Outcome};
use distcron::runlog::embedded::EmbeddedRunLog;
use distcron::runlog::mongo::{MongoOptions, MongoRunLog};
use distcron::runlog::{Retention, RunLog, RunQuery, RunRecord, RunStatus};
use support::{service_endpoint, unique};

/// Keeps a backend's files alive as long as the test holds it.
struct Backend {
    log: Arc<dyn RunLog>,
    _dir: Option<tempfile::TempDir>,
}

async fn embedded() -> Option<Backend> {
    let dir = tempfile::tempdir().unwrap();
    let log = EmbeddedRunLog::open(&dir.path().join("runs.redb")).unwrap();
    Some(Backend {
        log: Arc::new(log),
        _dir: Some(dir),
    })
}

async fn mongo() -> Option<Backend> {
    let uri = service_endpoint("MONGODB_URI");
    let mut options = MongoOptions::new(&uri);
    options.database = unique("contract").replace('-', "_");
    let log = MongoRunLog::connect(&options)
        .await
        .expect("connect to MongoDB");
    Some(Backend {
        log: Arc::new(log),
        _dir: None,
    })
}

fn run(id: &str, job: &str, start: i64, status: RunStatus) -> RunRecord {
    RunRecord {
        params: Default::default(),
        triggered_by: None,
        run_id: id.into(),
        job_name: job.into(),
        command: "echo hi".into(),
        worker: "w1".into(),
        plan_time: start - 5,
        schedule_time: start - 2,
        start_time: start,
        end_time: start + 10,
        status,
        exit_code: (status == RunStatus::Succeeded).then_some(0),
        signal: None,
        output: format!("output of {id}\n"),
        truncated: false,
        err: String::new(),
        requested_by: None,
    }
}

fn ids(records: &[RunRecord]) -> Vec<&str> {
    records.iter().map(|r| r.run_id.as_str()).collect()
}

fn query(job: &str, status: Option<RunStatus>, skip: u64, limit: u64) -> RunQuery {
    RunQuery {
        job_name: job.into(),
        status,
        skip,
        limit,
    }
}

macro_rules! contract_suite {
    ($engine:ident) => {
        mod $engine {
            use super::*;

            #[tokio::test]
            async fn insert_is_idempotent_on_run_id() {
                let Some(b) = super::$engine().await else {
                    return;
                };
                let first: Vec<RunRecord> = (0..5)
                    .map(|i| run(&format!("r{i}"), "a", 1000 + i, RunStatus::Succeeded))
                    .collect();
                assert_eq!(b.log.insert_batch(&first).await.unwrap(), 5);
                // A retried batch overlapping the first: only the new ones count.
                let retry: Vec<RunRecord> = (3..7)
                    .map(|i| run(&format!("r{i}"), "a", 1000 + i, RunStatus::Succeeded))
                    .collect();
                assert_eq!(b.log.insert_batch(&retry).await.unwrap(), 2);
                assert_eq!(
                    b.log.insert_batch(&first).await.unwrap(),
                    0,
                    "the same batch again"
                );
                assert_eq!(b.log.count(None, None).await.unwrap(), 7);
                assert_eq!(b.log.get("r4").await.unwrap(), Some(retry[1].clone()));
                assert_eq!(b.log.get("missing").await.unwrap(), None);
                assert_eq!(b.log.insert_batch(&[]).await.unwrap(), 0);
            }

            #[tokio::test]
            async fn records_converge_on_the_furthest_status_whatever_the_order() {
                let Some(b) = super::$engine().await else {
                    return;
                };
                use RunStatus::*;
                // Every order the journal, a replay and a peer can produce.
                let orders: [&[RunStatus]; 7] = [
                    &[Pending, Started, Succeeded],
                    &[Succeeded, Started, Pending],
                    &[Started, Lost, Failed],
                    &[Started, Failed, Lost],
                    &[Lost, Started],
                    &[Started, Started, Started],
                    &[Killed, Killed, Lost, Started],
                ];
                for (n, order) in orders.iter().enumerate() {
                    let id = format!("order{n}");
                    for (i, status) in order.iter().enumerate() {
                        let record = run(&id, "orders", 5000 + n as i64 * 10 + i as i64, *status);
                        b.log.insert_batch(&[record]).await.unwrap();
                    }
                    let furthest = order.iter().copied().max_by_key(|s| s.rank()).unwrap();
                    let first_of_furthest = order.iter().position(|s| *s == furthest).unwrap();
                    let stored = b.log.get(&id).await.unwrap().unwrap();
                    assert_eq!(stored.status, furthest, "{order:?}");
                    assert_eq!(
                        stored.start_time,
                        5000 + n as i64 * 10 + first_of_furthest as i64,
                        "{order:?}: the first record of that rank stays"
                    );
                }
                // Both in one batch, too: the started then its result.
                let both = [
                    run("batch1", "orders", 9000, Started),
                    run("batch1", "orders", 9001, Succeeded),
                ];
                b.log.insert_batch(&both).await.unwrap();
                assert_eq!(
                    b.log.get("batch1").await.unwrap().unwrap().status,
                    Succeeded
                );
                assert_eq!(
                    b.log.count(Some("orders"), None).await.unwrap(),
                    8,
                    "one record a run"
                );
            }

            #[tokio::test]
            async fn a_record_refused_for_good_is_reported_and_the_rest_are_stored() {
                let Some(b) = super::$engine().await else {
                    return;
                };
                // Past any store's document limit (MongoDB's is 16 MiB).
                let mut huge = run("p2", "poison", 2, RunStatus::Failed);
                huge.output = "x".repeat(17 << 20);
                let batch = [
                    run("p1", "poison", 1, RunStatus::Succeeded),
                    huge,
                    run("p3", "poison", 3, RunStatus::Succeeded),
                ];
                match b.log.insert_batch(&batch).await {
                    Err(distcron::runlog::RunLogError::Refused(refused)) => {
                        assert_eq!(refused.len(), 1, "{refused:?}");
                        assert_eq!(refused[0].index, 1);
                    }
                    // The embedded store has no document limit.
                    Ok(n) => assert_eq!((stringify!($engine), n), ("embedded", 3)),
                    Err(other) => panic!("a poison record must be refused apart, not: {other}"),
                }
                assert!(b.log.get("p1").await.unwrap().is_some());
                assert!(b.log.get("p3").await.unwrap().is_some());
            }

            #[tokio::test]
            async fn a_workers_open_runs_are_found_for_closing() {
                let Some(b) = super::$engine().await else {
                    return;
                };
                let mut other = run("o3", "open", 3, RunStatus::Started);
                other.worker = "w2".into();
                b.log
                    .insert_batch(&[
                        run("o1", "open", 1, RunStatus::Started),
                        run("o2", "open", 2, RunStatus::Pending),
                        other,
                        run("o4", "open", 4, RunStatus::Succeeded),
                    ])
                    .await
                    .unwrap();
                let mut open: Vec<String> = b
                    .log
                    .unfinished("w1", 100)
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|r| r.run_id)
                    .collect();
                open.sort();
                assert_eq!(open, ["o1", "o2"]);
                b.log
                    .insert_batch(&[run("o1", "open", 1, RunStatus::Lost)])
                    .await
                    .unwrap();
                assert_eq!(b.log.unfinished("w1", 100).await.unwrap().len(), 1);
            }

            #[tokio::test]
            async fn a_real_result_replaces_lost_and_a_late_lost_changes_nothing() {
                let Some(b) = super::$engine().await else {
                    return;
                };
                // Lost first (a peer's guess), then the worker's own result.
                let lost = run("x1", "rank", 1000, RunStatus::Lost);
                let real = run("x1", "rank", 1001, RunStatus::Succeeded);
                assert_eq!(
                    b.log
                        .insert_batch(std::slice::from_ref(&lost))
                        .await
                        .unwrap(),
                    1
                );
                assert_eq!(
                    b.log
                        .insert_batch(std::slice::from_ref(&real))
                        .await
                        .unwrap(),
                    1
                );
                assert_eq!(b.log.get("x1").await.unwrap(), Some(real.clone()));
                // The real result first: a late lost, and the result again,
                // change nothing.
                let first = run("x2", "rank", 2000, RunStatus::Failed);
                assert_eq!(
                    b.log
                        .insert_batch(std::slice::from_ref(&first))
                        .await
                        .unwrap(),
                    1
                );
                let late = run("x2", "rank", 2001, RunStatus::Lost);
                assert_eq!(b.log.insert_batch(&[late, first.clone()]).await.unwrap(), 0);
                assert_eq!(b.log.get("x2").await.unwrap(), Some(first));
                // One record a run, and the replaced one's index is gone:
                // the job pages two records, each once.
                let page = b.log.page(&query("rank", None, 0, 10)).await.unwrap();
                assert_eq!(ids(&page), ["x2", "x1"]);
                assert_eq!(page[1].status, RunStatus::Succeeded);
                let lost_page = b
                    .log
                    .page(&query("rank", Some(RunStatus::Lost), 0, 10))
                    .await
                    .unwrap();
                assert!(lost_page.is_empty(), "{lost_page:?}");
            }

            #[tokio::test]
            async fn a_job_is_paged_newest_first_with_skip_limit_and_status() {
                let Some(b) = super::$engine().await else {
                    return;
                };
                let mut batch = Vec::new();
                for i in 0..25 {
                    let status = if i % 5 == 0 {
                        RunStatus::Failed
                    } else {
                        RunStatus::Succeeded
                    };
                    batch.push(run(&format!("a{i:02}"), "a", 10_000 + i, status));
                    batch.push(run(
                        &format!("b{i:02}"),
                        "b",
                        10_000 + i,
                        RunStatus::Succeeded,
                    ));
                }
                b.log.insert_batch(&batch).await.unwrap();
                let page = b.log.page(&query("a", None, 0, 3)).await.unwrap();
                assert_eq!(ids(&page), ["a24", "a23", "a22"]);
                let page = b.log.page(&query("a", None, 20, 10)).await.unwrap();
                assert_eq!(ids(&page), ["a04", "a03", "a02", "a01", "a00"]);
                let failed = b
                    .log
                    .page(&query("a", Some(RunStatus::Failed), 1, 10))
                    .await
                    .unwrap();
                assert_eq!(ids(&failed), ["a15", "a10", "a05", "a00"]);
                assert!(
                    b.log
                        .page(&query("nobody", None, 0, 10))
                        .await
                        .unwrap()
                        .is_empty()
                );
                assert_eq!(b.log.count(Some("a"), None).await.unwrap(), 25);
                assert_eq!(
                    b.log
                        .count(Some("a"), Some(RunStatus::Failed))
                        .await
                        .unwrap(),
                    5
                );
                assert_eq!(b.log.count(None, Some(RunStatus::Failed)).await.unwrap(), 5);
                assert_eq!(b.log.count(None, None).await.unwrap(), 50);
                assert_eq!(b.log.count_since(10_020, &[]).await.unwrap(), 10);
                let failures = [RunStatus::Failed, RunStatus::Lost];
                assert_eq!(b.log.count_since(10_020, &failures).await.unwrap(), 1);
                assert_eq!(b.log.count_since(0, &failures).await.unwrap(), 5);
                assert_eq!(b.log.count_since(10_025, &[]).await.unwrap(), 0);
                b.log.ping().await.unwrap();
            }

            #[tokio::test]
            async fn history_and_runs_per_minute_come_aggregated_from_the_store() {
                let Some(b) = super::$engine().await else {
                    return;
                };
                let minute = 1_800_000_000_000_i64 - 1_800_000_000_000_i64 % 60_000;
                let statuses = [
                    RunStatus::Succeeded,
                    RunStatus::Failed,
                    RunStatus::TimedOut,
                    RunStatus::Succeeded,
                    RunStatus::Skipped,
                ];
                let mut batch: Vec<RunRecord> = statuses
                    .iter()
                    .enumerate()
                    .map(|(i, s)| run(&format!("h{i}"), "charted", minute + i as i64 * 20_000, *s))
                    .collect();
                batch.push(run("other", "elsewhere", minute - 120_000, RunStatus::Lost));
                b.log.insert_batch(&batch).await.unwrap();
                let history = b.log.history("charted", 3).await.unwrap();
                let got: Vec<(&str, RunStatus, i64)> = history
                    .iter()
                    .map(|h| (h.run_id.as_str(), h.status, h.end_time - h.start_time))
                    .collect();
                assert_eq!(
                    got,
                    [
                        ("h4", RunStatus::Skipped, 10),
                        ("h3", RunStatus::Succeeded, 10),
                        ("h2", RunStatus::TimedOut, 10)
                    ]
                );
                assert!(b.log.history("nothing", 3).await.unwrap().is_empty());
                // h0..h2 in the first minute, h3 and h4 in the next; the
                // lost run two minutes before is outside `since`.
                let counts = b.log.per_minute(minute - 60_000).await.unwrap();
                let got: Vec<(i64, u64, u64)> = counts
                    .iter()
                    .map(|c| (c.minute - minute, c.runs, c.failures))
                    .collect();
                assert_eq!(got, [(0, 3, 2), (60_000, 2, 0)]);
                let all = b.log.per_minute(0).await.unwrap();
                assert_eq!(
                    (all[0].minute - minute, all[0].runs, all[0].failures),
                    (-120_000, 1, 1)
                );
            }

            #[tokio::test]
            async fn runs_starting_together_page_in_a_stable_order() {
                let Some(b) = super::$engine().await else {
                    return;
                };
                let batch: Vec<RunRecord> = ["x1", "x3", "x2"]
                    .iter()
                    .map(|id| run(id, "a", 500, RunStatus::Skipped))
                    .collect();
                b.log.insert_batch(&batch).await.unwrap();
                assert_eq!(
                    ids(&b.log.page(&query("a", None, 0, 2)).await.unwrap()),
                    ["x3", "x2"]
                );
                assert_eq!(
                    ids(&b.log.page(&query("a", None, 2, 2)).await.unwrap()),
                    ["x1"]
                );
            }

            #[tokio::test]
            async fn recent_lists_all_jobs_newest_first() {
                let Some(b) = super::$engine().await else {
                    return;
                };
                let batch = vec![
                    run("old", "a", 100, RunStatus::Succeeded),
                    run("new", "b", 300, RunStatus::Lost),
                    run("mid", "c", 200, RunStatus::Killed),
                ];
                b.log.insert_batch(&batch).await.unwrap();
                assert_eq!(ids(&b.log.recent(2).await.unwrap()), ["new", "mid"]);
            }

            #[tokio::test]
            async fn every_field_round_trips_including_large_output() {
                let Some(b) = super::$engine().await else {
                    return;
                };
                let mut record = run("big", "a", 1, RunStatus::TimedOut);
                record.exit_code = None;
                record.signal = Some(9);
                record.output = "é<b>\n".repeat(256 * 1024 / 6);
                record.truncated = true;
                record.err = "timed out after 5s".into();
                b.log
                    .insert_batch(std::slice::from_ref(&record))
                    .await
                    .unwrap();
                assert_eq!(b.log.get("big").await.unwrap(), Some(record));
            }

            #[tokio::test]
            async fn retention_drops_old_runs_and_keeps_the_newest_per_job() {
                let Some(b) = super::$engine().await else {
                    return;
                };
                let day = 86_400_000;
                let now = 100 * day;
                let mut batch = Vec::new();
                for i in 0..10 {
                    batch.push(run(
                        &format!("a{i}"),
                        "a",
                        now - i * day,
                        RunStatus::Succeeded,
                    ));
                    batch.push(run(&format!("b{i}"), "b", now - i, RunStatus::Succeeded));
                }
                b.log.insert_batch(&batch).await.unwrap();
                // Older than 5 days: a6..a9 go.
                let age = Retention {
                    max_age_days: 5,
                    max_runs_per_job: 0,
                };
                assert_eq!(b.log.apply_retention(age, now).await.unwrap(), 4);
                // At most 3 per job: a3..a5 and b3..b9 go.
                let per_job = Retention {
                    max_age_days: 0,
                    max_runs_per_job: 3,
                };
                assert_eq!(b.log.apply_retention(per_job, now).await.unwrap(), 3 + 7);
                assert_eq!(
                    ids(&b.log.page(&query("a", None, 0, 10)).await.unwrap()),
                    ["a0", "a1", "a2"]
                );
                assert_eq!(
                    ids(&b.log.page(&query("b", None, 0, 10)).await.unwrap()),
                    ["b0", "b1", "b2"]
                );
                assert_eq!(
                    b.log
                        .apply_retention(Retention::default(), now)
                        .await
                        .unwrap(),
                    0
                );
            }

            #[tokio::test]
            async fn audit_records_page_newest_first_with_filters() {
                let Some(b) = super::$engine().await else {
                    return;
                };
                let records: Vec<AuditRecord> = (0..12)
                    .map(|i| audit(i, if i % 3 == 0 { "ana" } else { "bo" }))
                    .collect();
                b.log.insert_audit(&records).await.unwrap();
                // Inserting again changes nothing (idempotent on id).
                b.log.insert_audit(&records[..4]).await.unwrap();
                let page = |q: AuditQuery| {
                    let log = b.log.clone();
                    async move {
                        let got = log.audit_page(&q).await.unwrap();
                        got.iter().map(|r| r.time).collect::<Vec<_>>()
                    }
                };
                let all = AuditQuery {
                    limit: 100,
                    ..AuditQuery::default()
                };
                assert_eq!(page(all.clone()).await, (0..12).rev().collect::<Vec<_>>());
                let paged = AuditQuery {
                    skip: 2,
                    limit: 3,
                    ..all.clone()
                };
                assert_eq!(page(paged).await, [9, 8, 7]);
                let by_actor = AuditQuery {
                    actor: Some("user:ana".into()),
                    skip: 1,
                    ..all.clone()
                };
                assert_eq!(page(by_actor).await, [6, 3, 0]);
                let window = AuditQuery {
                    since: Some(4),
                    until: Some(8),
                    job: Some("job-5".into()),
                    ..all.clone()
                };
                assert_eq!(page(window).await, [5]);
                let action = AuditQuery {
                    action: Some("job.run".into()),
                    ..all
                };
                assert_eq!(page(action).await, Vec::<i64>::new());
            }

            #[tokio::test]
            async fn a_notice_is_claimed_once_and_counters_count_every_bump() {
                let Some(b) = super::$engine().await else {
                    return;
                };
                let targets = ["hook".to_string(), "mail".to_string()];
                let notice = Notice::claimed("r1", "a", "failed", &targets, "w1", 1_000);
                assert!(
                    b.log.claim_notice(&notice).await.unwrap(),
                    "the first claim wins"
                );
                let again = Notice::claimed("r1", "a", "failed", &targets, "w2", 1_001);
                assert!(
                    !b.log.claim_notice(&again).await.unwrap(),
                    "a second claim loses"
                );
                let other = Notice::claimed("r1", "a", "recovered", &targets[..1], "w1", 2_000);
                assert!(
                    b.log.claim_notice(&other).await.unwrap(),
                    "another event is its own"
                );
                let unrelated = Notice::claimed("r10", "a", "failed", &targets, "w1", 500);
                assert!(b.log.claim_notice(&unrelated).await.unwrap());
                let mut done = notice.clone();
                done.deliveries[0].outcome = Outcome::Delivered;
                done.deliveries[0].attempts = 2;
                b.log.update_notice(&done).await.unwrap();
                let of_run = b.log.notices_of("r1").await.unwrap();
                assert_eq!(
                    of_run,
                    [done, other],
                    "oldest first, the update kept, w1's claim"
                );
                assert!(b.log.notices_of("r").await.unwrap().is_empty());

                // Concurrent bumps: each answer distinct, the total exact.
                let bumps = (0..20).map(|_| {
                    let log = b.log.clone();
                    tokio::spawn(async move { log.bump_counter("c", 1, 10_000).await.unwrap() })
                });
                let mut seen: Vec<u64> = futures_util::future::join_all(bumps)
                    .await
                    .into_iter()
                    .map(Result::unwrap)
                    .collect();
                seen.sort();
                assert_eq!(seen, (1..=20).collect::<Vec<u64>>());
                assert_eq!(b.log.bump_counter("c", 0, 10_000).await.unwrap(), 20);
                assert_eq!(b.log.bump_counter("other", 0, 10_000).await.unwrap(), 0);
                // Retention drops expired counters (they start again at 0).
                b.log
                    .apply_retention(Retention::default(), 20_000)
                    .await
                    .unwrap();
                assert_eq!(b.log.bump_counter("c", 1, 30_000).await.unwrap(), 1);
            }
        }
    };
}

/// An audit record at `time` by the user `actor`, on `job-<time>`.
fn audit(time: i64, actor: &str) -> AuditRecord {
    AuditRecord {
        id: format!("a{time:03}"),
        time,
        actor_id: format!("user:{actor}"),
        actor_name: actor.into(),
        actor_role: None,
        action: "job.save".into(),
        method: "POST".into(),
        path: "/job/save".into(),
        job: Some(format!("job-{time}")),
        source: "127.0.0.1".into(),
        status: 200,
        outcome: "ok".into(),
        reason: String::new(),
        changes: Default::default(),
    }
}

contract_suite!(embedded);
contract_suite!(mongo);
