//! The manager's index of job definitions, kept in step with `jobs/` by a
//! watch, so `/job/list` pages through memory instead of asking etcd (a
//! limited etcd 3.4 range still counts every key in the range: 509 pages/s
//! with 58,000 jobs, measured).
//!
//! It is derived state only: built from a list at start, followed by a
//! watch, rebuilt on `Resync`; this manager's own saves and deletes update
//! it at once, so a client reads its own writes. Until the first list
//! arrives, callers fall back to the coordinator.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, RwLock};

use crate::coord::follow::{Followed, Follower, follow};
use crate::coord::{Coordinator, WatchEvent};
use crate::job::Job;
use crate::keyspace;

#[derive(Default)]
pub struct JobIndex {
    jobs: RwLock<BTreeMap<String, Job>>,
    ready: AtomicBool,
    /// Follows `jobs/`; ends with the index.
    follower: OnceLock<Follower>,
}

/// Filter jobs (in name order) by a lowercase name fragment, then page.
pub fn page_jobs(
    jobs: impl Iterator<Item = Job>,
    needle: Option<&str>,
    skip: usize,
    limit: usize,
) -> Vec<Job> {
    jobs.filter(|job| needle.is_none_or(|q| job.name.to_lowercase().contains(q)))
        .skip(skip)
        .take(limit)
        .collect()
}

impl JobIndex {
    /// Start following `jobs/` in the background (inside a tokio runtime).
    pub fn follow(coord: Arc<dyn Coordinator>) -> Arc<JobIndex> {
        let index = Arc::new(JobIndex::default());
        let weak = Arc::downgrade(&index);
        let follower = follow(coord, &[keyspace::JOBS], move |followed| {
            let Some(index) = weak.upgrade() else {
                return false;
            };
            index.take_in(followed);
            true
        });
        let _ = index.follower.set(follower);
        index
    }

    /// Apply a listing (replacing everything) or changes.
    fn take_in(&self, followed: Followed) {
        let mut jobs = self.write();
        let events = match followed {
            Followed::Listed(lists) => {
                jobs.clear();
                lists
                    .into_iter()
                    .flat_map(|(_, kvs)| kvs)
                    .map(WatchEvent::Put)
                    .collect()
            }
            Followed::Changed(_, events) => events,
        };
        for event in events {
            match event {
                WatchEvent::Put(kv) => {
                    if let Ok(job) = serde_json::from_slice::<Job>(&kv.value) {
                        jobs.insert(job.name.clone(), job);
                    }
                }
                WatchEvent::Delete { key, .. } => {
                    jobs.remove(keyspace::name_in(&key, keyspace::JOBS));
                }
            }
        }
        self.ready.store(true, Ordering::Release);
    }

    /// Jobs in name order, filtered and paged; `None` until the index has
    /// been listed once.
    pub fn page(&self, needle: Option<&str>, skip: usize, limit: usize) -> Option<Vec<Job>> {
        if !self.ready.load(Ordering::Acquire) {
            return None;
        }
        let jobs = self.jobs.read().unwrap_or_else(|e| e.into_inner());
        Some(page_jobs(jobs.values().cloned(), needle, skip, limit))
    }

    /// How many jobs match `needle`, and one page of them; `None` until
    /// the index has been listed once.
    pub fn page_with_total(
        &self,
        needle: Option<&str>,
        skip: usize,
        limit: usize,
    ) -> Option<(usize, Vec<Job>)> {
        if !self.ready.load(Ordering::Acquire) {
            return None;
        }
        let jobs = self.jobs.read().unwrap_or_else(|e| e.into_inner());
        let total = match needle {
            None => jobs.len(),
            Some(q) => jobs
                .keys()
                .filter(|name| name.to_lowercase().contains(q))
                .count(),
        };
        Some((
            total,
            page_jobs(jobs.values().cloned(), needle, skip, limit),
        ))
    }

    /// Every enabled job, in name order; `None` until listed once.
    pub fn enabled(&self) -> Option<Vec<Job>> {
        if !self.ready.load(Ordering::Acquire) {
            return None;
        }
        let jobs = self.jobs.read().unwrap_or_else(|e| e.into_inner());
        Some(jobs.values().filter(|j| j.enabled).cloned().collect())
    }

    /// The jobs that start `name` (chains), read in place rather than
    /// copying every job; `None` until listed once.
    pub fn upstream(&self, name: &str) -> Option<Vec<crate::chain::Link>> {
        if !self.ready.load(Ordering::Acquire) {
            return None;
        }
        let jobs = self.jobs.read().unwrap_or_else(|e| e.into_inner());
        Some(crate::chain::upstream(jobs.values(), name))
    }

    /// One job by name (`None` also until the index has been listed once).
    pub fn get(&self, name: &str) -> Option<Job> {
        let jobs = self.jobs.read().unwrap_or_else(|e| e.into_inner());
        jobs.get(name).cloned()
    }

    /// Lookups for a notifier.
    pub fn lookup(self: &Arc<JobIndex>) -> crate::notify::notifier::JobsSeen {
        let index = self.clone();
        Arc::new(move |name| index.get(name))
    }

    /// This manager saved `job`: show it at once.
    pub fn saved(&self, job: &Job) {
        self.write().insert(job.name.clone(), job.clone());
    }

    /// This manager deleted `name`.
    pub fn deleted(&self, name: &str) {
        self.write().remove(name);
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Job>> {
        self.jobs.write().unwrap_or_else(|e| e.into_inner())
    }
}
