//! LockActor: owns the worker's session lease and its keep-alive, claims
//! ticks on that lease, and hands each winning run a [`Ticket`]: the
//! claim, which the run confirms right before it starts, and a liveness
//! token.
//!
//! When the session is lost every token dies at once (they all read the
//! session's deadline), no claim is made until a new session is held, and a
//! new one is requested with backoff. A worker frozen past its lease finds
//! its session dead on the first look after waking, so it claims nothing.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use serde::{Deserialize, Serialize};

use super::context::UnregisterBacklog;
use crate::clock::SharedClock;
use crate::coord::claims::{ClaimPolicy, TickClaim, TickClaims, WonClaim};
use crate::coord::session::{LivenessToken, Session, wait_lost};
use crate::coord::{Coordinator, LeaseId};
use crate::runner::RunningRuns;
use crate::runner::fence::Fence;

/// Forward each new session deadline to the fence, until the session ends.
async fn vouch_to_fence(
    mut alive_until: tokio::sync::watch::Receiver<Option<tokio::time::Instant>>,
    fence: Fence,
) {
    loop {
        let deadline = *alive_until.borrow_and_update();
        let Some(deadline) = deadline else { return };
        fence.alive(deadline.saturating_duration_since(tokio::time::Instant::now()));
        if alive_until.changed().await.is_err() {
            return;
        }
    }
}

/// Pause before asking for a new session after one was lost or refused.
const SESSION_RETRY: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", default)]
pub struct LockCounters {
    pub claims_won: u64,
    pub claims_lost: u64,
    pub claims_refused_no_session: u64,
    pub claim_errors: u64,
    pub sessions_started: u64,
    pub sessions_lost: u64,
}

pub struct LockActor {
    coord: Arc<dyn Coordinator>,
    clock: SharedClock,
    worker_id: String,
    ttl: Duration,
    session: Option<Session>,
    /// Tick claims of the current session (their bucket leases are
    /// independent of it, so they survive a session change).
    claims: Arc<TickClaims>,
    starting: bool,
    counters: LockCounters,
    /// The worker's runs, killed when the session is lost.
    fence: Option<RunningRuns>,
    /// The fence process, told how long each session is good for.
    fence_process: Option<Fence>,
    /// A session lost here but perhaps not yet in etcd: revoked before the
    /// next one starts.
    lost_lease: Option<LeaseId>,
    /// Told of every new session (for looking back at missed ticks).
    sessions: Option<tokio::sync::watch::Sender<u64>>,
    /// Finished runs still registered: unregistered before a revoke.
    backlog: UnregisterBacklog,
}

/// A tick this worker won: its claim, held on the session until
/// [`Ticket::confirm`], and the session's liveness token.
#[derive(Clone)]
pub struct Ticket {
    pub token: LivenessToken,
    pub claim: WonClaim,
    claims: Arc<TickClaims>,
}

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ticket")
            .field("claim", &self.claim)
            .finish()
    }
}

/// What a confirm found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Confirmation {
    /// The claim is ours and marked started: run the tick.
    Confirmed,
    /// The claim is gone or someone else's: the tick is not ours to run.
    NotOurs,
    /// The session ended while no confirm got an answer: one may have
    /// landed. Only a look at the claim once the old session is revoked
    /// can tell.
    Unknown,
}

impl Ticket {
    /// Right before a won tick starts (or is decided, as a skip): mark it
    /// started, if the session still holds it.
    ///
    /// While the session lives the claim is ours and nobody else can run
    /// the tick, so an unanswered confirm (an etcd election, an outage) is
    /// retried until it is answered or the session ends.
    pub async fn confirm(&self, now_ms: i64) -> Confirmation {
        let mut pause = Duration::from_millis(100);
        let mut unanswered = false;
        while self.token.is_alive() {
            match self.claims.confirm(&self.claim, now_ms).await {
                // Confirmed, the tick is ours even if the session ends now:
                // the start checks the token and records why it did not run.
                Ok(true) => return Confirmation::Confirmed,
                Ok(false) => return Confirmation::NotOurs,
                Err(error) => {
                    if !unanswered {
                        tracing::warn!(key = %self.claim.key, %error, "cannot confirm the claim yet; retrying while the session lives");
                        unanswered = true;
                    }
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
            }
        }
        if unanswered {
            Confirmation::Unknown
        } else {
            Confirmation::NotOurs
        }
    }
}

/// The outcome of a claim.
#[derive(Debug, Clone)]
pub enum ClaimOutcome {
    /// This worker runs the tick: confirm the ticket right before starting.
    Won(Ticket),
    /// Another worker holds it.
    Lost { holder: String },
    /// No live session: nothing may be claimed now.
    NoSession,
}

/// Claim `(job, tick_ms)` for this worker.
#[derive(Message)]
#[rtype(result = "Result<ClaimOutcome, String>")]
pub struct ClaimTick {
    pub job: String,
    pub tick_ms: i64,
    /// A chained run's parent run: the claim is keyed by it, not the tick.
    pub after: Option<String>,
}

impl ClaimTick {
    /// A scheduled (or requested) tick of `job`.
    pub fn of(job: &str, tick_ms: i64) -> ClaimTick {
        ClaimTick {
            job: job.to_string(),
            tick_ms,
            after: None,
        }
    }

    fn key(&self) -> String {
        match &self.after {
            Some(parent) => crate::chain::claim_key(&self.job, parent),
            None => crate::coord::claims::tick_key(&self.job, self.tick_ms),
        }
    }
}

/// The current session's lease and a token, if the session is alive.
#[derive(Message)]
#[rtype(result = "Option<(LeaseId, LivenessToken)>")]
pub struct CurrentSession;

/// Graceful stop: revoke the session (its keys go with it) and stop.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Release;

#[derive(Message)]
#[rtype(result = "LockCounters")]
pub struct GetLockCounters;

#[derive(Message)]
#[rtype(result = "()")]
struct SessionLost(LeaseId);

#[derive(Message)]
#[rtype(result = "()")]
struct StartSession;

impl LockActor {
    pub fn new(
        coord: Arc<dyn Coordinator>,
        clock: SharedClock,
        worker_id: String,
        ttl: Duration,
        claim_policy: ClaimPolicy,
    ) -> LockActor {
        let claims = Arc::new(TickClaims::new(coord.clone(), claim_policy));
        LockActor {
            coord,
            clock,
            worker_id,
            ttl,
            session: None,
            claims,
            starting: false,
            counters: LockCounters::default(),
            fence: None,
            fence_process: None,
            lost_lease: None,
            sessions: None,
            backlog: UnregisterBacklog::default(),
        }
    }

    /// The claims this actor makes, for readers of the claim keyspace.
    pub fn claims(&self) -> Arc<TickClaims> {
        self.claims.clone()
    }

    /// Kill these runs when the session is lost: peers then declare them
    /// lost (and may run them again), so none may go on here.
    pub fn fencing(mut self, runs: RunningRuns) -> LockActor {
        self.fence = Some(runs);
        self
    }

    /// Tell `fence` after every acknowledged keep-alive how long the
    /// session is good for: if the worker dies or freezes, the fence kills
    /// its runs when that runs out.
    pub fn with_fence_process(mut self, fence: Option<Fence>) -> LockActor {
        self.fence_process = fence;
        self
    }

    /// Announce each new session on `sessions`; unregister the finished
    /// runs of `backlog` before revoking a lost session.
    pub fn announcing(
        mut self,
        sessions: tokio::sync::watch::Sender<u64>,
        backlog: UnregisterBacklog,
    ) -> LockActor {
        self.sessions = Some(sessions);
        self.backlog = backlog;
        self
    }

    fn alive_session(&self) -> Option<&Session> {
        self.session.as_ref().filter(|s| s.is_alive())
    }
}

impl Actor for LockActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.notify(StartSession);
    }
}

impl Handler<StartSession> for LockActor {
    type Result = ();

    fn handle(&mut self, _: StartSession, ctx: &mut Context<Self>) {
        if self.starting || self.alive_session().is_some() {
            return;
        }
        self.starting = true;
        let (coord, ttl, lost) = (self.coord.clone(), self.ttl, self.lost_lease);
        let backlog = self.backlog.clone();
        ctx.spawn(
            async move {
                // End the lost session in etcd first (etcd may have kept it
                // alive across an outage): its unstarted claims go with it,
                // so looking back for missed ticks finds them free, and peers
                // see this worker's runs of then as lost.
                if let Some(old) = lost {
                    // Finished runs still registered would look lost.
                    backlog.flush(&*coord).await?;
                    coord.revoke(old).await?;
                }
                Session::start(coord, ttl).await
            }
            .into_actor(self)
            .map(move |result, act, ctx| {
                    act.starting = false;
                    if result.is_ok() && act.lost_lease == lost {
                        act.lost_lease = None;
                    }
                    match result {
                        Ok(session) => {
                            tracing::info!(worker = %act.worker_id, lease = session.lease(), "session started");
                            act.counters.sessions_started += 1;
                            let lease = session.lease();
                            if let Some(fence) = act.fence_process.clone() {
                                actix::spawn(vouch_to_fence(session.watch(), fence));
                            }
                            let lost = wait_lost(session.watch());
                            let addr = ctx.address();
                            actix::spawn(async move {
                                lost.await;
                                addr.do_send(SessionLost(lease));
                            });
                            act.session = Some(session);
                            if let Some(sessions) = &act.sessions {
                                sessions.send_modify(|n| *n += 1);
                            }
                        }
                        Err(error) => {
                            tracing::warn!(worker = %act.worker_id, %error, "cannot start a session; retrying");
                            ctx.notify_later(StartSession, SESSION_RETRY);
                        }
                    }
                }),
        );
    }
}

impl Handler<SessionLost> for LockActor {
    type Result = ();

    fn handle(&mut self, SessionLost(lease): SessionLost, ctx: &mut Context<Self>) {
        if self.session.as_ref().map(Session::lease) != Some(lease) {
            return;
        }
        tracing::warn!(worker = %self.worker_id, lease, "session lost: no tick is claimed until a new one is held");
        self.counters.sessions_lost += 1;
        if let Some(runs) = self.fence.as_ref().filter(|r| r.total() > 0) {
            tracing::warn!(worker = %self.worker_id, runs = runs.total(), "killing the runs in progress: without the session they count as lost");
            runs.kill_all("killed: the worker lost its session, so its runs were declared lost");
        }
        self.session = None;
        self.lost_lease = Some(lease);
        ctx.notify_later(StartSession, SESSION_RETRY);
    }
}

impl Handler<ClaimTick> for LockActor {
    type Result = ResponseFuture<Result<ClaimOutcome, String>>;

    fn handle(&mut self, claim: ClaimTick, ctx: &mut Context<Self>) -> Self::Result {
        let Some(session) = self.alive_session() else {
            self.counters.claims_refused_no_session += 1;
            if self.session.is_some() {
                // Alive by the coordinator's last word but past its local
                // deadline (the process was frozen): treat as lost now.
                let lease = self.session.as_ref().map_or(0, Session::lease);
                ctx.notify(SessionLost(lease));
            }
            return Box::pin(async { Ok(ClaimOutcome::NoSession) });
        };
        let (token, lease) = (session.token(), session.lease());
        let claims = self.claims.clone();
        let (worker, now) = (self.worker_id.clone(), self.clock.now_ms());
        let addr = ctx.address();
        Box::pin(async move {
            let result = claims
                .claim_key(claim.key(), claim.tick_ms, &worker, now, lease)
                .await;
            let outcome = match result {
                Ok(TickClaim::Won(won)) => ClaimOutcome::Won(Ticket {
                    token,
                    claim: won,
                    claims,
                }),
                Ok(TickClaim::Held { holder }) => ClaimOutcome::Lost { holder },
                Err(error) => {
                    addr.do_send(CountClaim(None));
                    return Err(error.to_string());
                }
            };
            addr.do_send(CountClaim(Some(matches!(outcome, ClaimOutcome::Won(_)))));
            Ok(outcome)
        })
    }
}

/// Counts a claim's outcome once it is known (`None`: an error).
#[derive(Message)]
#[rtype(result = "()")]
struct CountClaim(Option<bool>);

impl Handler<CountClaim> for LockActor {
    type Result = ();

    fn handle(&mut self, CountClaim(won): CountClaim, _: &mut Context<Self>) {
        match won {
            Some(true) => self.counters.claims_won += 1,
            Some(false) => self.counters.claims_lost += 1,
            None => self.counters.claim_errors += 1,
        }
    }
}

impl Handler<CurrentSession> for LockActor {
    type Result = Option<(LeaseId, LivenessToken)>;

    fn handle(&mut self, _: CurrentSession, _: &mut Context<Self>) -> Self::Result {
        self.alive_session().map(|s| (s.lease(), s.token()))
    }
}

impl Handler<GetLockCounters> for LockActor {
    type Result = MessageResult<GetLockCounters>;

    fn handle(&mut self, _: GetLockCounters, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.counters.clone())
    }
}

impl Handler<Release> for LockActor {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _: Release, _: &mut Context<Self>) -> Self::Result {
        let session = self.session.take();
        Box::pin(
            async move {
                if let Some(session) = session
                    && let Err(error) = session.revoke().await
                {
                    tracing::warn!(%error, "cannot revoke the session; it will expire");
                }
            }
            .into_actor(self)
            .map(|_, _, ctx| ctx.stop()),
        )
    }
}
