//! `GET /schedule/preview?cronExpr=&timezone=&name=`: the next fire times of
//! an expression, or the validation error naming the field, so the console
//! can check a schedule as it is typed. `name` resolves `H` as for that job.

use actix_web::{HttpResponse, web};
use serde::{Deserialize, Serialize};

use crate::http::error::ok;
use crate::http::{ApiError, AppState};
use crate::schedule::{Schedule, parse_time_zone};

/// How many fire times a preview shows.
const PREVIEW_COUNT: usize = 5;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PreviewQuery {
    cron_expr: Option<String>,
    timezone: Option<String>,
    name: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Preview {
    cron_expr: String,
    timezone: String,
    /// RFC 3339 UTC instants.
    next: Vec<String>,
    /// Why there are no instants (`@delay`: they depend on the runs).
    #[serde(skip_serializing_if = "Option::is_none")]
    note: Option<String>,
}

pub async fn preview(
    state: web::Data<AppState>,
    query: web::Query<PreviewQuery>,
) -> Result<HttpResponse, ApiError> {
    let query = query.into_inner();
    let cron_expr = query
        .cron_expr
        .ok_or_else(|| ApiError::BadRequest("cronExpr: is required".into()))?;
    let timezone = query.timezone.unwrap_or_else(|| "UTC".into());
    let tz =
        parse_time_zone(&timezone).map_err(|e| ApiError::BadRequest(format!("timezone: {e}")))?;
    let schedule = match query.name.as_deref().filter(|n| !n.is_empty()) {
        Some(name) => Schedule::parse_for_job(&cron_expr, tz, name),
        None => Schedule::parse(&cron_expr, tz),
    }
    .map_err(|e| ApiError::BadRequest(format!("cronExpr: {e}")))?;
    let next = schedule
        .upcoming((state.clock)(), PREVIEW_COUNT)
        .iter()
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .collect();
    Ok(ok(Preview {
        cron_expr,
        timezone,
        next,
        note: schedule.explain(),
    }))
}
