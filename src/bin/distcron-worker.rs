//! `distcron-worker`: the actor runtime that schedules and runs jobs, on
//! etcd (coordinator) and MongoDB (run log).

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use distcron::clock::SystemClock;
use distcron::config::{Role, etcd_options, load_or_exit, mongo_options};
use distcron::coord::etcd::EtcdCoordinator;
use distcron::runlog::mongo::MongoRunLog;
use distcron::worker::{self, WorkerSettings};
use distcron::{logging, signals};

fn main() -> ExitCode {
    distcron::runner::fence::serve_if_asked();
    distcron::cli::server_command_line(
        "distcron-worker",
        "A worker: claims its jobs' ticks and runs them",
    );
    let config = load_or_exit(Role::Worker, "distcron-worker", 1);
    logging::init(&config.log_level, &config.log_format);
    let result = actix_rt::System::new().block_on(async move {
        let coord = EtcdCoordinator::connect(etcd_options(&config))
            .await
            .map_err(|e| format!("etcdEndpoints: {e}"))?;
        if config.etcd_history_secs > 0 {
            let history = Duration::from_secs(config.etcd_history_secs);
            coord.spawn_compactor(history, (history / 10).max(Duration::from_secs(1)));
        }
        let run_log = MongoRunLog::connect(&mongo_options(&config))
            .await
            .map_err(|e| format!("mongodbUri: {e}"))?;
        let mut settings = WorkerSettings::from_config(&config);
        settings.fence_program = std::env::current_exe().ok();
        let worker = worker::start(
            Arc::new(coord),
            Arc::new(run_log),
            settings,
            Arc::new(SystemClock),
        )
        .map_err(|e| format!("starting the worker: {e}"))?;
        signals::shutdown().await;
        worker.stop().await;
        Ok::<(), String>(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("distcron-worker: {e}");
            ExitCode::FAILURE
        }
    }
}
