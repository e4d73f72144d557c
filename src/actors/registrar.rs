//! Registrar: keeps `workers/<id>` alive under the worker's session lease,
//! with what an operator wants to see of a worker: address, group, version,
//! start time, last heartbeat, CPU and memory load, runs in progress.
//! The key is what makes this worker count in ownership decisions.

use std::time::Duration;

use actix::prelude::*;
use serde::{Deserialize, Serialize};
use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System};

use super::context::WorkerContext;
use super::kill_watcher::{GetKillCounters, KillCounters, KillWatcher};
use super::lock::{CurrentSession, GetLockCounters, LockCounters};
use super::log_batcher::BatcherCounters;
use super::messages::GetCounters;
use super::supervisor::{GetSupervisorCounters, JobSupervisor, SupervisorCounters};
use crate::coord::Claim;

/// How often the registration is refreshed; the key itself lives as long
/// as the session, so this only sets how fresh the load figures and
/// counters are (as often as Kubernetes nodes renew their lease). Every
/// refresh is an etcd write, and a watch event for every manager and
/// worker: at 3 s, the registrations were 14% of a cluster's etcd requests
/// at 10,000 runs a minute.
pub const REFRESH: Duration = Duration::from_secs(10);

/// The value of `workers/<id>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkerInfo {
    pub id: String,
    /// Host name of the machine the worker runs on.
    pub address: String,
    pub group: String,
    pub version: String,
    /// Epoch ms.
    pub started: i64,
    /// Epoch ms of this refresh.
    pub heartbeat: i64,
    /// CPU use of the worker process, percent of one core.
    pub cpu_percent: f32,
    /// Resident memory of the worker process, bytes.
    pub memory_bytes: u64,
    /// Machine-wide memory in use, percent.
    pub host_memory_percent: f32,
    pub running: usize,
    /// Starts waiting for a run slot (`maxConcurrentRuns`, `maxConcurrent`).
    #[serde(default)]
    pub waiting: usize,
    /// This worker's counters, for the manager's `/metrics`.
    #[serde(default)]
    pub batcher: BatcherCounters,
    #[serde(default)]
    pub claims: LockCounters,
    #[serde(default)]
    pub supervisor: SupervisorCounters,
    #[serde(default)]
    pub kills: KillCounters,
    #[serde(default)]
    pub notify: crate::notify::notifier::NotifyCounters,
    /// Where the worker serves its runs' live output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live: Option<crate::http::tail::LiveEndpoint>,
}

/// The actors whose counters the registration carries.
pub struct CounterSources {
    pub supervisor: Addr<JobSupervisor>,
    pub kill_watcher: Addr<KillWatcher>,
    pub notifier: Option<Addr<crate::notify::notifier::Notifier>>,
}

pub struct Registrar {
    ctx: WorkerContext,
    sources: CounterSources,
    started: i64,
    /// `None` where sysinfo cannot read this platform: figures are then 0.
    system: Option<System>,
    /// The lease the key was last written under.
    registered_lease: Option<i64>,
    /// Where this worker serves live output, if it does.
    live: Option<crate::http::tail::LiveEndpoint>,
    /// An earlier process's key was in the way (logged once).
    waiting_for_earlier: bool,
    left: bool,
}

/// The outcome of one registration refresh.
enum Registration {
    Registered(i64),
    /// `workers/<id>` belongs to another lease: an earlier incarnation.
    HeldByEarlier(i64),
    NoSession,
}

#[derive(Message)]
#[rtype(result = "()")]
struct Refresh;

/// Leave the membership now (graceful stop): delete `workers/<id>` and
/// refresh it no more, so other workers take this worker's jobs at once.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Leave;

impl Registrar {
    pub fn new(ctx: WorkerContext, sources: CounterSources) -> Registrar {
        let started = ctx.clock.now_ms();
        Registrar {
            ctx,
            sources,
            started,
            system: System::new().ok(),
            registered_lease: None,
            live: None,
            waiting_for_earlier: false,
            left: false,
        }
    }

    /// Register where this worker serves live output.
    pub fn serving_live(mut self, live: Option<crate::http::tail::LiveEndpoint>) -> Registrar {
        self.live = live;
        self
    }

    fn info(&mut self) -> WorkerInfo {
        let pid = Pid::from_u32(std::process::id());
        let (mut cpu, mut memory, mut host_memory) = (0.0, 0, 0.0);
        if let Some(system) = self.system.as_mut() {
            system.refresh_memory();
            system.refresh_processes_specifics(
                ProcessesToUpdate::Some(&[pid]),
                true,
                ProcessRefreshKind::nothing().with_cpu().with_memory(),
            );
            if let Some(process) = system.process(pid) {
                (cpu, memory) = (process.cpu_usage(), process.memory());
            }
            host_memory = system.used_memory() as f32 * 100.0 / system.total_memory().max(1) as f32;
        }
        WorkerInfo {
            id: self.ctx.worker_id.clone(),
            address: System::host_name().unwrap_or_else(|_| "localhost".into()),
            group: self.ctx.group.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            started: self.started,
            heartbeat: self.ctx.clock.now_ms(),
            cpu_percent: cpu,
            memory_bytes: memory,
            host_memory_percent: host_memory,
            running: self.ctx.running.total(),
            waiting: self.ctx.limits.slots.waiting(),
            batcher: BatcherCounters::default(),
            claims: LockCounters::default(),
            supervisor: SupervisorCounters::default(),
            kills: KillCounters::default(),
            notify: Default::default(),
            live: self.live.clone(),
        }
    }
}

impl Actor for Registrar {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.notify(Refresh);
    }
}

impl Handler<Refresh> for Registrar {
    type Result = ();

    fn handle(&mut self, _: Refresh, ctx: &mut Context<Self>) {
        if self.left {
            return;
        }
        let mut info = self.info();
        let (lock, coord, batcher) = (
            self.ctx.lock.clone(),
            self.ctx.coord.clone(),
            self.ctx.batcher.clone(),
        );
        let (supervisor, kill_watcher, notifier) = (
            self.sources.supervisor.clone(),
            self.sources.kill_watcher.clone(),
            self.sources.notifier.clone(),
        );
        let key = crate::keyspace::worker_key(&self.ctx.worker_id);
        let registered = self.registered_lease;
        let backlog = self.ctx.unregister_backlog.clone();
        ctx.spawn(
            async move {
                let Ok(Some((lease, _))) = lock.send(CurrentSession).await else {
                    return Ok(Registration::NoSession);
                };
                if !backlog.is_empty()
                    && let Err(error) = backlog.flush(&*coord).await
                {
                    tracing::debug!(%error, "finished runs still registered; retrying");
                }
                info.batcher = batcher.send(GetCounters).await.unwrap_or_default();
                info.claims = lock.send(GetLockCounters).await.unwrap_or_default();
                info.supervisor = supervisor
                    .send(GetSupervisorCounters)
                    .await
                    .unwrap_or_default();
                info.kills = kill_watcher.send(GetKillCounters).await.unwrap_or_default();
                if let Some(notifier) = &notifier {
                    info.notify = notifier
                        .send(crate::notify::notifier::GetNotifyCounters)
                        .await
                        .unwrap_or_default();
                }
                let value = serde_json::to_vec(&info).unwrap_or_default();
                if registered != Some(lease) {
                    // A new session: register only once an earlier
                    // incarnation's key (a crashed process of this id,
                    // restarted within its TTL) has ended with its lease, so
                    // peers see that lease end as a death and declare its
                    // runs lost. Overwriting it would hide the death.
                    match coord.put_if_absent(&key, value.clone(), Some(lease)).await? {
                        Claim::Won { .. } => return Ok(Registration::Registered(lease)),
                        Claim::Held(kv) if kv.lease != lease => {
                            return Ok(Registration::HeldByEarlier(kv.lease));
                        }
                        Claim::Held(_) => {}
                    }
                }
                coord
                    .put(&key, value, Some(lease))
                    .await
                    .map(|_| Registration::Registered(lease))
            }
            .into_actor(self)
            .map(|result, act, ctx| {
                match result {
                    Ok(Registration::Registered(lease)) => {
                        if act.registered_lease != Some(lease) {
                            tracing::info!(worker = %act.ctx.worker_id, lease, "registered");
                            act.registered_lease = Some(lease);
                        }
                    }
                    Ok(Registration::HeldByEarlier(other)) => {
                        if !act.waiting_for_earlier {
                            tracing::warn!(worker = %act.ctx.worker_id, lease = other, "workers/{} is held by an earlier process of this id (or another worker with the same id): waiting for its lease to end", act.ctx.worker_id);
                            act.waiting_for_earlier = true;
                        }
                        ctx.notify_later(Refresh, Duration::from_millis(200));
                        return;
                    }
                    // No session yet: register as soon as there is one.
                    Ok(Registration::NoSession) => {
                        ctx.notify_later(Refresh, Duration::from_millis(200));
                        return;
                    }
                    Err(error) => tracing::warn!(%error, "cannot refresh the worker registration"),
                }
                // A tick never kills the actor: re-arm whatever happened.
                ctx.notify_later(Refresh, REFRESH);
            }),
        );
    }
}

impl Handler<Leave> for Registrar {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _: Leave, _: &mut Context<Self>) -> Self::Result {
        self.left = true;
        let (coord, key) = (
            self.ctx.coord.clone(),
            format!("workers/{}", self.ctx.worker_id),
        );
        Box::pin(
            async move {
                if let Err(error) = coord.delete(&key).await {
                    tracing::warn!(%key, %error, "cannot leave the membership; it ends with the session");
                }
            }
            .into_actor(self),
        )
    }
}
