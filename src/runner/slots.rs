//! Run slots: how many runs a worker (`maxConcurrentRuns`) and a job
//! (`maxConcurrent`) may have going at once. A start over either cap waits
//! in line, first come first served (tokio's semaphores are fair), until
//! a slot frees or its `queueTimeout` passes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::job::{Job, Overlap};

/// The worker's default `maxConcurrentRuns`.
pub const DEFAULT_MAX_CONCURRENT_RUNS: usize = 256;

#[derive(Clone, Debug)]
pub struct RunSlots {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    max: usize,
    worker: Arc<Semaphore>,
    /// Per job with a cap of its own: (the cap, its semaphore).
    jobs: Mutex<HashMap<String, (usize, Arc<Semaphore>)>>,
    waiting: std::sync::atomic::AtomicUsize,
}

/// The slots a run holds while it runs; freed when dropped.
#[derive(Debug)]
pub struct Held {
    _worker: OwnedSemaphorePermit,
    _job: Option<OwnedSemaphorePermit>,
}

/// Why a start got no slot in time: the cap that held it and its size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Full {
    Worker(usize),
    Job(usize),
}

impl Default for RunSlots {
    fn default() -> RunSlots {
        RunSlots::new(DEFAULT_MAX_CONCURRENT_RUNS)
    }
}

/// A job's own cap: `maxConcurrent`, else 1 under `forbid` and `replace`
/// (their policy already keeps one run) and none under `allow`. Pure.
pub fn job_cap(job: &Job) -> Option<usize> {
    match job.overlap {
        Overlap::Allow => job.max_concurrent.map(|n| n as usize),
        // One at a time by the overlap policy itself; no queue needed.
        Overlap::Forbid | Overlap::Replace => None,
    }
}

impl RunSlots {
    pub fn new(max: usize) -> RunSlots {
        RunSlots {
            inner: Arc::new(Inner {
                max,
                worker: Arc::new(Semaphore::new(max)),
                jobs: Mutex::new(HashMap::new()),
                waiting: Default::default(),
            }),
        }
    }

    /// The worker's cap.
    pub fn max(&self) -> usize {
        self.inner.max
    }

    /// Starts waiting for a slot now.
    pub fn waiting(&self) -> usize {
        self.inner
            .waiting
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    fn job_semaphore(&self, job: &Job) -> Option<(usize, Arc<Semaphore>)> {
        let cap = job_cap(job)?;
        let mut jobs = self.inner.jobs.lock().unwrap_or_else(|e| e.into_inner());
        let entry = jobs
            .entry(job.name.clone())
            .or_insert_with(|| (cap, Arc::new(Semaphore::new(cap))));
        if entry.0 != cap {
            // The cap changed: runs holding the old one finish under it.
            *entry = (cap, Arc::new(Semaphore::new(cap)));
        }
        Some(entry.clone())
    }

    /// A slot for a run of `job`, waiting at most `patience`.
    pub async fn acquire(&self, job: &Job, patience: Duration) -> Result<Held, Full> {
        use std::sync::atomic::Ordering::Relaxed;
        self.inner.waiting.fetch_add(1, Relaxed);
        let deadline = tokio::time::Instant::now() + patience;
        let got = async {
            // The job's own slot first, so a capped job waiting does not
            // hold one of the worker's.
            let job_permit = match self.job_semaphore(job) {
                Some((cap, semaphore)) => Some(
                    tokio::time::timeout_at(deadline, semaphore.acquire_owned())
                        .await
                        .map_err(|_| Full::Job(cap))?
                        .map_err(|_| Full::Job(cap))?,
                ),
                None => None,
            };
            let worker =
                tokio::time::timeout_at(deadline, self.inner.worker.clone().acquire_owned())
                    .await
                    .map_err(|_| Full::Worker(self.inner.max))?
                    .map_err(|_| Full::Worker(self.inner.max))?;
            Ok(Held {
                _worker: worker,
                _job: job_permit,
            })
        }
        .await;
        self.inner.waiting.fetch_sub(1, Relaxed);
        got
    }
}

impl Full {
    /// The `err` of the run recorded `skipped`.
    pub fn reason(&self, waited: Duration) -> String {
        let secs = waited.as_secs();
        match self {
            Full::Worker(max) => format!(
                "skipped: {max} runs were already in progress on this worker (maxConcurrentRuns) for {secs} s (queueTimeout)"
            ),
            Full::Job(max) => format!(
                "skipped: {max} runs of this job were already in progress (maxConcurrent) for {secs} s (queueTimeout)"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_caps_follow_the_overlap_policy() {
        let cases = [
            (Overlap::Forbid, None, None),
            (Overlap::Replace, None, None),
            (Overlap::Allow, None, None),
            (Overlap::Allow, Some(3), Some(3)),
        ];
        for (overlap, max, want) in cases {
            let mut job = Job::new("j", "true", "@daily");
            job.overlap = overlap;
            job.max_concurrent = max;
            assert_eq!(job_cap(&job), want, "{overlap:?} {max:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_start_over_a_cap_waits_then_gives_up_naming_the_cap() {
        let slots = RunSlots::new(2);
        let mut job = Job::new("j", "true", "@daily");
        job.overlap = Overlap::Allow;
        let a = slots.acquire(&job, Duration::ZERO).await.unwrap();
        let _b = slots.acquire(&job, Duration::ZERO).await.unwrap();
        let third = slots.acquire(&job, Duration::from_secs(5)).await;
        assert_eq!(third.unwrap_err(), Full::Worker(2));
        // A slot freed while one waits goes to it.
        let waiter = {
            let (slots, job) = (slots.clone(), job.clone());
            tokio::spawn(async move { slots.acquire(&job, Duration::from_secs(5)).await })
        };
        tokio::task::yield_now().await;
        assert_eq!(slots.waiting(), 1);
        drop(a);
        assert!(waiter.await.unwrap().is_ok());
        assert_eq!(slots.waiting(), 0);

        job.max_concurrent = Some(1);
        let slots = RunSlots::new(10);
        let _one = slots.acquire(&job, Duration::ZERO).await.unwrap();
        let err = slots
            .acquire(&job, Duration::from_secs(1))
            .await
            .unwrap_err();
        assert_eq!(err, Full::Job(1));
        assert!(err.reason(Duration::from_secs(1)).contains("maxConcurrent"));
    }
}
