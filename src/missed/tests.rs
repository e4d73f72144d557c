use std::sync::atomic::{AtomicI64, Ordering};

use super::*;
use crate::coord::embedded::EmbeddedCoordinator;
use crate::runlog::fake::FakeRunLog;

const S: i64 = 1_000;

fn settings() -> SweepSettings {
    SweepSettings {
        every: Duration::from_secs(10),
        misfire_window: Duration::from_secs(60),
        claims: ClaimPolicy::default(), // retention 300 s: late runs up to 270 s
    }
}

fn job(name: &str, group: &str, misfire: Option<Misfire>, window: Option<u64>) -> Job {
    let mut job = Job::new(name, "true", "@every 1s");
    job.group = group.into();
    job.misfire = misfire;
    job.misfire_window_secs = window;
    job
}

#[test]
fn a_tick_is_checked_once_it_cannot_run_late_and_while_its_claim_is_kept() {
    let now = 1_000_000 * S;
    let saved = |at: i64| {
        let mut j = job("j", "g", None, None);
        j.updated_at = Some(at);
        j
    };
    // (job, expected window)
    let table: [(Job, Option<(i64, i64)>); 6] = [
        // The cluster's window (60 s) and the grace; claims kept 300 s.
        (
            job("j", "g", None, None),
            Some((now - 295 * S, now - 65 * S)),
        ),
        // Skip: nothing runs late, only the grace.
        (
            job("j", "g", Some(Misfire::Skip), None),
            Some((now - 295 * S, now - 5 * S)),
        ),
        // A job's own window, held below what claims can guard (270 s).
        (
            job("j", "g", Some(Misfire::All), Some(100)),
            Some((now - 295 * S, now - 105 * S)),
        ),
        (
            job("j", "g", Some(Misfire::Latest), Some(86_400)),
            Some((now - 295 * S, now - 275 * S)),
        ),
        // Nothing before the job's last save.
        (saved(now - 100 * S), Some((now - 100 * S, now - 65 * S))),
        (saved(now - 10 * S), None),
    ];
    for (job, expected) in table {
        assert_eq!(
            check_window(&job, now, &settings()),
            expected,
            "{:?} {:?} {:?}",
            job.misfire,
            job.misfire_window_secs,
            job.updated_at
        );
    }
}

#[test]
fn groups_seen_without_workers_are_remembered_for_the_checked_window() {
    let set = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<BTreeSet<_>>();
    let mut groups = EmptyGroups::default();
    let jobs = set(&["a", "b", "c"]);
    // (now, live groups, groups whose ticks to check)
    let table: [(i64, &[&str], &[&str]); 4] = [
        (0, &["a", "b", "c"], &[]),
        (10 * S, &["a"], &["b", "c"]),
        // b is back: its gap is still checked, until the memory ends.
        (20 * S, &["a", "b"], &["b", "c"]),
        (400 * S, &["a", "b"], &["c"]),
    ];
    for (now, live, expected) in table {
        groups.observe(now, &jobs, &set(live), 300 * S);
        assert_eq!(groups.recent(), set(expected), "at {now}");
    }
}

/// A wall clock the test sets.
struct At(AtomicI64);

impl crate::clock::Clock for At {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

async fn save(coord: &Arc<dyn Coordinator>, job: &Job) {
    let value = serde_json::to_vec(job).unwrap();
    coord
        .put(&keyspace::job_key(&job.name), value, None)
        .await
        .unwrap();
}

async fn listed(jobs: &JobIndex, count: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while jobs.groups().is_none() || jobs.enabled_in(&jobs.groups().unwrap()).len() < count {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the job index never listed the jobs"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn ticks_of_a_group_without_workers_are_recorded_missed_once_across_managers() {
    let coord: Arc<dyn Coordinator> = Arc::new(EmbeddedCoordinator::in_memory());
    let run_log = Arc::new(FakeRunLog::default());
    let now = crate::clock::Clock::now_ms(&crate::clock::SystemClock) / S * S;
    let clock = Arc::new(At(AtomicI64::new(now)));
    let mut orphan = job("orphan", "nobody", Some(Misfire::Skip), None);
    orphan.updated_at = Some(now - 20 * S);
    let mut served = job("served", "live", Some(Misfire::Skip), None);
    served.updated_at = Some(now - 20 * S);
    let mut paused = job("paused", "nobody", Some(Misfire::Skip), None);
    paused.enabled = false;
    for j in [&orphan, &served, &paused] {
        save(&coord, j).await;
    }
    let worker = serde_json::json!({ "id": "w1", "group": "live" });
    coord
        .put("workers/w1", worker.to_string().into_bytes(), None)
        .await
        .unwrap();
    // Ticks now-19 s .. now-5 s are checkable. A worker had won one of
    // them, and a manager claimed another and died before its record.
    let claims = TickClaims::new(coord.clone(), ClaimPolicy::default());
    let session = coord.grant(Duration::from_secs(60)).await.unwrap();
    let ran = now - 10 * S;
    claims
        .claim("orphan", ran, "w9", now, session)
        .await
        .unwrap();
    let half_done = now - 12 * S;
    claims
        .claim_decided("orphan", half_done, HOLDER, now)
        .await
        .unwrap();

    let managers: Vec<MissedSweep> = (0..2)
        .map(|_| {
            let jobs = JobIndex::follow(coord.clone());
            MissedSweep::new(
                coord.clone(),
                run_log.clone(),
                jobs,
                clock.clone(),
                settings(),
            )
        })
        .collect();
    for manager in &managers {
        listed(&manager.jobs, 2).await;
    }
    let mut recorded = 0;
    for mut manager in managers {
        recorded += manager.sweep().await.unwrap();
        recorded += manager.sweep().await.unwrap();
    }

    let records = run_log.records();
    let expected: Vec<i64> = (5..=19)
        .rev()
        .map(|back| now - back * S)
        .filter(|tick| *tick != ran)
        .collect();
    let mut ticks: Vec<i64> = records.iter().map(|r| r.plan_time).collect();
    ticks.sort();
    assert_eq!(ticks, expected, "one missed record per unrun tick");
    assert_eq!(recorded, expected.len());
    assert!(records.iter().all(|r| r.job_name == "orphan"
        && r.status == RunStatus::Missed
        && r.err.contains("'nobody'")));
    assert!(records.iter().any(|r| r.plan_time == half_done));
    // The claims stand, so no late run can follow the record.
    let holders = claims.holders_since("orphan", now - 19 * S).await.unwrap();
    assert_eq!(holders.get(&ran).map(String::as_str), Some("w9"));
    assert!(
        expected
            .iter()
            .all(|t| holders.get(t).map(String::as_str) == Some(HOLDER))
    );
}
