//! LogBatcher: every run record goes to the local journal first, then to
//! the run log in batches, and leaves the journal only once the run log has
//! acknowledged it. A worker killed at any instant loses nothing it
//! journaled: the next process on the journal ships it.
//!
//! - **Group commit.** Records are framed into a buffer and written to the
//!   journal with one fsync per `commit_every` (a few ms) or per 256 KiB,
//!   whichever comes first.
//! - **Shipping.** A batch leaves when `max_batch` records wait or
//!   `max_delay` after the first one, whichever comes first; one write is in
//!   flight at a time, read from the journal in order. A run's `started`
//!   record and its final one in the same batch become one write
//!   ([`coalesce`]). While the store is down, writes are retried with
//!   exponential backoff; when it is back, the backlog ships back to back.
//! - **Poison.** A record the store refuses for good is set aside in
//!   `dead-letter.jsonl` beside the journal, counted and logged with its run
//!   id; the rest of its batch is stored and nothing behind it waits.
//! - **Open runs of a dead process.** At start, a `pending` or `started`
//!   record left in the journal with no final record after it is closed as
//!   `lost`: its process died with the worker (the fence saw to it).
//! - **A journal that fails** (disk full, I/O error) does not stop runs being
//!   recorded: the records are shipped from memory, up to `memory_max`,
//!   and counted as unjournaled.
//!
//! `Drain` (graceful stop) commits and ships what it can, answers once
//! nothing is left outside the store or the journal, and stops the actor.

use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use super::messages::{Drain, GetCounters, Record};
use crate::runlog::journal::{self, Journal, JournalConfig, Position};
use crate::runlog::{RunLog, RunLogError, RunRecord, RunStatus};

#[derive(Debug, Clone)]
pub struct BatcherConfig {
    /// Ship a batch once it has this many records.
    pub max_batch: usize,
    /// ... or this long after its first record.
    pub max_delay: Duration,
    pub journal: JournalConfig,
    /// The longest a record waits for its fsync (group commit).
    pub commit_every: Duration,
    /// First and longest pause between retries while the store is down.
    pub retry_min: Duration,
    pub retry_max: Duration,
    /// Records per write when catching up on a backlog.
    pub replay_chunk: usize,
    /// Records held in memory when the journal cannot take them; past
    /// this they are dropped (and counted).
    pub memory_max: usize,
}

impl BatcherConfig {
    pub fn new(journal_dir: PathBuf) -> BatcherConfig {
        BatcherConfig {
            max_batch: 100,
            max_delay: Duration::from_secs(1),
            journal: JournalConfig::new(journal_dir),
            commit_every: Duration::from_millis(5),
            retry_min: Duration::from_millis(200),
            retry_max: Duration::from_secs(10),
            replay_chunk: 1000,
            memory_max: 100_000,
        }
    }
}

/// Commit the group at once past this many buffered bytes.
const COMMIT_BYTES: usize = 256 << 10;

/// Upper bounds (ms) of the start-lateness histogram buckets.
pub const LATENESS_BUCKETS_MS: [i64; 10] = [5, 10, 25, 50, 100, 250, 500, 1_000, 5_000, 30_000];

/// What the batcher has done; `/metrics` and tests read the same numbers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct BatcherCounters {
    pub received: u64,
    /// Records written to the journal, and the fsyncs that made them
    /// durable (one per group).
    pub journaled: u64,
    pub fsyncs: u64,
    /// Records written to the store (after coalescing).
    pub flushed: u64,
    /// `started` records folded into their final record before shipping.
    pub coalesced: u64,
    /// Records shipped from memory because the journal could not take them.
    pub unjournaled: u64,
    pub journal_errors: u64,
    /// Records lost: neither the journal nor memory could hold them.
    /// Stays 0 otherwise.
    pub dropped: u64,
    /// Records the store refused for good, kept in `dead-letter.jsonl`.
    pub dead_lettered: u64,
    /// Open runs of an earlier process closed as `lost` at start.
    pub orphans_closed: u64,
    pub batches_written: u64,
    pub store_failures: u64,
    /// Records not yet acknowledged by the store.
    pub queued: u64,
    /// Bytes in the journal.
    pub journal_bytes: u64,
    /// Finished runs received, by final status.
    pub runs_by_status: std::collections::BTreeMap<String, u64>,
    /// Start lateness (start minus planned time) of finished runs: count in
    /// each bucket of [`LATENESS_BUCKETS_MS`] (not cumulative), then the
    /// overflow, plus the sum.
    pub lateness_buckets: Vec<u64>,
    pub lateness_sum_ms: u64,
}

/// Of a batch read in order, one record per run: the one of the highest
/// rank (the first among equals), as the store would keep. Returns the
/// records and how many were folded away. Pure, for table tests.
pub fn coalesce(records: Vec<RunRecord>) -> (Vec<RunRecord>, usize) {
    let before = records.len();
    let mut out: Vec<RunRecord> = Vec::with_capacity(before);
    let mut at: HashMap<String, usize> = HashMap::with_capacity(before);
    for record in records {
        match at.get(&record.run_id) {
            Some(&i) => {
                if record.status.rank() > out[i].status.rank() {
                    out[i] = record;
                }
            }
            None => {
                at.insert(record.run_id.clone(), out.len());
                out.push(record);
            }
        }
    }
    let folded = before - out.len();
    (out, folded)
}

/// The open runs among `records` (in journal order): `pending` or
/// `started` with no final record after them. Pure, for table tests.
pub fn open_runs(records: &[RunRecord]) -> Vec<RunRecord> {
    let mut open: Vec<RunRecord> = Vec::new();
    let mut at: HashMap<&str, usize> = HashMap::new();
    let mut finished: std::collections::HashSet<&str> = Default::default();
    for record in records {
        if record.status.is_final() {
            finished.insert(&record.run_id);
        } else if let Some(&i) = at.get(record.run_id.as_str()) {
            open[i] = record.clone();
        } else {
            at.insert(&record.run_id, open.len());
            open.push(record.clone());
        }
    }
    open.retain(|r| !finished.contains(r.run_id.as_str()));
    open
}

/// The `lost` record that closes an open run of a process that died.
pub fn closed_as_lost(open: &RunRecord, now: i64) -> RunRecord {
    let err = match open.status {
        RunStatus::Pending => "not started: the worker stopped before this retry was due",
        _ => "the worker died during the run (its processes were stopped); the result is unknown",
    };
    RunRecord {
        status: RunStatus::Lost,
        end_time: now.max(open.start_time),
        err: err.into(),
        ..open.clone()
    }
}

/// How a stand-in's `err` begins.
const STAND_IN: &str = "the run log refused this run's record";

/// What the run log gets instead of a record it refused for good: the same
/// run and outcome without its output, saying where the whole record is.
/// `None` for a stand-in, so a refused stand-in is not replaced again.
pub fn stand_in(refused: &RunRecord, reason: &str, kept_in: &str) -> Option<RunRecord> {
    if refused.err.starts_with(STAND_IN) {
        return None;
    }
    let mut reason = reason.to_string();
    crate::runlog::cap_output(&mut reason, 500);
    let mut err = format!(
        "{STAND_IN} ({reason}); it is kept whole in {kept_in} on {}",
        refused.worker
    );
    if !refused.err.is_empty() {
        err = format!("{err}; its error: {}", refused.err);
    }
    crate::runlog::cap_output(&mut err, 4096);
    Some(RunRecord {
        output: String::new(),
        truncated: !refused.output.is_empty() || refused.truncated,
        err,
        ..refused.clone()
    })
}

pub struct LogBatcher {
    store: Arc<dyn RunLog>,
    config: BatcherConfig,
    journal: Journal,
    /// Frames waiting for the group commit, and their records (shipped
    /// from memory if the commit fails).
    commit_frames: Vec<u8>,
    commit_records: Vec<RunRecord>,
    commit_armed: bool,
    /// Records journaled and not yet acknowledged by the store.
    unshipped: u64,
    /// Records the journal could not take, shipped from memory.
    overflow: VecDeque<RunRecord>,
    /// A batch may leave now (its delay passed, or a backlog is draining).
    ship_due: bool,
    ship_armed: bool,
    /// Identifies the armed delay, so a stale one is ignored.
    ship_seq: u64,
    /// A write to the store is in flight.
    writing: bool,
    /// Pause before the next retry; `None` when the store is answering.
    retry: Option<Duration>,
    retry_waiting: bool,
    dead_letter: PathBuf,
    counters: BatcherCounters,
    drains: Vec<oneshot::Sender<BatcherCounters>>,
    /// Told of every record the run log acknowledged (notifications).
    notifier: Option<Recipient<crate::notify::notifier::Observed>>,
}

#[derive(Message)]
#[rtype(result = "()")]
struct CommitDue;

#[derive(Message)]
#[rtype(result = "()")]
struct ShipDue {
    seq: u64,
}

#[derive(Message)]
#[rtype(result = "()")]
struct RetryDue;

/// What one write to the store took from where.
struct Shipment {
    records: Vec<RunRecord>,
    /// How far the journal read went, and how many journal records it held.
    journal_end: Position,
    from_journal: u64,
    from_memory: usize,
}

impl LogBatcher {
    pub fn new(store: Arc<dyn RunLog>, config: BatcherConfig) -> std::io::Result<LogBatcher> {
        let (journal, recovered) = Journal::open(config.journal.clone())?;
        let dead_letter = config.journal.dir.join("dead-letter.jsonl");
        let mut batcher = LogBatcher {
            store,
            journal,
            commit_frames: Vec::new(),
            commit_records: Vec::new(),
            commit_armed: false,
            unshipped: recovered.records,
            overflow: VecDeque::new(),
            ship_due: recovered.records > 0,
            ship_armed: false,
            ship_seq: 0,
            writing: false,
            retry: None,
            retry_waiting: false,
            dead_letter,
            counters: BatcherCounters::default(),
            drains: Vec::new(),
            config,
            notifier: None,
        };
        if recovered.records > 0 {
            tracing::info!(dir = %batcher.config.journal.dir.display(), records = recovered.records, torn_bytes = recovered.torn_bytes, corrupt_bytes = recovered.corrupt_bytes, "shipping run records journaled by an earlier process");
            batcher.close_open_runs()?;
        }
        Ok(batcher)
    }

    /// Tell `notifier` of every record the run log acknowledges.
    pub fn notifying(
        mut self,
        notifier: Option<Recipient<crate::notify::notifier::Observed>>,
    ) -> LogBatcher {
        self.notifier = notifier;
        self
    }

    /// Close, as `lost`, the runs an earlier process journaled as open and
    /// never finished.
    fn close_open_runs(&mut self) -> std::io::Result<()> {
        let mut records = Vec::new();
        let mut from = None;
        loop {
            let read = self.journal.read_from(from, self.config.replay_chunk)?;
            if read.records.is_empty() {
                break;
            }
            records.extend(read.records);
            from = Some(read.end);
        }
        let now = crate::clock::Clock::now_ms(&crate::clock::SystemClock);
        let closing: Vec<RunRecord> = open_runs(&records)
            .iter()
            .map(|open| closed_as_lost(open, now))
            .collect();
        if closing.is_empty() {
            return Ok(());
        }
        tracing::warn!(
            runs = closing.len(),
            "closing runs an earlier process left open as lost"
        );
        let mut frames = Vec::new();
        for record in &closing {
            journal::encode(record, &mut frames)?;
        }
        self.journal.append(&frames)?;
        self.journal.sync()?;
        self.counters.orphans_closed += closing.len() as u64;
        self.counters.journaled += closing.len() as u64;
        self.unshipped += closing.len() as u64;
        Ok(())
    }

    /// Write the buffered group to the journal with one fsync.
    fn commit(&mut self, ctx: &mut Context<Self>) {
        self.commit_armed = false;
        if self.commit_records.is_empty() {
            return;
        }
        let frames = std::mem::take(&mut self.commit_frames);
        let records = std::mem::take(&mut self.commit_records);
        let n = records.len() as u64;
        let written = self
            .journal
            .append(&frames)
            .and_then(|()| self.journal.sync());
        match written {
            Ok(synced) => {
                self.counters.journaled += n;
                self.counters.fsyncs += u64::from(synced);
                self.unshipped += n;
            }
            Err(error) => {
                self.counters.journal_errors += 1;
                let room = self.config.memory_max.saturating_sub(self.overflow.len());
                let kept = records.len().min(room);
                self.counters.dropped += (records.len() - kept) as u64;
                tracing::error!(%error, records = records.len(), dropped = records.len() - kept, "cannot journal run records; holding them in memory");
                self.overflow.extend(records.into_iter().take(kept));
            }
        }
        self.arm_ship(ctx);
        self.pump(ctx);
    }

    fn waiting(&self) -> u64 {
        self.unshipped + self.overflow.len() as u64
    }

    /// Start the delay of a batch that just got its first record.
    fn arm_ship(&mut self, ctx: &mut Context<Self>) {
        if !self.ship_armed && !self.ship_due && self.waiting() > 0 {
            self.ship_armed = true;
            let seq = self.ship_seq;
            ctx.notify_later(ShipDue { seq }, self.config.max_delay);
        }
    }

    /// Start the next write if one may go.
    fn pump(&mut self, ctx: &mut Context<Self>) {
        let waiting = self.waiting();
        let may_ship = !self.writing && !self.retry_waiting && waiting > 0;
        let wants_ship =
            waiting >= self.config.max_batch as u64 || self.ship_due || !self.drains.is_empty();
        if may_ship && wants_ship {
            self.ship(ctx);
        }
        self.answer_drains(ctx);
    }

    fn ship(&mut self, ctx: &mut Context<Self>) {
        // This write takes everything waiting: its delay is spent.
        self.ship_seq += 1;
        self.ship_armed = false;
        let chunk = self.config.replay_chunk.max(self.config.max_batch);
        let read = match self.journal.read(chunk) {
            Ok(read) => read,
            Err(error) => {
                tracing::error!(%error, "cannot read the journal; will retry");
                self.counters.journal_errors += 1;
                self.schedule_retry(ctx);
                return;
            }
        };
        let from_journal = read.records.len() as u64;
        if from_journal == 0 {
            // Nothing readable past the cursor (damage): nothing to wait for.
            self.unshipped = 0;
        }
        let mut records = read.records;
        let from_memory = self.overflow.len().min(chunk);
        records.extend(self.overflow.iter().take(from_memory).cloned());
        let shipment = Shipment {
            records,
            journal_end: read.end,
            from_journal,
            from_memory,
        };
        self.write(shipment, ctx);
    }

    fn write(&mut self, shipment: Shipment, ctx: &mut Context<Self>) {
        let (records, folded) = coalesce(shipment.records);
        self.writing = true;
        let store = self.store.clone();
        let write = async move {
            let result = if records.is_empty() {
                Ok(0)
            } else {
                store.insert_batch(&records).await
            };
            (records, result)
        };
        let done = (
            shipment.journal_end,
            shipment.from_journal,
            shipment.from_memory,
        );
        ctx.spawn(write.into_actor(self).map(move |(records, result), act, ctx| {
            act.writing = false;
            let (journal_end, from_journal, from_memory) = done;
            match result {
                Ok(_) => act.shipped(&records, folded, journal_end, from_journal, from_memory),
                Err(RunLogError::Refused(refusals)) => {
                    for refusal in &refusals {
                        if let Some(record) = records.get(refusal.index) {
                            act.set_aside(record, &refusal.reason);
                            let kept = act.dead_letter.display().to_string();
                            if let Some(stand_in) = stand_in(record, &refusal.reason, &kept) {
                                act.accept(stand_in, ctx);
                            }
                        }
                    }
                    act.shipped(&records, folded, journal_end, from_journal, from_memory);
                }
                Err(error) => {
                    act.counters.store_failures += 1;
                    if act.retry.is_none() {
                        tracing::warn!(%error, records = records.len(), "run log write failed; the records stay in the journal");
                    } else {
                        tracing::debug!(%error, "run log still unavailable");
                    }
                    act.schedule_retry(ctx);
                }
            }
            act.pump(ctx);
        }));
    }

    /// The store acknowledged a shipment: let it go from the journal.
    fn shipped(
        &mut self,
        records: &[RunRecord],
        folded: usize,
        journal_end: Position,
        from_journal: u64,
        from_memory: usize,
    ) {
        if let Err(error) = self.journal.ack(journal_end) {
            tracing::error!(%error, "cannot release shipped records from the journal; they will be shipped again");
        }
        self.overflow.drain(..from_memory.min(self.overflow.len()));
        self.counters.unjournaled += from_memory as u64;
        self.unshipped = self.unshipped.saturating_sub(from_journal);
        self.counters.flushed += records.len() as u64;
        if let Some(notifier) = &self.notifier {
            notifier.do_send(crate::notify::notifier::Observed(records.to_vec()));
        }
        self.counters.coalesced += folded as u64;
        self.counters.batches_written += 1;
        if self.retry.take().is_some() {
            tracing::info!("run log is back; shipping the journal");
        }
        // A backlog ships back to back; an empty queue waits for the next
        // batch's delay.
        self.ship_due = self.waiting() > 0;
    }

    /// Keep a record the store refused for good, apart, and go on.
    fn set_aside(&mut self, record: &RunRecord, reason: &str) {
        self.counters.dead_lettered += 1;
        tracing::error!(run_id = %record.run_id, job = %record.job_name, %reason, path = %self.dead_letter.display(), "the run log refused a record for good; kept in the dead-letter file");
        let line = serde_json::json!({ "reason": reason, "record": record });
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.dead_letter)
            .and_then(|mut file| {
                let mut bytes = line.to_string().into_bytes();
                bytes.push(b'\n');
                file.write_all(&bytes)?;
                file.sync_data()
            });
        if let Err(error) = written {
            tracing::error!(%error, run_id = %record.run_id, "cannot write the dead-letter file; the record is only in this log line: {line}");
        }
    }

    /// Back off exponentially, from `retry_min` up to `retry_max`.
    fn schedule_retry(&mut self, ctx: &mut Context<Self>) {
        let pause = match self.retry {
            None => self.config.retry_min,
            Some(previous) => (previous * 2).min(self.config.retry_max),
        };
        self.retry = Some(pause);
        self.retry_waiting = true;
        ctx.notify_later(RetryDue, pause);
    }

    fn answer_drains(&mut self, ctx: &mut Context<Self>) {
        if self.drains.is_empty() || self.writing || !self.commit_records.is_empty() {
            return;
        }
        // Everything is in the store or the journal; wait for the journal
        // only while the store is answering.
        if self.waiting() > 0 && self.retry.is_none() {
            return;
        }
        let counters = self.snapshot();
        for drain in self.drains.drain(..) {
            let _ = drain.send(counters.clone());
        }
        // Drained means stopped: the journal now belongs to whoever opens
        // it next.
        ctx.stop();
    }

    fn count_run(&mut self, record: &RunRecord) {
        if !record.status.is_final() {
            return;
        }
        *self
            .counters
            .runs_by_status
            .entry(record.status.as_str().to_string())
            .or_default() += 1;
        if matches!(
            record.status,
            RunStatus::Skipped | RunStatus::Lost | RunStatus::Missed
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
        counters.queued = self.waiting() + self.commit_records.len() as u64;
        counters.journal_bytes = self.journal.bytes();
        counters
    }
}

impl Actor for LogBatcher {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Ship whatever an earlier process left in the journal.
        self.pump(ctx);
    }
}

impl Handler<Record> for LogBatcher {
    type Result = ();

    fn handle(&mut self, Record(record): Record, ctx: &mut Context<Self>) {
        self.counters.received += 1;
        self.count_run(&record);
        self.accept(record, ctx);
    }
}

impl LogBatcher {
    /// Journal `record` (at the next group commit) for shipping.
    fn accept(&mut self, record: RunRecord, ctx: &mut Context<Self>) {
        if let Err(error) = journal::encode(&record, &mut self.commit_frames) {
            tracing::error!(%error, run_id = %record.run_id, "cannot encode a run record; holding it in memory");
            self.overflow.push_back(record);
            return;
        }
        self.commit_records.push(record);
        if self.commit_frames.len() >= COMMIT_BYTES {
            self.commit(ctx);
        } else if !self.commit_armed {
            self.commit_armed = true;
            ctx.notify_later(CommitDue, self.config.commit_every);
        }
    }
}

impl Handler<CommitDue> for LogBatcher {
    type Result = ();

    fn handle(&mut self, _: CommitDue, ctx: &mut Context<Self>) {
        if self.commit_armed {
            self.commit(ctx);
        }
    }
}

impl Handler<ShipDue> for LogBatcher {
    type Result = ();

    fn handle(&mut self, ShipDue { seq }: ShipDue, ctx: &mut Context<Self>) {
        if seq != self.ship_seq {
            return;
        }
        self.ship_armed = false;
        self.ship_due = self.waiting() > 0;
        self.pump(ctx);
    }
}

impl Handler<RetryDue> for LogBatcher {
    type Result = ();

    fn handle(&mut self, _: RetryDue, ctx: &mut Context<Self>) {
        self.retry_waiting = false;
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
        self.commit(ctx);
        self.pump(ctx);
        Box::pin(async move { rx.await.unwrap_or_default() })
    }
}

#[cfg(test)]
mod tests;
