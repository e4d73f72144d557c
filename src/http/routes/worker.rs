//! `/worker/*`: the live workers, from their `workers/<id>` registrations.

use actix_web::{HttpResponse, web};
use serde::Serialize;

use crate::actors::registrar::REFRESH;
use crate::http::error::ok;
use crate::http::{ApiError, AppState};
use crate::keyspace::WorkerInfo;

pub(super) async fn workers(state: &AppState) -> Result<Vec<WorkerInfo>, ApiError> {
    let (kvs, _) = state.coord.list("workers/").await?;
    Ok(kvs
        .iter()
        .filter_map(|kv| serde_json::from_slice(&kv.value).ok())
        .collect())
}

/// `GET /worker/list`: worker addresses (strings), as the old system gave.
pub async fn list(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let addresses: Vec<String> = workers(&state)
        .await?
        .into_iter()
        .map(|w| w.address)
        .collect();
    Ok(ok(addresses))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WorkerDetail {
    #[serde(flatten)]
    info: WorkerInfo,
    /// The heartbeat is more than two refresh periods old.
    stale: bool,
}

/// `GET /worker/info`: every live worker with its load figures.
pub async fn info(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let now = (state.clock)().timestamp_millis();
    let late = 2 * REFRESH.as_millis() as i64;
    let details: Vec<WorkerDetail> = workers(&state)
        .await?
        .into_iter()
        .map(|mut info| {
            // The live-output secret is for managers only.
            if let Some(live) = info.live.as_mut() {
                live.token.clear();
            }
            WorkerDetail {
                stale: now - info.heartbeat > late,
                info,
            }
        })
        .collect();
    Ok(ok(details))
}
