//! The embedded engine of the run log: one redb file, for
//! `distcron standalone`.
//!
//! Three tables: the records by `run_id`, and two indexes, one by
//! (job, start time, run id) for paging a job newest first and one by
//! (start time, run id) for recent runs and age-based retention. redb calls
//! block (a commit syncs to disk), so they run on tokio's blocking pool.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use redb::{
    Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
    WriteTransaction,
};

use super::{Result, Retention, RunLog, RunLogError, RunQuery, RunRecord, RunStatus};
use crate::audit::{AuditQuery, AuditRecord, AuditStore};
use crate::notify::store::{Notice, NoticeStore};

const RUNS: TableDefinition<&str, &[u8]> = TableDefinition::new("runs");
const BY_JOB: TableDefinition<(&str, i64, &str), ()> = TableDefinition::new("runs_by_job");
const BY_TIME: TableDefinition<(i64, &str), &str> = TableDefinition::new("runs_by_time");
/// The audit log, by (time, id).
const AUDIT: TableDefinition<(i64, &str), &[u8]> = TableDefinition::new("audit");
/// Notices by id (`<run id>/<event>`), and throttle counters: id -> (count,
/// expires ms).
const NOTICES: TableDefinition<&str, &[u8]> = TableDefinition::new("notices");
const COUNTERS: TableDefinition<&str, (u64, i64)> = TableDefinition::new("notify_counters");

/// Larger than any run id (ids are ASCII), to bound index ranges.
const MAX_ID: &str = "\u{10FFFF}";

#[derive(Clone)]
pub struct EmbeddedRunLog {
    db: Arc<Database>,
}

fn storage(e: impl std::fmt::Display) -> RunLogError {
    RunLogError::Storage(e.to_string())
}

fn decode(bytes: &[u8]) -> Result<RunRecord> {
    serde_json::from_slice(bytes).map_err(storage)
}

impl EmbeddedRunLog {
    pub fn open(path: &Path) -> Result<EmbeddedRunLog> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(storage)?;
        }
        let db = Database::create(path).map_err(storage)?;
        let write = db.begin_write().map_err(storage)?;
        write.open_table(RUNS).map_err(storage)?;
        write.open_table(BY_JOB).map_err(storage)?;
        write.open_table(BY_TIME).map_err(storage)?;
        write.open_table(AUDIT).map_err(storage)?;
        write.open_table(NOTICES).map_err(storage)?;
        write.open_table(COUNTERS).map_err(storage)?;
        write.commit().map_err(storage)?;
        Ok(EmbeddedRunLog { db: Arc::new(db) })
    }

    /// Run `work` with the database on the blocking pool.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Database) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || work(&db))
            .await
            .map_err(|e| RunLogError::Storage(format!("blocking task failed: {e}")))?
    }
}

/// Remove one run from the record table and both indexes.
fn remove_run(write: &WriteTransaction, run_id: &str) -> Result<bool> {
    let mut runs = write.open_table(RUNS).map_err(storage)?;
    let Some(bytes) = runs.remove(run_id).map_err(storage)? else {
        return Ok(false);
    };
    let record = decode(bytes.value())?;
    drop(bytes);
    write
        .open_table(BY_JOB)
        .map_err(storage)?
        .remove((record.job_name.as_str(), record.start_time, run_id))
        .map_err(storage)?;
    write
        .open_table(BY_TIME)
        .map_err(storage)?
        .remove((record.start_time, run_id))
        .map_err(storage)?;
    Ok(true)
}

/// One page of candidates already in order (newest first): those `wanted`,
/// after the first `skip` of them, at most `limit`. A `None` candidate (an
/// index entry without its record) is passed over.
fn take_page<T>(
    candidates: impl Iterator<Item = Result<Option<T>>>,
    wanted: impl Fn(&T) -> bool,
    skip: u64,
    limit: u64,
) -> Result<Vec<T>> {
    let mut out = Vec::new();
    let mut skipped = 0;
    for candidate in candidates {
        if out.len() as u64 >= limit {
            break;
        }
        let Some(item) = candidate? else {
            continue;
        };
        if !wanted(&item) {
            continue;
        }
        if skipped < skip {
            skipped += 1;
            continue;
        }
        out.push(item);
    }
    Ok(out)
}

#[async_trait]
impl RunLog for EmbeddedRunLog {
    async fn insert_batch(&self, records: &[RunRecord]) -> Result<u64> {
        let records = records.to_vec();
        self.blocking(move |db| {
            let write = db.begin_write().map_err(storage)?;
            let mut inserted = 0;
            {
                let mut runs = write.open_table(RUNS).map_err(storage)?;
                let mut by_job = write.open_table(BY_JOB).map_err(storage)?;
                let mut by_time = write.open_table(BY_TIME).map_err(storage)?;
                for record in &records {
                    let stored = runs
                        .get(record.run_id.as_str())
                        .map_err(storage)?
                        .map(|bytes| serde_json::from_slice::<RunRecord>(bytes.value()));
                    match stored {
                        None => {}
                        Some(Ok(old)) if super::supersedes(record.status, old.status) => {
                            // Replace it: its index entries go with it.
                            by_job
                                .remove((
                                    old.job_name.as_str(),
                                    old.start_time,
                                    old.run_id.as_str(),
                                ))
                                .map_err(storage)?;
                            by_time
                                .remove((old.start_time, old.run_id.as_str()))
                                .map_err(storage)?;
                        }
                        Some(_) => continue,
                    }
                    let bytes = serde_json::to_vec(record).map_err(storage)?;
                    runs.insert(record.run_id.as_str(), bytes.as_slice())
                        .map_err(storage)?;
                    by_job
                        .insert(
                            (
                                record.job_name.as_str(),
                                record.start_time,
                                record.run_id.as_str(),
                            ),
                            (),
                        )
                        .map_err(storage)?;
                    by_time
                        .insert(
                            (record.start_time, record.run_id.as_str()),
                            record.job_name.as_str(),
                        )
                        .map_err(storage)?;
                    inserted += 1;
                }
            }
            write.commit().map_err(storage)?;
            Ok(inserted)
        })
        .await
    }

    async fn page(&self, query: &RunQuery) -> Result<Vec<RunRecord>> {
        let query = query.clone();
        self.blocking(move |db| {
            let read = db.begin_read().map_err(storage)?;
            let runs = read.open_table(RUNS).map_err(storage)?;
            let by_job = read.open_table(BY_JOB).map_err(storage)?;
            let job = query.job_name.as_str();
            let range = by_job
                .range((job, i64::MIN, "")..=(job, i64::MAX, MAX_ID))
                .map_err(storage)?;
            let candidates = range.rev().map(|entry| {
                let (key, _) = entry.map_err(storage)?;
                let (_, _, run_id) = key.value();
                runs.get(run_id)
                    .map_err(storage)?
                    .map(|bytes| decode(bytes.value()))
                    .transpose()
            });
            let wanted = |r: &RunRecord| query.status.is_none_or(|s| s == r.status);
            take_page(candidates, wanted, query.skip, query.limit)
        })
        .await
    }

    async fn get(&self, run_id: &str) -> Result<Option<RunRecord>> {
        let run_id = run_id.to_string();
        self.blocking(move |db| {
            let read = db.begin_read().map_err(storage)?;
            let runs = read.open_table(RUNS).map_err(storage)?;
            match runs.get(run_id.as_str()).map_err(storage)? {
                Some(bytes) => decode(bytes.value()).map(Some),
                None => Ok(None),
            }
        })
        .await
    }

    async fn missing(&self, run_ids: &[String]) -> Result<Vec<String>> {
        let run_ids = run_ids.to_vec();
        self.blocking(move |db| {
            let read = db.begin_read().map_err(storage)?;
            let runs = read.open_table(RUNS).map_err(storage)?;
            let mut out = Vec::new();
            for id in run_ids {
                if runs.get(id.as_str()).map_err(storage)?.is_none() {
                    out.push(id);
                }
            }
            Ok(out)
        })
        .await
    }

    async fn unfinished(&self, worker: &str, limit: u64) -> Result<Vec<RunRecord>> {
        let worker = worker.to_string();
        // A scan: asked rarely (a worker died), and open runs are few.
        self.blocking(move |db| {
            let read = db.begin_read().map_err(storage)?;
            let runs = read.open_table(RUNS).map_err(storage)?;
            let mut out = Vec::new();
            for entry in runs.iter().map_err(storage)? {
                if out.len() as u64 >= limit {
                    break;
                }
                let (_, bytes) = entry.map_err(storage)?;
                let record = decode(bytes.value())?;
                if record.worker == worker && !record.status.is_final() {
                    out.push(record);
                }
            }
            Ok(out)
        })
        .await
    }

    async fn recent(&self, limit: u64) -> Result<Vec<RunRecord>> {
        self.blocking(move |db| {
            let read = db.begin_read().map_err(storage)?;
            let runs = read.open_table(RUNS).map_err(storage)?;
            let by_time = read.open_table(BY_TIME).map_err(storage)?;
            let mut out = Vec::new();
            for entry in by_time.iter().map_err(storage)?.rev().take(limit as usize) {
                let (key, _) = entry.map_err(storage)?;
                let (_, run_id) = key.value();
                if let Some(bytes) = runs.get(run_id).map_err(storage)? {
                    out.push(decode(bytes.value())?);
                }
            }
            Ok(out)
        })
        .await
    }

    async fn count(&self, job_name: Option<&str>, status: Option<RunStatus>) -> Result<u64> {
        let job_name = job_name.map(String::from);
        self.blocking(move |db| {
            let read = db.begin_read().map_err(storage)?;
            let runs = read.open_table(RUNS).map_err(storage)?;
            match (&job_name, status) {
                (None, None) => runs.len().map_err(storage),
                (Some(job), None) => {
                    let by_job = read.open_table(BY_JOB).map_err(storage)?;
                    let range = by_job
                        .range((job.as_str(), i64::MIN, "")..=(job.as_str(), i64::MAX, MAX_ID))
                        .map_err(storage)?;
                    Ok(range.count() as u64)
                }
                (_, Some(status)) => {
                    let mut n = 0;
                    for entry in runs.iter().map_err(storage)? {
                        let (_, bytes) = entry.map_err(storage)?;
                        let record = decode(bytes.value())?;
                        if record.status == status
                            && job_name.as_ref().is_none_or(|j| *j == record.job_name)
                        {
                            n += 1;
                        }
                    }
                    Ok(n)
                }
            }
        })
        .await
    }

    async fn count_since(&self, since_ms: i64, statuses: &[RunStatus]) -> Result<u64> {
        let statuses = statuses.to_vec();
        self.blocking(move |db| {
            let read = db.begin_read().map_err(storage)?;
            let runs = read.open_table(RUNS).map_err(storage)?;
            let by_time = read.open_table(BY_TIME).map_err(storage)?;
            let mut n = 0;
            for entry in by_time.range((since_ms, "")..).map_err(storage)? {
                let (key, _) = entry.map_err(storage)?;
                if statuses.is_empty() {
                    n += 1;
                    continue;
                }
                if let Some(bytes) = runs.get(key.value().1).map_err(storage)?
                    && statuses.contains(&decode(bytes.value())?.status)
                {
                    n += 1;
                }
            }
            Ok(n)
        })
        .await
    }

    async fn history(&self, job_name: &str, limit: u64) -> Result<Vec<super::RunSummary>> {
        let job = job_name.to_string();
        self.blocking(move |db| {
            let read = db.begin_read().map_err(storage)?;
            let runs = read.open_table(RUNS).map_err(storage)?;
            let by_job = read.open_table(BY_JOB).map_err(storage)?;
            let range = by_job
                .range((job.as_str(), i64::MIN, "")..=(job.as_str(), i64::MAX, MAX_ID))
                .map_err(storage)?;
            let mut out = Vec::new();
            for entry in range.rev().take(limit as usize) {
                let (key, _) = entry.map_err(storage)?;
                if let Some(bytes) = runs.get(key.value().2).map_err(storage)? {
                    out.push(super::RunSummary::of(&decode(bytes.value())?));
                }
            }
            Ok(out)
        })
        .await
    }

    async fn per_minute(&self, since_ms: i64) -> Result<Vec<super::MinuteCount>> {
        self.blocking(move |db| {
            let read = db.begin_read().map_err(storage)?;
            let runs = read.open_table(RUNS).map_err(storage)?;
            let by_time = read.open_table(BY_TIME).map_err(storage)?;
            let mut seen = Vec::new();
            for entry in by_time.range((since_ms, "")..).map_err(storage)? {
                let (key, _) = entry.map_err(storage)?;
                let (start, run_id) = key.value();
                if let Some(bytes) = runs.get(run_id).map_err(storage)? {
                    seen.push((start, decode(bytes.value())?.status));
                }
            }
            Ok(super::per_minute(seen))
        })
        .await
    }

    async fn ping(&self) -> Result<()> {
        self.blocking(|db| db.begin_read().map(drop).map_err(storage))
            .await
    }

    async fn apply_retention(&self, retention: Retention, now_ms: i64) -> Result<u64> {
        self.expire_notices(retention, now_ms).await?;
        self.blocking(move |db| {
            // Collect what goes in a read transaction, then remove it in one
            // write transaction.
            let mut doomed: Vec<String> = Vec::new();
            {
                let read = db.begin_read().map_err(storage)?;
                if let Some(cutoff) = retention.cutoff_ms(now_ms) {
                    let by_time = read.open_table(BY_TIME).map_err(storage)?;
                    for entry in by_time.range(..(cutoff, "")).map_err(storage)? {
                        let (key, _) = entry.map_err(storage)?;
                        doomed.push(key.value().1.to_string());
                    }
                }
                if retention.max_runs_per_job > 0 {
                    let by_job = read.open_table(BY_JOB).map_err(storage)?;
                    // Walk newest first; within each job, everything past the
                    // first `max_runs_per_job` entries goes.
                    let (mut job, mut seen) = (String::new(), 0u64);
                    for entry in by_job.iter().map_err(storage)?.rev() {
                        let (key, _) = entry.map_err(storage)?;
                        let (entry_job, _, run_id) = key.value();
                        if entry_job != job {
                            job = entry_job.to_string();
                            seen = 0;
                        }
                        seen += 1;
                        if seen > retention.max_runs_per_job {
                            doomed.push(run_id.to_string());
                        }
                    }
                }
            }
            if doomed.is_empty() {
                return Ok(0);
            }
            let write = db.begin_write().map_err(storage)?;
            let mut removed = 0;
            for run_id in &doomed {
                if remove_run(&write, run_id)? {
                    removed += 1;
                }
            }
            write.commit().map_err(storage)?;
            Ok(removed)
        })
        .await
    }
}

impl EmbeddedRunLog {
    /// Counters past their expiry, and notices older than the runs' age
    /// limit, go.
    async fn expire_notices(&self, retention: Retention, now_ms: i64) -> Result<()> {
        self.blocking(move |db| {
            let write = db.begin_write().map_err(storage)?;
            {
                let mut counters = write.open_table(COUNTERS).map_err(storage)?;
                counters
                    .retain(|_, (_, expires)| expires >= now_ms)
                    .map_err(storage)?;
                if let Some(cutoff) = retention.cutoff_ms(now_ms) {
                    let mut notices = write.open_table(NOTICES).map_err(storage)?;
                    notices
                        .retain(|_, bytes| {
                            serde_json::from_slice::<Notice>(bytes).is_ok_and(|n| n.at >= cutoff)
                        })
                        .map_err(storage)?;
                }
            }
            write.commit().map_err(storage)
        })
        .await
    }
}

#[async_trait]
impl NoticeStore for EmbeddedRunLog {
    async fn claim_notice(&self, notice: &Notice) -> Result<bool> {
        let notice = notice.clone();
        self.blocking(move |db| {
            let write = db.begin_write().map_err(storage)?;
            let claimed = {
                let mut notices = write.open_table(NOTICES).map_err(storage)?;
                if notices.get(notice.id.as_str()).map_err(storage)?.is_some() {
                    false
                } else {
                    let bytes = serde_json::to_vec(&notice).map_err(storage)?;
                    notices
                        .insert(notice.id.as_str(), bytes.as_slice())
                        .map_err(storage)?;
                    true
                }
            };
            write.commit().map_err(storage)?;
            Ok(claimed)
        })
        .await
    }

    async fn update_notice(&self, notice: &Notice) -> Result<()> {
        let notice = notice.clone();
        self.blocking(move |db| {
            let write = db.begin_write().map_err(storage)?;
            {
                let mut notices = write.open_table(NOTICES).map_err(storage)?;
                let bytes = serde_json::to_vec(&notice).map_err(storage)?;
                notices
                    .insert(notice.id.as_str(), bytes.as_slice())
                    .map_err(storage)?;
            }
            write.commit().map_err(storage)
        })
        .await
    }

    async fn notices_of(&self, run_id: &str) -> Result<Vec<Notice>> {
        let run_id = run_id.to_string();
        self.blocking(move |db| {
            let read = db.begin_read().map_err(storage)?;
            let notices = read.open_table(NOTICES).map_err(storage)?;
            // Ids begin with the run id and a slash ('0' follows '/').
            let (from, to) = (format!("{run_id}/"), format!("{run_id}0"));
            let mut found = Vec::new();
            for entry in notices.range(from.as_str()..to.as_str()).map_err(storage)? {
                let (_, bytes) = entry.map_err(storage)?;
                let notice: Notice = serde_json::from_slice(bytes.value()).map_err(storage)?;
                if notice.run_id == run_id {
                    found.push(notice);
                }
            }
            found.sort_by(|a, b| (a.at, &a.id).cmp(&(b.at, &b.id)));
            Ok(found)
        })
        .await
    }

    async fn bump_counter(&self, id: &str, by: u64, expires_ms: i64) -> Result<u64> {
        let id = id.to_string();
        self.blocking(move |db| {
            let write = db.begin_write().map_err(storage)?;
            let n = {
                let mut counters = write.open_table(COUNTERS).map_err(storage)?;
                let (n, expires) = counters
                    .get(id.as_str())
                    .map_err(storage)?
                    .map(|v| v.value())
                    .unwrap_or((0, expires_ms));
                let n = n + by;
                counters
                    .insert(id.as_str(), (n, expires.max(expires_ms)))
                    .map_err(storage)?;
                n
            };
            write.commit().map_err(storage)?;
            Ok(n)
        })
        .await
    }
}

#[async_trait]
impl AuditStore for EmbeddedRunLog {
    async fn insert_audit(&self, records: &[AuditRecord]) -> Result<()> {
        let records = records.to_vec();
        self.blocking(move |db| {
            let write = db.begin_write().map_err(storage)?;
            {
                let mut audit = write.open_table(AUDIT).map_err(storage)?;
                for record in &records {
                    let bytes = serde_json::to_vec(record).map_err(storage)?;
                    audit
                        .insert((record.time, record.id.as_str()), bytes.as_slice())
                        .map_err(storage)?;
                }
            }
            write.commit().map_err(storage)
        })
        .await
    }

    async fn audit_page(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>> {
        let query = query.clone();
        self.blocking(move |db| {
            let read = db.begin_read().map_err(storage)?;
            let audit = read.open_table(AUDIT).map_err(storage)?;
            let from = (query.since.unwrap_or(i64::MIN), "");
            let to = (query.until.unwrap_or(i64::MAX), "");
            let candidates = audit.range(from..to).map_err(storage)?.rev().map(|entry| {
                let (_, bytes) = entry.map_err(storage)?;
                serde_json::from_slice::<AuditRecord>(bytes.value())
                    .map(Some)
                    .map_err(storage)
            });
            take_page(candidates, |r| query.matches(r), query.skip, query.limit)
        })
        .await
    }
}
