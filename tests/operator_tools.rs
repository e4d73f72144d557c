//! Issue L's operator tools on `distcron standalone`, driven through the
//! `distcron` command-line client as an operator would: chains (counted by
//! the commands' own ledger as well as by records), runs with parameters,
//! import/export between two standalones, the concurrency cap, and the
//! client's output and exit codes.

mod support;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use support::{ADMIN_TOKEN, Standalone, eventually};

/// Run `distcron ARGS` against `base` with the admin token.
fn cli(base: &str, args: &[&str]) -> Output {
    cli_as(base, Some(ADMIN_TOKEN), args, None)
}

fn cli_as(base: &str, token: Option<&str>, args: &[&str], stdin: Option<&str>) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_distcron"));
    command
        .args(args)
        .env("DISTCRON_URL", base)
        .env_remove("DISTCRON_TOKEN")
        .env_remove("DISTCRON_TOKEN_FILE")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(token) = token {
        command.env("DISTCRON_TOKEN", token);
    }
    let mut child = command.spawn().expect("run distcron");
    if let Some(text) = stdin {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    drop(child.stdin.take());
    child.wait_with_output().unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The client's output, having checked it exited 0.
fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    stdout(&out)
}

fn json_of(out: Output) -> Value {
    let text = ok(out);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

fn save(base: &str, job: Value) {
    let out = cli_as(
        base,
        Some(ADMIN_TOKEN),
        &["job", "save", "-f", "-"],
        Some(&job.to_string()),
    );
    ok(out);
}

/// Lines of the ledger the jobs' commands append to.
fn ledger(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect()
}

fn runs_of(base: &str, job: &str) -> Vec<Value> {
    let out = cli(base, &["runs", job, "--json", "--limit", "100"]);
    json_of(out).as_array().cloned().unwrap_or_default()
}

/// How many ledger lines a job's command wrote (`<label> <run id>`).
fn executions(lines: &[String], label: &str) -> usize {
    lines
        .iter()
        .filter(|l| l.starts_with(&format!("{label} ")))
        .count()
}

fn final_runs(base: &str, job: &str) -> Vec<Value> {
    runs_of(base, job)
        .into_iter()
        .filter(|r| !matches!(r["status"].as_str(), Some("started" | "pending")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chains_run_each_child_once_also_across_a_kill_after_the_parent_ended() {
    let s = Standalone::start(&[]).await;
    let ledger_path = s.dir.path().join("ledger");
    let ledger_arg = ledger_path.display().to_string();
    let writes = |label: &str| format!("echo {label} $DISTCRON_RUN_ID >> {ledger_arg}");
    save(
        &s.base,
        json!({"name": "load", "command": writes("load"), "cronExpr": "@yearly"}),
    );
    save(
        &s.base,
        json!({"name": "alert", "command": writes("alert"), "cronExpr": "@yearly"}),
    );
    save(
        &s.base,
        json!({"name": "extract", "command": writes("extract"), "cronExpr": "@yearly",
                    "onSuccess": ["load"], "onFailure": ["alert"]}),
    );
    save(
        &s.base,
        json!({"name": "flaky", "command": format!("{}; exit 1", writes("flaky")),
                    "cronExpr": "@yearly", "retries": 1, "retryBackoff": 1,
                    "onSuccess": ["load"], "onFailure": ["alert"]}),
    );
    // A cycle is refused, naming it, and changes nothing.
    let out = cli_as(
        &s.base,
        Some(ADMIN_TOKEN),
        &["job", "save", "-f", "-"],
        Some(&json!({"name": "load", "command": "true", "cronExpr": "@yearly", "onFailure": ["flaky"]}).to_string()),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("would create a cycle: load -> flaky -> load"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown = ok(cli(&s.base, &["job", "get", "load"]));
    assert!(
        shown.contains("upstream: extract (on success), flaky (on success)"),
        "{shown}"
    );

    ok(cli(&s.base, &["job", "run", "extract"]));
    ok(cli(&s.base, &["job", "run", "flaky"]));
    // Both children of both parents have a final record.
    let (load, alert) = eventually("the chained runs", Duration::from_secs(30), || async {
        let (load, alert) = (final_runs(&s.base, "load"), final_runs(&s.base, "alert"));
        (!load.is_empty() && !alert.is_empty()).then_some((load, alert))
    })
    .await;
    let extract = final_runs(&s.base, "extract");
    assert_eq!(load[0]["triggeredBy"], extract[0]["run_id"]);
    let flaky = final_runs(&s.base, "flaky");
    assert_eq!(flaky.len(), 2, "the first attempt and its retry: {flaky:?}");
    let last_attempt = flaky
        .iter()
        .find(|r| r["run_id"].as_str().unwrap().ends_with("-retry1"))
        .unwrap();
    assert_eq!(
        alert[0]["triggeredBy"], last_attempt["run_id"],
        "only the last attempt chains"
    );

    // Kill the worker (the whole standalone) after the parents ended, and
    // start it again on the same data: the chain requests are still there
    // (their lease outlives the restart) and are seen again; the claims
    // keyed by the parent runs keep the children from running twice.
    let (dir, listen) = (s.dir.clone(), s.listen.clone());
    let mut s = s;
    let _ = s.child.kill();
    let _ = s.child.wait();
    drop(s);
    let s = Standalone::start_in(dir, listen, &[]).await;
    // A canary every second: once it ran twice after the restart, the new
    // worker owns its jobs and has listed the run requests.
    save(
        &s.base,
        json!({"name": "canary", "command": "true", "cronExpr": "* * * * * *"}),
    );
    eventually(
        "the restarted worker at work",
        Duration::from_secs(30),
        || async { (final_runs(&s.base, "canary").len() >= 2).then_some(()) },
    )
    .await;
    let lines = ledger(&ledger_path);
    let count = |label: &str| executions(&lines, label);
    assert_eq!(
        (
            count("extract"),
            count("flaky"),
            count("load"),
            count("alert")
        ),
        (1, 2, 1, 1),
        "executions by the ledger: {lines:?}"
    );
    assert_eq!(final_runs(&s.base, "load").len(), 1);
    assert_eq!(final_runs(&s.base, "alert").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_drives_every_command_and_exits_with_documented_codes() {
    let s = Standalone::start(&[]).await;
    let base = s.base.as_str();
    save(
        &s.base,
        json!({"name": "hello", "command": "echo \"hello $WHO\"; echo line2", "cronExpr": "@yearly",
                    "env": {"WHO": "world"}}),
    );
    // Tables for people, JSON for scripts.
    let table = ok(cli(base, &["job", "list"]));
    let mut lines = table.lines();
    assert!(lines.next().unwrap().starts_with("NAME"), "{table}");
    assert!(lines.next().unwrap().starts_with("hello"), "{table}");
    let listed = json_of(cli(base, &["job", "list", "--json"]));
    assert_eq!(listed[0]["name"], "hello");
    assert!(ok(cli(base, &["job", "get", "hello"])).contains("schedule: @yearly (UTC)"));

    // A run with parameters: the override reaches the command and the record.
    let asked = ok(cli(
        base,
        &["job", "run", "hello", "--env", "WHO=operators"],
    ));
    assert!(asked.contains("job hello asked to run with WHO"), "{asked}");
    let run = eventually(
        "the run with parameters",
        Duration::from_secs(30),
        || async { final_runs(&s.base, "hello").into_iter().next() },
    )
    .await;
    assert_eq!(run["params"], json!({"WHO": "operators"}));
    assert!(
        run["requestedBy"].as_str().unwrap().contains("admin"),
        "{run}"
    );
    let id = run["run_id"].as_str().unwrap();
    assert_eq!(ok(cli(base, &["logs", id])), "hello operators\nline2\n");
    // --follow on an ended run gives its output from the record, then ends.
    assert_eq!(
        ok(cli(base, &["logs", id, "--follow"])),
        "hello operators\nline2\n"
    );
    let runs = ok(cli(base, &["runs", "hello", "--status", "succeeded"]));
    assert!(runs.lines().nth(1).unwrap().starts_with(id), "{runs}");

    // Live: a run that prints, waits, prints.
    save(
        &s.base,
        json!({"name": "slow", "command": "echo first; sleep 2; echo second", "cronExpr": "@yearly"}),
    );
    ok(cli(base, &["job", "run", "slow"]));
    let started = eventually("the slow run to start", Duration::from_secs(30), || async {
        let runs = runs_of(&s.base, "slow");
        runs.first()
            .map(|r| r["run_id"].as_str().unwrap().to_string())
    })
    .await;
    assert_eq!(
        ok(cli(base, &["logs", &started, "--follow"])),
        "first\nsecond\n"
    );

    assert!(ok(cli(base, &["job", "pause", "hello"])).contains("paused"));
    assert!(ok(cli(base, &["job", "get", "hello"])).contains("state:    paused"));
    ok(cli(base, &["job", "resume", "hello"]));
    ok(cli(base, &["job", "kill", "hello"]));
    let workers = ok(cli(base, &["workers"]));
    assert!(workers.starts_with("WORKER"), "{workers}");
    assert_eq!(workers.lines().count(), 2, "{workers}");

    // Export, then a dry run and an import into an empty standalone.
    let exported = ok(cli(base, &["export"]));
    let path = s.dir.path().join("jobs.json");
    std::fs::write(&path, &exported).unwrap();
    let path = path.display().to_string();
    let other = Standalone::start(&[]).await;
    let plan = ok(cli(&other.base, &["import", &path, "--dry-run"]));
    assert_eq!(plan.lines().next().unwrap(), "would create: hello, slow");
    assert_eq!(
        json_of(cli(&other.base, &["job", "list", "--json"])),
        json!([])
    );
    assert!(ok(cli(&other.base, &["import", &path])).starts_with("created: hello, slow"));
    let mut again: Value = serde_json::from_str(&ok(cli(&other.base, &["export"]))).unwrap();
    let mut first: Value = serde_json::from_str(&exported).unwrap();
    for doc in [&mut again, &mut first] {
        doc.as_object_mut().unwrap().remove("exportedAt");
    }
    assert_eq!(again, first, "the same jobs");
    // An invalid document changes nothing and names the job and field.
    std::fs::write(
        s.dir.path().join("bad.json"),
        json!({"version": 1, "jobs": [{"name": "hello", "command": "x", "cronExpr": "@nope"}]})
            .to_string(),
    )
    .unwrap();
    let bad = cli(
        &other.base,
        &[
            "import",
            &s.dir.path().join("bad.json").display().to_string(),
        ],
    );
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("jobs[0] (hello): cronExpr:"));

    // Exit codes: not found 3, credentials 4, unreachable 5, usage 2.
    let code = |out: Output| out.status.code();
    assert_eq!(code(cli(base, &["job", "get", "nope"])), Some(3));
    assert_eq!(code(cli(base, &["logs", "no-such-run"])), Some(3));
    assert_eq!(code(cli_as(base, None, &["job", "list"], None)), Some(4));
    assert_eq!(
        code(cli_as(base, Some("wrong"), &["job", "list"], None)),
        Some(4)
    );
    let down = format!("http://127.0.0.1:{}", support::free_port());
    assert_eq!(code(cli(&down, &["job", "list"])), Some(5));
    assert_eq!(
        code(cli(base, &["job", "run", "hello", "--env", "oops"])),
        Some(2)
    );
    assert_eq!(code(cli(base, &["job", "frobnicate"])), Some(2));
    assert_eq!(code(cli(base, &["job", "--help"])), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_hanging_runs_under_a_cap_of_ten_start_ten_and_skip_the_rest_with_a_reason() {
    let s = Standalone::start(&["--max-concurrent-runs", "10"]).await;
    let ledger_path = s.dir.path().join("ledger");
    let command = format!(
        "echo $DISTCRON_RUN_ID >> {}; exec sleep 600",
        ledger_path.display()
    );
    let jobs: Vec<Value> = (0..50)
        .map(|i| json!({"name": format!("hang{i:02}"), "command": command, "cronExpr": "@yearly", "queueTimeout": 3}))
        .collect();
    std::fs::write(
        s.dir.path().join("jobs.json"),
        json!({"version": 1, "jobs": jobs}).to_string(),
    )
    .unwrap();
    ok(cli(
        &s.base,
        &[
            "import",
            &s.dir.path().join("jobs.json").display().to_string(),
        ],
    ));
    for i in 0..50 {
        ok(cli(&s.base, &["job", "run", &format!("hang{i:02}")]));
    }
    // 40 starts wait, then are skipped naming the cap.
    let skipped = eventually("40 skipped runs", Duration::from_secs(60), || async {
        let skipped: Vec<Value> = (0..50)
            .flat_map(|i| runs_of(&s.base, &format!("hang{i:02}")))
            .filter(|r| r["status"] == "skipped")
            .collect();
        (skipped.len() >= 40).then_some(skipped)
    })
    .await;
    assert_eq!(skipped.len(), 40);
    assert!(
        skipped.iter().all(|r| r["err"]
            .as_str()
            .unwrap()
            .contains("10 runs were already in progress on this worker (maxConcurrentRuns)")),
        "{:?}",
        skipped[0]
    );
    let lines = ledger(&ledger_path);
    assert_eq!(lines.len(), 10, "10 processes started, no more: {lines:?}");
    // The worker's registration shows them at its next refresh.
    let refreshes = distcron::actors::registrar::REFRESH * 3;
    eventually("the worker showing 10 runs", refreshes, || async {
        let workers = json_of(cli(&s.base, &["workers", "--json"]));
        (workers[0]["running"] == 10).then_some(())
    })
    .await;
}

/// The case on a cluster: the parent runs on worker A (group a),
/// its child belongs to worker B (group b). A is killed (SIGKILL) as soon
/// as the parent's record is in the run log; the child still runs, once,
/// and A's restart (its journal replayed) starts nothing again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_survives_the_parents_worker_dying_after_the_parent_ended() {
    use support::{service_endpoint, start_managers, start_worker, unique};
    let data_dir = tempfile::tempdir().unwrap();
    let common = vec![
        (
            "DISTCRON_ETCD_ENDPOINTS",
            service_endpoint("ETCD_ENDPOINTS"),
        ),
        ("DISTCRON_ETCD_PREFIX", format!("/{}/", unique("chains"))),
        ("DISTCRON_MONGODB_URI", service_endpoint("MONGODB_URI")),
        (
            "DISTCRON_MONGODB_DATABASE",
            unique("chains").replace('-', "_"),
        ),
        ("DISTCRON_DATA_DIR", data_dir.path().display().to_string()),
        ("DISTCRON_LOG_LEVEL", "warn".to_string()),
        ("DISTCRON_BATCH_DELAY_MS", "100".to_string()),
    ];
    let in_group = |group: &str| {
        let mut env = common.clone();
        env.push(("DISTCRON_GROUP", group.to_string()));
        env
    };
    let (_managers, bases) = start_managers(1, &common);
    let base = bases[0].clone();
    support::wait_http_ok(&format!("{base}/readyz")).await;
    let mut worker_a = Some(start_worker("chain-a", &in_group("a")));
    let _worker_b = start_worker("chain-b", &in_group("b"));
    eventually(
        "both workers registered",
        Duration::from_secs(30),
        || async {
            let workers = json_of(cli(&base, &["workers", "--json"]));
            (workers.as_array().map_or(0, Vec::len) == 2).then_some(())
        },
    )
    .await;
    let ledger_path = data_dir.path().join("ledger");
    let writes =
        |label: &str| format!("echo {label} $DISTCRON_RUN_ID >> {}", ledger_path.display());
    save(
        &base,
        json!({"name": "child", "group": "b", "command": writes("child"), "cronExpr": "@yearly"}),
    );
    save(
        &base,
        json!({"name": "parent", "group": "a", "command": writes("parent"), "cronExpr": "@yearly",
                   "onSuccess": ["child"]}),
    );
    save(
        &base,
        json!({"name": "canary", "group": "a", "command": "true", "cronExpr": "* * * * * *"}),
    );
    let runs = |job: &str| final_runs(&base, job);
    // Wait for the canary, so worker A owns group a's jobs.
    eventually("worker A at work", Duration::from_secs(30), || async {
        (!runs("canary").is_empty()).then_some(())
    })
    .await;
    ok(cli(&base, &["job", "run", "parent"]));
    let parent = eventually("the parent's record", Duration::from_secs(30), || async {
        runs("parent").into_iter().next()
    })
    .await;
    drop(worker_a.take()); // SIGKILL, right after the parent ended
    let child = eventually("the child on worker B", Duration::from_secs(30), || async {
        runs("child").into_iter().next()
    })
    .await;
    assert_eq!(child["triggeredBy"], parent["run_id"]);
    assert_eq!(child["worker"], "chain-b");
    // A comes back on the same data (its journal replayed) and works again.
    let canaries = runs("canary").len();
    let _worker_a = start_worker("chain-a", &in_group("a"));
    eventually("worker A back at work", Duration::from_secs(60), || async {
        (runs("canary").len() >= canaries + 2).then_some(())
    })
    .await;
    let lines = ledger(&ledger_path);
    let count = |label: &str| executions(&lines, label);
    assert_eq!(
        (count("parent"), count("child")),
        (1, 1),
        "by the ledger: {lines:?}"
    );
    assert_eq!(
        (runs("parent").len(), runs("child").len()),
        (1, 1),
        "by the records"
    );
}
