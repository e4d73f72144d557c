//! `distcron`: the whole scheduler in one process (`distcron standalone`),
//! small tools (`schedule`, `token`, `user`) and the API client (`job`,
//! `runs`, `logs`, `export`, `import`, `workers`); see `distcron --help`.

use std::net::TcpListener;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use distcron::cli::{Cli, Command};
use distcron::clock::SystemClock;
use distcron::config::{Role, data_path, load_or_exit, retention};
use distcron::coord::embedded::EmbeddedCoordinator;
use distcron::missed::MissedSweeper;
use distcron::runlog::embedded::EmbeddedRunLog;
use distcron::runlog::{RETENTION_EVERY, spawn_retention};
use distcron::worker::{self, WorkerSettings};
use distcron::{cli, http, logging, signals};

fn main() -> ExitCode {
    distcron::runner::fence::serve_if_asked();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version print and succeed; bad usage exits 2.
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() {
                cli::EXIT_USAGE as u8
            } else {
                0
            });
        }
    };
    match cli.command {
        Command::Standalone { .. } => standalone(),
        Command::Schedule(args) => print_outcome(
            "distcron schedule",
            cli::schedule_command(&args, chrono::Utc::now()),
        ),
        Command::Token { command } => print_outcome(
            "distcron token",
            block_on(cli::auth::token_command(&command.argv(), now_ms())),
        ),
        Command::User { command } => print_outcome(
            "distcron user",
            block_on(cli::auth::user_command(
                &command.argv(),
                || std::io::read_to_string(std::io::stdin()),
                now_ms(),
            )),
        ),
        client => match block_on(cli::run_client(client)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("distcron: {}", e.message);
                ExitCode::from(e.code as u8)
            }
        },
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn block_on<T>(work: impl std::future::Future<Output = T>) -> T {
    actix_rt::System::new().block_on(work)
}

fn print_outcome(program: &str, outcome: Result<Vec<String>, cli::CliError>) -> ExitCode {
    match outcome {
        Ok(lines) => {
            for line in lines {
                println!("{line}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{program}: {}", e.message);
            ExitCode::from(e.code as u8)
        }
    }
}

/// With no admin token configured and none stored, make one, keep it in
/// `<dataDir>/admin.token` (0600) and tell the operator how to sign in.
async fn first_admin_token(
    coord: &dyn distcron::coord::Coordinator,
    config: &distcron::config::Config,
) -> std::io::Result<()> {
    use distcron::auth::tokens;
    if !config.auth_required || !config.admin_token.is_empty() {
        return Ok(());
    }
    let existing = tokens::list(coord).await.map_err(std::io::Error::other)?;
    if !existing.is_empty() {
        return Ok(());
    }
    let request = tokens::NewToken {
        name: "standalone-admin".into(),
        role: distcron::auth::Role::Admin,
        group: None,
        expires: None,
    };
    let created = tokens::create(coord, &request, "standalone", now_ms())
        .await
        .map_err(std::io::Error::other)?;
    let path = data_path(config, "admin.token");
    distcron::datadir::write_private(&path, &format!("{}\n", created.token))?;
    let scheme = if config.tls_cert_file.is_empty() {
        "http"
    } else {
        "https"
    };
    eprintln!(
        "distcron: created an admin token in {}; sign in at {scheme}://{}/ with it, or send it as 'Authorization: Bearer <token>'",
        path.display(),
        config.listen
    );
    Ok(())
}

fn standalone() -> ExitCode {
    let config = load_or_exit(Role::Standalone, "distcron standalone", 2);
    logging::init(&config.log_level, &config.log_format);
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
    let tls = match http::tls_config(&config) {
        Ok(tls) => tls,
        Err(e) => {
            eprintln!("distcron standalone: {e}");
            return ExitCode::from(2);
        }
    };
    tracing::info!(listen = %config.listen, data_dir = %config.data_dir, tls = tls.is_some(), "standalone listening");
    let served = actix_rt::System::new().block_on(async move {
        // Both embedded stores live in dataDir, private to this user; the
        // worker runs in-process.
        let data_dir = std::path::Path::new(&config.data_dir);
        let private = |e: std::io::Error| std::io::Error::other(format!("dataDir: {e}"));
        distcron::datadir::prepare(data_dir).map_err(private)?;
        let coord = EmbeddedCoordinator::open(&data_path(&config, "coordinator.redb"))
            .map_err(|e| std::io::Error::other(format!("dataDir: {e}")))?;
        let run_log = EmbeddedRunLog::open(&data_path(&config, "runs.redb"))
            .map_err(|e| std::io::Error::other(format!("dataDir: {e}")))?;
        distcron::datadir::tighten_files(data_dir).map_err(private)?;
        first_admin_token(&coord, &config).await?;
        let (coord, run_log) = (Arc::new(coord), Arc::new(run_log));
        spawn_retention(run_log.clone(), retention(&config), RETENTION_EVERY);
        let mut settings = WorkerSettings::from_config(&config);
        settings.fence_program = std::env::current_exe().ok();
        // Live output is served from this process's own runs.
        settings.live_listen = None;
        let worker = worker::start(
            coord.clone(),
            run_log.clone(),
            settings,
            Arc::new(SystemClock),
        )?;
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let mut state = http::AppState::new(coord.clone(), run_log.clone())
            .with_config(&config)
            .with_webroot(&config.webroot)
            .with_notifier("standalone");
        state.local_runs = Some(worker.context().running.clone());
        let notifier = state.notifier.clone().map(actix::Addr::recipient);
        let sweeper =
            MissedSweeper::for_manager(coord, run_log, state.jobs.clone(), &config, notifier);
        let server = http::serve(state, listener, tls, async move {
            let _ = stop_rx.await;
        });
        let server = actix_rt::spawn(server);
        signals::shutdown().await;
        worker.stop().await;
        sweeper.stop().await;
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
