//! The job definition: what operators save through the API and workers run.
//!
//! The JSON names (`name`, `command`, `cronExpr`) are the old system's, so
//! its clients keep working; every field added since is optional with a
//! default. Unknown fields are rejected rather than silently dropped, so a
//! typo such as `cronexpr` is an error and not a job that never runs.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::schedule::{Schedule, parse_time_zone};

/// Longest job name: long enough for dotted namespaces, short enough to keep
/// etcd keys and log indexes small.
pub const MAX_NAME_LEN: usize = 128;
/// Largest command: a whole inline script fits; a job definition stays a
/// small etcd value.
pub const MAX_COMMAND_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Job {
    /// Unique name: 1 to 128 characters of `A-Z a-z 0-9 . _ -`.
    pub name: String,
    /// Shell command, run as `sh -c COMMAND`.
    pub command: String,
    /// Cron expression; see [`crate::schedule`] for the accepted forms.
    pub cron_expr: String,
    /// IANA time zone in which `cronExpr` reads wall-clock times.
    #[serde(default = "default_timezone")]
    pub timezone: String,
    /// The worker group that runs this job.
    #[serde(default = "default_group")]
    pub group: String,
    /// Seconds a run may take before it is ended as `timed_out`; none when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u64>,
    /// What a tick does while an earlier run of the job is still going.
    #[serde(default)]
    pub overlap: Overlap,
    /// What happens to a run whose worker died mid-run.
    #[serde(default)]
    pub on_lost: OnLost,
    /// Extra environment variables for the command.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// The user the command runs as on the worker (which must run as root
    /// to switch); the worker's own user when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_as: Option<String>,
    /// Working directory of the command; the worker's own when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<String>,
    /// A disabled (paused) job keeps its definition and fires nothing.
    #[serde(default = "default_enabled")]
    pub enabled: bool,
    /// A failed or timed-out run is tried again up to this many times, each
    /// attempt with its own run record.
    #[serde(default)]
    pub retries: u32,
    /// Seconds before the first retry; doubled for each further one.
    #[serde(default = "default_retry_backoff")]
    pub retry_backoff: u64,
    /// What a new owner does with recent ticks nobody ran (their owner
    /// died, or etcd was out): `all` (the default), `latest` or `skip`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub misfire: Option<Misfire>,
    /// Seconds back a new owner looks for ticks nobody ran; the worker's
    /// `misfireWindowSecs` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub misfire_window_secs: Option<u64>,
    /// The older form of the two above: `catchUp: N` reads as
    /// `misfire: latest` within N seconds, unless they are set.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub catch_up: u64,
    /// When the manager last saved the job (Unix ms; set by the manager,
    /// whatever a client sends). No tick before it is ever run late.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<i64>,
    /// Who is told of which events of this job's runs (targets are named in
    /// the `notify` configuration). Absent: the job's group's rules, else
    /// the configured defaults; an empty list: nobody.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<Vec<crate::notify::Rule>>,
    /// At most `max` notifications per `windowSecs`, then one summary; the
    /// configured default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify_throttle: Option<crate::notify::Throttle>,
    /// Jobs started when a run of this one succeeds (a chain); each such
    /// run records this run as its `triggeredBy`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub on_success: Vec<String>,
    /// Jobs started when a run of this one fails (or times out) after its
    /// last retry.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub on_failure: Vec<String>,
    /// Most runs of this job at once on a worker: 1 under `overlap: forbid`
    /// and `replace` (the policy itself keeps it so), unlimited under
    /// `allow` when absent. A start over it waits in the queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent: Option<u32>,
    /// Seconds a start may wait for a free slot (this job's
    /// `maxConcurrent`, the worker's `maxConcurrentRuns`) before it is
    /// recorded `skipped`; [`DEFAULT_QUEUE_TIMEOUT_SECS`] when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_timeout: Option<u64>,
}

/// How long a start waits for a free slot when the job does not say.
pub const DEFAULT_QUEUE_TIMEOUT_SECS: u64 = 60;
/// The longest `queueTimeout`: an hour; a start later than that is better
/// recorded as skipped and seen.
pub const MAX_QUEUE_TIMEOUT_SECS: u64 = 3_600;
/// Most jobs one chain list may name.
pub const MAX_CHAIN_TARGETS: usize = 32;

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// What a new owner does with the ticks of its misfire window that nobody
/// ran.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Misfire {
    /// Run every one, oldest first.
    #[default]
    All,
    /// Run only the newest, if nothing newer ran.
    Latest,
    /// Run none.
    Skip,
}

/// The longest misfire window a job may ask for; workers further hold it
/// below their claim retention.
pub const MAX_MISFIRE_WINDOW_SECS: u64 = 86_400;

/// Most retries a job may ask for: beyond this a job is broken, not flaky.
pub const MAX_RETRIES: u32 = 10;
/// The longest catch-up window: tick claims are kept 5 minutes after their
/// minute by default, so a catch-up never re-runs a tick that already ran.
pub const MAX_CATCH_UP_SECS: u64 = 300;
/// The longest `timeout`: a year.
pub const MAX_TIMEOUT_SECS: u64 = 365 * 86_400;
/// The longest first `retryBackoff`: a day.
pub const MAX_RETRY_BACKOFF_SECS: u64 = 86_400;

fn default_retry_backoff() -> u64 {
    10
}

/// Overlap policy: what a tick does while a run of the same job is in progress.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Overlap {
    /// Skip the tick and record a `skipped` run.
    #[default]
    Forbid,
    /// Start another run alongside.
    Allow,
    /// Kill the running one, then start.
    Replace,
}

/// What to do with a run whose worker died mid-run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnLost {
    /// Record it as `lost` and move on.
    #[default]
    Ignore,
    /// Record it as `lost` and run the tick again on a live worker.
    Rerun,
}

fn default_timezone() -> String {
    "UTC".to_string()
}

fn default_group() -> String {
    "default".to_string()
}

fn default_enabled() -> bool {
    true
}

/// A job field that failed validation, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct JobError {
    /// The JSON name of the field at fault (`job` when the document itself
    /// is malformed).
    pub field: &'static str,
    pub message: String,
}

impl JobError {
    fn new(field: &'static str, message: impl Into<String>) -> JobError {
        JobError {
            field,
            message: message.into(),
        }
    }
}

impl Job {
    /// A job with every optional field at its default.
    pub fn new(name: &str, command: &str, cron_expr: &str) -> Job {
        Job {
            name: name.into(),
            command: command.into(),
            cron_expr: cron_expr.into(),
            timezone: default_timezone(),
            group: default_group(),
            timeout: None,
            overlap: Overlap::default(),
            on_lost: OnLost::default(),
            env: BTreeMap::new(),
            run_as: None,
            workdir: None,
            enabled: true,
            retries: 0,
            retry_backoff: default_retry_backoff(),
            misfire: None,
            misfire_window_secs: None,
            catch_up: 0,
            updated_at: None,
            notify: None,
            notify_throttle: None,
            on_success: Vec::new(),
            on_failure: Vec::new(),
            max_concurrent: None,
            queue_timeout: None,
        }
    }

    /// Whether any run of this job starts others.
    pub fn has_chains(&self) -> bool {
        !self.on_success.is_empty() || !self.on_failure.is_empty()
    }

    /// The jobs a run that ended with `status` starts; none for a status
    /// that is not a final success or failure.
    pub fn chained_after(&self, status: crate::runlog::RunStatus) -> &[String] {
        use crate::runlog::RunStatus;
        match status {
            RunStatus::Succeeded => &self.on_success,
            RunStatus::Failed | RunStatus::TimedOut => &self.on_failure,
            _ => &[],
        }
    }

    /// How long a start waits for a free slot.
    pub fn queue_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.queue_timeout.unwrap_or(DEFAULT_QUEUE_TIMEOUT_SECS))
    }

    /// The job's misfire policy and window, `default_window` standing in
    /// for a window it does not set (`catchUp` folds in here).
    pub fn misfire_rule(
        &self,
        default_window: std::time::Duration,
    ) -> (Misfire, std::time::Duration) {
        let legacy = self.catch_up > 0;
        let policy = self.misfire.unwrap_or(if legacy {
            Misfire::Latest
        } else {
            Misfire::All
        });
        let window = match (self.misfire_window_secs, legacy) {
            (Some(secs), _) => std::time::Duration::from_secs(secs),
            (None, true) => std::time::Duration::from_secs(self.catch_up),
            (None, false) => default_window,
        };
        (policy, window)
    }

    /// Parse a job from its JSON document. Malformed JSON, a missing field,
    /// an unknown field or a wrong type is an error naming what is wrong.
    pub fn from_json(text: &str) -> Result<Job, JobError> {
        serde_json::from_str(text).map_err(|e| JobError::new("job", e.to_string()))
    }

    /// Check every field, and that the schedule still fires after `now`.
    /// Returns the compiled schedule so callers need not parse it again.
    pub fn validate(&self, now: DateTime<Utc>) -> Result<Schedule, JobError> {
        validate_name(&self.name)?;
        if self.command.trim().is_empty() {
            return Err(JobError::new("command", "must not be empty"));
        }
        let nul_in = |text: &str| text.contains('\0');
        if nul_in(&self.command) {
            return Err(JobError::new("command", "must not contain a NUL character"));
        }
        if self.command.len() > MAX_COMMAND_BYTES {
            return Err(JobError::new(
                "command",
                format!(
                    "is {} bytes, more than the limit of {MAX_COMMAND_BYTES}",
                    self.command.len()
                ),
            ));
        }
        validate_group(&self.group)?;
        if self.timeout == Some(0) {
            return Err(JobError::new(
                "timeout",
                "must be at least 1 second (leave it out for none)",
            ));
        }
        if self.timeout.is_some_and(|t| t > MAX_TIMEOUT_SECS) {
            return Err(JobError::new(
                "timeout",
                format!("must be at most {MAX_TIMEOUT_SECS} seconds (a year)"),
            ));
        }
        validate_env(&self.env).map_err(|m| JobError::new("env", m))?;
        if self.cron_expr.len() > MAX_CRON_EXPR_LEN {
            return Err(JobError::new(
                "cronExpr",
                format!(
                    "is {} characters, more than the limit of {MAX_CRON_EXPR_LEN}",
                    self.cron_expr.len()
                ),
            ));
        }
        if self.retries > MAX_RETRIES {
            return Err(JobError::new(
                "retries",
                format!("must be at most {MAX_RETRIES}"),
            ));
        }
        if self.retry_backoff == 0 || self.retry_backoff > MAX_RETRY_BACKOFF_SECS {
            return Err(JobError::new(
                "retryBackoff",
                format!("must be from 1 to {MAX_RETRY_BACKOFF_SECS} seconds"),
            ));
        }
        if self.catch_up > MAX_CATCH_UP_SECS {
            return Err(JobError::new(
                "catchUp",
                format!(
                    "must be at most {MAX_CATCH_UP_SECS} seconds (tick claims are kept that long)"
                ),
            ));
        }
        if let Some(rules) = &self.notify {
            crate::notify::check_job_rules(rules).map_err(|m| JobError::new("notify", m))?;
        }
        if let Some(throttle) = &self.notify_throttle {
            crate::notify::check_throttle(throttle)
                .map_err(|m| JobError::new("notifyThrottle", m))?;
        }
        for (field, names) in [
            ("onSuccess", &self.on_success),
            ("onFailure", &self.on_failure),
        ] {
            validate_chain_list(names).map_err(|m| JobError::new(field, m))?;
        }
        match self.max_concurrent {
            Some(0) => {
                return Err(JobError::new(
                    "maxConcurrent",
                    "must be at least 1 (leave it out for the policy's default)",
                ));
            }
            Some(n) if n > 1 && self.overlap != Overlap::Allow => {
                return Err(JobError::new(
                    "maxConcurrent",
                    "more than 1 needs overlap: allow (forbid and replace run one at a time)",
                ));
            }
            _ => {}
        }
        if self
            .queue_timeout
            .is_some_and(|t| t > MAX_QUEUE_TIMEOUT_SECS)
        {
            return Err(JobError::new(
                "queueTimeout",
                format!("must be at most {MAX_QUEUE_TIMEOUT_SECS} seconds (an hour)"),
            ));
        }
        if self.updated_at.is_some_and(|t| t < 0) {
            return Err(JobError::new("updatedAt", "must not be negative"));
        }
        if self
            .misfire_window_secs
            .is_some_and(|w| w > MAX_MISFIRE_WINDOW_SECS)
        {
            return Err(JobError::new(
                "misfireWindowSecs",
                format!("must be at most {MAX_MISFIRE_WINDOW_SECS} seconds (a day)"),
            ));
        }
        if let Some(user) = &self.run_as {
            let ok = !user.is_empty()
                && user.len() <= 32
                && user
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
            if !ok {
                return Err(JobError::new(
                    "runAs",
                    format!("'{user}' is not a user name (1 to 32 of A-Z a-z 0-9 _ - .)"),
                ));
            }
        }
        if self
            .workdir
            .as_deref()
            .is_some_and(|w| !w.starts_with('/') || nul_in(w))
        {
            return Err(JobError::new(
                "workdir",
                "must be an absolute path (without NUL characters)",
            ));
        }
        let tz = parse_time_zone(&self.timezone)
            .map_err(|e| JobError::new("timezone", e.to_string()))?;
        let schedule = Schedule::parse_for_job(&self.cron_expr, tz, &self.name)
            .map_err(|e| JobError::new("cronExpr", e.to_string()))?;
        if schedule.fixed_delay().is_none() && schedule.next_after(now).is_none() {
            return Err(JobError::new(
                "cronExpr",
                "the expression has no fire time left (its last year is in the past)",
            ));
        }
        Ok(schedule)
    }
}

/// Check an `env` map: valid names, no NUL, within [`MAX_ENV_BYTES`]. The
/// same rules hold for a run's parameters (`POST /job/run`).
pub fn validate_env(env: &BTreeMap<String, String>) -> Result<(), String> {
    if let Some(key) = env
        .keys()
        .find(|k| k.is_empty() || k.contains('=') || k.contains('\0'))
    {
        return Err(format!("{key:?} is not a valid variable name"));
    }
    if let Some(key) = env.iter().find(|(_, v)| v.contains('\0')).map(|(k, _)| k) {
        return Err(format!("the value of {key:?} contains a NUL character"));
    }
    let bytes: usize = env.iter().map(|(k, v)| k.len() + v.len()).sum();
    if bytes > MAX_ENV_BYTES {
        return Err(format!(
            "is {bytes} bytes, more than the limit of {MAX_ENV_BYTES}"
        ));
    }
    Ok(())
}

/// An `onSuccess` / `onFailure` list: valid job names, each once.
fn validate_chain_list(names: &[String]) -> Result<(), String> {
    if names.len() > MAX_CHAIN_TARGETS {
        return Err(format!("names more than {MAX_CHAIN_TARGETS} jobs"));
    }
    for (i, name) in names.iter().enumerate() {
        validate_name(name).map_err(|e| format!("'{name}': {}", e.message))?;
        if names[..i].contains(name) {
            return Err(format!("names '{name}' twice"));
        }
    }
    Ok(())
}

/// The default of `maxJobs`.
pub const DEFAULT_MAX_JOBS: usize = 100_000;
/// Largest `env`: names and values together. Job definitions are etcd
/// values, and every run copies them.
pub const MAX_ENV_BYTES: usize = 64 * 1024;
/// Longest `cronExpr`: the longest sensible expression lists every second.
pub const MAX_CRON_EXPR_LEN: usize = 1024;

/// A worker id becomes an etcd key and a metric label: printable ASCII
/// without spaces, slashes or quotes, 1 to 128 characters.
pub fn validate_worker_id(id: &str) -> Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= MAX_NAME_LEN
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':' | '@'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "'{id}' must be 1 to 128 characters of A-Z a-z 0-9 . _ - : @"
        ))
    }
}

/// Job names become etcd keys and URL parameters, hence the small alphabet.
/// A worker group: the same characters as a job name.
pub fn validate_group(group: &str) -> Result<(), JobError> {
    validate_name(group).map_err(|e| JobError::new("group", e.message))
}

pub fn validate_name(name: &str) -> Result<(), JobError> {
    if name.is_empty() {
        return Err(JobError::new("name", "must not be empty"));
    }
    if name.chars().count() > MAX_NAME_LEN {
        return Err(JobError::new(
            "name",
            format!("is longer than {MAX_NAME_LEN} characters"),
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(JobError::new(
            "name",
            format!("character {bad:?} is not allowed (use A-Z a-z 0-9 . _ -)"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn job(name: &str, command: &str, cron: &str) -> Job {
        Job::new(name, command, cron)
    }

    #[test]
    fn old_clients_three_field_document_parses_with_defaults() {
        let job = Job::from_json(
            r#"{"name":"job1","command":"echo hello","cronExpr":"*/5 * * * * * *"}"#,
        )
        .unwrap();
        assert_eq!(job, self::job("job1", "echo hello", "*/5 * * * * * *"));
        assert!(job.validate(now()).is_ok());
    }

    #[test]
    fn serialises_with_the_old_systems_field_names() {
        let value = serde_json::to_value(job("a", "true", "@hourly")).unwrap();
        assert_eq!(
            value,
            serde_json::json!({"name":"a","command":"true","cronExpr":"@hourly","timezone":"UTC",
                "group":"default","overlap":"forbid","onLost":"ignore","enabled":true,
                "retries":0,"retryBackoff":10})
        );
    }

    #[test]
    fn catch_up_folds_into_the_misfire_rule() {
        let default_window = std::time::Duration::from_secs(60);
        let secs = std::time::Duration::from_secs;
        let doc = |extra: &str| {
            Job::from_json(&format!(
                r#"{{"name":"j","command":"true","cronExpr":"@hourly"{extra}}}"#
            ))
            .unwrap()
        };
        let table = [
            ("", (Misfire::All, secs(60))),
            (r#","catchUp":0"#, (Misfire::All, secs(60))),
            (r#","catchUp":30"#, (Misfire::Latest, secs(30))),
            (r#","catchUp":30,"misfire":"all""#, (Misfire::All, secs(30))),
            (
                r#","catchUp":30,"misfireWindowSecs":90"#,
                (Misfire::Latest, secs(90)),
            ),
            (r#","misfire":"skip""#, (Misfire::Skip, secs(60))),
            (r#","misfireWindowSecs":5"#, (Misfire::All, secs(5))),
        ];
        for (extra, expected) in table {
            assert_eq!(doc(extra).misfire_rule(default_window), expected, "{extra}");
        }
        let mut bad = doc("");
        bad.misfire_window_secs = Some(MAX_MISFIRE_WINDOW_SECS + 1);
        assert_eq!(bad.validate(now()).unwrap_err().field, "misfireWindowSecs");
        assert!(
            Job::from_json(
                r#"{"name":"j","command":"true","cronExpr":"@hourly","misfire":"twice"}"#
            )
            .is_err()
        );
    }

    #[test]
    fn unknown_and_missing_fields_are_errors_naming_the_field() {
        let err =
            Job::from_json(r#"{"name":"a","command":"true","cronexpr":"@hourly"}"#).unwrap_err();
        assert_eq!(err.field, "job");
        assert!(err.message.contains("unknown field `cronexpr`"), "{err}");
        let err = Job::from_json(r#"{"name":"a","cronExpr":"@hourly"}"#).unwrap_err();
        assert!(err.message.contains("missing field `command`"), "{err}");
        let err = Job::from_json("{not json").unwrap_err();
        assert_eq!(err.field, "job");
    }

    #[test]
    fn optional_fields_parse_and_are_checked() {
        let job = Job::from_json(
            r#"{"name":"a","command":"true","cronExpr":"@daily","group":"batch","timeout":30,
                "overlap":"replace","onLost":"rerun","env":{"A":"1"},"workdir":"/tmp","enabled":false}"#,
        )
        .unwrap();
        assert_eq!(
            (job.overlap, job.on_lost, job.timeout),
            (Overlap::Replace, OnLost::Rerun, Some(30))
        );
        assert!(job.validate(now()).is_ok());
        let err = Job::from_json(
            r#"{"name":"a","command":"true","cronExpr":"@daily","overlap":"sometimes"}"#,
        )
        .unwrap_err();
        assert!(err.message.contains("unknown variant `sometimes`"), "{err}");
        for (field, mut bad) in [
            ("retries", job.clone()),
            ("retryBackoff", job.clone()),
            ("catchUp", job.clone()),
        ] {
            match field {
                "retries" => bad.retries = MAX_RETRIES + 1,
                "retryBackoff" => bad.retry_backoff = 0,
                _ => bad.catch_up = MAX_CATCH_UP_SECS + 1,
            }
            assert_eq!(bad.validate(now()).unwrap_err().field, field);
        }
        let mut bad = job.clone();
        bad.timeout = Some(0);
        assert_eq!(bad.validate(now()).unwrap_err().field, "timeout");
        let mut bad = job.clone();
        bad.workdir = Some("relative".into());
        assert_eq!(bad.validate(now()).unwrap_err().field, "workdir");
        let mut bad = job;
        bad.env.insert("A=B".into(), "x".into());
        assert_eq!(bad.validate(now()).unwrap_err().field, "env");
    }

    #[test]
    fn name_rules() {
        assert!(validate_name("backup.db_nightly-1").is_ok());
        assert_eq!(
            validate_name("").unwrap_err().to_string(),
            "name: must not be empty"
        );
        assert_eq!(
            validate_name("a/b").unwrap_err().to_string(),
            "name: character '/' is not allowed (use A-Z a-z 0-9 . _ -)"
        );
        assert!(validate_name(&"x".repeat(128)).is_ok());
        assert_eq!(
            validate_name(&"x".repeat(129)).unwrap_err().to_string(),
            "name: is longer than 128 characters"
        );
    }

    #[test]
    fn command_rules() {
        let err = job("a", "  ", "@hourly").validate(now()).unwrap_err();
        assert_eq!(err.to_string(), "command: must not be empty");
        let err = job("a", &"x".repeat(MAX_COMMAND_BYTES + 1), "@hourly")
            .validate(now())
            .unwrap_err();
        assert_eq!(err.field, "command");
        assert!(
            job("a", &"x".repeat(MAX_COMMAND_BYTES), "@hourly")
                .validate(now())
                .is_ok()
        );
    }

    #[test]
    fn schedule_and_time_zone_errors_name_their_field() {
        let err = job("a", "true", "0 0 30 2 *").validate(now()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cronExpr: the expression never fires (no calendar date matches it)"
        );
        let err = job("a", "true", "0 0 0 1 1 * 2020")
            .validate(now())
            .unwrap_err();
        assert_eq!(err.field, "cronExpr");
        assert!(err.message.contains("no fire time left"));
        let mut zoned = job("a", "true", "@daily");
        zoned.timezone = "Nowhere/Land".into();
        assert_eq!(zoned.validate(now()).unwrap_err().field, "timezone");
    }
}
