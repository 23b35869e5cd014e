//! The index checkpoint: a copy of the in-memory indexes (stream heads, the memtables of
//! segments without a table, recent ids) and of the segments' sparse position indexes,
//! valid up to a durable point of the log, so that opening a large store scans only the
//! log written after it. Event locations of segments with a table are not in it: it
//! grows with streams, not with events.
//!
//! ```text
//! "STRATIDX"  u32 version (4)  u32 reserved
//! 16-byte store id (the one in every segment header of the store)
//! u32 segment count, then per segment:
//!     u32 number  u64 first position  u32 end offset  u64 end position
//!     u32 offset of the last frame covered (0xFFFF_FFFF: none)
//!     u32 sparse count, then (u64 position, u32 offset) each
//! u64 event count
//! u64 stream count n, u64 bytes of all stream names together; then, in the order of
//! the streams' ids (a stream's id is its place in these columns):
//!     the names back to back
//!     u16 name length each (n of them)
//!     u64 next revision each, with the top bit set for a tombstoned stream (n of them)
//! u64 count of streams with metadata, then (u32 stream id, u32 length, metadata JSON)
//!     each, ids increasing
//! u64 count k, then u32 stream id each: the ids 0..k in name order (for listing
//!     streams a page at a time; newer ids are sorted when first listed)
//! u32 memtable count, then per memtable:
//!     u32 segment number, u64 run count, then per run:
//!         u32 stream id, u64 first revision, u32 count, then u32 offset each
//! u64 recent id count, then (16-byte id, u64 location) each, oldest first
//! u32 CRC32C of everything before it
//! ```
//!
//! The heads are columns so that writing them is a few copies of the in-memory arrays
//! (the writer thread waits for the encoding) and reading them needs no allocation per
//! stream.
//!
//! Older versions are still read:
//! - version 3: per stream `u16 name length, name, u8 flags (1 tombstoned, 2 metadata
//!   follows), [u32 length, metadata JSON], u64 next revision` instead of the columns
//!   and the metadata list, and memtable runs name their stream (`u16` name length,
//!   name) instead of giving its id;
//! - version 2: as version 3, but per stream a `u64` location count and a `u64` location
//!   each instead of the next revision, and no memtables: its locations become
//!   memtables.
//!
//! The checkpoint is derived data: if it is missing, damaged, of another version, of
//! another store, or disagrees with the segment files (a covered segment's last frame is
//! not where it says, or does not end where it says), the index is rebuilt from the
//! log. It is never trusted to decide where the log ends: a wrong resume point would
//! otherwise make valid frames look like a torn tail and cut them.

use std::sync::Arc;

use uuid::Uuid;

use super::heads::TOMBSTONE_BIT;
use super::{Heads, Index, Location, Memtable, StreamId};
use crate::format::{u16_at, u32_at, u64_at};
use crate::metadata::StreamMetadata;
use crate::state::Segments;

/// The checkpoint's file name.
pub const FILE_NAME: &str = "index.ckpt";
/// The name it is written under before being renamed into place.
pub const TEMP_FILE_NAME: &str = "index.ckpt.tmp";
const MAGIC: &[u8; 8] = b"STRATIDX";
const VERSION: u32 = 4;
/// Older versions, still read.
const VERSION_3: u32 = 3;
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
        .saturating_add(index.heads.len().saturating_mul(14))
        .saturating_add(index.heads.name_bytes());
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
    let heads = &index.heads;
    out.extend_from_slice(&(heads.len() as u64).to_le_bytes());
    out.extend_from_slice(&(heads.name_bytes() as u64).to_le_bytes());
    // In id order: decoding gives each stream the same id, which memtables refer to.
    out.extend_from_slice(heads.name_arena());
    for len in heads.name_lens() {
        // Names are at most `u16::MAX` bytes: longer ones are refused before the log.
        out.extend_from_slice(&(len as u16).to_le_bytes());
    }
    for word in heads.revision_words() {
        out.extend_from_slice(&word.to_le_bytes());
    }
    let metadata = heads.metadata();
    out.extend_from_slice(&(metadata.len() as u64).to_le_bytes());
    for (id, metadata) in metadata {
        let json = metadata.to_json().to_string();
        out.extend_from_slice(&id.0.to_le_bytes());
        out.extend_from_slice(&(json.len() as u32).to_le_bytes());
        out.extend_from_slice(json.as_bytes());
    }
    let order = heads.name_order();
    out.extend_from_slice(&(order.len() as u64).to_le_bytes());
    for id in order.iter() {
        out.extend_from_slice(&id.0.to_le_bytes());
    }
    drop(order);
    out.extend_from_slice(&(index.memtables.len() as u32).to_le_bytes());
    for (&segment, memtable) in &index.memtables {
        out.extend_from_slice(&segment.to_le_bytes());
        out.extend_from_slice(&(memtable.streams() as u64).to_le_bytes());
        for (id, run) in memtable.runs() {
            out.extend_from_slice(&id.0.to_le_bytes());
            out.extend_from_slice(&run.first_revision().to_le_bytes());
            out.extend_from_slice(&(run.len() as u32).to_le_bytes());
            for offset in run.offsets() {
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
    if ![VERSION, VERSION_3, VERSION_2].contains(&version) {
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
    if version == VERSION {
        decode_heads(&mut c, &mut index)?;
    } else {
        decode_heads_v2_v3(&mut c, &mut index, version)?;
    }
    if version != VERSION_2 {
        for _ in 0..c.count(false, 12)? {
            let segment = c.u32()?;
            let runs = c.count(true, if version == VERSION { 16 } else { 14 })?;
            let mut memtable = Memtable::with_capacity(runs);
            for _ in 0..runs {
                let id = if version == VERSION {
                    let id = StreamId(c.u32()?);
                    if !index.heads.contains(id) {
                        return Err("a memtable names an unknown stream");
                    }
                    id
                } else {
                    index
                        .heads
                        .id(c.name()?)
                        .ok_or("a memtable names an unknown stream")?
                };
                let first_revision = c.u64()?;
                let count = c.count(false, 4)?;
                let offsets = c.take(count * 4)?.chunks_exact(4).map(|o| u32_at(o, 0));
                if first_revision.saturating_add(count as u64) > index.heads.next_revision(id) {
                    return Err("a memtable locates revisions its stream does not have");
                }
                memtable
                    .add(id, first_revision, offsets)
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
    let located = index.heads.events();
    if located != index.events {
        return Err("event count does not match the streams");
    }
    Ok(Checkpoint {
        store_id,
        segments,
        index,
    })
}

/// Reads the heads' columns (version 4).
fn decode_heads(c: &mut Cursor<'_>, index: &mut Index) -> Result<(), &'static str> {
    let streams = c.count(true, 11)?;
    let name_bytes = c.count(true, 1)?;
    let names = c.take(name_bytes)?.to_vec();
    let lens = c.take(streams.checked_mul(2).ok_or("count overflows")?)?;
    let lens = lens.chunks_exact(2).map(|l| usize::from(u16_at(l, 0)));
    let words = c.take(streams.checked_mul(8).ok_or("count overflows")?)?;
    let revisions: Vec<u64> = words.chunks_exact(8).map(|w| u64_at(w, 0)).collect();
    index.streams_with_events = revisions
        .iter()
        .filter(|&&word| word & !TOMBSTONE_BIT != 0)
        .count() as u64;
    index.heads = Heads::from_parts(names, lens, revisions)?;
    let mut previous = None;
    for _ in 0..c.count(true, 8)? {
        let id = StreamId(c.u32()?);
        if !index.heads.contains(id) || previous.is_some_and(|p| p >= id) {
            return Err("metadata of an unknown stream, or out of order");
        }
        previous = Some(id);
        let len = c.u32()? as usize;
        let metadata = StreamMetadata::from_slice(c.take(len)?).map_err(|_| "invalid metadata")?;
        index.heads.set_metadata(id, Some(Arc::new(metadata)));
    }
    let ordered = c.count(true, 4)?;
    let order = c.take(ordered * 4)?;
    let order = order
        .chunks_exact(4)
        .map(|id| StreamId(u32_at(id, 0)))
        .collect();
    index.heads.set_name_order(order)?;
    Ok(())
}

/// Reads the heads of a version 2 or 3 checkpoint: one record per stream (and, in
/// version 2, every location, which become memtables).
fn decode_heads_v2_v3(
    c: &mut Cursor<'_>,
    index: &mut Index,
    version: u32,
) -> Result<(), &'static str> {
    let streams = c.count(true, 11)?;
    // Sized once: growing a table of millions of streams rehashes it ~20 times.
    index.heads.reserve(streams, streams.saturating_mul(16));
    for _ in 0..streams {
        let name = c.name()?;
        let flags = c.take(1)?[0];
        let metadata = if flags & 2 != 0 {
            let len = c.u32()? as usize;
            let metadata =
                StreamMetadata::from_slice(c.take(len)?).map_err(|_| "invalid metadata")?;
            Some(Arc::new(metadata))
        } else {
            None
        };
        let id = index.heads.id_or_insert(name);
        if id.0 as usize + 1 != index.heads.len() {
            return Err("a stream appears twice");
        }
        let next_revision = if version == VERSION_2 {
            // Version 2 held every location: they become memtables.
            let count = c.count(true, 8)?;
            for (revision, chunk) in c.take(count * 8)?.chunks_exact(8).enumerate() {
                let location = Location(u64_at(chunk, 0));
                index
                    .memtables
                    .entry(location.segment())
                    .or_default()
                    .add(id, revision as u64, std::iter::once(location.offset()))
                    .map_err(|_| "locations out of order")?;
            }
            count as u64
        } else {
            c.u64()?
        };
        if next_revision & TOMBSTONE_BIT != 0 {
            return Err("revision out of range");
        }
        if next_revision > 0 {
            index.streams_with_events += 1;
        }
        index.heads.set_next_revision(id, next_revision);
        if flags & 1 != 0 {
            index.heads.set_tombstoned(id);
        }
        index.heads.set_metadata(id, metadata);
    }
    Ok(())
}

/// Writes a checkpoint crash-atomically: to a temporary file, synced, renamed into place,
/// and the directory synced.
pub fn write(storage: &dyn crate::io::Storage, bytes: &[u8]) -> std::io::Result<()> {
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
