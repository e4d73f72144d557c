//! Small command-line tools of the `distcron` binary, as library functions
//! so they are tested without spawning processes.

pub mod auth;

use chrono::{DateTime, SecondsFormat, Utc};

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

pub const SCHEDULE_USAGE: &str = "usage: distcron schedule '<expr>' [--after <RFC 3339>] [--count N] [--tz <zone>] [--name <job>]";

/// `distcron schedule '<expr>' [--after T] [--count N] [--tz ZONE] [--name JOB]`:
/// the next N fire instants, one RFC 3339 UTC timestamp per line. `--name`
/// resolves `H` as it is for that job.
pub fn schedule_command(args: &[String], now: DateTime<Utc>) -> Result<Vec<String>, CliError> {
    let mut expr = None;
    let (mut after, mut count, mut zone) = (now, 5usize, "UTC".to_string());
    let mut name: Option<String> = None;
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
            _ => (arg.as_str(), None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| iter.next().cloned())
                .ok_or_else(|| usage(format!("{flag} needs a value; {SCHEDULE_USAGE}")))
        };
        match flag {
            "--after" => {
                let text = value()?;
                after = DateTime::parse_from_rfc3339(&text)
                    .map_err(|e| usage(format!("--after: '{text}' is not an RFC 3339 time: {e}")))?
                    .with_timezone(&Utc);
            }
            "--count" => {
                let text = value()?;
                count = text
                    .parse()
                    .ok()
                    .filter(|n| (1..=10_000).contains(n))
                    .ok_or_else(|| {
                        usage(format!("--count: '{text}' is not a number from 1 to 10000"))
                    })?;
            }
            "--tz" => zone = value()?,
            "--name" => name = Some(value()?),
            "-h" | "--help" => return Err(usage(SCHEDULE_USAGE)),
            other if other.starts_with("--") => {
                return Err(usage(format!("unknown option {other}; {SCHEDULE_USAGE}")));
            }
            _ if expr.is_none() => expr = Some(arg.clone()),
            _ => {
                return Err(usage(format!(
                    "unexpected argument '{arg}'; quote the expression. {SCHEDULE_USAGE}"
                )));
            }
        }
    }
    let expr = expr.ok_or_else(|| usage(SCHEDULE_USAGE))?;
    let tz = parse_time_zone(&zone).map_err(|e| usage(format!("--tz: {e}")))?;
    let schedule = match &name {
        Some(name) => Schedule::parse_for_job(&expr, tz, name),
        None => Schedule::parse(&expr, tz),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<Vec<String>, CliError> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
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
        assert!(run(&[]).unwrap_err().message.starts_with("usage:"));
    }
}
