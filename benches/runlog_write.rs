//! Run records per second written through the log batcher, to the embedded
//! store and to the MongoDB-wire server. Not a test: it prints figures.
//!
//! Run: `scripts/bench.sh runlog_write` (starts a fresh MongoDB-wire server),
//! or `MONGODB_URI=... cargo bench --bench runlog_write`.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::Actor;
use distcron::actors::log_batcher::{BatcherConfig, LogBatcher};
use distcron::actors::messages::{Drain, Record};
use distcron::runlog::embedded::EmbeddedRunLog;
use distcron::runlog::mongo::{MongoOptions, MongoRunLog};
use distcron::runlog::{RunLog, RunRecord, RunStatus};

const RECORDS: usize = 20_000;

fn record(engine: &str, i: usize) -> RunRecord {
    RunRecord {
        params: Default::default(),
        triggered_by: None,
        run_id: format!("{engine}-{i:07}"),
        job_name: format!("job-{}", i % 10_000),
        command: "true".into(),
        worker: "bench-worker".into(),
        plan_time: 1_700_000_000_000 + i as i64,
        schedule_time: 1_700_000_000_000 + i as i64,
        start_time: 1_700_000_000_001 + i as i64,
        end_time: 1_700_000_000_002 + i as i64,
        status: RunStatus::Succeeded,
        exit_code: Some(0),
        signal: None,
        // A typical short job's output.
        output: "2026-01-01T00:00:00Z backup finished: 42 files, 3.1 MiB\n".into(),
        truncated: false,
        err: String::new(),
        requested_by: None,
    }
}

async fn measure(engine: &str, store: Arc<dyn RunLog>) {
    let spool = tempfile::tempdir().expect("temp dir");
    let config = BatcherConfig::new(spool.path().join("journal"));
    let batcher = LogBatcher::new(store.clone(), config)
        .expect("open spool")
        .start();
    let start = Instant::now();
    for i in 0..RECORDS {
        batcher.do_send(Record(record(engine, i)));
    }
    let counters = batcher.send(Drain).await.expect("drain");
    let elapsed = start.elapsed();
    let stored = store.count(None, None).await.expect("count");
    println!(
        "{engine:>9}: {RECORDS} records in {:.2} s = {:.0} records/s ({} batches, {} fsyncs, stored {stored}, dropped {})",
        elapsed.as_secs_f64(),
        RECORDS as f64 / elapsed.as_secs_f64(),
        counters.batches_written,
        counters.fsyncs,
        counters.dropped
    );
}

#[actix_rt::main]
async fn main() {
    if !support::requested() {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let embedded = EmbeddedRunLog::open(&dir.path().join("runs.redb")).expect("open redb");
    measure("embedded", Arc::new(embedded)).await;
    match std::env::var("MONGODB_URI") {
        Ok(uri) => {
            let mut options = MongoOptions::new(&uri);
            options.database = format!("bench_{}", std::process::id());
            options.server_selection_timeout = Duration::from_secs(5);
            let mongo = MongoRunLog::connect(&options).await.expect("connect");
            measure("mongodb", Arc::new(mongo)).await;
        }
        Err(_) => {
            eprintln!("mongodb: skipped, set MONGODB_URI (scripts/bench.sh runlog_write does)")
        }
    }
}
