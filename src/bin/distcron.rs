//! `distcron`: the whole scheduler in one process (`distcron standalone`)
//! and small tools (`distcron schedule EXPR` prints next fire times).

use std::net::TcpListener;
use std::process::ExitCode;
use std::sync::Arc;

use distcron::clock::SystemClock;
use distcron::config::{Role, data_path, load_or_exit, retention};
use distcron::coord::embedded::EmbeddedCoordinator;
use distcron::runlog::embedded::EmbeddedRunLog;
use distcron::runlog::{RETENTION_EVERY, spawn_retention};
use distcron::worker::{self, WorkerSettings};
use distcron::{cli, http, logging, signals};

const USAGE: &str = "usage: distcron <command>

commands:
  standalone [--key value ...]   run the scheduler on one machine (console on --listen)
  schedule '<expr>' [--after <RFC 3339>] [--count N] [--tz <zone>]
                                 print the next fire times of a cron expression";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("schedule") => match cli::schedule_command(&args[1..], chrono::Utc::now()) {
            Ok(lines) => {
                for line in lines {
                    println!("{line}");
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("distcron schedule: {}", e.message);
                ExitCode::from(e.code as u8)
            }
        },
        Some("standalone") => standalone(),
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(cli::EXIT_USAGE as u8)
        }
    }
}

fn standalone() -> ExitCode {
    let config = load_or_exit(Role::Standalone, "distcron standalone", 2);
    logging::init(&config.log_level);
    let listener = match TcpListener::bind(&config.listen) {
        Ok(l) => l,
        Err(e) => {
            eprintln!(
                "distcron standalone: cannot listen on {}: {e}",
                config.listen
            );
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(listen = %config.listen, data_dir = %config.data_dir, "standalone listening");
    let served = actix_rt::System::new().block_on(async move {
        // Both embedded stores live in dataDir; the worker runs in-process.
        let coord = EmbeddedCoordinator::open(&data_path(&config, "coordinator.redb"))
            .map_err(|e| std::io::Error::other(format!("dataDir: {e}")))?;
        let run_log = EmbeddedRunLog::open(&data_path(&config, "runs.redb"))
            .map_err(|e| std::io::Error::other(format!("dataDir: {e}")))?;
        let (coord, run_log) = (Arc::new(coord), Arc::new(run_log));
        spawn_retention(run_log.clone(), retention(&config), RETENTION_EVERY);
        let settings = WorkerSettings::from_config(&config);
        let worker = worker::start(
            coord.clone(),
            run_log.clone(),
            settings,
            Arc::new(SystemClock),
        )?;
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let state = http::AppState::new(coord, run_log).with_webroot(&config.webroot);
        let server = http::serve(state, listener, async move {
            let _ = stop_rx.await;
        });
        let server = actix_rt::spawn(server);
        signals::shutdown().await;
        worker.stop().await;
        let _ = stop_tx.send(());
        server.await.map_err(std::io::Error::other)?
    });
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("distcron standalone: {e}");
            ExitCode::FAILURE
        }
    }
}
