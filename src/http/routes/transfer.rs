//! `/job/export` and `/job/import`: every job as one JSON document, and
//! that document applied back, all or nothing.
//!
//! An import is checked whole before anything is written: each job as a
//! save would check it, names unique, chains that point at jobs of the
//! result and do not loop. Only then are the writes made; if one fails,
//! those already made are undone (best effort) and the error says so.

use std::collections::{BTreeMap, BTreeSet};

use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};

use super::job::{all_jobs, check_group};
use crate::auth::Principal;
use crate::http::error::ok;
use crate::http::guard::{note, principal};
use crate::http::{ApiError, AppState, body};
use crate::job::{Job, JobError};
use crate::keyspace::{delay_key, job_key};

/// The export format's version; an import refuses any other.
pub const EXPORT_VERSION: u32 = 1;
/// Largest import document: 10,000 jobs of a few KB each.
const MAX_IMPORT_BYTES: usize = 64 << 20;

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExportDocument {
    version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    exported_at: Option<String>,
    jobs: Vec<serde_json::Value>,
    /// Import only: report what would change, change nothing.
    #[serde(default, skip_serializing)]
    dry_run: bool,
    /// Import only: delete the jobs the document does not hold.
    #[serde(default, skip_serializing)]
    prune: bool,
}

/// The definition as exported: without `updatedAt`, which the manager
/// stamps on every save.
fn portable(mut job: Job) -> Job {
    job.updated_at = None;
    job
}

/// `GET /job/export`: every job the principal may act on, in name order.
pub async fn export(
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let who = principal(&req);
    let mut jobs = all_jobs(&state).await?;
    jobs.sort_by(|a, b| a.name.cmp(&b.name));
    let jobs = jobs
        .into_iter()
        .filter(|j| who.may_act_on_group(&j.group))
        .map(|j| serde_json::to_value(portable(j)).unwrap_or_default())
        .collect();
    let exported_at = (state.clock)().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    Ok(ok(ExportDocument {
        version: EXPORT_VERSION,
        exported_at: Some(exported_at),
        jobs,
        dry_run: false,
        prune: false,
    }))
}

#[derive(Debug, Default, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ImportPlan {
    dry_run: bool,
    created: Vec<String>,
    changed: Vec<String>,
    deleted: Vec<String>,
    unchanged: usize,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ImportQuery {
    #[serde(default)]
    dry_run: Option<bool>,
    #[serde(default)]
    prune: Option<bool>,
}

/// A job of the document that fails a check: its place, name and field.
fn bad_job(index: usize, name: Option<&str>, e: JobError) -> ApiError {
    let name = name.map(|n| format!(" ({n})")).unwrap_or_default();
    ApiError::BadRequest(format!("jobs[{index}]{name}: {}: {}", e.field, e.message))
}

/// Check the whole document against the jobs stored now; the plan, or the
/// first problem. Pure apart from the checks that read configuration.
fn plan_import(
    state: &AppState,
    who: &Principal,
    document: &ExportDocument,
    existing: &[Job],
    prune: bool,
) -> Result<(Vec<Job>, ImportPlan), ApiError> {
    if document.version != EXPORT_VERSION {
        return Err(ApiError::BadRequest(format!(
            "version: {} is not a version this manager reads (it reads {EXPORT_VERSION})",
            document.version
        )));
    }
    let now = (state.clock)();
    let mut incoming: Vec<Job> = Vec::with_capacity(document.jobs.len());
    let mut names = BTreeSet::new();
    for (index, value) in document.jobs.iter().enumerate() {
        let name = value.get("name").and_then(|n| n.as_str());
        let job: Job = serde_json::from_value(value.clone()).map_err(|e| {
            bad_job(
                index,
                name,
                JobError {
                    field: "job",
                    message: e.to_string(),
                },
            )
        })?;
        let job = portable(job);
        job.validate(now).map_err(|e| bad_job(index, name, e))?;
        super::job::check_misfire_window(state, &job)
            .map_err(|e| ApiError::BadRequest(format!("jobs[{index}] ({}): {}", job.name, e)))?;
        if let Some(rules) = &job.notify {
            state.notify.check_rules(rules).map_err(|message| {
                bad_job(
                    index,
                    name,
                    JobError {
                        field: "notify",
                        message,
                    },
                )
            })?;
        }
        check_group(who, &job)
            .map_err(|e| ApiError::Forbidden(format!("jobs[{index}] ({}): {}", job.name, e)))?;
        if !names.insert(job.name.clone()) {
            return Err(bad_job(
                index,
                name,
                JobError {
                    field: "name",
                    message: "appears twice in the document".into(),
                },
            ));
        }
        incoming.push(job);
    }
    let stored: BTreeMap<&str, &Job> = existing.iter().map(|j| (j.name.as_str(), j)).collect();
    let mut plan = ImportPlan::default();
    for job in &incoming {
        match stored.get(job.name.as_str()) {
            None => plan.created.push(job.name.clone()),
            Some(old) if portable((*old).clone()) != *job => {
                check_group(who, old)?;
                plan.changed.push(job.name.clone());
            }
            Some(_) => plan.unchanged += 1,
        }
    }
    if prune {
        plan.deleted = existing
            .iter()
            .filter(|j| !names.contains(&j.name) && who.may_act_on_group(&j.group))
            .map(|j| j.name.clone())
            .collect();
    }
    // The jobs after the import: chains must point into it and not loop.
    let deleted: BTreeSet<&String> = plan.deleted.iter().collect();
    let mut result: Vec<&Job> = incoming.iter().collect();
    result.extend(
        existing
            .iter()
            .filter(|j| !names.contains(&j.name) && !deleted.contains(&j.name)),
    );
    let known: BTreeSet<&str> = result.iter().map(|j| j.name.as_str()).collect();
    for (index, job) in incoming.iter().enumerate() {
        crate::chain::check_targets(job, &|n| known.contains(n))
            .map_err(|e| bad_job(index, Some(&job.name), e))?;
    }
    for job in existing
        .iter()
        .filter(|j| !deleted.contains(&j.name) && !names.contains(&j.name))
    {
        if let Some(gone) = job
            .on_success
            .iter()
            .chain(&job.on_failure)
            .find(|n| deleted.contains(n))
        {
            return Err(ApiError::BadRequest(format!(
                "prune: job '{gone}' would be deleted, but job '{}' (not in the document) chains to it",
                job.name
            )));
        }
    }
    crate::chain::check_cycles(&result, incoming.iter().map(|j| j.name.as_str()))
        .map_err(|e| ApiError::BadRequest(format!("{}: {}", e.field, e.message)))?;
    let new_total = existing.len() + plan.created.len() - plan.deleted.len();
    if !plan.created.is_empty() && new_total > state.max_jobs {
        return Err(ApiError::BadRequest(format!(
            "maxJobs: the import would leave {new_total} jobs, more than the configured limit of {}",
            state.max_jobs
        )));
    }
    Ok((incoming, plan))
}

/// `POST /job/import[?dryRun=true][&prune=true]`: the body is an export
/// document (`dryRun` and `prune` may also be fields of it).
pub async fn import(
    state: web::Data<AppState>,
    req: HttpRequest,
    query: web::Query<ImportQuery>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = body::read_at_most(payload, MAX_IMPORT_BYTES).await?;
    let document: ExportDocument = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("JSON body: {e}")))?;
    let dry_run = query.dry_run.unwrap_or(document.dry_run);
    let prune = query.prune.unwrap_or(document.prune);
    let who = principal(&req);
    let existing = all_jobs(&state).await?;
    let (incoming, mut plan) = plan_import(&state, &who, &document, &existing, prune)?;
    plan.dry_run = dry_run;
    note(&req, |n| {
        n.changes
            .insert("dryRun".into(), serde_json::json!(dry_run));
        n.changes
            .insert("created".into(), serde_json::json!(plan.created));
        n.changes
            .insert("changed".into(), serde_json::json!(plan.changed));
        n.changes
            .insert("deleted".into(), serde_json::json!(plan.deleted));
    });
    if dry_run {
        return Ok(ok(plan));
    }
    apply(&state, &existing, incoming, &plan).await?;
    tracing::info!(
        created = plan.created.len(),
        changed = plan.changed.len(),
        deleted = plan.deleted.len(),
        "jobs imported"
    );
    Ok(ok(plan))
}

/// Make the planned writes; on a failure, undo those made and report it.
async fn apply(
    state: &AppState,
    existing: &[Job],
    incoming: Vec<Job>,
    plan: &ImportPlan,
) -> Result<(), ApiError> {
    let touched: BTreeSet<&String> = plan.created.iter().chain(&plan.changed).collect();
    let before: BTreeMap<&str, &Job> = existing.iter().map(|j| (j.name.as_str(), j)).collect();
    let mut done: Vec<(String, Option<Job>)> = Vec::new();
    let mut failure = None;
    for mut job in incoming.into_iter().filter(|j| touched.contains(&j.name)) {
        let name = job.name.clone();
        match super::job::store_job(state, &mut job).await {
            Ok(()) => done.push((
                name.clone(),
                before.get(name.as_str()).map(|j| (*j).clone()),
            )),
            Err(e) => {
                failure = Some(format!("saving job {name}: {e}"));
                break;
            }
        }
    }
    if failure.is_none() {
        for name in &plan.deleted {
            match state.coord.delete(&job_key(name)).await {
                Ok(_) => {
                    state.jobs.deleted(name);
                    let _ = state.coord.delete(&delay_key(name)).await;
                    done.push((
                        name.clone(),
                        before.get(name.as_str()).map(|j| (*j).clone()),
                    ));
                }
                Err(e) => {
                    failure = Some(format!("deleting job {name}: {e}"));
                    break;
                }
            }
        }
    }
    let Some(failure) = failure else {
        return Ok(());
    };
    // Undo, newest first: restore what was there, remove what was new.
    let mut undone = true;
    for (name, previous) in done.into_iter().rev() {
        let result = match previous {
            Some(mut job) => super::job::store_job(state, &mut job).await,
            None => state
                .coord
                .delete(&job_key(&name))
                .await
                .map(|_| {
                    state.jobs.deleted(&name);
                })
                .map_err(ApiError::from),
        };
        if let Err(error) = result {
            tracing::error!(job = %name, %error, "cannot undo a step of a failed import");
            undone = false;
        }
    }
    let state_of = if undone {
        "nothing was changed (the writes made were undone)"
    } else {
        "some writes could not be undone; export and compare before trying again"
    };
    Err(ApiError::Unavailable(format!(
        "import failed {failure}; {state_of}"
    )))
}
