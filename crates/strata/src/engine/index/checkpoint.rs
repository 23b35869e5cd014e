//! The index checkpoint: a copy of the in-memory indexes (stream heads, the memtables of
//! segments without a table, recent ids) and of the segments' sparse position indexes,
//! valid up to a durable point of the log, so that opening a large store scans only the
//! log written after it. Event locations of segments with a table are not in it: it
//! grows with streams, not with events.
//!
//! ```text
//! "STRATIDX"  u32 version (3)  u32 reserved
//! 16-byte store id (the one in every segment header of the store)
//! u32 segment count, then per segment:
//!     u32 number  u64 first position  u32 end offset  u64 end position
//!     u32 offset of the last frame covered (0xFFFF_FFFF: none)
//!     u32 sparse count, then (u64 position, u32 offset) each
//! u64 event count
//! u64 stream count, then per stream:
//!     u16 name length, name, u8 flags (1 tombstoned, 2 metadata follows)
//!     [u32 length, metadata JSON]  u64 next revision
//! u32 memtable count, then per memtable:
//!     u32 segment number, u64 run count, then per run:
//!         u16 name length, name, u64 first revision, u32 count, then u32 offset each
//! u64 recent id count, then (16-byte id, u64 location) each, oldest first
//! u32 CRC32C of everything before it
//! ```
//!
//! Version 2 (per stream, `u64 location count` and a `u64` location each instead of the
//! next revision, and no memtables) is still read: its locations become memtables.
//!
//! The checkpoint is derived data: if it is missing, damaged, of another version, of
//! another store, or disagrees with the segment files (a covered segment's last frame is
//! not where it says, or does not end where it says), the index is rebuilt from the
//! log. It is never trusted to decide where the log ends: a wrong resume point would
//! otherwise make valid frames look like a torn tail and cut them.

use std::sync::Arc;

use uuid::Uuid;

use super::{Index, Location, Memtable, StreamEntry};
use crate::engine::format::{u16_at, u32_at, u64_at};
use crate::engine::state::Segments;
use crate::metadata::StreamMetadata;

/// The checkpoint's file name.
pub const FILE_NAME: &str = "index.ckpt";
/// The name it is written under before being renamed into place.
pub const TEMP_FILE_NAME: &str = "index.ckpt.tmp";
const MAGIC: &[u8; 8] = b"STRATIDX";
const VERSION: u32 = 3;
/// The previous version, still read.
const VERSION_2: u32 = 2;
/// `last_frame_offset` on disk when a segment has no frame.
const NO_FRAME: u32 = u32::MAX;

/// What a checkpoint says about one segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentSummary {
    /// Segment number.
    pub number: u32,
    /// Position of its first event.
    pub first_position: u64,
    /// End of the frames covered.
    pub end_offset: u32,
    /// Position after the last event covered.
    pub end_position: u64,
    /// Where the last frame covered starts (`None`: the segment has no frame).
    pub last_frame_offset: Option<u32>,
    /// Sparse index entries.
    pub sparse: Vec<(u64, u32)>,
}

/// A decoded checkpoint.
#[derive(Debug)]
pub struct Checkpoint {
    /// The store it was written for.
    pub store_id: Uuid,
    /// The segments it covers; the last one is where the scan resumes.
    pub segments: Vec<SegmentSummary>,
    /// The indexes as of the covered point.
    pub index: Index,
}

/// Serialises the segments and indexes.
pub fn encode(segments: &Segments, index: &Index) -> Vec<u8> {
    let memtable_events: u64 = index.memtables.values().map(Memtable::events).sum();
    let capacity = 64usize
        .saturating_add((memtable_events as usize).saturating_mul(4))
        .saturating_add(index.streams.len().saturating_mul(40));
    let mut out = Vec::with_capacity(capacity);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(segments.store_id.as_bytes());
    out.extend_from_slice(&(segments.list.len() as u32).to_le_bytes());
    for segment in &segments.list {
        out.extend_from_slice(&segment.number.to_le_bytes());
        out.extend_from_slice(&segment.first_position.to_le_bytes());
        out.extend_from_slice(&segment.end_offset.to_le_bytes());
        out.extend_from_slice(&segment.end_position.to_le_bytes());
        out.extend_from_slice(&segment.last_frame_offset.unwrap_or(NO_FRAME).to_le_bytes());
        out.extend_from_slice(&(segment.sparse.len() as u32).to_le_bytes());
        for &(position, offset) in &segment.sparse {
            out.extend_from_slice(&position.to_le_bytes());
            out.extend_from_slice(&offset.to_le_bytes());
        }
    }
    out.extend_from_slice(&index.events.to_le_bytes());
    out.extend_from_slice(&(index.streams.len() as u64).to_le_bytes());
    for (name, entry) in &index.streams {
        put_name(&mut out, name);
        let flags = u8::from(entry.tombstoned) | (u8::from(entry.metadata.is_some()) << 1);
        out.push(flags);
        if let Some(metadata) = &entry.metadata {
            let json = metadata.to_json().to_string();
            out.extend_from_slice(&(json.len() as u32).to_le_bytes());
            out.extend_from_slice(json.as_bytes());
        }
        out.extend_from_slice(&entry.next_revision.to_le_bytes());
    }
    out.extend_from_slice(&(index.memtables.len() as u32).to_le_bytes());
    for (&segment, memtable) in &index.memtables {
        out.extend_from_slice(&segment.to_le_bytes());
        out.extend_from_slice(&(memtable.streams() as u64).to_le_bytes());
        for (name, first_revision, offsets) in memtable.runs() {
            put_name(&mut out, name);
            out.extend_from_slice(&first_revision.to_le_bytes());
            out.extend_from_slice(&(offsets.len() as u32).to_le_bytes());
            for offset in offsets {
                out.extend_from_slice(&offset.to_le_bytes());
            }
        }
    }
    out.extend_from_slice(&(index.recent.len() as u64).to_le_bytes());
    for (id, location) in index.recent.iter() {
        out.extend_from_slice(id.as_bytes());
        out.extend_from_slice(&location.0.to_le_bytes());
    }
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

fn put_name(out: &mut Vec<u8>, name: &str) {
    out.extend_from_slice(&(name.len() as u16).to_le_bytes());
    out.extend_from_slice(name.as_bytes());
}

struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], &'static str> {
        let end = self.at.checked_add(n).ok_or("length overflow")?;
        let slice = self.bytes.get(self.at..end).ok_or("checkpoint truncated")?;
        self.at = end;
        Ok(slice)
    }
    fn name(&mut self) -> Result<&'a str, &'static str> {
        let len = usize::from(self.u16()?);
        std::str::from_utf8(self.take(len)?).map_err(|_| "stream name not UTF-8")
    }
    fn u16(&mut self) -> Result<u16, &'static str> {
        Ok(u16_at(self.take(2)?, 0))
    }
    fn u32(&mut self) -> Result<u32, &'static str> {
        Ok(u32_at(self.take(4)?, 0))
    }
    fn u64(&mut self) -> Result<u64, &'static str> {
        Ok(u64_at(self.take(8)?, 0))
    }
    /// A count of items of at least `item_len` bytes each, checked against what is left.
    fn count(&mut self, wide: bool, item_len: usize) -> Result<usize, &'static str> {
        let n = if wide {
            self.u64()?
        } else {
            u64::from(self.u32()?)
        };
        let left = (self.bytes.len() - self.at) as u64;
        if n.saturating_mul(item_len as u64) > left {
            return Err("count larger than the checkpoint");
        }
        Ok(n as usize)
    }
}

/// Parses and checks a checkpoint.
pub fn decode(bytes: &[u8], recent_ids_max: usize) -> Result<Checkpoint, &'static str> {
    if bytes.len() < 20 {
        return Err("checkpoint truncated");
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    if crc32c::crc32c(body) != u32_at(crc, 0) {
        return Err("checkpoint checksum mismatch");
    }
    let mut c = Cursor { bytes: body, at: 0 };
    if c.take(8)? != MAGIC {
        return Err("not a checkpoint");
    }
    let version = c.u32()?;
    if version != VERSION && version != VERSION_2 {
        return Err("checkpoint of another version");
    }
    c.u32()?;
    let store_id = Uuid::from_slice(c.take(16)?).map_err(|_| "bad store id")?;
    let mut segments = Vec::new();
    for _ in 0..c.count(false, 32)? {
        let number = c.u32()?;
        let first_position = c.u64()?;
        let end_offset = c.u32()?;
        let end_position = c.u64()?;
        let last_frame_offset = Some(c.u32()?).filter(|&offset| offset != NO_FRAME);
        let mut sparse = Vec::new();
        for _ in 0..c.count(false, 12)? {
            sparse.push((c.u64()?, c.u32()?));
        }
        segments.push(SegmentSummary {
            number,
            first_position,
            end_offset,
            end_position,
            last_frame_offset,
            sparse,
        });
    }
    let mut index = Index::new(recent_ids_max);
    index.events = c.u64()?;
    for _ in 0..c.count(true, 11)? {
        let name: Arc<str> = c.name()?.into();
        let flags = c.take(1)?[0];
        let metadata = if flags & 2 != 0 {
            let len = c.u32()? as usize;
            let metadata =
                StreamMetadata::from_slice(c.take(len)?).map_err(|_| "invalid metadata")?;
            Some(Arc::new(metadata))
        } else {
            None
        };
        let next_revision = if version == VERSION_2 {
            // Version 2 held every location: they become memtables.
            let count = c.count(true, 8)?;
            for (revision, chunk) in c.take(count * 8)?.chunks_exact(8).enumerate() {
                let location = Location(u64_at(chunk, 0));
                index
                    .memtables
                    .entry(location.segment())
                    .or_default()
                    .add(&name, revision as u64, std::iter::once(location.offset()))
                    .map_err(|_| "locations out of order")?;
            }
            count as u64
        } else {
            c.u64()?
        };
        if next_revision > 0 {
            index.streams_with_events += 1;
        }
        let entry = StreamEntry {
            next_revision,
            tombstoned: flags & 1 != 0,
            metadata,
        };
        if index.streams.insert(name, entry).is_some() {
            return Err("a stream appears twice");
        }
    }
    if version == VERSION {
        for _ in 0..c.count(false, 12)? {
            let segment = c.u32()?;
            let mut memtable = Memtable::default();
            for _ in 0..c.count(true, 14)? {
                let name = c.name()?;
                let first_revision = c.u64()?;
                let count = c.count(false, 4)?;
                let offsets = c.take(count * 4)?.chunks_exact(4).map(|o| u32_at(o, 0));
                let (name, entry) = index
                    .streams
                    .get_key_value(name)
                    .ok_or("a memtable names an unknown stream")?;
                if first_revision.saturating_add(count as u64) > entry.next_revision {
                    return Err("a memtable locates revisions its stream does not have");
                }
                memtable
                    .add(name, first_revision, offsets)
                    .map_err(|_| "a memtable run appears twice")?;
            }
            if index.memtables.insert(segment, memtable).is_some() {
                return Err("a memtable appears twice");
            }
        }
    }
    for _ in 0..c.count(true, 24)? {
        let id = Uuid::from_slice(c.take(16)?).map_err(|_| "bad id")?;
        index.recent.insert(id, Location(c.u64()?));
    }
    if c.at != body.len() {
        return Err("trailing bytes in checkpoint");
    }
    // Invariant of the index (every indexed event has one location): the count is
    // derived data that later code sizes buffers by, so it must agree.
    let located: u64 = index
        .streams
        .values()
        .map(|entry| entry.next_revision)
        .sum();
    if located != index.events {
        return Err("event count does not match the streams");
    }
    Ok(Checkpoint {
        store_id,
        segments,
        index,
    })
}

/// Writes a checkpoint crash-atomically: to a temporary file, synced, renamed into place,
/// and the directory synced.
pub fn write(storage: &dyn crate::engine::io::Storage, bytes: &[u8]) -> std::io::Result<()> {
    match storage.remove(TEMP_FILE_NAME) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => return Err(error),
        _ => {}
    }
    let file = storage.create(TEMP_FILE_NAME)?;
    file.write_at(bytes, 0)?;
    file.sync_data()?;
    storage.rename(TEMP_FILE_NAME, FILE_NAME)?;
    storage.sync_dir()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the `store_files` fuzz target: a checkpoint whose event count disagreed
    /// with its streams was accepted, and the next checkpoint write sized its buffer by
    /// that count (an allocation of petabytes, and the process aborted).
    #[test]
    fn an_event_count_that_disagrees_with_the_streams_is_refused() {
        let mut bytes = encode(&Segments::default(), &Index::new(4));
        assert!(decode(&bytes, 4).is_ok());
        // Zero segments: the event count follows the 36-byte preamble (magic, version,
        // reserved, store id, segment count).
        bytes[36..44].copy_from_slice(&(1u64 << 50).to_le_bytes());
        let end = bytes.len() - 4;
        let crc = crc32c::crc32c(&bytes[..end]);
        bytes[end..].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(
            decode(&bytes, 4).map(|c| c.index.events),
            Err("event count does not match the streams")
        );
    }
}
