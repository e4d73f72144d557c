//! Verification from the run log, not from counters: for every job, the
//! ticks its schedule planned in the measured window against the run
//! records stored for it.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use distcron::schedule::{Schedule, parse_time_zone};
use futures_util::{StreamExt, TryStreamExt};
use mongodb::bson::doc;
use serde::{Deserialize, Serialize};

/// One job as the harness created it.
#[derive(Debug, Clone)]
pub struct PlannedJob {
    pub name: String,
    pub cron_expr: String,
    pub run_secs: u64,
}

/// The part of a run record the verification reads.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Seen {
    plan_time: i64,
    start_time: i64,
    status: String,
}

/// A span of the window where a chaos action may cost ticks.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChaosWindow {
    pub action: String,
    pub from_ms: i64,
    pub to_ms: i64,
    /// Ticks planned in this span that never ran.
    pub missing: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Lateness {
    pub p50_ms: i64,
    pub p99_ms: i64,
    pub max_ms: i64,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WindowResult {
    pub from: String,
    pub window_secs: f64,
    pub jobs: usize,
    /// Ticks the schedules planned in the window.
    pub expected_ticks: u64,
    /// Ticks left out because their run could not have ended when the run
    /// log was read.
    pub in_flight_ticks: u64,
    /// Runs started for expected ticks.
    pub runs: u64,
    pub runs_per_minute: f64,
    pub missing: u64,
    /// Extra runs of a tick that had already run.
    pub duplicates: u64,
    /// Runs that did not succeed, by status.
    pub failed: BTreeMap<String, u64>,
    /// Ticks the overlap policy skipped.
    pub skipped: u64,
    /// Start time minus planned time.
    pub lateness: Lateness,
    pub chaos: Vec<ChaosWindow>,
    pub missing_outside_chaos: u64,
    /// A few missing ticks, to start an investigation from.
    pub missing_examples: Vec<String>,
}

impl WindowResult {
    pub fn failed_total(&self) -> u64 {
        self.failed.values().sum()
    }
}

/// Statuses of runs whose process started.
const STARTED: [&str; 5] = ["succeeded", "failed", "timed_out", "killed", "lost"];

fn ticks(job: &PlannedJob, from: DateTime<Utc>, to: DateTime<Utc>) -> Result<Vec<i64>, String> {
    let utc = parse_time_zone("UTC").map_err(|e| e.to_string())?;
    let schedule = Schedule::parse_for_job(&job.cron_expr, utc, &job.name)
        .map_err(|e| format!("{}: {e}", job.name))?;
    let mut out = Vec::new();
    let mut at = from - chrono::Duration::milliseconds(1);
    while let Some(next) = schedule.next_after(at) {
        if next >= to {
            break;
        }
        out.push(next.timestamp_millis());
        at = next;
    }
    Ok(out)
}

fn percentile(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Check the window `[from, to)` against the run log, read at `read_at`.
pub async fn verify(
    runs: &mongodb::Collection<mongodb::bson::Document>,
    jobs: &[PlannedJob],
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    read_at: DateTime<Utc>,
    mut chaos: Vec<ChaosWindow>,
) -> Result<WindowResult, String> {
    // Every job's records, 16 queries in flight.
    let typed = runs.clone_with_type::<Seen>();
    let seen: Vec<(usize, Vec<Seen>)> = futures_util::stream::iter(jobs.iter().enumerate())
        .map(|(i, job)| {
            let typed = typed.clone();
            async move {
                let records: Vec<Seen> = typed
                    .find(doc! { "jobName": &job.name })
                    .projection(doc! { "_id": 0, "planTime": 1, "startTime": 1, "status": 1 })
                    .await
                    .map_err(|e| format!("reading runs of {}: {e}", job.name))?
                    .try_collect()
                    .await
                    .map_err(|e| format!("reading runs of {}: {e}", job.name))?;
                Ok::<_, String>((i, records))
            }
        })
        .buffer_unordered(16)
        .try_collect()
        .await?;

    let mut by_job: HashMap<usize, Vec<Seen>> = seen.into_iter().collect();
    let (mut expected, mut in_flight, mut started, mut missing, mut duplicates, mut skipped) =
        (0u64, 0u64, 0u64, 0u64, 0u64, 0u64);
    let mut failed: BTreeMap<String, u64> = BTreeMap::new();
    let mut lateness = Vec::new();
    let mut missing_outside_chaos = 0;
    let mut missing_examples = Vec::new();
    for (i, job) in jobs.iter().enumerate() {
        let records = by_job.remove(&i).unwrap_or_default();
        let mut at_tick: HashMap<i64, Vec<&Seen>> = HashMap::new();
        for record in &records {
            at_tick.entry(record.plan_time).or_default().push(record);
        }
        for tick in ticks(job, from, to)? {
            // A run that cannot have ended before the read proves nothing.
            if tick + (job.run_secs as i64 + 5) * 1000 > read_at.timestamp_millis() {
                in_flight += 1;
                continue;
            }
            expected += 1;
            let here = at_tick.get(&tick).map(Vec::as_slice).unwrap_or_default();
            let ran: Vec<&&Seen> = here
                .iter()
                .filter(|r| STARTED.contains(&r.status.as_str()))
                .collect();
            if ran.is_empty() {
                if here.iter().any(|r| r.status == "skipped") {
                    skipped += 1;
                    continue;
                }
                missing += 1;
                let mut explained = false;
                for window in chaos.iter_mut() {
                    if (window.from_ms..window.to_ms).contains(&tick) {
                        window.missing += 1;
                        explained = true;
                    }
                }
                if !explained {
                    missing_outside_chaos += 1;
                }
                if missing_examples.len() < 10 {
                    let at = DateTime::<Utc>::from_timestamp_millis(tick).unwrap_or_default();
                    missing_examples.push(format!("{} @ {}", job.name, at.to_rfc3339()));
                }
                continue;
            }
            started += 1;
            duplicates += ran.len() as u64 - 1;
            for run in ran {
                if run.status != "succeeded" {
                    *failed.entry(run.status.clone()).or_default() += 1;
                }
                lateness.push(run.start_time - run.plan_time);
            }
        }
    }
    lateness.sort_unstable();
    let window_secs = (to - from).num_milliseconds() as f64 / 1000.0;
    Ok(WindowResult {
        from: from.to_rfc3339(),
        window_secs,
        jobs: jobs.len(),
        expected_ticks: expected,
        in_flight_ticks: in_flight,
        runs: started,
        runs_per_minute: started as f64 * 60.0 / window_secs,
        missing,
        duplicates,
        failed,
        skipped,
        lateness: Lateness {
            p50_ms: percentile(&lateness, 0.50),
            p99_ms: percentile(&lateness, 0.99),
            max_ms: lateness.last().copied().unwrap_or(0),
        },
        chaos,
        missing_outside_chaos,
        missing_examples,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    #[test]
    fn ticks_are_those_planned_inside_the_half_open_window() {
        let job = PlannedJob {
            name: "j".into(),
            cron_expr: "7 * * * * *".into(),
            run_secs: 0,
        };
        let found = ticks(&job, at("2026-01-01T00:00:07Z"), at("2026-01-01T00:03:07Z")).unwrap();
        let want: Vec<i64> = ["00:00:07", "00:01:07", "00:02:07"]
            .iter()
            .map(|t| at(&format!("2026-01-01T{t}Z")).timestamp_millis())
            .collect();
        assert_eq!(found, want, "from is included, to is not");
    }

    #[test]
    fn percentiles_pick_from_the_sorted_values() {
        let values: Vec<i64> = (1..=100).collect();
        assert_eq!(percentile(&values, 0.5), 51);
        assert_eq!(percentile(&values, 0.99), 99);
        assert_eq!(percentile(&[], 0.99), 0);
    }
}
