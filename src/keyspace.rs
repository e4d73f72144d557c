//! The coordinator's keyspace: every key prefix, how keys are built, and the
//! value stored under each (see DESIGN.md, "Keyspace"). Keys are relative;
//! the etcd engine adds its configured prefix.
//!
//! | prefix | value | lease |
//! |---|---|---|
//! | `jobs/<job>` | [`crate::job::Job`] | none |
//! | `workers/<id>` | [`WorkerInfo`] | the worker's session |
//! | `ticks/<job>/<ms>` | `<worker> <nonce>` ([`crate::coord::claims`]) | session, then a bucket lease |
//! | `ticks/<job>/after/<run>` | a chained run's claim ([`crate::chain`]) | as above |
//! | `running/<job>/<run_id>` | [`RunningEntry`] | the worker's session |
//! | `run/<job>`, `run/<job>/<parent run>` | [`RunRequest`] (a chain's: [`crate::chain`]) | short |
//! | `kill/<job>` | the request's instant | short |
//! | `delay/<job>` | [`DelayState`] | none; deleted with the job |
//! | `sweeper` | `<manager> <nonce>`: whose turn it is to sweep ([`crate::missed::turn`]) | that manager's session |
//! | `auth/tokens/`, `auth/users/` | see [`crate::auth`] | none |

use serde::{Deserialize, Serialize};

pub use crate::actors::registrar::WorkerInfo;
pub use crate::coord::claims::{job_ticks_prefix, tick_key};

pub const JOBS: &str = "jobs/";
pub const WORKERS: &str = "workers/";
pub const TICKS: &str = "ticks/";
pub const RUNNING: &str = "running/";
pub const RUN_REQUESTS: &str = "run/";
pub const KILLS: &str = "kill/";
pub const DELAYS: &str = "delay/";
pub const SWEEPER: &str = "sweeper";

pub fn job_key(job: &str) -> String {
    format!("{JOBS}{job}")
}

pub fn worker_key(id: &str) -> String {
    format!("{WORKERS}{id}")
}

/// The key under which a run in progress is registered.
pub fn running_key(job: &str, run_id: &str) -> String {
    format!("{RUNNING}{job}/{run_id}")
}

/// Every run of one job in progress.
pub fn running_prefix(job: &str) -> String {
    format!("{RUNNING}{job}/")
}

pub fn run_request_key(job: &str) -> String {
    format!("{RUN_REQUESTS}{job}")
}

pub fn kill_key(job: &str) -> String {
    format!("{KILLS}{job}")
}

pub fn delay_key(job: &str) -> String {
    format!("{DELAYS}{job}")
}

/// The name a key gives under `prefix` (`jobs/backup` -> `backup`).
pub fn name_in<'k>(key: &'k str, prefix: &str) -> &'k str {
    key.strip_prefix(prefix).unwrap_or(key)
}

/// The value of a `running/<job>/<run_id>` key: enough for a live worker to
/// write the `lost` record if this worker dies mid-run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunningEntry {
    #[serde(rename = "run_id")]
    pub run_id: String,
    pub job_name: String,
    pub command: String,
    pub worker: String,
    pub plan_time: i64,
    pub schedule_time: i64,
    pub start_time: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_by: Option<String>,
}

/// The value of a `run/<job>` key (`POST /job/run`): the instant to run
/// and who asked. Older managers wrote the instant alone, as a number.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunRequest {
    pub plan_time: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_by: Option<String>,
    /// `env` overrides for this run (its parameters).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub params: std::collections::BTreeMap<String, String>,
    /// The run whose end asks for this one (a chain, `run/<job>/<parent>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub triggered_by: Option<String>,
}

impl RunRequest {
    pub fn parse(value: &[u8]) -> Option<RunRequest> {
        if let Ok(request) = serde_json::from_slice::<RunRequest>(value) {
            return Some(request);
        }
        let plan_time = std::str::from_utf8(value).ok()?.trim().parse().ok()?;
        Some(RunRequest {
            plan_time,
            ..RunRequest::default()
        })
    }
}

/// The value of `delay/<job>`: a fixed-delay job's chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DelayState {
    pub last_tick: i64,
    pub last_end: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_request_reads_json_and_the_older_bare_number() {
        let table: [(&[u8], Option<RunRequest>); 6] = [
            (
                br#"{"planTime":5,"requestedBy":"ana (user:ana)"}"#,
                Some(RunRequest {
                    plan_time: 5,
                    requested_by: Some("ana (user:ana)".into()),
                    ..RunRequest::default()
                }),
            ),
            (
                br#"{"planTime":6,"params":{"DAY":"mon"},"triggeredBy":"a-1-w"}"#,
                Some(RunRequest {
                    plan_time: 6,
                    params: [("DAY".to_string(), "mon".to_string())].into(),
                    triggered_by: Some("a-1-w".into()),
                    ..RunRequest::default()
                }),
            ),
            (
                br#"{"planTime":7}"#,
                Some(RunRequest {
                    plan_time: 7,
                    ..RunRequest::default()
                }),
            ),
            (
                b"1700000000000",
                Some(RunRequest {
                    plan_time: 1_700_000_000_000,
                    ..RunRequest::default()
                }),
            ),
            (b"soon", None),
            (br#"{"requestedBy":"x"}"#, None),
        ];
        for (value, expected) in table {
            assert_eq!(
                RunRequest::parse(value),
                expected,
                "{}",
                String::from_utf8_lossy(value)
            );
        }
    }

    #[test]
    fn keys_are_built_and_read_back() {
        assert_eq!(job_key("backup"), "jobs/backup");
        assert_eq!(name_in(&job_key("backup"), JOBS), "backup");
        assert_eq!(running_key("j", "r1"), "running/j/r1");
        assert!(running_key("j", "r1").starts_with(&running_prefix("j")));
        assert!(!running_key("jj", "r1").starts_with(&running_prefix("j")));
        assert_eq!(tick_key("j", 5), "ticks/j/5");
        assert_eq!(delay_key("j"), "delay/j");
    }
}
