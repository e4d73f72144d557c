//! LogBatcher: collects run records and writes them to the run log in
//! batches, losing none.
//!
//! A batch is written when it reaches `max_batch` records or `max_delay`
//! after its first record, whichever comes first (the timer starts with the
//! first record and a stale timer of an earlier batch is ignored). Batches
//! are written one at a time, in order. When the store fails, the batch goes
//! to the spool file and the spool is retried with exponential backoff; while
//! anything is spooled, new batches are appended behind it, so records reach
//! the store in the order they arrived. Inserts are idempotent on `run_id`,
//! so a replay that repeats a record after a crash stores it once.
//!
//! `Drain` (graceful stop) writes or spools everything in memory, answers
//! when nothing is left outside the store or the spool file, and stops the
//! actor.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use super::messages::{Drain, GetCounters, Record};
use crate::runlog::spool::Spool;
use crate::runlog::{RunLog, RunRecord};

#[derive(Debug, Clone)]
pub struct BatcherConfig {
    /// Write a batch once it has this many records.
    pub max_batch: usize,
    /// ... or this long after its first record.
    pub max_delay: Duration,
    pub spool_path: PathBuf,
    /// Records that do not fit are dropped (and logged as an error).
    pub spool_max_bytes: u64,
    /// First and longest pause between retries while the store is down.
    pub retry_min: Duration,
    pub retry_max: Duration,
    /// Records per write when replaying the spool.
    pub replay_chunk: usize,
}

impl BatcherConfig {
    pub fn new(spool_path: PathBuf) -> BatcherConfig {
        BatcherConfig {
            max_batch: 100,
            max_delay: Duration::from_secs(1),
            spool_path,
            spool_max_bytes: 1 << 30,
            retry_min: Duration::from_millis(200),
            retry_max: Duration::from_secs(10),
            replay_chunk: 1000,
        }
    }
}

/// Upper bounds (ms) of the start-lateness histogram buckets.
pub const LATENESS_BUCKETS_MS: [i64; 10] = [5, 10, 25, 50, 100, 250, 500, 1_000, 5_000, 30_000];

/// What the batcher has done; `/metrics` and tests read the same numbers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct BatcherCounters {
    pub received: u64,
    /// Records written straight from memory.
    pub flushed: u64,
    /// Records written to the spool file.
    pub spooled: u64,
    /// Records written to the store from the spool.
    pub replayed: u64,
    /// Records lost because the spool was full. Stays 0 otherwise.
    pub dropped: u64,
    pub batches_written: u64,
    pub store_failures: u64,
    /// Records in memory, not yet written or spooled.
    pub queued: u64,
    /// Bytes in the spool waiting for the store.
    pub spool_bytes: u64,
    /// Records received, by run status.
    pub runs_by_status: std::collections::BTreeMap<String, u64>,
    /// Start lateness (start minus planned time) of started runs: count in
    /// each bucket of [`LATENESS_BUCKETS_MS`] (not cumulative), then the
    /// overflow, plus the sum.
    pub lateness_buckets: Vec<u64>,
    pub lateness_sum_ms: u64,
}

pub struct LogBatcher {
    store: Arc<dyn RunLog>,
    config: BatcherConfig,
    /// The batch being filled.
    filling: Vec<RunRecord>,
    /// Identifies the batch being filled, so a stale timer is ignored.
    batch_seq: u64,
    timer: Option<SpawnHandle>,
    /// Full batches waiting to be written, oldest first.
    ready: VecDeque<Vec<RunRecord>>,
    /// A write to the store is in flight.
    writing: bool,
    spool: Spool,
    /// Pause before the next retry of the spool; `None` when no retry is
    /// scheduled.
    retry: Option<Duration>,
    retry_due: bool,
    counters: BatcherCounters,
    drains: Vec<oneshot::Sender<BatcherCounters>>,
}

/// The flush timer of batch `seq` fired.
#[derive(Message)]
#[rtype(result = "()")]
struct FlushDue {
    seq: u64,
}

/// Time to retry the spool.
#[derive(Message)]
#[rtype(result = "()")]
struct RetryDue;

impl LogBatcher {
    pub fn new(store: Arc<dyn RunLog>, config: BatcherConfig) -> std::io::Result<LogBatcher> {
        let spool = Spool::open(&config.spool_path, config.spool_max_bytes)?;
        if !spool.is_empty() {
            tracing::info!(path = %config.spool_path.display(), bytes = spool.pending_bytes(), "replaying run records spooled by an earlier process");
        }
        Ok(LogBatcher {
            store,
            config,
            filling: Vec::new(),
            batch_seq: 0,
            timer: None,
            ready: VecDeque::new(),
            writing: false,
            spool,
            retry: None,
            retry_due: true,
            counters: BatcherCounters::default(),
            drains: Vec::new(),
        })
    }

    /// Close the batch being filled and queue it for writing.
    fn close_batch(&mut self, ctx: &mut Context<Self>) {
        if let Some(timer) = self.timer.take() {
            ctx.cancel_future(timer);
        }
        self.batch_seq += 1;
        if !self.filling.is_empty() {
            self.ready.push_back(std::mem::take(&mut self.filling));
        }
        self.pump(ctx);
    }

    /// Start the next write, if none is in flight: the spool first (it holds
    /// the oldest records), then ready batches.
    fn pump(&mut self, ctx: &mut Context<Self>) {
        if self.writing {
            return;
        }
        if !self.spool.is_empty() {
            // Keep arrival order: behind a non-empty spool, batches queue on disk.
            while let Some(batch) = self.ready.pop_front() {
                self.spool_batch(&batch);
            }
            if self.retry_due {
                self.replay_spool(ctx);
            }
        } else if let Some(batch) = self.ready.pop_front() {
            self.write_batch(batch, ctx);
        }
        self.answer_drains(ctx);
    }

    fn write_batch(&mut self, batch: Vec<RunRecord>, ctx: &mut Context<Self>) {
        self.writing = true;
        let store = self.store.clone();
        let write = async move {
            let result = store.insert_batch(&batch).await;
            (batch, result)
        };
        ctx.spawn(write.into_actor(self).map(|(batch, result), act, ctx| {
            act.writing = false;
            match result {
                Ok(_) => {
                    act.counters.flushed += batch.len() as u64;
                    act.counters.batches_written += 1;
                }
                Err(error) => {
                    act.counters.store_failures += 1;
                    tracing::warn!(%error, records = batch.len(), "run log write failed; spooling");
                    act.spool_batch(&batch);
                    act.schedule_retry(ctx);
                }
            }
            act.pump(ctx);
        }));
    }

    fn replay_spool(&mut self, ctx: &mut Context<Self>) {
        let (records, offset) = match self.spool.read_next(self.config.replay_chunk) {
            Ok(read) => read,
            Err(error) => {
                tracing::error!(%error, path = %self.config.spool_path.display(), "cannot read the spool; will retry");
                self.schedule_retry(ctx);
                return;
            }
        };
        if records.is_empty() {
            // Nothing readable past the cursor: the file was cut short
            // (by hand, or a crash mid-write). Start the spool afresh rather
            // than retry forever.
            tracing::warn!(path = %self.config.spool_path.display(), "spool has nothing readable left; resetting it");
            if let Err(error) = self.spool.reset() {
                tracing::error!(%error, "cannot reset the spool");
                self.schedule_retry(ctx);
            }
            return;
        }
        self.writing = true;
        let store = self.store.clone();
        let write = async move { store.insert_batch(&records).await.map(|_| records.len()) };
        ctx.spawn(write.into_actor(self).map(move |result, act, ctx| {
            act.writing = false;
            match result {
                Ok(n) => {
                    if let Err(error) = act.spool.advance(offset) {
                        tracing::error!(%error, "cannot advance the spool; its records will be replayed again");
                    }
                    act.counters.replayed += n as u64;
                    act.counters.batches_written += 1;
                    act.retry = None;
                    if act.spool.is_empty() {
                        tracing::info!(replayed = act.counters.replayed, "run log is back; spool replayed");
                    }
                }
                Err(error) => {
                    act.counters.store_failures += 1;
                    tracing::debug!(%error, "run log still unavailable");
                    act.schedule_retry(ctx);
                }
            }
            act.pump(ctx);
        }));
    }

    fn spool_batch(&mut self, batch: &[RunRecord]) {
        match self.spool.append(batch) {
            Ok(appended) => {
                self.counters.spooled += appended.stored as u64;
                if appended.dropped > 0 {
                    self.counters.dropped += appended.dropped as u64;
                    tracing::error!(
                        dropped = appended.dropped,
                        max_bytes = self.config.spool_max_bytes,
                        "run log spool is full: run records dropped"
                    );
                }
            }
            Err(error) => {
                self.counters.dropped += batch.len() as u64;
                tracing::error!(%error, dropped = batch.len(), "cannot write the spool: run records dropped");
            }
        }
    }

    /// Back off exponentially, from `retry_min` up to `retry_max`.
    fn schedule_retry(&mut self, ctx: &mut Context<Self>) {
        let pause = match self.retry {
            None => self.config.retry_min,
            Some(previous) => (previous * 2).min(self.config.retry_max),
        };
        self.retry = Some(pause);
        self.retry_due = false;
        ctx.notify_later(RetryDue, pause);
    }

    fn answer_drains(&mut self, ctx: &mut Context<Self>) {
        if self.drains.is_empty()
            || self.writing
            || !self.ready.is_empty()
            || !self.filling.is_empty()
        {
            return;
        }
        // Everything is in the store or in the spool file. Wait for the
        // spool only while the store is answering (no retry pending).
        if !self.spool.is_empty() && self.retry.is_none() {
            return;
        }
        let counters = self.snapshot();
        for drain in self.drains.drain(..) {
            let _ = drain.send(counters.clone());
        }
        // Drained means stopped: the spool file now belongs to whoever
        // opens it next.
        ctx.stop();
    }

    fn count_run(&mut self, record: &RunRecord) {
        *self
            .counters
            .runs_by_status
            .entry(record.status.as_str().to_string())
            .or_default() += 1;
        if matches!(
            record.status,
            crate::runlog::RunStatus::Skipped | crate::runlog::RunStatus::Lost
        ) {
            return;
        }
        let lateness = (record.start_time - record.plan_time).max(0);
        let buckets = &mut self.counters.lateness_buckets;
        buckets.resize(LATENESS_BUCKETS_MS.len() + 1, 0);
        let index = LATENESS_BUCKETS_MS
            .iter()
            .position(|bound| lateness <= *bound)
            .unwrap_or(LATENESS_BUCKETS_MS.len());
        buckets[index] += 1;
        self.counters.lateness_sum_ms += lateness as u64;
    }

    fn snapshot(&self) -> BatcherCounters {
        let mut counters = self.counters.clone();
        counters.queued =
            (self.filling.len() + self.ready.iter().map(Vec::len).sum::<usize>()) as u64;
        counters.spool_bytes = self.spool.pending_bytes();
        counters
    }
}

impl Actor for LogBatcher {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Replay whatever an earlier process left in the spool.
        self.pump(ctx);
    }
}

impl Handler<Record> for LogBatcher {
    type Result = ();

    fn handle(&mut self, Record(record): Record, ctx: &mut Context<Self>) {
        self.counters.received += 1;
        self.count_run(&record);
        self.filling.push(record);
        if self.filling.len() >= self.config.max_batch {
            self.close_batch(ctx);
        } else if self.filling.len() == 1 {
            let seq = self.batch_seq;
            self.timer = Some(ctx.notify_later(FlushDue { seq }, self.config.max_delay));
        }
    }
}

impl Handler<FlushDue> for LogBatcher {
    type Result = ();

    fn handle(&mut self, due: FlushDue, ctx: &mut Context<Self>) {
        if due.seq == self.batch_seq {
            self.timer = None;
            self.close_batch(ctx);
        }
    }
}

impl Handler<RetryDue> for LogBatcher {
    type Result = ();

    fn handle(&mut self, _: RetryDue, ctx: &mut Context<Self>) {
        self.retry_due = true;
        self.pump(ctx);
    }
}

impl Handler<GetCounters> for LogBatcher {
    type Result = MessageResult<GetCounters>;

    fn handle(&mut self, _: GetCounters, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.snapshot())
    }
}

impl Handler<Drain> for LogBatcher {
    type Result = ResponseFuture<BatcherCounters>;

    fn handle(&mut self, _: Drain, ctx: &mut Context<Self>) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        self.drains.push(tx);
        self.close_batch(ctx);
        Box::pin(async move { rx.await.unwrap_or_default() })
    }
}

#[cfg(test)]
mod tests;
