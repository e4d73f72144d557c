//! The `distcron` command line (clap): the scheduler (`standalone`), local
//! tools (`schedule`, `token`, `user`) and the API client (`job`, `runs`,
//! `logs`, `export`, `import`, `workers`), as library functions so they are
//! tested without spawning processes.

pub mod auth;
pub mod client;
pub mod commands;

use chrono::{DateTime, SecondsFormat, Utc};
use clap::{Args, Parser, Subcommand};

use crate::schedule::{Schedule, parse_time_zone};

/// A command-line failure: the process exits with `code` after printing
/// `message` on one line.
#[derive(Debug, PartialEq, Eq)]
pub struct CliError {
    pub code: i32,
    pub message: String,
}

/// Exit status for bad input (a bad expression, a bad flag).
pub const EXIT_USAGE: i32 = 2;

fn usage(message: impl Into<String>) -> CliError {
    CliError {
        code: EXIT_USAGE,
        message: message.into(),
    }
}

/// `distcron schedule '<expr>'`: the next fire times of an expression.
#[derive(Args, Debug)]
pub struct ScheduleArgs {
    /// The cron expression, quoted as one argument.
    #[arg(required = true, num_args = 1..)]
    pub expr: Vec<String>,
    /// List fire times after this RFC 3339 instant (default: now).
    #[arg(long)]
    pub after: Option<String>,
    /// How many fire times, 1 to 10000.
    #[arg(long, default_value = "5")]
    pub count: String,
    /// The IANA time zone the expression reads wall-clock times in.
    #[arg(long, default_value = "UTC")]
    pub tz: String,
    /// Resolve `H` as it is for the job of this name.
    #[arg(long)]
    pub name: Option<String>,
}

/// The next fire instants, one RFC 3339 UTC timestamp per line.
pub fn schedule_command(args: &ScheduleArgs, now: DateTime<Utc>) -> Result<Vec<String>, CliError> {
    let expr = match args.expr.as_slice() {
        [expr] => expr,
        [_, extra, ..] => {
            return Err(usage(format!(
                "unexpected argument '{extra}'; quote the expression"
            )));
        }
        [] => return Err(usage("the expression is required")),
    };
    let after = match &args.after {
        Some(text) => DateTime::parse_from_rfc3339(text)
            .map_err(|e| usage(format!("--after: '{text}' is not an RFC 3339 time: {e}")))?
            .with_timezone(&Utc),
        None => now,
    };
    let count: usize = args
        .count
        .parse()
        .ok()
        .filter(|n| (1..=10_000).contains(n))
        .ok_or_else(|| {
            usage(format!(
                "--count: '{}' is not a number from 1 to 10000",
                args.count
            ))
        })?;
    let tz = parse_time_zone(&args.tz).map_err(|e| usage(format!("--tz: {e}")))?;
    let schedule = match &args.name {
        Some(name) => Schedule::parse_for_job(expr, tz, name),
        None => Schedule::parse(expr, tz),
    }
    .map_err(|e| usage(format!("cronExpr: {e}")))?;
    if let Some(note) = schedule.explain() {
        return Ok(vec![note]);
    }
    Ok(schedule
        .upcoming(after, count)
        .iter()
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true))
        .collect())
}

/// How configuration reaches a server (for `--help`).
const CONFIG_HELP: &str = "Configuration keys are flags in kebab case (--listen 127.0.0.1:8070, --data-dir DIR, --config FILE, --print-config), DISTCRON_* variables, or a file; see docs/configuration.md.";

/// The command line of `distcron-manager` and `distcron-worker`: `--help`
/// and `--version` from clap (printed, then exit), every other flag left
/// to the configuration loader.
pub fn server_command_line(name: &'static str, about: &'static str) {
    clap::Command::new(name)
        .version(env!("CARGO_PKG_VERSION"))
        .about(about)
        .after_help(CONFIG_HELP)
        .arg(
            clap::Arg::new("config")
                .num_args(0..)
                .trailing_var_arg(true)
                .allow_hyphen_values(true)
                .value_name("--KEY VALUE"),
        )
        .get_matches();
}

/// Every `distcron` command.
#[derive(Parser, Debug)]
#[command(
    name = "distcron",
    version,
    about = "A distributed cron: every scheduled tick runs exactly once",
    after_help = "Exit codes of the client commands: 0 done, 1 refused by the server, 2 bad usage, 3 not found, 4 no or bad credentials, 5 server unreachable (docs/cli.md)."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the whole scheduler on one machine (console and API on --listen).
    #[command(after_help = CONFIG_HELP)]
    Standalone {
        /// Configuration flags, passed to the configuration loader.
        #[arg(
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "--KEY VALUE"
        )]
        config: Vec<String>,
    },
    /// Print the next fire times of a cron expression.
    Schedule(ScheduleArgs),
    /// Manage API tokens in the coordinator (a stopped standalone's, or etcd).
    Token {
        #[command(subcommand)]
        command: auth::TokenCommand,
    },
    /// Manage console users.
    User {
        #[command(subcommand)]
        command: auth::UserCommand,
    },
    /// List, show, save, delete, run, pause, resume and kill jobs.
    Job {
        #[command(flatten)]
        connection: commands::Connection,
        #[command(subcommand)]
        command: commands::JobCommand,
    },
    /// A job's runs, newest first.
    Runs {
        #[command(flatten)]
        connection: commands::Connection,
        job: String,
        /// Only runs that ended so (succeeded, failed, timed_out, killed, lost, skipped).
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: u64,
    },
    /// A run's output; --follow prints it live while the run goes on.
    Logs {
        #[command(flatten)]
        connection: commands::Connection,
        run: String,
        #[arg(long, short = 'f')]
        follow: bool,
    },
    /// Every job as one JSON document on stdout.
    Export {
        #[command(flatten)]
        connection: commands::Connection,
    },
    /// Apply an export document: checked whole, then all or nothing.
    Import {
        #[command(flatten)]
        connection: commands::Connection,
        /// The document (`-` for stdin).
        file: String,
        /// Show what would be created, changed and deleted; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Delete the jobs the document does not hold.
        #[arg(long)]
        prune: bool,
    },
    /// The live workers and their load.
    Workers {
        #[command(flatten)]
        connection: commands::Connection,
    },
}

/// Run a client command: its output printed, or the error.
pub async fn run_client(command: Command) -> Result<(), CliError> {
    let (json, output) = match command {
        Command::Job {
            connection,
            command,
        } => (
            connection.json,
            commands::job(&connection.client()?, command).await?,
        ),
        Command::Runs {
            connection,
            job,
            status,
            limit,
        } => {
            let client = connection.client()?;
            let out = commands::runs(&client, &job, status.as_deref(), limit).await?;
            (connection.json, out)
        }
        Command::Logs {
            connection,
            run,
            follow: true,
        } => return commands::follow(&connection.client()?, &run, connection.json).await,
        Command::Logs {
            connection, run, ..
        } => (
            connection.json,
            commands::logs(&connection.client()?, &run).await?,
        ),
        Command::Export { connection } => (
            connection.json,
            commands::export(&connection.client()?).await?,
        ),
        Command::Import {
            connection,
            file,
            dry_run,
            prune,
        } => {
            let client = connection.client()?;
            let out = commands::import(&client, &file, dry_run, prune).await?;
            (connection.json, out)
        }
        Command::Workers { connection } => (
            connection.json,
            commands::workers(&connection.client()?).await?,
        ),
        other => return Err(usage(format!("{other:?} is not a client command"))),
    };
    output.print(json);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<Vec<String>, CliError> {
        let argv = ["distcron", "schedule"].iter().chain(args);
        let cli = Cli::try_parse_from(argv).map_err(|e| usage(e.to_string()))?;
        let Command::Schedule(args) = cli.command else {
            panic!("not a schedule command");
        };
        schedule_command(&args, DateTime::from_timestamp(0, 0).unwrap())
    }

    #[test]
    fn mondays_from_the_issue() {
        assert_eq!(
            run(&[
                "0 0 * * 1",
                "--after",
                "2026-01-01T00:00:00Z",
                "--count",
                "2"
            ])
            .unwrap(),
            ["2026-01-05T00:00:00Z", "2026-01-12T00:00:00Z"]
        );
    }

    #[test]
    fn friday_or_thirteenth_from_the_issue() {
        assert_eq!(
            run(&["0 0 13 * FRI", "--after=2026-01-01T00:00:00Z", "--count=3"]).unwrap(),
            [
                "2026-01-02T00:00:00Z",
                "2026-01-09T00:00:00Z",
                "2026-01-13T00:00:00Z"
            ]
        );
    }

    #[test]
    fn name_resolves_h_as_for_that_job() {
        assert_eq!(
            run(&[
                "H * * * *",
                "--name",
                "backup",
                "--after",
                "2026-01-01T00:00:00Z",
                "--count",
                "1"
            ])
            .unwrap(),
            ["2026-01-01T00:37:00Z"]
        );
        let without = run(&["H * * * *"]).unwrap_err().message;
        assert!(without.contains("--name"), "{without}");
    }

    #[test]
    fn fixed_delay_is_explained_instead_of_listed() {
        assert_eq!(
            run(&["@delay 30s"]).unwrap(),
            [
                "fixed delay: each run starts 30s after the previous run ends, so the next time depends on the run"
            ]
        );
    }

    #[test]
    fn time_zone_flag_and_default_count() {
        let out = run(&[
            "0 9 * * *",
            "--after",
            "2026-01-01T00:00:00Z",
            "--tz",
            "Asia/Tokyo",
        ])
        .unwrap();
        assert_eq!(out.len(), 5);
        // 09:00 JST is 00:00Z; the one on 1 January is not strictly after.
        assert_eq!(out[0], "2026-01-02T00:00:00Z");
    }

    #[test]
    fn never_firing_expression_exits_2_naming_the_problem() {
        let err = run(&["0 0 30 2 *"]).unwrap_err();
        assert_eq!(err.code, EXIT_USAGE);
        assert_eq!(
            err.message,
            "cronExpr: the expression never fires (no calendar date matches it)"
        );
    }

    #[test]
    fn bad_flags_exit_2() {
        assert_eq!(
            run(&["@daily", "--count", "0"]).unwrap_err().code,
            EXIT_USAGE
        );
        assert!(
            run(&["@daily", "--after", "yesterday"])
                .unwrap_err()
                .message
                .starts_with("--after:")
        );
        assert!(
            run(&["@daily", "--tz", "Nowhere"])
                .unwrap_err()
                .message
                .starts_with("--tz: unknown time zone")
        );
        assert!(
            run(&["0", "0", "*", "*", "*"])
                .unwrap_err()
                .message
                .contains("quote the expression")
        );
        assert!(run(&[]).unwrap_err().message.contains("required"));
    }
}
