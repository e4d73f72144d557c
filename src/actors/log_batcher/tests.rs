//! LogBatcher on virtual time (`tokio::time::pause`) with a fake store.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use super::{BatcherConfig, LogBatcher};
use crate::actors::messages::{Drain, GetCounters, Record};
use crate::runlog::fake::FakeRunLog;
use crate::runlog::{RunRecord, RunStatus};

fn record(i: usize) -> RunRecord {
    RunRecord {
        run_id: format!("run-{i:06}"),
        job_name: format!("job-{}", i % 7),
        command: "true".into(),
        worker: "w1".into(),
        plan_time: i as i64,
        schedule_time: i as i64,
        start_time: i as i64,
        end_time: i as i64,
        status: RunStatus::Succeeded,
        exit_code: Some(0),
        signal: None,
        output: String::new(),
        truncated: false,
        err: String::new(),
        requested_by: None,
    }
}

struct Harness {
    store: Arc<FakeRunLog>,
    batcher: Addr<LogBatcher>,
    _dir: tempfile::TempDir,
}

fn start() -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(FakeRunLog::default());
    let config = BatcherConfig::new(dir.path().join("spool.jsonl"));
    let batcher = LogBatcher::new(store.clone(), config).unwrap().start();
    Harness {
        store,
        batcher,
        _dir: dir,
    }
}

/// Let spawned writes and timers run, in virtual time.
async fn settle(by: Duration) {
    tokio::time::sleep(by).await;
}

#[actix_rt::test]
async fn a_full_batch_is_written_without_waiting_for_the_timer() {
    tokio::time::pause();
    let h = start();
    for i in 0..250 {
        h.batcher.do_send(Record(record(i)));
    }
    settle(Duration::from_millis(1)).await;
    assert_eq!(
        h.store.batches(),
        vec![100, 100],
        "two full batches, the rest waits"
    );
    settle(Duration::from_secs(1)).await;
    assert_eq!(
        h.store.batches(),
        vec![100, 100, 50],
        "the remainder after max_delay"
    );
    let counters = h.batcher.send(GetCounters).await.unwrap();
    assert_eq!(
        (counters.received, counters.flushed, counters.dropped),
        (250, 250, 0)
    );
}

#[actix_rt::test]
async fn the_timer_starts_with_the_first_record_of_a_batch() {
    tokio::time::pause();
    let h = start();
    h.batcher.do_send(Record(record(0)));
    settle(Duration::from_millis(600)).await;
    h.batcher.do_send(Record(record(1)));
    settle(Duration::from_millis(300)).await;
    assert!(
        h.store.batches().is_empty(),
        "900 ms after the first record: not yet"
    );
    settle(Duration::from_millis(150)).await;
    assert_eq!(
        h.store.batches(),
        vec![2],
        "1 s after the first record, both go"
    );
}

#[actix_rt::test]
async fn a_stale_timer_does_not_cut_the_next_batch_short() {
    tokio::time::pause();
    let h = start();
    // Batch 1 fills up at t=0 (its timer is cancelled).
    for i in 0..100 {
        h.batcher.do_send(Record(record(i)));
    }
    settle(Duration::from_millis(500)).await;
    // Batch 2 starts at t=0.5 s: its timer fires at 1.5 s, not at 1 s.
    h.batcher.do_send(Record(record(100)));
    settle(Duration::from_millis(700)).await;
    assert_eq!(h.store.batches(), vec![100]);
    settle(Duration::from_millis(400)).await;
    assert_eq!(h.store.batches(), vec![100, 1]);
}

#[actix_rt::test]
async fn an_outage_spools_and_replays_in_order_without_duplicates() {
    tokio::time::pause();
    let h = start();
    h.store.set_down(true);
    for i in 0..1000 {
        h.batcher.do_send(Record(record(i)));
    }
    settle(Duration::from_secs(30)).await;
    let during = h.batcher.send(GetCounters).await.unwrap();
    assert_eq!(
        during.spooled, 1000,
        "every record is on disk during the outage"
    );
    assert!(
        during.store_failures >= 2,
        "the store was retried: {during:?}"
    );
    assert!(h.store.run_ids().is_empty());

    h.store.set_down(false);
    settle(Duration::from_secs(11)).await;
    let expected: Vec<String> = (0..1000).map(|i| record(i).run_id).collect();
    assert_eq!(
        h.store.run_ids(),
        expected,
        "all records, once each, in arrival order"
    );
    let after = h.batcher.send(GetCounters).await.unwrap();
    assert_eq!(
        (after.replayed, after.dropped, after.spool_bytes),
        (1000, 0, 0)
    );
}

#[actix_rt::test]
async fn records_arriving_behind_a_spool_queue_behind_it() {
    tokio::time::pause();
    let h = start();
    h.store.set_down(true);
    for i in 0..100 {
        h.batcher.do_send(Record(record(i)));
    }
    settle(Duration::from_millis(10)).await;
    h.store.set_down(false);
    // Arrives before the retry: must not overtake the spooled records.
    for i in 100..200 {
        h.batcher.do_send(Record(record(i)));
    }
    settle(Duration::from_secs(5)).await;
    let expected: Vec<String> = (0..200).map(|i| record(i).run_id).collect();
    assert_eq!(h.store.run_ids(), expected);
}

#[actix_rt::test]
async fn drain_writes_what_is_left() {
    tokio::time::pause();
    let h = start();
    for i in 0..42 {
        h.batcher.do_send(Record(record(i)));
    }
    let counters = h.batcher.send(Drain).await.unwrap();
    assert_eq!((counters.flushed, counters.queued), (42, 0));
    assert_eq!(h.store.run_ids().len(), 42);
}

#[actix_rt::test]
async fn drain_during_an_outage_leaves_everything_in_the_spool_for_the_next_start() {
    tokio::time::pause();
    let h = start();
    h.store.set_down(true);
    for i in 0..10 {
        h.batcher.do_send(Record(record(i)));
    }
    let counters = h.batcher.send(Drain).await.unwrap();
    assert_eq!(
        (counters.spooled, counters.queued, counters.dropped),
        (10, 0, 0)
    );
    assert!(counters.spool_bytes > 0);

    // A new batcher on the same spool replays it once the store is back.
    h.store.set_down(false);
    let config = BatcherConfig::new(h._dir.path().join("spool.jsonl"));
    let next = LogBatcher::new(h.store.clone(), config).unwrap().start();
    settle(Duration::from_secs(1)).await;
    assert_eq!(h.store.run_ids().len(), 10);
    assert_eq!(next.send(GetCounters).await.unwrap().replayed, 10);
}
