//! Verification from the run log, not from counters: for every job, the
//! ticks its schedule planned in the measured window against the run
//! records stored for it, and, with a ledger, against the executions the
//! commands themselves wrote down.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use distcron::schedule::{Schedule, parse_time_zone};
use futures_util::TryStreamExt;
use mongodb::bson::doc;
use serde::{Deserialize, Serialize};

/// One job as the harness created it.
#[derive(Debug, Clone)]
pub struct PlannedJob {
    pub name: String,
    pub cron_expr: String,
    pub run_secs: u64,
    /// `onLost: rerun`: a lost run and its rerun are one tick, not two.
    pub rerun_lost: bool,
}

/// The part of a run record the verification reads.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Seen {
    job_name: String,
    plan_time: i64,
    start_time: i64,
    status: String,
}

/// The span of the window a chaos action may touch, and what it cost.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChaosWindow {
    pub action: String,
    pub from_ms: i64,
    pub to_ms: i64,
    /// Ticks planned in this span without a run record.
    pub missing: u64,
    /// By ledger: ticks planned in this span never executed, and executed
    /// twice or more.
    pub ledger_missing: u64,
    pub ledger_duplicates: u64,
    /// By ledger: executions in this span without a run record, and ticks
    /// with neither an execution nor a final record saying why not.
    pub executions_without_record: u64,
    pub ticks_without_execution_or_record: u64,
    /// Runs of this span that started more than 2 s after their tick, and
    /// how late they were.
    pub late_runs: u64,
    pub late_p99_ms: i64,
    pub late_max_ms: i64,
}

/// What the ledger says of the window.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LedgerResult {
    pub executions: u64,
    /// Planned ticks never executed (not counting ticks the overlap policy
    /// skipped, which say so in the run log).
    pub missing: u64,
    /// Ticks executed more than once (a lost run's rerun excepted).
    pub duplicates: u64,
    /// Lost runs run again (`onLost: rerun`).
    pub reruns: u64,
    /// Runs that found another run of their job holding its lock.
    pub overlaps: u64,
    /// Executions with no run record at all (issue J).
    pub executions_without_record: u64,
    /// Ticks with neither an execution nor a record saying why.
    pub ticks_without_execution_or_record: u64,
    pub examples: Vec<String>,
}

/// Runs this much after their tick count as late.
const LATE_MS: i64 = 2_000;

/// Executions per (job, tick).
type Executions = HashMap<(String, i64), u64>;

/// The ledger's lines: executions per (job, tick), and overlap reports.
fn read_ledger(path: &std::path::Path) -> Result<(Executions, u64), String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let (mut executions, mut overlaps) = (HashMap::new(), 0);
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["overlap", ..] => overlaps += 1,
            [job, tick, _run_id] => {
                let tick = tick
                    .parse()
                    .map_err(|_| format!("ledger {}: bad line {line:?}", path.display()))?;
                *executions.entry((job.to_string(), tick)).or_default() += 1;
            }
            _ => return Err(format!("ledger {}: bad line {line:?}", path.display())),
        }
    }
    Ok((executions, overlaps))
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
    /// With a ledger: executions counted from it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ledger: Option<LedgerResult>,
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

/// Whether a status ends a run's story.
fn is_final(status: &str) -> bool {
    !matches!(status, "started" | "pending")
}

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
    ledger_path: Option<&std::path::Path>,
) -> Result<WindowResult, String> {
    let (executed, overlaps) = match ledger_path {
        Some(path) => read_ledger(path)?,
        None => Default::default(),
    };
    let mut ledger = ledger_path.map(|_| LedgerResult {
        overlaps,
        ..LedgerResult::default()
    });
    let mut late_in: Vec<Vec<i64>> = vec![Vec::new(); chaos.len()];
    // The window's records, in one query (one per job took longer than
    // the scenario at 50,000 jobs): a record belongs to a tick by its plan
    // time, retries and reruns included.
    let index: HashMap<&str, usize> = jobs
        .iter()
        .enumerate()
        .map(|(i, job)| (job.name.as_str(), i))
        .collect();
    let mut by_job: HashMap<usize, Vec<Seen>> = HashMap::new();
    let window =
        doc! { "planTime": { "$gte": from.timestamp_millis(), "$lt": to.timestamp_millis() } };
    let mut cursor = runs
        .clone_with_type::<Seen>()
        .find(window)
        .projection(doc! { "_id": 0, "jobName": 1, "planTime": 1, "startTime": 1, "status": 1 })
        .batch_size(10_000)
        .await
        .map_err(|e| format!("reading the window's runs: {e}"))?;
    while let Some(record) = cursor
        .try_next()
        .await
        .map_err(|e| format!("reading the window's runs: {e}"))?
    {
        if let Some(i) = index.get(record.job_name.as_str()) {
            by_job.entry(*i).or_default().push(record);
        }
    }

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
            let lost_then_rerun = job.rerun_lost && ran.iter().any(|r| r.status == "lost");
            let spans: Vec<usize> = (0..chaos.len())
                .filter(|w| (chaos[*w].from_ms..chaos[*w].to_ms).contains(&tick))
                .collect();
            if let Some(ledger) = ledger.as_mut() {
                let n = executed
                    .get(&(job.name.clone(), tick))
                    .copied()
                    .unwrap_or(0);
                let skipped = here.iter().any(|r| r.status == "skipped");
                ledger.executions += n;
                let allowed = if lost_then_rerun { 2 } else { 1 };
                if n == 0 && !skipped {
                    ledger.missing += 1;
                    spans.iter().for_each(|w| chaos[*w].ledger_missing += 1);
                    // Only a final record says why (`started` and
                    // `pending` say nothing of the end).
                    if !here.iter().any(|r| is_final(&r.status)) {
                        ledger.ticks_without_execution_or_record += 1;
                        spans
                            .iter()
                            .for_each(|w| chaos[*w].ticks_without_execution_or_record += 1);
                    }
                    if ledger.examples.len() < 10 {
                        ledger
                            .examples
                            .push(format!("never executed: {} @ {tick}", job.name));
                    }
                } else if n > allowed {
                    ledger.duplicates += 1;
                    spans.iter().for_each(|w| chaos[*w].ledger_duplicates += 1);
                    if ledger.examples.len() < 10 {
                        ledger
                            .examples
                            .push(format!("{n} executions: {} @ {tick}", job.name));
                    }
                }
                if n == 2 && lost_then_rerun {
                    ledger.reruns += 1;
                }
                // Each execution should have its record; a lost run's
                // record stands for the execution it lost.
                let unrecorded = n.saturating_sub(ran.len() as u64);
                ledger.executions_without_record += unrecorded;
                spans
                    .iter()
                    .for_each(|w| chaos[*w].executions_without_record += unrecorded);
            }
            for run in &ran {
                let late = run.start_time - run.plan_time;
                if late > LATE_MS {
                    spans.iter().for_each(|w| late_in[*w].push(late));
                }
            }
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
            duplicates += (ran.len() as u64 - 1).saturating_sub(u64::from(lost_then_rerun));
            for run in ran {
                if run.status != "succeeded" {
                    *failed.entry(run.status.clone()).or_default() += 1;
                }
                lateness.push(run.start_time - run.plan_time);
            }
        }
    }
    lateness.sort_unstable();
    for (window, mut late) in chaos.iter_mut().zip(late_in) {
        late.sort_unstable();
        window.late_runs = late.len() as u64;
        window.late_p99_ms = percentile(&late, 0.99);
        window.late_max_ms = late.last().copied().unwrap_or(0);
    }
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
        ledger,
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
            rerun_lost: false,
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
