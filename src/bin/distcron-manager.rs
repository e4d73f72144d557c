//! `distcron-manager`: the HTTP API and console on etcd and MongoDB.
//! Stateless: run several behind a load balancer.

use std::net::TcpListener;
use std::process::ExitCode;
use std::sync::Arc;

use distcron::config::{Role, etcd_options, load_or_exit, mongo_options, retention};
use distcron::coord::etcd::EtcdCoordinator;
use distcron::missed::MissedSweeper;
use distcron::runlog::mongo::MongoRunLog;
use distcron::runlog::{RETENTION_EVERY, spawn_retention};
use distcron::{http, logging, signals};

fn main() -> ExitCode {
    distcron::cli::server_command_line(
        "distcron-manager",
        "The manager: the HTTP API, the console, and the sweep that records missed ticks",
    );
    let config = load_or_exit(Role::Manager, "distcron-manager", 1);
    logging::init(&config.log_level, &config.log_format);
    let result = actix_rt::System::new().block_on(async move {
        let tls = http::tls_config(&config).map_err(|e| e.to_string())?;
        let listener = TcpListener::bind(&config.listen)
            .map_err(|e| format!("listen: cannot listen on {}: {e}", config.listen))?;
        let coord = EtcdCoordinator::connect(etcd_options(&config))
            .await
            .map_err(|e| format!("etcdEndpoints: {e}"))?;
        let run_log = MongoRunLog::connect(&mongo_options(&config))
            .await
            .map_err(|e| format!("mongodbUri: {e}"))?;
        tracing::info!(listen = %config.listen, "manager listening");
        let (coord, run_log) = (Arc::new(coord), Arc::new(run_log));
        spawn_retention(run_log.clone(), retention(&config), RETENTION_EVERY);
        let state = http::AppState::new(coord.clone(), run_log.clone())
            .with_config(&config)
            .with_webroot(&config.webroot)
            .with_notifier(&format!("manager@{}", config.listen));
        let notifier = state.notifier.clone().map(actix::Addr::recipient);
        let sweeper =
            MissedSweeper::for_manager(coord, run_log, state.jobs.clone(), &config, notifier);
        if config.auth_required && !state.security.tokens.has_admin_token() {
            tracing::info!(
                "no adminToken configured: create tokens with `distcron token create --store etcd`"
            );
        }
        let served = http::serve(state, listener, tls, signals::shutdown()).await;
        sweeper.stop().await;
        served.map_err(|e| e.to_string())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("distcron-manager: {e}");
            ExitCode::FAILURE
        }
    }
}
