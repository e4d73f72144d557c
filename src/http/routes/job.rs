//! `/job/*`: the old system's job endpoints (save, delete, kill, list, log)
//! with their exact shapes, and the new ones (pause, resume, get, running).
//!
//! Name-only requests take the old form (`name=...`), a JSON body
//! (`{"name": ...}`), or a query string.

use std::collections::BTreeMap;
use std::time::Duration;

use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};

use crate::auth::{Principal, Role};
use crate::http::error::{MAX_SKIP, in_range, ok};
use crate::http::guard::{note, principal};
use crate::http::job_index::page_jobs;
use crate::http::{ApiError, AppState, body};
use crate::job::{Job, validate_name};
use crate::keyspace::{self, RunRequest, RunningEntry, delay_key, job_key};
use crate::runlog::{RunQuery, RunRecord, RunStatus};

/// A kill or run request lives this long: workers act on it at once; the
/// lease just keeps `kill/` and `run/` from filling up.
const KILL_REQUEST_TTL: Duration = Duration::from_secs(10);
/// `/job/log` page size: the old default, and the most one page returns.
const LOG_DEFAULT_LIMIT: u64 = 20;
const LOG_MAX_LIMIT: u64 = 1_000;
/// `/job/list` page size, when one is given (without one the old clients
/// get every job, as before).
const LIST_MAX_LIMIT: usize = 10_000;

async fn load_job(state: &AppState, name: &str) -> Result<Job, ApiError> {
    validate_name(name)?;
    let kv = state
        .coord
        .get(&job_key(name))
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("job {name} not found")))?;
    serde_json::from_slice(&kv.value)
        .map_err(|e| ApiError::Internal(format!("stored job {name} is unreadable: {e}")))
}

/// Refuse a principal scoped to another group.
pub(super) fn check_group(principal: &Principal, job: &Job) -> Result<(), ApiError> {
    if principal.may_act_on_group(&job.group) {
        return Ok(());
    }
    Err(ApiError::Forbidden(format!(
        "this token acts only on jobs of group '{}'; job {} is in group '{}'",
        principal.group.as_deref().unwrap_or(""),
        job.name,
        job.group
    )))
}

/// What a viewer sees of a job: env values as `***`.
pub(super) fn shown(job: Job, principal: &Principal) -> Job {
    if principal.role > Role::Viewer {
        return job;
    }
    let mut job = job;
    for value in job.env.values_mut() {
        *value = "***".into();
    }
    job
}

/// What a viewer sees of a run: its parameter values as `***`.
pub(super) fn shown_run(run: RunRecord, principal: &Principal) -> RunRecord {
    if principal.role > Role::Viewer || run.params.is_empty() {
        return run;
    }
    let mut run = run;
    for value in run.params.values_mut() {
        *value = "***".into();
    }
    run
}

/// Every job definition: from the index once it is ready, else etcd.
pub(super) async fn all_jobs(state: &AppState) -> Result<Vec<Job>, ApiError> {
    if let Some(jobs) = state.jobs.page(None, 0, usize::MAX) {
        return Ok(jobs);
    }
    let (kvs, _) = state.coord.list(keyspace::JOBS).await?;
    Ok(kvs
        .iter()
        .filter_map(|kv| serde_json::from_slice::<Job>(&kv.value).ok())
        .collect())
}

/// A saved job's chains must name jobs that exist, that the principal may
/// act on, and must not loop back to it.
async fn check_chains(state: &AppState, who: &Principal, job: &Job) -> Result<(), ApiError> {
    if !job.has_chains() {
        return Ok(());
    }
    let mut jobs = all_jobs(state).await?;
    jobs.retain(|j| j.name != job.name);
    let known = |name: &str| name == job.name || jobs.iter().any(|j| j.name == name);
    crate::chain::check_targets(job, &known)?;
    for child in job.on_success.iter().chain(&job.on_failure) {
        if let Some(child) = jobs.iter().find(|j| &j.name == child) {
            check_group(who, child)?;
        }
    }
    let mut all: Vec<&Job> = jobs.iter().collect();
    all.push(job);
    crate::chain::check_cycles(&all, [job.name.as_str()])?;
    Ok(())
}

/// Load a job a request names and check the principal may act on it.
async fn load_job_for(state: &AppState, req: &HttpRequest, name: &str) -> Result<Job, ApiError> {
    note(req, |n| n.job = Some(name.to_string()));
    let job = load_job(state, name).await?;
    check_group(&principal(req), &job)?;
    Ok(job)
}

/// Store a job, stamped with the time of this save.
pub(super) async fn store_job(state: &AppState, job: &mut Job) -> Result<(), ApiError> {
    job.updated_at = Some((state.clock)().timestamp_millis());
    let value = serde_json::to_vec(job).map_err(|e| ApiError::Internal(e.to_string()))?;
    state.coord.put(&job_key(&job.name), value, None).await?;
    state.jobs.saved(job);
    Ok(())
}

#[derive(Deserialize)]
pub struct SaveForm {
    job: String,
}

/// `POST /job/save`: form field `job` holding the job JSON (the old
/// clients), or the job JSON as the body. Answers the previous version.
pub async fn save(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = body::read(payload).await?;
    let mut job = if body::is_json(&req) {
        let text = std::str::from_utf8(&body)
            .map_err(|_| ApiError::BadRequest("JSON body: not UTF-8".into()))?;
        Job::from_json(text)?
    } else {
        let form: SaveForm = body::parse(&req, &body)?;
        Job::from_json(&form.job)?
    };
    note(&req, |n| n.job = Some(job.name.clone()));
    job.validate((state.clock)())?;
    check_misfire_window(&state, &job)?;
    if let Some(rules) = &job.notify {
        state
            .notify
            .check_rules(rules)
            .map_err(|message| crate::job::JobError {
                field: "notify",
                message,
            })?;
    }
    let who = principal(&req);
    check_group(&who, &job)?;
    check_chains(&state, &who, &job).await?;
    let previous = match load_job(&state, &job.name).await {
        Ok(previous) => Some(previous),
        Err(ApiError::NotFound(_)) => None,
        Err(e) => return Err(e),
    };
    match &previous {
        Some(previous) => check_group(&who, previous)?,
        None => check_job_limit(&state).await?,
    }
    let as_json = |j: &Job| serde_json::to_value(j).unwrap_or_default();
    let changes =
        crate::audit::job_changes(previous.as_ref().map(as_json).as_ref(), &as_json(&job));
    store_job(&state, &mut job).await?;
    note(&req, |n| n.changes = changes);
    tracing::info!(job = %job.name, "job saved");
    Ok(ok(previous))
}

/// Refuse a misfire window longer than the cluster keeps tick claims: a
/// tick found free in it could be one that already ran.
pub(super) fn check_misfire_window(state: &AppState, job: &Job) -> Result<(), ApiError> {
    let (_, window) = job.misfire_rule(std::time::Duration::ZERO);
    if window > state.max_misfire_window {
        let field = if job.misfire_window_secs.is_some() {
            "misfireWindowSecs"
        } else {
            "catchUp"
        };
        return Err(ApiError::BadRequest(format!(
            "{field}: {} s is longer than this cluster can guard (tick claims are kept for claimRetentionSecs; at most {} s)",
            window.as_secs(),
            state.max_misfire_window.as_secs()
        )));
    }
    Ok(())
}

/// How many jobs the cluster holds.
pub(super) async fn job_count(state: &AppState) -> Result<usize, ApiError> {
    Ok(match state.jobs.page_with_total(None, 0, 0) {
        Some((total, _)) => total,
        None => state.coord.list(keyspace::JOBS).await?.0.len(),
    })
}

/// Refuse a new job once the cluster holds `maxJobs`.
async fn check_job_limit(state: &AppState) -> Result<(), ApiError> {
    let count = job_count(state).await?;
    if count >= state.max_jobs {
        return Err(ApiError::BadRequest(format!(
            "maxJobs: the cluster already holds {count} jobs, the configured limit"
        )));
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NameForm {
    name: String,
}

/// The job name of a name-only request: body (form or JSON), else query.
async fn name_of(req: &HttpRequest, payload: web::Payload) -> Result<String, ApiError> {
    let body = body::read(payload).await?;
    let form: NameForm = if body.is_empty() {
        body::parse_query(req)?
    } else {
        body::parse(req, &body)?
    };
    validate_name(&form.name)?;
    Ok(form.name)
}

/// `POST /job/delete`: answers the deleted job.
pub async fn delete(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let name = name_of(&req, payload).await?;
    load_job_for(&state, &req, &name).await?;
    let kv = state
        .coord
        .delete(&job_key(&name))
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("job {name} not found")))?;
    state.jobs.deleted(&name);
    // A fixed-delay chain's state goes with its job (best effort).
    if let Err(error) = state.coord.delete(&delay_key(&name)).await {
        tracing::warn!(job = %name, %error, "cannot delete the fixed-delay state");
    }
    let job: Option<Job> = serde_json::from_slice(&kv.value).ok();
    tracing::info!(job = %name, "job deleted");
    Ok(ok(job))
}

/// `POST /job/kill`: every run of the job in progress, on any worker, is
/// ended (SIGTERM to its process group, SIGKILL after the grace).
pub async fn kill(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let name = name_of(&req, payload).await?;
    load_job_for(&state, &req, &name).await?;
    let lease = state.coord.grant(KILL_REQUEST_TTL).await?;
    let at = (state.clock)().timestamp_millis().to_string();
    state
        .coord
        .put(&keyspace::kill_key(&name), at.into_bytes(), Some(lease))
        .await?;
    tracing::info!(job = %name, "kill requested");
    Ok(ok(serde_json::Value::Null))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RunRequested {
    /// The instant the run is planned for (its `planTime`), epoch ms.
    plan_time: i64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunForm {
    name: String,
    /// `env` overrides for this run only (its parameters).
    #[serde(default)]
    env: BTreeMap<String, String>,
}

/// The job and parameters of a run request: a JSON body may carry `env`;
/// the old form and the query string name the job only.
async fn run_form_of(req: &HttpRequest, payload: web::Payload) -> Result<RunForm, ApiError> {
    let body = body::read(payload).await?;
    let form: RunForm = if body.is_empty() {
        let NameForm { name } = body::parse_query(req)?;
        RunForm {
            name,
            env: BTreeMap::new(),
        }
    } else if body::is_json(req) {
        body::parse(req, &body)?
    } else {
        let NameForm { name } = body::parse(req, &body)?;
        RunForm {
            name,
            env: BTreeMap::new(),
        }
    };
    validate_name(&form.name)?;
    Ok(form)
}

/// `POST /job/run`: run the job now, once, on the worker that owns it,
/// with `env` overrides if given. The request is a tick at this instant,
/// claimed like any other, so it runs once even if several workers see it.
pub async fn run_now(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let RunForm { name, env } = run_form_of(&req, payload).await?;
    let job = load_job_for(&state, &req, &name).await?;
    // Parameters follow the job's own `env` rules, merged.
    let mut merged = job.env.clone();
    merged.extend(env.clone());
    crate::job::validate_env(&merged).map_err(|message| crate::job::JobError {
        field: "env",
        message,
    })?;
    let plan_time = (state.clock)().timestamp_millis();
    let asker = principal(&req);
    let params: Vec<&String> = env.keys().collect();
    note(&req, |n| {
        n.changes
            .insert("planTime".into(), serde_json::json!(plan_time));
        if !params.is_empty() {
            // Names only: values may be secrets.
            n.changes.insert("params".into(), serde_json::json!(params));
        }
    });
    let request = RunRequest {
        plan_time,
        requested_by: Some(format!("{} ({})", asker.name, asker.id)),
        params: env,
        triggered_by: None,
    };
    let lease = state.coord.grant(KILL_REQUEST_TTL).await?;
    state
        .coord
        .put(
            &keyspace::run_request_key(&name),
            serde_json::to_vec(&request).unwrap_or_default(),
            Some(lease),
        )
        .await?;
    tracing::info!(job = %name, plan_time, "run requested");
    Ok(ok(RunRequested { plan_time }))
}

async fn set_enabled(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
    enabled: bool,
) -> Result<HttpResponse, ApiError> {
    let name = name_of(&req, payload).await?;
    let mut job = load_job_for(&state, &req, &name).await?;
    job.enabled = enabled;
    store_job(&state, &mut job).await?;
    Ok(ok(shown(job, &principal(&req))))
}

/// `POST /job/pause`: the job keeps its definition and fires nothing.
pub async fn pause(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    set_enabled(state, req, payload, false).await
}

/// `POST /job/resume`.
pub async fn resume(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    set_enabled(state, req, payload, true).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    pub(super) skip: Option<usize>,
    pub(super) limit: Option<usize>,
    /// Keep jobs whose name contains this text (case-insensitive).
    pub(super) q: Option<String>,
}

/// `GET /job/list`: all jobs in name order, as before; `skip`, `limit` and
/// `q` page and filter.
pub async fn list(
    state: web::Data<AppState>,
    req: HttpRequest,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let who = principal(&req);
    if query.limit.is_some_and(|l| l == 0 || l > LIST_MAX_LIMIT) {
        return Err(ApiError::BadRequest(format!(
            "limit: must be from 1 to {LIST_MAX_LIMIT} (leave it out for every job)"
        )));
    }
    let needle = query.q.as_deref().map(str::to_lowercase);
    let skip = in_range("skip", query.skip.unwrap_or(0), 0, MAX_SKIP as usize)?;
    let limit = query.limit.unwrap_or(usize::MAX);
    if let Some(page) = state.jobs.page(needle.as_deref(), skip, limit) {
        return Ok(ok(page
            .into_iter()
            .map(|j| shown(j, &who))
            .collect::<Vec<_>>()));
    }
    // The index is not ready yet (the manager just started): ask etcd.
    // Without a name filter, a page needs only its first skip + limit keys.
    let kvs = match (&query.q, query.limit) {
        (None, Some(_)) => {
            let wanted = skip.saturating_add(limit);
            state
                .coord
                .list_first(keyspace::JOBS, wanted as u64)
                .await?
        }
        _ => state.coord.list(keyspace::JOBS).await?.0,
    };
    let jobs = kvs
        .iter()
        .filter_map(|kv| serde_json::from_slice::<Job>(&kv.value).ok());
    let page = page_jobs(jobs, needle.as_deref(), skip, limit);
    Ok(ok(page
        .into_iter()
        .map(|j| shown(j, &who))
        .collect::<Vec<_>>()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogQuery {
    name: Option<String>,
    skip: Option<u64>,
    limit: Option<u64>,
    status: Option<String>,
}

/// `GET /job/log?name=&skip=&limit=&status=`: a job's runs, newest first.
pub async fn log(
    state: web::Data<AppState>,
    req: HttpRequest,
    query: web::Query<LogQuery>,
) -> Result<HttpResponse, ApiError> {
    let query = query.into_inner();
    let name = query
        .name
        .ok_or_else(|| ApiError::BadRequest("name: is required".into()))?;
    validate_name(&name)?;
    let limit = in_range(
        "limit",
        query.limit.unwrap_or(LOG_DEFAULT_LIMIT),
        1,
        LOG_MAX_LIMIT,
    )?;
    let skip = in_range("skip", query.skip.unwrap_or(0), 0, MAX_SKIP)?;
    let status = match query.status.as_deref() {
        None | Some("") => None,
        Some(text) => Some(RunStatus::parse(text).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "status: '{text}' is not one of succeeded failed timed_out killed lost skipped"
            ))
        })?),
    };
    let who = principal(&req);
    let runs: Vec<RunRecord> = state
        .run_log
        .page(&RunQuery {
            job_name: name,
            status,
            skip,
            limit,
        })
        .await?
        .into_iter()
        .map(|r| shown_run(r, &who))
        .collect();
    Ok(ok(runs))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JobDetail {
    job: Job,
    /// The next 5 fire times, RFC 3339 UTC (none while paused).
    next: Vec<String>,
    /// Why `next` is empty although the job runs (`@delay`).
    #[serde(skip_serializing_if = "Option::is_none")]
    schedule_note: Option<String>,
    last_run: Option<RunRecord>,
    running: Vec<RunningEntry>,
    /// The jobs whose runs start this one (chains), and when.
    upstream: Vec<crate::chain::Link>,
    /// The jobs this one's runs start.
    downstream: Vec<crate::chain::Link>,
}

/// `GET /job/get?name=`: definition, next fire times, last run, runs in
/// progress.
pub async fn get(
    state: web::Data<AppState>,
    req: HttpRequest,
    query: web::Query<NameForm>,
) -> Result<HttpResponse, ApiError> {
    let job = load_job(&state, &query.name).await?;
    let now = (state.clock)();
    let schedule = job.validate(now).ok();
    let next = match (job.enabled, &schedule) {
        (true, Some(schedule)) => schedule
            .upcoming(now, 5)
            .iter()
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            .collect(),
        _ => Vec::new(),
    };
    let schedule_note = schedule.and_then(|s| s.explain());
    let last_run = state
        .run_log
        .page(&RunQuery {
            job_name: job.name.clone(),
            status: None,
            skip: 0,
            limit: 1,
        })
        .await?
        .into_iter()
        .next();
    let who = principal(&req);
    let last_run = last_run.map(|r| shown_run(r, &who));
    let (kvs, _) = state
        .coord
        .list(&keyspace::running_prefix(&job.name))
        .await?;
    let upstream = match state.jobs.upstream(&job.name) {
        Some(links) => links,
        None => crate::chain::upstream(all_jobs(&state).await?.iter(), &job.name),
    };
    let downstream = crate::chain::downstream(&job);
    let running = kvs
        .iter()
        .filter_map(|kv| serde_json::from_slice(&kv.value).ok())
        .collect();
    Ok(ok(JobDetail {
        job: shown(job, &who),
        next,
        schedule_note,
        last_run,
        running,
        upstream,
        downstream,
    }))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RunningRun {
    #[serde(flatten)]
    entry: RunningEntry,
    elapsed_ms: i64,
}

/// `GET /job/running`: every run in progress, on every worker.
pub async fn running(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let (kvs, _) = state.coord.list(keyspace::RUNNING).await?;
    let now = (state.clock)().timestamp_millis();
    let runs: Vec<RunningRun> = kvs
        .iter()
        .filter_map(|kv| serde_json::from_slice::<RunningEntry>(&kv.value).ok())
        .map(|entry| RunningRun {
            elapsed_ms: (now - entry.start_time).max(0),
            entry,
        })
        .collect();
    Ok(ok(runs))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunQueryById {
    id: String,
}

/// `GET /run/get?id=`: one run with its full output.
pub async fn run_get(
    state: web::Data<AppState>,
    req: HttpRequest,
    query: web::Query<RunQueryById>,
) -> Result<HttpResponse, ApiError> {
    let run = state
        .run_log
        .get(&query.id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("run {} not found", query.id)))?;
    Ok(ok(shown_run(run, &principal(&req))))
}
