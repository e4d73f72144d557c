//! The HTTP API through the same app builder the binaries use.

use std::sync::Arc;

use actix_web::test;
use chrono::{DateTime, Utc};
use distcron::http::{self, AppState};
use serde_json::{Value, json};

fn fixed_clock() -> AppState {
    let now: DateTime<Utc> = "2026-01-01T00:00:00Z".parse().expect("valid timestamp");
    AppState {
        clock: Arc::new(move || now),
    }
}

async fn get(uri: &str) -> (u16, Value) {
    let app = test::init_service(http::app(fixed_clock())).await;
    let resp = test::call_service(&app, test::TestRequest::get().uri(uri).to_request()).await;
    let status = resp.status().as_u16();
    let body: Value = test::read_body_json(resp).await;
    (status, body)
}

#[actix_rt::test]
async fn healthz_answers_in_the_envelope() {
    assert_eq!(
        get("/healthz").await,
        (200, json!({"errno": 0, "msg": "success", "data": "ok"}))
    );
}

#[actix_rt::test]
async fn schedule_preview_lists_the_next_five_fire_times() {
    let (status, body) = get("/schedule/preview?cronExpr=0%200%20*%20*%201").await;
    assert_eq!(status, 200);
    assert_eq!(body["data"]["timezone"], "UTC");
    assert_eq!(
        body["data"]["next"],
        json!([
            "2026-01-05T00:00:00Z",
            "2026-01-12T00:00:00Z",
            "2026-01-19T00:00:00Z",
            "2026-01-26T00:00:00Z",
            "2026-02-02T00:00:00Z"
        ])
    );
}

#[actix_rt::test]
async fn schedule_preview_reads_the_time_zone() {
    let (status, body) = get("/schedule/preview?cronExpr=@daily&timezone=Asia/Tokyo").await;
    assert_eq!(status, 200);
    assert_eq!(body["data"]["next"][0], "2026-01-01T15:00:00Z");
}

#[actix_rt::test]
async fn schedule_preview_errors_name_the_field() {
    let (status, body) = get("/schedule/preview?cronExpr=0%200%2030%202%20*").await;
    assert_eq!(status, 400);
    assert_eq!(
        body,
        json!({"errno": -1, "msg": "cronExpr: the expression never fires (no calendar date matches it)", "data": null})
    );
    let (status, body) = get("/schedule/preview?cronExpr=@daily&timezone=Mars/Base").await;
    assert_eq!(status, 400);
    assert!(
        body["msg"]
            .as_str()
            .unwrap()
            .starts_with("timezone: unknown time zone")
    );
    let (status, body) = get("/schedule/preview").await;
    assert_eq!(
        (status, body["msg"].as_str()),
        (400, Some("cronExpr: is required"))
    );
}

#[actix_rt::test]
async fn malformed_query_gets_the_same_error_shape() {
    let (status, body) = get("/schedule/preview?cronExpr=@daily&bogus=1").await;
    assert_eq!(status, 400);
    assert_eq!(body["errno"], -1);
    assert!(
        body["msg"]
            .as_str()
            .unwrap()
            .contains("unknown field `bogus`"),
        "{body}"
    );
}

#[actix_rt::test]
async fn unknown_route_is_404_in_the_envelope() {
    let (status, body) = get("/no/such/thing").await;
    assert_eq!(status, 404);
    assert_eq!(body["errno"], -1);
    assert_eq!(body["msg"], "no route for GET /no/such/thing");
}
