//! The journal against damage: torn tails, corrupt frames, partial writes,
//! a full disk, reopening. Nothing acknowledged is lost, nothing repeated.

use std::io::{self, Write};

use super::*;
use crate::runlog::RunStatus;

fn record(i: usize) -> RunRecord {
    RunRecord {
        params: Default::default(),
        triggered_by: None,
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

fn frames(range: std::ops::Range<usize>) -> Vec<u8> {
    let mut out = Vec::new();
    for i in range {
        encode(&record(i), &mut out).unwrap();
    }
    out
}

fn ids(read: &Read) -> Vec<String> {
    read.records.iter().map(|r| r.run_id.clone()).collect()
}

fn names(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| record(i).run_id).collect()
}

fn open(dir: &Path) -> (Journal, Recovered) {
    Journal::open(JournalConfig::new(dir.to_path_buf())).unwrap()
}

fn only_segment(dir: &Path) -> PathBuf {
    let ids = segment_ids(dir).unwrap();
    assert_eq!(ids.len(), 1, "one segment");
    segment_path(dir, ids[0])
}

#[test]
fn scan_finds_frames_and_steps_over_damage() {
    let one = frames(0..1);
    let n = one.len();
    let mut flipped = frames(0..3);
    flipped[n + HEADER + 5] ^= 0xff; // the second frame's payload
    let mut torn = frames(0..2);
    torn.truncate(n + 7);
    let mut garbage_between = frames(0..1);
    garbage_between.extend_from_slice(b"\x00\x01garbage");
    garbage_between.extend_from_slice(&frames(1..2));
    // (bytes, frames found, good end, corrupt bytes skipped)
    let table: Vec<(&str, Vec<u8>, usize, usize, u64)> = vec![
        ("empty", Vec::new(), 0, 0, 0),
        ("three whole frames", frames(0..3), 3, 3 * n, 0),
        (
            "a flipped byte in the middle one",
            flipped,
            2,
            3 * n,
            n as u64,
        ),
        ("a torn last frame", torn, 1, n, 0),
        (
            "garbage between two frames",
            garbage_between,
            2,
            2 * n + 9,
            9,
        ),
        (
            "only garbage",
            b"DCj1\xff\xff\xff\xffnot a frame".to_vec(),
            0,
            0,
            0,
        ),
    ];
    for (name, bytes, count, end, corrupt) in table {
        let (found, good_end, skipped) = scan(&bytes, 0);
        assert_eq!(
            (found.len(), good_end, skipped),
            (count, end, corrupt),
            "{name}"
        );
    }
}

#[test]
fn shipped_records_leave_and_the_journal_empties() {
    let dir = tempfile::tempdir().unwrap();
    let (mut journal, recovered) = open(dir.path());
    assert_eq!(recovered, Recovered::default());
    journal.append(&frames(0..5)).unwrap();
    assert!(journal.sync().unwrap(), "one fsync for the group");
    assert!(!journal.sync().unwrap(), "nothing new, no fsync");
    let first = journal.read(3).unwrap();
    assert_eq!(ids(&first), names(0..3));
    journal.ack(first.end).unwrap();
    journal.append(&frames(5..6)).unwrap();
    let rest = journal.read(100).unwrap();
    assert_eq!(ids(&rest), names(3..6));
    journal.ack(rest.end).unwrap();
    assert!(journal.is_empty());
    assert_eq!(journal.bytes(), 0);
    assert_eq!(fs::metadata(only_segment(dir.path())).unwrap().len(), 0);
}

#[test]
fn what_was_not_acknowledged_is_shipped_by_the_next_process() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut journal, _) = open(dir.path());
        journal.append(&frames(0..4)).unwrap();
        journal.sync().unwrap();
        let read = journal.read(2).unwrap();
        journal.ack(read.end).unwrap();
        // Killed here: r2 and r3 were never acknowledged.
    }
    let (journal, recovered) = open(dir.path());
    let read = journal.read(100).unwrap();
    // The cursor is not kept: the acknowledged two come again (the run
    // log's upsert absorbs them), the other two are not lost.
    assert_eq!(recovered.records, 4);
    assert_eq!(ids(&read), names(0..4));
}

#[test]
fn a_torn_last_frame_is_cut_at_open_and_the_next_append_reads_whole() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut journal, _) = open(dir.path());
        journal.append(&frames(0..2)).unwrap();
        journal.sync().unwrap();
    }
    let path = only_segment(dir.path());
    let half = &frames(2..3)[..20];
    OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap()
        .write_all(half)
        .unwrap();
    let (mut journal, recovered) = open(dir.path());
    assert_eq!((recovered.records, recovered.torn_bytes), (2, 20));
    journal.append(&frames(3..4)).unwrap();
    let read = journal.read(100).unwrap();
    assert_eq!(ids(&read), ["r00000", "r00001", "r00003"]);
    assert_eq!(read.corrupt_bytes, 0);
}

#[test]
fn a_corrupt_frame_in_the_middle_costs_that_record_only() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut journal, _) = open(dir.path());
        journal.append(&frames(0..3)).unwrap();
        journal.sync().unwrap();
    }
    let path = only_segment(dir.path());
    let mut bytes = fs::read(&path).unwrap();
    let n = frames(0..1).len();
    bytes[n + HEADER + 10] ^= 0x55;
    fs::write(&path, &bytes).unwrap();
    let (journal, recovered) = open(dir.path());
    assert_eq!((recovered.records, recovered.corrupt_bytes), (2, n as u64));
    let read = journal.read(100).unwrap();
    assert_eq!(ids(&read), ["r00000", "r00002"]);
}

#[test]
fn a_partial_write_on_a_full_disk_is_cut_back_and_nothing_else_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let (mut journal, _) = open(dir.path());
    journal.append(&frames(0..2)).unwrap();
    let len_before = journal.bytes();
    // The disk fills up halfway through the next write.
    let failed = journal.append_with(&frames(2..4), |file, bytes| {
        file.write_all(&bytes[..bytes.len() / 2])?;
        Err(io::Error::new(
            io::ErrorKind::StorageFull,
            "No space left on device",
        ))
    });
    assert_eq!(failed.unwrap_err().kind(), io::ErrorKind::StorageFull);
    assert_eq!(journal.bytes(), len_before);
    assert_eq!(
        fs::metadata(only_segment(dir.path())).unwrap().len(),
        len_before,
        "the partial frames are cut off the file"
    );
    // Space again: the next append is whole and readable.
    journal.append(&frames(4..5)).unwrap();
    journal.sync().unwrap();
    drop(journal);
    let (journal, recovered) = open(dir.path());
    assert_eq!((recovered.torn_bytes, recovered.corrupt_bytes), (0, 0));
    assert_eq!(
        ids(&journal.read(100).unwrap()),
        ["r00000", "r00001", "r00004"]
    );
}

#[test]
fn the_bound_refuses_what_does_not_fit_and_keeps_what_is_there() {
    let dir = tempfile::tempdir().unwrap();
    let n = frames(0..1).len() as u64;
    let mut config = JournalConfig::new(dir.path().to_path_buf());
    config.max_bytes = 3 * n;
    let (mut journal, _) = Journal::open(config).unwrap();
    journal.append(&frames(0..3)).unwrap();
    let full = journal.append(&frames(3..4)).unwrap_err();
    assert_eq!(full.kind(), io::ErrorKind::StorageFull);
    assert_eq!(ids(&journal.read(100).unwrap()), names(0..3));
    // Shipping makes room again.
    let read = journal.read(100).unwrap();
    journal.ack(read.end).unwrap();
    journal.append(&frames(3..4)).unwrap();
    assert_eq!(ids(&journal.read(100).unwrap()), names(3..4));
}

#[test]
fn segments_roll_and_go_once_shipped() {
    let dir = tempfile::tempdir().unwrap();
    let n = frames(0..1).len() as u64;
    let mut config = JournalConfig::new(dir.path().to_path_buf());
    config.segment_bytes = 2 * n;
    let (mut journal, _) = Journal::open(config.clone()).unwrap();
    for i in 0..7 {
        journal.append(&frames(i..i + 1)).unwrap();
    }
    journal.sync().unwrap();
    assert_eq!(segment_ids(dir.path()).unwrap().len(), 4);
    let read = journal.read(5).unwrap();
    assert_eq!(ids(&read), names(0..5));
    journal.ack(read.end).unwrap();
    assert_eq!(
        segment_ids(dir.path()).unwrap().len(),
        2,
        "two shipped segments removed"
    );
    drop(journal);
    // Reopened, the segments come back in order from the oldest kept.
    let (journal, recovered) = Journal::open(config).unwrap();
    assert_eq!(recovered.records, 3);
    assert_eq!(ids(&journal.read(100).unwrap()), names(4..7));
}
