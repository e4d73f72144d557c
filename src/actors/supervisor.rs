//! JobSupervisor: decides which jobs this worker owns and keeps one
//! JobActor per owned job.
//!
//! It lists and watches `jobs/`, `workers/`, `running/` and `run/`
//! (run-now requests, handed to the owning JobActor). A job is owned by
//! the live worker of its group with the highest rendezvous score
//! (a stable hash of worker id and job name), so each worker decides alone,
//! with no coordination, and a run costs the same etcd writes however many
//! workers there are. When ownership moves away, the old owner keeps firing
//! for a short handover (tick claims make the overlap harmless), so no tick
//! falls between two owners. A watch that reports `Resync` (compaction,
//! cancellation) triggers a full re-list.
//!
//! Lost runs: a worker's `workers/` key and its `running/` keys share its
//! session lease, so when the lease ends they are deleted in the same
//! revision. A `running/` delete at the revision where its worker's key was
//! deleted is a lost run; every live worker writes the same `lost` record
//! (same `run_id`), and the run log's idempotent insert keeps one.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use actix::prelude::*;
use serde::{Deserialize, Serialize};

use super::context::WorkerContext;
use super::job::{
    HandOver, JobActor, RunNow, RunRequest, RunningEntry, StopJob, UpdateJob, run_claimed_tick,
};
use super::lock::{ClaimOutcome, ClaimTick};
use super::messages::Record;
use super::registrar::WorkerInfo;
use crate::coord::{Revision, WatchEvent, WatchItem};
use crate::job::{Job, OnLost};
use crate::runlog::{RunRecord, RunStatus};
use crate::runner::RunSpec;
use crate::schedule::Schedule;

/// The longest a worker keeps firing a job after ownership moved away; it
/// stops sooner, as soon as a claim shows the new owner at work.
const HANDOVER: Duration = Duration::from_secs(2);
/// Pause before re-listing after a watch failed to start.
const RESYNC_RETRY: Duration = Duration::from_secs(1);
/// How long a `running/` delete waits for its worker's delete to arrive on
/// the other watch before it is taken as a normal end.
const LOST_MATCH_WINDOW: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", default)]
pub struct SupervisorCounters {
    pub jobs_known: u64,
    pub jobs_owned: u64,
    pub workers_alive: u64,
    pub resyncs: u64,
    pub lost_runs_recorded: u64,
    pub lost_runs_rerun: u64,
}

/// Which watched prefix an item came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Prefix {
    Jobs,
    Workers,
    Running,
    /// `run/<job>`: run-now requests.
    RunRequests,
}

impl Prefix {
    fn key(self) -> &'static str {
        match self {
            Prefix::Jobs => "jobs/",
            Prefix::Workers => "workers/",
            Prefix::Running => "running/",
            Prefix::RunRequests => "run/",
        }
    }
}

struct Owned {
    addr: Addr<JobActor>,
    job: Job,
    /// Set while handing the job over: stop at this instant.
    leaving: Option<SpawnHandle>,
}

pub struct JobSupervisor {
    ctx: WorkerContext,
    jobs: BTreeMap<String, Job>,
    /// Live workers: id -> group.
    workers: BTreeMap<String, String>,
    running: HashMap<String, RunningEntry>,
    /// Workers whose key was deleted, with the revision of the delete.
    dead_workers: HashMap<String, (Revision, tokio::time::Instant)>,
    /// `running/` deletes not yet matched to a worker's death.
    unmatched_deletes: Vec<(RunningEntry, Revision, tokio::time::Instant)>,
    owned: HashMap<String, Owned>,
    /// Bumped at every resync; messages of older watches are ignored.
    generation: u64,
    stopping: bool,
    counters: SupervisorCounters,
}

#[derive(Message)]
#[rtype(result = "()")]
struct Watched {
    generation: u64,
    prefix: Prefix,
    item: Option<WatchItem>,
}

#[derive(Message)]
#[rtype(result = "()")]
struct Resync;

#[derive(Message)]
#[rtype(result = "()")]
struct Listed {
    generation: u64,
    result: Result<Vec<(Prefix, Vec<crate::coord::KeyValue>, Revision)>, String>,
}

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

/// Stable 64-bit hash (FNV-1a, then a splitmix finaliser): every worker,
/// whatever its version or platform, must compute the same scores.
fn stable_hash(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.bytes().chain(std::iter::once(0)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// The owner of `job` among `workers` (ids): highest rendezvous score.
pub fn rendezvous_owner<'a>(
    job: &str,
    workers: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    workers
        .into_iter()
        .max_by_key(|w| (stable_hash(&[w, job]), *w))
}

impl JobSupervisor {
    pub fn new(ctx: WorkerContext) -> JobSupervisor {
        JobSupervisor {
            ctx,
            jobs: BTreeMap::new(),
            workers: BTreeMap::new(),
            running: HashMap::new(),
            dead_workers: HashMap::new(),
            unmatched_deletes: Vec::new(),
            owned: HashMap::new(),
            generation: 0,
            stopping: false,
            counters: SupervisorCounters::default(),
        }
    }

    fn owns(&self, job: &Job) -> bool {
        job.enabled
            && job.group == self.ctx.group
            && rendezvous_owner(
                &job.name,
                self.workers
                    .iter()
                    .filter(|(_, group)| **group == job.group)
                    .map(|(id, _)| id.as_str()),
            ) == Some(self.ctx.worker_id.as_str())
    }

    /// Bring the set of JobActors in line with the jobs this worker owns
    /// (after a membership change, every job may move).
    fn reconcile_all(&mut self, ctx: &mut Context<Self>) {
        let mut names: BTreeSet<String> = self.jobs.keys().cloned().collect();
        names.extend(self.owned.keys().cloned());
        self.reconcile(names, ctx);
    }

    /// Bring the JobActors of `names` in line with what this worker owns.
    /// A job change touches only its own name, so saving 10,000 jobs one by
    /// one costs 10,000 small steps, not 10,000 passes over every job.
    fn reconcile(&mut self, names: BTreeSet<String>, ctx: &mut Context<Self>) {
        if self.stopping {
            return;
        }
        let now =
            chrono::DateTime::from_timestamp_millis(self.ctx.clock.now_ms()).unwrap_or_default();
        for name in &names {
            match self.jobs.get(name).filter(|job| self.owns(job)) {
                Some(job) => self.keep(job.clone(), now, ctx),
                None => {
                    let leaving = self.owned.get(name).is_some_and(|o| o.leaving.is_none());
                    if leaving {
                        // A job deleted, paused or moved to another group
                        // stops now; one whose owner changed keeps firing
                        // through the handover.
                        let moved = self
                            .jobs
                            .get(name)
                            .is_some_and(|j| j.enabled && j.group == self.ctx.group);
                        self.leave(name, ctx, if moved { HANDOVER } else { Duration::ZERO });
                    }
                }
            }
        }
        self.counters.jobs_known = self.jobs.len() as u64;
        self.counters.jobs_owned = self.owned.len() as u64;
        self.counters.workers_alive = self.workers.len() as u64;
    }

    /// This worker owns `job`: start its actor, or update it if it changed.
    fn keep(&mut self, job: Job, now: chrono::DateTime<chrono::Utc>, ctx: &mut Context<Self>) {
        let name = job.name.clone();
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
            None => self.start_job(job, schedule),
        }
    }

    fn start_job(&mut self, job: Job, schedule: Schedule) {
        let addr = JobActor::new(self.ctx.clone(), job.clone(), schedule).start();
        tracing::debug!(job = %job.name, "job owned");
        self.owned.insert(
            job.name.clone(),
            Owned {
                addr,
                job,
                leaving: None,
            },
        );
    }

    fn leave(&mut self, name: &str, ctx: &mut Context<Self>, after: Duration) {
        if after.is_zero() {
            if let Some(owned) = self.owned.remove(name) {
                owned.addr.do_send(StopJob);
            }
            return;
        }
        let name_owned = name.to_string();
        if let Some(owned) = self.owned.get_mut(name) {
            owned.addr.do_send(HandOver(true));
            owned.leaving = Some(ctx.run_later(after, move |act, _| {
                if let Some(owned) = act.owned.remove(&name_owned) {
                    tracing::debug!(job = %name_owned, "job handed over");
                    owned.addr.do_send(StopJob);
                }
            }));
        }
    }

    /// Take in watched events, then move the jobs they touch.
    fn apply(&mut self, prefix: Prefix, events: Vec<WatchEvent>, ctx: &mut Context<Self>) {
        let members_before = (prefix == Prefix::Workers).then(|| self.workers.clone());
        let touched_jobs = self.absorb(prefix, events, ctx);
        // Ownership depends on jobs and on the workers and their groups;
        // heartbeats, runs in progress and run requests do not move it.
        match prefix {
            Prefix::Jobs => self.reconcile(touched_jobs, ctx),
            Prefix::Workers if members_before.as_ref() != Some(&self.workers) => {
                self.reconcile_all(ctx)
            }
            Prefix::Running => self.publish_cluster_runs(),
            Prefix::Workers | Prefix::RunRequests => {}
        }
    }

    /// Tell the job actors how many runs of each job other workers have in
    /// progress.
    fn publish_cluster_runs(&self) {
        let mut counts: HashMap<String, usize> = HashMap::new();
        for entry in self.running.values() {
            if entry.worker != self.ctx.worker_id {
                *counts.entry(entry.job_name.clone()).or_default() += 1;
            }
        }
        self.ctx.cluster_runs.replace(counts);
    }

    /// Update the supervisor's view from `events`; returns the names of the
    /// jobs they put or deleted.
    fn absorb(
        &mut self,
        prefix: Prefix,
        events: Vec<WatchEvent>,
        ctx: &mut Context<Self>,
    ) -> BTreeSet<String> {
        let mut touched_jobs = BTreeSet::new();
        for event in events {
            match (prefix, event) {
                (Prefix::Jobs, WatchEvent::Put(kv)) => {
                    match serde_json::from_slice::<Job>(&kv.value) {
                        Ok(job) => {
                            touched_jobs.insert(job.name.clone());
                            self.jobs.insert(job.name.clone(), job);
                        }
                        Err(error) => {
                            tracing::warn!(key = %kv.key, %error, "unreadable job definition")
                        }
                    }
                }
                (Prefix::Jobs, WatchEvent::Delete { key, .. }) => {
                    let name = key.trim_start_matches("jobs/").to_string();
                    self.jobs.remove(&name);
                    touched_jobs.insert(name);
                }
                (Prefix::Workers, WatchEvent::Put(kv)) => {
                    let id = kv.key.trim_start_matches("workers/").to_string();
                    let group = serde_json::from_slice::<WorkerInfo>(&kv.value)
                        .map(|w| w.group)
                        .unwrap_or_else(|_| "default".into());
                    self.workers.insert(id, group);
                }
                (Prefix::Workers, WatchEvent::Delete { key, revision }) => {
                    let id = key.trim_start_matches("workers/").to_string();
                    self.workers.remove(&id);
                    let now = tokio::time::Instant::now();
                    let matched: Vec<RunningEntry> = self
                        .unmatched_deletes
                        .iter()
                        .filter(|(e, r, _)| e.worker == id && *r == revision)
                        .map(|(e, _, _)| e.clone())
                        .collect();
                    self.unmatched_deletes
                        .retain(|(e, r, _)| !(e.worker == id && *r == revision));
                    self.dead_workers.insert(id, (revision, now));
                    for entry in matched {
                        self.lost(entry, ctx);
                    }
                }
                (Prefix::Running, WatchEvent::Put(kv)) => {
                    if let Ok(entry) = serde_json::from_slice::<RunningEntry>(&kv.value) {
                        self.running.insert(kv.key, entry);
                    }
                }
                // A request listed at a resync may already have run: the
                // tick claim makes running it again a no-op.
                (Prefix::RunRequests, WatchEvent::Put(kv)) => {
                    let job = kv.key.trim_start_matches("run/");
                    match (self.owned.get(job), RunRequest::parse(&kv.value)) {
                        (Some(owned), Some(request)) => owned.addr.do_send(RunNow {
                            tick_ms: request.plan_time,
                            requested_by: request.requested_by,
                        }),
                        (Some(_), None) => {
                            tracing::warn!(key = %kv.key, "unreadable run request")
                        }
                        (None, _) => {}
                    }
                }
                (Prefix::RunRequests, WatchEvent::Delete { .. }) => {}
                (Prefix::Running, WatchEvent::Delete { key, revision }) => {
                    let Some(entry) = self.running.remove(&key) else {
                        continue;
                    };
                    if self.dead_workers.get(&entry.worker).map(|(r, _)| *r) == Some(revision) {
                        self.lost(entry, ctx);
                    } else {
                        self.unmatched_deletes
                            .push((entry, revision, tokio::time::Instant::now()));
                    }
                }
            }
        }
        if let Some(horizon) = tokio::time::Instant::now().checked_sub(LOST_MATCH_WINDOW) {
            self.unmatched_deletes.retain(|(_, _, at)| *at >= horizon);
            self.dead_workers.retain(|_, (_, at)| *at >= horizon);
        }
        touched_jobs
    }

    /// A run whose worker died: once its fence has surely killed it (the
    /// lease ended; the dead worker's fence kills its runs by then, give or
    /// take `killGraceMs`), record it and re-run it if the job asks.
    fn lost(&mut self, entry: RunningEntry, ctx: &mut Context<Self>) {
        let fenced_after = self.ctx.limits.kill_grace;
        ctx.run_later(fenced_after, move |act, _| act.record_lost(entry));
    }

    /// Record a fenced lost run, and re-run its tick if the job asks for it
    /// and this worker owns the job.
    fn record_lost(&mut self, entry: RunningEntry) {
        tracing::warn!(job = %entry.job_name, run_id = %entry.run_id, worker = %entry.worker, "run lost with its worker");
        self.counters.lost_runs_recorded += 1;
        let now = self.ctx.clock.now_ms();
        self.ctx.batcher.do_send(Record(RunRecord {
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
            err: format!("worker {} died mid-run (its lease ended)", entry.worker),
            requested_by: entry.requested_by.clone(),
        }));
        let Some(job) = self.jobs.get(&entry.job_name).cloned() else {
            return;
        };
        if job.on_lost != OnLost::Rerun || !self.owns(&job) {
            return;
        }
        // The re-run gets a claim of its own, so only one worker runs it.
        self.counters.lost_runs_rerun += 1;
        let ctx = self.ctx.clone();
        let claim = ClaimTick {
            job: format!("{}.rerun-of-{}", job.name, entry.run_id),
            tick_ms: entry.plan_time,
        };
        actix::spawn(async move {
            if let Ok(Ok(ClaimOutcome::Won(ticket))) = ctx.lock.send(claim).await {
                let spec = RunSpec {
                    run_id: format!("{}-rerun", entry.run_id),
                    worker: ctx.worker_id.clone(),
                    plan_time: entry.plan_time,
                    schedule_time: ctx.clock.now_ms(),
                    attempt: 0,
                    requested_by: entry.requested_by,
                    job,
                };
                run_claimed_tick(ctx, spec, ticket).await;
            }
        });
    }

    fn start_watch(&self, prefix: Prefix, from: Revision, ctx: &mut Context<Self>) {
        let (coord, addr, generation) = (self.ctx.coord.clone(), ctx.address(), self.generation);
        actix::spawn(async move {
            let mut stream = match coord.watch(prefix.key(), from).await {
                Ok(stream) => stream,
                Err(error) => {
                    tracing::warn!(prefix = prefix.key(), %error, "cannot watch; will re-list");
                    addr.do_send(Watched {
                        generation,
                        prefix,
                        item: None,
                    });
                    return;
                }
            };
            loop {
                let item = stream.recv().await;
                let end = !matches!(item, Some(WatchItem::Events(_)));
                addr.do_send(Watched {
                    generation,
                    prefix,
                    item,
                });
                if end {
                    return;
                }
            }
        });
    }
}

impl Actor for JobSupervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.notify(Resync);
    }
}

impl Handler<Resync> for JobSupervisor {
    type Result = ();

    fn handle(&mut self, _: Resync, ctx: &mut Context<Self>) {
        self.generation += 1;
        self.counters.resyncs += 1;
        let (coord, generation) = (self.ctx.coord.clone(), self.generation);
        ctx.spawn(
            async move {
                let mut lists = Vec::new();
                for prefix in [
                    Prefix::Jobs,
                    Prefix::Workers,
                    Prefix::Running,
                    Prefix::RunRequests,
                ] {
                    let (kvs, revision) =
                        coord.list(prefix.key()).await.map_err(|e| e.to_string())?;
                    lists.push((prefix, kvs, revision));
                }
                Ok(lists)
            }
            .into_actor(self)
            .map(move |result, act, ctx| act.handle(Listed { generation, result }, ctx)),
        );
    }
}

impl Handler<Listed> for JobSupervisor {
    type Result = ();

    fn handle(&mut self, listed: Listed, ctx: &mut Context<Self>) {
        if listed.generation != self.generation {
            return;
        }
        let lists = match listed.result {
            Ok(lists) => lists,
            Err(error) => {
                tracing::warn!(%error, "cannot list the keyspace; retrying");
                ctx.notify_later(Resync, RESYNC_RETRY);
                return;
            }
        };
        self.jobs.clear();
        self.workers.clear();
        self.running.clear();
        for (prefix, kvs, revision) in lists {
            let events = kvs.into_iter().map(WatchEvent::Put).collect();
            self.absorb(prefix, events, ctx);
            self.start_watch(prefix, revision + 1, ctx);
        }
        self.publish_cluster_runs();
        // Once, with jobs and workers both known: jobs deleted while the
        // watch was down stop here too.
        self.reconcile_all(ctx);
    }
}

impl Handler<Watched> for JobSupervisor {
    type Result = ();

    fn handle(&mut self, watched: Watched, ctx: &mut Context<Self>) {
        if watched.generation != self.generation {
            return;
        }
        match watched.item {
            Some(WatchItem::Events(events)) => self.apply(watched.prefix, events, ctx),
            Some(WatchItem::Resync { reason }) => {
                tracing::info!(prefix = watched.prefix.key(), %reason, "watch asks for a resync");
                ctx.notify(Resync);
            }
            None => {
                ctx.notify_later(Resync, RESYNC_RETRY);
            }
        }
    }
}

impl Handler<StopAll> for JobSupervisor {
    type Result = MessageResult<StopAll>;

    fn handle(&mut self, _: StopAll, ctx: &mut Context<Self>) -> Self::Result {
        self.stopping = true;
        self.generation += 1;
        let names: Vec<String> = self.owned.keys().cloned().collect();
        let actors = self.owned.values().map(|o| o.addr.clone()).collect();
        for name in names {
            if let Some(handle) = self.owned.get_mut(&name).and_then(|o| o.leaving.take()) {
                ctx.cancel_future(handle);
            }
            self.leave(&name, ctx, HANDOVER);
        }
        MessageResult(actors)
    }
}

impl Handler<GetSupervisorCounters> for JobSupervisor {
    type Result = MessageResult<GetSupervisorCounters>;

    fn handle(&mut self, _: GetSupervisorCounters, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.counters.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendezvous_spreads_jobs_and_moves_only_the_dead_workers_share() {
        let workers = ["w1", "w2", "w3"];
        let jobs: Vec<String> = (0..3000).map(|i| format!("job-{i}")).collect();
        let owner =
            |job: &str, ws: &[&'static str]| rendezvous_owner(job, ws.iter().copied()).unwrap();
        let mut per_worker: HashMap<&str, usize> = HashMap::new();
        for job in &jobs {
            *per_worker.entry(owner(job, &workers)).or_default() += 1;
        }
        for w in workers {
            let n = per_worker[w];
            assert!((800..1200).contains(&n), "{w} owns {n} of 3000");
        }
        // Without w2, only w2's jobs move.
        for job in &jobs {
            let before = owner(job, &workers);
            let after = owner(job, &["w1", "w3"]);
            if before != "w2" {
                assert_eq!(before, after, "{job} moved although its owner lives");
            }
        }
    }

    const PINNED: u64 = 18046302035572494072;

    #[test]
    fn the_hash_is_stable_across_builds() {
        // Pinned values: a change here would split a mixed-version cluster.
        assert_eq!(stable_hash(&["w1", "job-1"]), PINNED);
        assert_ne!(stable_hash(&["w1", "job-1"]), stable_hash(&["w1job-1"]));
        assert_eq!(
            rendezvous_owner("backup", ["a", "b", "c"]),
            rendezvous_owner("backup", ["c", "b", "a"])
        );
    }
}
