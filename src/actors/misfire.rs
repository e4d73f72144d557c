//! Misfires: ticks of a recent window that nobody ran, because their owner
//! died or froze, or etcd was out. A missed tick becomes a late one.
//!
//! A JobActor looks back when it takes a job over, and when its claims get
//! answers again after failing (its session came back). It reads the job's
//! claims in one range read, picks the ticks nobody claimed under the job's
//! `misfire` policy, claims each as usual (so two workers looking back at
//! once still run each tick once) and runs the won ones late: all at once
//! under `overlap: allow`, otherwise one after another.
//!
//! The window never reaches before the job's last save (`updatedAt`), and is
//! held below claim retention: a tick found free must be one nobody ran,
//! not one whose claim already expired.

use std::collections::BTreeSet;

use actix::prelude::*;
use futures_util::future::BoxFuture;

use super::context::{OverlapDecision, WorkerContext};
use super::job::{JobActor, run_claimed_tick, run_id, skip_claimed_tick};
use super::lock::{ClaimOutcome, ClaimTick, Ticket};
use crate::job::{Job, Misfire, Overlap};
use crate::runner::RunSpec;
use crate::schedule::Schedule;

/// Most ticks one look back considers (an every-second job over the
/// longest window the default retention allows is 270).
const MAX_LATE_TICKS: usize = 1_000;

/// The planned ticks in `(after_ms, until_ms]`, oldest first, at most `cap`.
pub fn due_ticks(schedule: &Schedule, after_ms: i64, until_ms: i64, cap: usize) -> Vec<i64> {
    let mut ticks = Vec::new();
    let mut cursor = chrono::DateTime::from_timestamp_millis(after_ms).unwrap_or_default();
    while ticks.len() < cap {
        let Some(next) = schedule.next_after(cursor) else {
            break;
        };
        if next.timestamp_millis() > until_ms {
            break;
        }
        ticks.push(next.timestamp_millis());
        cursor = next;
    }
    ticks
}

/// Of the `due` ticks (oldest first), those to run late: `all` runs every
/// one nobody claimed; `latest` the newest of them, and only if no newer
/// tick was claimed (someone ran the job since); `skip` none.
pub fn late_ticks(policy: Misfire, due: &[i64], claimed: &BTreeSet<i64>) -> Vec<i64> {
    let free = due.iter().copied().filter(|t| !claimed.contains(t));
    match policy {
        Misfire::Skip => Vec::new(),
        Misfire::All => free.collect(),
        Misfire::Latest => {
            let newest_claimed = due.iter().rev().find(|t| claimed.contains(t)).copied();
            let mut free = free;
            free.next_back()
                .filter(|t| newest_claimed.is_none_or(|c| *t > c))
                .into_iter()
                .collect()
        }
    }
}

/// While claims fail, how long a job waits before looking back again:
/// 2 s after the first failure, doubling to at most 8 s, each wait drawn
/// between half and all of that (`jitter` in [0, 1)) so that a worker's
/// jobs, which all failed at once, do not look back at once. A new session
/// makes every job look back at once anyway (`SessionRegained`), so the
/// waits only matter while etcd answers slowly or not at all. Pure, for
/// table tests.
pub fn recheck_delay(failures: u32, jitter: f64) -> std::time::Duration {
    const FIRST_MS: u64 = 2_000;
    const LONGEST_MS: u64 = 8_000;
    let full = FIRST_MS
        .saturating_mul(1 << failures.saturating_sub(1).min(10))
        .min(LONGEST_MS);
    let jitter = jitter.clamp(0.0, 1.0);
    std::time::Duration::from_millis(full / 2 + (full as f64 / 2.0 * jitter) as u64)
}

/// A uniform draw in [0, 1) from the system's random source.
fn jitter() -> f64 {
    getrandom::u32().map_or(0.5, |n| n as f64 / (u32::MAX as f64 + 1.0))
}

/// What one look back found.
enum LookedBack {
    /// The job runs nothing late, or nothing was due in the window.
    Nothing { now_ms: i64 },
    /// The claims of the `due` ticks were read (or not).
    Read {
        now_ms: i64,
        policy: Misfire,
        due: Vec<i64>,
        claimed: crate::coord::Result<BTreeSet<i64>>,
    },
}

impl JobActor {
    /// The claim of `tick_ms` (or a look back up to it) got no answer: look
    /// back again shortly, until a look back has succeeded at or after that
    /// tick, rather than at the next tick of the schedule, which may be an
    /// hour away.
    pub(super) fn claims_failed(&mut self, tick_ms: i64, ctx: &mut Context<Self>) {
        self.failed_through = self.failed_through.max(Some(tick_ms));
        if std::mem::replace(&mut self.recheck_armed, true) {
            return; // a recheck is already armed
        }
        self.recheck_failures = self.recheck_failures.saturating_add(1);
        ctx.run_later(
            recheck_delay(self.recheck_failures, jitter()),
            |act, ctx| {
                act.recheck_armed = false;
                if !act.stopping {
                    act.recover_misfires(ctx);
                }
            },
        );
    }

    /// A look back up to `now_ms` succeeded: the failed claims it covered
    /// are settled; one of a tick still ahead (claimed a second early)
    /// needs another.
    fn looked_back(&mut self, now_ms: i64, ctx: &mut Context<Self>) {
        match self.failed_through {
            Some(tick) if tick > now_ms => self.claims_failed(tick, ctx),
            _ => {
                self.failed_through = None;
                self.recheck_failures = 0;
            }
        }
    }

    /// Look back over the misfire window and run late the ticks nobody
    /// claimed. The read waits its turn among the worker's look backs
    /// ([`crate::coord::claims::LOOK_BACK_READS`]); the window is chosen
    /// once the turn comes. A stopping actor drops a look back still
    /// waiting or reading: nothing is claimed until it has answered, and
    /// the next owner looks back when it takes the job.
    pub(super) fn recover_misfires(&mut self, ctx: &mut Context<Self>) {
        let now = self.ctx.clock.now_ms();
        if look_back_from(&self.ctx, &self.job, &self.schedule, now).is_none() {
            // It never runs a tick late: nothing to read, no turn to take.
            self.failed_through = None;
            self.recheck_failures = 0;
            return;
        }
        let (wctx, job, schedule) = (self.ctx.clone(), self.job.clone(), self.schedule.clone());
        ctx.spawn(
            async move {
                let _turn = wctx.claims.look_back_turn().await;
                let now_ms = wctx.clock.now_ms();
                let Some((policy, after)) = look_back_from(&wctx, &job, &schedule, now_ms) else {
                    return (job.updated_at, LookedBack::Nothing { now_ms });
                };
                let due = due_ticks(&schedule, after, now_ms, MAX_LATE_TICKS);
                let Some(&oldest) = due.first() else {
                    return (job.updated_at, LookedBack::Nothing { now_ms });
                };
                let claimed = wctx.claims.claimed_since(&job.name, oldest).await;
                let read = LookedBack::Read {
                    now_ms,
                    policy,
                    due,
                    claimed,
                };
                (job.updated_at, read)
            }
            .into_actor(self)
            .map(|(updated_at, looked), act, ctx| {
                if act.stopping {
                    return;
                }
                match looked {
                    LookedBack::Nothing { now_ms } => act.looked_back(now_ms, ctx),
                    LookedBack::Read { now_ms, claimed: Err(error), .. } => {
                        tracing::warn!(job = %act.job.name, %error, "cannot read the job's claims to find missed ticks");
                        act.claims_failed(now_ms, ctx);
                    }
                    LookedBack::Read { now_ms, policy, due, claimed: Ok(claimed) } => {
                        // Saved again meanwhile: its window starts at the
                        // new save, after all of these ticks.
                        let late = if act.job.updated_at == updated_at {
                            late_ticks(policy, &due, &claimed)
                        } else {
                            Vec::new()
                        };
                        if !late.is_empty() {
                            act.claim_late(late, ctx);
                        }
                        act.looked_back(now_ms, ctx);
                    }
                }
            }),
        );
    }

    /// Claim the late ticks, then run the ones won.
    fn claim_late(&mut self, late: Vec<i64>, ctx: &mut Context<Self>) {
        let (lock, name) = (self.ctx.lock.clone(), self.job.name.clone());
        self.in_flight += 1;
        ctx.spawn(
            async move {
                let (mut won, mut failed) = (Vec::new(), None);
                for tick_ms in late {
                    let claim = ClaimTick::of(&name, tick_ms);
                    match lock.send(claim).await {
                        Ok(Ok(ClaimOutcome::Won(ticket))) => won.push((tick_ms, ticket)),
                        Ok(Ok(ClaimOutcome::Lost { .. })) => {}
                        _ => failed = Some(tick_ms),
                    }
                }
                (won, failed)
            }
            .into_actor(self)
            .map(|(won, failed), act, ctx| {
                act.in_flight -= 1;
                if let Some(tick_ms) = failed {
                    act.claims_failed(tick_ms, ctx);
                }
                if !won.is_empty() {
                    act.counters.misfires_claimed += won.len() as u64;
                    let ticks: Vec<i64> = won.iter().map(|(t, _)| *t).collect();
                    tracing::info!(job = %act.job.name, ?ticks, "running missed ticks late");
                    let won = won
                        .into_iter()
                        .map(|(tick, ticket)| (late_spec(&act.ctx, &act.job, tick), ticket))
                        .collect();
                    act.ctx
                        .limits
                        .launcher
                        .spawn(run_late(act.ctx.clone(), won));
                }
                act.stop_if_done(ctx);
            }),
        );
    }
}

/// What a look back at `now_ms` considers: the job's misfire policy and
/// the instant after which its ticks count as missed. `None` for jobs that
/// never run a tick late (a fixed-delay chain resumes from its own state).
fn look_back_from(
    ctx: &WorkerContext,
    job: &Job,
    schedule: &Schedule,
    now_ms: i64,
) -> Option<(Misfire, i64)> {
    let (policy, window) = job.misfire_rule(ctx.misfire_window);
    let window = window.min(ctx.claims.policy().max_misfire_window());
    if schedule.fixed_delay().is_some() || policy == Misfire::Skip || window.is_zero() {
        return None;
    }
    let after = (now_ms - window.as_millis() as i64).max(job.updated_at.unwrap_or(0));
    Some((policy, after))
}

/// What decides whether a run freed after a lost confirm runs late now.
#[derive(Debug, Clone, Copy)]
pub enum FreedRun<'a> {
    /// A scheduled tick: the ticks a look back at this instant would run.
    Scheduled { late: &'a [i64] },
    /// A run asked for or chained: the oldest instant the claims still
    /// guard (it runs if it is younger).
    Asked { oldest_ms: i64 },
}

/// Whether the freed run planned at `plan_time` runs late now. Pure, for
/// table tests.
pub fn runs_freed(plan_time: i64, freed: FreedRun) -> bool {
    match freed {
        FreedRun::Scheduled { late } => late.contains(&plan_time),
        FreedRun::Asked { oldest_ms } => plan_time > oldest_ms,
    }
}

/// How long a freed run keeps trying to be claimed again (no session yet,
/// no answer), at most: its misfire window ends it sooner.
const FREED_PATIENCE: std::time::Duration = std::time::Duration::from_secs(60);

/// A run this worker won but never started: its confirm got no answer
/// before the session ended, and revoking that session freed its claim.
/// The job's owner may have looked back while the old session still held
/// the claim, and seen the tick taken; nobody else knows it is free. So
/// look back for it here, under the job's misfire policy: claim it again on
/// the new session (a peer looking back at once still runs it once) and run
/// it late. Boxed: it runs through [`run_claimed_tick`], which calls it.
pub fn run_freed(ctx: WorkerContext, spec: RunSpec) -> BoxFuture<'static, ()> {
    Box::pin(async move {
        let (name, tick) = (spec.job.name.clone(), spec.plan_time);
        let scheduled = spec.requested_by.is_none() && spec.triggered_by.is_none();
        let at = chrono::DateTime::from_timestamp_millis(tick).unwrap_or_default();
        let Ok(schedule) = spec.job.validate(at) else {
            return; // no longer a valid definition: the sweep records the tick
        };
        let give_up = tokio::time::Instant::now() + FREED_PATIENCE;
        let mut pause = std::time::Duration::from_millis(100);
        loop {
            let decided = if scheduled {
                let _turn = ctx.claims.look_back_turn().await;
                let now = ctx.clock.now_ms();
                let Some((policy, after)) = look_back_from(&ctx, &spec.job, &schedule, now) else {
                    return;
                };
                let due = due_ticks(&schedule, after, now, MAX_LATE_TICKS);
                let from = due.first().copied().unwrap_or(tick);
                let claimed = ctx.claims.claimed_since(&name, from).await;
                claimed.map(|claimed| {
                    let late = late_ticks(policy, &due, &claimed);
                    runs_freed(tick, FreedRun::Scheduled { late: &late })
                })
            } else {
                let now = ctx.clock.now_ms();
                let guard = ctx.claims.policy().max_misfire_window().as_millis() as i64;
                Ok(runs_freed(
                    tick,
                    FreedRun::Asked {
                        oldest_ms: now - guard,
                    },
                ))
            };
            let claim = ClaimTick {
                job: name.clone(),
                tick_ms: tick,
                after: spec.triggered_by.clone(),
            };
            let outcome = match decided {
                Ok(false) => return,
                Ok(true) => ctx.lock.send(claim).await.ok().and_then(Result::ok),
                Err(_) => None,
            };
            match outcome {
                Some(ClaimOutcome::Won(ticket)) => {
                    tracing::warn!(job = %name, tick, "claimed the freed tick again: running it late");
                    let spec = RunSpec {
                        schedule_time: ctx.clock.now_ms(),
                        ..spec
                    };
                    run_late(ctx, vec![(spec, ticket)]).await;
                    return;
                }
                // A peer's look back took it.
                Some(ClaimOutcome::Lost { .. }) => return,
                Some(ClaimOutcome::NoSession) | None => {}
            }
            if tokio::time::Instant::now() >= give_up {
                tracing::warn!(job = %name, tick, "cannot claim the freed tick again; leaving it to the managers' sweep");
                return;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(std::time::Duration::from_secs(2));
        }
    })
}

/// Run won late ticks: at once under `overlap: allow`, otherwise one after
/// another, each skipped if another run of the job is then in progress.
async fn run_late(ctx: WorkerContext, won: Vec<(RunSpec, Ticket)>) {
    for (spec, ticket) in won {
        match (spec.job.overlap, ctx.overlap_decision(&spec.job)) {
            (Overlap::Allow, _) => {
                ctx.limits
                    .launcher
                    .spawn(run_claimed_tick(ctx.clone(), spec, ticket));
            }
            (_, OverlapDecision::Start) => run_claimed_tick(ctx.clone(), spec, ticket).await,
            // A late tick never replaces a run in progress.
            (_, OverlapDecision::Skip | OverlapDecision::ReplaceThenStart) => {
                skip_claimed_tick(ctx.clone(), spec, ticket).await
            }
        }
    }
}

/// The run of a missed tick, found by a look back.
fn late_spec(ctx: &WorkerContext, job: &Job, tick_ms: i64) -> RunSpec {
    RunSpec {
        params: Default::default(),
        triggered_by: None,
        run_id: run_id(&job.name, tick_ms, &ctx.worker_id),
        worker: ctx.worker_id.clone(),
        plan_time: tick_ms,
        schedule_time: ctx.clock.now_ms(),
        attempt: 0,
        requested_by: None,
        job: job.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_misfire_policy_picks_the_free_ticks() {
        let due = [1, 2, 3, 4, 5];
        let set = |ticks: &[i64]| ticks.iter().copied().collect::<BTreeSet<i64>>();
        let table: [(Misfire, &[i64], &[i64]); 9] = [
            (Misfire::All, &[], &[1, 2, 3, 4, 5]),
            (Misfire::All, &[1, 3], &[2, 4, 5]),
            (Misfire::All, &[1, 2, 3, 4, 5], &[]),
            (Misfire::Latest, &[], &[5]),
            (Misfire::Latest, &[1, 2], &[5]),
            // Someone ran tick 5: nothing older is run.
            (Misfire::Latest, &[5], &[]),
            (Misfire::Latest, &[3], &[5]),
            (Misfire::Skip, &[], &[]),
            (Misfire::Skip, &[1], &[]),
        ];
        for (policy, claimed, expected) in table {
            assert_eq!(
                late_ticks(policy, &due, &set(claimed)),
                expected,
                "{policy:?} with {claimed:?} claimed"
            );
        }
    }

    #[test]
    fn a_freed_run_runs_late_as_a_look_back_would_run_it() {
        let scheduled = |late| FreedRun::Scheduled { late };
        let asked = |oldest_ms| FreedRun::Asked { oldest_ms };
        let table: [(i64, FreedRun, bool); 6] = [
            (30, scheduled(&[10, 30]), true),
            // `latest` runs a newer free tick instead, or one was claimed.
            (30, scheduled(&[40]), false),
            (30, scheduled(&[]), false),
            // Asked for or chained: run while the claims still guard it.
            (30, asked(29), true),
            (30, asked(30), false),
            (30, asked(45), false),
        ];
        for (plan_time, freed, runs) in table {
            assert_eq!(
                runs_freed(plan_time, freed),
                runs,
                "{plan_time} with {freed:?}"
            );
        }
    }

    #[test]
    fn rechecks_back_off_with_jitter_up_to_8_seconds() {
        let ms = |failures, jitter| recheck_delay(failures, jitter).as_millis() as u64;
        let table: [(u32, f64, u64); 9] = [
            // (failures in a row, jitter, wait in ms)
            (1, 0.0, 1_000),
            (1, 0.5, 1_500),
            (1, 0.999_999, 1_999),
            (2, 0.0, 2_000),
            (2, 0.999_999, 3_999),
            (3, 0.0, 4_000),
            (3, 0.999_999, 7_999),
            (40, 0.0, 4_000),
            // A jitter out of range is clamped, never a longer wait.
            (40, 7.0, 8_000),
        ];
        for (failures, jitter, expected) in table {
            assert_eq!(
                ms(failures, jitter),
                expected,
                "{failures} failures, jitter {jitter}"
            );
        }
        assert_eq!(ms(0, 0.0), ms(1, 0.0), "no failure yet waits as the first");
    }

    #[test]
    fn due_ticks_are_the_planned_ones_in_the_window_oldest_first() {
        let schedule = Schedule::parse("*/10 * * * * *", chrono_tz::UTC).unwrap();
        let base = 1_700_000_000_000; // a whole ten seconds
        assert_eq!(
            due_ticks(&schedule, base, base + 30_000, 100),
            [base + 10_000, base + 20_000, base + 30_000],
            "after the start, up to and with the end"
        );
        assert_eq!(due_ticks(&schedule, base, base + 30_000, 2).len(), 2);
        assert!(due_ticks(&schedule, base, base + 9_999, 100).is_empty());
    }
}
