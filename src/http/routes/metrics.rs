//! `GET /metrics`: Prometheus text format.
//!
//! The manager is stateless, so worker figures come from the workers'
//! registrations (`workers/<id>`, refreshed every few seconds), labelled by
//! worker; HTTP figures are this manager's own.

use std::fmt::Write;

use actix_web::{HttpResponse, web};

use crate::actors::log_batcher::LATENESS_BUCKETS_MS;
use crate::http::{ApiError, AppState};
use crate::keyspace::WorkerInfo;
use crate::notify::notifier::{GetNotifyCounters, NotifyCounters};

pub async fn metrics(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let (kvs, _) = state.coord.list("workers/").await?;
    let workers: Vec<WorkerInfo> = kvs
        .iter()
        .filter_map(|kv| serde_json::from_slice(&kv.value).ok())
        .collect();
    // Notifications are sent by workers and by managers (their sweep's
    // `missed` and `lost` records, and tests).
    let mut senders: Vec<(String, NotifyCounters)> = workers
        .iter()
        .map(|w| (w.id.clone(), w.notify.clone()))
        .collect();
    if let Some(notifier) = &state.notifier
        && let Ok(counters) = notifier.send(GetNotifyCounters).await
    {
        senders.push(("this-manager".into(), counters));
    }
    let mut out = String::new();
    render(&mut out, &workers, &state.requests.snapshot());
    render_notifications(&mut out, &senders);
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(out))
}

fn render_notifications(out: &mut String, senders: &[(String, NotifyCounters)]) {
    family(
        out,
        "distcron_notifications_total",
        "counter",
        "Notification deliveries by outcome (one per target), and events another process had already claimed (duplicate) or that could not be claimed (dropped), by sending process.",
    );
    for (sender, c) in senders {
        for (outcome, n) in [
            ("delivered", c.delivered),
            ("failed", c.failed),
            ("throttled", c.throttled),
            ("duplicate", c.duplicates),
            ("dropped", c.dropped),
        ] {
            let _ = writeln!(
                out,
                "distcron_notifications_total{{sender=\"{sender}\",outcome=\"{outcome}\"}} {n}"
            );
        }
    }
    type Count = fn(&NotifyCounters) -> u64;
    let per_sender: [(&str, &str, Count); 2] = [
        (
            "distcron_notification_attempts_total",
            "Delivery attempts (retries included).",
            |c| c.attempts,
        ),
        (
            "distcron_notification_summaries_total",
            "Throttle summaries sent.",
            |c| c.summaries,
        ),
    ];
    for (name, help, count) in per_sender {
        family(out, name, "counter", help);
        for (sender, c) in senders {
            let _ = writeln!(out, "{name}{{sender=\"{sender}\"}} {}", count(c));
        }
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn render(out: &mut String, workers: &[WorkerInfo], requests: &[((String, u16), u64)]) {
    family(
        out,
        "distcron_workers_alive",
        "gauge",
        "Workers with a live registration.",
    );
    let _ = writeln!(out, "distcron_workers_alive {}", workers.len());

    family(
        out,
        "distcron_runs_total",
        "counter",
        "Runs recorded by each worker since it started, by status.",
    );
    for w in workers {
        for (status, n) in &w.batcher.runs_by_status {
            let _ = writeln!(
                out,
                "distcron_runs_total{{worker=\"{}\",status=\"{status}\"}} {n}",
                w.id
            );
        }
    }

    family(
        out,
        "distcron_start_lateness_seconds",
        "histogram",
        "Start time minus planned time of started runs.",
    );
    for w in workers {
        let mut cumulative = 0;
        for (i, bound) in LATENESS_BUCKETS_MS.iter().enumerate() {
            cumulative += w.batcher.lateness_buckets.get(i).copied().unwrap_or(0);
            let le = *bound as f64 / 1000.0;
            let _ = writeln!(
                out,
                "distcron_start_lateness_seconds_bucket{{worker=\"{}\",le=\"{le}\"}} {cumulative}",
                w.id
            );
        }
        let total: u64 = w.batcher.lateness_buckets.iter().sum();
        let _ = writeln!(
            out,
            "distcron_start_lateness_seconds_bucket{{worker=\"{}\",le=\"+Inf\"}} {total}",
            w.id
        );
        let _ = writeln!(
            out,
            "distcron_start_lateness_seconds_sum{{worker=\"{}\"}} {}",
            w.id,
            w.batcher.lateness_sum_ms as f64 / 1000.0
        );
        let _ = writeln!(
            out,
            "distcron_start_lateness_seconds_count{{worker=\"{}\"}} {total}",
            w.id
        );
    }

    family(
        out,
        "distcron_tick_claims_total",
        "counter",
        "Tick claims by outcome.",
    );
    for w in workers {
        for (result, n) in [
            ("won", w.claims.claims_won),
            ("lost", w.claims.claims_lost),
            ("error", w.claims.claim_errors),
            ("no_session", w.claims.claims_refused_no_session),
        ] {
            let _ = writeln!(
                out,
                "distcron_tick_claims_total{{worker=\"{}\",result=\"{result}\"}} {n}",
                w.id
            );
        }
    }

    // Gauges and counters with one value per worker.
    type Value = fn(&WorkerInfo) -> u64;
    let per_worker: [(&str, &str, &str, Value); 12] = [
        (
            "distcron_batcher_queue_records",
            "gauge",
            "Run records not yet acknowledged by the run log.",
            |w| w.batcher.queued,
        ),
        (
            "distcron_journal_bytes",
            "gauge",
            "Bytes in the worker's run journal (records wait there until the run log has them).",
            |w| w.batcher.journal_bytes,
        ),
        (
            "distcron_journal_fsyncs_total",
            "counter",
            "Group commits of the run journal (one fsync each).",
            |w| w.batcher.fsyncs,
        ),
        (
            "distcron_batcher_dropped_total",
            "counter",
            "Run records lost because neither the journal nor memory could hold them.",
            |w| w.batcher.dropped,
        ),
        (
            "distcron_batcher_dead_lettered_total",
            "counter",
            "Run records the run log refused for good, kept in the dead-letter file.",
            |w| w.batcher.dead_lettered,
        ),
        (
            "distcron_runs_in_progress",
            "gauge",
            "Runs in progress on each worker.",
            |w| w.running as u64,
        ),
        (
            "distcron_jobs_known",
            "gauge",
            "Jobs the worker's supervisor knows of.",
            |w| w.supervisor.jobs_known,
        ),
        (
            "distcron_jobs_owned",
            "gauge",
            "Jobs the worker owns (runs the ticks of).",
            |w| w.supervisor.jobs_owned,
        ),
        (
            "distcron_supervisor_resyncs_total",
            "counter",
            "Full re-lists after a watch asked for a resync.",
            |w| w.supervisor.resyncs,
        ),
        (
            "distcron_lost_runs_recorded_total",
            "counter",
            "Lost records written for runs whose worker died.",
            |w| w.supervisor.lost_runs_recorded,
        ),
        (
            "distcron_lost_runs_rerun_total",
            "counter",
            "Lost runs started again (onLost: rerun).",
            |w| w.supervisor.lost_runs_rerun,
        ),
        (
            "distcron_runs_killed_total",
            "counter",
            "Runs ended by a kill request.",
            |w| w.kills.runs_killed,
        ),
    ];
    for (name, kind, help, value) in per_worker {
        family(out, name, kind, help);
        for w in workers {
            let _ = writeln!(out, "{name}{{worker=\"{}\"}} {}", w.id, value(w));
        }
    }

    family(
        out,
        "distcron_http_requests_total",
        "counter",
        "HTTP requests served by this manager, by route and status.",
    );
    for ((route, status), n) in requests {
        let _ = writeln!(
            out,
            "distcron_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
        );
    }
}
