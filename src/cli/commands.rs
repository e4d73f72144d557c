//! `distcron job|runs|logs|export|import|workers`: the API from a shell.
//! Tables for people, `--json` for scripts; the exit codes are in
//! [`super::client`] and docs/cli.md.

use std::collections::BTreeMap;
use std::io::Write;

use chrono::{DateTime, SecondsFormat};
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::CliError;
use super::client::Client;

/// Where the API is and who is asking; every client command takes these.
#[derive(Args, Debug, Clone)]
pub struct Connection {
    /// The manager (or standalone) to talk to.
    #[arg(
        long,
        env = "DISTCRON_URL",
        default_value = "http://127.0.0.1:8070",
        global = true
    )]
    pub url: String,
    /// An API token (`distcron token create`).
    #[arg(long, env = "DISTCRON_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// A file holding the token, such as a standalone's `<dataDir>/admin.token`.
    #[arg(long, env = "DISTCRON_TOKEN_FILE", global = true)]
    pub token_file: Option<std::path::PathBuf>,
    /// Print the API's JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

impl Connection {
    pub fn client(&self) -> Result<Client, CliError> {
        let token = match (&self.token, &self.token_file) {
            (Some(token), _) => token.clone(),
            (None, Some(path)) => std::fs::read_to_string(path)
                .map_err(|e| usage(format!("--token-file {}: {e}", path.display())))?
                .trim()
                .to_string(),
            (None, None) => {
                return Err(CliError {
                    code: super::client::EXIT_CREDENTIALS,
                    message: "no credentials: pass --token or --token-file, or set DISTCRON_TOKEN"
                        .into(),
                });
            }
        };
        Ok(Client::new(&self.url, &token))
    }
}

fn usage(message: impl Into<String>) -> CliError {
    CliError {
        code: super::EXIT_USAGE,
        message: message.into(),
    }
}

#[derive(Subcommand, Debug)]
pub enum JobCommand {
    /// List every job.
    List,
    /// Show one job: definition, next fire times, last run, chains.
    Get { name: String },
    /// Create or replace a job from a JSON file (`-` for stdin).
    Save {
        #[arg(short = 'f', long = "file")]
        file: String,
    },
    /// Delete a job.
    Delete { name: String },
    /// Run a job now, once, with optional env overrides.
    Run {
        name: String,
        /// An env override for this run only, `KEY=VALUE` (repeatable).
        #[arg(long = "env", value_name = "KEY=VALUE")]
        env: Vec<String>,
    },
    /// Stop firing a job (its definition is kept).
    Pause { name: String },
    /// Fire a paused job again.
    Resume { name: String },
    /// Kill every run of a job in progress.
    Kill { name: String },
}

/// What a command prints: lines for people, or the JSON for `--json`.
pub struct Output {
    pub human: Vec<String>,
    pub json: Value,
}

impl Output {
    fn new(human: Vec<String>, json: Value) -> Output {
        Output { human, json }
    }

    pub fn print(&self, as_json: bool) {
        let mut out = std::io::stdout().lock();
        if as_json {
            let _ = writeln!(
                out,
                "{}",
                serde_json::to_string_pretty(&self.json).unwrap_or_default()
            );
        } else {
            for line in &self.human {
                let _ = writeln!(out, "{line}");
            }
        }
    }
}

/// Columns padded to their widest cell, the last one left ragged. Pure.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> Vec<String> {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let last = cells.len().saturating_sub(1);
        cells
            .into_iter()
            .enumerate()
            .map(|(i, c)| {
                if i == last {
                    c
                } else {
                    format!("{c:<width$}", width = widths[i])
                }
            })
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    std::iter::once(line(header.iter().map(|h| h.to_string()).collect()))
        .chain(rows.iter().map(|r| line(r.clone())))
        .collect()
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// An epoch-ms field as RFC 3339 UTC.
fn when(v: &Value) -> String {
    v.as_i64()
        .and_then(DateTime::from_timestamp_millis)
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true))
        .unwrap_or_default()
}

fn short(s: &str, max: usize) -> String {
    let one_line = s.replace('\n', " ");
    if one_line.chars().count() <= max {
        return one_line;
    }
    let cut: String = one_line.chars().take(max.saturating_sub(1)).collect();
    format!("{cut}…")
}

fn name_body(name: &str) -> Value {
    json!({ "name": name })
}

fn query_value(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `KEY=VALUE` pairs into a map; the first without `=` is an error.
pub fn parse_env(pairs: &[String]) -> Result<BTreeMap<String, String>, CliError> {
    pairs
        .iter()
        .map(|pair| {
            pair.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| usage(format!("--env '{pair}': expected KEY=VALUE")))
        })
        .collect()
}

fn read_input(path: &str) -> Result<String, CliError> {
    let read = if path == "-" {
        std::io::read_to_string(std::io::stdin())
    } else {
        std::fs::read_to_string(path)
    };
    read.map_err(|e| usage(format!("{path}: {e}")))
}

fn parse_json(path: &str, text: &str) -> Result<Value, CliError> {
    serde_json::from_str(text).map_err(|e| usage(format!("{path}: not JSON: {e}")))
}

pub async fn job(client: &Client, command: JobCommand) -> Result<Output, CliError> {
    match command {
        JobCommand::List => {
            let jobs = client.get("/job/list").await?;
            let rows: Vec<Vec<String>> = jobs
                .as_array()
                .into_iter()
                .flatten()
                .map(|j| {
                    vec![
                        text(&j["name"]),
                        text(&j["group"]),
                        text(&j["cronExpr"]),
                        if j["enabled"] == Value::Bool(false) {
                            "paused"
                        } else {
                            "enabled"
                        }
                        .into(),
                        short(&text(&j["command"]), 50),
                    ]
                })
                .collect();
            Ok(Output::new(
                table(&["NAME", "GROUP", "SCHEDULE", "STATE", "COMMAND"], &rows),
                jobs,
            ))
        }
        JobCommand::Get { name } => {
            let detail = client
                .get(&format!("/job/get?name={}", query_value(&name)))
                .await?;
            Ok(Output::new(describe(&detail), detail))
        }
        JobCommand::Save { file } => {
            let job = parse_json(&file, &read_input(&file)?)?;
            let previous = client.post("/job/save", &job).await?;
            let how = if previous.is_null() {
                "created"
            } else {
                "replaced"
            };
            Ok(Output::new(
                vec![format!("job {} {how}", text(&job["name"]))],
                json!({ "previous": previous }),
            ))
        }
        JobCommand::Delete { name } => {
            let deleted = client.post("/job/delete", &name_body(&name)).await?;
            Ok(Output::new(vec![format!("job {name} deleted")], deleted))
        }
        JobCommand::Run { name, env } => {
            let env = parse_env(&env)?;
            let asked = client
                .post("/job/run", &json!({ "name": name, "env": env }))
                .await?;
            let params = if env.is_empty() {
                String::new()
            } else {
                format!(
                    " with {}",
                    env.keys().cloned().collect::<Vec<_>>().join(", ")
                )
            };
            Ok(Output::new(
                vec![format!(
                    "job {name} asked to run{params} (planned for {})",
                    when(&asked["planTime"])
                )],
                asked,
            ))
        }
        JobCommand::Pause { name } => {
            let job = client.post("/job/pause", &name_body(&name)).await?;
            Ok(Output::new(vec![format!("job {name} paused")], job))
        }
        JobCommand::Resume { name } => {
            let job = client.post("/job/resume", &name_body(&name)).await?;
            Ok(Output::new(vec![format!("job {name} resumed")], job))
        }
        JobCommand::Kill { name } => {
            client.post("/job/kill", &name_body(&name)).await?;
            Ok(Output::new(
                vec![format!("kill sent to every run of {name} in progress")],
                Value::Null,
            ))
        }
    }
}

/// `job get` for people.
fn describe(detail: &Value) -> Vec<String> {
    let job = &detail["job"];
    let mut lines = vec![
        format!("name:     {}", text(&job["name"])),
        format!("command:  {}", text(&job["command"])),
        format!(
            "schedule: {} ({})",
            text(&job["cronExpr"]),
            text(&job["timezone"])
        ),
        format!("group:    {}", text(&job["group"])),
        format!(
            "state:    {}",
            if job["enabled"] == Value::Bool(false) {
                "paused"
            } else {
                "enabled"
            }
        ),
    ];
    let next: Vec<String> = detail["next"]
        .as_array()
        .into_iter()
        .flatten()
        .map(text)
        .collect();
    if !next.is_empty() {
        lines.push(format!("next:     {}", next.join(", ")));
    }
    if let Some(note) = detail["scheduleNote"].as_str() {
        lines.push(format!("next:     {note}"));
    }
    let last = &detail["lastRun"];
    if last.is_object() {
        lines.push(format!(
            "last run: {} {} at {}",
            text(&last["run_id"]),
            text(&last["status"]),
            when(&last["startTime"])
        ));
    }
    let running = detail["running"].as_array().map_or(0, Vec::len);
    lines.push(format!("running:  {running}"));
    for (label, key) in [("upstream", "upstream"), ("downstream", "downstream")] {
        let links: Vec<String> = detail[key]
            .as_array()
            .into_iter()
            .flatten()
            .map(|l| format!("{} (on {})", text(&l["job"]), text(&l["on"])))
            .collect();
        if !links.is_empty() {
            lines.push(format!("{label}: {}", links.join(", ")));
        }
    }
    lines
}

/// `distcron runs JOB [--status S] [--limit N]`.
pub async fn runs(
    client: &Client,
    job: &str,
    status: Option<&str>,
    limit: u64,
) -> Result<Output, CliError> {
    let mut path = format!("/job/log?name={}&limit={limit}", query_value(job));
    if let Some(status) = status {
        path.push_str(&format!("&status={}", query_value(status)));
    }
    let runs = client.get(&path).await?;
    let rows: Vec<Vec<String>> = runs
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            let took = r["endTime"].as_i64().unwrap_or(0) - r["startTime"].as_i64().unwrap_or(0);
            vec![
                text(&r["run_id"]),
                text(&r["status"]),
                when(&r["startTime"]),
                format!("{:.3}s", took.max(0) as f64 / 1000.0),
                text(&r["exitCode"]),
                text(&r["worker"]),
            ]
        })
        .collect();
    Ok(Output::new(
        table(
            &["RUN", "STATUS", "STARTED", "TOOK", "EXIT", "WORKER"],
            &rows,
        ),
        runs,
    ))
}

/// `distcron logs RUN`: the run's output as recorded.
pub async fn logs(client: &Client, run_id: &str) -> Result<Output, CliError> {
    let run = client
        .get(&format!("/run/get?id={}", query_value(run_id)))
        .await?;
    let mut human: Vec<String> = text(&run["output"]).lines().map(String::from).collect();
    if run["truncated"] == Value::Bool(true) {
        human.push("[output truncated at the worker's outputCapBytes]".into());
    }
    Ok(Output::new(human, run))
}

/// `distcron logs RUN --follow`: the output as it is printed (K's live
/// tail), then how the run ended. The text goes to stdout as it comes.
pub async fn follow(client: &Client, run_id: &str, as_json: bool) -> Result<(), CliError> {
    let path = format!("/run/tail?id={}", query_value(run_id));
    let mut out = std::io::stdout();
    client
        .events(&path, |name, data| {
            if as_json {
                let _ = writeln!(out, "{}", json!({ "event": name, "data": data }));
            } else if name == "output" {
                let _ = write!(out, "{}", text(&data["text"]));
            } else if name == "end" {
                let _ = out.flush();
                eprintln!("[run ended: {}]", text(&data["status"]));
            }
            let _ = out.flush();
        })
        .await
}

/// `distcron export`: every job as one document.
pub async fn export(client: &Client) -> Result<Output, CliError> {
    let document = client.get("/job/export").await?;
    let text = serde_json::to_string_pretty(&document).unwrap_or_default();
    Ok(Output::new(vec![text], document))
}

/// `distcron import FILE [--dry-run] [--prune]`.
pub async fn import(
    client: &Client,
    file: &str,
    dry_run: bool,
    prune: bool,
) -> Result<Output, CliError> {
    let document = parse_json(file, &read_input(file)?)?;
    let path = format!("/job/import?dryRun={dry_run}&prune={prune}");
    let plan = client.post(&path, &document).await?;
    let verb = |done: &str, would: &str| {
        if dry_run {
            would.to_string()
        } else {
            done.to_string()
        }
    };
    let list = |key: &str| -> String {
        let names: Vec<String> = plan[key]
            .as_array()
            .into_iter()
            .flatten()
            .map(text)
            .collect();
        if names.is_empty() {
            "none".into()
        } else {
            names.join(", ")
        }
    };
    let human = vec![
        format!("{}: {}", verb("created", "would create"), list("created")),
        format!("{}: {}", verb("changed", "would change"), list("changed")),
        format!("{}: {}", verb("deleted", "would delete"), list("deleted")),
        format!("unchanged: {}", text(&plan["unchanged"])),
    ];
    Ok(Output::new(human, plan))
}

/// `distcron workers`: the live workers and their load.
pub async fn workers(client: &Client) -> Result<Output, CliError> {
    let workers = client.get("/worker/info").await?;
    let rows: Vec<Vec<String>> = workers
        .as_array()
        .into_iter()
        .flatten()
        .map(|w| {
            vec![
                text(&w["id"]),
                text(&w["group"]),
                text(&w["address"]),
                text(&w["running"]),
                format!("{:.0}%", w["cpuPercent"].as_f64().unwrap_or(0.0)),
                format!("{} MiB", w["memoryBytes"].as_u64().unwrap_or(0) >> 20),
                if w["stale"] == Value::Bool(true) {
                    "stale"
                } else {
                    "live"
                }
                .into(),
            ]
        })
        .collect();
    Ok(Output::new(
        table(
            &[
                "WORKER",
                "GROUP",
                "ADDRESS",
                "RUNNING",
                "CPU",
                "MEMORY",
                "HEARTBEAT",
            ],
            &rows,
        ),
        workers,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_pad_every_column_but_the_last() {
        let rows = vec![
            vec!["backup".to_string(), "enabled".into(), "tar czf x".into()],
            vec!["a".to_string(), "paused".into(), String::new()],
        ];
        assert_eq!(
            table(&["NAME", "STATE", "COMMAND"], &rows),
            [
                "NAME    STATE    COMMAND",
                "backup  enabled  tar czf x",
                "a       paused"
            ]
        );
    }

    #[test]
    fn env_pairs_parse_or_name_the_bad_one() {
        let pairs = vec!["DAY=monday".to_string(), "EMPTY=".into(), "EQ=a=b".into()];
        let env = parse_env(&pairs).unwrap();
        assert_eq!(env["DAY"], "monday");
        assert_eq!(env["EMPTY"], "");
        assert_eq!(env["EQ"], "a=b");
        let err = parse_env(&["oops".to_string()]).unwrap_err();
        assert_eq!(
            (err.code, err.message.as_str()),
            (2, "--env 'oops': expected KEY=VALUE")
        );
    }

    #[test]
    fn details_read_for_people() {
        let detail = json!({
            "job": {"name": "load", "command": "load.sh", "cronExpr": "@daily", "timezone": "UTC",
                    "group": "default", "enabled": true},
            "next": ["2026-01-02T00:00:00Z"],
            "lastRun": null, "running": [],
            "upstream": [{"job": "extract", "on": "success"}], "downstream": []
        });
        let lines = describe(&detail);
        assert!(
            lines.contains(&"next:     2026-01-02T00:00:00Z".to_string()),
            "{lines:?}"
        );
        assert!(
            lines.contains(&"upstream: extract (on success)".to_string()),
            "{lines:?}"
        );
        assert_eq!(short("a\nb", 10), "a b");
        assert_eq!(short("abcdefghijkl", 5), "abcd…");
    }
}
