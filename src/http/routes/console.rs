//! Endpoints shaped for the console's screens, so a screen is one request:
//! `GET /job/table` (a page of jobs with next fire time, last run and runs
//! in progress, plus the total for paging) and `GET /overview` (the strip
//! of counts at the top).

use std::collections::HashMap;

use actix_web::{HttpRequest, HttpResponse, web};
use futures_util::future::join_all;
use serde::Serialize;

use super::job::{ListQuery, shown};
use super::worker::workers;
use crate::http::error::{MAX_SKIP, in_range, ok};
use crate::http::guard::principal;
use crate::http::job_index::page_jobs;
use crate::http::{ApiError, AppState};
use crate::job::Job;
use crate::keyspace::RunningEntry;
use crate::runlog::{FAILURES, RunQuery, RunRecord, RunStatus};

/// The most rows `/job/table` returns at once.
const TABLE_MAX_LIMIT: usize = 200;
const TABLE_DEFAULT_LIMIT: usize = 50;

/// A run, without its output: what a table row shows.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RunBrief {
    #[serde(rename = "run_id")]
    run_id: String,
    status: RunStatus,
    start_time: i64,
    end_time: i64,
}

impl From<RunRecord> for RunBrief {
    fn from(run: RunRecord) -> RunBrief {
        RunBrief {
            run_id: run.run_id,
            status: run.status,
            start_time: run.start_time,
            end_time: run.end_time,
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JobRow {
    job: Job,
    /// The next fire time, RFC 3339 UTC; `None` while paused.
    next: Option<String>,
    /// Why there is no next time to show (`@delay`: it depends on the run).
    #[serde(skip_serializing_if = "Option::is_none")]
    schedule_note: Option<String>,
    last_run: Option<RunBrief>,
    /// Runs of this job in progress right now.
    running: usize,
}

#[derive(Serialize)]
struct JobTable {
    total: usize,
    rows: Vec<JobRow>,
}

/// `GET /job/table?skip=&limit=&q=`: one page of the jobs table.
pub async fn table(
    state: web::Data<AppState>,
    req: HttpRequest,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let who = principal(&req);
    let limit = query.limit.unwrap_or(TABLE_DEFAULT_LIMIT);
    if limit == 0 || limit > TABLE_MAX_LIMIT {
        return Err(ApiError::BadRequest(format!(
            "limit: must be from 1 to {TABLE_MAX_LIMIT}"
        )));
    }
    let needle = query.q.as_deref().map(str::to_lowercase);
    let skip = in_range("skip", query.skip.unwrap_or(0), 0, MAX_SKIP as usize)?;
    let (total, jobs) = match state.jobs.page_with_total(needle.as_deref(), skip, limit) {
        Some(page) => page,
        None => {
            // The index is not ready yet: ask the coordinator.
            let (kvs, _) = state.coord.list(crate::keyspace::JOBS).await?;
            let all: Vec<Job> = kvs
                .iter()
                .filter_map(|kv| serde_json::from_slice(&kv.value).ok())
                .collect();
            let total = page_jobs(all.iter().cloned(), needle.as_deref(), 0, usize::MAX).len();
            (
                total,
                page_jobs(all.into_iter(), needle.as_deref(), skip, limit),
            )
        }
    };

    let running = running_per_job(&state).await?;
    let run_log = &state.run_log;
    let last_runs = join_all(jobs.iter().map(|job| {
        let query = RunQuery {
            job_name: job.name.clone(),
            status: None,
            skip: 0,
            limit: 1,
        };
        async move { run_log.page(&query).await }
    }))
    .await;
    let now = (state.clock)();
    let mut rows = Vec::with_capacity(jobs.len());
    for (job, last) in jobs.into_iter().zip(last_runs) {
        let schedule = job.validate(now).ok();
        let next = match (job.enabled, &schedule) {
            (true, Some(schedule)) => schedule
                .upcoming(now, 1)
                .first()
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
            _ => None,
        };
        rows.push(JobRow {
            schedule_note: schedule.and_then(|s| s.explain()),
            running: running.get(&job.name).copied().unwrap_or(0),
            last_run: last?.into_iter().next().map(RunBrief::from),
            next,
            job: shown(job, &who),
        });
    }
    Ok(ok(JobTable { total, rows }))
}

async fn running_per_job(state: &AppState) -> Result<HashMap<String, usize>, ApiError> {
    let (kvs, _) = state.coord.list(crate::keyspace::RUNNING).await?;
    let mut counts = HashMap::new();
    for entry in kvs
        .iter()
        .filter_map(|kv| serde_json::from_slice::<RunningEntry>(&kv.value).ok())
    {
        *counts.entry(entry.job_name).or_default() += 1;
    }
    Ok(counts)
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Overview {
    jobs: usize,
    workers_alive: usize,
    running: usize,
    runs_last_minute: u64,
    runs_last_hour: u64,
    /// Failed, timed out or lost in the last hour.
    failures_last_hour: u64,
}

/// `GET /overview`: the console's strip of counts.
pub async fn overview(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let now_ms = (state.clock)().timestamp_millis();
    let (minute, hour, failures) = tokio::join!(
        state.run_log.count_since(now_ms - 60_000, &[]),
        state.run_log.count_since(now_ms - 3_600_000, &[]),
        state.run_log.count_since(now_ms - 3_600_000, &FAILURES),
    );
    let jobs = super::job::job_count(&state).await?;
    let running: usize = running_per_job(&state).await?.values().sum();
    Ok(ok(Overview {
        jobs,
        workers_alive: workers(&state).await?.len(),
        running,
        runs_last_minute: minute?,
        runs_last_hour: hour?,
        failures_last_hour: failures?,
    }))
}
