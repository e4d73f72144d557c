//! The log batcher's spool: run records that could not be written to the run
//! log yet, kept in order in a local file until the store is back.
//!
//! The file is JSON lines, appended and synced batch by batch, and read
//! back from a cursor; when the cursor reaches the end the file is emptied.
//! A spool left by a previous process is replayed from its start: the run
//! log's idempotent insert absorbs anything that was already stored. The
//! file is bounded; what does not fit is reported as dropped.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::RunRecord;

pub struct Spool {
    path: PathBuf,
    file: File,
    /// Bytes in the file.
    len: u64,
    /// Bytes already replayed to the store.
    cursor: u64,
    max_bytes: u64,
}

/// The outcome of an append: how many records went in, how many did not fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub stored: usize,
    pub dropped: usize,
}

impl Spool {
    /// Open the spool at `path`, keeping any records a previous process left.
    pub fn open(path: &Path, max_bytes: u64) -> io::Result<Spool> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(path)?;
        let len = file.metadata()?.len();
        Ok(Spool {
            path: path.to_path_buf(),
            file,
            len,
            cursor: 0,
            max_bytes,
        })
    }

    /// Nothing waiting to be replayed.
    pub fn is_empty(&self) -> bool {
        self.cursor >= self.len
    }

    /// Bytes waiting to be replayed.
    pub fn pending_bytes(&self) -> u64 {
        self.len - self.cursor
    }

    /// Append records in order, as many as fit under the size bound, and
    /// sync them to disk.
    pub fn append(&mut self, records: &[RunRecord]) -> io::Result<Appended> {
        let mut buf = Vec::new();
        let mut stored = 0;
        for record in records {
            let mut line = serde_json::to_vec(record).map_err(io::Error::other)?;
            line.push(b'\n');
            if self.len + (buf.len() + line.len()) as u64 > self.max_bytes {
                break;
            }
            buf.extend_from_slice(&line);
            stored += 1;
        }
        if !buf.is_empty() {
            self.file.write_all(&buf)?;
            self.file.sync_data()?;
            self.len += buf.len() as u64;
        }
        Ok(Appended {
            stored,
            dropped: records.len() - stored,
        })
    }

    /// Read up to `max` records from the cursor. Returns them and the offset
    /// just past them, to pass to [`Spool::advance`] once they are stored.
    /// A line that does not parse (a torn write from a crash) is skipped.
    pub fn read_next(&self, max: usize) -> io::Result<(Vec<RunRecord>, u64)> {
        let mut file = File::open(&self.path)?;
        file.seek(SeekFrom::Start(self.cursor))?;
        let mut reader = BufReader::new(file);
        let mut records = Vec::new();
        let mut offset = self.cursor;
        let mut line = Vec::new();
        while records.len() < max && offset < self.len {
            line.clear();
            let n = reader.read_until(b'\n', &mut line)?;
            if n == 0 {
                break;
            }
            offset += n as u64;
            match serde_json::from_slice::<RunRecord>(&line) {
                Ok(record) => records.push(record),
                Err(error) => {
                    tracing::warn!(path = %self.path.display(), offset, %error, "skipping unreadable spool line")
                }
            }
        }
        Ok((records, offset))
    }

    /// Give up on what is left (the file shrank or is unreadable from the
    /// cursor on) and start empty.
    pub fn reset(&mut self) -> io::Result<()> {
        self.len = self.file.metadata()?.len();
        self.advance(self.len)
    }

    /// Mark everything before `offset` as stored; empty the file once all of
    /// it is.
    pub fn advance(&mut self, offset: u64) -> io::Result<()> {
        self.cursor = offset.min(self.len);
        if self.cursor == self.len && self.len > 0 {
            self.file.set_len(0)?;
            self.file.sync_data()?;
            self.len = 0;
            self.cursor = 0;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runlog::RunStatus;

    fn record(i: usize) -> RunRecord {
        RunRecord {
            run_id: format!("r{i:05}"),
            job_name: "j".into(),
            command: "true".into(),
            worker: "w".into(),
            plan_time: i as i64,
            schedule_time: i as i64,
            start_time: i as i64,
            end_time: i as i64,
            status: RunStatus::Succeeded,
            exit_code: Some(0),
            signal: None,
            output: "x".repeat(100),
            truncated: false,
            err: String::new(),
            requested_by: None,
        }
    }

    #[test]
    fn records_come_back_in_order_and_the_file_empties() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool");
        let mut spool = Spool::open(&path, 1 << 20).unwrap();
        assert!(spool.is_empty());
        spool
            .append(&(0..5).map(record).collect::<Vec<_>>())
            .unwrap();
        spool
            .append(&(5..8).map(record).collect::<Vec<_>>())
            .unwrap();
        let (first, offset) = spool.read_next(6).unwrap();
        assert_eq!(first, (0..6).map(record).collect::<Vec<_>>());
        spool.advance(offset).unwrap();
        let (rest, offset) = spool.read_next(100).unwrap();
        assert_eq!(rest, (6..8).map(record).collect::<Vec<_>>());
        spool.advance(offset).unwrap();
        assert!(spool.is_empty());
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
    }

    #[test]
    fn a_spool_left_behind_is_replayed_by_the_next_process() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool");
        Spool::open(&path, 1 << 20)
            .unwrap()
            .append(&[record(1), record(2)])
            .unwrap();
        let spool = Spool::open(&path, 1 << 20).unwrap();
        assert_eq!(spool.read_next(10).unwrap().0, vec![record(1), record(2)]);
    }

    #[test]
    fn a_full_spool_stores_what_fits_and_reports_the_rest_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let one_line = serde_json::to_vec(&record(0)).unwrap().len() as u64 + 1;
        let mut spool = Spool::open(&dir.path().join("spool"), one_line * 3).unwrap();
        let appended = spool
            .append(&(0..5).map(record).collect::<Vec<_>>())
            .unwrap();
        assert_eq!(
            appended,
            Appended {
                stored: 3,
                dropped: 2
            }
        );
        assert_eq!(spool.read_next(10).unwrap().0.len(), 3);
    }

    #[test]
    fn a_torn_last_line_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool");
        let mut spool = Spool::open(&path, 1 << 20).unwrap();
        spool.append(&[record(1)]).unwrap();
        drop(spool);
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"{\"run_id\":\"r9")
            .unwrap();
        let spool = Spool::open(&path, 1 << 20).unwrap();
        let (records, offset) = spool.read_next(10).unwrap();
        assert_eq!(records, vec![record(1)]);
        assert_eq!(offset, std::fs::metadata(&path).unwrap().len());
    }
}
