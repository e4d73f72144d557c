//! JobActor: one per job this worker owns. It arms its own timer for the
//! next tick and claims the tick through the LockActor `claim_lead` ahead of
//! it, so etcd's latency is paid before the tick rather than added to the
//! start; only the winner runs it, at the tick instant, applying the job's
//! overlap policy then.
//!
//! A tick never kills the actor: a failed claim is logged and the timer is
//! re-armed. Runs are spawned outside the actor, so a run goes on (and is
//! recorded) even when ownership of the job moves and this actor stops.

use std::time::Duration;

use actix::prelude::*;
use serde::{Deserialize, Serialize};

use super::context::WorkerContext;
use super::fixed_delay::PlanDelayRun;
use super::lock::{ClaimOutcome, ClaimTick};
use super::messages::Record;
use crate::coord::session::LivenessToken;
use crate::job::{Job, Overlap};
use crate::runlog::{RunRecord, RunStatus};
use crate::runner::{self, RunSpec};
use crate::schedule::Schedule;

/// The value of a `running/<job>/<run_id>` key: enough for a live worker to
/// write the `lost` record if this worker dies mid-run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunningEntry {
    #[serde(rename = "run_id")]
    pub run_id: String,
    pub job_name: String,
    pub command: String,
    pub worker: String,
    pub plan_time: i64,
    pub schedule_time: i64,
    pub start_time: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_by: Option<String>,
}

/// The value of a `run/<job>` key (`POST /job/run`): the instant to run
/// and who asked. Older managers wrote the instant alone, as a number.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunRequest {
    pub plan_time: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_by: Option<String>,
}

impl RunRequest {
    pub fn parse(value: &[u8]) -> Option<RunRequest> {
        if let Ok(request) = serde_json::from_slice::<RunRequest>(value) {
            return Some(request);
        }
        let plan_time = std::str::from_utf8(value).ok()?.trim().parse().ok()?;
        Some(RunRequest {
            plan_time,
            requested_by: None,
        })
    }
}

/// The key under which a run in progress is registered.
pub fn running_key(job: &str, run_id: &str) -> String {
    format!("running/{job}/{run_id}")
}

/// A run id: unique because one worker wins each tick; readable in logs.
pub fn run_id(job: &str, tick_ms: i64, worker: &str) -> String {
    format!("{job}-{tick_ms}-{worker}")
}

#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct JobCounters {
    pub ticks: u64,
    pub runs_started: u64,
    pub skipped: u64,
    pub claims_lost: u64,
    pub claim_failures: u64,
    /// Won ticks not run because the session died before the start.
    pub token_dead: u64,
}

pub struct JobActor {
    pub(super) ctx: WorkerContext,
    pub(super) job: Job,
    pub(super) schedule: Schedule,
    /// How long before its tick a tick is claimed.
    pub(super) claim_lead: Duration,
    /// The tick the timer is armed for.
    pub(super) armed_for: Option<i64>,
    pub(super) timer: Option<SpawnHandle>,
    pub(super) counters: JobCounters,
    /// A fixed-delay job's run is in progress on this worker (its end arms
    /// the next one).
    pub(super) delay_run_in_flight: bool,
    /// Claims awaiting their answer plus won ticks waiting for their instant:
    /// a stopping actor lives until these are done, so a tick it claimed is
    /// started, never dropped.
    pub(super) in_flight: usize,
    pub(super) stopping: bool,
}

/// The job's definition changed.
#[derive(Message)]
#[rtype(result = "()")]
pub struct UpdateJob(pub Job, pub Schedule);

#[derive(Message)]
#[rtype(result = "JobCounters")]
pub struct GetJobCounters;

/// Stop firing (ownership moved, job deleted or paused, worker stopping).
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopJob;

/// Run the job now for the requested instant (`POST /job/run`). Claimed
/// like any tick, so a request seen twice still runs once.
#[derive(Message)]
#[rtype(result = "()")]
pub struct RunNow {
    pub tick_ms: i64,
    pub requested_by: Option<String>,
}

/// The timer for `tick_ms` fired (`claim_lead` before the tick).
#[derive(Message)]
#[rtype(result = "()")]
struct Fire {
    tick_ms: i64,
}

/// A won tick's instant has come: start it.
#[derive(Message)]
#[rtype(result = "()")]
struct StartTick {
    tick_ms: i64,
    schedule_time: i64,
    token: LivenessToken,
    requested_by: Option<String>,
}

impl JobActor {
    pub fn new(ctx: WorkerContext, job: Job, schedule: Schedule) -> JobActor {
        JobActor {
            claim_lead: ctx.claim_lead,
            ctx,
            job,
            schedule,
            armed_for: None,
            timer: None,
            counters: JobCounters::default(),
            delay_run_in_flight: false,
            in_flight: 0,
            stopping: false,
        }
    }

    /// Stop once stopping and nothing claimed is left to start.
    pub(super) fn stop_if_done(&mut self, ctx: &mut Context<Self>) {
        if self.stopping && self.in_flight == 0 {
            ctx.stop();
        }
    }

    pub(super) fn cancel_timer(&mut self, ctx: &mut Context<Self>) {
        if let Some(timer) = self.timer.take() {
            ctx.cancel_future(timer);
        }
    }

    /// Start firing under the current schedule: a fixed delay reads its
    /// chain's state first; a calendar arms its next tick.
    fn begin(&mut self, ctx: &mut Context<Self>) {
        if self.schedule.fixed_delay().is_some() {
            self.cancel_timer(ctx);
            self.armed_for = None;
            ctx.notify(PlanDelayRun);
        } else {
            let now = self.ctx.clock.now_ms();
            self.arm(now, ctx);
        }
    }

    /// Arm the timer for the first tick after `after_ms` (and not before now).
    pub(super) fn arm(&mut self, after_ms: i64, ctx: &mut Context<Self>) {
        self.cancel_timer(ctx);
        let now = self.ctx.clock.now_ms();
        let after =
            chrono::DateTime::from_timestamp_millis(after_ms.max(now - 1)).unwrap_or_default();
        let Some(next) = self.schedule.next_after(after) else {
            tracing::info!(job = %self.job.name, "schedule has no more fire times");
            self.armed_for = None;
            return;
        };
        let tick_ms = next.timestamp_millis();
        let claim_at = tick_ms - self.claim_lead.as_millis() as i64;
        let delay = Duration::from_millis((claim_at - now).max(0) as u64);
        self.armed_for = Some(tick_ms);
        self.timer = Some(ctx.notify_later(Fire { tick_ms }, delay));
    }

    fn skip(&mut self, tick_ms: i64, schedule_time: i64, requested_by: Option<String>) {
        self.counters.skipped += 1;
        let now = self.ctx.clock.now_ms();
        self.ctx.batcher.do_send(Record(RunRecord {
            run_id: run_id(&self.job.name, tick_ms, &self.ctx.worker_id),
            job_name: self.job.name.clone(),
            command: self.job.command.clone(),
            worker: self.ctx.worker_id.clone(),
            plan_time: tick_ms,
            schedule_time,
            start_time: now,
            end_time: now,
            status: RunStatus::Skipped,
            exit_code: None,
            signal: None,
            output: String::new(),
            truncated: false,
            err: "skipped: the previous run is still in progress (overlap: forbid)".into(),
            requested_by,
        }));
    }

    /// Start the run of a won tick, outside the actor.
    fn start_run(
        &mut self,
        tick_ms: i64,
        schedule_time: i64,
        token: LivenessToken,
        requested_by: Option<String>,
    ) {
        self.counters.runs_started += 1;
        let spec = self.first_attempt(tick_ms, schedule_time, requested_by);
        actix::spawn(run_claimed_tick(self.ctx.clone(), spec, token));
    }

    /// The first attempt at the run of tick `tick_ms` on this worker.
    pub(super) fn first_attempt(
        &self,
        tick_ms: i64,
        schedule_time: i64,
        requested_by: Option<String>,
    ) -> RunSpec {
        RunSpec {
            job: self.job.clone(),
            run_id: run_id(&self.job.name, tick_ms, &self.ctx.worker_id),
            worker: self.ctx.worker_id.clone(),
            plan_time: tick_ms,
            schedule_time,
            attempt: 0,
            requested_by,
        }
    }
}

/// Run a claimed tick, and its retries if the job asks for them (each
/// attempt its own run record, `<run_id>-retry<n>`, after an exponential
/// backoff). The session token is checked right before every start.
pub async fn run_claimed_tick(ctx: WorkerContext, mut spec: RunSpec, token: LivenessToken) {
    let first_run_id = spec.run_id.clone();
    loop {
        let Some(status) = run_attempt(&ctx, spec.clone(), &token).await else {
            return;
        };
        let failed = matches!(status, RunStatus::Failed | RunStatus::TimedOut);
        if !failed || spec.attempt >= spec.job.retries {
            return;
        }
        let pause = Duration::from_secs(
            spec.job
                .retry_backoff
                .saturating_mul(1 << spec.attempt.min(16)),
        );
        tracing::info!(job = %spec.job.name, attempt = spec.attempt + 1, pause_s = pause.as_secs(), "run failed; retrying");
        tokio::time::sleep(pause).await;
        spec.attempt += 1;
        spec.run_id = format!("{first_run_id}-retry{}", spec.attempt);
        spec.schedule_time = ctx.clock.now_ms();
    }
}

/// Runs that end sooner than this are never registered under `running/`.
/// Most scheduled commands do, and registering and unregistering them were
/// two of the three etcd writes of every run. The cost: a worker that dies
/// in a run's first second leaves no `lost` record for it (its tick claim
/// still shows the tick was taken), and `/job/running` shows a run from its
/// second second.
pub const REGISTER_AFTER: Duration = Duration::from_secs(1);

/// One attempt: start the process, register it under `running/` once it
/// has run for [`REGISTER_AFTER`], then unregister it and hand the record
/// to the log batcher. `None` if the session died first.
async fn run_attempt(
    ctx: &WorkerContext,
    spec: RunSpec,
    token: &LivenessToken,
) -> Option<RunStatus> {
    if !token.is_alive() {
        tracing::warn!(job = %spec.job.name, tick = spec.plan_time, "session died before the run could start; not running");
        return None;
    }
    let key = running_key(&spec.job.name, &spec.run_id);
    let entry = RunningEntry {
        run_id: spec.run_id.clone(),
        job_name: spec.job.name.clone(),
        command: spec.job.command.clone(),
        worker: spec.worker.clone(),
        plan_time: spec.plan_time,
        schedule_time: spec.schedule_time,
        start_time: ctx.clock.now_ms(),
        requested_by: spec.requested_by.clone(),
    };
    let value = serde_json::to_vec(&entry).unwrap_or_default();
    let (ended, ended_rx) = tokio::sync::oneshot::channel::<()>();
    let register = {
        let (coord, key, lease) = (ctx.coord.clone(), key.clone(), token.lease());
        actix::spawn(async move {
            tokio::select! {
                _ = ended_rx => return Ok(false),
                () = tokio::time::sleep(REGISTER_AFTER) => {}
            }
            coord.put(&key, value, Some(lease)).await.map(|_| true)
        })
    };
    let record = runner::run(
        spec,
        ctx.limits.clone(),
        ctx.clock.clone(),
        ctx.running.clone(),
        |_| {},
    )
    .await;
    tracing::debug!(job = %record.job_name, run_id = %record.run_id, status = record.status.as_str(), "run ended");
    let status = record.status;
    ctx.batcher.do_send(Record(record));
    let _ = ended.send(());
    // Unregister only after the registration landed, or a run ending just
    // as it went out would leave its key behind.
    match register.await {
        Ok(Ok(false)) => {}
        Ok(Ok(true)) => {
            if let Err(error) = ctx.coord.delete(&key).await {
                tracing::warn!(%key, %error, "cannot unregister the finished run; it ends with the session");
            }
        }
        Ok(Err(error)) => tracing::warn!(%key, %error, "could not register the run in progress"),
        Err(error) => tracing::warn!(%key, %error, "registration task failed"),
    }
    Some(status)
}

impl Actor for JobActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if self.schedule.fixed_delay().is_none() {
            let now = self.ctx.clock.now_ms();
            self.catch_up(now, ctx);
        }
        self.begin(ctx);
    }
}

impl JobActor {
    /// Claim `tick_ms` and, if won, run it under the overlap policy.
    fn claim_and_run(
        &mut self,
        tick_ms: i64,
        requested_by: Option<String>,
        ctx: &mut Context<Self>,
    ) {
        let claim = ClaimTick {
            job: self.job.name.clone(),
            tick_ms,
        };
        self.in_flight += 1;
        ctx.spawn(
            self.ctx
                .lock
                .send(claim)
                .into_actor(self)
                .map(move |result, act, ctx| {
                    act.in_flight -= 1;
                    let schedule_time = act.ctx.clock.now_ms();
                    match result {
                        Ok(Ok(ClaimOutcome::Won(token))) => {
                            act.in_flight += 1;
                            // Start at the tick instant (now, if it passed).
                            let wait = Duration::from_millis((tick_ms - schedule_time).max(0) as u64);
                            let start = StartTick {
                                tick_ms,
                                schedule_time,
                                token,
                                requested_by,
                            };
                            if wait.is_zero() {
                                ctx.notify(start);
                            } else {
                                ctx.notify_later(start, wait);
                            }
                        }
                        Ok(Ok(ClaimOutcome::Lost { .. })) => act.counters.claims_lost += 1,
                        Ok(Ok(ClaimOutcome::NoSession)) => {
                            act.counters.claim_failures += 1;
                            tracing::debug!(job = %act.job.name, tick = tick_ms, "no session: tick not claimed");
                        }
                        Ok(Err(error)) => {
                            act.counters.claim_failures += 1;
                            tracing::warn!(job = %act.job.name, tick = tick_ms, %error, "tick claim failed");
                        }
                        Err(error) => {
                            act.counters.claim_failures += 1;
                            tracing::warn!(job = %act.job.name, %error, "lock actor unreachable");
                        }
                    }
                    act.stop_if_done(ctx);
                }),
        );
    }
}

impl JobActor {
    /// On taking the job over: fire the latest tick missed within the
    /// job's `catchUp` window, once. Its claim keeps a tick that another
    /// worker already ran from running again.
    fn catch_up(&mut self, now: i64, ctx: &mut Context<Self>) {
        if self.job.catch_up == 0 {
            return;
        }
        let window_start = now - (self.job.catch_up * 1000) as i64;
        let mut cursor =
            chrono::DateTime::from_timestamp_millis(window_start - 1).unwrap_or_default();
        let mut latest = None;
        while let Some(tick) = self.schedule.next_after(cursor) {
            if tick.timestamp_millis() > now {
                break;
            }
            latest = Some(tick.timestamp_millis());
            cursor = tick;
        }
        if let Some(tick_ms) = latest {
            tracing::info!(job = %self.job.name, tick = tick_ms, "catching up a missed tick");
            self.claim_and_run(tick_ms, None, ctx);
        }
    }
}

impl Handler<Fire> for JobActor {
    type Result = ();

    fn handle(&mut self, Fire { tick_ms }: Fire, ctx: &mut Context<Self>) {
        if self.armed_for != Some(tick_ms) || self.stopping {
            return; // a timer of a definition since replaced
        }
        self.counters.ticks += 1;
        // Re-arm first: whatever happens to this tick, the next one fires.
        self.arm(tick_ms, ctx);
        self.claim_and_run(tick_ms, None, ctx);
    }
}

impl Handler<StartTick> for JobActor {
    type Result = ();

    fn handle(&mut self, start: StartTick, ctx: &mut Context<Self>) {
        self.in_flight -= 1;
        self.start_tick(start);
        self.stop_if_done(ctx);
    }
}

impl JobActor {
    /// Start a won tick under the overlap policy.
    fn start_tick(&mut self, start: StartTick) {
        let StartTick {
            tick_ms,
            schedule_time,
            token,
            requested_by,
        } = start;
        let here = self.ctx.running.count(&self.job.name);
        // A run on another worker (a previous owner's) counts for forbid;
        // replace kills only runs here.
        let elsewhere = self.ctx.cluster_runs.elsewhere(&self.job.name);
        match (self.job.overlap, here + elsewhere) {
            (_, 0) | (Overlap::Allow, _) => {
                self.start_run(tick_ms, schedule_time, token, requested_by)
            }
            (Overlap::Forbid, _) => self.skip(tick_ms, schedule_time, requested_by),
            (Overlap::Replace, _) => {
                self.ctx.running.kill(
                    &self.job.name,
                    &format!("replaced by the run of tick {tick_ms} (overlap: replace)"),
                );
                self.start_run(tick_ms, schedule_time, token, requested_by);
            }
        }
    }
}

impl Handler<RunNow> for JobActor {
    type Result = ();

    fn handle(&mut self, request: RunNow, ctx: &mut Context<Self>) {
        let RunNow {
            tick_ms,
            requested_by,
        } = request;
        tracing::info!(job = %self.job.name, tick = tick_ms, requested_by = requested_by.as_deref().unwrap_or(""), "run requested");
        self.claim_and_run(tick_ms, requested_by, ctx);
    }
}

impl Handler<UpdateJob> for JobActor {
    type Result = ();

    fn handle(&mut self, UpdateJob(job, schedule): UpdateJob, ctx: &mut Context<Self>) {
        self.job = job;
        self.schedule = schedule;
        // A fixed-delay run in progress arms the next one when it ends,
        // under the definition then current.
        if !self.delay_run_in_flight {
            self.begin(ctx);
        }
    }
}

impl Handler<StopJob> for JobActor {
    type Result = ();

    fn handle(&mut self, _: StopJob, ctx: &mut Context<Self>) {
        self.stopping = true;
        self.cancel_timer(ctx);
        self.armed_for = None;
        self.stop_if_done(ctx);
    }
}

impl Handler<GetJobCounters> for JobActor {
    type Result = MessageResult<GetJobCounters>;

    fn handle(&mut self, _: GetJobCounters, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.counters.clone())
    }
}

#[cfg(test)]
mod run_request_tests {
    use super::RunRequest;

    #[test]
    fn a_run_request_reads_json_and_the_older_bare_number() {
        let table: [(&[u8], Option<RunRequest>); 5] = [
            (
                br#"{"planTime":5,"requestedBy":"ana (user:ana)"}"#,
                Some(RunRequest {
                    plan_time: 5,
                    requested_by: Some("ana (user:ana)".into()),
                }),
            ),
            (
                br#"{"planTime":7}"#,
                Some(RunRequest {
                    plan_time: 7,
                    requested_by: None,
                }),
            ),
            (
                b"1700000000000",
                Some(RunRequest {
                    plan_time: 1_700_000_000_000,
                    requested_by: None,
                }),
            ),
            (b"soon", None),
            (br#"{"requestedBy":"x"}"#, None),
        ];
        for (value, expected) in table {
            assert_eq!(
                RunRequest::parse(value),
                expected,
                "{}",
                String::from_utf8_lossy(value)
            );
        }
    }
}
