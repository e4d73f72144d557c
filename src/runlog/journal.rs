//! The worker's run journal: every run record is written here, to local
//! disk, before it is shipped to the run log, and stays until the run log
//! has acknowledged it. A worker that is killed loses nothing it journaled:
//! the next process on the same journal ships it.
//!
//! On disk: a directory of segment files (`<id>.journal`, 16 hex digits),
//! written in order, each a sequence of frames:
//!
//! ```text
//! magic (4 bytes) | length (u32 LE) | CRC-32 of the payload (u32 LE) | payload (JSON)
//! ```
//!
//! The writer appends frames to the newest segment and rolls to a new one
//! past `segment_bytes`. The reader ships from a cursor; a segment wholly
//! behind it is deleted, and the newest is emptied once everything in it is
//! shipped, so a healthy journal stays near empty. The cursor is not
//! persisted: a restart ships the whole journal again, and the run log's
//! idempotent upsert on `run_id` absorbs the repeats.
//!
//! Damage is contained, never spread: a torn or partial last frame (a crash
//! mid-write, a full disk) is cut off at open and after a write error; a
//! corrupt frame in the middle is skipped, with the frames after it found
//! again by their magic and checksum, and counted. The journal is bounded
//! by `max_bytes`: what does not fit is refused, for the caller to ship
//! from memory.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::RunRecord;

/// Marks the start of a frame, so frames after a corrupt one can be found.
const MAGIC: [u8; 4] = *b"DCj1";
const HEADER: usize = 12;
/// No record comes near this (output is capped far below); a longer length
/// field is damage.
const MAX_FRAME: usize = 64 << 20;

#[derive(Debug, Clone)]
pub struct JournalConfig {
    pub dir: PathBuf,
    /// Roll to a new segment past this many bytes.
    pub segment_bytes: u64,
    /// Refuse appends past this many bytes in all segments.
    pub max_bytes: u64,
}

impl JournalConfig {
    pub fn new(dir: PathBuf) -> JournalConfig {
        JournalConfig {
            dir,
            segment_bytes: 8 << 20,
            max_bytes: 1 << 30,
        }
    }
}

/// A place in the journal: a segment and a byte offset in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    pub segment: u64,
    pub offset: u64,
}

/// What [`Journal::open`] found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovered {
    /// Records waiting to be shipped.
    pub records: u64,
    /// Bytes cut off the end of segments (torn frames).
    pub torn_bytes: u64,
    /// Bytes of corrupt frames skipped in the middle.
    pub corrupt_bytes: u64,
}

/// Records read from the cursor, and where the read ended.
#[derive(Debug)]
pub struct Read {
    pub records: Vec<RunRecord>,
    pub end: Position,
    /// Bytes skipped as corrupt on the way.
    pub corrupt_bytes: u64,
}

#[derive(Debug)]
struct Segment {
    id: u64,
    len: u64,
}

pub struct Journal {
    config: JournalConfig,
    /// Oldest first; the last one is written to.
    segments: VecDeque<Segment>,
    active: File,
    cursor: Position,
    /// Written since the last sync.
    dirty: bool,
}

/// The frames of `bytes` from `from` on: each frame's payload range and the
/// offset just past it, skipping damage. Returns the frames, the offset just
/// past the last good frame, and how many bytes in between were skipped as
/// corrupt (damage followed by a good frame). Pure, for table tests.
pub fn scan(bytes: &[u8], from: usize) -> (Vec<(std::ops::Range<usize>, usize)>, usize, u64) {
    let mut frames = Vec::new();
    let mut at = from;
    let mut good_end = from;
    let mut corrupt = 0u64;
    while at < bytes.len() {
        match frame_at(bytes, at) {
            Some(payload) => {
                let end = payload.end;
                corrupt += (at - good_end) as u64;
                frames.push((payload, end));
                at = end;
                good_end = end;
            }
            // Damage: look for the next frame that checks out.
            None => match find_magic(bytes, at + 1) {
                Some(next) => at = next,
                None => break,
            },
        }
    }
    (frames, good_end, corrupt)
}

/// The payload of a valid frame starting at `at`, if one does.
fn frame_at(bytes: &[u8], at: usize) -> Option<std::ops::Range<usize>> {
    let header = bytes.get(at..at + HEADER)?;
    if header[..4] != MAGIC {
        return None;
    }
    let len = u32::from_le_bytes(header[4..8].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(header[8..12].try_into().ok()?);
    if len > MAX_FRAME {
        return None;
    }
    let payload = at + HEADER..at + HEADER + len;
    let body = bytes.get(payload.clone())?;
    (crc32fast::hash(body) == crc).then_some(payload)
}

fn find_magic(bytes: &[u8], from: usize) -> Option<usize> {
    bytes
        .get(from..)?
        .windows(MAGIC.len())
        .position(|w| w == MAGIC)
        .map(|i| from + i)
}

/// One record as a frame.
pub fn encode(record: &RunRecord, out: &mut Vec<u8>) -> io::Result<()> {
    let payload = serde_json::to_vec(record).map_err(io::Error::other)?;
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    Ok(())
}

fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:016x}.journal"))
}

fn segment_ids(dir: &Path) -> io::Result<Vec<u64>> {
    let mut ids = Vec::new();
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        if let Some(id) = name
            .strip_suffix(".journal")
            .and_then(|hex| u64::from_str_radix(hex, 16).ok())
        {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    Ok(ids)
}

fn open_for_append(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .open(path)
}

/// Make a new or removed file name durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl Journal {
    /// Open the journal in `config.dir`, keeping what an earlier process
    /// left and cutting torn frames off the end of each segment.
    pub fn open(config: JournalConfig) -> io::Result<(Journal, Recovered)> {
        fs::create_dir_all(&config.dir)?;
        let mut recovered = Recovered::default();
        let mut segments = VecDeque::new();
        for id in segment_ids(&config.dir)? {
            let path = segment_path(&config.dir, id);
            let bytes = fs::read(&path)?;
            let (frames, good_end, corrupt) = scan(&bytes, 0);
            if good_end < bytes.len() {
                let torn = (bytes.len() - good_end) as u64;
                tracing::warn!(path = %path.display(), torn, "cutting a torn frame off the journal");
                OpenOptions::new()
                    .write(true)
                    .open(&path)?
                    .set_len(good_end as u64)?;
                recovered.torn_bytes += torn;
            }
            if corrupt > 0 {
                tracing::error!(path = %path.display(), corrupt, "journal frames damaged; skipping them");
            }
            recovered.corrupt_bytes += corrupt;
            recovered.records += frames.len() as u64;
            segments.push_back(Segment {
                id,
                len: good_end as u64,
            });
        }
        if segments.is_empty() {
            segments.push_back(Segment { id: 1, len: 0 });
        }
        let last = segments.back().map(|s| s.id).unwrap_or(1);
        let active = open_for_append(&segment_path(&config.dir, last))?;
        sync_dir(&config.dir)?;
        let cursor = Position {
            segment: segments.front().map(|s| s.id).unwrap_or(1),
            offset: 0,
        };
        let journal = Journal {
            config,
            segments,
            active,
            cursor,
            dirty: false,
        };
        Ok((journal, recovered))
    }

    /// Bytes in the journal (shipped or not).
    pub fn bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.len).sum()
    }

    /// Nothing left to ship.
    pub fn is_empty(&self) -> bool {
        self.cursor >= self.end()
    }

    fn end(&self) -> Position {
        let last = self.segments.back().expect("a journal has a segment");
        Position {
            segment: last.id,
            offset: last.len,
        }
    }

    /// Whether `extra` more bytes fit under the bound.
    pub fn fits(&self, extra: u64) -> bool {
        self.bytes() + extra <= self.config.max_bytes
    }

    /// Append encoded frames (see [`encode`]), not yet synced. On a write
    /// error the segment is cut back to its last whole frame, so a partial
    /// write never glues to the next one.
    pub fn append(&mut self, frames: &[u8]) -> io::Result<()> {
        self.append_with(frames, |file, bytes| file.write_all(bytes))
    }

    /// [`Journal::append`] through `write`: the seam where tests inject a
    /// disk that fills up halfway through a write.
    fn append_with(
        &mut self,
        frames: &[u8],
        write: impl FnOnce(&mut File, &[u8]) -> io::Result<()>,
    ) -> io::Result<()> {
        if frames.is_empty() {
            return Ok(());
        }
        if !self.fits(frames.len() as u64) {
            return Err(io::Error::new(
                io::ErrorKind::StorageFull,
                format!("journal full ({} bytes)", self.config.max_bytes),
            ));
        }
        self.roll_if_full()?;
        let written = write(&mut self.active, frames);
        let segment = self.segments.back_mut().expect("a journal has a segment");
        if let Err(error) = written {
            // Drop whatever part landed; the frames are not in the journal.
            if let Err(cut) = self.active.set_len(segment.len) {
                tracing::error!(%cut, "cannot cut a partial write off the journal");
            }
            return Err(error);
        }
        segment.len += frames.len() as u64;
        self.dirty = true;
        Ok(())
    }

    /// Make everything appended durable: one fsync for the whole group.
    /// Returns whether a sync was needed.
    pub fn sync(&mut self) -> io::Result<bool> {
        if !self.dirty {
            return Ok(false);
        }
        self.active.sync_data()?;
        self.dirty = false;
        Ok(true)
    }

    fn roll_if_full(&mut self) -> io::Result<()> {
        let last = self.segments.back().expect("a journal has a segment");
        if last.len < self.config.segment_bytes {
            return Ok(());
        }
        let id = last.id + 1;
        self.sync()?;
        self.active = open_for_append(&segment_path(&self.config.dir, id))?;
        sync_dir(&self.config.dir)?;
        self.segments.push_back(Segment { id, len: 0 });
        Ok(())
    }

    /// Up to `max` records from the cursor on, across segments.
    pub fn read(&self, max: usize) -> io::Result<Read> {
        self.read_from(None, max)
    }

    /// Up to `max` records from `start` (the cursor if `None`) on.
    pub fn read_from(&self, start: Option<Position>, max: usize) -> io::Result<Read> {
        let start = start.unwrap_or(self.cursor);
        let mut read = Read {
            records: Vec::new(),
            end: start,
            corrupt_bytes: 0,
        };
        for segment in self.segments.iter().filter(|s| s.id >= start.segment) {
            let from = if segment.id == start.segment {
                start.offset
            } else {
                0
            };
            read.end = Position {
                segment: segment.id,
                offset: from,
            };
            if from >= segment.len {
                continue;
            }
            let bytes = read_prefix(&segment_path(&self.config.dir, segment.id), segment.len)?;
            let (frames, good_end, corrupt) = scan(&bytes, from as usize);
            read.corrupt_bytes += corrupt;
            for (payload, end) in frames {
                if read.records.len() >= max {
                    return Ok(read);
                }
                match serde_json::from_slice::<RunRecord>(&bytes[payload]) {
                    Ok(record) => read.records.push(record),
                    Err(error) => {
                        tracing::error!(%error, segment = segment.id, "journal frame is not a run record; skipping it")
                    }
                }
                read.end.offset = end as u64;
            }
            // Past the last good frame, the rest of the segment is damage.
            read.end.offset = (good_end as u64).max(read.end.offset);
            if good_end < bytes.len() {
                read.corrupt_bytes += (bytes.len() - good_end) as u64;
                read.end.offset = segment.len;
            }
        }
        Ok(read)
    }

    /// Everything before `end` is shipped: delete the segments wholly
    /// behind it, and empty the newest once all of it is.
    pub fn ack(&mut self, end: Position) -> io::Result<()> {
        self.cursor = self.cursor.max(end);
        let mut removed = false;
        while self.segments.len() > 1 {
            let oldest = &self.segments[0];
            if self.cursor.segment <= oldest.id {
                break;
            }
            fs::remove_file(segment_path(&self.config.dir, oldest.id))?;
            self.segments.pop_front();
            removed = true;
        }
        if removed {
            sync_dir(&self.config.dir)?;
        }
        let only = self.segments.len() == 1;
        let last = self.segments.back_mut().expect("a journal has a segment");
        let all_shipped = self.cursor.segment == last.id && self.cursor.offset >= last.len;
        if only && all_shipped && last.len > 0 {
            // Not synced: if this is lost, a restart ships the records again.
            self.active.set_len(0)?;
            last.len = 0;
            self.cursor.offset = 0;
        }
        Ok(())
    }
}

/// The first `len` bytes of a file (what this process knows is written).
fn read_prefix(path: &Path, len: u64) -> io::Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::with_capacity(len as usize);
    File::open(path)?.take(len).read_to_end(&mut bytes)?;
    Ok(bytes)
}

#[cfg(test)]
mod tests;
