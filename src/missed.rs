//! Ticks with no record. A tick that did not run must say why: its job's
//! group had no live worker, its owner was cut off and its misfire policy
//! skipped it, or a worker won it and then lost it (its confirm's answer or
//! its records went with it). Every manager sweeps every enabled job:
//!
//! - **When:** a tick is checked once it can no longer run late (past the
//!   job's misfire window and a grace), by two sweeps, and after a failed
//!   sweep by the next good one, while its claim is surely still kept
//!   (claims live `claimRetentionSecs`).
//! - **Unclaimed:** nobody ran it or ever will. The sweep claims it as a
//!   worker would, straight onto its bucket's lease, so the claim decides
//!   between managers and shuts out a late run, and records it `missed`
//!   (run id `<job>-<tick>-missed`). A tick the sweep claimed but has no
//!   record yet (its manager died in between) is recorded by the next sweep.
//! - **Claimed, with no record at all** under the claimer's run id: recorded
//!   `lost`, saying so; a result arriving later replaces it. Skipped while the
//!   claimer is alive with records still in its journal (they may be these).
//!
//! One manager sweeps at a time ([`turn`]). One listing of `ticks/` and of
//! `workers/` a sweep, and one run log query per thousand ticks. A manager
//! taking the turn (or starting) checks every tick whose claim is still
//! kept; ticks older than that when no manager runs stay unchecked.

use actix::Recipient;

use crate::notify::notifier::Observed;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use crate::actors::misfire::due_ticks;
use crate::actors::ownership::worker_group;
use crate::clock::SharedClock;
use crate::coord::Coordinator;
use crate::coord::claims::{ClaimPolicy, TickClaims, claim_holder, parse_tick_key};
use crate::http::job_index::JobIndex;
use crate::job::{Job, Misfire};
use crate::keyspace::{self, WorkerInfo};
use crate::runlog::{RunLog, RunRecord, RunStatus};
use crate::schedule::{Schedule, parse_time_zone};

pub mod turn;
pub use turn::SweepTurn;

/// The claim holder of a tick recorded as missed: not a valid worker id,
/// so no worker's claims are ever mistaken for it.
pub const HOLDER: &str = "(missed)";

/// After the misfire window, how long a tick still waits: its claim lands
/// a little after the tick.
pub const GRACE: Duration = Duration::from_secs(5);

/// How far before a claim's expiry a tick is last checked: a sweep must
/// finish while the claims it reads are still there.
const EXPIRY_SLACK: Duration = Duration::from_secs(5);

/// How often a manager sweeps. Each sweep lists every claim (about 52,000
/// keys at 10,000 ticks a minute, six pages), on every manager: every 10 s
/// that was the largest share of the cluster's reads. A missed tick is
/// recorded at most one period later for it.
pub const SWEEP_EVERY: Duration = Duration::from_secs(20);

/// Most ticks of one job recorded by one sweep.
const MAX_TICKS_PER_JOB: usize = 1_000;

#[derive(Debug, Clone, Copy)]
pub struct SweepSettings {
    /// How often to sweep; each tick is checked in two sweeps.
    pub every: Duration,
    /// The cluster's `misfireWindowSecs`, for jobs that set none.
    pub misfire_window: Duration,
    pub claims: ClaimPolicy,
}

impl SweepSettings {
    pub fn from_config(config: &crate::config::Config) -> SweepSettings {
        SweepSettings {
            every: SWEEP_EVERY,
            misfire_window: Duration::from_secs(config.misfire_window_secs),
            claims: ClaimPolicy {
                retention: Duration::from_secs(config.claim_retention_secs),
                ..ClaimPolicy::default()
            },
        }
    }
}

/// The ticks of `job` a sweep at `now_ms` checks: `(after, until]`, those
/// that can no longer run late, from a sweep before the last good one
/// (`last_ok_ms`; two sweeps back when there is none), while their claims
/// are surely kept. `None` when the window is empty. Pure.
pub fn check_window(
    job: &Job,
    now_ms: i64,
    last_ok_ms: Option<i64>,
    settings: &SweepSettings,
) -> Option<(i64, i64)> {
    let (policy, window) = job.misfire_rule(settings.misfire_window);
    let late = match policy {
        Misfire::Skip => Duration::ZERO,
        _ => window.min(settings.claims.max_misfire_window()),
    };
    let horizon = (late + GRACE).as_millis() as i64;
    let every = settings.every.as_millis() as i64;
    let until = now_ms - horizon;
    let from = last_ok_ms.map_or(until - 2 * every, |ok| ok - horizon - every);
    let oldest = now_ms
        - settings
            .claims
            .retention
            .saturating_sub(EXPIRY_SLACK)
            .as_millis() as i64;
    // No tick before the job's last save: it may not have existed.
    let after = from.max(oldest).max(job.updated_at.unwrap_or(0));
    (after < until).then_some((after, until))
}

/// The run id of a missed tick: one per tick, whoever records it.
pub fn missed_run_id(job: &str, tick_ms: i64) -> String {
    format!("{job}-{tick_ms}-missed")
}

/// A checked tick: its job, its instant, and who holds its claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    pub job: String,
    pub tick_ms: i64,
    pub holder: String,
}

impl Checked {
    /// The run id the holder's record of this tick has.
    pub fn run_id(&self) -> String {
        if self.holder == HOLDER {
            missed_run_id(&self.job, self.tick_ms)
        } else {
            crate::actors::job::run_id(&self.job, self.tick_ms, &self.holder)
        }
    }
}

/// The record a tick with none gets: `missed` when the sweep holds its
/// claim (nobody ran it), `lost` when a worker won it and nothing of its
/// run reached the run log. Pure.
pub fn record_for(checked: &Checked, job: &Job, group_alive: bool, now_ms: i64) -> RunRecord {
    let (status, worker, err) = if checked.holder == HOLDER {
        let why = if group_alive {
            "no worker ran this tick before its misfire window ended (its owner was down or cut off, or the job's misfire policy skips late ticks)".to_string()
        } else {
            format!(
                "no live worker in group '{}' ran this tick before its misfire window ended",
                job.group
            )
        };
        (RunStatus::Missed, String::new(), why)
    } else {
        let why = format!(
            "worker {} claimed this tick but no record of its run reached the run log: the worker lost the run (a lost answer from etcd, or its records)",
            checked.holder
        );
        (RunStatus::Lost, checked.holder.clone(), why)
    };
    RunRecord {
        params: Default::default(),
        triggered_by: None,
        run_id: checked.run_id(),
        job_name: job.name.clone(),
        command: job.command.clone(),
        worker,
        plan_time: checked.tick_ms,
        schedule_time: checked.tick_ms,
        start_time: now_ms,
        end_time: now_ms,
        status,
        exit_code: None,
        signal: None,
        output: String::new(),
        truncated: false,
        err,
        requested_by: None,
    }
}

fn schedule_of(job: &Job) -> Option<Schedule> {
    let tz = parse_time_zone(&job.timezone).ok()?;
    let schedule = Schedule::parse_for_job(&job.cron_expr, tz, &job.name).ok()?;
    schedule.fixed_delay().is_none().then_some(schedule)
}

/// Claims by job, then tick: the holder. From one listing of `ticks/`.
fn claims_by_job(kvs: &[crate::coord::KeyValue]) -> HashMap<String, BTreeMap<i64, String>> {
    let mut by_job: HashMap<String, BTreeMap<i64, String>> = HashMap::new();
    for kv in kvs {
        if let Some((job, tick)) = parse_tick_key(&kv.key) {
            by_job
                .entry(job.to_string())
                .or_default()
                .insert(tick, claim_holder(&kv.value));
        }
    }
    by_job
}

/// One manager's sweep.
pub struct MissedSweep {
    coord: Arc<dyn Coordinator>,
    run_log: Arc<dyn RunLog>,
    jobs: Arc<JobIndex>,
    claims: TickClaims,
    clock: SharedClock,
    settings: SweepSettings,
    /// When the last sweep that went through began: the next one checks
    /// from there, so an outage leaves no tick unchecked.
    last_ok_ms: Option<i64>,
    /// Told of every record the sweep wrote (`missed` and `lost` alerts).
    notifier: Option<Recipient<Observed>>,
}

type SweepResult<T> = Result<T, String>;

/// Run ids asked of the run log at once.
const MISSING_CHUNK: usize = 1_000;

impl MissedSweep {
    pub fn new(
        coord: Arc<dyn Coordinator>,
        run_log: Arc<dyn RunLog>,
        jobs: Arc<JobIndex>,
        clock: SharedClock,
        settings: SweepSettings,
    ) -> MissedSweep {
        MissedSweep {
            claims: TickClaims::new(coord.clone(), settings.claims),
            coord,
            run_log,
            jobs,
            clock,
            settings,
            last_ok_ms: None,
            notifier: None,
        }
    }

    /// Look once: how many ticks got a record.
    pub async fn sweep(&mut self) -> SweepResult<usize> {
        let now = self.clock.now_ms();
        let Some(jobs) = self.jobs.enabled() else {
            return Ok(0); // the job index is not listed yet
        };
        let unavailable = |e: crate::coord::CoordError| format!("coordinator: {e}");
        let (workers, _) = self
            .coord
            .list(keyspace::WORKERS)
            .await
            .map_err(unavailable)?;
        let live_groups: BTreeSet<String> = workers.iter().map(worker_group).collect();
        // Workers with records still in their journals: theirs may be there.
        let shipping: HashSet<String> = workers
            .iter()
            .filter_map(|kv| serde_json::from_slice::<WorkerInfo>(&kv.value).ok())
            .filter(|w| w.batcher.queued > 0)
            .map(|w| w.id)
            .collect();
        let (claims, _) = self
            .coord
            .list(keyspace::TICKS)
            .await
            .map_err(unavailable)?;
        let claims = claims_by_job(&claims);
        let mut checked = Vec::new();
        for job in &jobs {
            let Some(schedule) = schedule_of(job) else {
                continue;
            };
            let Some((after, until)) = check_window(job, now, self.last_ok_ms, &self.settings)
            else {
                continue;
            };
            for tick in due_ticks(&schedule, after, until, MAX_TICKS_PER_JOB) {
                let holder = match claims.get(&job.name).and_then(|c| c.get(&tick)) {
                    Some(holder) => holder.clone(),
                    None => self
                        .claims
                        .claim_decided(&job.name, tick, HOLDER, now)
                        .await
                        .map_err(unavailable)?
                        .unwrap_or_else(|| HOLDER.to_string()),
                };
                if !shipping.contains(&holder) {
                    checked.push(Checked {
                        job: job.name.clone(),
                        tick_ms: tick,
                        holder,
                    });
                }
            }
        }
        let by_name: HashMap<&str, &Job> = jobs.iter().map(|j| (j.name.as_str(), j)).collect();
        let mut recorded = 0;
        for chunk in checked.chunks(MISSING_CHUNK) {
            let ids: Vec<String> = chunk.iter().map(Checked::run_id).collect();
            let absent: HashSet<String> = self
                .run_log
                .missing(&ids)
                .await
                .map_err(|e| format!("run log: {e}"))?
                .into_iter()
                .collect();
            let records: Vec<RunRecord> = chunk
                .iter()
                .filter(|c| absent.contains(&c.run_id()))
                .filter_map(|c| {
                    let job = by_name.get(c.job.as_str())?;
                    Some(record_for(c, job, live_groups.contains(&job.group), now))
                })
                .collect();
            if records.is_empty() {
                continue;
            }
            self.run_log
                .insert_batch(&records)
                .await
                .map_err(|e| format!("run log: {e}"))?;
            for record in &records {
                tracing::warn!(job = %record.job_name, tick = record.plan_time, status = record.status.as_str(), err = %record.err, "recorded a tick that had no record");
            }
            if let Some(notifier) = &self.notifier {
                notifier.do_send(Observed(records.clone()));
            }
            recorded += records.len();
        }
        self.last_ok_ms = Some(now);
        Ok(recorded)
    }

    /// The next sweep checks every tick whose claim is still kept: this
    /// manager takes the turn from one whose progress it cannot know (as
    /// if no sweep had gone through for ever).
    pub fn catch_up(&mut self) {
        self.last_ok_ms = Some(0);
    }
}

/// The sweep running every `settings.every`; dropping it ends the task at
/// once, [`MissedSweeper::stop`] hands the turn on first.
pub struct MissedSweeper {
    task: tokio::task::JoinHandle<()>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl MissedSweeper {
    /// A manager's sweep (the manager and `standalone`), on the system clock.
    pub fn for_manager(
        coord: Arc<dyn Coordinator>,
        run_log: Arc<dyn RunLog>,
        jobs: Arc<JobIndex>,
        config: &crate::config::Config,
        notifier: Option<Recipient<Observed>>,
    ) -> MissedSweeper {
        let clock = Arc::new(crate::clock::SystemClock);
        let settings = SweepSettings::from_config(config);
        let turn = SweepTurn::new(coord.clone(), &format!("manager@{}", config.listen));
        let mut sweep = MissedSweep::new(coord, run_log, jobs, clock, settings);
        sweep.notifier = notifier;
        MissedSweeper::start(sweep, turn)
    }

    /// Sweep every `settings.every` while this manager holds `turn`.
    pub fn start(mut sweep: MissedSweep, mut turn: SweepTurn) -> MissedSweeper {
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let mut ticker = tokio::time::interval(sweep.settings.every);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut had_turn = false;
            loop {
                tokio::select! {
                    _ = ticker.tick() => {}
                    _ = &mut stopped => break,
                }
                match turn.take().await {
                    Ok(true) if !had_turn => {
                        tracing::info!("this manager sweeps for ticks with no record now");
                        sweep.catch_up();
                        had_turn = true;
                    }
                    Ok(true) => {}
                    Ok(false) => {
                        had_turn = false;
                        continue;
                    }
                    Err(error) => {
                        tracing::warn!(%error, "cannot tell whose turn it is to sweep; will retry");
                        continue;
                    }
                }
                if let Err(error) = sweep.sweep().await {
                    tracing::warn!(%error, "the sweep for ticks with no record failed; will retry");
                }
            }
            if let Err(error) = turn.give_up().await {
                tracing::warn!(%error, "cannot hand on the turn to sweep; it ends with its session");
            }
        });
        MissedSweeper {
            task,
            stop: Some(stop),
        }
    }

    /// Stop after the sweep under way and hand the turn on, so another
    /// manager sweeps at its next period (a rolling restart); at most
    /// [`STOP_WAIT`], then the task is dropped and the turn ends with its
    /// session.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = tokio::time::timeout(STOP_WAIT, &mut self.task).await;
    }
}

/// How long a stopping manager waits for its sweep to end.
const STOP_WAIT: Duration = Duration::from_secs(5);

impl Drop for MissedSweeper {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests;
