//! The audit log: one record per mutating request and per refused one
//! (401/403), with who, what, which job, from where, the outcome and what a
//! save changed.
//!
//! Records are stored beside the run log (a MongoDB collection `audit`, a
//! table of the embedded run log) through an [`AuditWriter`] that keeps them
//! in memory while the store is down and writes them when it is back, so a
//! store outage loses none. Env values never reach the log in clear: a
//! changed value is recorded as a hash.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::mpsc;

use crate::runlog::Result;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditRecord {
    /// Unique per record; inserting is idempotent on it.
    pub id: String,
    /// Epoch ms.
    pub time: i64,
    /// `token:<id>`, `user:<name>`, `config:adminToken`, or empty when the
    /// request carried no valid credentials.
    pub actor_id: String,
    pub actor_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor_role: Option<crate::auth::Role>,
    /// `job.save`, `auth.login_failed`, `request.refused`...
    pub action: String,
    pub method: String,
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    /// The client address (a forwarded one only from a trusted proxy).
    pub source: String,
    /// The HTTP status answered.
    pub status: u16,
    /// `ok`, `refused` (401/403) or `failed` (any other error).
    pub outcome: String,
    /// Why a request was refused or failed.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// For a save: field -> `{"from", "to"}`; env values hashed.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub changes: BTreeMap<String, Value>,
}

/// A page of the audit log, newest first. Every filter is optional.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditQuery {
    pub since: Option<i64>,
    pub until: Option<i64>,
    pub actor: Option<String>,
    pub job: Option<String>,
    pub action: Option<String>,
    pub skip: u64,
    pub limit: u64,
}

impl AuditQuery {
    pub fn matches(&self, r: &AuditRecord) -> bool {
        self.since.is_none_or(|t| r.time >= t)
            && self.until.is_none_or(|t| r.time < t)
            && self.actor.as_ref().is_none_or(|a| *a == r.actor_id)
            && self.job.as_ref().is_none_or(|j| Some(j) == r.job.as_ref())
            && self.action.as_ref().is_none_or(|a| *a == r.action)
    }
}

/// Where audit records are kept: implemented by both run log engines.
#[async_trait]
pub trait AuditStore: Send + Sync + 'static {
    /// Store records; one whose id is already stored is skipped.
    async fn insert_audit(&self, records: &[AuditRecord]) -> Result<()>;
    /// Newest first, filtered and paged.
    async fn audit_page(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>>;
}

/// The fields a save changed, `previous` (none for a new job) against
/// `next`, both as job JSON. Env values appear only as hashes.
pub fn job_changes(previous: Option<&Value>, next: &Value) -> BTreeMap<String, Value> {
    let empty = serde_json::Map::new();
    let before = previous.and_then(Value::as_object).unwrap_or(&empty);
    let after = next.as_object().unwrap_or(&empty);
    let mut keys: Vec<&String> = before.keys().chain(after.keys()).collect();
    keys.sort();
    keys.dedup();
    let mut changes = BTreeMap::new();
    for key in keys {
        let (from, to) = (before.get(key), after.get(key));
        // The save stamp changes at every save; it is not a change.
        if from == to || key == "updatedAt" {
            continue;
        }
        let shown = |v: Option<&Value>| match (key.as_str(), v) {
            (_, None) => Value::Null,
            ("env", Some(env)) => hash_env(env),
            (_, Some(v)) => v.clone(),
        };
        changes.insert(
            key.clone(),
            serde_json::json!({"from": shown(from), "to": shown(to)}),
        );
    }
    changes
}

/// `{"K": "sha256:<first 16 hex>"}`: enough to see that a value changed
/// and to compare two records, never the value itself.
fn hash_env(env: &Value) -> Value {
    let Some(map) = env.as_object() else {
        return Value::Null;
    };
    map.iter()
        .map(|(k, v)| {
            let text = v
                .as_str()
                .map(String::from)
                .unwrap_or_else(|| v.to_string());
            let hash = crate::auth::sha256_hex(text.as_bytes());
            (k.clone(), Value::String(format!("sha256:{}", &hash[..16])))
        })
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// Records waiting for the store, at most: past this the oldest are dropped
/// (and counted), so an endless outage cannot exhaust memory.
const MAX_PENDING: usize = 100_000;
const BATCH: usize = 500;
const RETRY_FIRST: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// Sends audit records to the store in the background. Cloning shares the
/// one writer task; the task ends when every clone is dropped, after
/// writing what it holds (for up to [`RETRY_MAX`] more).
#[derive(Clone)]
pub struct AuditWriter {
    tx: mpsc::UnboundedSender<AuditRecord>,
    stats: Arc<AuditStats>,
}

#[derive(Default, Debug)]
pub struct AuditStats {
    pub written: std::sync::atomic::AtomicU64,
    pub dropped: std::sync::atomic::AtomicU64,
    pub pending: std::sync::atomic::AtomicU64,
}

impl AuditWriter {
    /// Must be called inside a tokio runtime.
    pub fn start(store: Arc<dyn AuditStore>) -> AuditWriter {
        let (tx, rx) = mpsc::unbounded_channel();
        let stats = Arc::new(AuditStats::default());
        tokio::spawn(write_loop(store, rx, stats.clone()));
        AuditWriter { tx, stats }
    }

    pub fn record(&self, record: AuditRecord) {
        use std::sync::atomic::Ordering;
        self.stats.pending.fetch_add(1, Ordering::Relaxed);
        if self.tx.send(record).is_err() {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn stats(&self) -> &AuditStats {
        &self.stats
    }
}

async fn write_loop(
    store: Arc<dyn AuditStore>,
    mut rx: mpsc::UnboundedReceiver<AuditRecord>,
    stats: Arc<AuditStats>,
) {
    use std::sync::atomic::Ordering;
    let mut pending: VecDeque<AuditRecord> = VecDeque::new();
    let mut retry = RETRY_FIRST;
    let mut open = true;
    while open || !pending.is_empty() {
        if pending.is_empty() {
            match rx.recv().await {
                Some(r) => pending.push_back(r),
                None => break,
            }
        }
        while let Ok(r) = rx.try_recv() {
            pending.push_back(r);
        }
        while pending.len() > MAX_PENDING {
            pending.pop_front();
            stats.dropped.fetch_add(1, Ordering::Relaxed);
            stats.pending.fetch_sub(1, Ordering::Relaxed);
        }
        let n = pending.len().min(BATCH);
        let batch: Vec<AuditRecord> = pending.iter().take(n).cloned().collect();
        match store.insert_audit(&batch).await {
            Ok(()) => {
                pending.drain(..n);
                stats.written.fetch_add(n as u64, Ordering::Relaxed);
                stats.pending.fetch_sub(n as u64, Ordering::Relaxed);
                retry = RETRY_FIRST;
            }
            Err(error) => {
                tracing::warn!(%error, pending = pending.len(), "audit log unavailable; will retry");
                // Keep taking new records while waiting, so senders never block.
                let wait = tokio::time::sleep(retry);
                tokio::pin!(wait);
                loop {
                    tokio::select! {
                        _ = &mut wait => break,
                        r = rx.recv(), if open => match r {
                            Some(r) => pending.push_back(r),
                            None => open = false,
                        },
                    }
                }
                if !open && retry >= RETRY_MAX {
                    let lost = pending.len() as u64;
                    tracing::error!(lost, "audit records not written before shutdown");
                    stats.dropped.fetch_add(lost, Ordering::Relaxed);
                    return;
                }
                retry = (retry * 2).min(RETRY_MAX);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn changes_name_fields_and_hash_env_values() {
        let before = json!({"name": "a", "command": "echo 1", "env": {"TOKEN": "hunter2"}});
        let after = json!({"name": "a", "command": "echo 2", "env": {"TOKEN": "swordfish"}});
        let changes = job_changes(Some(&before), &after);
        assert_eq!(changes.keys().collect::<Vec<_>>(), ["command", "env"]);
        assert_eq!(
            changes["command"],
            json!({"from": "echo 1", "to": "echo 2"})
        );
        let text = serde_json::to_string(&changes).unwrap();
        assert!(
            !text.contains("hunter2") && !text.contains("swordfish"),
            "{text}"
        );
        assert!(text.contains("sha256:"));

        let created = job_changes(None, &json!({"name": "a"}));
        assert_eq!(created["name"], json!({"from": null, "to": "a"}));
    }

    #[test]
    fn query_filters() {
        let r = AuditRecord {
            id: "1".into(),
            time: 100,
            actor_id: "token:ab".into(),
            actor_name: "ci".into(),
            actor_role: None,
            action: "job.save".into(),
            method: "POST".into(),
            path: "/job/save".into(),
            job: Some("backup".into()),
            source: "127.0.0.1".into(),
            status: 200,
            outcome: "ok".into(),
            reason: String::new(),
            changes: BTreeMap::new(),
        };
        let q = |f: fn(&mut AuditQuery)| {
            let mut q = AuditQuery::default();
            f(&mut q);
            q.matches(&r)
        };
        assert!(q(|_| {}));
        assert!(q(|q| q.since = Some(100)) && !q(|q| q.since = Some(101)));
        assert!(q(|q| q.until = Some(101)) && !q(|q| q.until = Some(100)));
        assert!(!q(|q| q.actor = Some("token:cd".into())));
        assert!(q(|q| q.job = Some("backup".into())) && !q(|q| q.job = Some("x".into())));
        assert!(!q(|q| q.action = Some("job.delete".into())));
    }
}
