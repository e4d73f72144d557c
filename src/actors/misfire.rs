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

/// While claims fail, how often a job looks back for what it missed.
const RECHECK_WHILE_FAILING: std::time::Duration = std::time::Duration::from_secs(2);

impl JobActor {
    /// A claim (or a look back) got no answer: look back again shortly,
    /// until a look back succeeds, rather than at the next tick of the
    /// schedule, which may be an hour away.
    pub(super) fn claims_failed(&mut self, ctx: &mut Context<Self>) {
        if std::mem::replace(&mut self.claims_failing, true) {
            return; // a recheck is already armed
        }
        ctx.run_later(RECHECK_WHILE_FAILING, |act, ctx| {
            act.claims_failing = false;
            if !act.stopping {
                act.recover_misfires(ctx);
            }
        });
    }

    /// Look back over the misfire window and run late the ticks nobody
    /// claimed.
    pub(super) fn recover_misfires(&mut self, ctx: &mut Context<Self>) {
        if self.schedule.fixed_delay().is_some() {
            return; // a fixed-delay chain resumes from its own state
        }
        let (policy, window) = self.job.misfire_rule(self.ctx.misfire_window);
        let window = window.min(self.ctx.claims.policy().max_misfire_window());
        if policy == Misfire::Skip || window.is_zero() {
            return;
        }
        let now = self.ctx.clock.now_ms();
        let after = (now - window.as_millis() as i64).max(self.job.updated_at.unwrap_or(0));
        let due = due_ticks(&self.schedule, after, now, MAX_LATE_TICKS);
        let Some(&oldest) = due.first() else {
            return;
        };
        let (claims, name) = (self.ctx.claims.clone(), self.job.name.clone());
        self.in_flight += 1;
        ctx.spawn(
            async move { claims.claimed_since(&name, oldest).await }
                .into_actor(self)
                .map(move |claimed, act, ctx| {
                    act.in_flight -= 1;
                    match claimed {
                        Ok(claimed) => {
                            let late = late_ticks(policy, &due, &claimed);
                            if !late.is_empty() {
                                act.claim_late(late, ctx);
                            }
                        }
                        Err(error) => {
                            tracing::warn!(job = %act.job.name, %error, "cannot read the job's claims to find missed ticks");
                            act.claims_failed(ctx);
                        }
                    }
                    act.stop_if_done(ctx);
                }),
        );
    }

    /// Claim the late ticks, then run the ones won.
    fn claim_late(&mut self, late: Vec<i64>, ctx: &mut Context<Self>) {
        let (lock, name) = (self.ctx.lock.clone(), self.job.name.clone());
        self.in_flight += 1;
        ctx.spawn(
            async move {
                let (mut won, mut failed) = (Vec::new(), false);
                for tick_ms in late {
                    let claim = ClaimTick::of(&name, tick_ms);
                    match lock.send(claim).await {
                        Ok(Ok(ClaimOutcome::Won(ticket))) => won.push((tick_ms, ticket)),
                        Ok(Ok(ClaimOutcome::Lost { .. })) => {}
                        _ => failed = true,
                    }
                }
                (won, failed)
            }
            .into_actor(self)
            .map(|(won, failed), act, ctx| {
                act.in_flight -= 1;
                if failed {
                    act.claims_failed(ctx);
                }
                if !won.is_empty() {
                    act.counters.misfires_claimed += won.len() as u64;
                    let ticks: Vec<i64> = won.iter().map(|(t, _)| *t).collect();
                    tracing::info!(job = %act.job.name, ?ticks, "running missed ticks late");
                    act.ctx
                        .limits
                        .launcher
                        .spawn(run_late(act.ctx.clone(), act.job.clone(), won));
                }
                act.stop_if_done(ctx);
            }),
        );
    }
}

/// Run won late ticks: at once under `overlap: allow`, otherwise one after
/// another, each skipped if another run of the job is then in progress.
async fn run_late(ctx: WorkerContext, job: Job, won: Vec<(i64, Ticket)>) {
    for (tick_ms, ticket) in won {
        let spec = RunSpec {
            params: Default::default(),
            triggered_by: None,
            run_id: run_id(&job.name, tick_ms, &ctx.worker_id),
            worker: ctx.worker_id.clone(),
            plan_time: tick_ms,
            schedule_time: ctx.clock.now_ms(),
            attempt: 0,
            requested_by: None,
            job: job.clone(),
        };
        match (job.overlap, ctx.overlap_decision(&job)) {
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
