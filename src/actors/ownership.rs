//! The supervisor's decisions as a pure, synchronous state machine: what
//! the coordinator shows comes in, what the worker must do goes out. No
//! actor, no clock, no I/O, so every case is a table test that runs in
//! milliseconds; [`super::supervisor::JobSupervisor`] is the thin actor that
//! feeds it and carries its actions out.
//!
//! - **Ownership:** a job belongs to the live worker of its group with the
//!   highest rendezvous score (a stable hash of worker id and job name), so
//!   each worker decides alone and a run costs the same etcd writes however
//!   many workers there are.
//! - **Hand-off:** a job whose owner changed is handed over (the old owner
//!   fires until it sees the new one claim); one deleted, paused or moved to
//!   another group stops at once.
//! - **Lost runs:** a worker's `workers/` key and its `running/` keys share
//!   its session lease, so its death deletes them at one revision. A
//!   `running/` delete at the revision of its worker's delete is a lost run,
//!   whichever of the two watches reports first.
//! - **Resync:** a fresh listing replaces everything known; jobs that
//!   vanished meanwhile stop.

use std::collections::{BTreeMap, HashMap};

use crate::coord::follow::Followed;
use crate::coord::{KeyValue, Revision, WatchEvent};
use crate::job::Job;
#[cfg(doc)]
use crate::keyspace::WorkerInfo;
use crate::keyspace::{self, RunRequest, RunningEntry};

/// How long a `running/` delete waits for its worker's delete (and the
/// other way round) before it is taken as a normal end.
pub const LOST_MATCH_WINDOW_MS: i64 = 60_000;

/// What the worker must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Own this job (start its actor, or update it: the definition changed,
    /// or it came back during a hand-off).
    Own(Box<Job>),
    /// Ownership moved to another live worker: hand the job over.
    HandOver(String),
    /// Stop the job now (deleted, paused, moved to another group).
    Stop(String),
    /// A run-now request for an owned job.
    RunNow(String, RunRequest),
    /// A run whose worker died: record it (after the fence) and maybe rerun.
    Lost(RunningEntry),
    /// Runs in progress on other workers changed: per job, how many.
    ClusterRuns(HashMap<String, usize>),
    /// A worker died and this one is the survivor chosen to close the runs
    /// it left open in the run log (those started before `died_at_ms`).
    CloseOpenRuns { worker: String, died_at_ms: i64 },
}

/// Stable 64-bit hash (FNV-1a, then a splitmix finaliser): every worker,
/// whatever its version or platform, must compute the same scores.
pub fn stable_hash(parts: &[&str]) -> u64 {
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

#[derive(Debug, Default)]
pub struct Ownership {
    me: String,
    group: String,
    jobs: BTreeMap<String, Job>,
    /// Live workers: id -> group.
    workers: BTreeMap<String, String>,
    /// `running/` key -> the run.
    running: HashMap<String, RunningEntry>,
    /// Workers whose key was deleted: the revision, and when it was seen.
    dead_workers: HashMap<String, (Revision, i64)>,
    /// `running/` deletes not yet matched to a worker's death.
    unmatched_deletes: Vec<(RunningEntry, Revision, i64)>,
    /// The jobs this worker owns now, as last told to act on.
    owned: BTreeMap<String, Job>,
    stopping: bool,
}

impl Ownership {
    pub fn new(me: &str, group: &str) -> Ownership {
        Ownership {
            me: me.to_string(),
            group: group.to_string(),
            ..Ownership::default()
        }
    }

    pub fn job(&self, name: &str) -> Option<&Job> {
        self.jobs.get(name)
    }

    pub fn jobs_known(&self) -> usize {
        self.jobs.len()
    }

    pub fn jobs_owned(&self) -> usize {
        self.owned.len()
    }

    pub fn workers_alive(&self) -> usize {
        self.workers.len()
    }

    /// Whether this worker owns `job` by the current membership.
    pub fn owns(&self, job: &Job) -> bool {
        job.enabled
            && job.group == self.group
            && rendezvous_owner(
                &job.name,
                self.workers
                    .iter()
                    .filter(|(_, group)| **group == job.group)
                    .map(|(id, _)| id.as_str()),
            ) == Some(self.me.as_str())
    }

    /// The worker is stopping: hand every job over, and decide nothing more.
    pub fn stop(&mut self) -> Vec<Action> {
        self.stopping = true;
        let names: Vec<String> = self.owned.keys().cloned().collect();
        self.owned.clear();
        names.into_iter().map(Action::HandOver).collect()
    }

    /// Take in what a follower delivered, at `now_ms`.
    pub fn apply(&mut self, followed: Followed, now_ms: i64) -> Vec<Action> {
        if self.stopping {
            return Vec::new();
        }
        self.forget_old(now_ms);
        let mut actions = Vec::new();
        match followed {
            Followed::Listed(lists) => {
                self.jobs.clear();
                self.workers.clear();
                self.running.clear();
                for (prefix, kvs) in lists {
                    let events = kvs.into_iter().map(WatchEvent::Put).collect();
                    self.absorb(prefix, events, now_ms, &mut actions);
                }
                actions.push(self.cluster_runs());
                self.reconcile(self.all_names(), &mut actions);
            }
            Followed::Changed(prefix, events) => {
                let members_before = (prefix == keyspace::WORKERS).then(|| self.workers.clone());
                let touched = self.absorb(prefix, events, now_ms, &mut actions);
                match prefix {
                    keyspace::JOBS => self.reconcile(touched, &mut actions),
                    keyspace::WORKERS if members_before.as_ref() != Some(&self.workers) => {
                        self.reconcile(self.all_names(), &mut actions)
                    }
                    keyspace::RUNNING => actions.push(self.cluster_runs()),
                    _ => {}
                }
            }
        }
        actions
    }

    fn all_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.jobs.keys().cloned().collect();
        names.extend(self.owned.keys().cloned());
        names.sort();
        names.dedup();
        names
    }

    /// Bring ownership of `names` in line with the jobs and the membership.
    /// A job change touches only its own name, so saving 10,000 jobs one by
    /// one costs 10,000 small steps, not 10,000 passes over every job.
    fn reconcile(&mut self, names: Vec<String>, actions: &mut Vec<Action>) {
        for name in names {
            match self.jobs.get(&name).filter(|job| self.owns(job)) {
                Some(job) => {
                    if self.owned.get(&name) != Some(job) {
                        self.owned.insert(name.clone(), job.clone());
                        actions.push(Action::Own(Box::new(job.clone())));
                    }
                }
                None => {
                    if self.owned.remove(&name).is_some() {
                        let moved = self
                            .jobs
                            .get(&name)
                            .is_some_and(|j| j.enabled && j.group == self.group);
                        actions.push(if moved {
                            Action::HandOver(name)
                        } else {
                            Action::Stop(name)
                        });
                    }
                }
            }
        }
    }

    /// Runs in progress on other workers, per job.
    fn cluster_runs(&self) -> Action {
        let mut counts: HashMap<String, usize> = HashMap::new();
        for entry in self.running.values() {
            if entry.worker != self.me {
                *counts.entry(entry.job_name.clone()).or_default() += 1;
            }
        }
        Action::ClusterRuns(counts)
    }

    /// Update the view from `events`; returns the names of the jobs they put
    /// or deleted.
    fn absorb(
        &mut self,
        prefix: &str,
        events: Vec<WatchEvent>,
        now_ms: i64,
        actions: &mut Vec<Action>,
    ) -> Vec<String> {
        let mut touched = Vec::new();
        for event in events {
            match (prefix, event) {
                (keyspace::JOBS, WatchEvent::Put(kv)) => {
                    match serde_json::from_slice::<Job>(&kv.value) {
                        Ok(job) => {
                            touched.push(job.name.clone());
                            self.jobs.insert(job.name.clone(), job);
                        }
                        Err(error) => {
                            tracing::warn!(key = %kv.key, %error, "unreadable job definition")
                        }
                    }
                }
                (keyspace::JOBS, WatchEvent::Delete { key, .. }) => {
                    let name = keyspace::name_in(&key, keyspace::JOBS).to_string();
                    self.jobs.remove(&name);
                    touched.push(name);
                }
                (keyspace::WORKERS, WatchEvent::Put(kv)) => {
                    let id = keyspace::name_in(&kv.key, keyspace::WORKERS).to_string();
                    self.workers.insert(id, worker_group(&kv));
                }
                (keyspace::WORKERS, WatchEvent::Delete { key, revision }) => {
                    let id = keyspace::name_in(&key, keyspace::WORKERS).to_string();
                    self.workers.remove(&id);
                    let (matched, rest): (Vec<_>, Vec<_>) =
                        std::mem::take(&mut self.unmatched_deletes)
                            .into_iter()
                            .partition(|(e, r, _)| e.worker == id && *r == revision);
                    self.unmatched_deletes = rest;
                    actions.extend(matched.into_iter().map(|(entry, _, _)| Action::Lost(entry)));
                    // One survivor, chosen as jobs are, closes what it left open.
                    let closer = format!("{}{id}", keyspace::WORKERS);
                    let survivors = self.workers.keys().map(String::as_str);
                    if rendezvous_owner(&closer, survivors) == Some(self.me.as_str()) {
                        actions.push(Action::CloseOpenRuns {
                            worker: id.clone(),
                            died_at_ms: now_ms,
                        });
                    }
                    self.dead_workers.insert(id, (revision, now_ms));
                }
                (keyspace::RUNNING, WatchEvent::Put(kv)) => {
                    if let Ok(entry) = serde_json::from_slice::<RunningEntry>(&kv.value) {
                        self.running.insert(kv.key, entry);
                    }
                }
                (keyspace::RUNNING, WatchEvent::Delete { key, revision }) => {
                    let Some(entry) = self.running.remove(&key) else {
                        continue;
                    };
                    if self.dead_workers.get(&entry.worker).map(|(r, _)| *r) == Some(revision) {
                        actions.push(Action::Lost(entry));
                    } else {
                        self.unmatched_deletes.push((entry, revision, now_ms));
                    }
                }
                // A request listed at a resync may already have run: the
                // tick claim makes running it again a no-op.
                (keyspace::RUN_REQUESTS, WatchEvent::Put(kv)) => {
                    // `run/<job>`, or `run/<job>/<parent run>` for a chain.
                    let rest = keyspace::name_in(&kv.key, keyspace::RUN_REQUESTS);
                    let job = rest.split('/').next().unwrap_or(rest);
                    if !self.owned.contains_key(job) {
                        continue;
                    }
                    match RunRequest::parse(&kv.value) {
                        Some(request) => actions.push(Action::RunNow(job.to_string(), request)),
                        None => tracing::warn!(key = %kv.key, "unreadable run request"),
                    }
                }
                _ => {}
            }
        }
        touched
    }

    fn forget_old(&mut self, now_ms: i64) {
        let horizon = now_ms - LOST_MATCH_WINDOW_MS;
        self.unmatched_deletes.retain(|(_, _, at)| *at >= horizon);
        self.dead_workers.retain(|_, (_, at)| *at >= horizon);
    }
}

/// The group of a `workers/` value ([`WorkerInfo`]); `default` if unreadable.
pub fn worker_group(kv: &KeyValue) -> String {
    #[derive(serde::Deserialize)]
    struct GroupOf {
        group: String,
    }
    serde_json::from_slice::<GroupOf>(&kv.value)
        .map(|w| w.group)
        .unwrap_or_else(|_| "default".into())
}

#[cfg(test)]
mod tests;
