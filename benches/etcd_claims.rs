//! Tick claims per second against a real etcd, and the live key count they
//! leave behind. Not a test: it prints figures for the README.
//!
//! Run: `scripts/bench.sh etcd_claims` (starts a fresh etcd), or
//! `ETCD_ENDPOINTS=127.0.0.1:2379 cargo bench --bench etcd_claims`.
//!
//! Three modes, 100,000 claims each, from one process with 64 claims in flight:
//! - `bucketed`: claims on shared bucket leases (how workers claim), with a
//!   short bucket and retention so expiry happens during the run;
//! - `unleased`: the same claims with no lease, so every key stays live:
//!   what the keyspace would do without expiry;
//! - `bucketed+compactor`: bucketed, with distcron's compactor keeping 5 s
//!   of etcd history, as workers run it.
//!
//! Each prints claims/s for every 10,000 claims (to show any slowdown as keys
//! and tombstones accumulate) and the live key count at the end.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use distcron::coord::claims::{ClaimPolicy, TickClaim, TickClaims};
use distcron::coord::etcd::{EtcdCoordinator, EtcdOptions};
use distcron::coord::{Claim, Coordinator};
use etcd_client::GetOptions;

const CLAIMS: usize = 100_000;
const CHUNK: usize = 10_000;
const IN_FLIGHT: usize = 64;
const JOBS: usize = 10_000;

#[tokio::main]
async fn main() {
    if !support::requested() {
        return;
    }
    let Ok(endpoints) = std::env::var("ETCD_ENDPOINTS") else {
        eprintln!("etcd_claims: set ETCD_ENDPOINTS (scripts/bench.sh etcd_claims does)");
        return;
    };
    let endpoints: Vec<String> = endpoints.split(',').map(String::from).collect();
    for mode in ["bucketed", "unleased", "bucketed+compactor"] {
        let prefix = format!("/bench-{mode}/");
        let coord = EtcdCoordinator::connect(EtcdOptions::new(endpoints.clone(), &prefix))
            .await
            .expect("connect to etcd");
        let compactor = mode
            .ends_with("compactor")
            .then(|| coord.spawn_compactor(Duration::from_secs(5), Duration::from_secs(1)));
        run(mode, coord).await;
        if let Some(task) = compactor {
            task.abort();
        }
    }
}

async fn run(mode: &str, coord: EtcdCoordinator) {
    let client = coord.client();
    let prefix = format!("/bench-{mode}/");
    let coord: Arc<dyn Coordinator> = Arc::new(coord);
    // Short buckets so that, within a run of a few tens of seconds, old
    // claims expire the way minute buckets do over hours.
    let claims = Arc::new(TickClaims::new(
        coord.clone(),
        ClaimPolicy {
            bucket: Duration::from_secs(2),
            retention: Duration::from_secs(3),
        },
    ));
    // The bench's "session": long enough for the whole run.
    let session = coord
        .grant(Duration::from_secs(600))
        .await
        .expect("session lease");
    let next = Arc::new(AtomicUsize::new(0));
    let won = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let epoch_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64;
    let mut chunk_start = Instant::now();
    let mut reported = 0;
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..IN_FLIGHT {
        let (claims, coord, next, won) = (claims.clone(), coord.clone(), next.clone(), won.clone());
        let mode = mode.to_string();
        workers.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= CLAIMS {
                    return;
                }
                // Ticks advance with real time, one per job per round, as
                // 10,000 jobs firing would.
                let job = format!("job-{}", i % JOBS);
                let now_ms = epoch_ms + start.elapsed().as_millis() as i64;
                let tick_ms = now_ms - now_ms % 1000 + (i / JOBS) as i64;
                // Bucketed: the worker's two steps, claim on the session
                // then confirm at the start.
                let winner = if mode.starts_with("bucketed") {
                    match claims
                        .claim(&job, tick_ms, "bench", now_ms, session)
                        .await
                        .expect("claim")
                    {
                        TickClaim::Won(ticket) => {
                            claims.confirm(&ticket, now_ms).await.expect("confirm")
                        }
                        TickClaim::Held { .. } => false,
                    }
                } else {
                    let key = format!("ticks/{job}/{tick_ms}");
                    let result = coord.put_if_absent(&key, b"bench".to_vec(), None).await;
                    matches!(result.expect("claim"), Claim::Won { .. })
                };
                if winner {
                    won.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    println!("mode {mode}: {CLAIMS} claims, {IN_FLIGHT} in flight");
    while !workers.is_empty() {
        tokio::select! {
            _ = workers.join_next() => {}
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
        let done = next.load(Ordering::Relaxed).min(CLAIMS);
        while done >= reported + CHUNK {
            reported += CHUNK;
            let rate = CHUNK as f64 / chunk_start.elapsed().as_secs_f64();
            let live = live_keys(&client, &prefix).await;
            println!("  claims {reported:>7}: {rate:>8.0} claims/s, live keys {live}");
            chunk_start = Instant::now();
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let status = client.clone().status().await.expect("etcd status");
    println!(
        "  total: {:.0} claims/s over {elapsed:.1} s, won {}, live keys at end {}, etcd db size {:.1} MiB",
        CLAIMS as f64 / elapsed,
        won.load(Ordering::Relaxed),
        live_keys(&client, &prefix).await,
        status.db_size() as f64 / (1024.0 * 1024.0)
    );
}

async fn live_keys(client: &etcd_client::Client, prefix: &str) -> i64 {
    client
        .clone()
        .get(
            prefix,
            Some(GetOptions::new().with_prefix().with_count_only()),
        )
        .await
        .map(|r| r.count())
        .unwrap_or(-1)
}
