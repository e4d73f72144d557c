//! Where runs execute: off the actors' thread.
//!
//! The job actors of a worker share one thread (actix's arbiter). Starting
//! a process, capturing its output and reaping it there made the starts of
//! one second queue behind each other and behind every actor message: at
//! 10,000 ticks a minute, 167 starts a second on one core. A worker
//! therefore runs its runs on a small runtime of its own ([`LaunchPool`],
//! `runThreads`, one thread per core by default) and the actors only hand
//! them over.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Hands a run to where runs execute. Cloned into every run's context.
#[derive(Clone, Default)]
pub struct Launcher {
    /// The pool's runtime; `None` runs on the caller's own runtime (tests
    /// of one actor on paused time, and `runThreads: 0`).
    pool: Option<tokio::runtime::Handle>,
    /// Runs handed over and not yet ended (the worker's stop waits for
    /// them before it drains the run log's batcher).
    in_flight: Arc<AtomicUsize>,
}

/// Counts a run as ended when its future ends or is dropped.
struct Ended(Arc<AtomicUsize>);

impl Drop for Ended {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl std::fmt::Debug for Launcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let on = if self.pool.is_some() {
            "pool"
        } else {
            "inline"
        };
        f.debug_tuple("Launcher").field(&on).finish()
    }
}

impl Launcher {
    /// Run `run` to its end where runs execute.
    pub fn spawn<F>(&self, run: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        let ended = Ended(self.in_flight.clone());
        let run = async move {
            let _ended = ended;
            run.await
        };
        match &self.pool {
            Some(pool) => drop(pool.spawn(run)),
            None => drop(tokio::spawn(run)),
        }
    }

    /// Runs handed over that have not ended (retries waiting included).
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }
}

/// The runtime runs execute on; owned by the worker, which stops it after
/// its runs have ended.
pub struct LaunchPool {
    runtime: Option<tokio::runtime::Runtime>,
    in_flight: Arc<AtomicUsize>,
}

impl LaunchPool {
    /// A pool of `threads` threads; 0 gives none (runs go inline).
    pub fn start(threads: usize) -> std::io::Result<LaunchPool> {
        if threads == 0 {
            return Ok(LaunchPool {
                runtime: None,
                in_flight: Arc::default(),
            });
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("distcron-run")
            .enable_all()
            .build()?;
        Ok(LaunchPool {
            runtime: Some(runtime),
            in_flight: Arc::default(),
        })
    }

    pub fn launcher(&self) -> Launcher {
        Launcher {
            pool: self.runtime.as_ref().map(|r| r.handle().clone()),
            in_flight: self.in_flight.clone(),
        }
    }

    /// End the pool's threads. Whatever still runs there is dropped (its
    /// process groups killed by their guards): call once runs have ended.
    pub fn stop(mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Drop for LaunchPool {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// The default `runThreads`: one per core. More overlap starts (a start by
/// `posix_spawn` holds its thread until the child has called `exec`), but
/// on a machine shared with etcd they starve it in a burst: see
/// docs/operations.md, "Run threads".
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}
