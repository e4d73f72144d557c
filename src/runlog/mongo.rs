//! The MongoDB engine of the run log.
//!
//! Uses only what any real MongoDB does identically: insert, update, find
//! with sort/skip/limit, count, delete, distinct and index creation. Indexes
//! are created at start and never referred to by name.
//!
//! Writes converge whatever the order, repeats and races: an unordered
//! `insert_many` stores every new record and reports the ones already
//! stored as duplicate-key errors (the unique `run_id` index); those are
//! then replaced, in one `update` command, only where the stored status
//! ranks below the new one (`RunStatus::replaces`). A write is acknowledged
//! under the configured write concern (`majority` by default, so a
//! failover cannot roll back what the journal has let go) and bounded by a
//! timeout; a record refused for good (a write error other than a
//! duplicate key) is reported apart, so it never holds up the rest.

use std::time::Duration;

use async_trait::async_trait;
use futures_util::TryStreamExt;
use mongodb::bson::{Document, doc};
use mongodb::error::ErrorKind;
use mongodb::options::{Acknowledgment, ClientOptions, IndexOptions, WriteConcern};
use mongodb::{Client, Collection, IndexModel};
use serde::{Deserialize, Serialize};

use super::{Refusal, Result, Retention, RunLog, RunLogError, RunQuery, RunRecord, RunStatus};
use crate::audit::{AuditQuery, AuditRecord, AuditStore};
use crate::notify::store::{Notice, NoticeStore};

/// The audit log's collection, in the run log's database.
pub const AUDIT_COLLECTION: &str = "audit";

/// Notices of notifications (one per run and event) and their throttle
/// counters, collections beside the runs.
pub const NOTICES_COLLECTION: &str = "notices";
pub const COUNTERS_COLLECTION: &str = "notify_counters";

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
    /// Acknowledgement asked of run writes: `majority`, or a number of
    /// members.
    pub write_concern: String,
    /// The longest a write may take, replication included; past it the
    /// batcher treats the store as down and retries (the write is
    /// idempotent).
    pub write_timeout: Duration,
}

impl MongoOptions {
    pub fn new(uri: &str) -> MongoOptions {
        MongoOptions {
            uri: uri.to_string(),
            database: "distcron".into(),
            collection: "runs".into(),
            server_selection_timeout: Duration::from_secs(3),
            write_concern: "majority".into(),
            write_timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Clone)]
pub struct MongoRunLog {
    runs: Collection<RunRecord>,
    /// The audit log, a collection beside the runs (`audit`).
    audit: Collection<StoredAudit>,
    notices: Collection<StoredNotice>,
    counters: Collection<Document>,
    /// Set once the indexes exist; inserts wait for them, because the
    /// unique `run_id` index is what makes inserts idempotent.
    indexes_ready: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// The write concern, as sent with the `update` command.
    write_concern: Document,
    write_timeout: Duration,
}

/// `majority` or a member count, with a replication time limit.
pub fn write_concern(w: &str, timeout: Duration) -> std::result::Result<WriteConcern, String> {
    let w = match w {
        "majority" => Acknowledgment::Majority,
        n => Acknowledgment::Nodes(n.parse().map_err(|_| {
            format!("mongodbWriteConcern: {n:?} is neither \"majority\" nor a number of members")
        })?),
    };
    Ok(WriteConcern::builder().w(w).w_timeout(timeout).build())
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
        let concern = write_concern(&options.write_concern, options.write_timeout)
            .map_err(RunLogError::Unavailable)?;
        let database = client.database_with_options(
            &options.database,
            mongodb::options::DatabaseOptions::builder()
                .write_concern(concern.clone())
                .build(),
        );
        let runs = database.collection::<RunRecord>(&options.collection);
        let audit = database.collection::<StoredAudit>(AUDIT_COLLECTION);
        let log = MongoRunLog {
            runs,
            audit,
            notices: database.collection(NOTICES_COLLECTION),
            counters: database.collection(COUNTERS_COLLECTION),
            indexes_ready: Default::default(),
            write_concern: mongodb::bson::to_document(&concern).unwrap_or_default(),
            write_timeout: options.write_timeout,
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
            // Serves `unfinished`: few runs are open at any time.
            IndexModel::builder().keys(doc! { "status": 1 }).build(),
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
        self.notices
            .create_indexes([
                IndexModel::builder().keys(doc! { "runId": 1 }).build(),
                IndexModel::builder().keys(doc! { "at": 1 }).build(),
            ])
            .await
            .map_err(unavailable)?;
        self.indexes_ready.store(true, Ordering::Release);
        Ok(())
    }
}

impl MongoRunLog {
    /// Of the records at `positions` (already stored), replace each whose
    /// stored status ranks below its own, in one `update` command; a stored
    /// record of equal or higher rank is left as it is. Returns how many
    /// were replaced.
    async fn replace_lower(&self, records: &[RunRecord], positions: &[usize]) -> Result<u64> {
        let mut updates = Vec::new();
        for record in positions.iter().filter_map(|i| records.get(*i)) {
            let lower: Vec<&str> = record
                .status
                .replaces()
                .into_iter()
                .map(RunStatus::as_str)
                .collect();
            if lower.is_empty() {
                continue;
            }
            let replacement = mongodb::bson::to_document(record)
                .map_err(|e| RunLogError::Storage(format!("run {}: {e}", record.run_id)))?;
            updates.push(doc! {
                "q": { "run_id": &record.run_id, "status": { "$in": lower } },
                "u": replacement,
                "multi": false,
                "upsert": false,
            });
        }
        if updates.is_empty() {
            return Ok(0);
        }
        let reply = self
            .runs
            .client()
            .database(self.runs.namespace().db.as_str())
            .run_command(doc! {
                "update": self.runs.name(),
                "updates": updates,
                "ordered": false,
                "writeConcern": self.write_concern.clone(),
            })
            .await
            .map_err(unavailable)?;
        if let Ok(concern) = reply.get_document("writeConcernError") {
            return Err(RunLogError::Unavailable(format!(
                "write concern: {concern}"
            )));
        }
        if let Ok(errors) = reply.get_array("writeErrors")
            && !errors.is_empty()
        {
            return Err(RunLogError::Unavailable(format!(
                "replacing runs: {errors:?}"
            )));
        }
        Ok(reply
            .get_i32("nModified")
            .map(i64::from)
            .or_else(|_| reply.get_i64("nModified"))
            .unwrap_or(0)
            .max(0) as u64)
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

/// What an unordered insert did: how many records were new, the batch
/// positions of those already stored, and those refused for good.
struct Inserted {
    new: u64,
    stored: Vec<usize>,
    refused: Vec<Refusal>,
}

/// Insert what is new: an unordered `insert_many` stores every record whose
/// unique key is free and reports the others as duplicate-key errors, which
/// are expected. Any other write error refuses that one record; an error of
/// the whole request (network, write concern) is transient.
async fn insert_new<T: Serialize + Send + Sync>(
    collection: &Collection<T>,
    records: &[T],
) -> Result<Inserted> {
    match collection.insert_many(records).ordered(false).await {
        Ok(result) => Ok(Inserted {
            new: result.inserted_ids.len() as u64,
            stored: Vec::new(),
            refused: Vec::new(),
        }),
        Err(e) => match e.kind.as_ref() {
            ErrorKind::InsertMany(failure) if failure.write_concern_error.is_none() => {
                let errors = failure.write_errors.iter().flatten();
                let (duplicates, others): (Vec<_>, Vec<_>) =
                    errors.partition(|w| w.code == DUPLICATE_KEY);
                let stored: Vec<usize> = duplicates.iter().map(|w| w.index).collect();
                let refused: Vec<Refusal> = others
                    .iter()
                    .map(|w| Refusal {
                        index: w.index,
                        reason: format!("code {}: {}", w.code, w.message),
                    })
                    .collect();
                Ok(Inserted {
                    new: (records.len() - stored.len() - refused.len()) as u64,
                    stored,
                    refused,
                })
            }
            // The driver refused the request before sending it (a document
            // past the size limit): find which records, one at a time.
            ErrorKind::InvalidArgument { .. } | ErrorKind::BsonSerialization(_) => {
                insert_each(collection, records).await
            }
            _ => Err(unavailable(e)),
        },
    }
}

/// [`insert_new`] one record at a time, to tell the refused ones apart.
async fn insert_each<T: Serialize + Send + Sync>(
    collection: &Collection<T>,
    records: &[T],
) -> Result<Inserted> {
    let mut inserted = Inserted {
        new: 0,
        stored: Vec::new(),
        refused: Vec::new(),
    };
    for (index, record) in records.iter().enumerate() {
        let Err(e) = collection.insert_one(record).await else {
            inserted.new += 1;
            continue;
        };
        match e.kind.as_ref() {
            ErrorKind::Write(mongodb::error::WriteFailure::WriteError(w))
                if w.code == DUPLICATE_KEY =>
            {
                inserted.stored.push(index)
            }
            ErrorKind::Write(mongodb::error::WriteFailure::WriteError(w)) => {
                inserted.refused.push(Refusal {
                    index,
                    reason: format!("code {}: {}", w.code, w.message),
                })
            }
            ErrorKind::InvalidArgument { message, .. } => inserted.refused.push(Refusal {
                index,
                reason: message.clone(),
            }),
            ErrorKind::BsonSerialization(error) => inserted.refused.push(Refusal {
                index,
                reason: error.to_string(),
            }),
            _ => return Err(unavailable(e)),
        }
    }
    Ok(inserted)
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
        let write = async {
            self.ensure_indexes().await?;
            let inserted = insert_new(&self.runs, records).await?;
            let replaced = self.replace_lower(records, &inserted.stored).await?;
            if !inserted.refused.is_empty() {
                return Err(RunLogError::Refused(inserted.refused));
            }
            Ok(inserted.new + replaced)
        };
        tokio::time::timeout(self.write_timeout, write)
            .await
            .map_err(|_| {
                RunLogError::Unavailable(format!(
                    "run log write took longer than {:?}",
                    self.write_timeout
                ))
            })?
    }

    async fn missing(&self, run_ids: &[String]) -> Result<Vec<String>> {
        let mut found = std::collections::HashSet::new();
        let ids = self.runs.clone_with_type::<Document>();
        for chunk in run_ids.chunks(1000) {
            let stored: Vec<Document> = ids
                .find(doc! { "run_id": { "$in": chunk } })
                .projection(doc! { "run_id": 1, "_id": 0 })
                .await
                .map_err(unavailable)?
                .try_collect()
                .await
                .map_err(unavailable)?;
            found.extend(
                stored
                    .iter()
                    .filter_map(|d| d.get_str("run_id").ok().map(String::from)),
            );
        }
        Ok(run_ids
            .iter()
            .filter(|id| !found.contains(*id))
            .cloned()
            .collect())
    }

    async fn unfinished(&self, worker: &str, limit: u64) -> Result<Vec<RunRecord>> {
        let open: Vec<&str> = RunStatus::ALL
            .into_iter()
            .filter(|s| !s.is_final())
            .map(RunStatus::as_str)
            .collect();
        find_page(
            &self.runs,
            doc! { "status": { "$in": open }, "worker": worker },
            newest_first(),
            0,
            limit,
        )
        .await
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

    async fn history(&self, job_name: &str, limit: u64) -> Result<Vec<super::RunSummary>> {
        let summaries = self.runs.clone_with_type::<super::RunSummary>();
        summaries
            .find(doc! { "jobName": job_name })
            .projection(doc! { "_id": 0, "run_id": 1, "status": 1, "startTime": 1, "endTime": 1 })
            .sort(newest_first())
            .limit(as_i64(limit))
            .await
            .map_err(unavailable)?
            .try_collect()
            .await
            .map_err(unavailable)
    }

    async fn per_minute(&self, since_ms: i64) -> Result<Vec<super::MinuteCount>> {
        let failures: Vec<&str> = super::FAILURES.iter().map(|s| s.as_str()).collect();
        let pipeline = [
            doc! { "$match": { "startTime": { "$gte": since_ms } } },
            doc! { "$group": {
                "_id": { "$subtract": ["$startTime", { "$mod": ["$startTime", 60_000_i64] }] },
                "runs": { "$sum": 1_i64 },
                "failures": { "$sum": { "$cond": [{ "$in": ["$status", failures] }, 1_i64, 0_i64] } },
            } },
            doc! { "$sort": { "_id": 1 } },
        ];
        let mut cursor = self.runs.aggregate(pipeline).await.map_err(unavailable)?;
        let mut out = Vec::new();
        while let Some(row) = cursor.try_next().await.map_err(unavailable)? {
            let number = |key: &str| match row.get(key) {
                Some(mongodb::bson::Bson::Int64(n)) => *n,
                Some(mongodb::bson::Bson::Int32(n)) => i64::from(*n),
                Some(mongodb::bson::Bson::Double(n)) => *n as i64,
                _ => 0,
            };
            out.push(super::MinuteCount {
                minute: number("_id"),
                runs: number("runs").max(0) as u64,
                failures: number("failures").max(0) as u64,
            });
        }
        Ok(out)
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
        // Throttle counters outlive their window by a day; notices go with
        // the runs' age limit.
        self.counters
            .delete_many(doc! { "expires": { "$lt": now_ms } })
            .await
            .map_err(unavailable)?;
        if let Some(cutoff) = retention.cutoff_ms(now_ms) {
            self.notices
                .delete_many(doc! { "at": { "$lt": cutoff } })
                .await
                .map_err(unavailable)?;
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

/// A notice as stored: its id is the document's `_id`, which every MongoDB
/// keeps unique, so the first insert claims it.
#[derive(Serialize, Deserialize)]
struct StoredNotice {
    #[serde(rename = "_id")]
    key: String,
    #[serde(flatten)]
    notice: Notice,
}

#[async_trait]
impl NoticeStore for MongoRunLog {
    async fn claim_notice(&self, notice: &Notice) -> Result<bool> {
        let stored = StoredNotice {
            key: notice.id.clone(),
            notice: notice.clone(),
        };
        match self.notices.insert_one(&stored).await {
            Ok(_) => Ok(true),
            Err(e) => match e.kind.as_ref() {
                ErrorKind::Write(mongodb::error::WriteFailure::WriteError(w))
                    if w.code == DUPLICATE_KEY =>
                {
                    Ok(false)
                }
                _ => Err(unavailable(e)),
            },
        }
    }

    async fn update_notice(&self, notice: &Notice) -> Result<()> {
        let stored = StoredNotice {
            key: notice.id.clone(),
            notice: notice.clone(),
        };
        self.notices
            .replace_one(doc! { "_id": &notice.id }, &stored)
            .await
            .map(drop)
            .map_err(unavailable)
    }

    async fn notices_of(&self, run_id: &str) -> Result<Vec<Notice>> {
        let stored: Vec<StoredNotice> = self
            .notices
            .find(doc! { "runId": run_id })
            .sort(doc! { "at": 1, "_id": 1 })
            .await
            .map_err(unavailable)?
            .try_collect()
            .await
            .map_err(unavailable)?;
        Ok(stored.into_iter().map(|s| s.notice).collect())
    }

    async fn bump_counter(&self, id: &str, by: u64, expires_ms: i64) -> Result<u64> {
        let counter = self
            .counters
            .find_one_and_update(
                doc! { "_id": id },
                doc! { "$inc": { "n": by as i64 }, "$max": { "expires": expires_ms } },
            )
            .upsert(true)
            .return_document(mongodb::options::ReturnDocument::After)
            .await
            .map_err(unavailable)?
            .ok_or_else(|| RunLogError::Storage(format!("counter {id} missing after upsert")))?;
        let n = match counter.get("n") {
            Some(mongodb::bson::Bson::Int64(n)) => *n,
            Some(mongodb::bson::Bson::Int32(n)) => i64::from(*n),
            Some(mongodb::bson::Bson::Double(n)) => *n as i64,
            other => {
                return Err(RunLogError::Storage(format!(
                    "counter {id} holds {other:?}, not a number"
                )));
            }
        };
        Ok(n.max(0) as u64)
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
        let inserted = insert_new(&self.audit, &stored).await?;
        if !inserted.refused.is_empty() {
            return Err(RunLogError::Refused(inserted.refused));
        }
        Ok(())
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
