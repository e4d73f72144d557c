//! Who may do what, through the same app builder the binaries use: the role
//! matrix over every route of `openapi.json`, the browser defences, sign-in
//! and sign-out, and the audit log.

use std::sync::Arc;
use std::time::Duration;

use actix_web::test;
use chrono::{DateTime, Utc};
use distcron::auth::tokens::{self, NewToken, TokenVerifier};
use distcron::auth::{Role, users};
use distcron::coord::Coordinator;
use distcron::coord::embedded::EmbeddedCoordinator;
use distcron::http::guard::Security;
use distcron::http::{self, AppState};
use distcron::runlog::embedded::EmbeddedRunLog;
use serde_json::{Value, json};

const ADMIN: &str = "config-admin-token";
const NOW: &str = "2026-01-01T00:00:00Z";

/// The credentials the matrix tries on every route.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Who {
    Nobody,
    WrongToken,
    Expired,
    Revoked,
    Viewer,
    Operator,
    Admin,
    /// An admin token scoped to group `etl`, acting on a `default` job.
    OtherGroupAdmin,
}

const EVERYONE: [Who; 8] = [
    Who::Nobody,
    Who::WrongToken,
    Who::Expired,
    Who::Revoked,
    Who::Viewer,
    Who::Operator,
    Who::Admin,
    Who::OtherGroupAdmin,
];

struct Api {
    state: AppState,
    tokens: std::collections::HashMap<&'static str, String>,
    revoked_id: String,
    _dir: tempfile::TempDir,
}

fn now() -> DateTime<Utc> {
    NOW.parse().unwrap()
}

async fn api() -> Api {
    let dir = tempfile::tempdir().unwrap();
    let coord = Arc::new(EmbeddedCoordinator::in_memory());
    let mut state = AppState::new(
        coord.clone(),
        Arc::new(EmbeddedRunLog::open(&dir.path().join("runs.redb")).unwrap()),
    );
    state.clock = Arc::new(now);
    state.security = Arc::new(Security {
        tokens: TokenVerifier::new(Some(ADMIN)),
        ..Default::default()
    });
    let now_ms = now().timestamp_millis();
    let mut made = std::collections::HashMap::new();
    for (label, role, group, created, expires) in [
        ("viewer", Role::Viewer, None, now_ms, None),
        ("operator", Role::Operator, None, now_ms, None),
        ("admin", Role::Admin, None, now_ms, None),
        ("etl-admin", Role::Admin, Some("etl"), now_ms, None),
        ("expired", Role::Admin, None, now_ms - 7_200_000, Some("1h")),
        ("revoked", Role::Admin, None, now_ms, None),
    ] {
        let request = NewToken {
            name: label.into(),
            role,
            group: group.map(String::from),
            expires: expires.map(String::from),
        };
        let created = tokens::create(&*coord, &request, "test", created)
            .await
            .unwrap();
        made.insert(label, created.token.clone());
        if label == "revoked" {
            tokens::revoke(&*coord, &created.record.id).await.unwrap();
        }
    }
    let revoked_id = tokens::split(&made["viewer"]).unwrap().0.to_string();
    for (name, group) in [("job1", "default"), ("etl1", "etl")] {
        let job = json!({"name": name, "command": "true", "cronExpr": "0 0 * * *",
            "group": group, "env": {"SECRET": "hunter2"}});
        coord
            .put(&format!("jobs/{name}"), job.to_string().into_bytes(), None)
            .await
            .unwrap();
    }
    Api {
        state,
        tokens: made,
        revoked_id,
        _dir: dir,
    }
}

impl Api {
    fn bearer(&self, who: Who) -> Option<String> {
        let token = match who {
            Who::Nobody => return None,
            Who::WrongToken => "dct_0123456789abcdef_00".to_string(),
            Who::Expired => self.tokens["expired"].clone(),
            Who::Revoked => self.tokens["revoked"].clone(),
            Who::Viewer => self.tokens["viewer"].clone(),
            Who::Operator => self.tokens["operator"].clone(),
            Who::Admin => ADMIN.to_string(),
            Who::OtherGroupAdmin => self.tokens["etl-admin"].clone(),
        };
        Some(format!("Bearer {token}"))
    }

    async fn call(&self, req: test::TestRequest) -> (u16, Value, Vec<(String, String)>) {
        let app = test::init_service(http::app(self.state.clone())).await;
        let resp = test::call_service(&app, req.to_request()).await;
        let status = resp.status().as_u16();
        let headers = resp
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
            .collect();
        let body = test::read_body(resp).await;
        (
            status,
            serde_json::from_slice(&body).unwrap_or(Value::Null),
            headers,
        )
    }

    /// What a mutation would change: jobs, tokens, users, run and kill
    /// requests.
    async fn stored(&self) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        for prefix in ["jobs/", "auth/tokens/", "auth/users/", "kill/", "run/"] {
            let (kvs, _) = self.state.coord.list(prefix).await.unwrap();
            out.extend(kvs.into_iter().map(|kv| (kv.key, kv.value)));
        }
        out
    }
}

/// A plausible request for a route: every mutation acts on `job1` (group
/// `default`).
fn request_for(method: &str, path: &str, api: &Api) -> test::TestRequest {
    let form = |body: String| {
        test::TestRequest::post()
            .uri(path)
            .insert_header(("content-type", "application/x-www-form-urlencoded"))
            .set_payload(body)
    };
    let json_body = |body: Value| {
        test::TestRequest::post()
            .uri(path)
            .insert_header(("content-type", "application/json"))
            .set_payload(body.to_string())
    };
    match (method, path) {
        ("get", "/job/log" | "/job/get" | "/job/history") => {
            test::TestRequest::get().uri(&format!("{path}?name=job1"))
        }
        ("get", "/run/get" | "/run/tail" | "/run/notices") => {
            test::TestRequest::get().uri(&format!("{path}?id=nope"))
        }
        ("get", "/worker/info") => test::TestRequest::get().uri("/worker/info?id=nope"),
        ("get", "/schedule/preview") => {
            test::TestRequest::get().uri("/schedule/preview?cronExpr=%40daily")
        }
        ("get", _) => test::TestRequest::get().uri(path),
        ("post", "/job/save") => {
            json_body(json!({"name": "job1", "command": "echo changed", "cronExpr": "0 0 * * *"}))
        }
        ("post", "/job/import") => json_body(json!({"version": 1, "jobs": [
            {"name": "job1", "command": "echo changed", "cronExpr": "0 0 * * *"}
        ]})),
        ("post", "/auth/login") => json_body(json!({"token": ADMIN})),
        ("post", "/notify/test") => json_body(json!({"target": "nope"})),
        ("post", "/auth/tokens") => json_body(json!({"name": "made", "role": "viewer"})),
        ("post", "/auth/tokens/revoke") => form(format!("id={}", api.revoked_id)),
        ("post", _) => form("name=job1".into()),
        other => panic!("no request for {other:?}"),
    }
}

/// The least role each route needs, written out here on its own (not read
/// from the permission table), so a change to the table fails this test.
fn least_role(method: &str, path: &str) -> Option<Role> {
    match (method, path) {
        ("get", "/healthz" | "/readyz" | "/openapi.json") | ("post", "/auth/login") => None,
        ("post", "/job/run" | "/job/kill" | "/job/pause" | "/job/resume" | "/notify/test") => {
            Some(Role::Operator)
        }
        ("post", "/auth/logout") => Some(Role::Viewer),
        // An export holds env values.
        ("get", "/job/export") => Some(Role::Operator),
        ("post", _) | ("get", "/audit" | "/auth/tokens") => Some(Role::Admin),
        ("get", _) => Some(Role::Viewer),
        other => panic!("{other:?} is not in this test's table"),
    }
}

/// Whether `who` may call the route.
fn allowed(who: Who, method: &str, path: &str) -> bool {
    let role = match who {
        Who::Viewer => Some(Role::Viewer),
        Who::Operator => Some(Role::Operator),
        Who::Admin | Who::OtherGroupAdmin => Some(Role::Admin),
        _ => None,
    };
    let permitted = match least_role(method, path) {
        None => true,
        Some(least) => role.is_some_and(|r| r >= least),
    };
    // A group-scoped token acts on its group's jobs only.
    let acts_on_job1 = path.starts_with("/job/") && method == "post";
    permitted && !(who == Who::OtherGroupAdmin && acts_on_job1)
}

#[actix_rt::test]
async fn role_matrix_over_every_route_and_nothing_stored_when_refused() {
    let doc: Value = serde_json::from_str(include_str!("../src/http/openapi.json")).unwrap();
    let mut cases = 0;
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for method in ops.as_object().unwrap().keys() {
            for who in EVERYONE {
                // A fresh store per case: an allowed delete must not hide
                // what the next case would change.
                let api = api().await;
                let before = api.stored().await;
                let mut req = request_for(method, path, &api);
                if let Some(bearer) = api.bearer(who) {
                    req = req.insert_header(("authorization", bearer));
                }
                let (status, body, _) = api.call(req).await;
                let refused = matches!(status, 401 | 403);
                let want = allowed(who, method, path);
                assert_eq!(!refused, want, "{who:?} {method} {path}: {status} {body}");
                if refused {
                    assert_eq!(body["errno"], -1, "{who:?} {method} {path}: envelope");
                    assert_eq!(
                        api.stored().await,
                        before,
                        "{who:?} {method} {path}: a refused request changed storage"
                    );
                    let want_status = match who {
                        Who::Nobody | Who::WrongToken | Who::Expired | Who::Revoked => 401,
                        _ => 403,
                    };
                    assert_eq!(status, want_status, "{who:?} {method} {path}: {body}");
                }
                cases += 1;
            }
        }
    }
    assert_eq!(cases, 35 * EVERYONE.len(), "every route of openapi.json");
}

#[actix_rt::test]
async fn viewers_see_env_values_masked() {
    let api = api().await;
    for uri in ["/job/get?name=job1", "/job/list", "/job/table"] {
        let req = test::TestRequest::get()
            .uri(uri)
            .insert_header(("authorization", api.bearer(Who::Viewer).unwrap()));
        let (status, body, _) = api.call(req).await;
        assert_eq!(status, 200, "{uri}");
        let text = body.to_string();
        assert!(
            !text.contains("hunter2") && text.contains("***"),
            "{uri}: {text}"
        );
    }
    let req = test::TestRequest::get()
        .uri("/job/get?name=job1")
        .insert_header(("authorization", api.bearer(Who::Operator).unwrap()));
    assert!(api.call(req).await.1.to_string().contains("hunter2"));
}

#[actix_rt::test]
async fn a_group_scoped_token_acts_on_its_group_only() {
    let api = api().await;
    let bearer = api.bearer(Who::OtherGroupAdmin).unwrap();
    let post = |body: Value| {
        test::TestRequest::post()
            .uri("/job/save")
            .insert_header(("authorization", bearer.clone()))
            .insert_header(("content-type", "application/json"))
            .set_payload(body.to_string())
    };
    // Its own group: fine.
    let (status, _, _) = api
        .call(post(
            json!({"name": "etl1", "command": "echo 2", "cronExpr": "@daily", "group": "etl"}),
        ))
        .await;
    assert_eq!(status, 200);
    // Moving another group's job into its own: refused (the stored job counts).
    let (status, body, _) = api
        .call(post(
            json!({"name": "job1", "command": "x", "cronExpr": "@daily", "group": "etl"}),
        ))
        .await;
    assert_eq!(status, 403, "{body}");
    // Moving its job out of its group: refused (the submitted job counts).
    let (status, _, _) = api
        .call(post(
            json!({"name": "etl1", "command": "x", "cronExpr": "@daily", "group": "default"}),
        ))
        .await;
    assert_eq!(status, 403);
    let stored = api.state.coord.get("jobs/job1").await.unwrap().unwrap();
    assert!(stored.value_str().contains("\"group\":\"default\""));
}

/// Every mutating route of openapi.json, sent by a page on another origin
/// with an admin token (or the admin's cookie would do no better): 403,
/// and nothing stored changes.
#[actix_rt::test]
async fn a_foreign_origin_changes_nothing_on_any_mutating_route() {
    let doc: Value = serde_json::from_str(include_str!("../src/http/openapi.json")).unwrap();
    let mut checked = 0;
    for (path, ops) in doc["paths"].as_object().unwrap() {
        if ops.get("post").is_none() {
            continue;
        }
        let api = api().await;
        let before = api.stored().await;
        let req = request_for("post", path, &api)
            .insert_header(("host", "127.0.0.1:8070"))
            .insert_header(("origin", "http://evil.example"))
            .insert_header(("authorization", api.bearer(Who::Admin).unwrap()));
        let (status, body, _) = api.call(req).await;
        assert_eq!(status, 403, "POST {path} from a foreign origin: {body}");
        assert_eq!(api.stored().await, before, "POST {path} changed storage");
        checked += 1;
    }
    assert_eq!(
        checked, 12,
        "the POST routes of openapi.json changed: update this count"
    );
}

#[actix_rt::test]
async fn browser_defences() {
    let api = api().await;
    let admin = api.bearer(Who::Admin).unwrap();
    let save = |origin: Option<&str>| {
        let mut req = test::TestRequest::post()
            .uri("/job/save")
            .insert_header(("host", "127.0.0.1:8070"))
            .insert_header(("authorization", admin.clone()))
            .insert_header(("content-type", "application/json"))
            .set_payload(
                json!({"name": "new1", "command": "true", "cronExpr": "@daily"}).to_string(),
            );
        if let Some(origin) = origin {
            req = req.insert_header(("origin", origin));
        }
        req
    };

    // DNS rebinding: a foreign Host is refused before anything else.
    let req = test::TestRequest::get()
        .uri("/job/list")
        .insert_header(("host", "evil.example:8070"))
        .insert_header(("authorization", admin.clone()));
    let (status, body, _) = api.call(req).await;
    assert_eq!(status, 403, "{body}");
    assert!(body["msg"].as_str().unwrap().contains("allowedHosts"));

    // A page on another origin cannot save, even with a token.
    let (status, _, _) = api.call(save(Some("http://127.0.0.1:9999"))).await;
    assert_eq!(status, 403);
    assert!(api.state.coord.get("jobs/new1").await.unwrap().is_none());
    // The server's own origin can.
    let (status, _, headers) = api.call(save(Some("http://127.0.0.1:8070"))).await;
    assert_eq!(status, 200);
    for (name, value) in [
        (
            "content-security-policy",
            "default-src 'self'; frame-ancestors 'none'",
        ),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "no-referrer"),
        ("cache-control", "no-store"),
    ] {
        assert!(
            headers.iter().any(|(k, v)| k == name && v.contains(value)),
            "{name}: {value} in {headers:?}"
        );
    }
    assert!(
        !headers
            .iter()
            .any(|(k, _)| k.starts_with("access-control-")),
        "no CORS"
    );

    // A token in the query string is never accepted.
    let req = test::TestRequest::get().uri(&format!("/job/list?access_token={ADMIN}"));
    assert_eq!(api.call(req).await.0, 401);
}

/// Sign in with a token; returns the cookie and the CSRF token.
async fn sign_in(api: &Api, body: Value) -> (u16, Option<String>, String) {
    let req = test::TestRequest::post()
        .uri("/auth/login")
        .insert_header(("host", "127.0.0.1:8070"))
        .insert_header(("origin", "http://127.0.0.1:8070"))
        .insert_header(("content-type", "application/json"))
        .set_payload(body.to_string());
    let (status, body, headers) = api.call(req).await;
    let cookie = headers
        .iter()
        .find(|(k, _)| k == "set-cookie")
        .map(|(_, v)| v.clone());
    let csrf = body["data"]["csrfToken"].as_str().unwrap_or("").to_string();
    (status, cookie, csrf)
}

#[actix_rt::test]
async fn cookie_sessions_need_the_csrf_header_and_end_at_sign_out() {
    let api = api().await;
    let (status, cookie, csrf) = sign_in(&api, json!({"token": api.tokens["operator"]})).await;
    assert_eq!(status, 200);
    let cookie = cookie.unwrap();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(attribute), "{attribute} in {cookie}");
    }
    let pair = cookie.split(';').next().unwrap().to_string();
    let pause = |csrf: Option<&str>, content_type: &str| {
        let mut req = test::TestRequest::post()
            .uri("/job/pause")
            .insert_header(("cookie", pair.clone()))
            .insert_header(("origin", "http://127.0.0.1:8070"))
            .insert_header(("host", "127.0.0.1:8070"))
            .insert_header(("content-type", content_type.to_string()))
            .set_payload(if content_type.contains("json") {
                r#"{"name":"job1"}"#.to_string()
            } else {
                "name=job1".to_string()
            });
        if let Some(csrf) = csrf {
            req = req.insert_header(("x-csrf-token", csrf.to_string()));
        }
        req
    };
    assert_eq!(api.call(pause(None, "application/json")).await.0, 403);
    assert_eq!(
        api.call(pause(Some("wrong"), "application/json")).await.0,
        403
    );
    assert_eq!(
        api.call(pause(Some(&csrf), "application/x-www-form-urlencoded"))
            .await
            .0,
        403,
        "a form body needs a Bearer token"
    );
    let stored = api.state.coord.get("jobs/job1").await.unwrap().unwrap();
    assert!(
        !stored.value_str().contains("\"enabled\":false"),
        "nothing changed"
    );
    let (status, body, _) = api.call(pause(Some(&csrf), "application/json")).await;
    assert_eq!(status, 200, "{body}");

    let me = test::TestRequest::get()
        .uri("/auth/me")
        .insert_header(("cookie", pair.clone()));
    let (status, body, _) = api.call(me).await;
    assert_eq!(
        (status, body["data"]["role"].as_str()),
        (200, Some("operator"))
    );
    assert_eq!(body["data"]["csrfToken"], csrf.as_str());

    let logout = test::TestRequest::post()
        .uri("/auth/logout")
        .insert_header(("cookie", pair.clone()))
        .insert_header(("x-csrf-token", csrf.clone()))
        .insert_header(("content-type", "application/json"));
    assert_eq!(api.call(logout).await.0, 200);
    let me = test::TestRequest::get()
        .uri("/auth/me")
        .insert_header(("cookie", pair));
    assert_eq!(api.call(me).await.0, 401, "the session ended");
}

#[actix_rt::test]
async fn users_sign_in_with_a_password() {
    let api = api().await;
    users::add(
        &*api.state.coord,
        "alice",
        "correct horse battery",
        Role::Viewer,
        None,
        0,
    )
    .await
    .unwrap();
    let (status, cookie, _) = sign_in(
        &api,
        json!({"user": "alice", "password": "correct horse battery"}),
    )
    .await;
    assert_eq!(status, 200);
    assert!(cookie.is_some());
    let (status, cookie, _) = sign_in(&api, json!({"user": "alice", "password": "wrong"})).await;
    assert_eq!((status, cookie), (401, None));
}

#[actix_rt::test]
async fn a_known_path_with_another_method_is_405_with_allow() {
    let api = api().await;
    for (method, path, allow) in [
        ("TRACE", "/healthz", "GET"),
        ("DELETE", "/job/save", "POST"),
        ("PUT", "/auth/tokens", "GET, POST"),
    ] {
        let req = test::TestRequest::default()
            .method(method.parse().unwrap())
            .uri(path)
            .insert_header(("host", "127.0.0.1:8070"))
            .insert_header(("authorization", format!("Bearer {ADMIN}")));
        let (status, _, headers) = api.call(req).await;
        let sent = headers
            .iter()
            .find(|(k, _)| k == "allow")
            .map(|(_, v)| v.as_str());
        assert_eq!((status, sent), (405, Some(allow)), "{method} {path}");
    }
}

/// A sign-in attempt from `peer`: its status and `Retry-After`.
async fn sign_in_from(api: &Api, peer: &str, body: Value) -> (u16, Option<String>) {
    let req = test::TestRequest::post()
        .uri("/auth/login")
        .peer_addr(peer.parse().unwrap())
        .insert_header(("host", "127.0.0.1:8070"))
        .insert_header(("content-type", "application/json"))
        .set_payload(body.to_string());
    let (status, _, headers) = api.call(req).await;
    let retry_after = headers
        .iter()
        .find(|(k, _)| k == "retry-after")
        .map(|(_, v)| v.clone());
    (status, retry_after)
}

#[actix_rt::test]
async fn failed_sign_ins_are_throttled_per_address() {
    let api = api().await;
    let wrong = json!({"token": "dct_0000_wrong"});
    for attempt in 0..distcron::auth::throttle::MAX_FAILURES {
        assert_eq!(
            sign_in_from(&api, "192.0.2.1:5000", wrong.clone()).await,
            (401, None),
            "attempt {attempt}"
        );
    }
    // Refused now, even with the right token, and told when to come back.
    let (status, retry_after) = sign_in_from(&api, "192.0.2.1:5001", json!({"token": ADMIN})).await;
    assert_eq!(status, 429);
    let wait: u64 = retry_after.expect("Retry-After").parse().unwrap();
    assert!((1..=300).contains(&wait), "{wait}");
    // Another address is not affected.
    assert_eq!(
        sign_in_from(&api, "192.0.2.2:5000", json!({"token": ADMIN}))
            .await
            .0,
        200
    );
}

/// The audit log, once the writer has stored at least `n` records.
async fn audit(api: &Api, query: &str, n: usize) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let req = test::TestRequest::get()
            .uri(&format!("/audit?{query}"))
            .insert_header(("authorization", format!("Bearer {ADMIN}")));
        let (status, body, _) = api.call(req).await;
        assert_eq!(status, 200, "{body}");
        let rows = body["data"].as_array().unwrap().clone();
        if rows.len() >= n {
            return rows;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "audit log has {} of {n} records for {query}: {rows:?}",
            rows.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[actix_rt::test]
async fn every_mutation_and_refusal_leaves_one_audit_record() {
    let api = api().await;
    let save = |env: &str| {
        test::TestRequest::post()
            .uri("/job/save")
            .peer_addr("192.0.2.7:4000".parse().unwrap())
            .insert_header(("authorization", api.bearer(Who::Admin).unwrap()))
            .insert_header(("content-type", "application/json"))
            .set_payload(
                json!({"name": "job1", "command": "true", "cronExpr": "@daily",
                       "env": {"API_KEY": env}})
                .to_string(),
            )
    };
    assert_eq!(api.call(save("first-secret")).await.0, 200);
    assert_eq!(api.call(save("second-secret")).await.0, 200);
    let kill = test::TestRequest::post()
        .uri("/job/kill")
        .insert_header(("authorization", api.bearer(Who::Viewer).unwrap()))
        .set_payload("name=job1");
    assert_eq!(api.call(kill).await.0, 403);
    let anonymous = test::TestRequest::post()
        .uri("/job/delete")
        .set_payload("name=job1");
    assert_eq!(api.call(anonymous).await.0, 401);

    let saves = audit(&api, "action=job.save", 2).await;
    assert_eq!(saves.len(), 2, "exactly one per save: {saves:?}");
    let newest = &saves[0];
    assert_eq!(newest["actorId"], "config:adminToken");
    assert_eq!(newest["job"], "job1");
    assert_eq!(newest["source"], "192.0.2.7");
    assert_eq!(newest["outcome"], "ok");
    assert!(newest["changes"]["env"].is_object(), "{newest}");
    let all = audit(&api, "limit=100", 4).await;
    let text = serde_json::to_string(&all).unwrap();
    for secret in ["first-secret", "second-secret", "hunter2"] {
        assert!(!text.contains(secret), "{secret} in the audit log: {text}");
    }
    let refused = audit(&api, "action=job.kill", 1).await;
    assert_eq!(refused[0]["outcome"], "refused");
    assert_eq!(refused[0]["status"], 403);
    assert_eq!(refused[0]["actorName"], "viewer");
    let anonymous = audit(&api, "action=job.delete", 1).await;
    assert_eq!(
        (
            anonymous[0]["status"].as_u64(),
            anonymous[0]["actorId"].as_str()
        ),
        (Some(401), Some(""))
    );

    // Paging and filters.
    let page = audit(&api, "action=job.save&skip=1&limit=1", 1).await;
    assert_eq!(page.len(), 1);
    assert_eq!(page[0]["id"], saves[1]["id"]);
    let by_actor = audit(&api, "actor=config:adminToken&limit=100", 2).await;
    assert!(by_actor.iter().all(|r| r["actorId"] == "config:adminToken"));
    let req = test::TestRequest::get()
        .uri("/audit?limit=0")
        .insert_header(("authorization", format!("Bearer {ADMIN}")));
    assert_eq!(api.call(req).await.0, 400);
}

#[actix_rt::test]
async fn limits_give_clear_errors() {
    let mut api = api().await;
    api.state.max_jobs = 2;
    let save = |body: Value| {
        test::TestRequest::post()
            .uri("/job/save")
            .insert_header(("authorization", format!("Bearer {ADMIN}")))
            .insert_header(("content-type", "application/json"))
            .set_payload(body.to_string())
    };
    let (status, body, _) = api
        .call(save(
            json!({"name": "third", "command": "true", "cronExpr": "@daily"}),
        ))
        .await;
    assert_eq!(status, 400);
    assert!(
        body["msg"].as_str().unwrap().starts_with("maxJobs:"),
        "{body}"
    );
    let (status, body, _) = api
        .call(save(
            json!({"name": "job1", "command": "true", "cronExpr": "*/65000 * * * * * *"}),
        ))
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["msg"]
            .as_str()
            .unwrap()
            .contains("second field: step 65000"),
        "{body}"
    );
    let big = "x".repeat(70_000);
    let (status, body, _) = api
        .call(save(
            json!({"name": "job1", "command": "true", "cronExpr": "@daily", "env": {"A": big}}),
        ))
        .await;
    assert_eq!(status, 400);
    assert!(body["msg"].as_str().unwrap().starts_with("env:"), "{body}");
    let req = test::TestRequest::get()
        .uri("/job/list?limit=10001")
        .insert_header(("authorization", format!("Bearer {ADMIN}")));
    assert_eq!(api.call(req).await.0, 400);
    // Nothing stored changed.
    let stored = api.state.coord.get("jobs/job1").await.unwrap().unwrap();
    assert!(stored.value_str().contains("\"command\":\"true\""));
}
