//! `GET /metrics`: OpenMetrics text, encoded by the `prometheus-client`
//! crate (names, label escaping, `# EOF`), which Prometheus reads natively.
//!
//! The manager is stateless, so worker figures come from the workers'
//! registrations (`workers/<id>`, refreshed every few seconds), labelled by
//! worker; HTTP figures are this manager's own. Each scrape builds one
//! [`Figures`] collector from those snapshots: the values are already
//! counted elsewhere, so they are encoded as they are, not re-counted.

use actix_web::{HttpResponse, web};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

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
    let figures = Figures {
        workers,
        requests: state.requests.snapshot(),
        senders,
    };
    let text = figures
        .render()
        .map_err(|e| ApiError::Internal(format!("metrics: {e}")))?;
    Ok(HttpResponse::Ok()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(text))
}

/// One scrape's figures.
#[derive(Debug)]
pub struct Figures {
    pub workers: Vec<WorkerInfo>,
    pub requests: Vec<((String, u16), u64)>,
    pub senders: Vec<(String, NotifyCounters)>,
}

type Labels = Vec<(&'static str, String)>;

impl Figures {
    /// The OpenMetrics text of these figures.
    pub fn render(self) -> Result<String, std::fmt::Error> {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(self));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry)?;
        Ok(out)
    }
}

/// A counter family (its samples are named `<name>_total`).
fn counters(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (Labels, u64)>,
) -> std::fmt::Result {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, value) in samples {
        family
            .encode_family(&labels)?
            .encode_counter::<NoLabelSet, u64, f64>(&value, None)?;
    }
    Ok(())
}

fn gauges(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (Labels, u64)>,
) -> std::fmt::Result {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in samples {
        if labels.is_empty() {
            family.encode_gauge(&value)?;
        } else {
            family.encode_family(&labels)?.encode_gauge(&value)?;
        }
    }
    Ok(())
}

fn worker(w: &WorkerInfo) -> Labels {
    vec![("worker", w.id.clone())]
}

impl Collector for Figures {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let e = &mut encoder;
        let workers = &self.workers;
        gauges(
            e,
            "distcron_workers_alive",
            "Workers with a live registration.",
            [(Vec::new(), workers.len() as u64)],
        )?;
        counters(
            e,
            "distcron_runs",
            "Runs recorded by each worker since it started, by status.",
            workers.iter().flat_map(|w| {
                w.batcher.runs_by_status.iter().map(|(status, n)| {
                    (
                        vec![("worker", w.id.clone()), ("status", status.clone())],
                        *n,
                    )
                })
            }),
        )?;
        {
            let mut family = e.encode_descriptor(
                "distcron_start_lateness_seconds",
                "Start time minus planned time of started runs.",
                None,
                MetricType::Histogram,
            )?;
            for w in workers {
                // Per-bucket counts (the encoder sums them); the last
                // bucket, past the largest bound, is +Inf.
                let count = |i: usize| w.batcher.lateness_buckets.get(i).copied().unwrap_or(0);
                let buckets: Vec<(f64, u64)> = LATENESS_BUCKETS_MS
                    .iter()
                    .enumerate()
                    .map(|(i, bound)| (*bound as f64 / 1000.0, count(i)))
                    .chain(std::iter::once((
                        f64::INFINITY,
                        count(LATENESS_BUCKETS_MS.len()),
                    )))
                    .collect();
                let total: u64 = w.batcher.lateness_buckets.iter().sum();
                family
                    .encode_family(&worker(w))?
                    .encode_histogram::<NoLabelSet>(
                        w.batcher.lateness_sum_ms as f64 / 1000.0,
                        total,
                        &buckets,
                        None,
                    )?;
            }
        }
        counters(
            e,
            "distcron_tick_claims",
            "Tick claims by outcome.",
            workers.iter().flat_map(|w| {
                [
                    ("won", w.claims.claims_won),
                    ("lost", w.claims.claims_lost),
                    ("error", w.claims.claim_errors),
                    ("no_session", w.claims.claims_refused_no_session),
                ]
                .map(|(result, n)| (vec![("worker", w.id.clone()), ("result", result.into())], n))
            }),
        )?;
        type Value = fn(&WorkerInfo) -> u64;
        let per_worker: [(&str, MetricType, &str, Value); 13] = [
            (
                "distcron_batcher_queue_records",
                MetricType::Gauge,
                "Run records not yet acknowledged by the run log.",
                |w| w.batcher.queued,
            ),
            (
                "distcron_journal_bytes",
                MetricType::Gauge,
                "Bytes in the worker's run journal (records wait there until the run log has them).",
                |w| w.batcher.journal_bytes,
            ),
            (
                "distcron_journal_fsyncs",
                MetricType::Counter,
                "Group commits of the run journal (one fsync each).",
                |w| w.batcher.fsyncs,
            ),
            (
                "distcron_batcher_dropped",
                MetricType::Counter,
                "Run records lost because neither the journal nor memory could hold them.",
                |w| w.batcher.dropped,
            ),
            (
                "distcron_batcher_dead_lettered",
                MetricType::Counter,
                "Run records the run log refused for good, kept in the dead-letter file.",
                |w| w.batcher.dead_lettered,
            ),
            (
                "distcron_runs_in_progress",
                MetricType::Gauge,
                "Runs in progress on each worker.",
                |w| w.running as u64,
            ),
            (
                "distcron_runs_waiting",
                MetricType::Gauge,
                "Starts waiting for a run slot (maxConcurrentRuns, a job's maxConcurrent).",
                |w| w.waiting as u64,
            ),
            (
                "distcron_jobs_known",
                MetricType::Gauge,
                "Jobs the worker's supervisor knows of.",
                |w| w.supervisor.jobs_known,
            ),
            (
                "distcron_jobs_owned",
                MetricType::Gauge,
                "Jobs the worker owns (runs the ticks of).",
                |w| w.supervisor.jobs_owned,
            ),
            (
                "distcron_supervisor_resyncs",
                MetricType::Counter,
                "Full re-lists after a watch asked for a resync.",
                |w| w.supervisor.resyncs,
            ),
            (
                "distcron_lost_runs_recorded",
                MetricType::Counter,
                "Lost records written for runs whose worker died.",
                |w| w.supervisor.lost_runs_recorded,
            ),
            (
                "distcron_lost_runs_rerun",
                MetricType::Counter,
                "Lost runs started again (onLost: rerun).",
                |w| w.supervisor.lost_runs_rerun,
            ),
            (
                "distcron_runs_killed",
                MetricType::Counter,
                "Runs ended by a kill request.",
                |w| w.kills.runs_killed,
            ),
        ];
        for (name, kind, help, value) in per_worker {
            let samples = workers.iter().map(|w| (worker(w), value(w)));
            match kind {
                MetricType::Counter => counters(e, name, help, samples)?,
                _ => gauges(e, name, help, samples)?,
            }
        }
        counters(
            e,
            "distcron_http_requests",
            "HTTP requests served by this manager, by route and status.",
            self.requests.iter().map(|((route, status), n)| {
                (
                    vec![("route", route.clone()), ("status", status.to_string())],
                    *n,
                )
            }),
        )?;
        counters(
            e,
            "distcron_notifications",
            "Notification deliveries by outcome (one per target), and events another process had already claimed (duplicate) or that could not be claimed (dropped), by sending process.",
            self.senders.iter().flat_map(|(sender, c)| {
                [
                    ("delivered", c.delivered),
                    ("failed", c.failed),
                    ("throttled", c.throttled),
                    ("duplicate", c.duplicates),
                    ("dropped", c.dropped),
                ]
                .map(|(outcome, n)| {
                    (
                        vec![("sender", sender.clone()), ("outcome", outcome.into())],
                        n,
                    )
                })
            }),
        )?;
        type Count = fn(&NotifyCounters) -> u64;
        let per_sender: [(&str, &str, Count); 2] = [
            (
                "distcron_notification_attempts",
                "Delivery attempts (retries included).",
                |c| c.attempts,
            ),
            (
                "distcron_notification_summaries",
                "Throttle summaries sent.",
                |c| c.summaries,
            ),
        ];
        for (name, help, count) in per_sender {
            let samples = self
                .senders
                .iter()
                .map(|(sender, c)| (vec![("sender", sender.clone())], count(c)));
            counters(e, name, help, samples)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped_and_the_text_ends_with_eof() {
        let figures = Figures {
            workers: Vec::new(),
            requests: vec![(("/job/\"x\"\\\nend".into(), 200), 3)],
            senders: Vec::new(),
        };
        let text = figures.render().unwrap();
        assert!(
            text.contains(
                "distcron_http_requests_total{route=\"/job/\\\"x\\\"\\\\\\nend\",status=\"200\"} 3"
            ),
            "{text}"
        );
        assert!(
            text.contains("# TYPE distcron_http_requests counter"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
