//! `GET /audit`: the audit log, newest first (admin).

use actix_web::{HttpResponse, web};
use serde::Deserialize;

use crate::audit::AuditQuery;
use crate::http::error::{MAX_EPOCH_MS, MAX_SKIP, in_range, ok};
use crate::http::{ApiError, AppState};

const DEFAULT_LIMIT: u64 = 50;
const MAX_LIMIT: u64 = 1_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditParams {
    /// Epoch ms, inclusive.
    since: Option<i64>,
    /// Epoch ms, exclusive.
    until: Option<i64>,
    actor: Option<String>,
    job: Option<String>,
    action: Option<String>,
    skip: Option<u64>,
    limit: Option<u64>,
}

pub async fn list(
    state: web::Data<AppState>,
    params: web::Query<AuditParams>,
) -> Result<HttpResponse, ApiError> {
    let p = params.into_inner();
    let limit = p.limit.unwrap_or(DEFAULT_LIMIT);
    in_range("limit", limit, 1, MAX_LIMIT)?;
    let skip = in_range("skip", p.skip.unwrap_or(0), 0, MAX_SKIP)?;
    let instant =
        |field, v: Option<i64>| v.map(|v| in_range(field, v, 0, MAX_EPOCH_MS)).transpose();
    let (since, until) = (instant("since", p.since)?, instant("until", p.until)?);
    let empty_is_none = |v: Option<String>| v.filter(|s| !s.is_empty());
    let query = AuditQuery {
        since,
        until,
        actor: empty_is_none(p.actor),
        job: empty_is_none(p.job),
        action: empty_is_none(p.action),
        skip,
        limit,
    };
    Ok(ok(state.audit_store.audit_page(&query).await?))
}
