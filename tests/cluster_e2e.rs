//! Two managers and two workers as processes on a real etcd and the
//! MongoDB-wire server: a job saved through one manager runs and shows in
//! the other's `/job/log`; a kill sent to either reaches the worker.

mod support;

use std::time::Duration;

use support::{
    curl, eventually, post_name, save_job, service_endpoint, start_managers, start_worker, unique,
    wait_http_ok,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_managers_and_two_workers_share_jobs_runs_and_kills() {
    let (etcd, mongo) = (
        service_endpoint("ETCD_ENDPOINTS"),
        service_endpoint("MONGODB_URI"),
    );
    let data_dir = tempfile::tempdir().unwrap();
    let common = vec![
        ("DISTCRON_ETCD_ENDPOINTS", etcd),
        ("DISTCRON_ETCD_PREFIX", format!("/{}/", unique("e2e"))),
        ("DISTCRON_MONGODB_URI", mongo),
        ("DISTCRON_MONGODB_DATABASE", unique("e2e").replace('-', "_")),
        ("DISTCRON_DATA_DIR", data_dir.path().display().to_string()),
        ("DISTCRON_LOG_LEVEL", "warn".to_string()),
        ("DISTCRON_KILL_GRACE_MS", "500".to_string()),
        ("DISTCRON_BATCH_DELAY_MS", "200".to_string()),
    ];
    let (mut processes, managers) = start_managers(2, &common);
    for id in ["e2e-w1", "e2e-w2"] {
        processes.push(start_worker(id, &common));
    }
    for base in &managers {
        wait_http_ok(&format!("{base}/readyz")).await;
    }
    let (a, b) = (&managers[0], &managers[1]);
    let workers = format!("{b}/worker/info");
    eventually("both workers registered", Duration::from_secs(30), || {
        let workers = workers.clone();
        async move { (curl(&["-sf", &workers])?["data"].as_array()?.len() == 2).then_some(()) }
    })
    .await;

    // Saved through A, seen and logged through B.
    let job = r#"{"name":"greet","command":"echo hi","cronExpr":"* * * * * *"}"#;
    let saved = save_job(a, job);
    assert_eq!(saved.expect("save answered")["errno"], 0);
    // B learns of it through its watch on jobs/, which may lag a little.
    let list_b = format!("{b}/job/list");
    eventually("the job in B's /job/list", Duration::from_secs(10), || {
        let list_b = list_b.clone();
        async move { (curl(&["-sf", &list_b])?["data"][0]["name"] == "greet").then_some(()) }
    })
    .await;
    let log = format!("{b}/job/log?name=greet");
    let first = eventually("a run in B's /job/log", Duration::from_secs(30), || {
        let log = log.clone();
        async move { curl(&["-sf", &log])?["data"].as_array()?.first().cloned() }
    })
    .await;
    assert_eq!(
        (first["status"].as_str(), first["output"].as_str()),
        (Some("succeeded"), Some("hi\n"))
    );

    // A long run started through A, killed through B.
    let job = r#"{"name":"long","command":"sleep 300","cronExpr":"* * * * * *"}"#;
    save_job(a, job).expect("save");
    let running = format!("{a}/job/running");
    eventually(
        "the long run in /job/running",
        Duration::from_secs(30),
        || {
            let running = running.clone();
            async move {
                let data = curl(&["-sf", &running])?;
                data["data"]
                    .as_array()?
                    .iter()
                    .any(|r| r["jobName"] == "long")
                    .then_some(())
            }
        },
    )
    .await;
    post_name(b, "/job/pause", "long").expect("pause");
    assert_eq!(post_name(b, "/job/kill", "long").expect("kill")["errno"], 0);
    let killed = format!("{a}/job/log?name=long&status=killed");
    let run = eventually(
        "the killed run in /job/log",
        Duration::from_secs(30),
        || {
            let killed = killed.clone();
            async move {
                curl(&["-sf", &killed])?["data"]
                    .as_array()?
                    .first()
                    .cloned()
            }
        },
    )
    .await;
    assert_eq!(run["err"], "killed by request");
}
