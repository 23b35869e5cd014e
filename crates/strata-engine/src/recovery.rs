//! Opening a store: find the segments, load the index checkpoint, scan the log written
//! after it, and cut off a torn tail.
//!
//! Outcomes, by what is found:
//! - a torn or partly written last batch at the end of the last segment: cut off at the
//!   last valid frame, reported in [`OpenReport::truncated_tail`], never served;
//! - a damaged frame anywhere else (a sealed segment, or followed by frames of a later
//!   batch): [`StorageError::Corrupt`] naming the file and offset, and the store does not
//!   open;
//! - a last segment whose header was never completely written: removed and reported;
//! - a missing, damaged or stale checkpoint: the index is rebuilt from the log.
//!
//! Damage inside the very last batch is indistinguishable from a torn write (neither was
//! acknowledged if the sync did not complete) and is treated as one.

use std::sync::Arc;

use super::format::segment::{self, SegmentHeader};
use super::format::{frame, record};
use super::handles::{SegmentFile, SegmentHandles};
use super::index::checkpoint::{self, Checkpoint, SegmentSummary};
use super::index::table::{self, Table};
use super::index::{Index, IndexedRun, Location, METADATA_EVENT_TYPE, TOMBSTONE_EVENT_TYPE};
use super::io::{read_exact_at, read_full_at, Storage, StorageFile};
use super::options::Options;
use super::state::{SegmentInfo, Segments};
use crate::error::StorageError;

/// Bytes read at a time while scanning.
const SCAN_CHUNK_BYTES: usize = 1 << 20;

/// Frame and record headers on top of a batch's event bytes, generously: a torn tail
/// may be up to a batch's bytes, one more append, and this.
const TORN_FRAMING_SLACK_BYTES: u64 = 16 << 20;

/// A torn tail that was cut off when the store was opened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TruncatedTail {
    /// The segment file.
    pub file: String,
    /// Where the first invalid frame started (the new end of the file).
    pub offset: u64,
    /// How many bytes were cut off.
    pub bytes: u64,
    /// Why the first of them was invalid.
    pub reason: String,
    /// The side file the cut bytes were copied to (next to the segment), as evidence;
    /// `None` where nothing was cut (`verify` only reports).
    pub kept_in: Option<String>,
}

/// Where the index came from when the store was opened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IndexSource {
    /// The checkpoint, plus a scan of the log after it.
    Checkpoint,
    /// A full scan of the log, because the checkpoint was missing or unusable.
    Rebuilt {
        /// Why the checkpoint was not used.
        reason: String,
    },
}

/// What opening a store found and did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenReport {
    /// A torn tail that was cut off.
    pub truncated_tail: Option<TruncatedTail>,
    /// A last segment file whose header was never completely written, removed.
    pub removed_segment: Option<String>,
    /// Where the index came from.
    pub index_source: IndexSource,
    /// Events read from the log during the scan.
    pub scanned_events: u64,
    /// Events in the store.
    pub events: u64,
    /// The newest sealed segment, whose every frame checksum was verified at open
    /// because the checkpoint covered it (`None`: there was no such segment, or the
    /// scan read it anyway). Damage in older sealed segments is found by `verify`.
    pub verified_segment: Option<String>,
}

/// The state a store opens with.
pub struct Recovered {
    pub segments: Segments,
    pub index: Index,
    /// Sealed segments without a table: the indexer builds them.
    pub unindexed: Vec<u32>,
    pub report: OpenReport,
    pub last_recorded_at: u64,
}

struct Opened {
    number: u32,
    name: String,
    file: SegmentFile,
    header: SegmentHeader,
    len: u64,
}

fn io_error<'a>(
    operation: &'static str,
    file: &'a str,
) -> impl FnOnce(std::io::Error) -> StorageError + 'a {
    move |error| StorageError::io(operation, file, error)
}

/// Creates segment `number` starting at `first_position`: header written and synced, and
/// the directory synced so the new name survives a crash.
pub fn create_segment(
    storage: &dyn Storage,
    handles: &Arc<SegmentHandles>,
    number: u32,
    first_position: u64,
    store_id: uuid::Uuid,
) -> Result<SegmentInfo, StorageError> {
    let name = segment::file_name(number);
    let file = storage.create(&name).map_err(io_error("create", &name))?;
    let header = SegmentHeader {
        number,
        first_position,
        created_at_micros: crate::event::Timestamp::now().as_micros(),
        store_id,
    };
    file.write_at(&header.encode(), 0)
        .map_err(io_error("write", &name))?;
    file.sync_data().map_err(io_error("fdatasync", &name))?;
    storage
        .sync_dir()
        .map_err(io_error("sync directory of", &name))?;
    handles.insert(number, file);
    Ok(SegmentInfo {
        number,
        name,
        first_position,
        file: SegmentFile::new(number, handles.clone()),
        sparse: Vec::new(),
        end_offset: segment::HEADER_LEN as u32,
        end_position: first_position,
        last_frame_offset: None,
    })
}

/// Opens the segments, loads the checkpoint and scans the rest of the log.
pub fn recover(
    storage: &dyn Storage,
    handles: &Arc<SegmentHandles>,
    table_handles: &Arc<SegmentHandles>,
    options: &Options,
) -> Result<Recovered, StorageError> {
    let where_ = storage.describe();
    let names = storage.list().map_err(io_error("list", &where_))?;
    if names.iter().any(|n| n == checkpoint::TEMP_FILE_NAME) {
        // A checkpoint write that never reached its rename: derived data, discard.
        let _ = storage.remove(checkpoint::TEMP_FILE_NAME);
    }
    let mut numbers: Vec<u32> = names
        .iter()
        .filter_map(|n| segment::parse_file_name(n))
        .collect();
    numbers.sort_unstable();
    for pair in numbers.windows(2) {
        if pair[1] != pair[0] + 1 {
            return Err(StorageError::corrupt(
                segment::file_name(pair[0] + 1),
                0,
                "segment file is missing: segment numbers must have no gaps",
            ));
        }
    }
    let mut report = OpenReport {
        truncated_tail: None,
        removed_segment: None,
        index_source: IndexSource::Checkpoint,
        scanned_events: 0,
        events: 0,
        verified_segment: None,
    };
    let mut opened = open_segments(storage, handles, &numbers, &mut report)?;
    // A new store gets a fresh id; an existing one keeps the id of its first segment
    // (nil for stores older than store ids), which every other segment must carry too.
    let store_id = match opened.first() {
        Some(first) => first.header.store_id,
        None => uuid::Uuid::new_v4(),
    };
    if let Some(stranger) = opened.iter().find(|seg| seg.header.store_id != store_id) {
        return Err(StorageError::corrupt(
            &stranger.name,
            40,
            format!(
                "segment belongs to another store (store id {}, this store's is {store_id})",
                stranger.header.store_id
            ),
        ));
    }
    let (mut segments, mut index, resume) =
        match load_checkpoint(storage, options, &opened, store_id) {
            Ok(checkpoint) => from_checkpoint(checkpoint, &mut opened),
            Err(reason) => {
                report.index_source = IndexSource::Rebuilt { reason };
                (
                    Segments::default(),
                    Index::new(options.recent_ids_max),
                    (0, segment::HEADER_LEN as u32),
                )
            }
        };
    segments.store_id = store_id;
    load_tables(
        storage,
        table_handles,
        &names,
        &opened,
        store_id,
        &mut index,
    );
    let mut last_recorded_at = 0;
    let count = opened.len();
    for (i, seg) in opened.into_iter().enumerate() {
        let expected_first = segments.next_position();
        if i >= segments.list.len() {
            if i > 0 && seg.header.first_position != expected_first {
                return Err(StorageError::corrupt(
                    &seg.name,
                    16,
                    format!(
                        "segment starts at position {}, the previous one ends at {}",
                        seg.header.first_position, expected_first
                    ),
                ));
            }
            segments.list.push(SegmentInfo {
                number: seg.number,
                name: seg.name.clone(),
                first_position: seg.header.first_position,
                file: seg.file.clone(),
                sparse: Vec::new(),
                end_offset: segment::HEADER_LEN as u32,
                end_position: seg.header.first_position,
                last_frame_offset: None,
            });
        }
        if i < resume.0 {
            continue;
        }
        let info = &mut segments.list[i];
        let start = if i == resume.0 {
            resume.1
        } else {
            info.end_offset
        };
        let scan = Scan {
            info,
            index: &mut index,
            len: seg.len,
            // A removed half-created segment proves the one before it was sealed and
            // synced: damage there is corruption, not a torn tail.
            is_last: i + 1 == count && report.removed_segment.is_none(),
            storage,
            torn_bytes_max: options.batch_bytes_max as u64
                + options.limits.append_size_bytes_max as u64
                + TORN_FRAMING_SLACK_BYTES,
            scanned: &mut report.scanned_events,
            last_recorded_at: &mut last_recorded_at,
        };
        if let Some(tail) = scan.run(start)? {
            report.truncated_tail = Some(tail);
        }
    }
    if segments.list.is_empty() {
        segments
            .list
            .push(create_segment(storage, handles, 1, 0, store_id)?);
    }
    // The checkpoint spared the scan every sealed segment before the resume point; a
    // flipped byte there would otherwise go unnoticed until a read reaches it. The
    // newest of them (the one most recently written) is checked here, whole.
    if let Some(sealed) = resume.0.checked_sub(1).and_then(|i| segments.list.get(i)) {
        verify_sealed(sealed)?;
        report.verified_segment = Some(sealed.name.clone());
    }
    // Bytes a crashed process wrote but never synced may still sit in the page cache and
    // were just scanned as valid: make them durable before serving them, or a power loss
    // could take back events that readers saw, and their positions would be reused.
    if let Some(last) = segments.list.last() {
        last.file
            .open()?
            .sync_data()
            .map_err(|e| StorageError::io("fdatasync", &last.name, e))?;
    }
    let unindexed = index_sealed_segments(storage, handles, table_handles, &segments, &mut index)?;
    report.events = index.events;
    Ok(Recovered {
        segments,
        index,
        unindexed,
        report,
        last_recorded_at,
    })
}

/// Removes tables that cannot be trusted (of the last segment, which still grows, or of
/// no segment, and half-written ones) and puts the valid tables of sealed segments in
/// the index, in place of any memtable the checkpoint had for them.
fn load_tables(
    storage: &dyn Storage,
    table_handles: &Arc<SegmentHandles>,
    names: &[String],
    opened: &[Opened],
    store_id: uuid::Uuid,
    index: &mut Index,
) {
    let sealed = &opened[..opened.len().saturating_sub(1)];
    for name in names {
        let Some(number) = table::parse_file_name(name) else {
            continue;
        };
        let of_sealed = sealed.iter().any(|seg| seg.number == number);
        if !of_sealed || name.ends_with(".tmp") {
            table_handles.forget(number);
            if let Err(error) = storage.remove(name) {
                tracing::warn!(file = name.as_str(), %error, "cannot remove a stale segment table");
            }
        }
    }
    for seg in sealed {
        match Table::load(storage, table_handles, seg.number, store_id, seg.len) {
            Ok(table) => index.install_table(Arc::new(table)),
            Err(unusable) => {
                if names.contains(&table::file_name(seg.number)) {
                    tracing::warn!(segment = seg.number, reason = %unusable, "segment table not used; it is rebuilt");
                }
            }
        }
    }
}

/// After the scan: every sealed segment has a table, or a memtable and a place in the
/// returned list (the indexer builds its table). A sealed segment with neither (its
/// table went missing after a checkpoint relied on it) gets its table built now: its
/// events could not be found otherwise.
fn index_sealed_segments(
    storage: &dyn Storage,
    handles: &Arc<SegmentHandles>,
    table_handles: &Arc<SegmentHandles>,
    segments: &Segments,
    index: &mut Index,
) -> Result<Vec<u32>, StorageError> {
    let mut unindexed = Vec::new();
    let sealed = &segments.list[..segments.list.len().saturating_sub(1)];
    for seg in sealed {
        if index.tables.contains_key(&seg.number) {
            continue;
        }
        if index.memtables.contains_key(&seg.number) {
            unindexed.push(seg.number);
            continue;
        }
        let built = table::build(
            storage,
            handles,
            table_handles,
            seg.number,
            segments.store_id,
            u64::from(seg.end_offset),
        )?;
        index.install_table(Arc::new(built));
    }
    Ok(unindexed)
}

fn open_segments(
    storage: &dyn Storage,
    handles: &Arc<SegmentHandles>,
    numbers: &[u32],
    report: &mut OpenReport,
) -> Result<Vec<Opened>, StorageError> {
    let mut opened = Vec::with_capacity(numbers.len());
    for (i, &number) in numbers.iter().enumerate() {
        let name = segment::file_name(number);
        // Through the handle cache: a store of thousands of segments must not hold
        // them all open to read their headers.
        let file = handles.file(number)?;
        let len = file.len().map_err(io_error("stat", &name))?;
        let mut bytes = [0u8; segment::HEADER_LEN];
        let got = read_full_at(&*file, &mut bytes, 0).map_err(io_error("read", &name))?;
        match SegmentHeader::decode(&bytes[..got]) {
            Ok(header) if header.number == number => opened.push(Opened {
                number,
                name,
                file: SegmentFile::new(number, handles.clone()),
                header,
                len,
            }),
            Ok(header) => {
                return Err(StorageError::corrupt(
                    name,
                    16,
                    format!("header says segment {}", header.number),
                ))
            }
            Err(segment::HeaderError::Version(version)) => {
                return Err(StorageError::UnsupportedFormat {
                    file: name,
                    version,
                    supported: segment::VERSION,
                })
            }
            // The writer syncs a new segment's header before writing any frame to it, so a
            // bad header on a last segment no longer than a header is a creation that a
            // crash interrupted: nothing in it was ever acknowledged.
            Err(_) if i + 1 == numbers.len() && len <= segment::HEADER_LEN as u64 => {
                drop(file);
                handles.forget(number);
                storage.remove(&name).map_err(io_error("remove", &name))?;
                storage
                    .sync_dir()
                    .map_err(io_error("sync directory of", &name))?;
                report.removed_segment = Some(name);
            }
            Err(segment::HeaderError::Short) => {
                return Err(StorageError::corrupt(name, 0, "segment header truncated"))
            }
            Err(segment::HeaderError::Invalid(reason)) => {
                return Err(StorageError::corrupt(name, 0, reason))
            }
        }
    }
    Ok(opened)
}

fn load_checkpoint(
    storage: &dyn Storage,
    options: &Options,
    opened: &[Opened],
    store_id: uuid::Uuid,
) -> Result<Checkpoint, String> {
    let file = storage
        .open(checkpoint::FILE_NAME)
        .map_err(|e| format!("no usable checkpoint ({e})"))?;
    let len = file.len().map_err(|e| e.to_string())?;
    let mut bytes = vec![0u8; usize::try_from(len).map_err(|e| e.to_string())?];
    read_exact_at(&*file, &mut bytes, 0).map_err(|e| e.to_string())?;
    let checkpoint = checkpoint::decode(&bytes, options.recent_ids_max).map_err(str::to_owned)?;
    if checkpoint.store_id != store_id {
        return Err(format!(
            "checkpoint belongs to another store (store id {}, this store's is {store_id})",
            checkpoint.store_id
        ));
    }
    if checkpoint.segments.is_empty() || checkpoint.segments.len() > opened.len() {
        return Err("checkpoint does not match the segment files".into());
    }
    let last = checkpoint.segments.len() - 1;
    for (i, (summary, seg)) in checkpoint.segments.iter().zip(opened).enumerate() {
        let sealed_ok = i == last || u64::from(summary.end_offset) == seg.len;
        if summary.number != seg.number
            || summary.first_position != seg.header.first_position
            || u64::from(summary.end_offset) > seg.len
            || !sealed_ok
        {
            return Err(format!("checkpoint is stale for {}", seg.name));
        }
        check_last_frame(summary, seg)?;
    }
    Ok(checkpoint)
}

/// Proves that the checkpoint's end of `seg` is a frame boundary of this very file: the
/// frame it names as the last one covered is valid, ends exactly at the covered end and
/// holds the events right before the covered end position. One frame read per segment.
fn check_last_frame(summary: &SegmentSummary, seg: &Opened) -> Result<(), String> {
    let not_boundary = |why: &str| {
        format!(
            "checkpoint's end of {} (offset {}) is not a frame boundary of the file: {why}",
            seg.name, summary.end_offset
        )
    };
    let Some(start) = summary.last_frame_offset else {
        return if summary.end_offset == segment::HEADER_LEN as u32
            && summary.end_position == summary.first_position
        {
            Ok(())
        } else {
            Err(not_boundary("it names no last frame"))
        };
    };
    if start < segment::HEADER_LEN as u32 || start >= summary.end_offset {
        return Err(not_boundary("its last frame is out of range"));
    }
    let mut bytes = vec![0u8; (summary.end_offset - start) as usize];
    let file = seg.file.open().map_err(|e| not_boundary(&e.to_string()))?;
    read_exact_at(&*file, &mut bytes, u64::from(start))
        .map_err(|e| not_boundary(&e.to_string()))?;
    match frame::check(&bytes) {
        Ok(header)
            if header.length as usize == bytes.len()
                && header.end_position() == summary.end_position =>
        {
            Ok(())
        }
        Ok(_) => Err(not_boundary(
            "its last frame has another length or positions",
        )),
        Err(_) => Err(not_boundary(
            "no valid frame where its last frame should be",
        )),
    }
}

type Resume = (usize, u32);

fn from_checkpoint(checkpoint: Checkpoint, opened: &mut [Opened]) -> (Segments, Index, Resume) {
    let mut segments = Segments::default();
    for (summary, seg) in checkpoint.segments.into_iter().zip(opened.iter()) {
        segments.list.push(SegmentInfo {
            number: seg.number,
            name: seg.name.clone(),
            first_position: summary.first_position,
            file: seg.file.clone(),
            sparse: summary.sparse,
            end_offset: summary.end_offset,
            end_position: summary.end_position,
            last_frame_offset: summary.last_frame_offset,
        });
    }
    let last = segments.list.len() - 1;
    let resume = (last, segments.list[last].end_offset);
    (segments, checkpoint.index, resume)
}

/// Checks every frame of a sealed segment: checksums, record structure, positions without
/// gaps from the segment's first position, and an end exactly where the segment ends.
fn verify_sealed(sealed: &SegmentInfo) -> Result<(), StorageError> {
    let file = sealed.file.open()?;
    let extent = SealedExtent::of(sealed);
    let mut next = Some(extent.start());
    while let Some(at) = next {
        next = check_sealed_frames(&*file, &extent, at, SCAN_CHUNK_BYTES)?;
    }
    Ok(())
}

/// What the index knows of a sealed segment: the frames between the header and
/// `end_offset` hold positions `first_position..end_position`, and nothing else.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct SealedExtent {
    /// The segment's number.
    pub number: u32,
    /// Its file name (for errors).
    pub name: String,
    /// Position of its first event.
    pub first_position: u64,
    /// Where its frames end.
    pub end_offset: u64,
    /// Position after its last event.
    pub end_position: u64,
}

impl SealedExtent {
    /// The extent of `sealed` as the index knows it now.
    pub fn of(sealed: &SegmentInfo) -> SealedExtent {
        SealedExtent {
            number: sealed.number,
            name: sealed.name.clone(),
            first_position: sealed.first_position,
            end_offset: u64::from(sealed.end_offset),
            end_position: sealed.end_position,
        }
    }

    /// Where a check of its frames starts: the first frame, right after the header.
    pub fn start(&self) -> FrameCursor {
        FrameCursor {
            offset: segment::HEADER_LEN as u64,
            position: self.first_position,
        }
    }
}

/// How far a check of a sealed segment's frames got: the next frame must start at
/// `offset` and hold `position` first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct FrameCursor {
    /// Offset of the next frame in the file.
    pub offset: u64,
    /// Position the next frame must start at.
    pub position: u64,
}

/// Checks the frames of the sealed segment `extent` from `at` on, in one read of about
/// `chunk_bytes` (more if a single frame is larger): each frame's checksum, its records'
/// structure and positions, and positions in sequence from frame to frame. Returns
/// where the next call goes on, or `None` once the segment is done, after checking that
/// its frames end exactly at its end and hold exactly its positions.
///
/// Open (`verify_sealed`) and the background scrubber (`scrub`) both check through
/// this, so they agree on what damage is; the scrubber calls it one chunk at a time to
/// pace its reads and let go of the file in between.
pub(super) fn check_sealed_frames(
    file: &dyn StorageFile,
    extent: &SealedExtent,
    at: FrameCursor,
    chunk_bytes: usize,
) -> Result<Option<FrameCursor>, StorageError> {
    let name = extent.name.as_str();
    let end = extent.end_offset;
    if at.offset >= end {
        if at.offset == end && at.position == extent.end_position {
            return Ok(None);
        }
        return Err(StorageError::corrupt(
            name,
            at.offset,
            "sealed segment ends short of what the index says it holds",
        ));
    }
    let want = (chunk_bytes.max(frame::HEADER_LEN) as u64).min(end - at.offset) as usize;
    let mut buffer = vec![0u8; want];
    read_exact_at(file, &mut buffer, at.offset).map_err(io_error("read", name))?;
    let mut done = 0usize;
    let mut position = at.position;
    while done < buffer.len() {
        let here = at.offset + done as u64;
        let header = match frame::parse_header(&buffer[done..]) {
            Ok(header) => header,
            // The next frame's header straddles the end of this read: the next call.
            Err(frame::FrameError::Truncated) if done > 0 => break,
            Err(error) => return Err(sealed_frame_error(name, here, error)),
        };
        let length = header.length as usize;
        if here + length as u64 > end {
            return Err(StorageError::corrupt(
                name,
                here,
                "frame extends past the end of the sealed segment",
            ));
        }
        if length > buffer.len() - done {
            if done > 0 {
                break;
            }
            // One frame larger than a chunk: read it whole.
            buffer.resize(length, 0);
            read_exact_at(file, &mut buffer[want..], at.offset + want as u64)
                .map_err(io_error("read", name))?;
        }
        check_sealed_frame(name, &buffer[done..done + length], here, position)?;
        position = header.end_position();
        done += length;
    }
    Ok(Some(FrameCursor {
        offset: at.offset + done as u64,
        position,
    }))
}

/// Checks one whole frame of a sealed segment found at `offset`, which must start at
/// `position`.
fn check_sealed_frame(
    name: &str,
    bytes: &[u8],
    offset: u64,
    position: u64,
) -> Result<(), StorageError> {
    let header = frame::check(bytes).map_err(|error| sealed_frame_error(name, offset, error))?;
    if header.first_position != position {
        return Err(StorageError::corrupt(
            name,
            offset,
            "frame position out of sequence (in a sealed segment)",
        ));
    }
    let offsets = frame::record_offsets(bytes, &header)
        .map_err(|error| sealed_frame_error(name, offset, error))?;
    for (i, &at) in offsets.iter().enumerate() {
        let record_offset = offset + at as u64;
        // Without the record's own checksum: the frame's covers its bytes already.
        let view = record::decode(bytes, at, false)
            .map_err(|reason| StorageError::corrupt(name, record_offset, reason))?;
        if view.position != header.first_position + i as u64 {
            return Err(StorageError::corrupt(
                name,
                record_offset,
                "record position out of sequence (in a sealed segment)",
            ));
        }
    }
    Ok(())
}

fn sealed_frame_error(name: &str, offset: u64, error: frame::FrameError) -> StorageError {
    let reason = match error {
        frame::FrameError::Truncated => "frame truncated",
        frame::FrameError::Invalid(reason) => reason,
    };
    StorageError::corrupt(name, offset, format!("{reason} (in a sealed segment)"))
}

/// A run of one stream's events being collected from a frame.
struct RunBuilder<'a> {
    stream: &'a str,
    first_revision: u64,
    first_id: uuid::Uuid,
    offset: u64,
    tombstone: bool,
    metadata: Option<&'a [u8]>,
}

/// The scan of one segment.
struct Scan<'a> {
    info: &'a mut SegmentInfo,
    index: &'a mut Index,
    len: u64,
    is_last: bool,
    storage: &'a dyn Storage,
    /// The most bytes one unacknowledged batch can leave at the end of the log: a
    /// longer invalid tail cannot be a torn write, and is reported as damage.
    torn_bytes_max: u64,
    scanned: &'a mut u64,
    last_recorded_at: &'a mut u64,
}

impl Scan<'_> {
    /// Scans frames from `start` to the end of the file. Returns the tail it cut off.
    fn run(mut self, start: u32) -> Result<Option<TruncatedTail>, StorageError> {
        let name = self.info.name.clone();
        let file = self.info.file.open()?;
        let mut offset = u64::from(start);
        while offset < self.len {
            let want = (SCAN_CHUNK_BYTES as u64).min(self.len - offset) as usize;
            let mut buffer = vec![0u8; want];
            read_exact_at(&*file, &mut buffer, offset).map_err(io_error("read", &name))?;
            let mut at = 0usize;
            let mut bad = None;
            while at < buffer.len() {
                let here = offset + at as u64;
                let rest = &buffer[at..];
                match frame::parse_header(rest) {
                    Ok(header) if u64::from(header.length) > self.len - here => {
                        bad = Some("frame extends past the end of the file");
                    }
                    Ok(header) if header.length as usize > rest.len() => {
                        if at == 0 {
                            // One frame larger than a chunk: read it whole.
                            buffer.resize(header.length as usize, 0);
                            read_exact_at(&*file, &mut buffer[want..], offset + want as u64)
                                .map_err(io_error("read", &name))?;
                            continue;
                        }
                        break;
                    }
                    Ok(_) => match frame::check(rest) {
                        Ok(header) if header.first_position == self.info.end_position => {
                            self.apply_frame(&name, rest, &header, here)?;
                            at += header.length as usize;
                            continue;
                        }
                        Ok(_) => bad = Some("frame position out of sequence"),
                        Err(frame::FrameError::Invalid(reason)) => bad = Some(reason),
                        Err(frame::FrameError::Truncated) => bad = Some("frame truncated"),
                    },
                    Err(frame::FrameError::Truncated) if here + (rest.len() as u64) < self.len => {
                        break;
                    }
                    Err(frame::FrameError::Truncated) => bad = Some("frame header truncated"),
                    Err(frame::FrameError::Invalid(reason)) => bad = Some(reason),
                }
                if bad.is_some() {
                    break;
                }
            }
            if let Some(reason) = bad {
                return self.invalid_frame(&name, &*file, offset + at as u64, reason);
            }
            offset += at as u64;
        }
        Ok(None)
    }

    fn apply_frame(
        &mut self,
        name: &str,
        bytes: &[u8],
        header: &frame::FrameHeader,
        offset: u64,
    ) -> Result<(), StorageError> {
        let offsets = frame::record_offsets(bytes, header)
            .map_err(|_| StorageError::corrupt(name, offset, "frame records do not add up"))?;
        let mut run: Option<RunBuilder<'_>> = None;
        let mut locations = Vec::new();
        for (i, &at) in offsets.iter().enumerate() {
            let record_offset = offset + at as u64;
            let view = record::decode(bytes, at, false)
                .map_err(|reason| StorageError::corrupt(name, record_offset, reason))?;
            if view.position != header.first_position + i as u64 {
                return Err(StorageError::corrupt(
                    name,
                    record_offset,
                    "record position out of sequence",
                ));
            }
            let continues = run.as_ref().is_some_and(|r| {
                r.stream == view.stream
                    && r.first_revision + locations.len() as u64 == view.revision
            });
            if !continues {
                if let Some(done) = run.take() {
                    self.apply_run(name, &done, &locations)?;
                }
                locations.clear();
                run = Some(RunBuilder {
                    stream: view.stream,
                    first_revision: view.revision,
                    first_id: view.id,
                    offset: record_offset,
                    tombstone: false,
                    metadata: None,
                });
            }
            if let Some(current) = run.as_mut() {
                current.tombstone |= view.event_type == TOMBSTONE_EVENT_TYPE;
                if view.event_type == METADATA_EVENT_TYPE {
                    current.metadata = Some(&bytes[view.data.clone()]);
                }
            }
            locations.push(Location::new(self.info.number, record_offset as u32));
            *self.last_recorded_at = (*self.last_recorded_at).max(view.recorded_at.as_micros());
        }
        if let Some(done) = run.take() {
            self.apply_run(name, &done, &locations)?;
        }
        *self.scanned += offsets.len() as u64;
        self.info.add_frame(
            header.first_position,
            header.end_position(),
            offset as u32,
            header.length,
        );
        Ok(())
    }

    fn apply_run(
        &mut self,
        name: &str,
        run: &RunBuilder<'_>,
        locations: &[Location],
    ) -> Result<(), StorageError> {
        let indexed = IndexedRun {
            stream: run.stream,
            first_revision: run.first_revision,
            locations,
            first_id: run.first_id,
            tombstone: run.tombstone,
            metadata: run.metadata,
        };
        self.index
            .apply(&indexed)
            .map_err(|e| StorageError::corrupt(name, run.offset, e.0))
    }

    /// Decides what an invalid frame at `bad` is: a torn last batch (cut off) or damage
    /// (an error).
    fn invalid_frame(
        self,
        name: &str,
        file: &dyn StorageFile,
        bad: u64,
        reason: &str,
    ) -> Result<Option<TruncatedTail>, StorageError> {
        if !self.is_last {
            return Err(StorageError::corrupt(
                name,
                bad,
                format!("{reason} (in a sealed segment)"),
            ));
        }
        let mut tail = vec![0u8; (self.len - bad) as usize];
        read_exact_at(file, &mut tail, bad).map_err(io_error("read", name))?;
        if let Some(later) = later_batch_frame(&tail, bad, self.info.end_position) {
            return Err(StorageError::corrupt(
                name,
                bad,
                format!("{reason}, and a valid frame of a later batch follows at offset {later}"),
            ));
        }
        let cut = self.len - bad;
        if cut > self.torn_bytes_max {
            return Err(StorageError::corrupt(
                name,
                bad,
                format!(
                    "{reason}, and the {cut} bytes from there to the end are more than one \
                     unacknowledged batch can leave ({} bytes at most): not a torn write; \
                     nothing was cut",
                    self.torn_bytes_max
                ),
            ));
        }
        // Keep the evidence: the cut bytes go to a side file next to the segment before
        // the segment is shortened (the side file is never read by the store).
        let side = format!("{name}.torn-{bad}");
        let kept = self
            .storage
            .create(&side)
            .and_then(|copy| {
                copy.write_at(&tail, 0)?;
                copy.sync_data()
            })
            .and_then(|()| self.storage.sync_dir());
        if let Err(error) = kept {
            return Err(StorageError::io("keep the torn tail in", side, error));
        }
        file.set_len(bad).map_err(io_error("truncate", name))?;
        file.sync_data().map_err(io_error("fdatasync", name))?;
        tracing::warn!(
            file = name,
            offset = bad,
            bytes = self.len - bad,
            reason,
            kept_in = side.as_str(),
            "cut off a torn tail"
        );
        Ok(Some(TruncatedTail {
            file: name.to_owned(),
            offset: bad,
            bytes: self.len - bad,
            reason: reason.to_owned(),
            kept_in: Some(side),
        }))
    }
}

/// Looks in `tail` (the bytes from file offset `bad` on) for a valid frame whose batch
/// started after `bad`. Its existence proves the bytes at `bad` were synced before that
/// batch was written, so they are damage, not a torn write.
///
/// `expected_position` is the position the frame at `bad` should have started at: a
/// genuine later frame starts at or after it, and its batch starts between `bad` and
/// itself. When the bad frame's own length is readable and fits, its bytes are skipped:
/// event data may contain bytes that look like a frame.
pub(super) fn later_batch_frame(tail: &[u8], bad: u64, expected_position: u64) -> Option<u64> {
    let magic = frame::MAGIC.to_le_bytes();
    let mut at = match frame::parse_header(tail) {
        Ok(header) if (header.length as usize) <= tail.len() => header.length as usize,
        _ => 1,
    };
    while at + frame::HEADER_LEN <= tail.len() {
        if tail[at..at + 4] != magic {
            at += 1;
            continue;
        }
        let here = bad + at as u64;
        match frame::check(&tail[at..]) {
            Ok(header)
                if u64::from(header.batch_offset) > bad
                    && u64::from(header.batch_offset) <= here
                    && header.first_position >= expected_position =>
            {
                return Some(here)
            }
            Ok(header) => at += (header.length as usize).max(1),
            Err(_) => at += 1,
        }
    }
    None
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a test panics on a failed expectation
mod tests {
    use super::*;
    use crate::event::{ContentType, Timestamp};
    use crate::io::MemoryStorage;

    /// A frame of `count` events from position `first`, each with `pad` bytes of data.
    fn frame_bytes(first: u64, count: u64, pad: usize) -> Vec<u8> {
        let data = vec![b'x'; pad];
        let mut out = Vec::new();
        let start = frame::begin(&mut out, first, 0);
        for i in 0..count {
            record::RecordFields {
                position: first + i,
                revision: first + i,
                recorded_at: Timestamp::from_micros(1),
                id: uuid::Uuid::new_v4(),
                content_type: ContentType::Json,
                valid_at: None,
                stream: "s",
                event_type: "t",
                data: &data,
                metadata: b"",
            }
            .encode(&mut out);
        }
        frame::finish(&mut out, start, count as u32);
        out
    }

    /// A sealed segment of the given frames (first position 0).
    fn sealed(frames: &[Vec<u8>]) -> (Arc<dyn StorageFile>, SealedExtent) {
        let storage = MemoryStorage::new();
        let file = storage.create("0000000001.seg").unwrap();
        let mut offset = segment::HEADER_LEN as u64;
        let mut end_position = 0;
        for bytes in frames {
            file.write_at(bytes, offset).unwrap();
            offset += bytes.len() as u64;
            end_position = frame::parse_header(bytes).unwrap().end_position();
        }
        let extent = SealedExtent {
            number: 1,
            name: "0000000001.seg".into(),
            first_position: 0,
            end_offset: offset,
            end_position,
        };
        (file, extent)
    }

    /// Checks the whole segment `chunk` bytes at a time; returns the number of calls.
    fn check_all(
        file: &dyn StorageFile,
        extent: &SealedExtent,
        chunk: usize,
    ) -> Result<usize, StorageError> {
        let mut calls = 0;
        let mut next = Some(extent.start());
        while let Some(at) = next {
            next = check_sealed_frames(file, extent, at, chunk)?;
            calls += 1;
        }
        Ok(calls)
    }

    fn reason(error: StorageError) -> (u64, String) {
        match error {
            StorageError::Corrupt { offset, reason, .. } => (offset, reason),
            other => panic!("expected a corruption error, got {other:?}"),
        }
    }

    #[test]
    fn a_clean_segment_checks_in_any_chunk_size_and_larger_frames_are_read_whole() {
        let frames: Vec<Vec<u8>> = (0..20)
            .map(|i| frame_bytes(i * 3, 3, if i % 5 == 0 { 6000 } else { 100 }))
            .collect();
        let (file, extent) = sealed(&frames);
        let whole = check_all(&*file, &extent, 1 << 20).unwrap();
        assert_eq!(whole, 2, "one read, then the end check");
        let chunked = check_all(&*file, &extent, 4096).unwrap();
        assert!(chunked > 5, "{chunked} calls");
        assert!(check_all(&*file, &extent, 1).is_ok(), "one frame a call");
    }

    #[test]
    fn records_out_of_sequence_are_damage_even_under_a_valid_checksum() {
        // The second frame claims positions 3.. but its records say 4..: a checksum made
        // over wrong bytes (a writer bug, a forged file) is still caught.
        let mut second = frame_bytes(4, 3, 100);
        second[16..24].copy_from_slice(&3u64.to_le_bytes());
        let crc = crc32c::crc32c(&second[12..]);
        second[8..12].copy_from_slice(&crc.to_le_bytes());
        let first = frame_bytes(0, 3, 100);
        let at = (segment::HEADER_LEN + first.len()) as u64;
        let (file, extent) = sealed(&[first, second]);
        let (offset, why) = reason(check_all(&*file, &extent, 1 << 20).unwrap_err());
        assert_eq!(offset, at + frame::HEADER_LEN as u64, "the first record");
        assert!(why.contains("record position out of sequence"), "{why}");
    }

    #[test]
    fn gaps_flipped_bytes_and_short_segments_are_damage() {
        let first = frame_bytes(0, 3, 100);
        let second_at = (segment::HEADER_LEN + first.len()) as u64;
        let (file, extent) = sealed(&[first.clone(), frame_bytes(5, 3, 100)]);
        let (offset, why) = reason(check_all(&*file, &extent, 4096).unwrap_err());
        assert_eq!(offset, second_at);
        assert!(why.contains("frame position out of sequence"), "{why}");

        let (file, extent) = sealed(&[first.clone(), frame_bytes(3, 3, 100)]);
        let mut byte = [0u8];
        file.read_at(&mut byte, second_at + 70).unwrap();
        file.write_at(&[byte[0] ^ 0x20], second_at + 70).unwrap();
        let (offset, why) = reason(check_all(&*file, &extent, 4096).unwrap_err());
        assert_eq!(offset, second_at);
        assert!(why.contains("checksum"), "{why}");

        let (file, mut extent) = sealed(&[first]);
        extent.end_position += 1;
        let (_, why) = reason(check_all(&*file, &extent, 4096).unwrap_err());
        assert!(why.contains("ends short"), "{why}");
    }
}
