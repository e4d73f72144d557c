//! `GET /healthz`: the process is up and serving.

use actix_web::HttpResponse;

use crate::http::error::ok;

pub async fn healthz() -> HttpResponse {
    ok("ok")
}
