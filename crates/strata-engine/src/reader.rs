//! Reading durable events: the global log by position (both ways) and single events by
//! location. Readers only look below the durable end the writer published.

use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;

use super::format::{record, segment};
use super::frames::for_each_frame;
use super::index::{Location, Lookup};
use super::io::read_exact_at;
use super::state::Shared;
use crate::error::StorageError;
use crate::event::RecordedEvent;
use crate::filter::Filter;
use crate::store::PageEnd;

/// Bytes read first for a single event: a record of up to this size (header, names,
/// data and metadata) takes one read, a larger one a second read for the rest. Reading
/// more costs copying it: with 4 KiB, copying from the page cache was a fifth of a
/// random stream read's time (10 records of ~200 B each, measured with `perf`).
const WINDOW_BYTES: usize = 1 << 10;

/// How far a scan of the global log may go.
pub struct ScanBounds<'a> {
    /// Most events to return.
    pub limit: usize,
    /// Most events a filtered scan examines (unfiltered scans return every event they
    /// examine, so `limit` bounds them).
    pub budget: u64,
    /// Set once nobody waits for the result any more: the scan stops at the next event.
    pub cancelled: &'a AtomicBool,
}

impl ScanBounds<'_> {
    fn budget_for(&self, filter: &Filter) -> u64 {
        if filter.is_empty() {
            u64::MAX
        } else {
            self.budget.max(1)
        }
    }

    fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed)
    }
}

/// What a scan of the global log found, and how far it got.
#[derive(Debug)]
pub struct Scanned {
    /// Matching events, in the order read.
    pub events: Vec<RecordedEvent>,
    /// Where the next page starts (see [`ReadAllPage::next`](crate::ReadAllPage::next)).
    pub next: Option<u64>,
    /// Why the scan stopped. A cancelled scan reports [`PageEnd::ScanBudget`]: it stopped
    /// early, and `next` says how far it got (nobody reads it, though).
    pub end: PageEnd,
}

/// Reads the global log forwards from `from` (inclusive).
pub fn read_all_forwards(
    shared: &Shared,
    from: u64,
    filter: &Filter,
    bounds: &ScanBounds<'_>,
) -> Result<Scanned, StorageError> {
    let limit = bounds.limit;
    let budget = bounds.budget_for(filter);
    let mut scanned = Scanned {
        events: Vec::new(),
        // The first position not examined.
        next: Some(from),
        end: PageEnd::End,
    };
    if limit == 0 {
        scanned.end = PageEnd::Limit;
        return Ok(scanned);
    }
    let (mut index, mut offset) = {
        let segments = shared.segments();
        let Some(i) = segments.find(from) else {
            return Ok(scanned);
        };
        let Some((_, offset)) = segments.list[i].seek(from) else {
            return Ok(scanned);
        };
        (i, offset)
    };
    let mut examined = 0u64;
    let overruns_at_start = filter.backtrack_overruns();
    loop {
        let Some((file, name, end)) = segment_at(shared, index) else {
            break;
        };
        let file = file.open()?;
        let out = &mut scanned;
        let flow = for_each_frame(&*file, &name, u64::from(offset), u64::from(end), |found| {
            if found.header.end_position() <= from {
                return Ok(ControlFlow::Continue(()));
            }
            found.for_each_record(&name, |view, _| {
                if view.position < from {
                    return ControlFlow::Continue(());
                }
                if bounds.is_cancelled() {
                    out.end = PageEnd::ScanBudget;
                    return ControlFlow::Break(());
                }
                out.next = view.position.checked_add(1);
                examined += 1;
                if filter.matches(view.stream, view.event_type) {
                    out.events.push(view.to_event(found.chunk));
                    if out.events.len() >= limit {
                        out.end = PageEnd::Limit;
                        return ControlFlow::Break(());
                    }
                }
                if filter.scan_cost(examined, overruns_at_start) >= budget {
                    out.end = PageEnd::ScanBudget;
                    return ControlFlow::Break(());
                }
                ControlFlow::Continue(())
            })
        })?;
        if flow.is_break() {
            break;
        }
        index += 1;
        offset = segment::HEADER_LEN as u32;
    }
    Ok(scanned)
}

/// The file (not opened yet: that happens outside the segments lock), name and durable
/// end of the segment at `index` of the list.
fn segment_at(shared: &Shared, index: usize) -> Option<(super::handles::SegmentFile, String, u32)> {
    let segments = shared.segments();
    let segment = segments.list.get(index)?;
    Some((
        segment.file.clone(),
        segment.name.clone(),
        segment.end_offset,
    ))
}

/// Reads the global log backwards from `from` (inclusive; `None`: the last event).
///
/// The log is read one sparse block at a time (a bounded run of frames, oldest first,
/// then reversed), so the scan budget is checked between blocks and may be overrun by
/// up to one block.
pub fn read_all_backwards(
    shared: &Shared,
    from: Option<u64>,
    filter: &Filter,
    bounds: &ScanBounds<'_>,
) -> Result<Scanned, StorageError> {
    let limit = bounds.limit;
    let budget = bounds.budget_for(filter);
    let mut scanned = Scanned {
        events: Vec::new(),
        next: None,
        end: PageEnd::End,
    };
    let (mut index, mut block, target) = {
        let segments = shared.segments();
        let Some(last) = segments.next_position().checked_sub(1) else {
            return Ok(scanned);
        };
        let target = from.map_or(last, |from| from.min(last));
        let Some(i) = segments.find(target) else {
            return Ok(scanned);
        };
        let Some((block, _)) = segments.list[i].seek(target) else {
            return Ok(scanned);
        };
        (i, block, target)
    };
    // The last position not examined.
    scanned.next = Some(target);
    if limit == 0 {
        scanned.end = PageEnd::Limit;
        return Ok(scanned);
    }
    let mut examined = 0u64;
    let overruns_at_start = filter.backtrack_overruns();
    let mut found = Vec::new();
    loop {
        // One sparse block: from its remembered frame start to the next one.
        let (file, name, first_position, start, end) = {
            let segments = shared.segments();
            let segment = &segments.list[index];
            let (first_position, start) = segment.sparse[block];
            let end = segment
                .sparse
                .get(block + 1)
                .map_or(segment.end_offset, |s| s.1);
            (
                segment.file.clone(),
                segment.name.clone(),
                first_position,
                start,
                end,
            )
        };
        found.clear();
        let file = file.open()?;
        let flow = for_each_frame(&*file, &name, u64::from(start), u64::from(end), |frame| {
            if bounds.is_cancelled() {
                return Ok(ControlFlow::Break(()));
            }
            frame.for_each_record(&name, |view, _| {
                if view.position <= target {
                    examined += 1;
                    if filter.matches(view.stream, view.event_type) {
                        found.push(view.to_event(frame.chunk));
                    }
                }
                ControlFlow::Continue(())
            })
        })?;
        if flow.is_break() {
            // Cancelled part way through the block: `next` still covers all of it.
            scanned.end = PageEnd::ScanBudget;
            return Ok(scanned);
        }
        let wanted = limit - scanned.events.len();
        if found.len() >= wanted {
            scanned.events.extend(found.drain(..).rev().take(wanted));
            scanned.next = scanned
                .events
                .last()
                .and_then(|event| event.position.0.checked_sub(1));
            scanned.end = PageEnd::Limit;
            return Ok(scanned);
        }
        scanned.events.extend(found.drain(..).rev());
        scanned.next = first_position.checked_sub(1);
        // Step back one block, skipping segments with no frames.
        if block > 0 {
            block -= 1;
        } else {
            let segments = shared.segments();
            let previous = (0..index)
                .rev()
                .find(|&i| !segments.list[i].sparse.is_empty());
            match previous {
                Some(i) => {
                    index = i;
                    block = segments.list[i].sparse.len() - 1;
                }
                None => {
                    scanned.next = None;
                    return Ok(scanned);
                }
            }
        }
        if filter.scan_cost(examined, overruns_at_start) >= budget {
            scanned.end = PageEnd::ScanBudget;
            return Ok(scanned);
        }
    }
}

/// Reads the events at `locations`, in the given order, checking each record's checksum.
/// For lookups by event id, whose callers check the id they find; reads of a stream go
/// through [`read_stream_locations`].
pub fn read_locations(
    shared: &Shared,
    locations: &[Location],
) -> Result<Vec<RecordedEvent>, StorageError> {
    read_checked(shared, locations, |_, _| Ok(()))
}

/// Reads revisions `low..` of `stream` (ascending, as many as `lookup` covers) and
/// checks that each record is the one asked for.
///
/// Invariant: the index maps (stream, revision) to the record of that stream and
/// revision. Tables key streams by a 64-bit hash, so a table may also offer records of
/// another stream sharing the hash: when a record is not the one asked for, every
/// candidate is read and the right one kept. When none is (an index built from a
/// checkpoint of another log, a bug), the read fails as corruption instead of serving
/// another stream's events.
pub fn read_revisions(
    shared: &Shared,
    stream: &str,
    low: u64,
    lookup: &Lookup,
) -> Result<Vec<RecordedEvent>, StorageError> {
    if let Some(locations) = lookup.resolve_unique()? {
        let mismatch = std::cell::Cell::new(false);
        let read = read_checked(shared, &locations, |at, view| {
            if view.stream == stream && view.revision == low + at as u64 {
                Ok(())
            } else {
                mismatch.set(true);
                Err(String::new())
            }
        });
        if !mismatch.get() {
            return read;
        }
    }
    // Several candidates, a missing one, or a record of another stream: search every
    // table and read every candidate.
    let candidates = lookup.resolve_all()?;
    let mut events = Vec::with_capacity(candidates.len());
    for (at, options) in candidates.iter().enumerate() {
        let revision = low + at as u64;
        let read = read_locations(shared, options)?;
        if let Some(event) = read
            .iter()
            .find(|event| event.stream == stream && event.revision == revision)
        {
            events.push(event.clone());
            continue;
        }
        let (file, offset) = options.first().map_or_else(
            || ("index".to_owned(), revision),
            |l| (segment::file_name(l.segment()), u64::from(l.offset())),
        );
        let found = read
            .iter()
            .map(|e| format!("revision {} of stream {:?}", e.revision, e.stream))
            .collect::<Vec<_>>();
        let reason = if found.is_empty() {
            format!("the index has no location for revision {revision} of stream {stream:?}")
        } else {
            format!(
                "the index places revision {revision} of stream {stream:?} here, but the \
                 record is {}",
                found.join(", ")
            )
        };
        tracing::error!(
            file = file.as_str(),
            offset,
            %reason,
            "a read found another record than the index promised"
        );
        return Err(StorageError::Corrupt {
            file,
            offset,
            reason,
        });
    }
    Ok(events)
}

/// Reads the records at `locations`, passing each (with its index in `locations`) to
/// `check` before it becomes an event; a check that fails makes the read fail as
/// corruption at that record.
fn read_checked(
    shared: &Shared,
    locations: &[Location],
    check: impl Fn(usize, &record::RecordView<'_>) -> Result<(), String>,
) -> Result<Vec<RecordedEvent>, StorageError> {
    let mut out = Vec::with_capacity(locations.len());
    // The last window read: segment number, its file offset, and its bytes.
    let mut window: Option<(u32, u64, Bytes)> = None;
    for (at_location, &location) in locations.iter().enumerate() {
        let offset = u64::from(location.offset());
        let covers = |w: &(u32, u64, Bytes), len: usize| {
            w.0 == location.segment()
                && w.1 <= offset
                && offset + len as u64 <= w.1 + w.2.len() as u64
        };
        let needs_read = match &window {
            Some(w) if covers(w, record::HEADER_LEN) => {
                let at = (offset - w.1) as usize;
                let len = record::record_len(&w.2, at).unwrap_or(usize::MAX);
                !covers(w, len)
            }
            _ => true,
        };
        if needs_read {
            window = Some(read_window(shared, location)?);
        }
        let (_, start, bytes) = window.as_ref().ok_or(StorageError::Closed)?;
        let at = (offset - start) as usize;
        let name = segment::file_name(location.segment());
        let view = record::decode(bytes, at, true)
            .map_err(|reason| StorageError::corrupt(&name, offset, reason))?;
        check(at_location, &view).map_err(|reason| StorageError::Corrupt {
            file: name.clone(),
            offset,
            reason,
        })?;
        out.push(view.to_event(bytes));
    }
    Ok(out)
}

/// Reads the window of bytes holding the whole record at `location`.
fn read_window(shared: &Shared, location: Location) -> Result<(u32, u64, Bytes), StorageError> {
    let (file, end) = {
        let segments = shared.segments();
        let segment = segments.by_number(location.segment()).ok_or_else(|| {
            StorageError::corrupt(
                segment::file_name(location.segment()),
                u64::from(location.offset()),
                "the index points into a missing segment",
            )
        })?;
        (segment.file.clone(), u64::from(segment.end_offset))
    };
    let file = file.open()?;
    let name = || segment::file_name(location.segment());
    let offset = u64::from(location.offset());
    if offset + record::HEADER_LEN as u64 > end {
        return Err(StorageError::corrupt(
            name(),
            offset,
            "the index points past the durable end",
        ));
    }
    let want = (WINDOW_BYTES as u64).min(end - offset) as usize;
    let mut buffer = vec![0u8; want];
    read_exact_at(&*file, &mut buffer, offset).map_err(|e| StorageError::io("read", name(), e))?;
    let length = record::record_len(&buffer, 0).unwrap_or(0);
    if length > buffer.len() {
        if offset + length as u64 > end {
            return Err(StorageError::corrupt(
                name(),
                offset,
                "record extends past the durable end",
            ));
        }
        buffer.resize(length, 0);
        read_exact_at(&*file, &mut buffer[want..], offset + want as u64)
            .map_err(|e| StorageError::io("read", name(), e))?;
    }
    Ok((location.segment(), offset, Bytes::from(buffer)))
}
