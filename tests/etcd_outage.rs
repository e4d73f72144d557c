//! Every etcd member down, long enough for the workers' sessions to end, at
//! the worst instant: half a second after the workers claimed the next
//! second's ticks (claims go a second ahead), so every one of those claims
//! is won and its confirm, due at the tick, gets no answer. Those ticks,
//! and every tick of the outage, must still run exactly once, late.
//!
//! Counted from the ledger the jobs' commands write (executions, not
//! records). chaos found this: such ticks were left to a look back that
//! had already happened, and the managers' sweep recorded them `missed`.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use distcron::job::{Job, Overlap};
use support::OwnedServer;
use support::etcd::EtcdProcess;
use support::fleet::{TTL_SECS, connect, fleet, now_ms};

const JOBS: usize = 20;

/// `(job, tick)` -> how many times the ledger shows it ran.
fn executions(ledger: &std::path::Path) -> BTreeMap<(String, i64), usize> {
    let mut counts = BTreeMap::new();
    for line in std::fs::read_to_string(ledger).unwrap_or_default().lines() {
        let mut parts = line.split(' ');
        if let (Some(job), Some(Ok(tick))) = (parts.next(), parts.next().map(str::parse)) {
            *counts.entry((job.to_string(), tick)).or_default() += 1;
        }
    }
    counts
}

/// Sleep until `offset_ms` past a whole second.
async fn at_millisecond(offset_ms: i64) {
    let wait = (offset_ms - now_ms().rem_euclid(1_000)).rem_euclid(1_000);
    tokio::time::sleep(Duration::from_millis(wait as u64)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ticks_whose_confirm_was_lost_in_an_etcd_outage_run_once_late() {
    let mut etcd = EtcdProcess::start().await;
    let mut fleet = fleet("outage").await;
    fleet.etcd = etcd.endpoint();
    fleet.coord = connect(&fleet.etcd, &fleet.prefix).await;
    let ledger = fleet.data_dir.path().join("ledger");
    let command = format!(
        "echo \"$DISTCRON_JOB $DISTCRON_TICK\" >> {}",
        ledger.display()
    );
    let mut names = Vec::new();
    for i in 0..JOBS {
        let mut job = Job::new(&format!("tick-{i:02}"), &command, "* * * * * *");
        job.overlap = Overlap::Allow;
        fleet.save(&mut job).await;
        names.push(job.name);
    }
    let _workers = [fleet.start("w1"), fleet.start("w2")];
    fleet.wait_registered(2).await;
    let window_start = now_ms() + 2_000;
    tokio::time::sleep(Duration::from_secs(5)).await;

    // Down at x.5 s: the claims of tick x+1 are won, its confirms are not.
    at_millisecond(500).await;
    let outage_start = now_ms();
    etcd.stop();
    tokio::time::sleep(Duration::from_secs(3 * TTL_SECS as u64)).await;
    etcd.restart().await;
    let outage_end = now_ms();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let window_end = now_ms();

    // Late runs of the outage's ticks follow once the sessions are back.
    let planned: Vec<(String, i64)> = names
        .iter()
        .flat_map(|job| {
            let first = window_start.div_euclid(1_000) + 1;
            (first..=window_end.div_euclid(1_000)).map(move |s| (job.clone(), s * 1_000))
        })
        .collect();
    let give_up = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let ran = executions(&ledger);
        let never: Vec<_> = planned.iter().filter(|t| !ran.contains_key(*t)).collect();
        let twice: Vec<_> = ran.iter().filter(|(_, n)| **n > 1).collect();
        assert!(
            twice.is_empty(),
            "{} ticks ran more than once: {:?}",
            twice.len(),
            twice.iter().take(10).collect::<Vec<_>>()
        );
        if never.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < give_up,
            "60 s after the outage ({outage_start}..{outage_end}), {} of {} planned ticks never ran: {:?}",
            never.len(),
            planned.len(),
            never.iter().take(20).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
