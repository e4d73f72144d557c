//! The peer of the `compare` scenario: APScheduler 3.x (one Python process,
//! cron triggers, a thread pool spawning the same command; no coordination,
//! no run log), run on the same jobs and window length right after
//! distcron, on the same machine, and reported side by side.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::floor::{Percentiles, percentiles};

/// `peer` in a scenario file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PeerSpec {
    /// The thread pool's size.
    pub threads: usize,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerResult {
    pub name: String,
    pub jobs: usize,
    pub threads: usize,
    pub from: String,
    pub expected_ticks: u64,
    pub started: u64,
    pub missed: u64,
    /// Start time minus the tick's minute.
    pub lateness: Percentiles,
    pub cpu_secs: f64,
    pub peak_rss_mib: f64,
}

/// What the starts `(job, ms)` of jobs `0..jobs`, each firing at second 0
/// of every minute, show for the window `[from_ms, to_ms)`: ticks expected,
/// ticks started, and each start's lateness (ms after its minute; a start
/// counts for the minute it falls in, so lateness stays under a minute).
/// Pure.
pub fn summarize(
    starts: &[(usize, i64)],
    jobs: usize,
    from_ms: i64,
    to_ms: i64,
) -> (u64, u64, Vec<f64>) {
    let first_minute = (from_ms + 59_999).div_euclid(60_000);
    let end_minute = (to_ms + 59_999).div_euclid(60_000);
    let minutes = (end_minute - first_minute).max(0) as u64;
    let mut seen = BTreeSet::new();
    let mut lateness = Vec::new();
    for &(job, ms) in starts {
        let minute = ms.div_euclid(60_000);
        if job >= jobs || minute < first_minute || minute >= end_minute {
            continue;
        }
        if seen.insert((job, minute)) {
            lateness.push((ms - minute * 60_000) as f64);
        }
    }
    (jobs as u64 * minutes, seen.len() as u64, lateness)
}

/// Parse the peer's ledger: `<job> <ms>` a line.
pub fn parse_starts(text: &str) -> Vec<(usize, i64)> {
    text.lines()
        .filter_map(|line| {
            let (job, ms) = line.split_once(' ')?;
            Some((job.parse().ok()?, ms.parse().ok()?))
        })
        .collect()
}

/// Run APScheduler with `jobs` jobs from the next minute at least `settle`
/// away, for `window`, then read what it started.
pub async fn run_apscheduler(
    python: &Path,
    script: &Path,
    spec: &PeerSpec,
    jobs: usize,
    settle: Duration,
    window: Duration,
    run_dir: &Path,
) -> Result<PeerResult, String> {
    let from = crate::next_minute_after(settle);
    let to = from + chrono::Duration::from_std(window).map_err(|e| e.to_string())?;
    // Late starts of the window's last minute still count.
    let until = to + chrono::Duration::seconds(30);
    let ledger = run_dir.join("apscheduler-starts");
    let log = std::fs::File::create(run_dir.join("apscheduler.log")).map_err(|e| e.to_string())?;
    let mut child = Command::new(python)
        .arg(script)
        .args([
            jobs.to_string(),
            spec.threads.to_string(),
            format!("{:.3}", until.timestamp_millis() as f64 / 1000.0),
            ledger.display().to_string(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", python.display()))?;
    crate::say(&format!(
        "APScheduler: {jobs} jobs, {} threads; measuring {} to {}",
        spec.threads,
        from.format("%H:%M:%S"),
        to.format("%H:%M:%S")
    ));
    let deadline = tokio::time::Instant::now()
        + (until - chrono::Utc::now()).to_std().unwrap_or_default()
        + Duration::from_secs(120);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err("APScheduler did not stop by its deadline; killed".into());
            }
            Err(e) => return Err(format!("waiting for APScheduler: {e}")),
        }
    };
    let mut stdout = String::new();
    if let Some(mut out) = child.stdout.take() {
        use std::io::Read;
        let _ = out.read_to_string(&mut stdout);
    }
    if !status.success() {
        return Err(format!(
            "APScheduler exited with {status} (its log: {})",
            run_dir.join("apscheduler.log").display()
        ));
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Usage {
        cpu_secs: f64,
        peak_rss_mib: f64,
    }
    let usage: Usage = stdout
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .ok_or_else(|| format!("APScheduler printed no usage line: {stdout:?}"))?;
    let text =
        std::fs::read_to_string(&ledger).map_err(|e| format!("{}: {e}", ledger.display()))?;
    let starts = parse_starts(&text);
    let (expected, started, lateness) = summarize(
        &starts,
        jobs,
        from.timestamp_millis(),
        to.timestamp_millis(),
    );
    Ok(PeerResult {
        name: "APScheduler 3.10.4".into(),
        jobs,
        threads: spec.threads,
        from: from.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        expected_ticks: expected,
        started,
        missed: expected.saturating_sub(started),
        lateness: percentiles(lateness),
        cpu_secs: usage.cpu_secs,
        peak_rss_mib: usage.peak_rss_mib,
    })
}

/// distcron's lateness p99 over the peer's: the target is at most
/// 1.05. Pure.
pub fn p99_ratio(distcron_p99_ms: f64, peer: &PeerResult) -> f64 {
    if peer.lateness.p99_ms <= 0.0 {
        return f64::INFINITY;
    }
    distcron_p99_ms / peer.lateness.p99_ms
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_are_counted_once_per_job_and_minute_inside_the_window() {
        let from = 600_000; // minute 10
        let to = 720_000; // minutes 10 and 11
        let starts = [
            (0, 600_010), // job 0, minute 10, 10 ms late
            (0, 600_500), // a second start of the same tick: not counted twice
            (1, 601_000), // job 1, minute 10, 1000 ms late
            (0, 660_020), // job 0, minute 11
            (2, 599_999), // before the window
            (2, 720_000), // after it
            (7, 660_000), // not one of the jobs
        ];
        let (expected, started, lateness) = summarize(&starts, 3, from, to);
        assert_eq!(expected, 6, "3 jobs x 2 minutes");
        assert_eq!(started, 3);
        assert_eq!(lateness, vec![10.0, 1000.0, 20.0]);
        // A window that starts mid-minute begins at the next minute.
        assert_eq!(summarize(&[], 3, 600_001, 720_000).0, 3);
    }

    #[test]
    fn the_ledger_parses_and_skips_broken_lines() {
        assert_eq!(
            parse_starts("0 1000\n12 2000\nbroken\n3 x\n"),
            vec![(0, 1000), (12, 2000)]
        );
    }

    #[test]
    fn the_p99_ratio_compares_with_the_peer() {
        let peer = |p99_ms| PeerResult {
            name: "p".into(),
            jobs: 1,
            threads: 1,
            from: String::new(),
            expected_ticks: 1,
            started: 1,
            missed: 0,
            lateness: Percentiles {
                p50_ms: 1.0,
                p99_ms,
                max_ms: p99_ms,
            },
            cpu_secs: 0.0,
            peak_rss_mib: 0.0,
        };
        assert_eq!(p99_ratio(2100.0, &peer(2000.0)), 1.05);
        assert!(p99_ratio(1.0, &peer(0.0)).is_infinite());
    }
}
