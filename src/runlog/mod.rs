//! The run log: one record per run, what ran, where, when it was planned and
//! started, how it ended and what it printed.
//!
//! One trait, two engines: [`mongo::MongoRunLog`] for clusters and
//! [`embedded::EmbeddedRunLog`] for `distcron standalone`, both held to the
//! same contract (`tests/runlog_contract.rs`). Inserting is idempotent on
//! `run_id`, which is what lets the log batcher retry and replay its journal
//! without ever duplicating a record.

pub mod embedded;
#[cfg(test)]
pub mod fake;
pub mod journal;
pub mod mongo;

use std::time::Duration;

use async_trait::async_trait;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Where a run is: waiting or running (`pending`, `started`), or how it
/// ended (every other status is final).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// A retry in its backoff: it starts at `scheduleTime`.
    Pending,
    /// The process was started and has not ended yet.
    Started,
    Succeeded,
    Failed,
    TimedOut,
    Killed,
    /// Its worker died mid-run (its lease ended).
    Lost,
    /// Not started: the overlap policy skipped the tick.
    Skipped,
    /// Nobody could run the tick (no live worker in its group); recorded
    /// by a manager once the tick can no longer run late.
    Missed,
}

impl RunStatus {
    pub const ALL: [RunStatus; 9] = [
        RunStatus::Pending,
        RunStatus::Started,
        RunStatus::Succeeded,
        RunStatus::Failed,
        RunStatus::TimedOut,
        RunStatus::Killed,
        RunStatus::Lost,
        RunStatus::Skipped,
        RunStatus::Missed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Pending => "pending",
            RunStatus::Started => "started",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::TimedOut => "timed_out",
            RunStatus::Killed => "killed",
            RunStatus::Lost => "lost",
            RunStatus::Skipped => "skipped",
            RunStatus::Missed => "missed",
        }
    }

    /// A run in this status has ended (or was decided not to start); only
    /// `pending` and `started` are not final.
    pub fn is_final(self) -> bool {
        !matches!(self, RunStatus::Pending | RunStatus::Started)
    }

    /// A run that ended this way is tried again while the job has retries
    /// left (and starts its `onFailure` chain after the last).
    pub fn is_retried(self) -> bool {
        matches!(self, RunStatus::Failed | RunStatus::TimedOut)
    }

    /// How far along a record is: a stored record is replaced only by one
    /// of a higher rank (see [`supersedes`]).
    pub fn rank(self) -> u8 {
        match self {
            RunStatus::Pending => 0,
            RunStatus::Started => 1,
            // A peer's guess, made when the worker's lease ended.
            RunStatus::Lost => 2,
            _ => 3,
        }
    }

    /// The statuses a record of this status replaces.
    pub fn replaces(self) -> Vec<RunStatus> {
        RunStatus::ALL
            .into_iter()
            .filter(|stored| supersedes(self, *stored))
            .collect()
    }

    /// Parse a status name as written in records and URLs.
    pub fn parse(text: &str) -> Option<RunStatus> {
        RunStatus::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

/// One run. Times are Unix epoch milliseconds and keep the old system's
/// names (`planTime`, `scheduleTime`, `startTime`, `endTime`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunRecord {
    /// Unique per run; a retried tick gets a new one.
    #[serde(rename = "run_id")]
    pub run_id: String,
    pub job_name: String,
    pub command: String,
    /// The worker that ran it (or recorded it, for `lost` and `skipped`).
    pub worker: String,
    /// The tick: the instant the schedule planned.
    pub plan_time: i64,
    /// When the worker decided to run it (after claiming the tick).
    pub schedule_time: i64,
    pub start_time: i64,
    pub end_time: i64,
    pub status: RunStatus,
    /// The exit code, when the process exited by itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// The signal that ended the process, when one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    /// stdout and stderr interleaved, capped at the configured size.
    pub output: String,
    /// Whether `output` was cut at the cap.
    pub truncated: bool,
    /// Why it could not start, or why it was killed; empty otherwise.
    pub err: String,
    /// Who asked for this run (`POST /job/run`): the token or user name and
    /// id; absent for runs of the schedule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_by: Option<String>,
    /// The run's parameters: the `env` overrides it was asked with.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub params: BTreeMap<String, String>,
    /// The run whose end started this one (a job chain).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub triggered_by: Option<String>,
}

/// What a history chart needs of one run: no output, no command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunSummary {
    #[serde(rename = "run_id")]
    pub run_id: String,
    pub status: RunStatus,
    pub start_time: i64,
    pub end_time: i64,
}

impl RunSummary {
    pub fn of(record: &RunRecord) -> RunSummary {
        RunSummary {
            run_id: record.run_id.clone(),
            status: record.status,
            start_time: record.start_time,
            end_time: record.end_time,
        }
    }
}

/// Runs that started in one minute, and how many of them failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MinuteCount {
    /// The minute's first instant, epoch ms.
    pub minute: i64,
    pub runs: u64,
    pub failures: u64,
}

/// The statuses charts and the overview count as failures (a kill is an
/// operator's act, not a failure of the job).
pub const FAILURES: [RunStatus; 3] = [RunStatus::Failed, RunStatus::TimedOut, RunStatus::Lost];

/// The minute an instant falls in (its first ms).
pub fn minute_of(ms: i64) -> i64 {
    ms - ms.rem_euclid(60_000)
}

/// Count runs per minute (pure; the embedded store and the fake use it).
pub fn per_minute(runs: impl IntoIterator<Item = (i64, RunStatus)>) -> Vec<MinuteCount> {
    let mut minutes: std::collections::BTreeMap<i64, MinuteCount> = Default::default();
    for (start, status) in runs {
        let minute = minute_of(start);
        let count = minutes.entry(minute).or_insert(MinuteCount {
            minute,
            runs: 0,
            failures: 0,
        });
        count.runs += 1;
        count.failures += u64::from(FAILURES.contains(&status));
    }
    minutes.into_values().collect()
}

/// Which runs of a job to page through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunQuery {
    pub job_name: String,
    pub status: Option<RunStatus>,
    pub skip: u64,
    pub limit: u64,
}

/// What retention removes; both rules apply when both are set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Retention {
    /// Drop runs that started longer ago than this many days (0: keep all).
    pub max_age_days: u64,
    /// Keep at most this many runs per job, the newest (0: no limit).
    pub max_runs_per_job: u64,
}

impl Default for Retention {
    /// On by default, so the log cannot grow without bound: 30 days, and
    /// 10,000 runs per job (a week of a job that fires every minute).
    fn default() -> Retention {
        Retention {
            max_age_days: 30,
            max_runs_per_job: 10_000,
        }
    }
}

impl Retention {
    /// The start time before which runs are too old, given `now_ms`.
    pub fn cutoff_ms(&self, now_ms: i64) -> Option<i64> {
        (self.max_age_days > 0)
            .then(|| now_ms - Duration::from_secs(self.max_age_days * 86_400).as_millis() as i64)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RunLogError {
    /// The store could not be reached or refused the request; retry later.
    #[error("run log unavailable: {0}")]
    Unavailable(String),
    /// The store refused some records of a batch for good (too large,
    /// invalid): retrying cannot help. Every other record of the batch is
    /// stored.
    #[error("run log refused {} record(s): {}", .0.len(), .0.first().map(|r| r.reason.as_str()).unwrap_or(""))]
    Refused(Vec<Refusal>),
    /// The store's data could not be read or written.
    #[error("run log storage: {0}")]
    Storage(String),
}

/// One record a store refused for good: its position in the batch, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub index: usize,
    pub reason: String,
}

pub type Result<T> = std::result::Result<T, RunLogError>;

/// Whether a record of status `new` replaces a stored record of the same
/// run with status `stored`. A record only moves forward: `pending` →
/// `started` → a final status. A peer's `lost` is a guess made when the
/// worker's lease ended, and the worker's own result, arriving later (a
/// partition healed, a journal shipped after a restart), is the truth; a
/// late `lost` never overwrites a real result, and duplicates change
/// nothing. So replays, retries and races all converge on one record.
pub fn supersedes(new: RunStatus, stored: RunStatus) -> bool {
    new.rank() > stored.rank()
}

/// Every run log also keeps the audit log, beside the runs.
#[async_trait]
pub trait RunLog:
    crate::audit::AuditStore + crate::notify::store::NoticeStore + Send + Sync + 'static
{
    /// Store a batch. A record whose `run_id` is already stored is skipped,
    /// so retrying a batch never duplicates anything, unless it
    /// [`supersedes`] the stored one (`started` after `pending`, a result
    /// after `started`, a real result after a peer's `lost`). Returns how
    /// many records were new or replaced, or [`RunLogError::Refused`] with
    /// the records refused for good (the rest are stored).
    async fn insert_batch(&self, records: &[RunRecord]) -> Result<u64>;

    /// One job's runs, newest first (by start time, then run id).
    async fn page(&self, query: &RunQuery) -> Result<Vec<RunRecord>>;

    /// One run by id.
    async fn get(&self, run_id: &str) -> Result<Option<RunRecord>>;

    /// The newest runs across all jobs.
    async fn recent(&self, limit: u64) -> Result<Vec<RunRecord>>;

    /// Runs of `worker` that are not final (`pending` or `started`): what a
    /// worker that died left open, for a peer to close as `lost`.
    async fn unfinished(&self, worker: &str, limit: u64) -> Result<Vec<RunRecord>>;

    /// Of `run_ids`, those with no record at all.
    async fn missing(&self, run_ids: &[String]) -> Result<Vec<String>>;

    /// How many runs match: all, one job's, and/or one status.
    async fn count(&self, job_name: Option<&str>, status: Option<RunStatus>) -> Result<u64>;

    /// How many runs started at or after `since_ms` with one of `statuses`
    /// (any status when empty): the console's overview counts.
    async fn count_since(&self, since_ms: i64, statuses: &[RunStatus]) -> Result<u64>;

    /// A job's newest `limit` runs, newest first, without their output.
    async fn history(&self, job_name: &str, limit: u64) -> Result<Vec<RunSummary>>;

    /// Runs that started from `since_ms` on, counted per minute (oldest
    /// first; minutes without runs left out), aggregated by the store.
    async fn per_minute(&self, since_ms: i64) -> Result<Vec<MinuteCount>>;

    /// A cheap round trip that proves the store answers (for `/readyz`).
    async fn ping(&self) -> Result<()>;

    /// Apply `retention` as of `now_ms`; returns how many runs were removed.
    async fn apply_retention(&self, retention: Retention, now_ms: i64) -> Result<u64>;
}

/// Apply `retention` now and then every `every`, for as long as the task
/// lives. Every manager may run it: deleting what is already gone is a
/// no-op. A failure is logged and retried at the next round.
pub fn spawn_retention(
    run_log: std::sync::Arc<dyn RunLog>,
    retention: Retention,
    every: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if retention.max_age_days == 0 && retention.max_runs_per_job == 0 {
            return;
        }
        let mut ticker = tokio::time::interval(every);
        loop {
            ticker.tick().await;
            let now_ms = crate::clock::Clock::now_ms(&crate::clock::SystemClock);
            match run_log.apply_retention(retention, now_ms).await {
                Ok(0) => {}
                Ok(removed) => tracing::info!(removed, "run log retention applied"),
                Err(error) => tracing::warn!(%error, "run log retention failed; will retry"),
            }
        }
    })
}

/// How often retention runs.
pub const RETENTION_EVERY: Duration = Duration::from_secs(3600);

/// Cut `output` to at most `cap` bytes on a character boundary; says
/// whether anything was cut.
pub fn cap_output(output: &mut String, cap: usize) -> bool {
    if output.len() <= cap {
        return false;
    }
    let mut end = cap;
    while !output.is_char_boundary(end) {
        end -= 1;
    }
    output.truncate(end);
    true
}

/// The default output cap: a page of logs per run, far below MongoDB's
/// 16 MB document limit.
pub const DEFAULT_OUTPUT_CAP: usize = 256 * 1024;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_only_moves_forward() {
        use RunStatus::*;
        let table = [
            (Started, Pending, true),
            (Succeeded, Started, true),
            (Failed, Pending, true),
            (Lost, Started, true),
            (Lost, Pending, true),
            (Started, Started, false),
            (Started, Succeeded, false),
            (Started, Lost, false),
            (Pending, Started, false),
            (Succeeded, Lost, true),
            (Failed, Lost, true),
            (Killed, Lost, true),
            (Skipped, Lost, true),
            (Lost, Lost, false),
            (Lost, Succeeded, false),
            (Succeeded, Succeeded, false),
            (Failed, Succeeded, false),
        ];
        for (new, stored, replaces) in table {
            assert_eq!(supersedes(new, stored), replaces, "{new:?} over {stored:?}");
        }
    }

    #[test]
    fn records_use_the_old_systems_names() {
        let record = RunRecord {
            params: Default::default(),
            triggered_by: None,
            run_id: "r1".into(),
            job_name: "j".into(),
            command: "true".into(),
            worker: "w".into(),
            plan_time: 1,
            schedule_time: 2,
            start_time: 3,
            end_time: 4,
            status: RunStatus::TimedOut,
            exit_code: None,
            signal: Some(9),
            output: String::new(),
            truncated: false,
            err: "timeout".into(),
            requested_by: None,
        };
        let json = serde_json::to_value(&record).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "run_id": "r1", "jobName": "j", "command": "true", "worker": "w",
                "planTime": 1, "scheduleTime": 2, "startTime": 3, "endTime": 4,
                "status": "timed_out", "signal": 9, "output": "", "truncated": false,
                "err": "timeout"
            })
        );
        assert_eq!(serde_json::from_value::<RunRecord>(json).unwrap(), record);
    }

    #[test]
    fn status_names_round_trip() {
        for status in RunStatus::ALL {
            assert_eq!(RunStatus::parse(status.as_str()), Some(status));
        }
        assert_eq!(RunStatus::parse("ok"), None);
    }

    #[tokio::test]
    async fn the_retention_task_removes_old_runs_by_default() {
        let dir = tempfile::tempdir().unwrap();
        let log = std::sync::Arc::new(
            embedded::EmbeddedRunLog::open(&dir.path().join("runs.redb")).unwrap(),
        );
        let mut old = serde_json::from_value::<RunRecord>(serde_json::json!({
            "run_id": "ancient", "jobName": "j", "command": "true", "worker": "w",
            "planTime": 0, "scheduleTime": 0, "startTime": 0, "endTime": 0,
            "status": "succeeded", "output": "", "truncated": false, "err": ""
        }))
        .unwrap();
        log.insert_batch(std::slice::from_ref(&old)).await.unwrap();
        old.run_id = "recent".into();
        old.start_time = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        log.insert_batch(&[old]).await.unwrap();
        let task = spawn_retention(log.clone(), Retention::default(), RETENTION_EVERY);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while log.count(None, None).await.unwrap() != 1 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "retention did not run"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(log.get("recent").await.unwrap().is_some());
        task.abort();
    }

    #[test]
    fn output_is_capped_on_a_character_boundary() {
        let mut s = "aé".repeat(3); // 9 bytes
        assert!(cap_output(&mut s, 4));
        assert_eq!(s, "aéa");
        let mut short = "abc".to_string();
        assert!(!cap_output(&mut short, 3));
        assert_eq!(short, "abc");
    }
}
