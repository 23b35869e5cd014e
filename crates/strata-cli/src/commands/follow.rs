//! Following a store that another process has open, by reading its segment files
//! read-only (no lock): what `strata tail` does when the store is locked.
//!
//! Only complete frames whose checksum matches and that are proven durable are shown:
//! a frame the writer has not synced yet could still be lost at a power loss and its
//! positions reused by other events. A frame is proven durable by the writer's
//! durable-point marker (`durable.pos`, rewritten after every synced batch), by a later
//! segment (every segment but the last is synced before the next is created), or, with
//! a writer that keeps no marker, by a frame of a later batch after it (the writer syncs
//! each batch before it writes the next). The reader waits at the end of the last
//! segment and moves on when the writer starts the next one.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use strata::engine::format::durable::{self, DurablePoint};
use strata::engine::format::segment::{self, SegmentHeader};
use strata::engine::format::{frame, record};
use strata::stream::TOMBSTONE_EVENT_TYPE;
use strata::{Filter, ReadError, RecordedEvent, StorageError};

use super::tail::{caught_up, Shutdown, Sink};
use crate::error::CliError;

/// How long to wait before looking for new data again.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Bytes of frames read before giving the runtime a turn (to notice Ctrl-C).
const CHUNK_BYTES: u64 = 4 << 20;

/// Which events to show.
pub struct Target {
    /// One stream, or every stream (`None`).
    pub stream: Option<String>,
    /// The filter of the global log (when `stream` is `None`).
    pub filter: Filter,
}

impl Target {
    fn matches(&self, event: &RecordedEvent) -> bool {
        match &self.stream {
            Some(stream) => event.stream == *stream,
            None => self.filter.matches_event(event),
        }
    }
}

/// The segment being read.
struct Cursor {
    number: u32,
    name: String,
    file: File,
    offset: u64,
}

/// Follows the store in `dir` until the count is reached or a signal arrives.
pub async fn run(
    dir: &Path,
    target: Target,
    from_start: bool,
    sink: &mut Sink,
    shutdown: &mut Shutdown,
) -> Result<(), CliError> {
    // Without --from-start, the frames already there are read (to find where they
    // end) but not shown.
    let mut printing = from_start;
    let mut announced = false;
    let mut cursor: Option<Cursor> = None;
    loop {
        let mut pause = Duration::ZERO;
        match &mut cursor {
            None => {
                let numbers = segment_numbers(dir)?;
                let first = if from_start {
                    numbers.first()
                } else {
                    numbers.last()
                };
                if let Some(&number) = first {
                    cursor = open_segment(dir, number)?;
                }
                if cursor.is_none() {
                    printing = true;
                    pause = POLL_INTERVAL;
                }
            }
            Some(current) => {
                let (events, more) = read_frames(dir, current)?;
                if !events.is_empty() || more {
                    if printing && deliver(&events, &target, sink)? {
                        return Ok(());
                    }
                } else if let Some(next) = open_segment(dir, current.number + 1)? {
                    // The writer has moved on to the next segment: take a last look at
                    // this one, in case a frame landed after the read above.
                    let (events, _) = read_frames(dir, current)?;
                    if printing && deliver(&events, &target, sink)? {
                        return Ok(());
                    }
                    if events.is_empty() {
                        *current = next;
                    }
                } else {
                    printing = true;
                    if !announced {
                        announced = true;
                        caught_up();
                    }
                    pause = POLL_INTERVAL;
                }
            }
        }
        tokio::select! {
            _ = shutdown.recv() => return Ok(()),
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

/// Prints the events that match; returns whether to stop (count reached). Fails once
/// the followed stream is tombstoned, as a subscription does.
fn deliver(events: &[RecordedEvent], target: &Target, sink: &mut Sink) -> Result<bool, CliError> {
    let shown: Vec<RecordedEvent> = events
        .iter()
        .filter(|e| target.matches(e))
        .cloned()
        .collect();
    if sink.print(&shown)? {
        return Ok(true);
    }
    if let Some(stream) = &target.stream {
        if shown.iter().any(|e| e.event_type == TOMBSTONE_EVENT_TYPE) {
            return Err(ReadError::StreamDeleted {
                stream: stream.clone(),
            }
            .into());
        }
    }
    Ok(false)
}

/// The numbers of the segment files in `dir`, in order.
fn segment_numbers(dir: &Path) -> Result<Vec<u32>, CliError> {
    let context = || format!("cannot list {}", dir.display());
    let mut numbers = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| CliError::io(context(), e))? {
        let entry = entry.map_err(|e| CliError::io(context(), e))?;
        if let Some(number) = entry
            .file_name()
            .to_str()
            .and_then(segment::parse_file_name)
        {
            numbers.push(number);
        }
    }
    numbers.sort_unstable();
    Ok(numbers)
}

/// Opens segment `number` positioned after its header, or `None` if it does not exist
/// or its header is not completely written yet.
fn open_segment(dir: &Path, number: u32) -> Result<Option<Cursor>, CliError> {
    let name = segment::file_name(number);
    let path: PathBuf = dir.join(&name);
    let file = match File::open(&path) {
        Ok(file) => file,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => {
            return Err(CliError::io(
                format!("cannot open {}", path.display()),
                error,
            ))
        }
    };
    let mut header = [0u8; segment::HEADER_LEN];
    match file.read_exact_at(&mut header, 0) {
        Ok(()) => {}
        Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(error) => {
            return Err(CliError::io(
                format!("cannot read {}", path.display()),
                error,
            ))
        }
    }
    if SegmentHeader::decode(&header).is_err() {
        return Ok(None);
    }
    Ok(Some(Cursor {
        number,
        name,
        file,
        offset: segment::HEADER_LEN as u64,
    }))
}

/// How far the frames of one segment are proven durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Proof {
    /// A later segment exists: the whole segment is synced.
    Sealed,
    /// The writer's marker: bytes before this offset are synced.
    UpTo(u64),
    /// No marker: a frame is durable once a frame of a later batch follows it.
    LaterBatch,
}

/// What proves the frames of `cursor`'s segment durable, read now.
fn durable_proof(dir: &Path, cursor: &Cursor) -> Result<Proof, CliError> {
    if open_segment(dir, cursor.number + 1)?.is_some() {
        return Ok(Proof::Sealed);
    }
    let mut bytes = [0u8; durable::LEN];
    let marker = File::open(dir.join(durable::FILE_NAME))
        .and_then(|file| file.read_exact_at(&mut bytes, 0))
        .ok()
        .and_then(|()| DurablePoint::decode(&bytes));
    Ok(match marker {
        Some(point) if point.segment > cursor.number => Proof::Sealed,
        Some(point) if point.segment == cursor.number => Proof::UpTo(u64::from(point.end_offset)),
        _ => Proof::LaterBatch,
    })
}

/// A frame read but not shown yet.
struct ReadFrame {
    events: Vec<RecordedEvent>,
    batch_offset: u32,
    length: u64,
}

/// Reads the complete, valid, durable frames after the cursor (up to about
/// [`CHUNK_BYTES`]) and moves the cursor past them. Returns their events and whether it
/// stopped early because of the chunk size (more may be waiting).
fn read_frames(dir: &Path, cursor: &mut Cursor) -> Result<(Vec<RecordedEvent>, bool), CliError> {
    let proof = durable_proof(dir, cursor)?;
    let start = cursor.offset;
    let (mut frames, more) = read_valid_frames(cursor, proof)?;
    if proof == Proof::LaterBatch {
        // The last batch read is not proven yet: leave it for the next look.
        if let Some(last_batch) = frames.last().map(|f| f.batch_offset) {
            while frames.last().is_some_and(|f| f.batch_offset == last_batch) {
                frames.pop();
            }
        }
    }
    let mut events = Vec::new();
    for frame in frames {
        cursor.offset += frame.length;
        events.extend(frame.events);
    }
    // A chunk that was all one unproven batch: wait (do not spin) for the proof.
    Ok((events, more && cursor.offset > start))
}

/// The complete frames with valid checksums after the cursor, within what `proof`
/// allows, without moving the cursor.
fn read_valid_frames(cursor: &Cursor, proof: Proof) -> Result<(Vec<ReadFrame>, bool), CliError> {
    let read_error = |error| CliError::io(format!("cannot read {}", cursor.name), error);
    let mut len = cursor.file.metadata().map_err(read_error)?.len();
    if let Proof::UpTo(end) = proof {
        len = len.min(end);
    }
    let mut frames = Vec::new();
    let mut offset = cursor.offset;
    let mut read = 0u64;
    loop {
        if offset + frame::HEADER_LEN as u64 > len {
            return Ok((frames, false));
        }
        let mut header = [0u8; frame::HEADER_LEN];
        match cursor.file.read_exact_at(&mut header, offset) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => {
                return Ok((frames, false))
            }
            Err(error) => return Err(CliError::io(format!("cannot read {}", cursor.name), error)),
        }
        // A frame not fully written yet (or damaged) ends what can be shown for now.
        let Ok(header) = frame::parse_header(&header) else {
            return Ok((frames, false));
        };
        let length = u64::from(header.length);
        if offset + length > len {
            return Ok((frames, false));
        }
        let mut buffer = vec![0u8; header.length as usize];
        match cursor.file.read_exact_at(&mut buffer, offset) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => {
                return Ok((frames, false))
            }
            Err(error) => return Err(CliError::io(format!("cannot read {}", cursor.name), error)),
        }
        if frame::check(&buffer).is_err() {
            return Ok((frames, false));
        }
        let bytes = Bytes::from(buffer);
        let corrupt =
            |reason: &str| CliError::from(StorageError::corrupt(&cursor.name, offset, reason));
        let offsets = frame::record_offsets(&bytes, &header)
            .map_err(|_| corrupt("frame records do not add up"))?;
        let mut events = Vec::with_capacity(offsets.len());
        for at in offsets {
            let view = record::decode(&bytes, at, false).map_err(corrupt)?;
            events.push(view.to_event(&bytes));
        }
        frames.push(ReadFrame {
            events,
            batch_offset: header.batch_offset,
            length,
        });
        offset += length;
        read += length;
        if read >= CHUNK_BYTES {
            return Ok((frames, true));
        }
    }
}
