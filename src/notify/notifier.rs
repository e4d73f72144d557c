//! The Notifier actor: every process that writes run records (a worker's
//! log batcher, a manager's sweep, standalone) has one and tells it of the
//! records the run log has acknowledged. For each record whose job has
//! rules for its event, it claims the (run, event) notice in the store,
//! applies the job's throttle, delivers to each target with retries and
//! stores the outcomes. Deliveries run as futures of the actor, so they
//! end with it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use serde::{Deserialize, Serialize};

use super::send::{self, SendError};
use super::store::{Delivery, Notice, Outcome};
use super::{
    Event, Message, NotifyConfig, ThrottleDecision, all_targets, is_recovery, message_for,
    retry_delay, summary_for, targets_for, test_message, throttle_decision, throttle_window,
};
use crate::clock::SharedClock;
use crate::coord::Coordinator;
use crate::job::Job;
use crate::runlog::{RunLog, RunQuery, RunRecord, RunStatus};

/// Most notices being worked on at once; past it new events are dropped
/// (and counted), so a flood cannot grow memory without bound.
pub const MAX_IN_FLIGHT: usize = 1000;

/// Attempts to claim a notice while the store is out.
const CLAIM_ATTEMPTS: u32 = 4;

/// A job's definition by name, as this process knows it.
pub type JobsSeen = Arc<dyn Fn(&str) -> Option<Job> + Send + Sync>;

/// Job definitions a worker has seen (its supervisor adds each job it
/// owns), for its notifier; other jobs are read from the coordinator.
#[derive(Clone, Default)]
pub struct KnownJobs(Arc<std::sync::RwLock<HashMap<String, Job>>>);

impl KnownJobs {
    pub fn remember(&self, job: &Job) {
        let mut jobs = self.0.write().unwrap_or_else(|e| e.into_inner());
        if jobs.get(&job.name) != Some(job) {
            jobs.insert(job.name.clone(), job.clone());
        }
    }

    pub fn forget(&self, name: &str) {
        self.0
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
    }

    pub fn lookup(&self) -> JobsSeen {
        let jobs = self.clone();
        Arc::new(move |name| {
            jobs.0
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .get(name)
                .cloned()
        })
    }
}

/// What `/metrics` shows of a notifier.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct NotifyCounters {
    pub delivered: u64,
    pub failed: u64,
    pub throttled: u64,
    /// Events another process had already claimed.
    pub duplicates: u64,
    pub attempts: u64,
    pub summaries: u64,
    /// Events dropped: the store could not be reached to claim them, or
    /// too many were in flight.
    pub dropped: u64,
}

/// Records the run log acknowledged.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Observed(pub Vec<RunRecord>);

/// Send a test notification to one target now; answers with its outcome
/// (a target this process does not define is a failed delivery).
#[derive(Message)]
#[rtype(result = "Delivery")]
pub struct SendTest {
    pub target: String,
    pub asked_by: String,
}

#[derive(Message)]
#[rtype(result = "NotifyCounters")]
pub struct GetNotifyCounters;

/// What the notifier's futures share.
struct Work {
    config: Arc<NotifyConfig>,
    store: Arc<dyn RunLog>,
    coord: Option<Arc<dyn Coordinator>>,
    jobs: JobsSeen,
    clock: SharedClock,
    /// Who sends (a worker id, `manager@<listen>`), stored in each notice.
    sender: String,
    counters: Mutex<NotifyCounters>,
}

pub struct Notifier {
    work: Arc<Work>,
    in_flight: Arc<()>,
}

impl Notifier {
    pub fn new(
        config: NotifyConfig,
        store: Arc<dyn RunLog>,
        coord: Option<Arc<dyn Coordinator>>,
        jobs: JobsSeen,
        clock: SharedClock,
        sender: &str,
    ) -> Notifier {
        // awc's rustls connector asks for the process's crypto provider.
        let _ = rustls::crypto::ring::default_provider().install_default();
        Notifier {
            work: Arc::new(Work {
                config: Arc::new(config),
                store,
                coord,
                jobs,
                clock,
                sender: sender.to_string(),
                counters: Mutex::new(NotifyCounters::default()),
            }),
            in_flight: Arc::new(()),
        }
    }

    /// Whether any record could raise a notification at all: with no
    /// targets defined, no job can name one.
    fn idle(&self) -> bool {
        self.work.config.targets.is_empty()
    }
}

impl Actor for Notifier {
    type Context = Context<Self>;
}

impl Handler<Observed> for Notifier {
    type Result = ();

    fn handle(&mut self, Observed(records): Observed, ctx: &mut Context<Self>) {
        if self.idle() {
            return;
        }
        for record in records {
            let Some(event) = Event::of_status(record.status) else {
                continue;
            };
            // One token per record in flight; the count of live tokens
            // bounds the work.
            if Arc::strong_count(&self.in_flight) > MAX_IN_FLIGHT {
                self.work.count(|c| c.dropped += 1);
                continue;
            }
            let token = self.in_flight.clone();
            let work = self.work.clone();
            ctx.spawn(
                async move {
                    work.on_record(record, event).await;
                    drop(token);
                }
                .into_actor(self),
            );
        }
    }
}

impl Handler<SendTest> for Notifier {
    type Result = ResponseActFuture<Self, Delivery>;

    fn handle(&mut self, request: SendTest, _: &mut Context<Self>) -> Self::Result {
        let work = self.work.clone();
        Box::pin(
            async move {
                let now = work.clock.now_ms();
                let message = test_message(&request.target, &request.asked_by, now);
                let id = format!("test/{}/{now}", request.target);
                work.deliver(&request.target, &message, &id).await
            }
            .into_actor(self),
        )
    }
}

/// How long a stopping notifier lets deliveries in flight finish.
pub const STOP_GRACE: Duration = Duration::from_secs(10);

impl Handler<crate::actors::messages::Shutdown> for Notifier {
    type Result = ();

    fn handle(&mut self, _: crate::actors::messages::Shutdown, ctx: &mut Context<Self>) {
        let deadline = std::time::Instant::now() + STOP_GRACE;
        ctx.run_interval(Duration::from_millis(50), move |act, ctx| {
            let idle = Arc::strong_count(&act.in_flight) == 1;
            if idle || std::time::Instant::now() >= deadline {
                if !idle {
                    tracing::warn!("notifications still in flight at stop; dropped");
                }
                ctx.stop();
            }
        });
    }
}

impl Handler<GetNotifyCounters> for Notifier {
    type Result = MessageResult<GetNotifyCounters>;

    fn handle(&mut self, _: GetNotifyCounters, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.work.snapshot())
    }
}

impl Work {
    fn count(&self, change: impl FnOnce(&mut NotifyCounters)) {
        change(&mut self.counters.lock().unwrap_or_else(|e| e.into_inner()));
    }

    fn snapshot(&self) -> NotifyCounters {
        self.counters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    async fn job(&self, name: &str) -> Option<Job> {
        if let Some(job) = (self.jobs)(name) {
            return Some(job);
        }
        let coord = self.coord.as_ref()?;
        let kv = coord
            .get(&crate::keyspace::job_key(name))
            .await
            .ok()
            .flatten()?;
        serde_json::from_slice(&kv.value).ok()
    }

    async fn on_record(&self, record: RunRecord, event: Event) {
        let Some(job) = self.job(&record.job_name).await else {
            return;
        };
        let rules = self.config.rules_for(&job);
        if rules.is_empty() {
            return;
        }
        let targets = targets_for(rules, event);
        if !targets.is_empty() {
            self.notify(&job, &record, event, targets).await;
        }
        if event == Event::Succeeded {
            let targets = targets_for(rules, Event::Recovered);
            if !targets.is_empty() && self.follows_a_failure(&record).await {
                self.notify(&job, &record, Event::Recovered, targets).await;
            }
        }
    }

    /// Whether the run before `record` (of the same job) did not succeed.
    async fn follows_a_failure(&self, record: &RunRecord) -> bool {
        let query = RunQuery {
            job_name: record.job_name.clone(),
            status: None,
            skip: 0,
            limit: 20,
        };
        let Ok(runs) = self.store.page(&query).await else {
            return false;
        };
        runs.iter()
            .filter(|r| r.run_id != record.run_id && r.start_time <= record.start_time)
            .find(|r| r.status.is_final() && r.status != RunStatus::Skipped)
            .is_some_and(|previous| is_recovery(previous.status))
    }

    /// Claim the (run, event) notice; `false` when another process has it
    /// or the store cannot be reached.
    async fn claim(&self, notice: &Notice) -> bool {
        for attempt in 1..=CLAIM_ATTEMPTS {
            match self.store.claim_notice(notice).await {
                Ok(true) => return true,
                Ok(false) => {
                    self.count(|c| c.duplicates += 1);
                    return false;
                }
                Err(error) if attempt == CLAIM_ATTEMPTS => {
                    tracing::warn!(notice = %notice.id, %error, "cannot claim a notification; dropped");
                }
                Err(_) => tokio::time::sleep(Duration::from_secs(1 << attempt)).await,
            }
        }
        self.count(|c| c.dropped += 1);
        false
    }

    async fn notify(&self, job: &Job, record: &RunRecord, event: Event, targets: Vec<String>) {
        let now = self.clock.now_ms();
        let mut notice = Notice::claimed(
            &record.run_id,
            &record.job_name,
            event.as_str(),
            &targets,
            &self.sender,
            now,
        );
        if !self.claim(&notice).await {
            return;
        }
        if let Some(throttle) = self.config.throttle_for(job) {
            let window = throttle_window(&throttle, now);
            let counter = format!("throttle/{}/{}", job.name, window.0);
            // An unreachable counter lets the notification through.
            let count = self
                .store
                .bump_counter(&counter, 1, window.1 + 86_400_000)
                .await
                .unwrap_or(1);
            let decision = throttle_decision(count, throttle.max);
            if decision != ThrottleDecision::Send {
                for delivery in &mut notice.deliveries {
                    delivery.outcome = Outcome::Throttled;
                    delivery.at = now;
                }
                self.count(|c| c.throttled += notice.deliveries.len() as u64);
                self.store_outcome(&notice).await;
                if decision == ThrottleDecision::HoldAndSummarize {
                    self.summarize_at_end(job, throttle.max, window, &counter)
                        .await;
                }
                return;
            }
        }
        let message = message_for(record, event, &self.config.console_url, now);
        self.deliver_notice(&mut notice, &message).await;
    }

    /// Deliver to every target of `notice` (concurrently) and store the
    /// outcomes.
    async fn deliver_notice(&self, notice: &mut Notice, message: &Message) {
        let targets: Vec<String> = notice.deliveries.iter().map(|d| d.target.clone()).collect();
        let deliveries = targets.iter().map(|target| {
            let id = format!("{}/{}", notice.id, target);
            async move { self.deliver(target, message, &id).await }
        });
        notice.deliveries = futures_util::future::join_all(deliveries).await;
        self.store_outcome(notice).await;
    }

    async fn store_outcome(&self, notice: &Notice) {
        for attempt in 1..=CLAIM_ATTEMPTS {
            match self.store.update_notice(notice).await {
                Ok(()) => return,
                Err(error) if attempt == CLAIM_ATTEMPTS => {
                    tracing::warn!(notice = %notice.id, %error, "cannot store a notification's outcome");
                }
                Err(_) => tokio::time::sleep(Duration::from_secs(1 << attempt)).await,
            }
        }
    }

    /// One target, with retries; the outcome as a [`Delivery`].
    async fn deliver(&self, target_name: &str, message: &Message, delivery_id: &str) -> Delivery {
        let mut delivery = Delivery {
            target: target_name.to_string(),
            outcome: Outcome::Failed,
            attempts: 0,
            error: String::new(),
            at: 0,
        };
        let Some(target) = self.config.targets.get(target_name) else {
            delivery.error =
                format!("no target named '{target_name}' in this process's configuration");
            delivery.at = self.clock.now_ms();
            self.count(|c| c.failed += 1);
            return delivery;
        };
        for attempt in 1..=super::MAX_ATTEMPTS {
            if let Some(delay) = retry_delay(attempt) {
                tokio::time::sleep(delay).await;
            }
            delivery.attempts = attempt;
            self.count(|c| c.attempts += 1);
            match send::send(target, message, delivery_id).await {
                Ok(()) => {
                    delivery.outcome = Outcome::Delivered;
                    delivery.error.clear();
                    break;
                }
                Err(SendError { message, permanent }) => {
                    delivery.error = message;
                    if permanent {
                        break;
                    }
                }
            }
        }
        delivery.at = self.clock.now_ms();
        match delivery.outcome {
            Outcome::Delivered => self.count(|c| c.delivered += 1),
            _ => {
                tracing::warn!(target = %target_name, delivery = %delivery_id, error = %delivery.error, attempts = delivery.attempts, "notification not delivered");
                self.count(|c| c.failed += 1);
            }
        }
        delivery
    }

    /// When the throttle window ends, tell every target of the job how
    /// many notifications it held back.
    async fn summarize_at_end(&self, job: &Job, max: u32, window: (i64, i64), counter: &str) {
        // A little past the end, so bumps in flight at the end are counted.
        let wait = (window.1 + 1000 - self.clock.now_ms()).max(0) as u64;
        tokio::time::sleep(Duration::from_millis(wait)).await;
        let Ok(count) = self
            .store
            .bump_counter(counter, 0, window.1 + 86_400_000)
            .await
        else {
            return;
        };
        let held_back = count.saturating_sub(u64::from(max));
        let now = self.clock.now_ms();
        let id = format!("{}/throttled/{}", job.name, window.0);
        let rules = self.config.rules_for(job);
        let mut notice = Notice::pending(
            &id,
            &id,
            &job.name,
            "throttled",
            &all_targets(rules),
            &self.sender,
            now,
        );
        if !self.claim(&notice).await {
            return;
        }
        self.count(|c| c.summaries += 1);
        let message = summary_for(&job.name, held_back, window, now);
        self.deliver_notice(&mut notice, &message).await;
    }
}
