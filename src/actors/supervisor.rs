//! JobSupervisor: the thin actor around [`Ownership`], the pure state
//! machine that decides which jobs this worker owns, hands jobs over and
//! spots lost runs (see its module for the rules).
//!
//! One [`Follower`] lists and watches `jobs/`, `workers/`, `running/` and
//! `run/`; each delivery goes through the state machine, and the actor
//! carries out its actions: one JobActor per owned job, hand-offs with a
//! bounded window, `lost` records once the dead worker's runs are fenced,
//! and reruns under `onLost: rerun`.

use std::collections::HashMap;
use std::time::Duration;

use actix::prelude::*;
use serde::{Deserialize, Serialize};

use super::context::{OverlapDecision, WorkerContext};
use super::job::{
    HandOver, JobActor, RecoverMisfires, RunNow, RunningEntry, StopJob, UpdateJob,
    run_claimed_tick, skip_claimed_tick,
};
use super::lock::{ClaimOutcome, ClaimTick};
use super::messages::Record;
pub use super::ownership::rendezvous_owner;
use super::ownership::{Action, Ownership};
use crate::coord::follow::{Followed, Follower, follow};
use crate::job::{Job, OnLost};
use crate::keyspace;
use crate::runlog::{RunRecord, RunStatus};
use crate::runner::RunSpec;

/// The longest a worker keeps firing a job after ownership moved away; it
/// stops sooner, as soon as a claim shows the new owner at work.
const HANDOVER: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", default)]
pub struct SupervisorCounters {
    pub jobs_known: u64,
    pub jobs_owned: u64,
    pub workers_alive: u64,
    pub resyncs: u64,
    pub lost_runs_recorded: u64,
    /// Open runs of dead workers closed as lost by this worker.
    pub open_runs_closed: u64,
    pub lost_runs_rerun: u64,
}

struct Owned {
    addr: Addr<JobActor>,
    job: Job,
    /// Set while handing the job over: stop at this instant.
    leaving: Option<SpawnHandle>,
}

pub struct JobSupervisor {
    ctx: WorkerContext,
    state: Ownership,
    owned: HashMap<String, Owned>,
    /// Lists and watches the keyspace; dropped at stop.
    follower: Option<Follower>,
    /// Passes on each new session of the worker; aborted at stop.
    sessions_task: Option<tokio::task::JoinHandle<()>>,
    counters: SupervisorCounters,
}

/// A listing or a change from the follower.
#[derive(Message)]
#[rtype(result = "()")]
struct Delivered(Followed);

/// The worker holds a new session (after losing one, claims that were not
/// confirmed are gone): every job looks back for what it missed.
#[derive(Message)]
#[rtype(result = "()")]
struct SessionRegained;

/// Graceful stop: every JobActor keeps firing through the handover (the
/// worker has left the membership, so other workers take its jobs now),
/// then stops once what it claimed has started. Answers with the actors, so
/// the caller can wait for them to end.
#[derive(Message)]
#[rtype(result = "Vec<Addr<JobActor>>")]
pub struct StopAll;

#[derive(Message)]
#[rtype(result = "SupervisorCounters")]
pub struct GetSupervisorCounters;

impl JobSupervisor {
    pub fn new(ctx: WorkerContext) -> JobSupervisor {
        JobSupervisor {
            state: Ownership::new(&ctx.worker_id, &ctx.group),
            ctx,
            owned: HashMap::new(),
            follower: None,
            sessions_task: None,
            counters: SupervisorCounters::default(),
        }
    }

    /// Carry out the state machine's decisions.
    fn act(&mut self, actions: Vec<Action>, ctx: &mut Context<Self>) {
        let now =
            chrono::DateTime::from_timestamp_millis(self.ctx.clock.now_ms()).unwrap_or_default();
        for action in actions {
            match action {
                Action::Own(job) => self.keep(*job, now, ctx),
                Action::HandOver(name) => self.leave(&name, ctx, HANDOVER),
                Action::Stop(name) => self.leave(&name, ctx, Duration::ZERO),
                Action::RunNow(name, request) => {
                    if let Some(owned) = self.owned.get(&name) {
                        owned.addr.do_send(RunNow {
                            tick_ms: request.plan_time,
                            origin: request.into(),
                        });
                    }
                }
                Action::Lost(entry) => self.lost(entry, ctx),
                Action::ClusterRuns(counts) => self.ctx.cluster_runs.replace(counts),
                Action::CloseOpenRuns { worker, died_at_ms } => {
                    let wait = self.ctx.limits.kill_grace;
                    self.close_open_runs(worker, died_at_ms, wait, ctx)
                }
            }
        }
        self.counters.jobs_known = self.state.jobs_known() as u64;
        self.counters.jobs_owned = self.state.jobs_owned() as u64;
        self.counters.workers_alive = self.state.workers_alive() as u64;
    }

    /// This worker owns `job`: start its actor, or update it if it changed.
    fn keep(&mut self, job: Job, now: chrono::DateTime<chrono::Utc>, ctx: &mut Context<Self>) {
        let name = job.name.clone();
        self.ctx.known_jobs.remember(&job);
        if self.owned.get(&name).is_some_and(|o| !o.addr.connected()) {
            // It handed over and ended; ownership came back: start afresh.
            if let Some(owned) = self.owned.remove(&name)
                && let Some(handle) = owned.leaving
            {
                ctx.cancel_future(handle);
            }
        }
        if let Some(owned) = self.owned.get_mut(&name) {
            if let Some(handle) = owned.leaving.take() {
                ctx.cancel_future(handle);
                owned.addr.do_send(HandOver(false));
            }
            if owned.job == job {
                return;
            }
        }
        // Compile a schedule only for a job that is new here or changed.
        let schedule = match job.validate(now) {
            Ok(schedule) => schedule,
            Err(error) => {
                tracing::warn!(job = %name, %error, "stored job is invalid; not scheduling it");
                self.leave(&name, ctx, Duration::ZERO);
                return;
            }
        };
        match self.owned.get_mut(&name) {
            Some(owned) => {
                owned.addr.do_send(UpdateJob(job.clone(), schedule));
                owned.job = job;
            }
            None => {
                let addr = JobActor::new(self.ctx.clone(), job.clone(), schedule).start();
                tracing::debug!(job = %name, "job owned");
                let leaving = None;
                self.owned.insert(name, Owned { addr, job, leaving });
            }
        }
    }

    /// Stop firing `name`: now, or after a hand-off of at most `after`.
    fn leave(&mut self, name: &str, ctx: &mut Context<Self>, after: Duration) {
        if after.is_zero() {
            if let Some(owned) = self.owned.remove(name) {
                if let Some(handle) = owned.leaving {
                    ctx.cancel_future(handle);
                }
                owned.addr.do_send(StopJob);
            }
            return;
        }
        let name_owned = name.to_string();
        if let Some(owned) = self.owned.get_mut(name)
            && owned.leaving.is_none()
        {
            owned.addr.do_send(HandOver(true));
            owned.leaving = Some(ctx.run_later(after, move |act, _| {
                if let Some(owned) = act.owned.remove(&name_owned) {
                    tracing::debug!(job = %name_owned, "job handed over");
                    owned.addr.do_send(StopJob);
                }
            }));
        }
    }

    /// A run whose worker died: once its fence has surely killed it (the
    /// lease ended; the dead worker's fence kills its runs by then, give or
    /// take `killGraceMs`), record it and re-run it if the job asks.
    fn lost(&mut self, entry: RunningEntry, ctx: &mut Context<Self>) {
        let fenced_after = self.ctx.limits.kill_grace;
        ctx.run_later(fenced_after, move |act, ctx| act.record_lost(entry, ctx));
    }

    /// Close, as lost, what a dead worker left unexplained, once its fence
    /// has stopped its runs: runs it left open in the run log (started, or
    /// waiting for a retry), and ticks it claimed whose record never
    /// reached the run log (it died with them in its journal). Only what
    /// began before it died, so a new incarnation's runs are left alone;
    /// if it comes back with the results in its journal, those replace
    /// the `lost`.
    fn close_open_runs(
        &mut self,
        worker: String,
        died_at_ms: i64,
        wait: Duration,
        ctx: &mut Context<Self>,
    ) {
        let (run_log, coord) = (self.ctx.run_log.clone(), self.ctx.coord.clone());
        let dead = worker.clone();
        let find = async move {
            tokio::time::sleep(wait).await;
            // Back already (same id) and still shipping its journal: its
            // own records are on their way; close only what they leave.
            if let Some(queued) = still_shipping(&*coord, &dead, died_at_ms).await {
                return Err(crate::runlog::RunLogError::Unavailable(format!(
                    "{dead} is back and its journal still holds {queued} records"
                )));
            }
            let open = run_log.unfinished(&dead, 10_000).await?;
            let open: Vec<RunRecord> = open
                .into_iter()
                .filter(|r| r.start_time <= died_at_ms)
                .collect();
            let (claims, _) = coord
                .list(crate::keyspace::TICKS)
                .await
                .map_err(|e| crate::runlog::RunLogError::Unavailable(e.to_string()))?;
            let claimed = crate::coord::claims::claims_of(&claims, &dead, died_at_ms);
            let ids: Vec<String> = claimed
                .iter()
                .map(|(job, tick)| super::job::run_id(job, *tick, &dead))
                .collect();
            let missing: std::collections::HashSet<String> =
                run_log.missing(&ids).await?.into_iter().collect();
            let unrecorded: Vec<(String, i64, String)> = claimed
                .into_iter()
                .zip(ids)
                .filter(|(_, id)| missing.contains(id))
                .map(|((job, tick), id)| (job, tick, id))
                .collect();
            Ok::<_, crate::runlog::RunLogError>((open, unrecorded))
        };
        ctx.spawn(find.into_actor(self).map(move |found, act, ctx| {
            let (open, unrecorded) = match found {
                Ok(found) => found,
                Err(error) => {
                    // The run log or etcd is out: try again while the dead
                    // worker's claims still tell what it held.
                    let now = act.ctx.clock.now_ms();
                    let horizon = act.ctx.claims.policy().max_misfire_window();
                    let gave_up = now - died_at_ms > horizon.as_millis() as i64;
                    tracing::warn!(%worker, %error, gave_up, "cannot close what a dead worker left open");
                    if !gave_up {
                        act.close_open_runs(worker, died_at_ms, CLOSE_RETRY, ctx);
                    }
                    return;
                }
            };
            let now = act.ctx.clock.now_ms();
            let why = format!("worker {worker} died");
            for run in &open {
                let mut lost = crate::actors::log_batcher::closed_as_lost(run, now);
                lost.err = format!("{why}: {}", lost.err);
                act.ctx.batcher.do_send(Record(lost));
            }
            for (job, tick, run_id) in &unrecorded {
                let claimed = RunningEntry {
                    run_id: run_id.clone(),
                    job_name: job.clone(),
                    command: act.state.job(job).map(|j| j.command.clone()).unwrap_or_default(),
                    worker: worker.clone(),
                    plan_time: *tick,
                    schedule_time: *tick,
                    start_time: *tick,
                    requested_by: None,
                };
                let err = format!("{why} after claiming this tick; no record of its run reached the run log");
                act.ctx.batcher.do_send(Record(lost_record(&claimed, now, err)));
            }
            let closed = (open.len() + unrecorded.len()) as u64;
            if closed > 0 {
                tracing::warn!(%worker, open = open.len(), unrecorded = unrecorded.len(), "closed what a dead worker left unexplained as lost");
            }
            act.counters.open_runs_closed += closed;
        }));
    }

    /// Record a fenced lost run, and re-run its tick if the job asks for it
    /// and this worker owns the job.
    fn record_lost(&mut self, entry: RunningEntry, ctx: &mut Context<Self>) {
        tracing::warn!(job = %entry.job_name, run_id = %entry.run_id, worker = %entry.worker, "run lost with its worker");
        self.counters.lost_runs_recorded += 1;
        let now = self.ctx.clock.now_ms();
        let err = format!("worker {} died mid-run (its lease ended)", entry.worker);
        self.ctx
            .batcher
            .do_send(Record(lost_record(&entry, now, err)));
        let Some(job) = self.state.job(&entry.job_name).cloned() else {
            return;
        };
        if job.on_lost != OnLost::Rerun || !self.state.owns(&job) {
            return;
        }
        // The run may have ended, its result shipped, just before its worker
        // died with the unregistration unsent: look before running it again.
        let (run_log, run_id) = (self.ctx.run_log.clone(), entry.run_id.clone());
        let recorded = async move { run_log.get(&run_id).await };
        ctx.spawn(recorded.into_actor(self).map(move |found, act, _| {
            let recorded = match found {
                Ok(record) => record.map(|r| r.status),
                Err(error) => {
                    tracing::warn!(run_id = %entry.run_id, %error, "cannot read the lost run's record; running it again");
                    None
                }
            };
            if !rerun_lost(recorded) {
                tracing::info!(run_id = %entry.run_id, status = ?recorded, "the lost run had ended before its worker died; not running it again");
                return;
            }
            act.counters.lost_runs_rerun += 1;
            rerun(act.ctx.clone(), entry, job);
        }));
    }
}

/// Whether a run lost with its worker is run again under `onLost: rerun`,
/// given what the run log holds of it: not when the run ended on its own
/// (its worker shipped the result, then died before its `running/` key
/// went), as that would run the tick twice. A `killed` run (its fence, a
/// replace) or none at all is run again.
pub fn rerun_lost(recorded: Option<RunStatus>) -> bool {
    !matches!(
        recorded,
        Some(RunStatus::Succeeded | RunStatus::Failed | RunStatus::TimedOut)
    )
}

/// Run a lost run again, under a claim of its own so only one worker runs it.
fn rerun(ctx: WorkerContext, entry: RunningEntry, job: Job) {
    let claim = ClaimTick::of(
        &format!("{}.rerun-of-{}", job.name, entry.run_id),
        entry.plan_time,
    );
    actix::spawn(async move {
        if let Ok(Ok(ClaimOutcome::Won(ticket))) = ctx.lock.send(claim).await {
            let spec = RunSpec {
                params: Default::default(),
                triggered_by: None,
                run_id: format!("{}-rerun", entry.run_id),
                worker: ctx.worker_id.clone(),
                plan_time: entry.plan_time,
                schedule_time: ctx.clock.now_ms(),
                attempt: 0,
                requested_by: entry.requested_by,
                job,
            };
            // The rerun honours the overlap policy: under `forbid`, a
            // newer run of the job in progress anywhere skips it.
            match ctx.overlap_decision(&spec.job) {
                OverlapDecision::Start => run_claimed_tick(ctx, spec, ticket).await,
                OverlapDecision::Skip => skip_claimed_tick(ctx, spec, ticket).await,
                OverlapDecision::ReplaceThenStart => {
                    let reason = format!(
                        "replaced by the rerun of {} (overlap: replace)",
                        entry.run_id
                    );
                    ctx.running.kill(&spec.job.name, &reason);
                    run_claimed_tick(ctx, spec, ticket).await;
                }
            }
        }
    });
}

impl Actor for JobSupervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let (mut sessions, addr) = (self.ctx.sessions.clone(), ctx.address());
        self.sessions_task = Some(actix::spawn(async move {
            while sessions.changed().await.is_ok() {
                addr.do_send(SessionRegained);
            }
        }));
        let addr = ctx.address();
        let prefixes = [
            keyspace::JOBS,
            keyspace::WORKERS,
            keyspace::RUNNING,
            keyspace::RUN_REQUESTS,
        ];
        self.follower = Some(follow(self.ctx.coord.clone(), &prefixes, move |followed| {
            if !addr.connected() {
                return false;
            }
            addr.do_send(Delivered(followed));
            true
        }));
    }
}

impl Handler<Delivered> for JobSupervisor {
    type Result = ();

    fn handle(&mut self, Delivered(followed): Delivered, ctx: &mut Context<Self>) {
        if matches!(followed, Followed::Listed(_)) {
            self.counters.resyncs += 1;
        }
        let actions = self.state.apply(followed, self.ctx.clock.now_ms());
        self.act(actions, ctx);
    }
}

impl Handler<SessionRegained> for JobSupervisor {
    type Result = ();

    fn handle(&mut self, _: SessionRegained, _: &mut Context<Self>) {
        for owned in self.owned.values().filter(|o| o.leaving.is_none()) {
            owned.addr.do_send(RecoverMisfires);
        }
    }
}

impl Handler<StopAll> for JobSupervisor {
    type Result = MessageResult<StopAll>;

    fn handle(&mut self, _: StopAll, ctx: &mut Context<Self>) -> Self::Result {
        self.follower = None;
        if let Some(task) = self.sessions_task.take() {
            task.abort();
        }
        let actors = self.owned.values().map(|o| o.addr.clone()).collect();
        let actions = self.state.stop();
        self.act(actions, ctx);
        MessageResult(actors)
    }
}

impl Handler<GetSupervisorCounters> for JobSupervisor {
    type Result = MessageResult<GetSupervisorCounters>;

    fn handle(&mut self, _: GetSupervisorCounters, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.counters.clone())
    }
}

/// The `lost` record of a run (or a claimed tick) of a worker that died.
/// How many records a worker that died at `died_at_ms` and came back with
/// the same id still has to ship, if it is back and has any.
async fn still_shipping(
    coord: &dyn crate::coord::Coordinator,
    worker: &str,
    died_at_ms: i64,
) -> Option<u64> {
    let kv = coord
        .get(&crate::keyspace::worker_key(worker))
        .await
        .ok()??;
    let info: crate::keyspace::WorkerInfo = serde_json::from_slice(&kv.value).ok()?;
    (info.started > died_at_ms && info.batcher.queued > 0).then_some(info.batcher.queued)
}

/// Between attempts to close what a dead worker left open.
const CLOSE_RETRY: Duration = Duration::from_secs(5);

fn lost_record(entry: &RunningEntry, now: i64, err: String) -> RunRecord {
    RunRecord {
        params: Default::default(),
        triggered_by: None,
        run_id: entry.run_id.clone(),
        job_name: entry.job_name.clone(),
        command: entry.command.clone(),
        worker: entry.worker.clone(),
        plan_time: entry.plan_time,
        schedule_time: entry.schedule_time,
        start_time: entry.start_time,
        end_time: now,
        status: RunStatus::Lost,
        exit_code: None,
        signal: None,
        output: String::new(),
        truncated: false,
        err,
        requested_by: entry.requested_by.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lost_run_is_run_again_unless_it_ended_on_its_own() {
        let table = [
            (None, true),
            (Some(RunStatus::Started), true),
            (Some(RunStatus::Pending), true),
            (Some(RunStatus::Lost), true),
            (Some(RunStatus::Killed), true),
            (Some(RunStatus::Succeeded), false),
            (Some(RunStatus::Failed), false),
            (Some(RunStatus::TimedOut), false),
        ];
        for (recorded, expected) in table {
            assert_eq!(rerun_lost(recorded), expected, "{recorded:?}");
        }
    }
}
