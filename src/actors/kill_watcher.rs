//! KillWatcher: watches `kill/` and ends this worker's runs of the named
//! job: SIGTERM to each run's process group, SIGKILL after the grace
//! (the runner does the signalling); the runs end as `killed`.

use actix::prelude::*;
use serde::Serialize;

use super::context::WorkerContext;
use crate::coord::{WatchEvent, WatchItem};

/// Pause before re-listing after the watch failed.
const RETRY: std::time::Duration = std::time::Duration::from_secs(1);

#[derive(Debug, Clone, Default, Serialize, serde::Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", default)]
pub struct KillCounters {
    pub requests_seen: u64,
    pub runs_killed: u64,
}

pub struct KillWatcher {
    ctx: WorkerContext,
    generation: u64,
    counters: KillCounters,
}

#[derive(Message)]
#[rtype(result = "()")]
struct Watch;

#[derive(Message)]
#[rtype(result = "()")]
struct Seen {
    generation: u64,
    item: Option<WatchItem>,
}

#[derive(Message)]
#[rtype(result = "KillCounters")]
pub struct GetKillCounters;

impl KillWatcher {
    pub fn new(ctx: WorkerContext) -> KillWatcher {
        KillWatcher {
            ctx,
            generation: 0,
            counters: KillCounters::default(),
        }
    }
}

impl Actor for KillWatcher {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.notify(Watch);
    }
}

impl Handler<Watch> for KillWatcher {
    type Result = ();

    fn handle(&mut self, _: Watch, ctx: &mut Context<Self>) {
        self.generation += 1;
        let (coord, addr, generation) = (self.ctx.coord.clone(), ctx.address(), self.generation);
        actix::spawn(async move {
            // Only requests made from now on matter: a request older than a
            // restart of this watcher found no run of ours to kill anyway.
            let stream = match coord.list("kill/").await {
                Ok((_, revision)) => coord.watch("kill/", revision + 1).await,
                Err(error) => Err(error),
            };
            let mut stream = match stream {
                Ok(stream) => stream,
                Err(error) => {
                    tracing::warn!(%error, "cannot watch kill requests; retrying");
                    addr.do_send(Seen {
                        generation,
                        item: None,
                    });
                    return;
                }
            };
            loop {
                let item = stream.recv().await;
                let end = !matches!(item, Some(WatchItem::Events(_)));
                addr.do_send(Seen { generation, item });
                if end {
                    return;
                }
            }
        });
    }
}

impl Handler<Seen> for KillWatcher {
    type Result = ();

    fn handle(&mut self, seen: Seen, ctx: &mut Context<Self>) {
        if seen.generation != self.generation {
            return;
        }
        match seen.item {
            Some(WatchItem::Events(events)) => {
                for event in events {
                    if let WatchEvent::Put(kv) = event {
                        let job = kv.key.trim_start_matches("kill/");
                        self.counters.requests_seen += 1;
                        let killed = self.ctx.running.kill(job, "killed by request");
                        self.counters.runs_killed += killed as u64;
                        if killed > 0 {
                            tracing::info!(job, runs = killed, "kill request: ending runs");
                        }
                    }
                }
            }
            _ => {
                ctx.notify_later(Watch, RETRY);
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
