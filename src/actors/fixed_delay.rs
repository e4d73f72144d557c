//! Fixed delay (`@delay 30s`): the JobActor of such a job starts each run a
//! delay after the previous run ended, so runs never overlap.
//!
//! The chain survives a change of owner through one coordinator key per job,
//! `delay/<job>` = `{"lastTick", "lastEnd"}`: written when a run starts
//! (`lastEnd` null) and when it ends. Each run is a tick claimed under
//! `(job, lastEnd + delay)`, a deterministic key, so a run is started once
//! even if two owners overlap during a hand-off. A new owner reads the key:
//! - `lastEnd` set: the next run starts at `lastEnd + delay` (at once if that
//!   has passed);
//! - `lastEnd` null and the run still registered under `running/<job>/` (or
//!   started less than 3 s ago, before it registers): it waits for its end;
//! - `lastEnd` null and no such run: its worker died mid-run; the next run
//!   starts `killGraceMs` after this owner first saw that (the dead worker's
//!   fence has killed the run by then, as for a lost run), under the key
//!   `lastTick + delay`;
//! - no key: the job never ran; it starts at once.

use std::time::Duration;

use actix::prelude::*;

use super::job::{JobActor, run_claimed_tick};
use super::lock::{ClaimOutcome, ClaimTick};

/// How often an owner waiting on another worker's run looks again.
const RECHECK: Duration = Duration::from_secs(1);
/// A run registers under `running/` only after [`super::job::REGISTER_AFTER`];
/// until this long after its start, a start without an end counts as a run
/// in progress.
const START_GRACE_MS: i64 = 3_000;

pub use crate::keyspace::{DelayState, delay_key};

/// What an owner does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextRun {
    /// Claim and start the run keyed `tick` (at once if it has passed).
    At(i64),
    /// A run of the job is still in progress somewhere: look again later.
    WaitForRun,
    /// The run's worker died mid-run: give its fence `killGraceMs` from the
    /// first sight of that, then start.
    WaitForFence,
}

/// What an owner saw of the chain.
#[derive(Debug, Clone, Copy)]
pub struct Seen {
    /// A run of the job is registered under `running/`.
    pub run_in_progress: bool,
    /// When this owner first saw the current start left without an end and
    /// without a run.
    pub orphan_since_ms: Option<i64>,
}

/// The hand-off rule above, as a pure function.
pub fn next_run(
    state: Option<DelayState>,
    delay_ms: i64,
    now_ms: i64,
    seen: Seen,
    kill_grace_ms: i64,
) -> NextRun {
    match state {
        None => NextRun::At(now_ms),
        Some(DelayState {
            last_end: Some(end),
            ..
        }) => NextRun::At(end + delay_ms),
        Some(DelayState {
            last_tick,
            last_end: None,
        }) if seen.run_in_progress || now_ms - last_tick < START_GRACE_MS => NextRun::WaitForRun,
        Some(DelayState {
            last_tick,
            last_end: None,
        }) => match seen.orphan_since_ms {
            Some(since) if now_ms - since >= kill_grace_ms => NextRun::At(last_tick + delay_ms),
            _ => NextRun::WaitForFence,
        },
    }
}

/// Read the chain's state and decide (again).
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct PlanDelayRun;

#[derive(Message)]
#[rtype(result = "()")]
struct DelayFire {
    tick_ms: i64,
}

/// This worker's run of the chain ended at `end_ms`.
#[derive(Message)]
#[rtype(result = "()")]
struct DelayRunEnded {
    end_ms: i64,
}

impl JobActor {
    fn delay_ms(&self) -> Option<i64> {
        self.schedule.fixed_delay().map(|d| d.as_millis() as i64)
    }

    fn arm_delay_tick(&mut self, tick_ms: i64, ctx: &mut Context<Self>) {
        self.cancel_timer(ctx);
        let claim_at = tick_ms - self.claim_lead.as_millis() as i64;
        let wait = Duration::from_millis((claim_at - self.ctx.clock.now_ms()).max(0) as u64);
        self.armed_for = Some(tick_ms);
        self.timer = Some(ctx.notify_later(DelayFire { tick_ms }, wait));
    }

    fn recheck_later(&mut self, ctx: &mut Context<Self>) {
        self.cancel_timer(ctx);
        self.armed_for = None;
        self.timer = Some(ctx.notify_later(PlanDelayRun, RECHECK));
    }
}

impl Handler<PlanDelayRun> for JobActor {
    type Result = ();

    fn handle(&mut self, _: PlanDelayRun, ctx: &mut Context<Self>) {
        if self.delay_run_in_flight || self.stopping || self.delay_ms().is_none() {
            return;
        }
        let (coord, name) = (self.ctx.coord.clone(), self.job.name.clone());
        let read = async move {
            let state = coord.get(&delay_key(&name)).await?;
            let (running, _) = coord.list(&crate::keyspace::running_prefix(&name)).await?;
            Ok::<_, crate::coord::CoordError>((state, !running.is_empty()))
        };
        ctx.spawn(read.into_actor(self).map(|result, act, ctx| {
            let Some(delay_ms) = act.delay_ms() else {
                return;
            };
            match result {
                Ok((state, in_progress)) => {
                    let state: Option<DelayState> =
                        state.and_then(|kv| serde_json::from_slice(&kv.value).ok());
                    let now = act.ctx.clock.now_ms();
                    let last_tick = state.map(|s| s.last_tick);
                    let seen = Seen {
                        run_in_progress: in_progress,
                        orphan_since_ms: act
                            .delay_orphan_seen
                            .filter(|(tick, _)| Some(*tick) == last_tick)
                            .map(|(_, since)| since),
                    };
                    let grace = act.ctx.limits.kill_grace.as_millis() as i64;
                    match next_run(state, delay_ms, now, seen, grace) {
                        NextRun::At(tick_ms) => act.arm_delay_tick(tick_ms, ctx),
                        NextRun::WaitForRun => act.recheck_later(ctx),
                        NextRun::WaitForFence => {
                            if seen.orphan_since_ms.is_none() {
                                act.delay_orphan_seen = last_tick.map(|tick| (tick, now));
                            }
                            act.recheck_later(ctx)
                        }
                    }
                }
                Err(error) => {
                    tracing::warn!(job = %act.job.name, %error, "cannot read the fixed-delay state; retrying");
                    act.recheck_later(ctx);
                }
            }
        }));
    }
}

impl Handler<DelayFire> for JobActor {
    type Result = ();

    fn handle(&mut self, DelayFire { tick_ms }: DelayFire, ctx: &mut Context<Self>) {
        if self.armed_for != Some(tick_ms) || self.delay_run_in_flight || self.stopping {
            return;
        }
        self.counters.ticks += 1;
        let claim = ClaimTick::of(&self.job.name, tick_ms);
        let lock = self.ctx.lock.clone();
        self.in_flight += 1;
        ctx.spawn(lock.send(claim).into_actor(self).map(move |result, act, ctx| {
            act.in_flight -= 1;
            let ticket = match result {
                Ok(Ok(ClaimOutcome::Won(ticket))) => ticket,
                Ok(Ok(ClaimOutcome::Lost { .. })) => {
                    // Another owner runs this tick: follow its end.
                    act.counters.claims_lost += 1;
                    act.recheck_later(ctx);
                    return act.stop_if_done(ctx);
                }
                other => {
                    act.counters.claim_failures += 1;
                    tracing::warn!(job = %act.job.name, tick = tick_ms, outcome = ?other.map(|r| r.map(|_| ())), "fixed-delay claim failed; retrying");
                    act.recheck_later(ctx);
                    return act.stop_if_done(ctx);
                }
            };
            act.delay_run_in_flight = true;
            act.armed_for = None;
            act.counters.runs_started += 1;
            let spec = act.first_attempt(tick_ms, act.ctx.clock.now_ms(), Default::default());
            let (worker_ctx, addr) = (act.ctx.clone(), ctx.address());
            // Outside the actor: the run and its end state outlive it when
            // ownership moves.
            let launcher = worker_ctx.limits.launcher.clone();
            launcher.spawn(async move {
                let key = delay_key(&spec.job.name);
                let started = DelayState {
                    last_tick: tick_ms,
                    last_end: None,
                };
                let write = |state: DelayState| serde_json::to_vec(&state).unwrap_or_default();
                if let Err(error) = worker_ctx.coord.put(&key, write(started), None).await {
                    tracing::warn!(%key, %error, "cannot record the fixed-delay start");
                }
                let wait = tick_ms - worker_ctx.clock.now_ms();
                if wait > 0 {
                    tokio::time::sleep(Duration::from_millis(wait as u64)).await;
                }
                run_claimed_tick(worker_ctx.clone(), spec, ticket).await;
                let end_ms = worker_ctx.clock.now_ms();
                let ended = DelayState {
                    last_tick: tick_ms,
                    last_end: Some(end_ms),
                };
                if let Err(error) = worker_ctx.coord.put(&key, write(ended), None).await {
                    tracing::warn!(%key, %error, "cannot record the fixed-delay end");
                }
                addr.do_send(DelayRunEnded { end_ms });
            });
            act.stop_if_done(ctx);
        }));
    }
}

impl Handler<DelayRunEnded> for JobActor {
    type Result = ();

    fn handle(&mut self, DelayRunEnded { end_ms }: DelayRunEnded, ctx: &mut Context<Self>) {
        self.delay_run_in_flight = false;
        match self.delay_ms() {
            Some(delay_ms) => self.arm_delay_tick(end_ms + delay_ms, ctx),
            // The job no longer has a fixed delay: its calendar takes over.
            None => self.arm(self.ctx.clock.now_ms(), ctx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hand_off_rule() {
        let ended = |tick, end| {
            Some(DelayState {
                last_tick: tick,
                last_end: Some(end),
            })
        };
        let started = |tick| {
            Some(DelayState {
                last_tick: tick,
                last_end: None,
            })
        };
        let table = [
            // (state, run in progress, orphan seen since, next);
            // delay 3 s, kill grace 1 s, now 100 s
            (None, false, None, NextRun::At(100_000)),
            (None, true, None, NextRun::At(100_000)),
            (ended(90_000, 95_000), false, None, NextRun::At(98_000)),
            (ended(10_000, 12_000), false, None, NextRun::At(15_000)),
            (ended(90_000, 95_000), true, None, NextRun::At(98_000)),
            (started(99_000), true, None, NextRun::WaitForRun),
            (started(99_000), false, None, NextRun::WaitForRun),
            // Its worker died mid-run: first sight, then within the grace,
            // then after it.
            (started(96_000), false, None, NextRun::WaitForFence),
            (started(96_000), false, Some(99_500), NextRun::WaitForFence),
            (started(96_000), false, Some(99_000), NextRun::At(99_000)),
            (started(10_000), false, Some(90_000), NextRun::At(13_000)),
            // Registered again (a slow registration): wait for its end.
            (started(96_000), true, Some(90_000), NextRun::WaitForRun),
        ];
        for (state, run_in_progress, orphan_since_ms, expected) in table {
            let seen = Seen {
                run_in_progress,
                orphan_since_ms,
            };
            assert_eq!(
                next_run(state, 3_000, 100_000, seen, 1_000),
                expected,
                "{state:?} {seen:?}"
            );
        }
    }
}
