//! `/notify/*` and `/run/notices`, `/run/tail`: notifications and live
//! output.

use std::time::Duration;

use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};

use crate::http::error::ok;
use crate::http::guard::{note, principal};
use crate::http::tail::{self, RECORD_PATIENCE};
use crate::http::{ApiError, AppState, body};
use crate::notify::Target;
use crate::notify::notifier::SendTest;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TargetSummary {
    name: String,
    /// `webhook` or `email`.
    kind: &'static str,
    /// The host it goes to (no path, no secrets).
    host: String,
}

/// `GET /notify/targets`: the configured targets, without their secrets.
pub async fn targets(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let list: Vec<TargetSummary> = state
        .notify
        .targets
        .iter()
        .map(|(name, target)| match target {
            Target::Webhook(hook) => TargetSummary {
                name: name.clone(),
                kind: "webhook",
                host: hook
                    .url
                    .split("://")
                    .nth(1)
                    .and_then(|rest| rest.split('/').next())
                    .unwrap_or("")
                    .to_string(),
            },
            Target::Email(mail) => TargetSummary {
                name: name.clone(),
                kind: "email",
                host: format!("{}:{}", mail.host, mail.port),
            },
        })
        .collect();
    Ok(ok(list))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TestRequest {
    target: String,
}

/// `POST /notify/test`: send a test notification to one target now and
/// answer with its outcome (attempts, error).
pub async fn test(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = body::read(payload).await?;
    let request: TestRequest = body::parse(&req, &body)?;
    let target = serde_json::Value::String(request.target.clone());
    note(&req, |n| {
        n.changes.insert("target".into(), target);
    });
    crate::job::validate_name(&request.target)
        .map_err(|e| ApiError::BadRequest(format!("target: {}", e.message)))?;
    let known = state.notify.targets.contains_key(&request.target);
    let (Some(notifier), true) = (&state.notifier, known) else {
        return Err(ApiError::NotFound(
            state.notify.unknown_target(&request.target),
        ));
    };
    let who = principal(&req);
    let delivery = notifier
        .send(SendTest {
            target: request.target,
            asked_by: who.name,
        })
        .await
        .map_err(|e| ApiError::Unavailable(format!("notifier: {e}")))?;
    Ok(ok(delivery))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ById {
    id: String,
}

/// `GET /run/notices?id=`: the notifications of one run, with each
/// target's outcome.
pub async fn notices(
    state: web::Data<AppState>,
    query: web::Query<ById>,
) -> Result<HttpResponse, ApiError> {
    Ok(ok(state.run_log.notices_of(&query.id).await?))
}

/// `GET /run/tail?id=`: the run's output as server-sent events while it
/// runs (through the worker that runs it), or from its record once ended.
pub async fn tail(
    state: web::Data<AppState>,
    query: web::Query<ById>,
) -> Result<HttpResponse, ApiError> {
    let id = &query.id;
    if let Some(live) = state.local_runs.as_ref().and_then(|r| r.follow(id)) {
        return Ok(tail::event_stream_response(tail::follow(live)));
    }
    let record = state.run_log.get(id).await?;
    if let Some(record) = record.as_ref().filter(|r| r.status.is_final()) {
        return Ok(tail::event_stream_response(tail::stored(record)));
    }
    let workers = super::worker::workers(&state).await?;
    let candidates = workers
        .iter()
        .filter(|w| record.as_ref().is_none_or(|r| r.worker == w.id))
        .filter_map(|w| w.live.as_ref());
    for endpoint in candidates {
        if let Some(stream) = tail::from_worker(endpoint, id).await {
            return Ok(stream);
        }
    }
    let Some(record) = record else {
        return Err(ApiError::NotFound(format!(
            "run {id} not found: no record, and no worker runs it"
        )));
    };
    // Recorded, but not running on its worker: it ended and its final
    // record is on its way from the worker's journal, or it is a retry
    // waiting for its backoff. Wait for either.
    let endpoint = workers
        .iter()
        .find(|w| w.id == record.worker)
        .and_then(|w| w.live.as_ref());
    let deadline = tokio::time::Instant::now() + RECORD_PATIENCE;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        if let Some(now) = state.run_log.get(id).await?
            && now.status.is_final()
        {
            return Ok(tail::event_stream_response(tail::stored(&now)));
        }
        if let Some(endpoint) = endpoint
            && let Some(stream) = tail::from_worker(endpoint, id).await
        {
            return Ok(stream);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(ApiError::Unavailable(format!(
                "run {id} is recorded as {}, but its worker does not run it and no final record has come in; try again",
                record.status.as_str()
            )));
        }
    }
}
