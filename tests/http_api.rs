//! The HTTP API through the same app builder the binaries use, on the
//! embedded coordinator and run log.

use std::sync::Arc;

use actix_web::test;
use chrono::{DateTime, Utc};
use distcron::coord::embedded::EmbeddedCoordinator;
use distcron::http::{self, AppState};
use distcron::runlog::embedded::EmbeddedRunLog;
use distcron::runlog::{RunRecord, RunStatus};
use serde_json::{Value, json};

const FORM: &str = "application/x-www-form-urlencoded";
/// The admin token every request of these tests sends (the role and
/// browser tests are in tests/http_security.rs).
const ADMIN: &str = "test-admin-token";

struct Api {
    state: AppState,
    _dir: tempfile::TempDir,
}

fn api() -> Api {
    let dir = tempfile::tempdir().unwrap();
    let now: DateTime<Utc> = "2026-01-01T00:00:00Z".parse().unwrap();
    let mut state = AppState::new(
        Arc::new(EmbeddedCoordinator::in_memory()),
        Arc::new(EmbeddedRunLog::open(&dir.path().join("runs.redb")).unwrap()),
    );
    state.clock = Arc::new(move || now);
    state.security = Arc::new(http::guard::Security {
        tokens: distcron::auth::tokens::TokenVerifier::new(Some(ADMIN)),
        ..Default::default()
    });
    Api { state, _dir: dir }
}

impl Api {
    async fn call(&self, req: test::TestRequest) -> (u16, Value) {
        let app = test::init_service(http::app(self.state.clone())).await;
        let req = req.insert_header(("authorization", format!("Bearer {ADMIN}")));
        let resp = test::call_service(&app, req.to_request()).await;
        let status = resp.status().as_u16();
        let body = test::read_body(resp).await;
        let value = serde_json::from_slice(&body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&body)));
        (status, value)
    }

    async fn get(&self, uri: &str) -> (u16, Value) {
        self.call(test::TestRequest::get().uri(uri)).await
    }

    async fn form(&self, uri: &str, body: &str) -> (u16, Value) {
        self.call(
            test::TestRequest::post()
                .uri(uri)
                .insert_header(("content-type", FORM))
                .set_payload(body.to_string()),
        )
        .await
    }

    /// The old clients' save: form field `job` holding the JSON.
    async fn save(&self, job: Value) -> (u16, Value) {
        let body = format!("job={}", urlencode(&job.to_string()));
        self.form("/job/save", &body).await
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn run(id: &str, job: &str, start: i64) -> RunRecord {
    RunRecord {
        params: Default::default(),
        triggered_by: None,
        run_id: id.into(),
        job_name: job.into(),
        command: "echo hello".into(),
        worker: "w1".into(),
        plan_time: start,
        schedule_time: start,
        start_time: start,
        end_time: start + 5,
        status: RunStatus::Succeeded,
        exit_code: Some(0),
        signal: None,
        output: format!("hello from {id}\n"),
        truncated: false,
        err: String::new(),
        requested_by: None,
    }
}

fn job1() -> Value {
    json!({"name": "job1", "command": "echo hello", "cronExpr": "*/5 * * * * * *"})
}

// --- The old system's request examples -------------------------------------

#[actix_rt::test]
async fn old_save_list_log_kill_delete_round_trip() {
    let api = api();
    assert_eq!(
        api.save(job1()).await,
        (200, json!({"errno": 0, "msg": "success", "data": null}))
    );

    // Saving again answers the previous version.
    let mut changed = job1();
    changed["command"] = json!("echo changed");
    let (status, body) = api.save(changed).await;
    assert_eq!(status, 200);
    assert_eq!(body["data"]["command"], "echo hello");

    let (status, body) = api.get("/job/list").await;
    assert_eq!(status, 200);
    let jobs = body["data"].as_array().unwrap();
    assert_eq!(jobs.len(), 1);
    assert_eq!(
        (&jobs[0]["name"], &jobs[0]["command"], &jobs[0]["cronExpr"]),
        (
            &json!("job1"),
            &json!("echo changed"),
            &json!("*/5 * * * * * *")
        )
    );

    let runs: Vec<RunRecord> = (0..30)
        .map(|i| run(&format!("r{i:02}"), "job1", 1000 + i))
        .collect();
    api.state.run_log.insert_batch(&runs).await.unwrap();
    let (_, body) = api.get("/job/log?name=job1&skip=0&limit=5").await;
    let ids: Vec<&str> = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["run_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["r29", "r28", "r27", "r26", "r25"]);
    assert_eq!(body["data"][0]["output"], "hello from r29\n");
    let (_, body) = api.get("/job/log?name=job1&skip=25&limit=10").await;
    assert_eq!(body["data"].as_array().unwrap().len(), 5);
    let (_, body) = api.get("/job/log?name=job1").await;
    assert_eq!(
        body["data"].as_array().unwrap().len(),
        20,
        "the old default page"
    );

    assert_eq!(
        api.form("/job/kill", "name=job1").await,
        (200, json!({"errno": 0, "msg": "success", "data": null}))
    );
    let request = api
        .state
        .coord
        .get("kill/job1")
        .await
        .unwrap()
        .expect("a kill request");
    assert_ne!(request.lease, 0, "kill requests expire by themselves");

    let (status, body) = api.form("/job/delete", "name=job1").await;
    assert_eq!(status, 200);
    assert_eq!(body["data"]["name"], "job1");
    assert_eq!(api.get("/job/list").await.1["data"], json!([]));
}

#[actix_rt::test]
async fn job_list_pages_and_filters_by_name() {
    let api = api();
    for name in ["backup-db", "backup-files", "report", "cleanup"] {
        api.save(json!({"name": name, "command": "true", "cronExpr": "@daily"}))
            .await;
    }
    let names = |body: Value| -> Vec<String> {
        body["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        names(api.get("/job/list?limit=2").await.1),
        ["backup-db", "backup-files"]
    );
    assert_eq!(
        names(api.get("/job/list?skip=2&limit=1").await.1),
        ["cleanup"]
    );
    assert_eq!(
        names(api.get("/job/list?q=BACKUP").await.1),
        ["backup-db", "backup-files"]
    );
    assert_eq!(
        names(api.get("/job/list?q=backup&skip=1&limit=5").await.1),
        ["backup-files"]
    );
    assert_eq!(
        api.get("/job/list").await.1["data"]
            .as_array()
            .unwrap()
            .len(),
        4
    );
}

#[actix_rt::test]
async fn job_list_follows_jobs_written_by_another_manager() {
    let api = api();
    let other = distcron::job::Job::new("elsewhere", "true", "@daily");
    api.state
        .coord
        .put("jobs/elsewhere", serde_json::to_vec(&other).unwrap(), None)
        .await
        .unwrap();
    let listed = |body: Value| {
        body["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|j| j["name"] == "elsewhere")
    };
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while !listed(api.get("/job/list?limit=50").await.1) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the index never saw the job"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    api.state.coord.delete("jobs/elsewhere").await.unwrap();
    while listed(api.get("/job/list?limit=50").await.1) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the index kept a deleted job"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[actix_rt::test]
async fn worker_list_gives_addresses_as_before() {
    let api = api();
    let info = json!({"id": "w1", "address": "host-a", "group": "default", "version": "0.1.0",
        "started": 1, "heartbeat": 1767225600000i64, "cpuPercent": 1.5, "memoryBytes": 1024,
        "hostMemoryPercent": 10.0, "running": 2});
    api.state
        .coord
        .put("workers/w1", info.to_string().into_bytes(), None)
        .await
        .unwrap();
    assert_eq!(
        api.get("/worker/list").await,
        (
            200,
            json!({"errno": 0, "msg": "success", "data": ["host-a"]})
        )
    );
    let (_, body) = api.get("/worker/info").await;
    assert_eq!(body["data"][0]["id"], "w1");
    assert_eq!(body["data"][0]["running"], 2);
    assert_eq!(body["data"][0]["stale"], false);
}

// --- New endpoints -----------------------------------------------------------

#[actix_rt::test]
async fn save_accepts_a_json_body_with_new_fields() {
    let api = api();
    let job = json!({"name": "nightly", "command": "backup", "cronExpr": "0 2 * * *",
        "timezone": "Europe/Berlin", "timeout": 600, "overlap": "replace", "env": {"A": "1"}});
    let (status, _) = api
        .call(test::TestRequest::post().uri("/job/save").set_json(&job))
        .await;
    assert_eq!(status, 200);
    let (_, body) = api.get("/job/get?name=nightly").await;
    let detail = &body["data"];
    assert_eq!(detail["job"]["timezone"], "Europe/Berlin");
    assert_eq!(detail["job"]["overlap"], "replace");
    assert_eq!(detail["next"][0], "2026-01-01T01:00:00Z", "02:00 in Berlin");
    assert_eq!(detail["next"].as_array().unwrap().len(), 5);
    assert_eq!(detail["lastRun"], Value::Null);
}

#[actix_rt::test]
async fn run_now_leaves_a_short_lived_request_for_the_owning_worker() {
    let api = api();
    api.save(job1()).await;
    let (status, body) = api.form("/job/run", "name=job1").await;
    assert_eq!(status, 200);
    assert_eq!(body["data"]["planTime"], 1_767_225_600_000i64);
    let request = api
        .state
        .coord
        .get("run/job1")
        .await
        .unwrap()
        .expect("a run request");
    let request_value: Value = serde_json::from_slice(&request.value).unwrap();
    assert_eq!(
        request_value,
        serde_json::json!({
            "planTime": 1_767_225_600_000i64,
            "requestedBy": "adminToken (config:adminToken)"
        }),
        "the request says who asked, for the run record"
    );
    assert_ne!(request.lease, 0, "run requests expire by themselves");
    assert_eq!(api.form("/job/run", "name=ghost").await.0, 404);
}

#[actix_rt::test]
async fn pause_and_resume_keep_the_definition() {
    let api = api();
    api.save(job1()).await;
    let (status, body) = api.form("/job/pause", "name=job1").await;
    assert_eq!((status, &body["data"]["enabled"]), (200, &json!(false)));
    let (_, body) = api.get("/job/get?name=job1").await;
    assert_eq!(
        body["data"]["next"],
        json!([]),
        "a paused job fires nothing"
    );
    assert_eq!(body["data"]["job"]["command"], "echo hello");
    let (_, body) = api
        .call(
            test::TestRequest::post()
                .uri("/job/resume")
                .set_json(json!({"name": "job1"})),
        )
        .await;
    assert_eq!(body["data"]["enabled"], true);
}

#[actix_rt::test]
async fn running_and_run_get_show_runs() {
    let api = api();
    api.save(job1()).await;
    let entry = json!({"run_id": "job1-1-w1", "jobName": "job1", "command": "echo hello", "worker": "w1",
        "planTime": 1767225590000i64, "scheduleTime": 1767225590000i64, "startTime": 1767225590000i64});
    api.state
        .coord
        .put(
            "running/job1/job1-1-w1",
            entry.to_string().into_bytes(),
            None,
        )
        .await
        .unwrap();
    let (_, body) = api.get("/job/running").await;
    assert_eq!(body["data"][0]["run_id"], "job1-1-w1");
    assert_eq!(body["data"][0]["elapsedMs"], 10_000);
    let (_, body) = api.get("/job/get?name=job1").await;
    assert_eq!(body["data"]["running"][0]["worker"], "w1");

    api.state
        .run_log
        .insert_batch(&[run("r1", "job1", 5)])
        .await
        .unwrap();
    let (status, body) = api.get("/run/get?id=r1").await;
    assert_eq!(
        (status, &body["data"]["output"]),
        (200, &json!("hello from r1\n"))
    );
    assert_eq!(api.get("/run/get?id=nope").await.0, 404);
}

#[actix_rt::test]
async fn health_and_readiness() {
    let api = api();
    assert_eq!(
        api.get("/healthz").await,
        (200, json!({"errno": 0, "msg": "success", "data": "ok"}))
    );
    assert_eq!(api.get("/readyz").await.0, 200);
}

#[actix_rt::test]
async fn metrics_render_worker_counters_and_http_requests() {
    let api = api();
    let info = json!({"id": "w1", "address": "host-a", "group": "default", "version": "0.1.0",
        "started": 1, "heartbeat": 1767225600000i64, "cpuPercent": 0.0, "memoryBytes": 0,
        "hostMemoryPercent": 0.0, "running": 1, "waiting": 4,
        "batcher": {"received": 3, "queued": 2, "journalBytes": 10,
            "runsByStatus": {"succeeded": 2, "failed": 1},
            "latenessBuckets": [1, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0], "latenessSumMs": 40},
        "claims": {"claimsWon": 3, "claimsLost": 4},
        "supervisor": {"jobsKnown": 7, "jobsOwned": 5, "resyncs": 1, "lostRunsRecorded": 2, "lostRunsRerun": 1},
        "kills": {"requestsSeen": 3, "runsKilled": 2}});
    api.state
        .coord
        .put("workers/w1", info.to_string().into_bytes(), None)
        .await
        .unwrap();
    api.get("/job/list").await;
    let app = test::init_service(http::app(api.state.clone())).await;
    let resp = test::call_service(
        &app,
        test::TestRequest::get()
            .uri("/metrics")
            .insert_header(("authorization", format!("Bearer {ADMIN}")))
            .to_request(),
    )
    .await;
    assert_eq!(resp.status().as_u16(), 200);
    assert!(
        resp.headers()
            .get("content-type")
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let text = String::from_utf8(test::read_body(resp).await.to_vec()).unwrap();
    assert!(text.ends_with("# EOF\n"));
    for line in [
        "distcron_workers_alive 1",
        "distcron_runs_total{worker=\"w1\",status=\"succeeded\"} 2",
        "distcron_runs_total{worker=\"w1\",status=\"failed\"} 1",
        "distcron_start_lateness_seconds_bucket{le=\"0.005\",worker=\"w1\"} 1",
        "distcron_start_lateness_seconds_bucket{le=\"0.025\",worker=\"w1\"} 3",
        "distcron_start_lateness_seconds_bucket{le=\"+Inf\",worker=\"w1\"} 3",
        "distcron_start_lateness_seconds_sum{worker=\"w1\"} 0.04",
        "distcron_tick_claims_total{worker=\"w1\",result=\"won\"} 3",
        "distcron_tick_claims_total{worker=\"w1\",result=\"lost\"} 4",
        "distcron_batcher_queue_records{worker=\"w1\"} 2",
        "distcron_journal_bytes{worker=\"w1\"} 10",
        "distcron_runs_in_progress{worker=\"w1\"} 1",
        "distcron_runs_waiting{worker=\"w1\"} 4",
        "distcron_jobs_known{worker=\"w1\"} 7",
        "distcron_jobs_owned{worker=\"w1\"} 5",
        "distcron_supervisor_resyncs_total{worker=\"w1\"} 1",
        "distcron_lost_runs_recorded_total{worker=\"w1\"} 2",
        "distcron_lost_runs_rerun_total{worker=\"w1\"} 1",
        "distcron_runs_killed_total{worker=\"w1\"} 2",
        "distcron_http_requests_total{route=\"/job/list\",status=\"200\"} 1",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in:\n{text}"
        );
    }
}

#[actix_rt::test]
async fn openapi_describes_every_route() {
    let api = api();
    let (status, doc) = api.get("/openapi.json").await;
    assert_eq!(status, 200);
    assert_eq!(doc["openapi"], "3.0.3");
    // Every route of src/http/routes/mod.rs, with its method.
    let routes = include_str!("../src/http/routes/mod.rs");
    let mut checked = 0;
    for line in routes.lines().filter(|l| l.contains(".route(\"")) {
        let path = line.split('"').nth(1).unwrap();
        let method = if line.contains("web::post()") {
            "post"
        } else {
            "get"
        };
        assert!(
            doc["paths"][path][method].is_object(),
            "{method} {path} missing from openapi.json"
        );
        assert!(
            distcron::auth::rule_for(&method.to_uppercase(), path).is_some(),
            "{method} {path} has no entry in the permission table (src/auth/permissions.rs)"
        );
        checked += 1;
    }
    assert_eq!(
        checked, 35,
        "the route table changed: update openapi.json and this count"
    );
    let job_fields: Vec<&String> = doc["components"]["schemas"]["Job"]["properties"]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    let saved = serde_json::to_value(distcron::job::Job::new("a", "true", "@daily")).unwrap();
    for field in saved.as_object().unwrap().keys() {
        assert!(
            job_fields.contains(&field),
            "Job field {field} not described"
        );
    }
}

// --- Errors ------------------------------------------------------------------

#[actix_rt::test]
async fn a_bad_job_is_400_naming_the_field_and_stores_nothing() {
    let api = api();
    api.save(job1()).await;
    let mut bad = job1();
    bad["cronExpr"] = json!("0 0 30 2 *");
    bad["command"] = json!("rm -rf /tmp/x");
    let (status, body) = api.save(bad).await;
    assert_eq!(status, 400);
    assert_eq!(
        body,
        json!({"errno": -1, "msg": "cronExpr: the expression never fires (no calendar date matches it)", "data": null})
    );
    let (_, body) = api.get("/job/get?name=job1").await;
    assert_eq!(
        body["data"]["job"]["command"], "echo hello",
        "the stored job is unchanged"
    );

    let (status, body) = api
        .save(json!({"name": "a b", "command": "x", "cronExpr": "@daily"}))
        .await;
    assert_eq!(status, 400);
    assert!(
        body["msg"]
            .as_str()
            .unwrap()
            .starts_with("name: character ' ' is not allowed")
    );
    let (status, body) = api
        .save(json!({"name": "a", "command": "x", "cronExpr": "@daily", "colour": 1}))
        .await;
    assert_eq!(status, 400);
    assert!(
        body["msg"]
            .as_str()
            .unwrap()
            .contains("unknown field `colour`"),
        "{body}"
    );
}

#[actix_rt::test]
async fn unknown_jobs_are_404() {
    let api = api();
    for (uri, body) in [
        ("/job/delete", "name=ghost"),
        ("/job/kill", "name=ghost"),
        ("/job/pause", "name=ghost"),
    ] {
        let (status, reply) = api.form(uri, body).await;
        assert_eq!(
            (status, &reply["msg"]),
            (404, &json!("job ghost not found")),
            "{uri}"
        );
    }
    assert_eq!(api.get("/job/get?name=ghost").await.0, 404);
}

#[actix_rt::test]
async fn malformed_requests_get_the_same_envelope() {
    let api = api();
    let (status, body) = api.form("/job/save", "jobb=1").await;
    assert_eq!((status, body["errno"].clone()), (400, json!(-1)));
    assert!(
        body["msg"].as_str().unwrap().starts_with("form body:"),
        "{body}"
    );
    let (status, body) = api
        .call(
            test::TestRequest::post()
                .uri("/job/save")
                .insert_header(("content-type", "application/json"))
                .set_payload("{not json"),
        )
        .await;
    assert_eq!((status, body["errno"].clone()), (400, json!(-1)));
    assert_eq!(api.form("/job/save", "job={oops").await.0, 400);
    let (status, body) = api.get("/job/log?name=job1&limit=5000").await;
    assert_eq!(
        (status, body["msg"].clone()),
        (400, json!("limit: must be from 1 to 1000"))
    );
    assert_eq!(api.get("/job/log?name=job1&status=great").await.0, 400);
    assert_eq!(api.get("/job/log").await.1["msg"], "name: is required");
    assert_eq!(api.get("/job/list?limit=many").await.0, 400);
}

#[actix_rt::test]
async fn a_body_over_one_mebibyte_is_413() {
    let api = api();
    let big = format!("job={}", "x".repeat(http::MAX_BODY_BYTES + 1));
    let (status, body) = api.form("/job/save", &big).await;
    assert_eq!(status, 413);
    assert_eq!(body["errno"], -1);
    assert_eq!(api.get("/job/list").await.1["data"], json!([]));
}

#[actix_rt::test]
async fn unknown_route_is_404_in_the_envelope() {
    let api = api();
    let (status, body) = api.get("/no/such/thing").await;
    assert_eq!(
        (status, body["msg"].clone()),
        (404, json!("no route for GET /no/such/thing"))
    );
}

#[actix_rt::test]
async fn schedule_preview_lists_the_next_five_fire_times() {
    let api = api();
    let (status, body) = api
        .get("/schedule/preview?cronExpr=0%200%20*%20*%201")
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["data"]["next"][0], "2026-01-05T00:00:00Z");
    assert_eq!(body["data"]["next"].as_array().unwrap().len(), 5);
    let (status, body) = api
        .get("/schedule/preview?cronExpr=0%200%2030%202%20*")
        .await;
    assert_eq!(status, 400);
    assert_eq!(
        body["msg"],
        "cronExpr: the expression never fires (no calendar date matches it)"
    );
    let (status, body) = api.get("/schedule/preview?cronExpr=@daily&bogus=1").await;
    assert_eq!(status, 400);
    assert!(
        body["msg"]
            .as_str()
            .unwrap()
            .contains("unknown field `bogus`")
    );
}

// --- The console's endpoints and files --------------------------------------

#[actix_rt::test]
async fn job_table_gives_a_page_with_total_next_fire_last_run_and_running() {
    let api = api();
    for name in ["alpha", "beta", "gamma"] {
        let job = json!({"name": name, "command": "true", "cronExpr": "0 * * * *"});
        assert_eq!(api.save(job).await.0, 200);
    }
    api.form("/job/pause", "name=gamma").await;
    let now_ms = 1_767_225_600_000; // the test clock
    api.state
        .run_log
        .insert_batch(&[
            run("b-old", "beta", now_ms - 120_000),
            run("b-new", "beta", now_ms - 60_000),
        ])
        .await
        .unwrap();
    let entry = json!({"run_id": "beta-1-w1", "jobName": "beta", "command": "true", "worker": "w1",
        "planTime": now_ms, "scheduleTime": now_ms, "startTime": now_ms});
    api.state
        .coord
        .put(
            "running/beta/beta-1-w1",
            entry.to_string().into_bytes(),
            None,
        )
        .await
        .unwrap();

    let (status, body) = api.get("/job/table?skip=1&limit=2").await;
    assert_eq!(status, 200, "{body}");
    let data = &body["data"];
    assert_eq!(data["total"], 3);
    let rows = data["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["job"]["name"], "beta");
    assert_eq!(rows[0]["next"], "2026-01-01T01:00:00Z");
    assert_eq!(rows[0]["lastRun"]["run_id"], "b-new");
    assert!(
        rows[0]["lastRun"].get("output").is_none(),
        "rows carry no output"
    );
    assert_eq!(rows[0]["running"], 1);
    assert_eq!(rows[1]["job"]["name"], "gamma");
    assert_eq!(rows[1]["next"], Value::Null, "paused jobs fire nothing");
    assert_eq!(rows[1]["lastRun"], Value::Null);

    let (_, body) = api.get("/job/table?q=MM").await;
    assert_eq!(body["data"]["total"], 1);
    assert_eq!(body["data"]["rows"][0]["job"]["name"], "gamma");
    let (status, body) = api.get("/job/table?limit=201").await;
    assert_eq!(status, 400);
    assert!(
        body["msg"].as_str().unwrap().starts_with("limit:"),
        "{body}"
    );
}

#[actix_rt::test]
async fn overview_counts_recent_runs_failures_and_running() {
    let api = api();
    api.save(job1()).await;
    let now_ms = 1_767_225_600_000;
    let mut failed = run("f1", "job1", now_ms - 30 * 60_000);
    failed.status = RunStatus::Failed;
    api.state
        .run_log
        .insert_batch(&[
            run("r-now", "job1", now_ms - 10_000),
            run("r-old", "job1", now_ms - 2 * 3_600_000),
            failed,
        ])
        .await
        .unwrap();
    let (status, body) = api.get("/overview").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["data"],
        json!({"jobs": 1, "workersAlive": 0, "running": 0,
               "runsLastMinute": 1, "runsLastHour": 2, "failuresLastHour": 1})
    );
}

#[actix_rt::test]
async fn the_console_is_served_from_the_webroot_and_nothing_else_is() {
    let root = tempfile::tempdir().unwrap();
    let write = |path: &str, text: &str| {
        let path = root.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    };
    let mut api = api();
    api.state = api
        .state
        .clone()
        .with_webroot(root.path().to_str().unwrap());
    let app = test::init_service(http::app(api.state.clone())).await;
    let resp = test::call_service(&app, test::TestRequest::get().uri("/").to_request()).await;
    assert_eq!(resp.status().as_u16(), 503, "no console installed");
    let text = test::read_body(resp).await;
    assert!(String::from_utf8_lossy(&text).contains("npm ci"));

    write("index.html", "<title>distcron</title>");
    write("js/console.js", "// console");
    write("css/console.css", "/* console */");
    write("node_modules/jquery/dist/jquery.min.js", "// jquery");
    write(
        "node_modules/bootstrap/dist/css/bootstrap.min.css",
        "/* bs */",
    );
    write("node_modules/chart.js/dist/chart.umd.min.js", "// charts");
    write("favicon.svg", "<svg/>");
    write("package.json", "{}");
    let app = test::init_service(http::app(api.state.clone())).await;
    for (uri, status) in [
        ("/", 200),
        ("/js/console.js", 200),
        ("/css/console.css", 200),
        ("/vendor/jquery/jquery.min.js", 200),
        ("/vendor/bootstrap/css/bootstrap.min.css", 200),
        ("/vendor/chart.js/chart.umd.min.js", 200),
        ("/favicon.svg", 200),
        ("/package.json", 404),
        ("/node_modules/jquery/dist/jquery.min.js", 404),
        ("/js/../package.json", 404),
    ] {
        // The console's files need no credentials; anything else does, so
        // the rest is asked with the admin token to see it is not served.
        let mut req = test::TestRequest::get().uri(uri);
        if status == 404 {
            req = req.insert_header(("authorization", format!("Bearer {ADMIN}")));
        }
        let resp = test::call_service(&app, req.to_request()).await;
        assert_eq!(resp.status().as_u16(), status, "{uri}");
    }
    let resp = test::call_service(&app, test::TestRequest::get().uri("/").to_request()).await;
    assert_eq!(test::read_body(resp).await, "<title>distcron</title>");
    // The API is unchanged beside it.
    assert_eq!(api.get("/job/list").await.0, 200);
}

#[actix_rt::test]
async fn fixed_delay_jobs_explain_their_next_time_and_leave_no_state_when_deleted() {
    let api = api();
    let (status, _) = api
        .save(json!({"name": "chain", "command": "true", "cronExpr": "@delay 30s"}))
        .await;
    assert_eq!(status, 200);
    let note = "fixed delay: each run starts 30s after the previous run ends, so the next time depends on the run";
    let (_, detail) = api.get("/job/get?name=chain").await;
    assert_eq!(detail["data"]["next"], json!([]));
    assert_eq!(detail["data"]["scheduleNote"], note);
    let (_, preview) = api.get("/schedule/preview?cronExpr=%40delay%2030s").await;
    assert_eq!(preview["data"]["note"], note);
    let (_, table) = api.get("/job/table").await;
    assert_eq!(table["data"]["rows"][0]["scheduleNote"], note);
    // The chain's state goes with the job.
    api.state
        .coord
        .put(
            "delay/chain",
            br#"{"lastTick":1,"lastEnd":2}"#.to_vec(),
            None,
        )
        .await
        .unwrap();
    assert_eq!(api.form("/job/delete", "name=chain").await.0, 200);
    assert!(api.state.coord.get("delay/chain").await.unwrap().is_none());
}

// --- Chains, parameters, import and export -----------------------------------

impl Api {
    async fn json(&self, uri: &str, body: Value) -> (u16, Value) {
        self.call(test::TestRequest::post().uri(uri).set_json(body))
            .await
    }
}

fn chained(name: &str, on_success: &[&str], on_failure: &[&str]) -> Value {
    json!({"name": name, "command": "true", "cronExpr": "@daily",
           "onSuccess": on_success, "onFailure": on_failure})
}

#[actix_rt::test]
async fn a_chain_that_would_loop_or_names_a_missing_job_is_refused() {
    let api = api();
    let (status, body) = api.save(chained("extract", &["load"], &[])).await;
    assert_eq!(status, 400);
    assert_eq!(
        body["msg"],
        "onSuccess: job 'load' does not exist (save it first)"
    );
    assert_eq!(api.save(chained("report", &[], &[])).await.0, 200);
    assert_eq!(api.save(chained("load", &["report"], &[])).await.0, 200);
    assert_eq!(api.save(chained("extract", &["load"], &[])).await.0, 200);
    // report -> extract would close extract -> load -> report -> extract.
    let (status, body) = api.save(chained("report", &[], &["extract"])).await;
    assert_eq!(status, 400);
    assert_eq!(
        body["msg"],
        "onFailure: would create a cycle: report -> extract -> load -> report (a chain must not lead back to a job in it)"
    );
    let (_, body) = api.get("/job/get?name=report").await;
    assert_eq!(body["data"]["job"].get("onFailure"), None, "nothing stored");
    assert_eq!(
        body["data"]["upstream"],
        json!([{"job": "load", "on": "success"}])
    );
    let (_, body) = api.get("/job/get?name=load").await;
    assert_eq!(
        body["data"]["downstream"],
        json!([{"job": "report", "on": "success"}])
    );
}

#[actix_rt::test]
async fn run_with_parameters_leaves_them_in_the_request_and_checks_them() {
    let api = api();
    api.save(job1()).await;
    let (status, body) = api
        .json(
            "/job/run",
            json!({"name": "job1", "env": {"DAY": "monday"}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let kv = api
        .state
        .coord
        .get(&distcron::keyspace::run_request_key("job1"))
        .await
        .unwrap()
        .unwrap();
    let request = distcron::keyspace::RunRequest::parse(&kv.value).unwrap();
    assert_eq!(request.params["DAY"], "monday");
    assert!(request.requested_by.is_some());
    let (status, body) = api
        .json("/job/run", json!({"name": "job1", "env": {"A=B": "x"}}))
        .await;
    assert_eq!(status, 400);
    assert_eq!(body["msg"], "env: \"A=B\" is not a valid variable name");
    let big = "x".repeat(70 * 1024);
    let (status, body) = api
        .json("/job/run", json!({"name": "job1", "env": {"BIG": big}}))
        .await;
    assert_eq!(status, 400);
    assert!(
        body["msg"].as_str().unwrap().starts_with("env: is "),
        "{body}"
    );
}

#[actix_rt::test]
async fn export_then_import_on_an_empty_cluster_gives_the_same_jobs() {
    let from = api();
    from.save(chained("report", &[], &[])).await;
    from.save(chained("load", &["report"], &["report"])).await;
    let mut with_env = job1();
    with_env["env"] = json!({"TOKEN": "s3cret"});
    with_env["overlap"] = json!("allow");
    with_env["maxConcurrent"] = json!(3);
    from.save(with_env).await;
    let (status, exported) = from.get("/job/export").await;
    assert_eq!(status, 200);
    let document = exported["data"].clone();
    assert_eq!(document["version"], 1);
    assert_eq!(document["jobs"].as_array().unwrap().len(), 3);
    assert_eq!(document["jobs"][0]["env"]["TOKEN"], "s3cret");

    let to = api();
    let (status, plan) = to.json("/job/import?dryRun=true", document.clone()).await;
    assert_eq!(status, 200, "{plan}");
    assert_eq!(
        plan["data"],
        json!({"dryRun": true, "created": ["job1", "load", "report"], "changed": [], "deleted": [], "unchanged": 0})
    );
    let (_, list) = to.get("/job/list").await;
    assert_eq!(list["data"], json!([]), "a dry run changes nothing");

    let (status, plan) = to.json("/job/import", document.clone()).await;
    assert_eq!(status, 200, "{plan}");
    assert_eq!(plan["data"]["created"].as_array().unwrap().len(), 3);
    let (_, again) = to.get("/job/export").await;
    assert_eq!(again["data"]["jobs"], document["jobs"], "the same jobs");
    // Applying it again changes nothing.
    let (_, plan) = to.json("/job/import", document).await;
    assert_eq!(plan["data"]["unchanged"], 3);
}

#[actix_rt::test]
async fn an_invalid_import_changes_nothing_and_names_the_job_and_field() {
    let api = api();
    api.save(job1()).await;
    api.save(chained("keep", &[], &[])).await;
    let good = json!({"name": "job1", "command": "echo changed", "cronExpr": "@hourly"});
    let cases = [
        (
            json!({"version": 1, "jobs": [good, {"name": "bad", "command": "x", "cronExpr": "0 0 30 2 *"}]}),
            "jobs[1] (bad): cronExpr: the expression never fires (no calendar date matches it)",
        ),
        (
            json!({"version": 1, "jobs": [good, {"name": "bad", "command": "x", "cronExpr": "@daily", "retries": "many"}]}),
            "jobs[1] (bad): job: invalid type: string \"many\", expected u32",
        ),
        (
            json!({"version": 1, "jobs": [good, good]}),
            "jobs[1] (job1): name: appears twice in the document",
        ),
        (
            json!({"version": 1, "jobs": [good, chained("new", &["ghost"], &[])]}),
            "jobs[1] (new): onSuccess: job 'ghost' does not exist (save it first)",
        ),
        (
            json!({"version": 1, "jobs": [chained("a", &["b"], &[]), chained("b", &["a"], &[])]}),
            "onSuccess: would create a cycle: a -> b -> a (a chain must not lead back to a job in it)",
        ),
        (
            json!({"version": 2, "jobs": []}),
            "version: 2 is not a version this manager reads (it reads 1)",
        ),
    ];
    for (document, message) in cases {
        let (status, body) = api.json("/job/import?prune=true", document).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["msg"], message);
    }
    let (_, list) = api.get("/job/list").await;
    let names: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["job1", "keep"]);
    assert_eq!(list["data"][0]["command"], "echo hello", "nothing changed");
    // A valid import with prune deletes what the document lacks.
    let (status, plan) = api
        .json(
            "/job/import?prune=true",
            json!({"version": 1, "jobs": [good]}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        (
            plan["data"]["changed"].clone(),
            plan["data"]["deleted"].clone()
        ),
        (json!(["job1"]), json!(["keep"]))
    );
}
