//! Job chains: `onSuccess` and `onFailure` name jobs to start when a run
//! ends that way. The graph checks here are pure functions over job
//! definitions (cycles, upstream and downstream), table-tested.
//!
//! How a chained run reaches its job: the worker that ran the parent puts
//! `run/<child>/<parent run id>` (a run request) before the parent's record
//! leaves for the run log; the child's owner claims the run under
//! `ticks/<child>/after/<parent run id>`. That claim is keyed by the parent
//! run alone, so the child runs once however often the request is seen.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::job::{Job, JobError};

/// Which end of a run starts the linked job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum On {
    Success,
    Failure,
}

/// One edge of the chain graph as seen from a job.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Link {
    pub job: String,
    pub on: On,
}

/// The jobs a job starts, with when.
pub fn downstream(job: &Job) -> Vec<Link> {
    let mut links: Vec<Link> = job
        .on_success
        .iter()
        .map(|j| Link {
            job: j.clone(),
            on: On::Success,
        })
        .chain(job.on_failure.iter().map(|j| Link {
            job: j.clone(),
            on: On::Failure,
        }))
        .collect();
    links.sort();
    links
}

/// The jobs that start `name`, with when.
pub fn upstream<'a>(jobs: impl IntoIterator<Item = &'a Job>, name: &str) -> Vec<Link> {
    let mut links: Vec<Link> = jobs
        .into_iter()
        .flat_map(|parent| {
            downstream(parent)
                .into_iter()
                .filter(|l| l.job == name)
                .map(|l| Link {
                    job: parent.name.clone(),
                    on: l.on,
                })
        })
        .collect();
    links.sort();
    links
}

/// The edges of a set of jobs: name -> the jobs it starts (either way).
pub fn graph<'a>(jobs: impl IntoIterator<Item = &'a Job>) -> BTreeMap<String, BTreeSet<String>> {
    jobs.into_iter()
        .map(|j| {
            let targets = j.on_success.iter().chain(&j.on_failure).cloned().collect();
            (j.name.clone(), targets)
        })
        .collect()
}

/// A cycle through `start`, as the path `start -> ... -> start`, if any.
pub fn cycle_through(
    graph: &BTreeMap<String, BTreeSet<String>>,
    start: &str,
) -> Option<Vec<String>> {
    // Depth-first with an explicit stack of (node, next child index).
    let mut path = vec![start.to_string()];
    let mut seen = BTreeSet::new();
    let mut stack: Vec<std::collections::btree_set::Iter<'_, String>> = Vec::new();
    let empty = BTreeSet::new();
    stack.push(graph.get(start).unwrap_or(&empty).iter());
    while let Some(children) = stack.last_mut() {
        match children.next() {
            Some(child) if child == start => {
                path.push(child.clone());
                return Some(path);
            }
            Some(child) if seen.insert(child.clone()) => {
                path.push(child.clone());
                stack.push(graph.get(child).unwrap_or(&empty).iter());
            }
            Some(_) => {}
            None => {
                stack.pop();
                path.pop();
            }
        }
    }
    None
}

/// Refuse a set of jobs whose chains loop, naming the loop. `changed`
/// names the jobs to start from (the ones being saved); every cycle of the
/// set passes through one of them when the rest was already acyclic.
pub fn check_cycles<'a>(
    jobs: &[&Job],
    changed: impl IntoIterator<Item = &'a str>,
) -> Result<(), JobError> {
    let graph = graph(jobs.iter().copied());
    for name in changed {
        if let Some(cycle) = cycle_through(&graph, name) {
            // The field of the changed job that holds the cycle's first edge.
            let first = jobs.iter().find(|j| j.name == cycle[0]);
            let field = match first {
                Some(j) if j.on_success.contains(&cycle[1]) => "onSuccess",
                _ => "onFailure",
            };
            return Err(JobError {
                field,
                message: format!(
                    "would create a cycle: {} (a chain must not lead back to a job in it)",
                    cycle.join(" -> ")
                ),
            });
        }
    }
    Ok(())
}

/// Refuse chain targets that are not jobs of `known`.
pub fn check_targets(job: &Job, known: &dyn Fn(&str) -> bool) -> Result<(), JobError> {
    for (field, names) in [
        ("onSuccess", &job.on_success),
        ("onFailure", &job.on_failure),
    ] {
        if let Some(missing) = names.iter().find(|n| !known(n)) {
            return Err(JobError {
                field,
                message: format!("job '{missing}' does not exist (save it first)"),
            });
        }
    }
    Ok(())
}

/// The claim key of a chained run: one per (child, parent run).
pub fn claim_key(child: &str, parent_run_id: &str) -> String {
    format!(
        "{}after/{parent_run_id}",
        crate::coord::claims::job_ticks_prefix(child)
    )
}

/// The run request that starts `child` after `parent_run_id`.
pub fn request_key(child: &str, parent_run_id: &str) -> String {
    format!(
        "{}/{parent_run_id}",
        crate::keyspace::run_request_key(child)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(name: &str, on_success: &[&str], on_failure: &[&str]) -> Job {
        let mut job = Job::new(name, "true", "@daily");
        job.on_success = on_success.iter().map(|s| s.to_string()).collect();
        job.on_failure = on_failure.iter().map(|s| s.to_string()).collect();
        job
    }

    #[test]
    fn cycles_are_found_and_named_from_the_changed_job() {
        let cases: &[(&[Job], &str, Option<&str>)] = &[
            (&[job("a", &["b"], &[]), job("b", &[], &[])], "a", None),
            (&[job("a", &["a"], &[])], "a", Some("a -> a")),
            (
                &[job("a", &["b"], &[]), job("b", &[], &["a"])],
                "a",
                Some("a -> b -> a"),
            ),
            (
                &[
                    job("a", &["b", "c"], &[]),
                    job("b", &["d"], &[]),
                    job("c", &["d"], &[]),
                    job("d", &[], &[]),
                ],
                "a",
                None,
            ),
            (
                &[
                    job("a", &["b"], &[]),
                    job("b", &["c"], &[]),
                    job("c", &[], &["b"]),
                ],
                "a",
                None,
            ),
            (
                &[
                    job("a", &["b"], &[]),
                    job("b", &["c"], &[]),
                    job("c", &[], &["b"]),
                ],
                "b",
                Some("b -> c -> b"),
            ),
            // A target that is not (yet) a job ends the path.
            (&[job("a", &["ghost"], &[])], "a", None),
        ];
        for (jobs, start, want) in cases {
            let got = cycle_through(&graph(jobs.iter()), start).map(|c| c.join(" -> "));
            assert_eq!(got.as_deref(), *want, "from {start}");
        }
    }

    #[test]
    fn a_cycle_is_refused_with_its_path() {
        let jobs = [job("a", &["b"], &[]), job("b", &["a"], &[])];
        let err = check_cycles(&[&jobs[0], &jobs[1]], ["b"]).unwrap_err();
        assert_eq!(err.field, "onSuccess");
        assert!(err.message.contains("b -> a -> b"), "{}", err.message);
        assert!(check_cycles(&[&job("a", &["b"], &[])], ["a"]).is_ok());
    }

    #[test]
    fn upstream_and_downstream() {
        let jobs = [
            job("extract", &["load"], &["alert"]),
            job("load", &["report"], &["alert"]),
            job("alert", &[], &[]),
        ];
        assert_eq!(
            downstream(&jobs[0]),
            [
                Link {
                    job: "alert".into(),
                    on: On::Failure
                },
                Link {
                    job: "load".into(),
                    on: On::Success
                },
            ]
        );
        assert_eq!(
            upstream(jobs.iter(), "alert"),
            [
                Link {
                    job: "extract".into(),
                    on: On::Failure
                },
                Link {
                    job: "load".into(),
                    on: On::Failure
                },
            ]
        );
        assert!(upstream(jobs.iter(), "extract").is_empty());
    }

    #[test]
    fn targets_must_exist() {
        let a = job("a", &["b"], &["c"]);
        let known = |n: &str| n == "b";
        let err = check_targets(&a, &known).unwrap_err();
        assert_eq!(
            (err.field, err.message.as_str()),
            ("onFailure", "job 'c' does not exist (save it first)")
        );
    }

    #[test]
    fn keys_are_per_parent_run() {
        assert_eq!(
            claim_key("load", "extract-5-w1"),
            "ticks/load/after/extract-5-w1"
        );
        assert_eq!(request_key("load", "extract-5-w1"), "run/load/extract-5-w1");
        // Scans of scheduled ticks never mistake a chain claim for one.
        assert_eq!(
            crate::coord::claims::parse_tick_key("ticks/load/after/extract-5-w1"),
            None
        );
    }
}
