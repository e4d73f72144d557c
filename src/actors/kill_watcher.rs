//! KillWatcher: watches `kill/` and ends this worker's runs of the named
//! job: SIGTERM to each run's process group, SIGKILL after the grace
//! (the runner does the signalling); the runs end as `killed`.

use actix::prelude::*;
use serde::Serialize;

use super::context::WorkerContext;
use crate::coord::WatchEvent;
use crate::coord::follow::{Followed, Follower, follow};
use crate::keyspace;

#[derive(Debug, Clone, Default, Serialize, serde::Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", default)]
pub struct KillCounters {
    pub requests_seen: u64,
    pub runs_killed: u64,
}

pub struct KillWatcher {
    ctx: WorkerContext,
    follower: Option<Follower>,
    counters: KillCounters,
}

#[derive(Message)]
#[rtype(result = "()")]
struct Seen(Followed);

#[derive(Message)]
#[rtype(result = "KillCounters")]
pub struct GetKillCounters;

impl KillWatcher {
    pub fn new(ctx: WorkerContext) -> KillWatcher {
        KillWatcher {
            ctx,
            follower: None,
            counters: KillCounters::default(),
        }
    }
}

impl Actor for KillWatcher {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let addr = ctx.address();
        self.follower = Some(follow(
            self.ctx.coord.clone(),
            &[keyspace::KILLS],
            move |seen| {
                if !addr.connected() {
                    return false;
                }
                addr.do_send(Seen(seen));
                true
            },
        ));
    }
}

impl Handler<Seen> for KillWatcher {
    type Result = ();

    fn handle(&mut self, Seen(seen): Seen, _: &mut Context<Self>) {
        // Only requests made from now on matter: one listed at a (re)start
        // found no run of ours to kill when it was made.
        let Followed::Changed(_, events) = seen else {
            return;
        };
        for event in events {
            if let WatchEvent::Put(kv) = event {
                let job = keyspace::name_in(&kv.key, keyspace::KILLS);
                self.counters.requests_seen += 1;
                let killed = self.ctx.running.kill(job, "killed by request");
                self.counters.runs_killed += killed as u64;
                if killed > 0 {
                    tracing::info!(job, runs = killed, "kill request: ending runs");
                }
            }
        }
    }
}

impl Handler<GetKillCounters> for KillWatcher {
    type Result = MessageResult<GetKillCounters>;

    fn handle(&mut self, _: GetKillCounters, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.counters.clone())
    }
}
