//! `GET /openapi.json`: the API described for clients and tools. The
//! document is hand-written (src/http/openapi.json); a test checks that it
//! names every route the app serves.

use actix_web::HttpResponse;

pub const DOCUMENT: &str = include_str!("../openapi.json");

pub async fn openapi() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(DOCUMENT)
}
