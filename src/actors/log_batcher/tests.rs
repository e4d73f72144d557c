//! LogBatcher on virtual time (`tokio::time::pause`) with a fake store.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use super::{BatcherConfig, LogBatcher, stand_in};
use crate::actors::messages::{Drain, GetCounters, Record};
use crate::runlog::fake::FakeRunLog;
use crate::runlog::{RunRecord, RunStatus};

fn record(i: usize) -> RunRecord {
    RunRecord {
        params: Default::default(),
        triggered_by: None,
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
    let config = BatcherConfig::new(dir.path().join("journal"));
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
async fn a_full_batch_goes_without_waiting_for_the_timer() {
    tokio::time::pause();
    let h = start();
    for i in 0..250 {
        h.batcher.do_send(Record(record(i)));
    }
    settle(Duration::from_millis(10)).await;
    assert_eq!(
        h.store.batches(),
        vec![250],
        "past max_batch, one write takes everything journaled"
    );
    let counters = h.batcher.send(GetCounters).await.unwrap();
    assert_eq!(
        (counters.received, counters.journaled, counters.fsyncs),
        (250, 250, 1),
        "one group commit for the burst"
    );
    assert_eq!(
        (counters.flushed, counters.dropped, counters.queued),
        (250, 0, 0)
    );
    assert_eq!(
        counters.journal_bytes, 0,
        "acknowledged records leave the journal"
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
async fn an_outage_keeps_records_in_the_journal_and_ships_them_in_order_once() {
    tokio::time::pause();
    let h = start();
    h.store.set_down(true);
    for i in 0..1000 {
        h.batcher.do_send(Record(record(i)));
    }
    settle(Duration::from_secs(30)).await;
    let during = h.batcher.send(GetCounters).await.unwrap();
    assert_eq!(
        (during.journaled, during.queued),
        (1000, 1000),
        "every record is on disk during the outage"
    );
    assert!(during.journal_bytes > 0);
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
        (
            after.flushed,
            after.dropped,
            after.journal_bytes,
            after.queued
        ),
        (1000, 0, 0, 0)
    );
}

#[actix_rt::test]
async fn records_arriving_during_an_outage_queue_behind_the_older_ones() {
    tokio::time::pause();
    let h = start();
    h.store.set_down(true);
    for i in 0..100 {
        h.batcher.do_send(Record(record(i)));
    }
    settle(Duration::from_millis(10)).await;
    h.store.set_down(false);
    // Arrives before the retry: must not overtake the journaled records.
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
async fn drain_during_an_outage_leaves_everything_in_the_journal_for_the_next_start() {
    tokio::time::pause();
    let h = start();
    h.store.set_down(true);
    for i in 0..10 {
        h.batcher.do_send(Record(record(i)));
    }
    let counters = h.batcher.send(Drain).await.unwrap();
    assert_eq!(
        (counters.journaled, counters.queued, counters.dropped),
        (10, 10, 0)
    );
    assert!(counters.journal_bytes > 0);

    // A new batcher on the same journal ships it once the store is back.
    h.store.set_down(false);
    let config = BatcherConfig::new(h._dir.path().join("journal"));
    let next = LogBatcher::new(h.store.clone(), config).unwrap().start();
    settle(Duration::from_secs(1)).await;
    assert_eq!(h.store.run_ids().len(), 10);
    assert_eq!(next.send(GetCounters).await.unwrap().flushed, 10);
}

fn with_status(i: usize, status: RunStatus) -> RunRecord {
    RunRecord {
        status,
        ..record(i)
    }
}

#[actix_rt::test]
async fn a_poison_record_is_set_aside_and_never_blocks_the_rest() {
    tokio::time::pause();
    let h = start();
    h.store.refuse(&record(5).run_id);
    for i in 0..10 {
        h.batcher.do_send(Record(record(i)));
    }
    settle(Duration::from_secs(2)).await;
    for i in 10..20 {
        h.batcher.do_send(Record(record(i)));
    }
    settle(Duration::from_secs(2)).await;
    let stored = h.store.run_ids();
    assert_eq!(stored.len(), 19, "every record but the poison one");
    assert!(!stored.contains(&record(5).run_id));
    let counters = h.batcher.send(GetCounters).await.unwrap();
    // The record, then its stand-in (refused too: this store refuses the
    // run id), and no further stand-in.
    assert_eq!(
        (
            counters.dead_lettered,
            counters.queued,
            counters.journal_bytes
        ),
        (2, 0, 0)
    );
    let dead = std::fs::read_to_string(h._dir.path().join("journal/dead-letter.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = dead
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["record"]["run_id"], record(5).run_id);
    assert_eq!(lines[0]["record"]["output"], record(5).output);
    assert_eq!(lines[0]["reason"], "refused by the fake store");
    assert_eq!(lines[1]["record"]["output"], "");
}

#[actix_rt::test]
async fn a_record_too_large_for_the_store_leaves_a_stand_in_without_its_output() {
    tokio::time::pause();
    let h = start();
    let mut big = record(1);
    big.output = "x".repeat(2_000);
    h.store.refuse_output_over(1_000);
    h.batcher.do_send(Record(big.clone()));
    h.batcher.do_send(Record(record(2)));
    settle(Duration::from_secs(4)).await;
    let records = h.store.records();
    let stored = records.iter().find(|r| r.run_id == big.run_id).unwrap();
    assert_eq!(
        (
            stored.status,
            stored.exit_code,
            stored.output.as_str(),
            stored.truncated
        ),
        (big.status, big.exit_code, "", true),
        "the outcome stays, the output goes"
    );
    assert!(
        stored.err.contains("dead-letter.jsonl")
            && stored.err.contains("refused by the fake store"),
        "says why and where the whole record is: {}",
        stored.err
    );
    assert!(h.store.run_ids().contains(&record(2).run_id));
    let counters = h.batcher.send(GetCounters).await.unwrap();
    assert_eq!((counters.dead_lettered, counters.received), (1, 2));
    let dead = std::fs::read_to_string(h._dir.path().join("journal/dead-letter.jsonl")).unwrap();
    assert!(dead.contains(&big.output), "the whole record is kept");
}

#[test]
fn a_stand_in_keeps_the_outcome_and_is_never_stood_in_for() {
    let mut refused = record(1);
    refused.output = "big".into();
    refused.err = "exit 3".into();
    let first = stand_in(&refused, "too large", "/j/dead-letter.jsonl").unwrap();
    assert_eq!(first.output, "");
    assert!(first.truncated);
    assert_eq!(
        (first.status, first.exit_code),
        (refused.status, refused.exit_code)
    );
    assert!(first.err.contains("too large") && first.err.contains("/j/dead-letter.jsonl"));
    assert!(first.err.ends_with("its error: exit 3"), "{}", first.err);
    assert_eq!(stand_in(&first, "too large", "/j/dead-letter.jsonl"), None);
}

#[actix_rt::test]
async fn a_started_record_and_its_result_in_one_batch_are_one_write() {
    tokio::time::pause();
    let h = start();
    h.batcher
        .do_send(Record(with_status(1, RunStatus::Started)));
    h.batcher
        .do_send(Record(with_status(1, RunStatus::Succeeded)));
    h.batcher
        .do_send(Record(with_status(2, RunStatus::Started)));
    settle(Duration::from_secs(2)).await;
    assert_eq!(h.store.batches(), vec![2]);
    let records = h.store.records();
    assert_eq!(records[0].status, RunStatus::Succeeded);
    assert_eq!(records[1].status, RunStatus::Started);
    // The long run ends later: its record moves forward.
    h.batcher.do_send(Record(with_status(2, RunStatus::Failed)));
    settle(Duration::from_secs(2)).await;
    assert_eq!(h.store.records()[1].status, RunStatus::Failed);
    let counters = h.batcher.send(GetCounters).await.unwrap();
    assert_eq!(counters.coalesced, 1);
    assert_eq!(
        counters.runs_by_status.values().sum::<u64>(),
        2,
        "finished runs only"
    );
}

#[actix_rt::test]
async fn runs_a_killed_process_left_open_are_closed_as_lost_by_the_next() {
    tokio::time::pause();
    let dir = tempfile::tempdir().unwrap();
    let config = BatcherConfig::new(dir.path().join("journal"));
    {
        // What a worker SIGKILLed mid-run leaves: r1 started, r2 finished,
        // r3 a retry waiting for its backoff.
        let (mut journal, _) =
            crate::runlog::journal::Journal::open(config.journal.clone()).unwrap();
        let mut frames = Vec::new();
        for record in [
            with_status(1, RunStatus::Started),
            with_status(2, RunStatus::Started),
            with_status(2, RunStatus::Succeeded),
            with_status(3, RunStatus::Pending),
        ] {
            crate::runlog::journal::encode(&record, &mut frames).unwrap();
        }
        journal.append(&frames).unwrap();
        journal.sync().unwrap();
    }
    let store = Arc::new(FakeRunLog::default());
    let batcher = LogBatcher::new(store.clone(), config).unwrap().start();
    settle(Duration::from_secs(1)).await;
    let by_id: std::collections::BTreeMap<String, RunRecord> = store
        .records()
        .into_iter()
        .map(|r| (r.run_id.clone(), r))
        .collect();
    assert_eq!(by_id.len(), 3);
    assert_eq!(by_id[&record(1).run_id].status, RunStatus::Lost);
    assert!(by_id[&record(1).run_id].err.contains("died during the run"));
    assert_eq!(by_id[&record(2).run_id].status, RunStatus::Succeeded);
    assert_eq!(by_id[&record(3).run_id].status, RunStatus::Lost);
    assert!(by_id[&record(3).run_id].err.contains("retry"));
    let counters = batcher.send(GetCounters).await.unwrap();
    assert_eq!((counters.orphans_closed, counters.queued), (2, 0));
}

#[test]
fn coalescing_keeps_the_furthest_record_of_each_run() {
    use RunStatus::*;
    // (statuses of one run in arrival order, the one kept)
    let table = [
        (vec![Started, Succeeded], Succeeded),
        (vec![Pending, Started, Failed], Failed),
        (vec![Started], Started),
        (vec![Lost, Succeeded], Succeeded),
        (vec![Succeeded, Lost], Succeeded),
        (vec![Succeeded, Succeeded], Succeeded),
    ];
    for (statuses, kept) in table {
        let n = statuses.len();
        let records: Vec<RunRecord> = statuses.iter().map(|s| with_status(1, *s)).collect();
        let (out, folded) = super::coalesce(records);
        assert_eq!(out.len(), 1, "{statuses:?}");
        assert_eq!((out[0].status, folded), (kept, n - 1), "{statuses:?}");
    }
    let (out, folded) = super::coalesce(vec![record(1), record(2), record(1)]);
    assert_eq!(
        (
            out.iter().map(|r| r.run_id.as_str()).collect::<Vec<_>>(),
            folded
        ),
        (vec!["run-000001", "run-000002"], 1)
    );
}

#[test]
fn open_runs_are_those_with_no_final_record() {
    use RunStatus::*;
    let journal = [
        with_status(1, Started),
        with_status(2, Pending),
        with_status(2, Started),
        with_status(3, Started),
        with_status(3, Killed),
        with_status(4, Succeeded),
    ];
    let open: Vec<(String, RunStatus)> = super::open_runs(&journal)
        .into_iter()
        .map(|r| (r.run_id, r.status))
        .collect();
    assert_eq!(
        open,
        [(record(1).run_id, Started), (record(2).run_id, Started)]
    );
}
