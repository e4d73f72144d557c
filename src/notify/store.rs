//! Notices: one stored document per (run, event), claimed by the first
//! process that sees the event (an insert keyed by its id, which every
//! store keeps unique), then updated with each target's outcome. A second
//! process seeing the same event finds the notice taken and sends nothing,
//! so a notification goes out at most once across the cluster; the notice
//! is also what the API and the console show of a run's notifications.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::runlog::Result;

/// One target's delivery of a notice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    pub target: String,
    pub outcome: Outcome,
    pub attempts: u32,
    /// The last error, when an attempt failed.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub error: String,
    /// When the outcome was settled (epoch ms); 0 while pending.
    #[serde(default)]
    pub at: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Claimed; being delivered (or its process died before it could tell).
    Pending,
    Delivered,
    /// Every attempt failed, or the receiver refused it for good.
    Failed,
    /// Held back by the job's throttle (told in the window's summary).
    Throttled,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Pending => "pending",
            Outcome::Delivered => "delivered",
            Outcome::Failed => "failed",
            Outcome::Throttled => "throttled",
        }
    }
}

/// The notifications of one (run, event), or of one throttle summary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Notice {
    /// `<run id>/<event>`, or `<job>/throttled/<window start>`.
    pub id: String,
    /// The run it is about; for a summary, `<job>/throttled/<window start>`.
    pub run_id: String,
    pub job_name: String,
    pub event: String,
    /// When it was claimed (epoch ms).
    pub at: i64,
    /// The process that claimed and sent it.
    pub sender: String,
    pub deliveries: Vec<Delivery>,
}

impl Notice {
    pub fn id_for(run_id: &str, event: &str) -> String {
        format!("{run_id}/{event}")
    }

    /// The notice of `event` of a run, with every target pending.
    pub fn claimed(
        run_id: &str,
        job_name: &str,
        event: &str,
        targets: &[String],
        sender: &str,
        now_ms: i64,
    ) -> Notice {
        let id = Notice::id_for(run_id, event);
        Notice::pending(&id, run_id, job_name, event, targets, sender, now_ms)
    }

    /// A notice under `id`, with every target pending.
    pub fn pending(
        id: &str,
        run_id: &str,
        job_name: &str,
        event: &str,
        targets: &[String],
        sender: &str,
        now_ms: i64,
    ) -> Notice {
        Notice {
            id: id.to_string(),
            run_id: run_id.to_string(),
            job_name: job_name.to_string(),
            event: event.to_string(),
            at: now_ms,
            sender: sender.to_string(),
            deliveries: targets
                .iter()
                .map(|target| Delivery {
                    target: target.clone(),
                    outcome: Outcome::Pending,
                    attempts: 0,
                    error: String::new(),
                    at: 0,
                })
                .collect(),
        }
    }
}

/// Where notices and throttle counters are kept: beside the runs, in the
/// run log's store, so they are shared by the whole cluster.
#[async_trait]
pub trait NoticeStore: Send + Sync {
    /// Store `notice` unless a notice with its id exists; `true` when this
    /// call stored it (the caller then sends it).
    async fn claim_notice(&self, notice: &Notice) -> Result<bool>;

    /// Replace the stored notice of the same id (with its outcomes).
    async fn update_notice(&self, notice: &Notice) -> Result<()>;

    /// The notices of one run, oldest first.
    async fn notices_of(&self, run_id: &str) -> Result<Vec<Notice>>;

    /// Add `by` to the counter `id` (created at 0, kept until `expires_ms`)
    /// and return its new value, atomically across processes.
    async fn bump_counter(&self, id: &str, by: u64, expires_ms: i64) -> Result<u64>;
}
