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
    // (job, expected window): two sweeps (20 s) wide, once a tick can no
    // longer run late, while claims are kept (300 s).
    let table: [(Job, Option<(i64, i64)>); 6] = [
        // The cluster's window (60 s) and the grace.
        (
            job("j", "g", None, None),
            Some((now - 85 * S, now - 65 * S)),
        ),
        // Skip: nothing runs late, only the grace.
        (
            job("j", "g", Some(Misfire::Skip), None),
            Some((now - 25 * S, now - 5 * S)),
        ),
        // A job's own window, held below what claims can guard (270 s).
        (
            job("j", "g", Some(Misfire::All), Some(100)),
            Some((now - 125 * S, now - 105 * S)),
        ),
        (
            job("j", "g", Some(Misfire::Latest), Some(86_400)),
            Some((now - 295 * S, now - 275 * S)),
        ),
        // Nothing before the job's last save.
        (saved(now - 70 * S), Some((now - 70 * S, now - 65 * S))),
        (saved(now - 10 * S), None),
    ];
    for (job, expected) in table {
        assert_eq!(
            check_window(&job, now, None, &settings()),
            expected,
            "{:?} {:?} {:?}",
            job.misfire,
            job.misfire_window_secs,
            job.updated_at
        );
    }
}

#[test]
fn after_failed_sweeps_the_next_good_one_checks_from_the_last_good_one() {
    let now = 1_000_000 * S;
    let j = job("j", "g", Some(Misfire::Skip), None);
    // (last good sweep, expected window)
    let table = [
        (None, Some((now - 25 * S, now - 5 * S))),
        (Some(now - 10 * S), Some((now - 25 * S, now - 5 * S))),
        (Some(now - 100 * S), Some((now - 115 * S, now - 5 * S))),
        // Never before what claims can still tell.
        (Some(now - 900 * S), Some((now - 295 * S, now - 5 * S))),
        // Taking the turn (`catch_up`): everything claims can still tell.
        (Some(0), Some((now - 295 * S, now - 5 * S))),
    ];
    for (last_ok, expected) in table {
        assert_eq!(
            check_window(&j, now, last_ok, &settings()),
            expected,
            "{last_ok:?}"
        );
    }
}

#[test]
fn a_tick_without_a_record_is_missed_if_nobody_claimed_it_else_lost_by_its_claimer() {
    let j = job("j", "g", None, None);
    let checked = |holder: &str| Checked {
        job: "j".into(),
        tick_ms: 60 * S,
        holder: holder.into(),
    };
    // (holder, group alive, status, worker, run id, words in err)
    let table = [
        (
            HOLDER,
            false,
            RunStatus::Missed,
            "",
            "j-60000-missed",
            "no live worker in group 'g'",
        ),
        (
            HOLDER,
            true,
            RunStatus::Missed,
            "",
            "j-60000-missed",
            "misfire window ended",
        ),
        (
            "w1",
            true,
            RunStatus::Lost,
            "w1",
            "j-60000-w1",
            "worker w1 claimed this tick",
        ),
    ];
    for (holder, alive, status, worker, run_id, why) in table {
        let record = record_for(&checked(holder), &j, alive, 99 * S);
        assert_eq!(
            (
                record.status,
                record.worker.as_str(),
                record.run_id.as_str()
            ),
            (status, worker, run_id),
            "{holder} {alive}"
        );
        assert_eq!((record.plan_time, record.start_time), (60 * S, 99 * S));
        assert!(record.err.contains(why), "{holder} {alive}: {}", record.err);
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
    while jobs.enabled().is_none_or(|j| j.len() < count) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the job index never listed the jobs"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn register(coord: &Arc<dyn Coordinator>, id: &str, group: &str, queued: u64) {
    let info = serde_json::json!({
        "id": id, "address": "host", "group": group, "version": "test",
        "started": 0, "heartbeat": 0, "cpuPercent": 0.0, "memoryBytes": 0,
        "hostMemoryPercent": 0.0, "running": 0, "batcher": { "queued": queued },
    });
    let key = keyspace::worker_key(id);
    coord
        .put(&key, info.to_string().into_bytes(), None)
        .await
        .unwrap();
}

fn ran(job: &str, tick: i64, worker: &str) -> RunRecord {
    let checked = Checked {
        job: job.into(),
        tick_ms: tick,
        holder: worker.into(),
    };
    let mut record = record_for(&checked, &self::job(job, "g", None, None), true, tick);
    record.status = RunStatus::Succeeded;
    record
}

#[tokio::test]
async fn every_tick_without_a_record_gets_one_once_across_managers() {
    let coord: Arc<dyn Coordinator> = Arc::new(EmbeddedCoordinator::in_memory());
    let run_log = Arc::new(FakeRunLog::default());
    let now = crate::clock::Clock::now_ms(&crate::clock::SystemClock) / S * S;
    let clock = Arc::new(At(AtomicI64::new(now)));
    // Every second, no late runs: ticks now-19 s .. now-5 s are checked.
    let mut orphan = job("orphan", "nobody", Some(Misfire::Skip), None);
    let mut served = job("served", "live", Some(Misfire::Skip), None);
    let mut paused = job("paused", "nobody", Some(Misfire::Skip), None);
    paused.enabled = false;
    for j in [&mut orphan, &mut served, &mut paused] {
        j.updated_at = Some(now - 20 * S);
        save(&coord, j).await;
    }
    register(&coord, "w1", "live", 0).await;
    register(&coord, "w2", "live", 5).await; // its journal is still shipping
    let ticks: Vec<i64> = (5..=19).rev().map(|back| now - back * S).collect();
    let claims = TickClaims::new(coord.clone(), ClaimPolicy::default());
    let session = coord.grant(Duration::from_secs(60)).await.unwrap();
    let claim = |job: &'static str, tick: i64, holder: &'static str| {
        let claims = &claims;
        async move { claims.claim(job, tick, holder, now, session).await.unwrap() }
    };
    // orphan: a dead worker won one tick and left no record; a manager
    // claimed another and died before its record; nobody touched the rest.
    let (dead_won, half_done) = (ticks[5], ticks[7]);
    claim("orphan", dead_won, "w9").await;
    claims
        .claim_decided("orphan", half_done, HOLDER, now)
        .await
        .unwrap();
    // served: w1 ran every tick but two: one it won and lost, one nobody
    // claimed; w2 won one whose record may still be in its journal.
    let (won_lost, unclaimed, in_journal) = (ticks[2], ticks[9], ticks[11]);
    for &tick in &ticks {
        if tick == unclaimed {
            continue;
        }
        let holder = if tick == in_journal { "w2" } else { "w1" };
        claim("served", tick, holder).await;
        if tick != won_lost && tick != in_journal {
            run_log
                .insert_batch(&[ran("served", tick, "w1")])
                .await
                .unwrap();
        }
    }
    let before = run_log.records().len();

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

    let new: Vec<RunRecord> = run_log.records().split_off(before);
    let of = |job: &str, status: RunStatus| {
        let mut t: Vec<i64> = new
            .iter()
            .filter(|r| r.job_name == job && r.status == status)
            .map(|r| r.plan_time)
            .collect();
        t.sort();
        t
    };
    let orphan_missed: Vec<i64> = ticks.iter().copied().filter(|t| *t != dead_won).collect();
    assert_eq!(of("orphan", RunStatus::Missed), orphan_missed);
    assert_eq!(of("orphan", RunStatus::Lost), vec![dead_won]);
    assert_eq!(of("served", RunStatus::Missed), vec![unclaimed]);
    assert_eq!(of("served", RunStatus::Lost), vec![won_lost]);
    assert_eq!(recorded, new.len(), "each tick once, across two managers");
    assert_eq!(new.len(), ticks.len() + 2);
    let lost = new
        .iter()
        .find(|r| r.job_name == "served" && r.plan_time == won_lost)
        .unwrap();
    assert_eq!(
        (lost.run_id.as_str(), lost.worker.as_str()),
        (format!("served-{won_lost}-w1").as_str(), "w1")
    );
    let missed = new
        .iter()
        .find(|r| r.job_name == "served" && r.status == RunStatus::Missed)
        .unwrap();
    assert!(
        missed.err.contains("misfire window ended"),
        "{}",
        missed.err
    );
    assert!(
        new.iter()
            .filter(|r| r.job_name == "orphan" && r.status == RunStatus::Missed)
            .all(|r| r.err.contains("'nobody'"))
    );
    // The sweep's claims stand, so no late run can follow its record.
    let (listed, _) = coord.list(keyspace::TICKS).await.unwrap();
    let holders = claims_by_job(&listed).remove("orphan").unwrap();
    assert_eq!(holders.get(&dead_won).map(String::as_str), Some("w9"));
    assert!(
        orphan_missed
            .iter()
            .all(|t| holders.get(t).map(String::as_str) == Some(HOLDER))
    );
}

#[tokio::test]
async fn a_manager_taking_the_turn_records_the_ticks_that_passed_since_the_last_sweeper() {
    let coord: Arc<dyn Coordinator> = Arc::new(EmbeddedCoordinator::in_memory());
    let run_log = Arc::new(FakeRunLog::default());
    let now = crate::clock::Clock::now_ms(&crate::clock::SystemClock) / S * S;
    let clock = Arc::new(At(AtomicI64::new(now)));
    let mut orphan = job("orphan", "nobody", Some(Misfire::Skip), None);
    orphan.updated_at = Some(now - 100 * S);
    save(&coord, &orphan).await;
    let manager = || {
        MissedSweep::new(
            coord.clone(),
            run_log.clone(),
            JobIndex::follow(coord.clone()),
            clock.clone(),
            settings(),
        )
    };
    let mut first = manager();
    listed(&first.jobs, 1).await;
    assert!(first.sweep().await.unwrap() > 0);
    // The first sweeper dies; a minute later the other takes the turn.
    drop(first);
    clock.0.store(now + 60 * S, Ordering::SeqCst);
    let mut next = manager();
    listed(&next.jobs, 1).await;
    next.catch_up();
    next.sweep().await.unwrap();

    // Every tick since the job's save that can no longer run, once each.
    let mut recorded: Vec<i64> = run_log.records().iter().map(|r| r.plan_time).collect();
    recorded.sort();
    let expected: Vec<i64> = (1..=155).map(|s| now - 100 * S + s * S).collect();
    assert_eq!(recorded, expected);
}
