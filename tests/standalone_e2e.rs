//! `distcron standalone` as a user runs it: a job saved over HTTP runs, and
//! its run (with output) appears in `/job/log`; a kill over HTTP ends a
//! long run. The HTTP client is curl, as an operator's would be.

mod support;

use std::time::Duration;

use support::{Standalone, curl, eventually, post_name, save_job};

async fn start() -> Standalone {
    Standalone::start(&[]).await
}

async fn start_in(dir: std::sync::Arc<tempfile::TempDir>, listen: String) -> Standalone {
    Standalone::start_in(dir, listen, &[]).await
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Stop a standalone with `signal` and wait for it to end.
fn stop_with(s: &mut Standalone, signal: nix::sys::signal::Signal) {
    let pid = nix::unistd::Pid::from_raw(s.child.id() as i32);
    nix::sys::signal::kill(pid, signal).expect("signal standalone");
    let _ = s.child.wait();
}

/// A standalone stopped (SIGTERM) and later killed (SIGKILL), each time
/// started again on the same data: every tick of an every-second job ran
/// once, by its own ledger. The ticks missed while it was down run late
/// (misfire `all`); none that ran before a restart runs again, because the
/// tick claims survive the restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_standalone_runs_every_tick_once_late_or_on_time() {
    let mut s = start().await;
    let ledger = s.dir.path().join("ledger");
    let job = serde_json::json!({
        "name": "steady",
        "command": format!("echo $DISTCRON_TICK >> {}", ledger.display()),
        "cronExpr": "* * * * * *",
        "overlap": "allow",
    });
    assert_eq!(
        save_job(&s.base, &job.to_string()).expect("saved")["errno"],
        0
    );
    let first_tick = (now_ms() / 1000 + 2) * 1000;
    let mut killed_at = 0;
    for signal in [
        nix::sys::signal::Signal::SIGTERM,
        nix::sys::signal::Signal::SIGKILL,
    ] {
        tokio::time::sleep(Duration::from_millis(4_500)).await;
        killed_at = now_ms();
        stop_with(&mut s, signal);
        tokio::time::sleep(Duration::from_secs(3)).await;
        let (dir, listen) = (s.dir.clone(), s.listen.clone());
        drop(s);
        s = start_in(dir, listen).await;
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    let last_tick = now_ms() / 1000 * 1000 - 2_000;
    stop_with(&mut s, nix::sys::signal::Signal::SIGTERM);

    let mut count = std::collections::BTreeMap::<i64, usize>::new();
    for line in std::fs::read_to_string(&ledger).unwrap().lines() {
        *count.entry(line.trim().parse().unwrap()).or_default() += 1;
    }
    let (mut missing, mut twice) = (Vec::new(), Vec::new());
    for tick in (first_tick..=last_tick).step_by(1000) {
        match count.get(&tick).copied().unwrap_or(0) {
            1 => {}
            0 => missing.push(tick),
            n => twice.push((tick, n)),
        }
    }
    assert!(twice.is_empty(), "ticks run twice: {twice:?}");
    // A SIGKILL in the instant between a tick's confirmation and its start
    // leaves that one tick unrun (issue J records it as lost).
    let at_the_kill = |t: &i64| (t - killed_at).abs() <= 1_000;
    assert!(
        missing.len() <= 1 && missing.iter().all(at_the_kill),
        "ticks never run: {missing:?} (SIGKILL at {killed_at})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_saved_over_http_runs_and_its_run_is_logged() {
    let s = start().await;
    let job =
        r#"{"name":"hello","command":"echo hello from $DISTCRON_JOB","cronExpr":"* * * * * *"}"#;
    let saved = save_job(&s.base, job);
    assert_eq!(saved.expect("save answered")["errno"], 0);
    let log = format!("{}/job/log?name=hello&limit=5", s.base);
    let first = eventually(
        "a run of the job in /job/log",
        Duration::from_secs(20),
        || {
            let log = log.clone();
            async move {
                let body = curl(&["-sf", &log])?;
                body["data"].as_array()?.first().cloned()
            }
        },
    )
    .await;
    assert_eq!(first["status"], "succeeded");
    assert_eq!(first["output"], "hello from hello\n");
    assert_eq!(first["jobName"], "hello");
    // The worker's counters reach /metrics through its registration.
    let metrics = format!("{}/metrics", s.base);
    eventually(
        "succeeded runs in /metrics",
        Duration::from_secs(20),
        || {
            let metrics = metrics.clone();
            async move {
                let out = std::process::Command::new("curl")
                    .args([
                        "-sf",
                        "-H",
                        &format!("Authorization: Bearer {}", support::ADMIN_TOKEN),
                    ])
                    .arg(&metrics)
                    .output()
                    .ok()?;
                let text = String::from_utf8_lossy(&out.stdout).into_owned();
                text.lines()
                    .any(|l| {
                        l.starts_with("distcron_runs_total{") && l.contains("status=\"succeeded\"")
                    })
                    .then_some(())
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_over_http_ends_a_long_run() {
    let s = start().await;
    let job = r#"{"name":"long","command":"sleep 300","cronExpr":"* * * * * *"}"#;
    let saved = save_job(&s.base, job);
    assert_eq!(saved.expect("save answered")["errno"], 0);
    let running = format!("{}/job/running", s.base);
    eventually(
        "the long run to show in /job/running",
        Duration::from_secs(20),
        || {
            let running = running.clone();
            async move { (!curl(&["-sf", &running])?["data"].as_array()?.is_empty()).then_some(()) }
        },
    )
    .await;
    // Pause first so no new tick starts, then kill what runs.
    post_name(&s.base, "/job/pause", "long").expect("pause");
    let killed = post_name(&s.base, "/job/kill", "long");
    assert_eq!(killed.expect("kill answered")["errno"], 0);
    let log = format!("{}/job/log?name=long&status=killed", s.base);
    let run = eventually("a killed run in /job/log", Duration::from_secs(20), || {
        let log = log.clone();
        async move { curl(&["-sf", &log])?["data"].as_array()?.first().cloned() }
    })
    .await;
    assert_eq!(run["err"], "killed by request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_now_runs_a_job_outside_its_schedule() {
    let s = start().await;
    let job = r#"{"name":"yearly","command":"echo on demand","cronExpr":"@yearly"}"#;
    let saved = save_job(&s.base, job);
    assert_eq!(saved.expect("save answered")["errno"], 0);
    // The worker picks the job up asynchronously: ask, wait up to 3 s for
    // the run, and ask again only if it did not come (a request made before
    // the worker owned the job finds no actor to run it).
    let log = format!("{}/job/log?name=yearly", s.base);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut requests = 0;
    let runs = 'outer: loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no run after {requests} requests"
        );
        post_name(&s.base, "/job/run", "yearly").expect("run answered");
        requests += 1;
        let wait_until = tokio::time::Instant::now() + Duration::from_secs(3);
        while tokio::time::Instant::now() < wait_until {
            if let Some(runs) = curl(&["-sf", &log]).and_then(|b| b["data"].as_array().cloned())
                && !runs.is_empty()
            {
                break 'outer runs;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    assert!(
        runs.len() <= requests,
        "{} runs for {requests} requests",
        runs.len()
    );
    assert_eq!(
        (runs[0]["status"].as_str(), runs[0]["output"].as_str()),
        (Some("succeeded"), Some("on demand\n"))
    );
    assert_eq!(
        runs[0]["requestedBy"], "adminToken (config:adminToken)",
        "a run someone asked for records who asked"
    );
}
