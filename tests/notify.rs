//! Notifications and live output across processes: two managers and a
//! worker on the shared etcd and MongoDB-wire server, a real SMTP server
//! (aiosmtpd, started here) and a web hook receiver (in this test).
//!
//! - A failing run: exactly one email (job name, exit code) and exactly one
//!   accepted web hook delivery, signed, after the receiver's first answer
//!   was a 500; the run's notices show both outcomes.
//! - A job that fails then succeeds: `failed`, then `recovered`.
//! - A job whose group has no worker: one `missed` alert per missed tick,
//!   with two managers sweeping.
//! - A throttle: per window, at most `max` notifications, then one summary
//!   saying how many were held back.
//! - Live output through the manager that did not start the run: the first
//!   line arrives while the run still sleeps, then the end.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{
    Process, curl, eventually, free_port, post_name, save_job, service_endpoint, start_managers,
    start_worker, unique,
};

/// One request the web hook receiver took.
#[derive(Clone, Debug)]
struct Hit {
    headers: HashMap<String, String>,
    raw: Vec<u8>,
    body: Value,
    status: u16,
}

/// A web hook receiver on 127.0.0.1: records every request; answers 500
/// the first time it sees a delivery of a `failed` event of `fail_first`,
/// 200 otherwise.
struct Receiver {
    url: String,
    hits: Arc<Mutex<Vec<Hit>>>,
}

fn receiver(fail_first: &'static str) -> Receiver {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let hits: Arc<Mutex<Vec<Hit>>> = Arc::default();
    let seen = hits.clone();
    // The thread ends with the test process (its listener has no stop).
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream);
            let mut headers = HashMap::new();
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            loop {
                line.clear();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
                    break;
                }
                if let Some((k, v)) = line.trim_end().split_once(':') {
                    headers.insert(k.trim().to_lowercase(), v.trim().to_string());
                }
            }
            let length: usize = headers
                .get("content-length")
                .and_then(|l| l.parse().ok())
                .unwrap_or(0);
            let mut raw = vec![0; length];
            if reader.read_exact(&mut raw).is_err() {
                continue;
            }
            let body: Value = serde_json::from_slice(&raw).unwrap_or(Value::Null);
            let mut hits = seen.lock().unwrap();
            let delivery = headers.get("x-distcron-delivery").cloned();
            let first = !hits
                .iter()
                .any(|h| h.headers.get("x-distcron-delivery") == delivery.as_ref());
            let status = if first && body["job"] == fail_first && body["event"] == "failed" {
                500
            } else {
                200
            };
            hits.push(Hit {
                headers,
                raw,
                body,
                status,
            });
            drop(hits);
            let mut stream = reader.into_inner();
            let _ = write!(
                stream,
                "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
        }
    });
    Receiver { url, hits }
}

impl Receiver {
    fn hits(&self) -> Vec<Hit> {
        self.hits.lock().unwrap().clone()
    }

    /// Accepted deliveries (answered 200) of `event` for `job`.
    fn accepted(&self, job: &str, event: &str) -> Vec<Hit> {
        self.hits()
            .into_iter()
            .filter(|h| h.status == 200 && h.body["job"] == job && h.body["event"] == event)
            .collect()
    }
}

/// aiosmtpd on a free loopback port, storing each message in a maildir.
struct SmtpSink {
    port: u16,
    maildir: tempfile::TempDir,
    _process: Process,
}

async fn smtp_sink() -> SmtpSink {
    let python = std::env::var("AIOSMTPD_PYTHON").unwrap_or_else(|_| {
        panic!("AIOSMTPD_PYTHON is not set: run this test through scripts/test.sh, which installs aiosmtpd and sets it")
    });
    let port = free_port();
    let maildir = tempfile::tempdir().unwrap();
    let child = Command::new(&python)
        .args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}")])
        .args(["-c", "aiosmtpd.handlers.Mailbox"])
        .arg(maildir.path().join("mail"))
        .stdin(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("start {python} -m aiosmtpd: {e}"));
    let process = Process(child);
    eventually(
        "the SMTP sink to listen",
        Duration::from_secs(20),
        || async move {
            std::net::TcpStream::connect(("127.0.0.1", port))
                .ok()
                .map(drop)
        },
    )
    .await;
    SmtpSink {
        port,
        maildir,
        _process: process,
    }
}

impl SmtpSink {
    fn messages(&self) -> Vec<String> {
        let mut found = Vec::new();
        for sub in ["new", "cur"] {
            let dir = self.maildir.path().join("mail").join(sub);
            for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                found.push(std::fs::read_to_string(entry.path()).unwrap_or_default());
            }
        }
        found
    }
}

fn get(url: &str) -> Option<Value> {
    curl(&["-sf", url]).map(|v| v["data"].clone())
}

/// The job's records, newest first.
fn runs_of(base: &str, job: &str) -> Vec<Value> {
    get(&format!("{base}/job/log?name={job}&limit=500"))
        .and_then(|d| d.as_array().cloned())
        .unwrap_or_default()
}

fn notices_of(base: &str, run_id: &str) -> Vec<Value> {
    get(&format!("{base}/run/notices?id={run_id}"))
        .and_then(|d| d.as_array().cloned())
        .unwrap_or_default()
}

fn hmac_hex(secret: &[u8], body: &[u8]) -> String {
    use hmac::{KeyInit, Mac};
    let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(secret).unwrap();
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_reach_email_and_web_hooks_once_and_live_output_streams_through_any_manager()
{
    let hook = receiver("notify-fail");
    let smtp = smtp_sink().await;
    let data_dir = tempfile::tempdir().unwrap();
    let secret_file = data_dir.path().join("hook.secret");
    std::fs::write(&secret_file, "s3cret-for-the-test\n").unwrap();
    let notify = json!({
        "targets": {
            "hook": {"type": "webhook", "url": hook.url, "secretFile": secret_file},
            "mail": {"type": "email", "host": "127.0.0.1", "port": smtp.port, "security": "none",
                     "from": "distcron@example.com", "to": ["ops@example.com"]},
        },
        "consoleUrl": "http://console.example.com/",
    });
    let (etcd, mongo) = (
        service_endpoint("ETCD_ENDPOINTS"),
        service_endpoint("MONGODB_URI"),
    );
    let common = vec![
        ("DISTCRON_ETCD_ENDPOINTS", etcd),
        ("DISTCRON_ETCD_PREFIX", format!("/{}/", unique("notify"))),
        ("DISTCRON_MONGODB_URI", mongo),
        (
            "DISTCRON_MONGODB_DATABASE",
            unique("notify").replace('-', "_"),
        ),
        ("DISTCRON_DATA_DIR", data_dir.path().display().to_string()),
        ("DISTCRON_LOG_LEVEL", "warn".to_string()),
        ("DISTCRON_BATCH_DELAY_MS", "200".to_string()),
        ("DISTCRON_NOTIFY", notify.to_string()),
    ];
    let (mut processes, managers) = start_managers(2, &common);
    processes.push(start_worker("notify-w1", &common));
    for base in &managers {
        support::wait_http_ok(&format!("{base}/readyz")).await;
    }
    let (a, b) = (managers[0].clone(), managers[1].clone());
    eventually("the worker registered", Duration::from_secs(30), || {
        let b = b.clone();
        async move { (get(&format!("{b}/worker/info"))?.as_array()?.len() == 1).then_some(()) }
    })
    .await;

    // A job naming a target nobody defined is refused, naming the field.
    let refused = curl(&[
        "-s",
        "-X",
        "POST",
        &format!("{a}/job/save"),
        "--data-urlencode",
        r#"job={"name":"notify-bad","command":"true","cronExpr":"0 0 1 1 *","notify":[{"target":"pager","on":["failed"]}]}"#,
    ])
    .unwrap();
    assert!(
        refused["msg"]
            .as_str()
            .unwrap()
            .starts_with("notify: no target named 'pager'"),
        "{refused}"
    );

    // The target list and a test notification through the API.
    let targets = get(&format!("{a}/notify/targets")).unwrap();
    assert_eq!(targets.as_array().unwrap().len(), 2, "{targets}");
    let test = curl(&[
        "-sf",
        "-X",
        "POST",
        &format!("{b}/notify/test"),
        "-H",
        "Content-Type: application/json",
        "-d",
        r#"{"target":"hook"}"#,
    ])
    .unwrap();
    assert_eq!(test["data"]["outcome"], "delivered", "{test}");
    assert_eq!(
        hook.hits()
            .iter()
            .filter(|h| h.body["event"] == "test")
            .count(),
        1
    );

    let jobs = [
        r#"{"name":"notify-fail","command":"echo going wrong; exit 3","cronExpr":"0 0 1 1 *","notify":[{"target":"hook","on":["failed"]},{"target":"mail","on":["failed"]}]}"#.to_string(),
        format!(
            r#"{{"name":"notify-flip","command":"if [ -e {flag} ]; then echo fine; else touch {flag}; exit 1; fi","cronExpr":"0 0 1 1 *","notify":[{{"target":"hook","on":["failed","recovered"]}}]}}"#,
            flag = data_dir.path().join("flip.flag").display()
        ),
        r#"{"name":"notify-orphan","command":"true","cronExpr":"* * * * * *","group":"nobody","misfireWindowSecs":1,"notify":[{"target":"hook","on":["missed"]}]}"#.to_string(),
        r#"{"name":"notify-throttle","command":"exit 1","cronExpr":"* * * * * *","notifyThrottle":{"max":3,"windowSecs":15},"notify":[{"target":"hook","on":["failed"]}]}"#.to_string(),
        r#"{"name":"notify-live","command":"echo first line; sleep 3; echo second line","cronExpr":"0 0 1 1 *"}"#.to_string(),
    ];
    for job in &jobs {
        assert!(save_job(&a, job).is_some(), "save {job}");
    }

    // Live output through the manager that did not start the run.
    assert!(post_name(&a, "/job/run", "notify-live").is_some());
    let live_id = eventually("the live run to start", Duration::from_secs(20), || {
        let a = a.clone();
        async move {
            let runs = runs_of(&a, "notify-live");
            runs.first()?["run_id"].as_str().map(String::from)
        }
    })
    .await;
    let mut tail = Command::new("curl")
        .args(["-sN", "--max-time", "30"])
        .args([
            "-H",
            &format!("Authorization: Bearer {}", support::ADMIN_TOKEN),
        ])
        .arg(format!("{b}/run/tail?id={live_id}"))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let lines = tokio::task::spawn_blocking({
        let stdout = tail.stdout.take().unwrap();
        move || {
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .map(|line| (started.elapsed(), line))
                .collect::<Vec<_>>()
        }
    })
    .await
    .unwrap();
    let _ = tail.wait();
    let at = |text: &str| {
        lines
            .iter()
            .find(|(_, l)| l.contains(text))
            .map(|(t, _)| *t)
            .unwrap_or_else(|| panic!("no {text:?} in the stream: {lines:?}"))
    };
    let (first, second, end) = (at("first line"), at("second line"), at("event: end"));
    assert!(
        second >= first + Duration::from_secs(2),
        "the first line came while the run slept (first {first:?}, second {second:?})"
    );
    assert!(end >= second, "{lines:?}");
    assert!(
        lines
            .iter()
            .any(|(_, l)| l.contains(r#""status":"succeeded""#)),
        "{lines:?}"
    );
    // Once ended, a tail streams the stored record, through either manager;
    // a run nobody knows is 404.
    let ended = eventually(
        "the live run's final record",
        Duration::from_secs(20),
        || {
            let (a, id) = (a.clone(), live_id.clone());
            async move {
                let stored = Command::new("curl")
                    .args(["-sf", "--max-time", "10", "-H"])
                    .arg(format!("Authorization: Bearer {}", support::ADMIN_TOKEN))
                    .arg(format!("{a}/run/tail?id={id}"))
                    .output()
                    .ok()?;
                let text = String::from_utf8_lossy(&stored.stdout).to_string();
                text.contains("event: end").then_some(text)
            }
        },
    )
    .await;
    assert!(
        ended.contains("first line") && ended.contains("second line"),
        "{ended}"
    );
    let unknown = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-H"])
        .arg(format!("Authorization: Bearer {}", support::ADMIN_TOKEN))
        .arg(format!("{b}/run/tail?id=nobody-knows-this-run"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&unknown.stdout), "404");

    // The failing run and the job that recovers.
    assert!(post_name(&a, "/job/run", "notify-fail").is_some());
    assert!(post_name(&b, "/job/run", "notify-flip").is_some());
    eventually(
        "the flip job's first run to fail",
        Duration::from_secs(30),
        || {
            let a = a.clone();
            async move {
                runs_of(&a, "notify-flip")
                    .iter()
                    .any(|r| r["status"] == "failed")
                    .then_some(())
            }
        },
    )
    .await;
    assert!(post_name(&b, "/job/run", "notify-flip").is_some());

    // Let the orphan miss ticks and the throttled job fail 20 times.
    eventually(
        "20 failures of the throttled job",
        Duration::from_secs(60),
        || {
            let a = a.clone();
            async move {
                (runs_of(&a, "notify-throttle")
                    .iter()
                    .filter(|r| r["status"] == "failed")
                    .count()
                    >= 20)
                    .then_some(())
            }
        },
    )
    .await;
    assert!(post_name(&a, "/job/pause", "notify-throttle").is_some());
    eventually(
        "4 missed ticks of the orphan job",
        Duration::from_secs(60),
        || {
            let a = a.clone();
            async move {
                (runs_of(&a, "notify-orphan")
                    .iter()
                    .filter(|r| r["status"] == "missed")
                    .count()
                    >= 4)
                    .then_some(())
            }
        },
    )
    .await;
    assert!(post_name(&a, "/job/pause", "notify-orphan").is_some());

    // The failing run: one email, one accepted web hook after a 500.
    let fail_run = eventually("the failing run's record", Duration::from_secs(30), || {
        let a = a.clone();
        async move {
            let runs = runs_of(&a, "notify-fail");
            let run = runs.iter().find(|r| r["status"] == "failed")?;
            Some(run["run_id"].as_str()?.to_string())
        }
    })
    .await;
    eventually(
        "one email for the failing run",
        Duration::from_secs(30),
        || {
            let n = smtp.messages().len();
            async move { (n >= 1).then_some(()) }
        },
    )
    .await;
    eventually(
        "the web hook's retry to be accepted",
        Duration::from_secs(30),
        || {
            let n = hook.accepted("notify-fail", "failed").len();
            async move { (n >= 1).then_some(()) }
        },
    )
    .await;
    let mails = smtp.messages();
    assert_eq!(mails.len(), 1, "exactly one email: {mails:?}");
    assert!(mails[0].contains("notify-fail"), "{}", mails[0]);
    assert!(mails[0].contains("exit code 3"), "{}", mails[0]);
    assert!(
        mails[0].contains("going wrong"),
        "the output's end: {}",
        mails[0]
    );
    let fail_hits: Vec<Hit> = hook
        .hits()
        .into_iter()
        .filter(|h| h.body["job"] == "notify-fail")
        .collect();
    assert_eq!(
        fail_hits.iter().map(|h| h.status).collect::<Vec<_>>(),
        [500, 200],
        "one refused attempt, then one accepted: {fail_hits:?}"
    );
    let delivered = &fail_hits[1];
    assert_eq!(
        delivered.headers.get("x-distcron-delivery"),
        fail_hits[0].headers.get("x-distcron-delivery"),
        "a retry names the same delivery"
    );
    let signature = delivered
        .headers
        .get("x-distcron-signature")
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        signature,
        format!(
            "sha256={}",
            hmac_hex(b"s3cret-for-the-test", &delivered.raw)
        ),
        "the body is signed with the target's secret"
    );
    let body = &delivered.body;
    assert_eq!(body["runId"], fail_run.as_str());
    assert_eq!(body["status"], "failed");
    assert_eq!(body["exitCode"], 3);
    assert_eq!(body["worker"], "notify-w1");
    assert!(
        body["output"].as_str().unwrap().contains("going wrong"),
        "{body}"
    );
    assert!(body["durationMs"].as_i64().is_some(), "{body}");
    assert_eq!(
        body["url"],
        format!("http://console.example.com/#/run/{fail_run}").as_str()
    );
    assert!(
        body["text"]
            .as_str()
            .unwrap()
            .contains("notify-fail failed (exit code 3)"),
        "{body}"
    );
    let notices = notices_of(&b, &fail_run);
    assert_eq!(notices.len(), 1, "{notices:?}");
    let outcomes: BTreeMap<String, (String, u64)> = notices[0]["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["target"].as_str().unwrap().to_string(),
                (
                    d["outcome"].as_str().unwrap().to_string(),
                    d["attempts"].as_u64().unwrap(),
                ),
            )
        })
        .collect();
    assert_eq!(
        outcomes["hook"],
        ("delivered".to_string(), 2),
        "{notices:?}"
    );
    assert_eq!(
        outcomes["mail"],
        ("delivered".to_string(), 1),
        "{notices:?}"
    );

    // Failed, then recovered.
    eventually("the flip job's recovery", Duration::from_secs(30), || {
        let n = hook.accepted("notify-flip", "recovered").len();
        async move { (n >= 1).then_some(()) }
    })
    .await;
    assert_eq!(hook.accepted("notify-flip", "failed").len(), 1);
    assert_eq!(hook.accepted("notify-flip", "recovered").len(), 1);

    // One `missed` alert per missed tick, though two managers sweep.
    let missed_runs = || -> Vec<String> {
        runs_of(&a, "notify-orphan")
            .iter()
            .filter(|r| r["status"] == "missed")
            .filter_map(|r| r["run_id"].as_str().map(String::from))
            .collect()
    };
    eventually(
        "an alert for every missed tick",
        Duration::from_secs(60),
        || {
            let (runs, alerts) = (
                missed_runs().len(),
                hook.accepted("notify-orphan", "missed").len(),
            );
            async move { (runs >= 4 && alerts == runs).then_some(()) }
        },
    )
    .await;
    // Sweeps still in flight when the job was paused may add a tick or two:
    // wait for two sweeps to have passed with nothing new.
    let sweep = distcron::missed::SWEEP_EVERY;
    let mut settled = (missed_runs().len(), Instant::now());
    eventually("the missed ticks to settle", sweep * 6, || {
        let now = missed_runs().len();
        if now != settled.0 {
            settled = (now, Instant::now());
        }
        let quiet = settled.1.elapsed() >= sweep * 2 + Duration::from_secs(2);
        let alerts = hook.accepted("notify-orphan", "missed").len();
        async move { (quiet && alerts == now).then_some(()) }
    })
    .await;
    let runs = missed_runs();
    let alerts = hook.accepted("notify-orphan", "missed");
    let mut alerted: Vec<String> = alerts
        .iter()
        .map(|h| h.body["runId"].as_str().unwrap().to_string())
        .collect();
    alerted.sort();
    let mut expected = runs.clone();
    expected.sort();
    assert_eq!(alerted, expected, "exactly one alert per missed tick");
    for run in &runs {
        let notices = notices_of(&a, run);
        assert_eq!(notices.len(), 1, "{notices:?}");
        assert!(
            notices[0]["sender"]
                .as_str()
                .unwrap()
                .starts_with("manager@"),
            "a manager's sweep raised it: {notices:?}"
        );
    }

    // The throttle: per window of 15 s, 3 notifications, then one summary.
    let failed: Vec<String> = runs_of(&a, "notify-throttle")
        .iter()
        .filter(|r| r["status"] == "failed")
        .filter_map(|r| r["run_id"].as_str().map(String::from))
        .collect();
    let mut per_window: BTreeMap<i64, u64> = BTreeMap::new();
    for run in &failed {
        let notices = eventually(
            "the throttled run's notice",
            Duration::from_secs(30),
            || {
                let (b, run) = (b.clone(), run.clone());
                async move {
                    let n = notices_of(&b, &run);
                    let settled = n
                        .first()
                        .is_some_and(|n| n["deliveries"][0]["outcome"] != "pending");
                    settled.then_some(n)
                }
            },
        )
        .await;
        let at = notices[0]["at"].as_i64().unwrap();
        *per_window
            .entry(at.div_euclid(15_000) * 15_000)
            .or_default() += 1;
    }
    let last_window_end = per_window.keys().last().unwrap() + 15_000;
    let summaries_due: Vec<(i64, u64)> = per_window
        .iter()
        .filter(|(_, n)| **n > 3)
        .map(|(w, n)| (*w, n - 3))
        .collect();
    eventually("every window's summary", Duration::from_secs(60), || {
        let n = hook.accepted("notify-throttle", "throttled").len();
        let due = summaries_due.len();
        let past = support::fleet::now_ms() > last_window_end + 3_000;
        async move { (past && n >= due).then_some(()) }
    })
    .await;
    let sent_failed = hook.accepted("notify-throttle", "failed").len() as u64;
    let expected_sent: u64 = per_window.values().map(|n| (*n).min(3)).sum();
    assert_eq!(sent_failed, expected_sent, "per window {per_window:?}");
    let mut summaries: Vec<(String, u64)> = hook
        .accepted("notify-throttle", "throttled")
        .iter()
        .map(|h| {
            (
                h.body["startTime"].as_str().unwrap().to_string(),
                h.body["heldBack"].as_u64().unwrap(),
            )
        })
        .collect();
    summaries.sort();
    let mut expected: Vec<(String, u64)> = summaries_due
        .iter()
        .map(|(w, n)| {
            let start = chrono::DateTime::from_timestamp_millis(*w)
                .unwrap()
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
            (start, *n)
        })
        .collect();
    expected.sort();
    assert_eq!(
        summaries, expected,
        "one summary per window, with the count held back"
    );

    // The outcomes are counted in /metrics, from the worker's registration
    // at its next refresh.
    let refreshes = distcron::actors::registrar::REFRESH * 3;
    eventually("the throttled outcome in /metrics", refreshes, || {
        let metrics = Command::new("curl")
            .args([
                "-sf",
                "-H",
                &format!("Authorization: Bearer {}", support::ADMIN_TOKEN),
            ])
            .arg(format!("{a}/metrics"))
            .output()
            .unwrap();
        let metrics = String::from_utf8_lossy(&metrics.stdout).into_owned();
        let counted = metrics
            .contains(r#"distcron_notifications_total{sender="notify-w1",outcome="throttled"}"#);
        async move { counted.then_some(()) }
    })
    .await;
    drop(processes);
}
