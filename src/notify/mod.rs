//! Notifications: telling operators when a run fails, is lost or missed,
//! recovers, and so on, by web hook and by email.
//!
//! Who is told of what is configuration (`notify` in the config file:
//! named targets, default rules, per-group rules, a default throttle) and,
//! per job, `notify` and `notifyThrottle`. The decisions are pure functions
//! here (which rules apply, which events a record raises, what a throttle
//! allows, what a body says); [`notifier`] is the actor that carries them
//! out, [`send`] speaks HTTP and SMTP, [`store`] keeps the notices that
//! make each (run, event, target) go out at most once across the cluster.

pub mod notifier;
pub mod send;
pub mod store;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::job::Job;
use crate::runlog::{RunRecord, RunStatus};

/// What a notification is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    Failed,
    TimedOut,
    Killed,
    Lost,
    Missed,
    Succeeded,
    Started,
    /// The first success after a failed, timed-out, killed, lost or missed run.
    Recovered,
}

impl Event {
    pub const ALL: [Event; 8] = [
        Event::Failed,
        Event::TimedOut,
        Event::Killed,
        Event::Lost,
        Event::Missed,
        Event::Succeeded,
        Event::Started,
        Event::Recovered,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Event::Failed => "failed",
            Event::TimedOut => "timed_out",
            Event::Killed => "killed",
            Event::Lost => "lost",
            Event::Missed => "missed",
            Event::Succeeded => "succeeded",
            Event::Started => "started",
            Event::Recovered => "recovered",
        }
    }

    /// The event a record of `status` raises by itself (`recovered` needs
    /// the run before it: see [`is_recovery`]).
    pub fn of_status(status: RunStatus) -> Option<Event> {
        match status {
            RunStatus::Failed => Some(Event::Failed),
            RunStatus::TimedOut => Some(Event::TimedOut),
            RunStatus::Killed => Some(Event::Killed),
            RunStatus::Lost => Some(Event::Lost),
            RunStatus::Missed => Some(Event::Missed),
            RunStatus::Succeeded => Some(Event::Succeeded),
            RunStatus::Started => Some(Event::Started),
            RunStatus::Pending | RunStatus::Skipped => None,
        }
    }
}

/// Whether a success after a run of status `previous` is a recovery.
pub fn is_recovery(previous: RunStatus) -> bool {
    matches!(
        previous,
        RunStatus::Failed
            | RunStatus::TimedOut
            | RunStatus::Killed
            | RunStatus::Lost
            | RunStatus::Missed
    )
}

/// "Tell `target` of these events."
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub target: String,
    pub on: Vec<Event>,
}

/// At most `max` notifications of a job per `windowSecs` (windows start at
/// multiples of the window since the epoch); the rest are counted and told
/// in one summary when the window ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Throttle {
    pub max: u32,
    pub window_secs: u64,
}

/// Longest throttle window: a day.
pub const MAX_THROTTLE_WINDOW_SECS: u64 = 86_400;
/// Most rules a job may carry.
pub const MAX_RULES: usize = 16;

/// A place notifications go, defined once in configuration so that URLs,
/// addresses and secrets stay out of job definitions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Target {
    Webhook(WebhookTarget),
    Email(EmailTarget),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WebhookTarget {
    /// `http://` or `https://`.
    pub url: String,
    /// A file whose first line is the HMAC-SHA256 key that signs each body
    /// (`X-Distcron-Signature: sha256=<hex>`); no signature when empty.
    #[serde(default)]
    pub secret_file: String,
    /// Extra request headers (an API key some receivers want).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpSecurity {
    /// Plain connection upgraded with STARTTLS (port 587).
    #[default]
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
    /// No encryption: only for a relay on the same host or in tests.
    None,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EmailTarget {
    pub host: String,
    #[serde(default = "default_smtp_port")]
    pub port: u16,
    #[serde(default)]
    pub security: SmtpSecurity,
    /// SMTP user; no authentication when empty.
    #[serde(default)]
    pub user: String,
    /// A file whose first line is the SMTP password.
    #[serde(default)]
    pub password_file: String,
    pub from: String,
    pub to: Vec<String>,
}

fn default_smtp_port() -> u16 {
    587
}

/// The `notify` configuration key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct NotifyConfig {
    /// Named targets.
    pub targets: BTreeMap<String, Target>,
    /// Rules for jobs that set none and whose group has none.
    pub rules: Vec<Rule>,
    /// Rules per worker group, for jobs that set none.
    pub groups: BTreeMap<String, Vec<Rule>>,
    /// The throttle of jobs that set no `notifyThrottle`; none when absent.
    pub throttle: Option<Throttle>,
    /// The console's address as operators reach it (`https://cron.example.com/`),
    /// for the link to the run in each notification; no link when empty.
    pub console_url: String,
}

impl NotifyConfig {
    /// Check that every rule names a defined target and every target is
    /// complete. Errors name the place at fault.
    pub fn validate(&self) -> Result<(), String> {
        for (name, target) in &self.targets {
            check_target(name, target)?;
        }
        let groups = self
            .groups
            .iter()
            .map(|(group, rules)| (format!("groups.{group}"), rules));
        for (place, rules) in std::iter::once(("rules".to_string(), &self.rules)).chain(groups) {
            self.check_rules(rules)
                .map_err(|message| format!("{place}: {message}"))?;
        }
        if let Some(throttle) = &self.throttle {
            check_throttle(throttle).map_err(|message| format!("throttle: {message}"))?;
        }
        if !self.console_url.is_empty() && !is_http_url(&self.console_url) {
            return Err(format!(
                "consoleUrl: '{}' is not an http:// or https:// address",
                self.console_url
            ));
        }
        Ok(())
    }

    /// Every rule names a target defined here.
    pub fn check_rules(&self, rules: &[Rule]) -> Result<(), String> {
        match rules.iter().find(|r| !self.targets.contains_key(&r.target)) {
            Some(rule) => Err(self.unknown_target(&rule.target)),
            None => Ok(()),
        }
    }

    /// What to say of a target name this configuration does not define.
    pub fn unknown_target(&self, name: &str) -> String {
        let known: Vec<&str> = self.targets.keys().map(String::as_str).collect();
        format!(
            "no target named '{name}' (targets defined in the notify configuration: {})",
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        )
    }

    /// The rules that apply to `job`: its own when it sets them (an empty
    /// list turns notifications off), else its group's, else the defaults.
    pub fn rules_for<'a>(&'a self, job: &'a Job) -> &'a [Rule] {
        if let Some(own) = &job.notify {
            return own;
        }
        self.groups.get(&job.group).unwrap_or(&self.rules)
    }

    /// The throttle that applies to `job`.
    pub fn throttle_for(&self, job: &Job) -> Option<Throttle> {
        job.notify_throttle.or(self.throttle)
    }
}

fn is_http_url(url: &str) -> bool {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    rest.is_some_and(|r| !r.is_empty() && !r.starts_with('/'))
}

fn check_target(name: &str, target: &Target) -> Result<(), String> {
    let at = |message: String| format!("targets.{name}: {message}");
    match target {
        Target::Webhook(hook) => {
            if !is_http_url(&hook.url) {
                return Err(at(format!(
                    "url '{}' is not an http:// or https:// address",
                    hook.url
                )));
            }
        }
        Target::Email(mail) => {
            if mail.host.trim().is_empty() {
                return Err(at("host must not be empty".into()));
            }
            if mail.from.parse::<lettre::Address>().is_err()
                && mail.from.parse::<lettre::message::Mailbox>().is_err()
            {
                return Err(at(format!("from '{}' is not an email address", mail.from)));
            }
            if mail.to.is_empty() {
                return Err(at("to needs at least one address".into()));
            }
            if let Some(bad) = mail
                .to
                .iter()
                .find(|a| a.parse::<lettre::message::Mailbox>().is_err())
            {
                return Err(at(format!("to '{bad}' is not an email address")));
            }
            if mail.user.is_empty() != mail.password_file.is_empty() {
                return Err(at("user and passwordFile go together".into()));
            }
        }
    }
    Ok(())
}

/// The shape of a job's `notify` and `notifyThrottle` (that its targets
/// exist is checked by the manager, which knows the configuration).
pub fn check_job_rules(rules: &[Rule]) -> Result<(), String> {
    if rules.len() > MAX_RULES {
        return Err(format!("has {} rules, more than {MAX_RULES}", rules.len()));
    }
    for rule in rules {
        crate::job::validate_name(&rule.target)
            .map_err(|e| format!("target '{}': {}", rule.target, e.message))?;
        if rule.on.is_empty() {
            return Err(format!(
                "the rule for '{}' has no events in `on`",
                rule.target
            ));
        }
    }
    Ok(())
}

pub fn check_throttle(throttle: &Throttle) -> Result<(), String> {
    if throttle.max == 0 {
        return Err("max must be at least 1".into());
    }
    if throttle.window_secs == 0 || throttle.window_secs > MAX_THROTTLE_WINDOW_SECS {
        return Err(format!(
            "windowSecs must be from 1 to {MAX_THROTTLE_WINDOW_SECS}"
        ));
    }
    Ok(())
}

/// The targets of `rules` that want `event`, each once, in rule order.
pub fn targets_for(rules: &[Rule], event: Event) -> Vec<String> {
    let mut targets: Vec<String> = Vec::new();
    for rule in rules.iter().filter(|r| r.on.contains(&event)) {
        if !targets.contains(&rule.target) {
            targets.push(rule.target.clone());
        }
    }
    targets
}

/// Every target `rules` name, each once (a throttle summary goes to all).
pub fn all_targets(rules: &[Rule]) -> Vec<String> {
    let mut targets: Vec<String> = Vec::new();
    for rule in rules {
        if !targets.contains(&rule.target) {
            targets.push(rule.target.clone());
        }
    }
    targets
}

/// What the throttle does with the `count`th event of a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThrottleDecision {
    Send,
    /// The first one held back: its holder sends the window's summary.
    HoldAndSummarize,
    Hold,
}

pub fn throttle_decision(count: u64, max: u32) -> ThrottleDecision {
    let max = u64::from(max);
    if count <= max {
        ThrottleDecision::Send
    } else if count == max + 1 {
        ThrottleDecision::HoldAndSummarize
    } else {
        ThrottleDecision::Hold
    }
}

/// The window (start and end, epoch ms) that `now_ms` falls in.
pub fn throttle_window(throttle: &Throttle, now_ms: i64) -> (i64, i64) {
    let len = (throttle.window_secs as i64) * 1000;
    let start = now_ms.div_euclid(len) * len;
    (start, start + len)
}

/// Delay before delivery attempt `attempt` (1-based; the first has none):
/// 1 s, 2 s, 4 s, 8 s.
pub fn retry_delay(attempt: u32) -> Option<std::time::Duration> {
    match attempt {
        0 | 1 => None,
        n => Some(std::time::Duration::from_secs(1 << (n - 2).min(5))),
    }
}

/// Delivery attempts per target before it counts as failed.
pub const MAX_ATTEMPTS: u32 = 5;

/// How much of a run's output a notification carries: its end.
pub const OUTPUT_TAIL_BYTES: usize = 4096;

/// The last `max` bytes of `text`, cut at a character boundary.
pub fn tail_of(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

/// What a notification says, whatever carries it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Message {
    /// An [`Event`] name, `throttled` (a throttle's summary) or `test`.
    pub event: String,
    pub job: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    /// RFC 3339 times of the tick, the start and the end.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub planned_time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    /// The last 4 KiB of the output.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub error: String,
    /// The run in the console.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// For a throttle's summary: how many were held back in the window.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held_back: Option<u64>,
    /// One line a chat tool (Slack, Mattermost) shows as it is.
    pub text: String,
    /// When this notification was made (RFC 3339), inside the signed body.
    pub sent_at: String,
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// " (signal 9)", " (exit code 3)", or nothing (a success's exit code 0
/// says nothing).
fn how_it_ended(exit_code: Option<i32>, signal: Option<i32>, succeeded: bool) -> String {
    match (exit_code, signal) {
        (_, Some(signal)) => format!(" (signal {signal})"),
        (Some(code), None) if !succeeded => format!(" (exit code {code})"),
        _ => String::new(),
    }
}

/// The link to a run in the console.
pub fn run_url(console_url: &str, run_id: &str) -> Option<String> {
    if console_url.is_empty() {
        return None;
    }
    let base = console_url.trim_end_matches('/');
    Some(format!("{base}/#/run/{run_id}"))
}

/// The message for `event` of `record`.
pub fn message_for(record: &RunRecord, event: Event, console_url: &str, now_ms: i64) -> Message {
    let ran = !matches!(record.status, RunStatus::Missed | RunStatus::Pending);
    let how = how_it_ended(
        record.exit_code,
        record.signal,
        record.status == RunStatus::Succeeded,
    );
    let verb = match event {
        Event::Failed => "failed",
        Event::TimedOut => "timed out",
        Event::Killed => "was killed",
        Event::Lost => "was lost (its worker died mid-run)",
        Event::Missed => "missed a tick (no worker ran it)",
        Event::Succeeded => "succeeded",
        Event::Started => "started",
        Event::Recovered => "recovered",
    };
    let mut text = format!(
        "distcron: job {} {verb}{how}, tick {}",
        record.job_name,
        rfc3339(record.plan_time)
    );
    if ran && !record.worker.is_empty() {
        text.push_str(&format!(" on {}", record.worker));
    }
    let url = run_url(console_url, &record.run_id);
    if let Some(url) = &url {
        text.push_str(&format!(" <{url}>"));
    }
    let ended = record.status != RunStatus::Started;
    Message {
        event: event.as_str().to_string(),
        job: record.job_name.clone(),
        run_id: Some(record.run_id.clone()),
        status: Some(record.status.as_str().to_string()),
        exit_code: record.exit_code,
        signal: record.signal,
        planned_time: Some(rfc3339(record.plan_time)),
        start_time: ran.then(|| rfc3339(record.start_time)),
        end_time: (ran && ended).then(|| rfc3339(record.end_time)),
        duration_ms: (ran && ended).then(|| record.end_time - record.start_time),
        worker: (!record.worker.is_empty()).then(|| record.worker.clone()),
        output: Some(tail_of(&record.output, OUTPUT_TAIL_BYTES).to_string()),
        error: record.err.clone(),
        url,
        held_back: None,
        text,
        sent_at: rfc3339(now_ms),
    }
}

/// The summary of a throttle window that held `held_back` notifications.
pub fn summary_for(job: &str, held_back: u64, window: (i64, i64), now_ms: i64) -> Message {
    let text = format!(
        "distcron: job {job}: {held_back} more notification(s) held back by its throttle between {} and {}",
        rfc3339(window.0),
        rfc3339(window.1)
    );
    Message {
        start_time: Some(rfc3339(window.0)),
        end_time: Some(rfc3339(window.1)),
        held_back: Some(held_back),
        ..Message::bare("throttled", job, text, now_ms)
    }
}

/// A test notification (`POST /notify/test`).
pub fn test_message(target: &str, asked_by: &str, now_ms: i64) -> Message {
    let text = format!("distcron: test notification to target {target}, asked by {asked_by}");
    Message::bare("test", "", text, now_ms)
}

impl Message {
    /// A message about no run: its event, job and text only.
    fn bare(event: &str, job: &str, text: String, now_ms: i64) -> Message {
        Message {
            event: event.to_string(),
            job: job.to_string(),
            run_id: None,
            status: None,
            exit_code: None,
            signal: None,
            planned_time: None,
            start_time: None,
            end_time: None,
            duration_ms: None,
            worker: None,
            output: None,
            error: String::new(),
            url: None,
            held_back: None,
            text,
            sent_at: rfc3339(now_ms),
        }
    }

    /// The email subject line.
    pub fn subject(&self) -> String {
        match (self.event.as_str(), &self.status) {
            ("test", _) => "[distcron] test notification".to_string(),
            ("throttled", _) => format!("[distcron] {}: notifications held back", self.job),
            (event, status) => {
                let succeeded = status.as_deref() == Some(RunStatus::Succeeded.as_str());
                let how = how_it_ended(self.exit_code, self.signal, succeeded);
                format!("[distcron] {} {}{how}", self.job, event.replace('_', " "))
            }
        }
    }

    /// The plain-text email body: the same facts as the web hook's JSON.
    pub fn plain_text(&self) -> String {
        let mut lines = vec![self.text.clone(), String::new()];
        let mut fact = |name: &str, value: Option<String>| {
            if let Some(value) = value {
                lines.push(format!("{name:<13}{value}"));
            }
        };
        fact("event:", Some(self.event.clone()));
        fact("job:", (!self.job.is_empty()).then(|| self.job.clone()));
        fact("run:", self.run_id.clone());
        fact("status:", self.status.clone());
        fact("exit code:", self.exit_code.map(|c| c.to_string()));
        fact("signal:", self.signal.map(|s| s.to_string()));
        fact("planned:", self.planned_time.clone());
        fact("started:", self.start_time.clone());
        fact("ended:", self.end_time.clone());
        fact("duration:", self.duration_ms.map(|d| format!("{d} ms")));
        fact("worker:", self.worker.clone());
        fact("held back:", self.held_back.map(|n| n.to_string()));
        fact(
            "error:",
            (!self.error.is_empty()).then(|| self.error.clone()),
        );
        fact("link:", self.url.clone());
        if let Some(output) = self.output.as_deref().filter(|o| !o.is_empty()) {
            lines.push(String::new());
            lines.push("Last output:".into());
            lines.push(output.to_string());
        }
        lines.join("\n")
    }
}

#[cfg(test)]
mod tests;
