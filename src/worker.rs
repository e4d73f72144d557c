//! A worker: the actors of `src/actors/` assembled, started and stopped.
//!
//! Graceful stop (SIGTERM/SIGINT): stop claiming ticks, let runs in
//! progress finish up to a grace (then kill them), drain the log batcher,
//! revoke the session lease (which removes `workers/<id>` at once, so other
//! workers take over the jobs without waiting for the TTL).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use crate::actors::context::WorkerContext;
use crate::actors::kill_watcher::KillWatcher;
use crate::actors::lock::{LockActor, Release};
use crate::actors::log_batcher::{BatcherConfig, BatcherCounters, LogBatcher};
use crate::actors::messages::{Drain, Shutdown};
use crate::actors::registrar::{CounterSources, Leave, Registrar};
use crate::actors::supervisor::{JobSupervisor, StopAll};
use crate::clock::SharedClock;
use crate::config::Config;
use crate::coord::Coordinator;
use crate::coord::claims::ClaimPolicy;
use crate::notify::notifier::Notifier;
use crate::runlog::RunLog;
use crate::runner::fence::Fence;
use crate::runner::{RunLimits, RunningRuns};

#[derive(Debug, Clone)]
pub struct WorkerSettings {
    pub worker_id: String,
    pub group: String,
    pub session_ttl: Duration,
    pub limits: RunLimits,
    pub batcher: BatcherConfig,
    pub claim_policy: ClaimPolicy,
    pub stop_grace: Duration,
    pub claim_lead: Duration,
    pub misfire_window: Duration,
    /// Threads runs execute on (`runThreads`); 0 runs them on the actors'
    /// thread.
    pub run_threads: usize,
    /// The binary that serves as this worker's fence (`__fence`); `None`
    /// runs unfenced (tests of one process).
    pub fence_program: Option<PathBuf>,
    /// Notification targets and rules (`notify`).
    pub notify: crate::notify::NotifyConfig,
    /// Where the live output of runs is served (`liveListen`); `None` serves
    /// none (tests of one process, standalone, which serves it in process).
    pub live_listen: Option<String>,
}

impl WorkerSettings {
    pub fn from_config(config: &Config) -> WorkerSettings {
        let journal_dir = if config.journal_dir.is_empty() {
            PathBuf::from(&config.data_dir).join(format!("journal-{}", config.worker_id))
        } else {
            PathBuf::from(&config.journal_dir)
        };
        let mut batcher = BatcherConfig::new(journal_dir);
        batcher.max_batch = config.batch_size as usize;
        batcher.max_delay = Duration::from_millis(config.batch_delay_ms);
        batcher.journal.max_bytes = config.journal_max_bytes;
        WorkerSettings {
            worker_id: config.worker_id.clone(),
            group: config.group.clone(),
            session_ttl: Duration::from_secs(config.session_ttl_secs),
            limits: RunLimits {
                inherited_env: std::sync::Arc::new(crate::runner::inherited_env(
                    &config.job_env_allowlist,
                )),
                output_cap: config.output_cap_bytes as usize,
                kill_grace: Duration::from_millis(config.kill_grace_ms),
                slots: crate::runner::slots::RunSlots::new(
                    config.max_concurrent_runs.min(1 << 20) as usize
                ),
                ..RunLimits::default()
            },
            batcher,
            claim_policy: ClaimPolicy {
                retention: Duration::from_secs(config.claim_retention_secs),
                ..ClaimPolicy::default()
            },
            stop_grace: Duration::from_secs(config.stop_grace_secs),
            claim_lead: Duration::from_millis(config.claim_lead_ms),
            misfire_window: Duration::from_secs(config.misfire_window_secs),
            run_threads: config.run_threads.min(256) as usize,
            fence_program: None,
            notify: config.notify.clone(),
            live_listen: Some(config.live_listen.clone()),
        }
    }
}

/// A running worker; call [`Worker::stop`] to end it gracefully.
pub struct Worker {
    ctx: WorkerContext,
    /// Where the runs execute; stopped last.
    pool: crate::runner::launcher::LaunchPool,
    supervisor: Addr<JobSupervisor>,
    registrar: Addr<Registrar>,
    kill_watcher: Addr<KillWatcher>,
    notifier: Option<Addr<Notifier>>,
    /// Serves the live output of this worker's runs to managers.
    live: Option<crate::http::tail::LiveServer>,
    stop_grace: Duration,
}

/// What a stopped worker leaves: its log batcher's final counters, and the
/// actors that had not ended by the time `stop` returned (none, normally).
pub struct Stopped {
    pub counters: BatcherCounters,
    pub still_running: Vec<&'static str>,
}

/// Start a worker's actors. Must be called inside an actix system.
pub fn start(
    coord: Arc<dyn Coordinator>,
    run_log: Arc<dyn RunLog>,
    mut settings: WorkerSettings,
    clock: SharedClock,
) -> std::io::Result<Worker> {
    crate::runner::process::become_subreaper();
    // Held shells and running commands take the worker's descriptors: use
    // all the open-file limit allows (as Go's runtime does), then size the
    // held shells' budget from it.
    crate::runner::process::raise_open_file_limit();
    settings.limits.ahead = crate::runner::AheadBudget::for_this_process();
    let known_jobs = crate::notify::notifier::KnownJobs::default();
    let notifier = (!settings.notify.targets.is_empty()).then(|| {
        Notifier::new(
            settings.notify.clone(),
            run_log.clone(),
            Some(coord.clone()),
            known_jobs.lookup(),
            clock.clone(),
            &settings.worker_id,
        )
        .start()
    });
    let batcher = LogBatcher::new(run_log.clone(), settings.batcher.clone())?
        .notifying(notifier.clone().map(Addr::recipient))
        .start();
    let running = RunningRuns::default();
    let mut limits = settings.limits;
    let (sessions_tx, sessions) = tokio::sync::watch::channel(0);
    let unregister_backlog = crate::actors::context::UnregisterBacklog::default();
    let fence = match &settings.fence_program {
        Some(program) => Some(Fence::start(program).map_err(|e| {
            std::io::Error::other(format!("cannot start the fence {}: {e}", program.display()))
        })?),
        None => None,
    };
    limits.fence = fence.clone();
    let pool = crate::runner::launcher::LaunchPool::start(settings.run_threads)?;
    limits.launcher = pool.launcher();
    let lock = LockActor::new(
        coord.clone(),
        clock.clone(),
        settings.worker_id.clone(),
        settings.session_ttl,
        settings.claim_policy,
    )
    .fencing(running.clone())
    .with_fence_process(fence)
    .announcing(sessions_tx, unregister_backlog.clone());
    let claims = lock.claims();
    let lock = lock.start();
    let ctx = WorkerContext {
        worker_id: settings.worker_id.clone(),
        group: settings.group.clone(),
        running_keys: crate::coord::write_queue::WriteQueue::new(coord.clone()),
        coord,
        clock,
        lock,
        batcher,
        running,
        limits,
        claim_lead: settings.claim_lead,
        cluster_runs: Default::default(),
        claims,
        misfire_window: settings.misfire_window,
        sessions,
        unregister_backlog,
        run_log,
        known_jobs,
    };
    let kill_watcher = KillWatcher::new(ctx.clone()).start();
    let supervisor = JobSupervisor::new(ctx.clone()).start();
    let sources = CounterSources {
        supervisor: supervisor.clone(),
        kill_watcher: kill_watcher.clone(),
        notifier: notifier.clone(),
    };
    let live = match &settings.live_listen {
        Some(listen) => Some(crate::http::tail::serve_live(ctx.running.clone(), listen)?),
        None => None,
    };
    let registrar = Registrar::new(ctx.clone(), sources)
        .serving_live(live.as_ref().map(|l| l.endpoint.clone()))
        .start();
    tracing::info!(worker = %settings.worker_id, group = %settings.group, "worker started");
    Ok(Worker {
        ctx,
        pool,
        supervisor,
        registrar,
        kill_watcher,
        notifier,
        live,
        stop_grace: settings.stop_grace,
    })
}

impl Worker {
    pub fn context(&self) -> &WorkerContext {
        &self.ctx
    }

    /// Graceful stop; every actor the worker started has ended when it
    /// returns (and with them their watches and the fence's input).
    ///
    /// Hand-off first: leave the membership (other workers take the jobs
    /// now), keep firing through the handover, start every tick already
    /// won; then wait for the runs (`stopGraceSecs`), kill what remains,
    /// flush the records and end the session.
    pub async fn stop(self) -> Stopped {
        let _ = self.registrar.send(Leave).await;
        let actors = self.supervisor.send(StopAll).await.unwrap_or_default();
        // Handover plus the longest a claim may wait for its answer.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while actors.iter().any(|a| a.connected()) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tracing::debug!(
            actors_left = actors.iter().filter(|a| a.connected()).count(),
            "job actors handed over"
        );
        let running = &self.ctx.running;
        let deadline = tokio::time::Instant::now() + self.stop_grace;
        while running.total() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if running.total() > 0 {
            tracing::warn!(
                runs = running.total(),
                "runs still in progress after the stop grace; killing them"
            );
            running.kill_all("killed: worker stopping");
            let deadline =
                tokio::time::Instant::now() + self.ctx.limits.kill_grace + Duration::from_secs(2);
            while running.total() > 0 && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        // Let the last runs hand their records over before draining (a run
        // waiting to retry is left: its pending record is journaled).
        let launcher = &self.ctx.limits.launcher;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        while launcher.in_flight() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::task::yield_now().await;
        let counters = self.ctx.batcher.send(Drain).await.unwrap_or_default();
        // Finished runs still registered would look lost once the session
        // is revoked.
        if let Err(error) = self.ctx.unregister_backlog.flush(&*self.ctx.coord).await {
            tracing::warn!(%error, "finished runs are still registered; peers may count them lost");
        }
        if let Some(live) = &self.live {
            live.stop().await;
        }
        let _ = self.ctx.lock.send(Release).await;
        let _ = self.supervisor.send(Shutdown).await;
        let _ = self.kill_watcher.send(Shutdown).await;
        let _ = self.registrar.send(Shutdown).await;
        let _ = self.ctx.batcher.send(Shutdown).await;
        // The notifier ends once what it is delivering is done (or after
        // a grace).
        if let Some(notifier) = &self.notifier {
            let _ = notifier.send(Shutdown).await;
        }
        let alive = || {
            [
                ("supervisor", self.supervisor.connected()),
                ("kill watcher", self.kill_watcher.connected()),
                ("registrar", self.registrar.connected()),
                ("log batcher", self.ctx.batcher.connected()),
                ("lock", self.ctx.lock.connected()),
                (
                    "notifier",
                    self.notifier.as_ref().is_some_and(|n| n.connected()),
                ),
            ]
            .into_iter()
            .filter(|(_, connected)| *connected)
            .map(|(name, _)| name)
            .collect::<Vec<&'static str>>()
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !alive().is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let still_running = alive();
        if !still_running.is_empty() {
            tracing::warn!(?still_running, "actors did not end with the worker");
        }
        self.pool.stop();
        tracing::info!(worker = %self.ctx.worker_id, flushed = counters.flushed, journal_bytes = counters.journal_bytes, "worker stopped");
        Stopped {
            counters,
            still_running,
        }
    }
}
