//! Table tests of the supervisor's decisions: each case feeds listings and
//! changes and checks the actions that come out.

use super::*;

const ME: &str = "w1";

fn job(name: &str) -> Job {
    Job::new(name, "true", "* * * * * *")
}

fn kv(key: &str, value: Vec<u8>, revision: Revision) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value,
        create_revision: revision,
        mod_revision: revision,
        lease: 0,
    }
}

fn job_kv(job: &Job) -> KeyValue {
    kv(
        &keyspace::job_key(&job.name),
        serde_json::to_vec(job).unwrap(),
        1,
    )
}

fn worker_kv(id: &str) -> KeyValue {
    let value = serde_json::json!({"id": id, "group": "default"});
    kv(&keyspace::worker_key(id), value.to_string().into_bytes(), 1)
}

fn entry(job: &str, worker: &str) -> RunningEntry {
    RunningEntry {
        run_id: format!("{job}-1-{worker}"),
        job_name: job.into(),
        command: "sleep 60".into(),
        worker: worker.into(),
        plan_time: 1,
        schedule_time: 1,
        start_time: 1,
        requested_by: None,
    }
}

fn running_put(e: &RunningEntry) -> Followed {
    let key = keyspace::running_key(&e.job_name, &e.run_id);
    Followed::Changed(
        keyspace::RUNNING,
        vec![WatchEvent::Put(kv(&key, serde_json::to_vec(e).unwrap(), 2))],
    )
}

fn running_delete(e: &RunningEntry, revision: Revision) -> Followed {
    let key = keyspace::running_key(&e.job_name, &e.run_id);
    Followed::Changed(
        keyspace::RUNNING,
        vec![WatchEvent::Delete { key, revision }],
    )
}

fn worker_put(id: &str) -> Followed {
    Followed::Changed(keyspace::WORKERS, vec![WatchEvent::Put(worker_kv(id))])
}

fn worker_delete(id: &str, revision: Revision) -> Followed {
    let key = keyspace::worker_key(id);
    Followed::Changed(
        keyspace::WORKERS,
        vec![WatchEvent::Delete { key, revision }],
    )
}

fn listed(jobs: &[Job], workers: &[&str]) -> Followed {
    Followed::Listed(vec![
        (keyspace::JOBS, jobs.iter().map(job_kv).collect()),
        (
            keyspace::WORKERS,
            workers.iter().map(|w| worker_kv(w)).collect(),
        ),
        (keyspace::RUNNING, vec![]),
        (keyspace::RUN_REQUESTS, vec![]),
    ])
}

/// A job name whose owner is `owner` among `workers`.
fn owned_by(owner: &str, workers: &[&str], skip: usize) -> String {
    (0..)
        .map(|i| format!("job-{i}"))
        .filter(|name| rendezvous_owner(name, workers.iter().copied()) == Some(owner))
        .nth(skip)
        .unwrap()
}

/// The job-moving actions only, in order.
fn moves(actions: Vec<Action>) -> Vec<String> {
    actions
        .into_iter()
        .filter_map(|a| match a {
            Action::Own(job) => Some(format!("own {}", job.name)),
            Action::HandOver(name) => Some(format!("hand over {name}")),
            Action::Stop(name) => Some(format!("stop {name}")),
            Action::RunNow(name, _) => Some(format!("run now {name}")),
            Action::Lost(entry) => Some(format!("lost {}", entry.run_id)),
            Action::ClusterRuns(_) | Action::CloseOpenRuns { .. } => None,
        })
        .collect()
}

#[test]
fn membership_changes_move_exactly_the_jobs_whose_owner_changed() {
    let mine = owned_by(ME, &[ME, "w2"], 0);
    let theirs = owned_by("w2", &[ME, "w2"], 0);
    let jobs = [job(&mine), job(&theirs)];
    // (what happens, the actions expected)
    type Step = (&'static str, Followed, Vec<String>);
    let steps: Vec<Step> = vec![
        (
            "start: two live workers, one job each",
            listed(&jobs, &[ME, "w2"]),
            vec![format!("own {mine}")],
        ),
        (
            "the owner of the other job leaves (lease ended or graceful leave): it moves here",
            worker_delete("w2", 10),
            vec![format!("own {theirs}")],
        ),
        (
            "it rejoins: its job is handed back, mine stays",
            worker_put("w2"),
            vec![format!("hand over {theirs}")],
        ),
        (
            "a heartbeat of a known worker moves nothing",
            worker_put("w2"),
            vec![],
        ),
        (
            "this worker's own key goes (it left): every job is handed over",
            worker_delete(ME, 11),
            vec![format!("hand over {mine}")],
        ),
        (
            "it registers again: its jobs come back",
            worker_put(ME),
            vec![format!("own {mine}")],
        ),
    ];
    let mut state = Ownership::new(ME, "default");
    for (what, input, expected) in steps {
        assert_eq!(moves(state.apply(input, 0)), expected, "{what}");
    }
}

#[test]
fn job_changes_own_update_stop_and_resync() {
    let a = owned_by(ME, &[ME], 0);
    let b = owned_by(ME, &[ME], 1);
    let mut state = Ownership::new(ME, "default");
    assert_eq!(
        moves(state.apply(listed(&[job(&a), job(&b)], &[ME]), 0)),
        [format!("own {a}"), format!("own {b}")]
    );
    let put = |j: &Job| Followed::Changed(keyspace::JOBS, vec![WatchEvent::Put(job_kv(j))]);
    let mut edited = job(&a);
    edited.command = "echo edited".into();
    let mut paused = job(&b);
    paused.enabled = false;
    let mut elsewhere = job(&a);
    elsewhere.group = "gpu".into();
    type Step = (&'static str, Followed, Vec<String>);
    let steps: Vec<Step> = vec![
        ("a saved but unchanged job: nothing", put(&job(&a)), vec![]),
        (
            "an edited job is updated",
            put(&edited),
            vec![format!("own {a}")],
        ),
        (
            "a paused job stops at once",
            put(&paused),
            vec![format!("stop {b}")],
        ),
        (
            "resumed, it is owned again",
            put(&job(&b)),
            vec![format!("own {b}")],
        ),
        (
            "moved to another group: stops at once",
            put(&elsewhere),
            vec![format!("stop {a}")],
        ),
        (
            "a resync without job b (deleted while the watch was down) stops it; a is back",
            listed(&[job(&a)], &[ME]),
            vec![format!("own {a}"), format!("stop {b}")],
        ),
    ];
    for (what, input, expected) in steps {
        assert_eq!(moves(state.apply(input, 0)), expected, "{what}");
    }
}

#[test]
fn a_stopping_worker_hands_everything_over_and_decides_nothing_more() {
    let a = owned_by(ME, &[ME], 0);
    let mut state = Ownership::new(ME, "default");
    state.apply(listed(&[job(&a)], &[ME]), 0);
    assert_eq!(moves(state.stop()), [format!("hand over {a}")]);
    assert!(state.apply(worker_delete("w2", 3), 0).is_empty());
    assert!(state.apply(listed(&[job(&a)], &[ME]), 0).is_empty());
}

#[test]
fn a_run_is_lost_when_its_key_goes_with_its_workers_at_one_revision() {
    let run = entry("long", "w2");
    let run_id = format!("lost {}", run.run_id);
    // (case, inputs, lost runs expected)
    let cases: Vec<(&str, Vec<Followed>, Vec<String>)> = vec![
        (
            "the worker's delete is seen first",
            vec![
                running_put(&run),
                worker_delete("w2", 10),
                running_delete(&run, 10),
            ],
            vec![run_id.clone()],
        ),
        (
            "the run's delete is seen first (another watch)",
            vec![
                running_put(&run),
                running_delete(&run, 10),
                worker_delete("w2", 10),
            ],
            vec![run_id.clone()],
        ),
        (
            "the run ended normally, then the worker died",
            vec![
                running_put(&run),
                running_delete(&run, 9),
                worker_delete("w2", 10),
            ],
            vec![],
        ),
        (
            "the worker died, the run had ended before",
            vec![
                running_put(&run),
                worker_delete("w2", 10),
                running_delete(&run, 12),
            ],
            vec![],
        ),
    ];
    for (case, inputs, expected) in cases {
        let mut state = Ownership::new(ME, "default");
        state.apply(listed(&[], &[ME, "w2"]), 0);
        let mut lost = Vec::new();
        for input in inputs {
            lost.extend(moves(state.apply(input, 0)));
        }
        assert_eq!(lost, expected, "{case}");
    }
}

#[test]
fn exactly_one_survivor_closes_a_dead_workers_open_runs() {
    let workers = ["w1", "w2", "w3", "w4"];
    for dead in workers {
        let mut closers = Vec::new();
        for me in workers.iter().filter(|w| **w != dead) {
            let mut state = Ownership::new(me, "default");
            state.apply(listed(&[], &workers), 0);
            for action in state.apply(worker_delete(dead, 10), 77) {
                if let Action::CloseOpenRuns { worker, died_at_ms } = action {
                    assert_eq!((worker.as_str(), died_at_ms), (dead, 77));
                    closers.push(*me);
                }
            }
        }
        assert_eq!(closers.len(), 1, "{dead} died: closers {closers:?}");
    }
}

#[test]
fn an_unmatched_delete_is_forgotten_after_the_window() {
    let run = entry("long", "w2");
    let mut state = Ownership::new(ME, "default");
    state.apply(listed(&[], &[ME, "w2"]), 0);
    state.apply(running_put(&run), 0);
    state.apply(running_delete(&run, 10), 0);
    let late = LOST_MATCH_WINDOW_MS + 1;
    assert!(
        moves(state.apply(worker_delete("w2", 10), late)).is_empty(),
        "too late to match: taken as a normal end"
    );
}

#[test]
fn runs_elsewhere_are_counted_and_run_requests_reach_only_owned_jobs() {
    let mine = owned_by(ME, &[ME, "w2"], 0);
    let theirs = owned_by("w2", &[ME, "w2"], 0);
    let mut state = Ownership::new(ME, "default");
    state.apply(listed(&[job(&mine), job(&theirs)], &[ME, "w2"]), 0);
    let counts = |actions: Vec<Action>| {
        actions.into_iter().find_map(|a| match a {
            Action::ClusterRuns(c) => Some(c),
            _ => None,
        })
    };
    state.apply(running_put(&entry(&mine, ME)), 0);
    let seen = counts(state.apply(running_put(&entry(&mine, "w2")), 0)).unwrap();
    assert_eq!(
        seen,
        HashMap::from([(mine.clone(), 1)]),
        "this worker's own runs are not counted"
    );
    let request = |job: &str| {
        let value = br#"{"planTime":5,"requestedBy":"ana"}"#.to_vec();
        Followed::Changed(
            keyspace::RUN_REQUESTS,
            vec![WatchEvent::Put(kv(
                &keyspace::run_request_key(job),
                value,
                3,
            ))],
        )
    };
    assert_eq!(
        moves(state.apply(request(&mine), 0)),
        [format!("run now {mine}")]
    );
    assert!(moves(state.apply(request(&theirs), 0)).is_empty());
}

#[test]
fn rendezvous_spreads_jobs_and_moves_only_the_dead_workers_share() {
    let workers = ["w1", "w2", "w3"];
    let jobs: Vec<String> = (0..3000).map(|i| format!("job-{i}")).collect();
    let owner = |job: &str, ws: &[&'static str]| rendezvous_owner(job, ws.iter().copied()).unwrap();
    let mut per_worker: HashMap<&str, usize> = HashMap::new();
    for job in &jobs {
        *per_worker.entry(owner(job, &workers)).or_default() += 1;
    }
    for w in workers {
        let n = per_worker[w];
        assert!((800..1200).contains(&n), "{w} owns {n} of 3000");
    }
    // Without w2, only w2's jobs move.
    for job in &jobs {
        let before = owner(job, &workers);
        let after = owner(job, &["w1", "w3"]);
        if before != "w2" {
            assert_eq!(before, after, "{job} moved although its owner lives");
        }
    }
}

const PINNED: u64 = 18046302035572494072;

#[test]
fn the_hash_is_stable_across_builds() {
    // Pinned values: a change here would split a mixed-version cluster.
    assert_eq!(stable_hash(&["w1", "job-1"]), PINNED);
    assert_ne!(stable_hash(&["w1", "job-1"]), stable_hash(&["w1job-1"]));
    assert_eq!(
        rendezvous_owner("backup", ["a", "b", "c"]),
        rendezvous_owner("backup", ["c", "b", "a"])
    );
}
