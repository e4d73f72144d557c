//! An in-memory run log for the actor unit tests (compiled for tests only):
//! it can be switched off to simulate an outage, and remembers every batch
//! it was given. Its reads are the simplest that answer the actor tests; the
//! contract suite (`tests/runlog_contract.rs`) holds the real engines, not
//! this fake, to the paging and retention rules.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use async_trait::async_trait;

use crate::notify::store::{Notice, NoticeStore};

use super::{Result, Retention, RunLog, RunLogError, RunQuery, RunRecord, RunStatus};

#[derive(Default)]
pub struct FakeRunLog {
    pub down: AtomicBool,
    records: Mutex<Vec<RunRecord>>,
    /// Sizes of the batches accepted, in order.
    batches: Mutex<Vec<usize>>,
    /// Run ids refused for good, as a real store refuses a poison record.
    refuse: Mutex<Vec<String>>,
    /// Records with more output than this are refused (a document limit).
    max_output: AtomicUsize,
    notices: Mutex<std::collections::BTreeMap<String, Notice>>,
    counters: Mutex<std::collections::BTreeMap<String, u64>>,
}

impl FakeRunLog {
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    /// Refuse the record `run_id` for good from now on.
    pub fn refuse(&self, run_id: &str) {
        self.refuse.lock().unwrap().push(run_id.to_string());
    }

    /// Refuse every record with more than `bytes` of output.
    pub fn refuse_output_over(&self, bytes: usize) {
        self.max_output.store(bytes, Ordering::SeqCst);
    }

    pub fn run_ids(&self) -> Vec<String> {
        self.records
            .lock()
            .unwrap()
            .iter()
            .map(|r| r.run_id.clone())
            .collect()
    }

    pub fn records(&self) -> Vec<RunRecord> {
        self.records.lock().unwrap().clone()
    }

    fn check_up(&self) -> Result<()> {
        if self.down.load(Ordering::SeqCst) {
            return Err(RunLogError::Unavailable("fake store is down".into()));
        }
        Ok(())
    }

    pub fn notices(&self) -> Vec<Notice> {
        self.notices.lock().unwrap().values().cloned().collect()
    }

    pub fn batches(&self) -> Vec<usize> {
        self.batches.lock().unwrap().clone()
    }
}

#[async_trait]
impl NoticeStore for FakeRunLog {
    async fn claim_notice(&self, notice: &Notice) -> Result<bool> {
        self.check_up()?;
        let mut notices = self.notices.lock().unwrap();
        if notices.contains_key(&notice.id) {
            return Ok(false);
        }
        notices.insert(notice.id.clone(), notice.clone());
        Ok(true)
    }

    async fn update_notice(&self, notice: &Notice) -> Result<()> {
        self.check_up()?;
        let mut notices = self.notices.lock().unwrap();
        notices.insert(notice.id.clone(), notice.clone());
        Ok(())
    }

    async fn notices_of(&self, run_id: &str) -> Result<Vec<Notice>> {
        self.check_up()?;
        let notices = self.notices.lock().unwrap();
        Ok(notices
            .values()
            .filter(|n| n.run_id == run_id)
            .cloned()
            .collect())
    }

    async fn bump_counter(&self, id: &str, by: u64, _expires_ms: i64) -> Result<u64> {
        self.check_up()?;
        let mut counters = self.counters.lock().unwrap();
        let n = counters.entry(id.to_string()).or_default();
        *n += by;
        Ok(*n)
    }
}

#[async_trait]
impl RunLog for FakeRunLog {
    async fn insert_batch(&self, batch: &[RunRecord]) -> Result<u64> {
        if self.down.load(Ordering::SeqCst) {
            return Err(RunLogError::Unavailable("fake store is down".into()));
        }
        let refuse = self.refuse.lock().unwrap().clone();
        let mut records = self.records.lock().unwrap();
        let mut inserted = 0;
        let mut refused = Vec::new();
        for (index, record) in batch.iter().enumerate() {
            let max_output = self.max_output.load(Ordering::SeqCst);
            if refuse.contains(&record.run_id)
                || (max_output > 0 && record.output.len() > max_output)
            {
                refused.push(super::Refusal {
                    index,
                    reason: "refused by the fake store".into(),
                });
                continue;
            }
            match records.iter_mut().find(|r| r.run_id == record.run_id) {
                None => records.push(record.clone()),
                Some(stored) if super::supersedes(record.status, stored.status) => {
                    *stored = record.clone()
                }
                Some(_) => continue,
            }
            inserted += 1;
        }
        self.batches.lock().unwrap().push(batch.len());
        if !refused.is_empty() {
            return Err(RunLogError::Refused(refused));
        }
        Ok(inserted)
    }

    async fn missing(&self, run_ids: &[String]) -> Result<Vec<String>> {
        let stored = self.run_ids();
        Ok(run_ids
            .iter()
            .filter(|id| !stored.contains(id))
            .cloned()
            .collect())
    }

    async fn unfinished(&self, worker: &str, limit: u64) -> Result<Vec<RunRecord>> {
        Ok(self
            .records()
            .into_iter()
            .filter(|r| r.worker == worker && !r.status.is_final())
            .take(limit as usize)
            .collect())
    }

    async fn page(&self, query: &RunQuery) -> Result<Vec<RunRecord>> {
        let mut runs: Vec<RunRecord> = self
            .records()
            .into_iter()
            .filter(|r| r.job_name == query.job_name)
            .filter(|r| query.status.is_none_or(|s| r.status == s))
            .collect();
        runs.sort_by(|a, b| (b.start_time, &b.run_id).cmp(&(a.start_time, &a.run_id)));
        Ok(runs
            .into_iter()
            .skip(query.skip as usize)
            .take(query.limit as usize)
            .collect())
    }

    async fn get(&self, run_id: &str) -> Result<Option<RunRecord>> {
        Ok(self.records().into_iter().find(|r| r.run_id == run_id))
    }

    async fn recent(&self, limit: u64) -> Result<Vec<RunRecord>> {
        let mut runs = self.records();
        runs.sort_by(|a, b| (b.start_time, &b.run_id).cmp(&(a.start_time, &a.run_id)));
        runs.truncate(limit as usize);
        Ok(runs)
    }

    async fn count(&self, job_name: Option<&str>, status: Option<RunStatus>) -> Result<u64> {
        let records = self.records.lock().unwrap();
        let matching = records
            .iter()
            .filter(|r| job_name.is_none_or(|j| r.job_name == j))
            .filter(|r| status.is_none_or(|s| r.status == s));
        Ok(matching.count() as u64)
    }

    async fn count_since(&self, since_ms: i64, statuses: &[RunStatus]) -> Result<u64> {
        let records = self.records.lock().unwrap();
        let matching = records
            .iter()
            .filter(|r| r.start_time >= since_ms)
            .filter(|r| statuses.is_empty() || statuses.contains(&r.status));
        Ok(matching.count() as u64)
    }

    async fn history(&self, job_name: &str, limit: u64) -> Result<Vec<super::RunSummary>> {
        let mut runs = self.records();
        runs.retain(|r| r.job_name == job_name);
        runs.sort_by(|a, b| (b.start_time, &b.run_id).cmp(&(a.start_time, &a.run_id)));
        runs.truncate(limit as usize);
        Ok(runs.iter().map(super::RunSummary::of).collect())
    }

    async fn per_minute(&self, since_ms: i64) -> Result<Vec<super::MinuteCount>> {
        let records = self.records.lock().unwrap();
        Ok(super::per_minute(
            records
                .iter()
                .filter(|r| r.start_time >= since_ms)
                .map(|r| (r.start_time, r.status)),
        ))
    }

    async fn ping(&self) -> Result<()> {
        Ok(())
    }

    async fn apply_retention(&self, _: Retention, _: i64) -> Result<u64> {
        Ok(0)
    }
}

/// The actor tests never audit; the fake keeps nothing.
#[async_trait]
impl crate::audit::AuditStore for FakeRunLog {
    async fn insert_audit(&self, _: &[crate::audit::AuditRecord]) -> Result<()> {
        Ok(())
    }

    async fn audit_page(
        &self,
        _: &crate::audit::AuditQuery,
    ) -> Result<Vec<crate::audit::AuditRecord>> {
        Ok(Vec::new())
    }
}
