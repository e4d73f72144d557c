//! The MongoDB engine of the run log.
//!
//! Uses only what any real MongoDB does identically: insert, find with
//! sort/skip/limit, count, delete, distinct and index creation. Indexes are
//! created at start and never referred to by name. Idempotent inserts rely
//! on the unique `run_id` index: an unordered `insert_many` stores every new
//! record and reports the duplicates as duplicate-key write errors, which are
//! expected and ignored.

use std::time::Duration;

use async_trait::async_trait;
use futures_util::TryStreamExt;
use mongodb::bson::{Document, doc};
use mongodb::error::ErrorKind;
use mongodb::options::{ClientOptions, IndexOptions};
use mongodb::{Client, Collection, IndexModel};
use serde::Serialize;

use super::{Result, Retention, RunLog, RunLogError, RunQuery, RunRecord, RunStatus};
use crate::audit::{AuditQuery, AuditRecord, AuditStore};

/// The audit log's collection, in the run log's database.
pub const AUDIT_COLLECTION: &str = "audit";

/// MongoDB's duplicate-key error code.
const DUPLICATE_KEY: i32 = 11000;

#[derive(Debug, Clone)]
pub struct MongoOptions {
    pub uri: String,
    pub database: String,
    pub collection: String,
    /// How long an operation waits for a reachable server before failing
    /// (the driver's default of 30 s would stall the batcher's retries).
    pub server_selection_timeout: Duration,
}

impl MongoOptions {
    pub fn new(uri: &str) -> MongoOptions {
        MongoOptions {
            uri: uri.to_string(),
            database: "distcron".into(),
            collection: "runs".into(),
            server_selection_timeout: Duration::from_secs(3),
        }
    }
}

#[derive(Clone)]
pub struct MongoRunLog {
    runs: Collection<RunRecord>,
    /// The audit log, a collection beside the runs (`audit`).
    audit: Collection<StoredAudit>,
    /// Set once the indexes exist; inserts wait for them, because the
    /// unique `run_id` index is what makes inserts idempotent.
    indexes_ready: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

fn unavailable(e: mongodb::error::Error) -> RunLogError {
    RunLogError::Unavailable(e.to_string())
}

impl MongoRunLog {
    /// Connect and create the indexes. If the server is unreachable the
    /// log is still returned: the indexes are created before the first
    /// insert that reaches it, and until then inserts fail (the log batcher
    /// spools them).
    pub async fn connect(options: &MongoOptions) -> Result<MongoRunLog> {
        let mut client_options = ClientOptions::parse(&options.uri)
            .await
            .map_err(|e| RunLogError::Unavailable(format!("mongodbUri: {e}")))?;
        client_options.server_selection_timeout = Some(options.server_selection_timeout);
        client_options.connect_timeout = Some(options.server_selection_timeout);
        client_options.app_name = Some("distcron".into());
        let client = Client::with_options(client_options).map_err(unavailable)?;
        let database = client.database(&options.database);
        let runs = database.collection::<RunRecord>(&options.collection);
        let audit = database.collection::<StoredAudit>(AUDIT_COLLECTION);
        let log = MongoRunLog {
            runs,
            audit,
            indexes_ready: Default::default(),
        };
        if let Err(error) = log.ensure_indexes().await {
            tracing::warn!(%error, "run log unreachable at start; indexes will be created on first use");
        }
        Ok(log)
    }

    async fn ensure_indexes(&self) -> Result<()> {
        use std::sync::atomic::Ordering;
        if self.indexes_ready.load(Ordering::Acquire) {
            return Ok(());
        }
        let indexes = [
            IndexModel::builder()
                .keys(doc! { "run_id": 1 })
                .options(IndexOptions::builder().unique(true).build())
                .build(),
            // Serves `page` (filter and sort) on a real mongod.
            IndexModel::builder()
                .keys(doc! { "jobName": 1, "startTime": -1, "run_id": -1 })
                .build(),
            // A prefix of the one above, so redundant on a real mongod; the
            // MongoDB-wire test server only plans single-field equality
            // through an index, and scans every run without it.
            IndexModel::builder().keys(doc! { "jobName": 1 }).build(),
            IndexModel::builder().keys(doc! { "startTime": -1 }).build(),
        ];
        self.runs
            .create_indexes(indexes)
            .await
            .map_err(unavailable)?;
        // Uniqueness comes from `_id` (the record's id), not an index.
        let audit_indexes = [
            IndexModel::builder().keys(doc! { "time": -1 }).build(),
            IndexModel::builder().keys(doc! { "actorId": 1 }).build(),
            IndexModel::builder().keys(doc! { "job": 1 }).build(),
            IndexModel::builder().keys(doc! { "action": 1 }).build(),
        ];
        self.audit
            .create_indexes(audit_indexes)
            .await
            .map_err(unavailable)?;
        self.indexes_ready.store(true, Ordering::Release);
        Ok(())
    }
}

fn filter(job_name: Option<&str>, status: Option<RunStatus>) -> Document {
    let mut filter = Document::new();
    if let Some(job) = job_name {
        filter.insert("jobName", job);
    }
    if let Some(status) = status {
        filter.insert("status", status.as_str());
    }
    filter
}

/// Newest first; `run_id` breaks ties so paging is stable.
fn newest_first() -> Document {
    doc! { "startTime": -1, "run_id": -1 }
}

/// Insert what is new: an unordered `insert_many` stores every record whose
/// unique key is free and reports the others as duplicate-key errors, which
/// are expected. Returns how many were new, and the batch positions of the
/// records already stored.
async fn insert_new<T: Serialize + Send + Sync>(
    collection: &Collection<T>,
    records: &[T],
) -> Result<(u64, Vec<usize>)> {
    match collection.insert_many(records).ordered(false).await {
        Ok(result) => Ok((result.inserted_ids.len() as u64, Vec::new())),
        Err(e) => match e.kind.as_ref() {
            ErrorKind::InsertMany(failure)
                if failure.write_concern_error.is_none()
                    && failure
                        .write_errors
                        .iter()
                        .flatten()
                        .all(|w| w.code == DUPLICATE_KEY) =>
            {
                let stored: Vec<usize> = failure
                    .write_errors
                    .iter()
                    .flatten()
                    .map(|w| w.index)
                    .collect();
                Ok(((records.len() - stored.len()) as u64, stored))
            }
            _ => Err(unavailable(e)),
        },
    }
}

/// An audit record as stored: its id is also the document's `_id`, which
/// every MongoDB keeps unique, so a retried insert adds nothing. (A unique
/// index on a field named `id` would do the same on mongod, but the
/// MongoDB-wire test server ignores an index on that name.)
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
struct StoredAudit {
    /// The record's id; any value in documents written before (an ObjectId).
    #[serde(rename = "_id")]
    key: mongodb::bson::Bson,
    #[serde(flatten)]
    record: AuditRecord,
}

impl From<AuditRecord> for StoredAudit {
    fn from(record: AuditRecord) -> StoredAudit {
        StoredAudit {
            key: mongodb::bson::Bson::String(record.id.clone()),
            record,
        }
    }
}

/// One page of a collection: `filter`, in `sort` order, after `skip`, at most `limit`.
async fn find_page<T>(
    collection: &mongodb::Collection<T>,
    filter: Document,
    sort: Document,
    skip: u64,
    limit: u64,
) -> Result<Vec<T>>
where
    T: serde::de::DeserializeOwned + Send + Sync,
{
    collection
        .find(filter)
        .sort(sort)
        .skip(skip)
        .limit(as_i64(limit))
        .await
        .map_err(unavailable)?
        .try_collect()
        .await
        .map_err(unavailable)
}

fn as_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[async_trait]
impl RunLog for MongoRunLog {
    async fn insert_batch(&self, records: &[RunRecord]) -> Result<u64> {
        if records.is_empty() {
            return Ok(0);
        }
        self.ensure_indexes().await?;
        let (mut stored, already) = insert_new(&self.runs, records).await?;
        // A real result replaces a peer's `lost` guess, and nothing else:
        // the filter on the stored status makes the replace a no-op when
        // the stored record is already a real one.
        for record in already.into_iter().filter_map(|i| records.get(i)) {
            if !super::supersedes(record.status, RunStatus::Lost) {
                continue;
            }
            let filter = doc! { "run_id": &record.run_id, "status": RunStatus::Lost.as_str() };
            let replaced = self
                .runs
                .replace_one(filter, record)
                .await
                .map_err(unavailable)?;
            stored += replaced.modified_count;
        }
        Ok(stored)
    }

    async fn page(&self, query: &RunQuery) -> Result<Vec<RunRecord>> {
        let filter = filter(Some(&query.job_name), query.status);
        find_page(&self.runs, filter, newest_first(), query.skip, query.limit).await
    }

    async fn get(&self, run_id: &str) -> Result<Option<RunRecord>> {
        self.runs
            .find_one(doc! { "run_id": run_id })
            .await
            .map_err(unavailable)
    }

    async fn recent(&self, limit: u64) -> Result<Vec<RunRecord>> {
        self.runs
            .find(Document::new())
            .sort(newest_first())
            .limit(as_i64(limit))
            .await
            .map_err(unavailable)?
            .try_collect()
            .await
            .map_err(unavailable)
    }

    async fn count(&self, job_name: Option<&str>, status: Option<RunStatus>) -> Result<u64> {
        self.runs
            .count_documents(filter(job_name, status))
            .await
            .map_err(unavailable)
    }

    async fn count_since(&self, since_ms: i64, statuses: &[RunStatus]) -> Result<u64> {
        let mut filter = doc! { "startTime": { "$gte": since_ms } };
        if !statuses.is_empty() {
            let names: Vec<&str> = statuses.iter().map(|s| s.as_str()).collect();
            filter.insert("status", doc! { "$in": names });
        }
        self.runs.count_documents(filter).await.map_err(unavailable)
    }

    async fn ping(&self) -> Result<()> {
        self.runs
            .client()
            .database("admin")
            .run_command(doc! { "ping": 1 })
            .await
            .map(drop)
            .map_err(unavailable)
    }

    async fn apply_retention(&self, retention: Retention, now_ms: i64) -> Result<u64> {
        let mut removed = 0;
        if let Some(cutoff) = retention.cutoff_ms(now_ms) {
            removed += self
                .runs
                .delete_many(doc! { "startTime": { "$lt": cutoff } })
                .await
                .map_err(unavailable)?
                .deleted_count;
        }
        if retention.max_runs_per_job > 0 {
            let jobs = self
                .runs
                .distinct("jobName", Document::new())
                .await
                .map_err(unavailable)?;
            for job in jobs.iter().filter_map(|j| j.as_str()) {
                // The oldest run that may stay; everything older goes.
                let boundary = self
                    .runs
                    .find(doc! { "jobName": job })
                    .sort(newest_first())
                    .skip(retention.max_runs_per_job - 1)
                    .limit(1)
                    .await
                    .map_err(unavailable)?
                    .try_next()
                    .await
                    .map_err(unavailable)?;
                let Some(boundary) = boundary else { continue };
                removed += self
                    .runs
                    .delete_many(doc! {
                        "jobName": job,
                        "$or": [
                            { "startTime": { "$lt": boundary.start_time } },
                            { "startTime": boundary.start_time, "run_id": { "$lt": &boundary.run_id } },
                        ],
                    })
                    .await
                    .map_err(unavailable)?
                    .deleted_count;
            }
        }
        Ok(removed)
    }
}

#[async_trait]
impl AuditStore for MongoRunLog {
    async fn insert_audit(&self, records: &[AuditRecord]) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        self.ensure_indexes().await?;
        let stored: Vec<StoredAudit> = records.iter().cloned().map(StoredAudit::from).collect();
        insert_new(&self.audit, &stored).await.map(drop)
    }

    async fn audit_page(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>> {
        let mut filter = Document::new();
        let mut time = Document::new();
        if let Some(since) = query.since {
            time.insert("$gte", since);
        }
        if let Some(until) = query.until {
            time.insert("$lt", until);
        }
        if !time.is_empty() {
            filter.insert("time", time);
        }
        for (field, value) in [
            ("actorId", &query.actor),
            ("job", &query.job),
            ("action", &query.action),
        ] {
            if let Some(value) = value {
                filter.insert(field, value.as_str());
            }
        }
        let newest_first = doc! { "time": -1, "id": -1 };
        let page = find_page(&self.audit, filter, newest_first, query.skip, query.limit).await?;
        Ok(page.into_iter().map(|stored| stored.record).collect())
    }
}
