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
use serde::Serialize;

use super::context::{OverlapDecision, WorkerContext};
use super::fixed_delay::PlanDelayRun;
use super::lock::{ClaimOutcome, ClaimTick, Confirmation, CurrentSession, Ticket};
use super::messages::Record;
use crate::job::Job;
use crate::runlog::{RunRecord, RunStatus};
use crate::runner::{self, RunSpec};
use crate::schedule::Schedule;

pub use crate::keyspace::{RunRequest, RunningEntry, running_key};

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
    /// Won ticks not run because the claim could not be confirmed (the
    /// session died before the start): they are free for the next owner.
    pub not_confirmed: u64,
    /// Ticks found unclaimed in the misfire window and claimed late.
    pub misfires_claimed: u64,
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
    /// A fixed-delay run left without an end by a dead worker: its start
    /// tick and when this owner first saw it so (the grace for its fence
    /// runs from then).
    pub(super) delay_orphan_seen: Option<(i64, i64)>,
    /// Claims awaiting their answer plus won ticks waiting for their instant:
    /// a stopping actor lives until these are done, so a tick it claimed is
    /// started, never dropped.
    pub(super) in_flight: usize,
    pub(super) stopping: bool,
    /// Ownership moved: keep firing until a claim shows the new owner at
    /// work (or the supervisor's handover ends), then stop.
    pub(super) handing_over: bool,
    /// A look back is armed because claims failed.
    pub(super) recheck_armed: bool,
    /// Rechecks in a row armed since a look back last succeeded: each
    /// waits longer ([`super::misfire::recheck_delay`]).
    pub(super) recheck_failures: u32,
    /// The newest tick whose claim failed (no session, or no answer) that
    /// no successful look back has covered yet: until one has, looking
    /// back goes on.
    pub(super) failed_through: Option<i64>,
}

/// Look back for missed ticks now (the worker has a new session, or claims
/// failed a while ago): the schedule of a job may not fire again for long.
#[derive(Message)]
#[rtype(result = "()")]
pub struct RecoverMisfires;

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

/// Ownership moved away (`true`) or came back (`false`): while handing
/// over, the actor stops as soon as another worker wins one of its ticks.
#[derive(Message)]
#[rtype(result = "()")]
pub struct HandOver(pub bool);

/// Run the job now for the requested instant (`POST /job/run`, or a
/// chain). Claimed like any tick, so a request seen twice still runs once.
#[derive(Message)]
#[rtype(result = "()")]
pub struct RunNow {
    pub tick_ms: i64,
    pub origin: RunOrigin,
}

/// Where a run outside the schedule comes from: who asked and with which
/// parameters, or which run's end started it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunOrigin {
    pub requested_by: Option<String>,
    pub params: std::collections::BTreeMap<String, String>,
    pub triggered_by: Option<String>,
}

impl From<RunRequest> for RunOrigin {
    fn from(request: RunRequest) -> RunOrigin {
        RunOrigin {
            requested_by: request.requested_by,
            params: request.params,
            triggered_by: request.triggered_by,
        }
    }
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
    ticket: Ticket,
    origin: RunOrigin,
    /// Its shell, being started ahead and held at its gate.
    shell: Option<AheadShell>,
}

/// A shell being started ahead of its tick ([`runner::Prepared`]): it
/// arrives once the launcher has started it. Dropped unused, the shell is
/// killed before its command.
type AheadShell = tokio::sync::oneshot::Receiver<Result<runner::Prepared, String>>;

/// A won tick's shell is started ahead only if the tick is at least this
/// far away (a late or immediate run starts its shell at once, as before).
const SHELL_AHEAD_MIN: Duration = Duration::from_millis(100);
/// ...and this long after the win, out of the way of the confirms and
/// starts of the tick now due, which arrive in the same etcd answer.
const SHELL_AHEAD_AFTER: Duration = Duration::from_millis(50);

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
            delay_orphan_seen: None,
            in_flight: 0,
            stopping: false,
            handing_over: false,
            recheck_armed: false,
            recheck_failures: 0,
            failed_through: None,
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

    fn skip(&mut self, spec: RunSpec, ticket: Ticket) {
        self.counters.skipped += 1;
        self.ctx
            .limits
            .launcher
            .spawn(skip_claimed_tick(self.ctx.clone(), spec, ticket));
    }

    /// Start the run of a won tick, outside the actor.
    fn start_run(&mut self, spec: RunSpec, ticket: Ticket, shell: Option<AheadShell>) {
        self.counters.runs_started += 1;
        self.ctx
            .limits
            .launcher
            .spawn(run_won_tick(self.ctx.clone(), spec, ticket, shell));
    }

    /// Start the shell of the won tick `spec` ahead of it, if the tick is
    /// far enough away: its gate opens at the tick, once confirmed.
    fn start_shell_ahead(&self, spec: RunSpec, wait: Duration) -> Option<AheadShell> {
        if wait < SHELL_AHEAD_MIN {
            return None;
        }
        let (sender, shell) = tokio::sync::oneshot::channel();
        let limits = self.ctx.limits.clone();
        self.ctx.limits.launcher.spawn(async move {
            tokio::time::sleep(SHELL_AHEAD_AFTER).await;
            // Nothing sent (the tick's start gone, the budget spent): the
            // run starts its shell at the tick.
            if !sender.is_closed()
                && let Some(shell) = runner::Prepared::start(&spec, &limits)
            {
                let _ = sender.send(shell);
            }
        });
        Some(shell)
    }

    /// The first attempt at the run of tick `tick_ms` on this worker.
    pub(super) fn first_attempt(
        &self,
        tick_ms: i64,
        schedule_time: i64,
        origin: RunOrigin,
    ) -> RunSpec {
        let mut job = self.job.clone();
        job.env
            .extend(origin.params.iter().map(|(k, v)| (k.clone(), v.clone())));
        // A chained run is named after its parent run, whose tick it shares.
        let run_id = match &origin.triggered_by {
            Some(parent) => format!("{}-after-{parent}", self.job.name),
            None => run_id(&self.job.name, tick_ms, &self.ctx.worker_id),
        };
        RunSpec {
            job,
            run_id,
            worker: self.ctx.worker_id.clone(),
            plan_time: tick_ms,
            schedule_time,
            attempt: 0,
            requested_by: origin.requested_by,
            params: origin.params,
            triggered_by: origin.triggered_by,
        }
    }
}

/// Record a won tick as skipped (`overlap: forbid`), once its claim is
/// confirmed: an unconfirmed tick is left for the next owner instead.
pub async fn skip_claimed_tick(ctx: WorkerContext, spec: RunSpec, ticket: Ticket) {
    if confirmed(&ctx, &spec, &ticket).await.is_none() {
        return;
    }
    let why = "skipped: the previous run is still in progress (overlap: forbid)";
    let record = unstarted(&spec, ctx.clock.now_ms(), RunStatus::Skipped, why);
    ctx.batcher.do_send(Record(record));
}

/// The record of a tick that did not start (or has not ended), and why.
fn unstarted(spec: &RunSpec, now: i64, status: RunStatus, why: &str) -> RunRecord {
    RunRecord {
        run_id: spec.run_id.clone(),
        job_name: spec.job.name.clone(),
        command: spec.job.command.clone(),
        worker: spec.worker.clone(),
        plan_time: spec.plan_time,
        schedule_time: spec.schedule_time,
        start_time: now,
        end_time: now,
        status,
        exit_code: None,
        signal: None,
        output: String::new(),
        truncated: false,
        err: why.into(),
        requested_by: spec.requested_by.clone(),
        params: spec.params.clone(),
        triggered_by: spec.triggered_by.clone(),
    }
}

/// Confirm a won tick's claim right before it starts; the token to start
/// it under, or `None` if the tick is not this worker's to run.
async fn confirmed(
    ctx: &WorkerContext,
    spec: &RunSpec,
    ticket: &Ticket,
) -> Option<crate::coord::session::LivenessToken> {
    let epoch = *ctx.sessions.borrow();
    match ticket.confirm(ctx.clock.now_ms()).await {
        Confirmation::Confirmed => Some(ticket.token.clone()),
        Confirmation::NotOurs => {
            tracing::warn!(job = %spec.job.name, tick = spec.plan_time, "the tick's claim is no longer ours (session lost); leaving it to the next owner");
            None
        }
        Confirmation::Unknown => settle_unknown(ctx, spec, ticket, epoch).await,
    }
}

/// A confirm whose answer was lost with the session: once a new session
/// has revoked the old one, an unconfirmed claim is gone (the tick is free:
/// look back for it, as its owner may have done too early) and a confirmed
/// one is still ours: run it then.
async fn settle_unknown(
    ctx: &WorkerContext,
    spec: &RunSpec,
    ticket: &Ticket,
    epoch: u64,
) -> Option<crate::coord::session::LivenessToken> {
    tracing::warn!(job = %spec.job.name, tick = spec.plan_time, "the tick's confirm got no answer before the session ended; settling it once a new session holds");
    let mut sessions = ctx.sessions.clone();
    let new_session = sessions.wait_for(|n| *n > epoch);
    tokio::time::timeout(ctx.misfire_window.max(Duration::from_secs(60)), new_session)
        .await
        .ok()?
        .ok()?;
    // Right after an outage etcd may still fail a read: ask until it
    // answers. Giving up here would strand a confirmed claim that nobody
    // else may run (chaos found one).
    let mut pause = Duration::from_millis(100);
    let give_up = tokio::time::Instant::now() + SETTLE_PATIENCE;
    let kv = loop {
        match ctx.coord.get(&ticket.claim.key).await {
            Ok(kv) => break kv,
            Err(error) if tokio::time::Instant::now() < give_up => {
                tracing::debug!(%error, "cannot read the claim to settle it yet");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
            Err(error) => {
                tracing::warn!(job = %spec.job.name, tick = spec.plan_time, %error, "cannot read the claim to settle it; leaving the tick to the managers' sweep");
                return None;
            }
        }
    };
    if kv.is_none_or(|kv| kv.value != ticket.claim.value) {
        tracing::warn!(job = %spec.job.name, tick = spec.plan_time, "the lost confirm had not landed: looking back for the freed tick");
        super::misfire::run_freed(ctx.clone(), spec.clone()).await;
        return None;
    }
    let (_, token) = ctx.lock.send(CurrentSession).await.ok()??;
    tracing::warn!(job = %spec.job.name, tick = spec.plan_time, "the lost confirm had landed: the tick is ours, running it late");
    Some(token)
}

/// How long settling a lost confirm keeps asking etcd for the claim.
const SETTLE_PATIENCE: Duration = Duration::from_secs(60);

/// Run a claimed tick, and its retries if the job asks for them (each
/// attempt its own run record, `<run_id>-retry<n>`, after an exponential
/// backoff). The claim is confirmed before the first start, and the session
/// token checked right before every start.
pub async fn run_claimed_tick(ctx: WorkerContext, spec: RunSpec, ticket: Ticket) {
    run_won_tick(ctx, spec, ticket, None).await
}

/// [`run_claimed_tick`], its first attempt in `shell` if one was started
/// ahead for it (and started well).
async fn run_won_tick(
    ctx: WorkerContext,
    mut spec: RunSpec,
    ticket: Ticket,
    shell: Option<AheadShell>,
) {
    let Some(token) = confirmed(&ctx, &spec, &ticket).await else {
        return;
    };
    let mut shell = match shell {
        // A shell that failed to start is started again, as any run, and
        // fails with its reason in the record.
        Some(shell) => shell.await.ok().and_then(Result::ok),
        None => None,
    }
    .filter(|shell| shell.is_for(&spec));
    let first_run_id = spec.run_id.clone();
    loop {
        let Some(status) = run_attempt(&ctx, spec.clone(), shell.take(), &token).await else {
            return;
        };
        if !status.is_retried() || is_last_attempt(&spec.job, spec.attempt) {
            return;
        }
        let pause = Duration::from_secs(
            spec.job
                .retry_backoff
                .saturating_mul(1 << spec.attempt.min(16)),
        );
        tracing::info!(job = %spec.job.name, attempt = spec.attempt + 1, pause_s = pause.as_secs(), "run failed; retrying");
        spec.attempt += 1;
        spec.run_id = format!("{first_run_id}-retry{}", spec.attempt);
        // Journaled, so a worker that dies in the backoff leaves a record
        // of the retry it owed (closed as lost by whoever finds it open).
        let due = ctx.clock.now_ms() + pause.as_millis() as i64;
        let why = format!(
            "retry {} of {}, due at {due}",
            spec.attempt, spec.job.retries
        );
        spec.schedule_time = due;
        ctx.batcher
            .do_send(Record(unstarted(&spec, due, RunStatus::Pending, &why)));
        tokio::time::sleep(pause).await;
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
    shell: Option<runner::Prepared>,
    token: &crate::coord::session::LivenessToken,
) -> Option<RunStatus> {
    if !token.is_alive() {
        // The tick is ours (its claim confirmed, or this is a retry), so
        // nobody else will run it: say why it did not run.
        tracing::warn!(job = %spec.job.name, tick = spec.plan_time, "session died before the run could start; not running");
        let why = "not started: the worker lost its session before the start";
        let record = unstarted(&spec, ctx.clock.now_ms(), RunStatus::Lost, why);
        ctx.batcher.do_send(Record(record));
        return None;
    }
    // Wait in line for a slot (maxConcurrentRuns, maxConcurrent); the wait
    // shows as lateness, and past queueTimeout the run is skipped.
    let patience = spec.job.queue_timeout();
    let queued_at = ctx.clock.now_ms();
    let slot = match ctx.limits.slots.acquire(&spec.job, patience).await {
        Ok(slot) => slot,
        Err(full) => {
            let why = full.reason(patience);
            tracing::warn!(job = %spec.job.name, run_id = %spec.run_id, %why, "no run slot");
            let mut record = unstarted(&spec, ctx.clock.now_ms(), RunStatus::Skipped, &why);
            record.start_time = queued_at;
            ctx.batcher.do_send(Record(record));
            return Some(RunStatus::Skipped);
        }
    };
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
    // Journaled before the spawn (the group commit follows within a few
    // ms): a worker killed mid-run leaves this open record, closed as lost
    // by its next start or by a peer.
    ctx.batcher.do_send(Record(unstarted(
        &spec,
        entry.start_time,
        RunStatus::Started,
        "",
    )));
    let (ended, ended_rx) = tokio::sync::oneshot::channel::<()>();
    let register = {
        let (writes, key, lease) = (ctx.running_keys.clone(), key.clone(), token.lease());
        tokio::spawn(async move {
            tokio::select! {
                _ = ended_rx => return Ok(false),
                () = tokio::time::sleep(REGISTER_AFTER) => {}
            }
            writes.put(key, value, Some(lease)).await.map(|()| true)
        })
    };
    // The runner takes the spec; keep what the chain needs, and copy the
    // job only when it has a chain (most runs have none).
    let last_attempt_if_failed = is_last_attempt(&spec.job, spec.attempt);
    let chained_job = spec.job.has_chains().then(|| spec.job.clone());
    let mut record = runner::run(
        spec,
        shell,
        ctx.limits.clone(),
        ctx.clock.clone(),
        ctx.running.clone(),
        |_| {},
    )
    .await;
    drop(slot);
    tracing::debug!(job = %record.job_name, run_id = %record.run_id, status = record.status.as_str(), "run ended");
    let status = record.status;
    let last_attempt = !status.is_retried() || last_attempt_if_failed;
    if let Some(job) = chained_job.filter(|j| last_attempt && !j.chained_after(status).is_empty()) {
        // Before the record leaves: a record in the run log means its
        // chained runs were asked for.
        if let Err(failed) = start_chained(ctx, &job, &record.run_id, status).await {
            record.err = join_reason(&record.err, &failed);
        }
    }
    ctx.batcher.do_send(Record(record));
    let _ = ended.send(());
    // Unregister only after the registration landed, or a run ending just
    // as it went out would leave its key behind.
    match register.await {
        Ok(Ok(false)) => {}
        Ok(Ok(true)) => {
            if let Err(error) = ctx.running_keys.delete(key.clone()).await {
                tracing::warn!(%key, %error, "cannot unregister the finished run yet; retrying");
                ctx.unregister_backlog.add(key);
            }
        }
        Ok(Err(error)) => tracing::warn!(%key, %error, "could not register the run in progress"),
        Err(error) => tracing::warn!(%key, %error, "registration task failed"),
    }
    Some(status)
}

/// Whether attempt `attempt` (0 for the first) is the job's last.
fn is_last_attempt(job: &Job, attempt: u32) -> bool {
    attempt >= job.retries
}

fn join_reason(err: &str, more: &str) -> String {
    if err.is_empty() {
        more.to_string()
    } else {
        format!("{err}; {more}")
    }
}

/// How long a chain's run request stays in `run/`: long enough for a new
/// owner of the child to see it at its first listing, shorter than claim
/// retention, so seeing it again finds the claim and runs nothing twice.
const CHAIN_REQUEST_TTL: Duration = Duration::from_secs(60);
/// How long asking for a chained run keeps trying through etcd errors.
const CHAIN_PATIENCE: Duration = Duration::from_secs(30);

/// Ask for the runs `job`'s run `run_id`, ended with `status`, starts:
/// `run/<child>/<run_id>`, claimed by the child's owner under a key of
/// this run, so each child runs once. `Err` names the children not asked.
async fn start_chained(
    ctx: &WorkerContext,
    job: &Job,
    run_id: &str,
    status: RunStatus,
) -> Result<(), String> {
    let children = job.chained_after(status);
    let request = RunRequest {
        plan_time: ctx.clock.now_ms(),
        triggered_by: Some(run_id.to_string()),
        ..RunRequest::default()
    };
    let value = serde_json::to_vec(&request).unwrap_or_default();
    let give_up = tokio::time::Instant::now() + CHAIN_PATIENCE;
    let mut pause = Duration::from_millis(100);
    let mut pending: Vec<&String> = children.iter().collect();
    let mut last_error = String::new();
    while !pending.is_empty() {
        let asked = async {
            let lease = ctx.coord.grant(CHAIN_REQUEST_TTL).await?;
            while let Some(child) = pending.first() {
                let key = crate::chain::request_key(child, run_id);
                ctx.coord.put(&key, value.clone(), Some(lease)).await?;
                tracing::info!(job = %job.name, %run_id, child = %child, "chained run requested");
                pending.remove(0);
            }
            Ok::<(), crate::coord::CoordError>(())
        };
        match asked.await {
            Ok(()) => break,
            Err(error) if tokio::time::Instant::now() < give_up => {
                tracing::warn!(job = %job.name, %run_id, %error, "cannot ask for the chained runs yet; retrying");
                last_error = error.to_string();
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
            Err(error) => {
                last_error = error.to_string();
                break;
            }
        }
    }
    if pending.is_empty() {
        return Ok(());
    }
    let names: Vec<&str> = pending.iter().map(|s| s.as_str()).collect();
    tracing::error!(job = %job.name, %run_id, error = %last_error, children = ?names, "chained runs not started");
    Err(format!(
        "chain: could not start {} ({last_error})",
        names.join(", ")
    ))
}

impl Actor for JobActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // A new owner: run late what nobody ran of the recent ticks.
        self.recover_misfires(ctx);
        self.begin(ctx);
    }
}

impl JobActor {
    /// Claim `tick_ms` and, if won, run it under the overlap policy.
    fn claim_and_run(&mut self, tick_ms: i64, origin: RunOrigin, ctx: &mut Context<Self>) {
        let claim = ClaimTick {
            job: self.job.name.clone(),
            tick_ms,
            after: origin.triggered_by.clone(),
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
                    let answered = matches!(result, Ok(Ok(ClaimOutcome::Won(_) | ClaimOutcome::Lost { .. })));
                    if !answered {
                        act.claims_failed(tick_ms, ctx);
                    }
                    match result {
                        Ok(Ok(ClaimOutcome::Won(ticket))) => {
                            act.in_flight += 1;
                            // Start at the tick instant (now, if it passed).
                            let wait = Duration::from_millis((tick_ms - schedule_time).max(0) as u64);
                            let spec = act.first_attempt(tick_ms, schedule_time, origin.clone());
                            let shell = act.start_shell_ahead(spec, wait);
                            let start = StartTick {
                                tick_ms,
                                schedule_time,
                                ticket,
                                origin,
                                shell,
                            };
                            if wait.is_zero() {
                                ctx.notify(start);
                            } else {
                                ctx.notify_later(start, wait);
                            }
                        }
                        Ok(Ok(ClaimOutcome::Lost { .. })) => {
                            act.counters.claims_lost += 1;
                            if act.handing_over {
                                // The new owner is at work: the hand-off is done.
                                tracing::debug!(job = %act.job.name, "new owner seen claiming; handed over");
                                act.stop_firing(ctx);
                            }
                        }
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

impl Handler<Fire> for JobActor {
    type Result = ();

    fn handle(&mut self, Fire { tick_ms }: Fire, ctx: &mut Context<Self>) {
        if self.armed_for != Some(tick_ms) || self.stopping {
            return; // a timer of a definition since replaced
        }
        self.counters.ticks += 1;
        // Re-arm first: whatever happens to this tick, the next one fires.
        self.arm(tick_ms, ctx);
        self.claim_and_run(tick_ms, RunOrigin::default(), ctx);
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
            ticket,
            origin,
            shell,
        } = start;
        let spec = self.first_attempt(tick_ms, schedule_time, origin);
        match self.ctx.overlap_decision(&self.job) {
            OverlapDecision::Start => self.start_run(spec, ticket, shell),
            OverlapDecision::Skip => self.skip(spec, ticket),
            OverlapDecision::ReplaceThenStart => {
                self.ctx.running.kill(
                    &self.job.name,
                    &format!("replaced by the run of tick {tick_ms} (overlap: replace)"),
                );
                self.start_run(spec, ticket, shell);
            }
        }
    }

    /// Stop firing; the actor ends once what it claimed has started.
    pub(super) fn stop_firing(&mut self, ctx: &mut Context<Self>) {
        self.stopping = true;
        self.cancel_timer(ctx);
        self.armed_for = None;
        self.stop_if_done(ctx);
    }
}

impl Handler<RunNow> for JobActor {
    type Result = ();

    fn handle(&mut self, request: RunNow, ctx: &mut Context<Self>) {
        let RunNow { tick_ms, origin } = request;
        tracing::info!(
            job = %self.job.name,
            tick = tick_ms,
            requested_by = origin.requested_by.as_deref().unwrap_or(""),
            triggered_by = origin.triggered_by.as_deref().unwrap_or(""),
            "run requested"
        );
        self.claim_and_run(tick_ms, origin, ctx);
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
        self.stop_firing(ctx);
    }
}

impl Handler<RecoverMisfires> for JobActor {
    type Result = ();

    fn handle(&mut self, _: RecoverMisfires, ctx: &mut Context<Self>) {
        if !self.stopping {
            self.recover_misfires(ctx);
        }
    }
}

impl Handler<HandOver> for JobActor {
    type Result = ();

    fn handle(&mut self, HandOver(leaving): HandOver, _: &mut Context<Self>) {
        self.handing_over = leaving;
    }
}

impl Handler<GetJobCounters> for JobActor {
    type Result = MessageResult<GetJobCounters>;

    fn handle(&mut self, _: GetJobCounters, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.counters.clone())
    }
}
