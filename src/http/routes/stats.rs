//! The console's charts: a job's recent runs (`GET /job/history`) and the
//! cluster's runs and failures per minute (`GET /stats/minutes`). The store
//! does the work (a projection, an aggregation); the browser gets only the
//! numbers it draws.

use actix_web::{HttpResponse, web};
use serde::{Deserialize, Serialize};

use crate::http::error::{in_range, ok};
use crate::http::{ApiError, AppState};
use crate::job::validate_name;
use crate::runlog::{FAILURES, MinuteCount, RunStatus, RunSummary, minute_of};

const HISTORY_DEFAULT: u64 = 50;
const HISTORY_MAX: u64 = 500;
const MINUTES_DEFAULT: i64 = 60;
const MINUTES_MAX: i64 = 1_440;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    name: String,
    limit: Option<u64>,
}

#[derive(Serialize, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HistoryBar {
    #[serde(flatten)]
    run: RunSummary,
    duration_ms: i64,
}

#[derive(Serialize, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct History {
    /// Oldest first, as a chart draws them left to right.
    runs: Vec<HistoryBar>,
    succeeded: usize,
    failed: usize,
    /// Succeeded out of the runs that ended succeeded or failed (skipped
    /// and unfinished runs do not count); `None` without any.
    success_rate: Option<f64>,
}

/// The chart's numbers from the newest-first summaries. Pure.
pub fn history_of(mut newest_first: Vec<RunSummary>) -> History {
    newest_first.reverse();
    let succeeded = newest_first
        .iter()
        .filter(|r| r.status == RunStatus::Succeeded)
        .count();
    let failed = newest_first
        .iter()
        .filter(|r| FAILURES.contains(&r.status))
        .count();
    let decided = succeeded + failed;
    History {
        runs: newest_first
            .into_iter()
            .map(|run| HistoryBar {
                duration_ms: (run.end_time - run.start_time).max(0),
                run,
            })
            .collect(),
        succeeded,
        failed,
        success_rate: (decided > 0).then(|| succeeded as f64 / decided as f64),
    }
}

/// `GET /job/history?name=&limit=50`: a job's last runs for its chart.
pub async fn history(
    state: web::Data<AppState>,
    query: web::Query<HistoryQuery>,
) -> Result<HttpResponse, ApiError> {
    validate_name(&query.name)?;
    let limit = in_range(
        "limit",
        query.limit.unwrap_or(HISTORY_DEFAULT),
        1,
        HISTORY_MAX,
    )?;
    let runs = state.run_log.history(&query.name, limit).await?;
    Ok(ok(history_of(runs)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MinutesQuery {
    minutes: Option<i64>,
}

/// Every minute from `first` to `last`, those without runs as zeros. Pure.
pub fn every_minute(counts: &[MinuteCount], first: i64, last: i64) -> Vec<MinuteCount> {
    let mut out = Vec::new();
    let mut minute = minute_of(first);
    while minute <= last {
        out.push(
            counts
                .iter()
                .find(|c| c.minute == minute)
                .copied()
                .unwrap_or(MinuteCount {
                    minute,
                    runs: 0,
                    failures: 0,
                }),
        );
        minute += 60_000;
    }
    out
}

/// `GET /stats/minutes?minutes=60`: runs and failures per minute, the
/// current minute last.
pub async fn minutes(
    state: web::Data<AppState>,
    query: web::Query<MinutesQuery>,
) -> Result<HttpResponse, ApiError> {
    let span = in_range(
        "minutes",
        query.minutes.unwrap_or(MINUTES_DEFAULT),
        1,
        MINUTES_MAX,
    )?;
    let now = (state.clock)().timestamp_millis();
    let first = minute_of(now) - (span - 1) * 60_000;
    let counts = state.run_log.per_minute(first).await?;
    Ok(ok(every_minute(&counts, first, now)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(id: &str, status: RunStatus, start: i64, end: i64) -> RunSummary {
        RunSummary {
            run_id: id.into(),
            status,
            start_time: start,
            end_time: end,
        }
    }

    #[test]
    fn history_is_oldest_first_with_a_rate_over_decided_runs() {
        let cases = [
            (vec![], (0, 0, None)),
            (
                vec![
                    summary("c", RunStatus::Skipped, 30, 30),
                    summary("b", RunStatus::Failed, 20, 25),
                    summary("a", RunStatus::Succeeded, 10, 13),
                ],
                (1, 1, Some(0.5)),
            ),
            (vec![summary("a", RunStatus::Started, 10, 5)], (0, 0, None)),
        ];
        for (runs, (succeeded, failed, rate)) in cases {
            let h = history_of(runs.clone());
            assert_eq!(
                (h.succeeded, h.failed, h.success_rate),
                (succeeded, failed, rate)
            );
            let ids: Vec<&str> = h.runs.iter().map(|r| r.run.run_id.as_str()).collect();
            let mut want: Vec<&str> = runs.iter().map(|r| r.run_id.as_str()).collect();
            want.reverse();
            assert_eq!(ids, want);
            assert!(h.runs.iter().all(|r| r.duration_ms >= 0));
        }
    }

    #[test]
    fn every_minute_fills_the_gaps_with_zeros() {
        let c = |minute, runs, failures| MinuteCount {
            minute,
            runs,
            failures,
        };
        assert_eq!(
            every_minute(&[c(60_000, 4, 1)], 0, 150_000),
            [c(0, 0, 0), c(60_000, 4, 1), c(120_000, 0, 0)]
        );
        assert_eq!(every_minute(&[], 61_000, 61_000), [c(60_000, 0, 0)]);
    }
}
