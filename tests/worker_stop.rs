//! `Worker::stop` ends everything the worker started: its actors, their
//! watches, its runs and its fence process.

use std::sync::Arc;
use std::time::Duration;

use distcron::clock::SystemClock;
use distcron::coord::Coordinator;
use distcron::coord::embedded::EmbeddedCoordinator;
use distcron::job::{Job, Overlap};
use distcron::runlog::embedded::EmbeddedRunLog;
use distcron::worker::{self, WorkerSettings};

/// Processes whose parent is this test process and whose command line has
/// `needle`.
fn children_with(needle: &str) -> Vec<i32> {
    let me = std::process::id().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let parent = stat
                .rsplit_once(") ")
                .and_then(|(_, rest)| rest.split(' ').nth(1));
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            parent == Some(me.as_str()) && String::from_utf8_lossy(&cmdline).contains(needle)
        })
        .collect()
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[actix_rt::test]
async fn a_stopped_worker_leaves_no_actor_watch_run_or_fence_behind() {
    let dir = tempfile::tempdir().unwrap();
    let embedded = EmbeddedCoordinator::in_memory();
    let coord: Arc<dyn Coordinator> = Arc::new(embedded.clone());
    let now = chrono::Utc::now().timestamp_millis();
    let mut quick = Job::new("quick", "true", "* * * * * *");
    let mut long = Job::new("long", "sleep 600", "* * * * * *");
    long.overlap = Overlap::Allow;
    for job in [&mut quick, &mut long] {
        job.updated_at = Some(now);
        coord
            .put(
                &format!("jobs/{}", job.name),
                serde_json::to_vec(&*job).unwrap(),
                None,
            )
            .await
            .unwrap();
    }
    let config = distcron::config::Config {
        data_dir: dir.path().display().to_string(),
        worker_id: "stopper".into(),
        stop_grace_secs: 1,
        kill_grace_ms: 200,
        ..Default::default()
    };
    let mut settings = WorkerSettings::from_config(&config);
    settings.fence_program = Some(env!("CARGO_BIN_EXE_distcron").into());
    let worker = worker::start(
        coord.clone(),
        Arc::new(EmbeddedRunLog::open(&dir.path().join("runs.redb")).unwrap()),
        settings,
        Arc::new(SystemClock),
    )
    .unwrap();
    // The fence is spawned at start; its command line shows once it execs.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while children_with("__fence").is_empty() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        children_with("__fence").len(),
        1,
        "the worker's fence is running"
    );
    let running = worker.context().running.clone();
    wait_for("long runs in progress", || running.count("long") >= 2).await;
    assert!(embedded.watchers() > 0, "the worker follows the keyspace");

    let stopped = worker.stop().await;
    assert!(
        stopped.still_running.is_empty(),
        "{:?}",
        stopped.still_running
    );
    assert_eq!(running.total(), 0, "every run ended");
    assert!(
        children_with("sleep 600").is_empty(),
        "no run's process is left"
    );
    wait_for("every watch to close", || embedded.watchers() == 0).await;
    // With no run left to guard, the fence exits as soon as its input ends.
    let since = std::time::Instant::now();
    wait_for("the fence to exit", || children_with("__fence").is_empty()).await;
    assert!(
        since.elapsed() < Duration::from_secs(2),
        "the fence waited {:?} with nothing to guard",
        since.elapsed()
    );
    assert_eq!(
        coord.list("workers/").await.unwrap().0.len(),
        0,
        "it left the membership"
    );
}
