//! The run log is stopped for 30 s while 3,000 run records arrive; after it
//! restarts, all 3,000 are stored exactly once.

mod support;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use actix::Actor;
use distcron::actors::log_batcher::{BatcherConfig, LogBatcher};
use distcron::actors::messages::{Drain, GetCounters, Record};
use distcron::runlog::mongo::{MongoOptions, MongoRunLog};
use distcron::runlog::{RunLog, RunQuery, RunRecord, RunStatus};
use support::mongo::MongoProcess;
use support::{OwnedServer, eventually};

const RECORDS: usize = 3_000;
const OUTAGE: Duration = Duration::from_secs(30);
const JOBS: usize = 30;

fn record(i: usize) -> RunRecord {
    RunRecord {
        params: Default::default(),
        triggered_by: None,
        run_id: format!("outage-{i:05}"),
        job_name: format!("job-{}", i % JOBS),
        command: "true".into(),
        worker: "w1".into(),
        plan_time: i as i64,
        schedule_time: i as i64,
        start_time: i as i64,
        end_time: i as i64 + 1,
        status: RunStatus::Succeeded,
        exit_code: Some(0),
        signal: None,
        output: format!("run {i}\n"),
        truncated: false,
        err: String::new(),
        requested_by: None,
    }
}

#[actix_rt::test]
async fn records_arriving_during_a_30s_outage_are_all_stored_exactly_once() {
    let mut server = MongoProcess::start().await;
    let mut options = MongoOptions::new(&server.uri());
    options.server_selection_timeout = Duration::from_secs(1);
    let store: Arc<dyn RunLog> = Arc::new(MongoRunLog::connect(&options).await.unwrap());
    let journal = tempfile::tempdir().unwrap();
    let mut config = BatcherConfig::new(journal.path().join("journal"));
    config.retry_max = Duration::from_secs(2);
    let batcher = LogBatcher::new(store.clone(), config).unwrap().start();

    server.stop();
    // 3,000 records spread over the 30 s outage.
    let per_tick = RECORDS / 30;
    let mut ticker = tokio::time::interval(OUTAGE / 30);
    for tick in 0..30 {
        ticker.tick().await;
        for i in tick * per_tick..(tick + 1) * per_tick {
            batcher.do_send(Record(record(i)));
        }
    }
    let during = batcher.send(GetCounters).await.unwrap();
    assert_eq!(during.received, RECORDS as u64);
    assert_eq!(
        during.flushed, 0,
        "nothing could be written during the outage"
    );
    server.restart().await;

    let stored = eventually("all records in the store", Duration::from_secs(60), || {
        let store = store.clone();
        async move {
            let n = store.count(None, None).await.ok()?;
            (n == RECORDS as u64).then_some(n)
        }
    })
    .await;
    assert_eq!(stored, RECORDS as u64);

    // Exactly once: read every job's runs back and compare id sets.
    let mut seen = HashSet::new();
    for job in 0..JOBS {
        let page = store
            .page(&RunQuery {
                job_name: format!("job-{job}"),
                status: None,
                skip: 0,
                limit: 1_000,
            })
            .await
            .unwrap();
        assert_eq!(page.len(), RECORDS / JOBS, "job-{job}");
        for run in page {
            assert!(
                seen.insert(run.run_id.clone()),
                "{} stored twice",
                run.run_id
            );
        }
    }
    let expected: HashSet<String> = (0..RECORDS).map(|i| record(i).run_id).collect();
    assert_eq!(seen, expected);

    let counters = batcher.send(Drain).await.unwrap();
    assert_eq!(counters.dropped, 0);
    assert_eq!(counters.journaled, RECORDS as u64);
    assert_eq!(counters.flushed, RECORDS as u64);
    assert_eq!((counters.journal_bytes, counters.queued), (0, 0));
}
