//! A run's output while it runs: the runner's capture, shared with anyone
//! following the run (`GET /run/tail`). Followers read from the one buffer
//! by offset and wake on a watch of its length, so a follower costs a read
//! position and the chunk it is sending, whatever the output's size; the
//! buffer is the capture the record is made from, capped the same way.
//! A view only: the run record stays the source of truth.

use std::sync::Mutex;

use serde::Serialize;
use tokio::sync::watch;

use crate::runlog::{RunRecord, RunStatus};

/// How the run ended, as its record will say.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LiveEnd {
    pub status: RunStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    /// Output past the cap was dropped.
    pub truncated: bool,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub err: String,
}

impl LiveEnd {
    pub fn of(record: &RunRecord) -> LiveEnd {
        LiveEnd {
            status: record.status,
            exit_code: record.exit_code,
            signal: record.signal,
            truncated: record.truncated,
            err: record.err.clone(),
        }
    }
}

/// What followers wait on: bytes captured so far, and the end once known.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Progress {
    pub len: usize,
    pub end: Option<LiveEnd>,
}

pub struct LiveOutput {
    pub run_id: String,
    capture: Mutex<Capture>,
    progress: watch::Sender<Progress>,
}

/// Output kept up to a cap; the rest is read and counted but dropped.
struct Capture {
    bytes: Vec<u8>,
    cap: usize,
    truncated: bool,
}

impl LiveOutput {
    pub fn new(run_id: &str, cap: usize) -> LiveOutput {
        LiveOutput {
            run_id: run_id.to_string(),
            capture: Mutex::new(Capture {
                bytes: Vec::new(),
                cap,
                truncated: false,
            }),
            progress: watch::channel(Progress::default()).0,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Capture> {
        self.capture.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Take a chunk the command wrote.
    pub fn push(&self, chunk: &[u8]) {
        let len = {
            let mut capture = self.lock();
            let room = capture.cap.saturating_sub(capture.bytes.len());
            if chunk.len() > room {
                capture.truncated = true;
            }
            capture
                .bytes
                .extend_from_slice(&chunk[..chunk.len().min(room)]);
            capture.bytes.len()
        };
        self.progress.send_if_modified(|p| {
            let grew = p.len != len;
            p.len = len;
            grew
        });
    }

    /// The output as the record keeps it: text, and whether it was cut.
    pub fn text(&self) -> (String, bool) {
        let capture = self.lock();
        let mut text = String::from_utf8_lossy(&capture.bytes).into_owned();
        // Lossy decoding can grow the text past the cap; cut it back.
        let cut = crate::runlog::cap_output(&mut text, capture.cap);
        (text, capture.truncated || cut)
    }

    /// The run ended as `record` says: followers get the end.
    pub fn finish(&self, record: &RunRecord) {
        let end = LiveEnd::of(record);
        self.progress.send_modify(|p| p.end = Some(end));
    }

    /// Up to `max` bytes from `offset`.
    pub fn read(&self, offset: usize, max: usize) -> Vec<u8> {
        let capture = self.lock();
        let end = capture.bytes.len().min(offset.saturating_add(max));
        capture
            .bytes
            .get(offset..end)
            .map(<[u8]>::to_vec)
            .unwrap_or_default()
    }

    pub fn watch(&self) -> watch::Receiver<Progress> {
        self.progress.subscribe()
    }
}

/// The text to send of `bytes` read at some offset: the longest prefix of
/// whole characters (invalid bytes become U+FFFD), and how many bytes it
/// covers. An incomplete character at the end waits for its next bytes,
/// unless `at_end`.
pub fn decode_chunk(bytes: &[u8], at_end: bool) -> (String, usize) {
    match std::str::from_utf8(bytes) {
        Ok(text) => (text.to_string(), bytes.len()),
        Err(error) if error.error_len().is_none() && !at_end => {
            let whole = error.valid_up_to();
            (String::from_utf8_lossy(&bytes[..whole]).into_owned(), whole)
        }
        Err(_) => (String::from_utf8_lossy(bytes).into_owned(), bytes.len()),
    }
}

/// One server-sent event: `event: <name>` and its JSON `data` line.
pub fn sse_event(name: &str, data: &impl Serialize) -> String {
    let json = serde_json::to_string(data).unwrap_or_else(|_| "null".into());
    format!("event: {name}\ndata: {json}\n\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_end_on_whole_characters() {
        let e_acute = "é".as_bytes();
        let table: [(&[u8], bool, &str, usize); 5] = [
            (b"hello", false, "hello", 5),
            (&[b'a', e_acute[0]], false, "a", 1),
            (&[b'a', e_acute[0]], true, "a\u{FFFD}", 2),
            (e_acute, false, "é", 2),
            (&[b'a', 0xFF, b'b'], false, "a\u{FFFD}b", 3),
        ];
        for (bytes, at_end, text, used) in table {
            assert_eq!(
                decode_chunk(bytes, at_end),
                (text.to_string(), used),
                "{bytes:?}"
            );
        }
    }

    #[test]
    fn followers_read_what_was_pushed_up_to_the_cap_and_see_the_end() {
        let live = LiveOutput::new("r", 8);
        let mut watch = live.watch();
        live.push(b"hello ");
        assert!(watch.has_changed().unwrap());
        assert_eq!(watch.borrow_and_update().len, 6);
        live.push(b"world");
        assert_eq!(live.read(0, 100), b"hello wo");
        assert_eq!(live.read(6, 1), b"w");
        assert_eq!(live.read(50, 1), b"");
        assert_eq!(live.text(), ("hello wo".to_string(), true));
        let record = RunRecord {
            params: Default::default(),
            triggered_by: None,
            run_id: "r".into(),
            job_name: "j".into(),
            command: "c".into(),
            worker: "w".into(),
            plan_time: 0,
            schedule_time: 0,
            start_time: 0,
            end_time: 0,
            status: RunStatus::Failed,
            exit_code: Some(2),
            signal: None,
            output: String::new(),
            truncated: true,
            err: String::new(),
            requested_by: None,
        };
        live.finish(&record);
        let end = watch.borrow_and_update().end.clone().unwrap();
        assert_eq!((end.status, end.exit_code), (RunStatus::Failed, Some(2)));
        assert_eq!(
            sse_event("end", &end),
            "event: end\ndata: {\"status\":\"failed\",\"exitCode\":2,\"truncated\":true}\n\n"
        );
    }
}
