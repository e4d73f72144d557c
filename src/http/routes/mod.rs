//! Route table: one file per URL prefix.

mod audit;
mod auth;
mod console;
mod health;
mod job;
mod metrics;
mod notify;
mod openapi;
mod schedule;
mod stats;
mod transfer;
mod worker;

use actix_web::{HttpRequest, HttpResponse, web};

use super::ApiError;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(health::healthz))
        .route("/readyz", web::get().to(health::readyz))
        .route("/metrics", web::get().to(metrics::metrics))
        .route("/openapi.json", web::get().to(openapi::openapi))
        .route("/auth/login", web::post().to(auth::login))
        .route("/auth/logout", web::post().to(auth::logout))
        .route("/auth/me", web::get().to(auth::me))
        .route("/auth/tokens", web::get().to(auth::list_tokens))
        .route("/auth/tokens", web::post().to(auth::create_token))
        .route("/auth/tokens/revoke", web::post().to(auth::revoke_token))
        .route("/audit", web::get().to(audit::list))
        .route("/job/save", web::post().to(job::save))
        .route("/job/delete", web::post().to(job::delete))
        .route("/job/kill", web::post().to(job::kill))
        .route("/job/run", web::post().to(job::run_now))
        .route("/job/pause", web::post().to(job::pause))
        .route("/job/resume", web::post().to(job::resume))
        .route("/job/list", web::get().to(job::list))
        .route("/job/log", web::get().to(job::log))
        .route("/job/get", web::get().to(job::get))
        .route("/job/running", web::get().to(job::running))
        .route("/job/history", web::get().to(stats::history))
        .route("/stats/minutes", web::get().to(stats::minutes))
        .route("/job/export", web::get().to(transfer::export))
        .route("/job/import", web::post().to(transfer::import))
        .route("/job/table", web::get().to(console::table))
        .route("/overview", web::get().to(console::overview))
        .route("/run/get", web::get().to(job::run_get))
        .route("/run/tail", web::get().to(notify::tail))
        .route("/run/notices", web::get().to(notify::notices))
        .route("/notify/targets", web::get().to(notify::targets))
        .route("/notify/test", web::post().to(notify::test))
        .route("/worker/list", web::get().to(worker::list))
        .route("/worker/info", web::get().to(worker::info))
        .route("/schedule/preview", web::get().to(schedule::preview));
}

pub async fn not_found(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound(format!(
        "no route for {} {}",
        req.method(),
        req.path()
    )))
}
