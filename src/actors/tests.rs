//! JobActor and LockActor on virtual time (`tokio::time::pause`), with the
//! embedded coordinator and a fake run log. Commands are real processes.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use super::context::WorkerContext;
use super::job::{GetJobCounters, JobActor, StopJob};
use super::lock::{ClaimOutcome, ClaimTick, CurrentSession, LockActor};
use super::log_batcher::{BatcherConfig, LogBatcher};
use crate::clock::TokioClock;
use crate::coord::Coordinator;
use crate::coord::claims::ClaimPolicy;
use crate::coord::embedded::EmbeddedCoordinator;
use crate::job::{Job, Overlap};
use crate::runlog::RunStatus;
use crate::runlog::fake::FakeRunLog;
use crate::runner::{RunLimits, RunningRuns};
use crate::schedule::Schedule;

/// 2026-01-01T00:00:00Z: a round instant, so ticks are easy to read.
const START_MS: i64 = 1_767_225_600_000;

struct Rig {
    ctx: WorkerContext,
    coord: Arc<dyn Coordinator>,
    store: Arc<FakeRunLog>,
    _dir: tempfile::TempDir,
}

fn rig() -> Rig {
    rig_on(Arc::new(EmbeddedCoordinator::in_memory()))
}

fn rig_on(coord: Arc<dyn Coordinator>) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(TokioClock::starting_at(START_MS));
    let store = Arc::new(FakeRunLog::default());
    let mut batcher = BatcherConfig::new(dir.path().join("journal"));
    batcher.max_delay = Duration::from_millis(100);
    let running = RunningRuns::default();
    let (sessions_tx, sessions) = tokio::sync::watch::channel(0);
    let lock = LockActor::new(
        coord.clone(),
        clock.clone(),
        "w1".into(),
        Duration::from_secs(10),
        ClaimPolicy::default(),
    )
    .fencing(running.clone())
    .announcing(sessions_tx, Default::default());
    let claims = lock.claims();
    let lock = lock.start();
    let ctx = WorkerContext {
        worker_id: "w1".into(),
        group: "default".into(),
        running_keys: crate::coord::write_queue::WriteQueue::new(coord.clone()),
        coord: coord.clone(),
        clock,
        lock,
        batcher: LogBatcher::new(store.clone(), batcher).unwrap().start(),
        running,
        limits: RunLimits {
            kill_grace: Duration::from_millis(200),
            ..RunLimits::default()
        },
        claim_lead: Duration::from_millis(500),
        cluster_runs: Default::default(),
        claims,
        // Tests of misfires set their window; the others start jobs with
        // nothing to look back at.
        misfire_window: Duration::ZERO,
        sessions,
        unregister_backlog: Default::default(),
        run_log: store.clone(),
        known_jobs: Default::default(),
    };
    Rig {
        ctx,
        coord,
        store,
        _dir: dir,
    }
}

fn job_actor(rig: &Rig, job: Job) -> Addr<JobActor> {
    let schedule = Schedule::parse_for_job(&job.cron_expr, chrono_tz::Tz::UTC, &job.name).unwrap();
    JobActor::new(rig.ctx.clone(), job, schedule).start()
}

/// Let virtual time pass in steps of 50 ms, giving real processes 5 ms of
/// real time per step: while a `spawn_blocking` task runs, tokio does not
/// auto-advance its paused clock, and the runtime is free to read child
/// exits and pipes.
/// (For long commands such as `sleep 600`, which stay running: a run
/// registers in `running` before its process starts, so a few steps are
/// always enough for the next tick to see it.)
async fn pass(duration: Duration) {
    let step = Duration::from_millis(50);
    let mut passed = Duration::ZERO;
    while passed < duration {
        tokio::time::sleep(step).await;
        let _ = tokio::task::spawn_blocking(|| std::thread::sleep(Duration::from_millis(5))).await;
        passed += step;
    }
}

/// For commands that end at once (`true`, `exit 3`): after each 50 ms step
/// of virtual time, wait in real time until no run is in progress, so a slow
/// fork under load cannot stretch a run across virtual time. Fails the test
/// if a run does not end within 10 s of real time.
async fn pass_settled(rig: &Rig, duration: Duration) {
    let step = Duration::from_millis(50);
    let mut passed = Duration::ZERO;
    while passed < duration {
        tokio::time::sleep(step).await;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while rig.ctx.running.total() > 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "a run of an instant command did not end within 10 s"
            );
            let _ =
                tokio::task::spawn_blocking(|| std::thread::sleep(Duration::from_millis(2))).await;
        }
        passed += step;
    }
}

fn records(rig: &Rig) -> Vec<crate::runlog::RunRecord> {
    rig.store.records()
}

#[actix_rt::test]
async fn the_timer_fires_at_each_tick_and_every_tick_is_recorded() {
    tokio::time::pause();
    let rig = rig();
    let job = job_actor(&rig, Job::new("every10", "true", "@every 10s"));
    pass_settled(&rig, Duration::from_millis(35_500)).await;
    let counters = job.send(GetJobCounters).await.unwrap();
    assert_eq!((counters.ticks, counters.runs_started), (3, 3));
    let ticks: Vec<i64> = records(&rig)
        .iter()
        .map(|r| r.plan_time - START_MS)
        .collect();
    assert_eq!(ticks, [10_000, 20_000, 30_000]);
    assert!(
        records(&rig)
            .iter()
            .all(|r| r.status == RunStatus::Succeeded)
    );
}

#[actix_rt::test]
async fn overlap_forbid_skips_ticks_while_a_run_is_in_progress() {
    tokio::time::pause();
    let rig = rig();
    job_actor(&rig, Job::new("slow", "sleep 600", "* * * * * *"));
    pass(Duration::from_millis(4_500)).await;
    assert_eq!(rig.ctx.running.count("slow"), 1, "one run in progress");
    let skipped: Vec<i64> = records(&rig)
        .iter()
        .filter(|r| r.status == RunStatus::Skipped)
        .map(|r| r.plan_time - START_MS)
        .collect();
    assert_eq!(skipped, [2_000, 3_000, 4_000]);
    rig.ctx.running.kill("slow", "test over");
    pass(Duration::from_millis(1_000)).await;
}

#[actix_rt::test]
async fn overlap_forbid_counts_a_run_on_another_worker() {
    tokio::time::pause();
    let rig = rig();
    // The previous owner still runs the job (as running/ shows it).
    rig.ctx
        .cluster_runs
        .replace([("handed".to_string(), 1)].into_iter().collect());
    job_actor(&rig, Job::new("handed", "true", "* * * * * *"));
    pass_settled(&rig, Duration::from_millis(2_500)).await;
    let statuses: Vec<RunStatus> = records(&rig).iter().map(|r| r.status).collect();
    assert_eq!(statuses, [RunStatus::Skipped, RunStatus::Skipped]);
    // Once it ends there, ticks run here again.
    rig.ctx.cluster_runs.replace(Default::default());
    pass_settled(&rig, Duration::from_millis(1_000)).await;
    assert_eq!(
        records(&rig).last().map(|r| r.status),
        Some(RunStatus::Succeeded)
    );
}

/// Real time: the outcome hangs on real process exits, so this test waits
/// for conditions with a deadline instead of stepping a paused clock.
#[actix_rt::test]
async fn overlap_replace_kills_the_running_run_first() {
    let mut rig = rig();
    rig.ctx.clock = Arc::new(crate::clock::SystemClock);
    let mut job = Job::new("replaced", "sleep 600", "* * * * * *");
    job.overlap = Overlap::Replace;
    let actor = job_actor(&rig, job);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let killed = loop {
        let killed: Vec<_> = records(&rig)
            .into_iter()
            .filter(|r| r.status == RunStatus::Killed)
            .collect();
        if !killed.is_empty() {
            break killed;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no run was replaced"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    actor.send(StopJob).await.unwrap();
    // A stopping actor still starts the ticks it has claimed: wait for it
    // to end before ending the runs.
    while actor.connected() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the actor did not stop"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let replaced = &killed[0];
    assert_eq!(
        replaced.err,
        format!(
            "replaced by the run of tick {} (overlap: replace)",
            replaced.plan_time + 1_000
        )
    );
    assert!(
        rig.ctx.running.count("replaced") >= 1,
        "the replacing run goes on"
    );
    rig.ctx.running.kill("replaced", "test over");
    while rig.ctx.running.count("replaced") > 0 {
        assert!(
            tokio::time::Instant::now() < deadline + Duration::from_secs(5),
            "runs did not end"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[actix_rt::test]
async fn a_stopping_actor_starts_the_tick_it_already_claimed() {
    tokio::time::pause();
    let rig = rig();
    let actor = job_actor(&rig, Job::new("handing", "true", "* * * * * *"));
    // The claim for the tick at +1 s is made 500 ms before it.
    pass_settled(&rig, Duration::from_millis(700)).await;
    actor.send(StopJob).await.unwrap();
    pass_settled(&rig, Duration::from_millis(1_500)).await;
    let ticks: Vec<i64> = records(&rig)
        .iter()
        .map(|r| r.plan_time - START_MS)
        .collect();
    assert_eq!(
        ticks,
        [1_000],
        "the claimed tick ran; no later tick was claimed"
    );
    assert!(!actor.connected(), "the actor ended after the start");
}

#[actix_rt::test]
async fn overlap_allow_runs_ticks_side_by_side() {
    tokio::time::pause();
    let rig = rig();
    let mut job = Job::new("parallel", "sleep 600", "* * * * * *");
    job.overlap = Overlap::Allow;
    job_actor(&rig, job);
    pass(Duration::from_millis(3_500)).await;
    assert_eq!(rig.ctx.running.count("parallel"), 3);
    let statuses: Vec<RunStatus> = records(&rig).iter().map(|r| r.status).collect();
    assert_eq!(
        statuses,
        [RunStatus::Started; 3],
        "three open runs: nothing ended, nothing skipped"
    );
    rig.ctx.running.kill("parallel", "test over");
    pass(Duration::from_millis(1_000)).await;
}

#[actix_rt::test]
async fn a_tick_is_claimed_once_across_workers() {
    tokio::time::pause();
    let rig = rig();
    let other = LockActor::new(
        rig.coord.clone(),
        rig.ctx.clock.clone(),
        "w2".into(),
        Duration::from_secs(10),
        ClaimPolicy::default(),
    )
    .start();
    pass(Duration::from_millis(100)).await;
    let claim = || ClaimTick::of("j", START_MS + 1000);
    let first = rig.ctx.lock.send(claim()).await.unwrap().unwrap();
    let second = other.send(claim()).await.unwrap().unwrap();
    assert!(matches!(first, ClaimOutcome::Won(_)));
    assert!(
        matches!(second, ClaimOutcome::Lost { ref holder } if holder == "w1"),
        "{second:?}"
    );
}

#[actix_rt::test]
async fn every_token_dies_when_the_lease_is_lost_and_no_claim_is_made() {
    tokio::time::pause();
    let rig = rig();
    pass(Duration::from_millis(100)).await;
    let (lease, token) = rig
        .ctx
        .lock
        .send(CurrentSession)
        .await
        .unwrap()
        .expect("a session");
    let ClaimOutcome::Won(claimed) = rig
        .ctx
        .lock
        .send(ClaimTick::of("j", START_MS))
        .await
        .unwrap()
        .unwrap()
    else {
        panic!("first claim wins");
    };
    assert!(token.is_alive() && claimed.token.is_alive());
    // The lease ends behind the worker's back (as when etcd expires it).
    rig.coord.revoke(lease).await.unwrap();
    pass(Duration::from_secs(4)).await;
    assert!(
        !token.is_alive() && !claimed.token.is_alive(),
        "all tokens die at once"
    );
    // A new session follows; claims work again with a new lease.
    pass(Duration::from_secs(2)).await;
    let (new_lease, _) = rig
        .ctx
        .lock
        .send(CurrentSession)
        .await
        .unwrap()
        .expect("a new session");
    assert_ne!(new_lease, lease);
    assert!(!claimed.token.is_alive(), "old tokens stay dead");
    assert!(
        claimed.confirm(START_MS).await == super::lock::Confirmation::NotOurs,
        "a tick won in a lost session never starts"
    );
    assert_eq!(
        rig.coord.get(&claimed.claim.key).await.unwrap(),
        None,
        "its claim ended with the session: the tick is free for the next owner"
    );
}

/// Real time: the kill hangs on a real process exit.
#[actix_rt::test]
async fn losing_the_session_kills_the_runs_in_progress() {
    let mut rig = rig();
    rig.ctx.clock = Arc::new(crate::clock::SystemClock);
    let actor = job_actor(&rig, Job::new("long", "sleep 600", "* * * * * *"));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while rig.ctx.running.count("long") == 0 {
        assert!(tokio::time::Instant::now() < deadline, "no run started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (lease, _) = rig.ctx.lock.send(CurrentSession).await.unwrap().unwrap();
    // The lease ends behind the worker's back (an etcd outage past its TTL).
    rig.coord.revoke(lease).await.unwrap();
    let killed = loop {
        if let Some(run) = records(&rig)
            .into_iter()
            .find(|r| r.status == RunStatus::Killed)
        {
            break run;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the run was not killed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        killed.err,
        "killed: the worker lost its session, so its runs were declared lost"
    );
    // Leave nothing running: stop the actor, then end any later run.
    actor.send(StopJob).await.unwrap();
    while actor.connected() || rig.ctx.running.total() > 0 {
        assert!(tokio::time::Instant::now() < deadline, "runs did not end");
        rig.ctx.running.kill_all("test over");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[actix_rt::test]
async fn a_failed_run_is_retried_with_backoff_each_attempt_recorded() {
    tokio::time::pause();
    let rig = rig();
    let mut job = Job::new("flaky", "echo \"day=$DAY\"; exit 3", "@yearly");
    job.env.insert("DAY".into(), "sunday".into());
    job.retries = 2;
    job.retry_backoff = 2;
    let actor = job_actor(&rig, job);
    let params: std::collections::BTreeMap<String, String> =
        [("DAY".to_string(), "monday".to_string())].into();
    actor
        .send(super::job::RunNow {
            tick_ms: START_MS,
            origin: super::job::RunOrigin {
                requested_by: Some("ana (user:ana)".into()),
                params: params.clone(),
                triggered_by: None,
            },
        })
        .await
        .unwrap();
    // Attempts at 0 s, +2 s and +4 s after that (backoff doubles).
    pass_settled(&rig, Duration::from_secs(10)).await;
    let runs = records(&rig);
    let ids: Vec<&str> = runs.iter().map(|r| r.run_id.as_str()).collect();
    let first = format!("flaky-{START_MS}-w1");
    assert_eq!(
        ids,
        [
            first.clone(),
            format!("{first}-retry1"),
            format!("{first}-retry2")
        ]
    );
    assert!(
        runs.iter()
            .all(|r| r.status == RunStatus::Failed && r.plan_time == START_MS)
    );
    assert!(
        runs.iter()
            .all(|r| r.requested_by.as_deref() == Some("ana (user:ana)")),
        "every attempt of a requested run says who asked"
    );
    assert!(
        runs.iter()
            .all(|r| r.params == params && r.output == "day=monday\n"),
        "every attempt runs with the parameters and records them: {runs:?}"
    );
    let gaps: Vec<i64> = runs
        .windows(2)
        .map(|w| (w[1].start_time - w[0].start_time + 500) / 1000)
        .collect();
    assert_eq!(gaps, [2, 4], "exponential backoff in seconds");
}

/// Planned ticks of the records, in seconds after `START_MS`, sorted.
fn ticks_run(rig: &Rig) -> Vec<i64> {
    let mut ticks: Vec<i64> = records(rig)
        .iter()
        .map(|r| (r.plan_time - START_MS) / 1000)
        .collect();
    ticks.sort();
    ticks
}

/// Another worker's confirmed claim of `tick_ms`.
async fn claimed_elsewhere(rig: &Rig, job: &str, tick_ms: i64) {
    let lease = rig.coord.grant(Duration::from_secs(600)).await.unwrap();
    let key = crate::coord::claims::tick_key(job, tick_ms);
    rig.coord
        .put(&key, b"w2 nonce".to_vec(), Some(lease))
        .await
        .unwrap();
}

#[actix_rt::test]
async fn a_new_owner_runs_late_every_tick_nobody_ran_in_its_window() {
    tokio::time::pause();
    let mut rig = rig();
    rig.ctx.misfire_window = Duration::from_secs(60);
    // Every 10 s; the actor starts at +27 s: 0, 10 and 20 were missed,
    // but another worker ran 10.
    pass_settled(&rig, Duration::from_secs(27)).await;
    claimed_elsewhere(&rig, "late", START_MS + 10_000).await;
    let mut job = Job::new("late", "true", "@every 10s");
    job.updated_at = Some(START_MS - 1); // saved just before 0
    job_actor(&rig, job);
    pass_settled(&rig, Duration::from_millis(1_500)).await;
    assert_eq!(
        ticks_run(&rig),
        [0, 20],
        "the free ticks, once each, at once"
    );
    pass_settled(&rig, Duration::from_secs(2)).await;
    assert_eq!(ticks_run(&rig), [0, 20, 30], "then the schedule as usual");
}

#[actix_rt::test]
async fn misfire_policies_latest_skip_and_the_jobs_last_save_bound_the_look_back() {
    tokio::time::pause();
    let mut rig = rig();
    rig.ctx.misfire_window = Duration::from_secs(60);
    pass_settled(&rig, Duration::from_secs(27)).await;
    let mut latest = Job::new("latest", "true", "@every 10s");
    latest.misfire = Some(crate::job::Misfire::Latest);
    let mut legacy = Job::new("legacy", "true", "@every 10s");
    legacy.catch_up = 15; // the older field: latest, within 15 s
    let mut skip = Job::new("skip", "true", "@every 10s");
    skip.misfire = Some(crate::job::Misfire::Skip);
    let mut saved = Job::new("saved", "true", "@every 10s");
    saved.updated_at = Some(START_MS + 5_000);
    let mut short = Job::new("short", "true", "@every 10s");
    short.misfire_window_secs = Some(10);
    for job in [latest, legacy, skip, saved, short] {
        job_actor(&rig, job);
    }
    pass_settled(&rig, Duration::from_millis(1_500)).await;
    let mut runs: Vec<(String, i64)> = records(&rig)
        .iter()
        .map(|r| (r.job_name.clone(), (r.plan_time - START_MS) / 1000))
        .collect();
    runs.sort();
    let expected = [
        ("latest", 20),
        ("legacy", 20),
        ("saved", 10),
        ("saved", 20),
        ("short", 20),
    ];
    assert_eq!(
        runs,
        expected.map(|(j, t)| (j.to_string(), t)),
        "latest runs the newest only; skip none; nothing before the last save; the window bounds the rest"
    );
}

#[actix_rt::test]
async fn ticks_missed_while_the_session_was_lost_run_late_once_it_is_back() {
    tokio::time::pause();
    let mut rig = rig();
    rig.ctx.misfire_window = Duration::from_secs(60);
    let mut job = Job::new("steady", "true", "* * * * * *");
    job.updated_at = Some(START_MS);
    let actor = job_actor(&rig, job);
    pass_settled(&rig, Duration::from_millis(3_200)).await;
    // The lease ends behind the worker's back (an etcd outage past its TTL).
    let (lease, _) = rig.ctx.lock.send(CurrentSession).await.unwrap().unwrap();
    rig.coord.revoke(lease).await.unwrap();
    pass_settled(&rig, Duration::from_secs(12)).await;
    let counters = actor.send(GetJobCounters).await.unwrap();
    assert!(
        counters.claim_failures > 0 && counters.misfires_claimed > 0,
        "claims failed, then the missed ticks were claimed late: {counters:?}"
    );
    let ran = ticks_run(&rig);
    let planned: Vec<i64> = (1..=15).collect();
    assert_eq!(ran, planned, "every tick exactly once, late or on time");
    actor.send(StopJob).await.unwrap();
}

/// An every-second job, on virtual time, over a coordinator whose faults a
/// test turns on, looking back 60 s for missed ticks.
fn every_second_on_a_faulty_etcd() -> (Arc<crate::coord::faulty::Faulty>, Rig, Addr<JobActor>) {
    tokio::time::pause();
    let faulty = Arc::new(crate::coord::faulty::Faulty::in_memory());
    let mut rig = rig_on(faulty.clone());
    rig.ctx.misfire_window = Duration::from_secs(60);
    let mut job = Job::new("steady", "true", "* * * * * *");
    job.updated_at = Some(START_MS);
    let actor = job_actor(&rig, job);
    (faulty, rig, actor)
}

#[actix_rt::test]
async fn a_worker_takes_its_look_backs_a_few_at_a_time() {
    use crate::coord::claims::LOOK_BACK_READS;
    use std::sync::atomic::Ordering::SeqCst;
    tokio::time::pause();
    let faulty = Arc::new(crate::coord::faulty::Faulty::in_memory());
    faulty.list_ms.store(200, SeqCst);
    let mut rig = rig_on(faulty.clone());
    rig.ctx.misfire_window = Duration::from_secs(60);
    // 40 jobs taken over at once: each looks back, one range read each.
    let jobs = 40;
    let actors: Vec<Addr<JobActor>> = (0..jobs)
        .map(|i| {
            let mut job = Job::new(&format!("hourly-{i}"), "true", "0 0 * * * *");
            job.updated_at = Some(START_MS - 3_600_000);
            job_actor(&rig, job)
        })
        .collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while faulty.lists.load(SeqCst) < jobs {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} of {jobs} jobs looked back",
            faulty.lists.load(SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let most = faulty.most_lists_in_flight.load(SeqCst);
    assert!(
        (2..=LOOK_BACK_READS).contains(&most),
        "look backs read concurrently, at most {LOOK_BACK_READS} at once: {most}"
    );
    for actor in actors {
        actor.send(StopJob).await.unwrap();
    }
}

#[actix_rt::test]
async fn a_confirm_whose_answer_went_with_etcd_is_settled_once_etcd_answers_again() {
    use std::sync::atomic::Ordering::SeqCst;
    let (faulty, rig, actor) = every_second_on_a_faulty_etcd();
    pass_settled(&rig, Duration::from_millis(2_600)).await;
    // Tick 3's confirm lands, then etcd goes away with the answer and stays
    // away past the session's TTL; once back, its first reads still fail.
    faulty.down_after_swaps.store(1, SeqCst);
    pass_settled(&rig, Duration::from_secs(15)).await;
    assert!(
        faulty.down.load(SeqCst),
        "the confirm of tick 3 took etcd down"
    );
    faulty.failing_gets.store(3, SeqCst);
    faulty.down.store(false, SeqCst);
    pass_settled(&rig, Duration::from_secs(10)).await;
    assert_eq!(
        faulty.failing_gets.load(SeqCst),
        0,
        "settling read the claim again"
    );
    let planned: Vec<i64> = (1..=27).collect();
    let ran: Vec<i64> = ticks_run(&rig).into_iter().filter(|t| *t <= 27).collect();
    assert_eq!(
        ran, planned,
        "tick 3 ran once, late, as did the ticks of the outage"
    );
    actor.send(StopJob).await.unwrap();
}

#[actix_rt::test]
async fn a_handing_over_actor_stops_once_the_new_owner_is_seen_claiming() {
    tokio::time::pause();
    let rig = rig();
    let actor = job_actor(&rig, Job::new("moving", "true", "@every 10s"));
    pass_settled(&rig, Duration::from_secs(1)).await;
    actor.send(super::job::HandOver(true)).await.unwrap();
    // Ticks keep being claimed here until the new owner takes one.
    pass_settled(&rig, Duration::from_secs(10)).await;
    assert!(
        actor.connected(),
        "no sign of the new owner yet: still firing"
    );
    assert_eq!(ticks_run(&rig), [10]);
    claimed_elsewhere(&rig, "moving", START_MS + 20_000).await;
    pass_settled(&rig, Duration::from_secs(10)).await;
    assert!(!actor.connected(), "the new owner won tick 20: handed over");
    assert_eq!(ticks_run(&rig), [10]);
}

#[actix_rt::test]
async fn a_run_asks_for_its_chain_before_its_record_leaves() {
    tokio::time::pause();
    let rig = rig();
    let mut ok = Job::new("extract", "true", "@yearly");
    ok.on_success = vec!["load".into()];
    ok.on_failure = vec!["alert".into()];
    let mut failing = Job::new("flaky", "exit 1", "@yearly");
    failing.on_failure = vec!["alert".into()];
    failing.retries = 1;
    failing.retry_backoff = 1;
    for job in [ok, failing] {
        let actor = job_actor(&rig, job);
        actor
            .send(super::job::RunNow {
                tick_ms: START_MS,
                origin: Default::default(),
            })
            .await
            .unwrap();
    }
    pass_settled(&rig, Duration::from_secs(5)).await;
    let (kvs, _) = rig.coord.list(crate::keyspace::RUN_REQUESTS).await.unwrap();
    let asked: Vec<(String, Option<String>)> = kvs
        .iter()
        .map(|kv| {
            let request = crate::keyspace::RunRequest::parse(&kv.value).unwrap();
            (kv.key.clone(), request.triggered_by)
        })
        .collect();
    let extract = format!("extract-{START_MS}-w1");
    let flaky_last = format!("flaky-{START_MS}-w1-retry1");
    assert_eq!(
        asked,
        [
            (format!("run/alert/{flaky_last}"), Some(flaky_last.clone())),
            (format!("run/load/{extract}"), Some(extract.clone())),
        ],
        "success starts onSuccess; only the last failed attempt starts onFailure"
    );
}

#[actix_rt::test]
async fn a_chained_run_seen_twice_runs_once_and_names_its_parent() {
    tokio::time::pause();
    let rig = rig();
    let actor = job_actor(&rig, Job::new("load", "true", "@yearly"));
    let origin = super::job::RunOrigin {
        triggered_by: Some("extract-5-w9".into()),
        ..Default::default()
    };
    for tick_ms in [START_MS, START_MS + 700] {
        actor
            .send(super::job::RunNow {
                tick_ms,
                origin: origin.clone(),
            })
            .await
            .unwrap();
    }
    pass_settled(&rig, Duration::from_secs(3)).await;
    let runs = records(&rig);
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0].run_id, "load-after-extract-5-w9");
    assert_eq!(runs[0].triggered_by.as_deref(), Some("extract-5-w9"));
    assert!(
        rig.coord
            .get(&crate::chain::claim_key("load", "extract-5-w9"))
            .await
            .unwrap()
            .is_some()
    );
}

#[actix_rt::test]
async fn a_won_tick_whose_confirm_never_landed_is_run_late_by_its_winner() {
    use std::sync::atomic::Ordering::SeqCst;
    let (faulty, rig, actor) = every_second_on_a_faulty_etcd();
    // Tick 3 is won at 2.5 s (claims go 0.5 s ahead). At 2.7 s etcd goes
    // away, before its confirm, for longer than the session's TTL, and the
    // job moves to another owner, whose look back saw the tick claimed:
    // only the winner knows the tick is free once its old session is gone.
    pass_settled(&rig, Duration::from_millis(2_700)).await;
    faulty.down.store(true, SeqCst);
    actor.send(StopJob).await.unwrap();
    pass_settled(&rig, Duration::from_secs(15)).await;
    faulty.down.store(false, SeqCst);
    pass_settled(&rig, Duration::from_secs(5)).await;
    assert_eq!(
        ticks_run(&rig),
        [1, 2, 3],
        "tick 3 ran once, late, on the worker that had won it"
    );
}
