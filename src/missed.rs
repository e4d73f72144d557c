//! Ticks nobody could run. A job whose group has no live worker fires
//! nothing, and with no record the operator would never learn it. Every
//! manager sweeps for such ticks and records each as `missed`, once:
//!
//! - **When:** only once the tick can no longer run late: past the job's
//!   misfire window (a worker that joins the group in time runs it late
//!   instead) and a grace, and while its claim would still be seen (claims
//!   are kept `claimRetentionSecs`).
//! - **Once:** the sweep claims the tick as a worker would, straight onto
//!   its bucket's lease, so the claim decides between managers, and between
//!   a manager and a late run. The record's run id follows from the tick,
//!   and a tick the sweep claimed but has no record yet (its manager died
//!   in between) is recorded by the next sweep.
//! - **Which jobs:** the enabled jobs of groups seen with no live worker at
//!   some sweep within the checked window, so a group that came back still
//!   gets its gap recorded. A manager knows the gaps it saw: one that starts
//!   while a group is back misses the gap before (see DESIGN.md).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use crate::actors::misfire::due_ticks;
use crate::actors::ownership::worker_group;
use crate::clock::SharedClock;
use crate::coord::Coordinator;
use crate::coord::claims::{ClaimPolicy, TickClaims};
use crate::http::job_index::JobIndex;
use crate::job::{Job, Misfire};
use crate::keyspace;
use crate::runlog::{RunLog, RunRecord, RunStatus};
use crate::schedule::{Schedule, parse_time_zone};

/// The claim holder of a tick recorded as missed: not a valid worker id,
/// so no worker's claims are ever mistaken for it.
pub const HOLDER: &str = "(missed)";

/// After the misfire window, how long a tick still waits: its claim lands
/// a little after the tick.
pub const GRACE: Duration = Duration::from_secs(5);

/// How far before a claim's expiry a tick is last checked: a sweep must
/// finish while the claims it reads are still there.
const EXPIRY_SLACK: Duration = Duration::from_secs(5);

/// Most ticks of one job recorded by one sweep.
const MAX_TICKS_PER_JOB: usize = 1_000;

#[derive(Debug, Clone, Copy)]
pub struct SweepSettings {
    /// How often to sweep: less than the checked window (retention minus
    /// the longest misfire window and the grace: 20 s by default).
    pub every: Duration,
    /// The cluster's `misfireWindowSecs`, for jobs that set none.
    pub misfire_window: Duration,
    pub claims: ClaimPolicy,
}

impl SweepSettings {
    pub fn from_config(config: &crate::config::Config) -> SweepSettings {
        SweepSettings {
            every: Duration::from_secs(10),
            misfire_window: Duration::from_secs(config.misfire_window_secs),
            claims: ClaimPolicy {
                retention: Duration::from_secs(config.claim_retention_secs),
                ..ClaimPolicy::default()
            },
        }
    }

    /// How long a group's sighting without workers is kept: as far back
    /// as the sweep checks ticks.
    fn memory(&self) -> Duration {
        self.claims.retention
    }
}

/// The ticks of `job` a sweep at `now_ms` checks: `(after, until]`, those
/// that can no longer run late and whose claims are still kept. `None`
/// when the window is empty. Pure.
pub fn check_window(job: &Job, now_ms: i64, settings: &SweepSettings) -> Option<(i64, i64)> {
    let (policy, window) = job.misfire_rule(settings.misfire_window);
    let late = match policy {
        Misfire::Skip => Duration::ZERO,
        _ => window.min(settings.claims.max_misfire_window()),
    };
    let until = now_ms - (late + GRACE).as_millis() as i64;
    let oldest = now_ms
        - settings
            .claims
            .retention
            .saturating_sub(EXPIRY_SLACK)
            .as_millis() as i64;
    // No tick before the job's last save: it may not have existed.
    let after = oldest.max(job.updated_at.unwrap_or(0));
    (after < until).then_some((after, until))
}

/// The groups seen without a live worker, and when last. Pure.
#[derive(Debug, Default)]
pub struct EmptyGroups {
    last_seen_empty: BTreeMap<String, i64>,
}

impl EmptyGroups {
    /// Note which of the jobs' groups have no live worker at `now_ms`, and
    /// forget sightings older than `memory_ms`.
    pub fn observe(
        &mut self,
        now_ms: i64,
        job_groups: &BTreeSet<String>,
        live_groups: &BTreeSet<String>,
        memory_ms: i64,
    ) {
        for group in job_groups.difference(live_groups) {
            self.last_seen_empty.insert(group.clone(), now_ms);
        }
        self.last_seen_empty
            .retain(|_, seen| *seen >= now_ms - memory_ms);
    }

    /// The groups whose ticks may have gone unrun.
    pub fn recent(&self) -> BTreeSet<String> {
        self.last_seen_empty.keys().cloned().collect()
    }
}

/// The run id of a missed tick: one per tick, whoever records it.
pub fn missed_run_id(job: &str, tick_ms: i64) -> String {
    format!("{job}-{tick_ms}-missed")
}

fn missed_record(job: &Job, tick_ms: i64, now_ms: i64) -> RunRecord {
    RunRecord {
        run_id: missed_run_id(&job.name, tick_ms),
        job_name: job.name.clone(),
        command: job.command.clone(),
        worker: String::new(),
        plan_time: tick_ms,
        schedule_time: tick_ms,
        start_time: now_ms,
        end_time: now_ms,
        status: RunStatus::Missed,
        exit_code: None,
        signal: None,
        output: String::new(),
        truncated: false,
        err: format!(
            "no live worker in group '{}' ran this tick before its misfire window ended",
            job.group
        ),
        requested_by: None,
    }
}

fn schedule_of(job: &Job) -> Option<Schedule> {
    let tz = parse_time_zone(&job.timezone).ok()?;
    let schedule = Schedule::parse_for_job(&job.cron_expr, tz, &job.name).ok()?;
    schedule.fixed_delay().is_none().then_some(schedule)
}

/// One manager's sweep, with what it remembers between sweeps.
pub struct MissedSweep {
    coord: Arc<dyn Coordinator>,
    run_log: Arc<dyn RunLog>,
    jobs: Arc<JobIndex>,
    claims: TickClaims,
    clock: SharedClock,
    settings: SweepSettings,
    groups: EmptyGroups,
}

type SweepResult<T> = Result<T, String>;

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
            groups: EmptyGroups::default(),
        }
    }

    /// Look once: how many ticks were recorded as missed.
    pub async fn sweep(&mut self) -> SweepResult<usize> {
        let now = self.clock.now_ms();
        let Some(job_groups) = self.jobs.groups() else {
            return Ok(0); // the job index is not listed yet
        };
        let (workers, _) = self
            .coord
            .list(keyspace::WORKERS)
            .await
            .map_err(|e| format!("cannot list workers: {e}"))?;
        let live: BTreeSet<String> = workers.iter().map(worker_group).collect();
        let memory = self.settings.memory().as_millis() as i64;
        self.groups.observe(now, &job_groups, &live, memory);
        let mut recorded = 0;
        for job in self.jobs.enabled_in(&self.groups.recent()) {
            match self.sweep_job(&job, now).await {
                Ok(n) => recorded += n,
                Err(error) => {
                    tracing::warn!(job = %job.name, %error, "cannot record missed ticks; next sweep retries")
                }
            }
        }
        Ok(recorded)
    }

    async fn sweep_job(&self, job: &Job, now: i64) -> SweepResult<usize> {
        let Some(schedule) = schedule_of(job) else {
            return Ok(0);
        };
        let Some((after, until)) = check_window(job, now, &self.settings) else {
            return Ok(0);
        };
        let due = due_ticks(&schedule, after, until, MAX_TICKS_PER_JOB);
        let Some(&oldest) = due.first() else {
            return Ok(0);
        };
        let unknown = |e: crate::coord::CoordError| format!("tick claims: {e}");
        let holders = self
            .claims
            .holders_since(&job.name, oldest)
            .await
            .map_err(unknown)?;
        let mut ours = Vec::new();
        for tick in due {
            let mine = match holders.get(&tick) {
                Some(holder) => holder == HOLDER,
                None => self
                    .claims
                    .claim_decided(&job.name, tick, HOLDER, now)
                    .await
                    .map_err(unknown)?
                    .is_none_or(|holder| holder == HOLDER),
            };
            if mine {
                ours.push(tick);
            }
        }
        if ours.is_empty() {
            return Ok(0);
        }
        let ids: Vec<String> = ours.iter().map(|t| missed_run_id(&job.name, *t)).collect();
        let absent: HashSet<String> = self
            .run_log
            .missing(&ids)
            .await
            .map_err(|e| format!("run log: {e}"))?
            .into_iter()
            .collect();
        let records: Vec<RunRecord> = ours
            .iter()
            .filter(|t| absent.contains(&missed_run_id(&job.name, **t)))
            .map(|t| missed_record(job, *t, now))
            .collect();
        if records.is_empty() {
            return Ok(0);
        }
        self.run_log
            .insert_batch(&records)
            .await
            .map_err(|e| format!("run log: {e}"))?;
        tracing::info!(job = %job.name, group = %job.group, ticks = records.len(), "recorded ticks nobody could run as missed");
        Ok(records.len())
    }
}

/// The sweep running every `settings.every`; dropping or stopping it ends
/// the task.
pub struct MissedSweeper {
    task: tokio::task::JoinHandle<()>,
}

impl MissedSweeper {
    pub fn start(mut sweep: MissedSweep) -> MissedSweeper {
        let task = tokio::spawn(async move {
            let mut ticker = tokio::time::interval(sweep.settings.every);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                if let Err(error) = sweep.sweep().await {
                    tracing::warn!(%error, "missed-tick sweep failed; will retry");
                }
            }
        });
        MissedSweeper { task }
    }
}

impl Drop for MissedSweeper {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests;
