//! `GET /healthz` (the process is up) and `GET /readyz` (the coordinator
//! and the run log answer).

use actix_web::{HttpResponse, web};

use crate::http::error::ok;
use crate::http::{ApiError, AppState};

pub async fn healthz() -> HttpResponse {
    ok("ok")
}

pub async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    state
        .coord
        .get("jobs/")
        .await
        .map_err(|e| ApiError::Unavailable(format!("coordinator: {e}")))?;
    state
        .run_log
        .ping()
        .await
        .map_err(|e| ApiError::Unavailable(format!("run log: {e}")))?;
    Ok(ok("ready"))
}
