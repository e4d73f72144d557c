//! Route table: one file per URL prefix.

mod health;
mod schedule;

use actix_web::{HttpRequest, HttpResponse, web};

use super::ApiError;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(health::healthz))
        .route("/schedule/preview", web::get().to(schedule::preview));
}

pub async fn not_found(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound(format!(
        "no route for {} {}",
        req.method(),
        req.path()
    )))
}
