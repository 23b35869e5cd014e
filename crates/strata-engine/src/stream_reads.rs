//! Reads of one stream: a bounded page, honouring the stream's metadata.
//!
//! Blocking (index lookups may read segment tables, records are read from segments):
//! the engine runs these off the async runtime (`off_runtime`), never on its cores
//! while other tasks wait.

use super::index;
use super::reader;
use super::state::Shared;
use crate::error::ReadError;
use crate::event::{RecordedEvent, Timestamp};
use crate::store::{Direction, ReadStreamOptions};

/// One bounded page of a stream, honouring its metadata. Never recursive, and never
/// reads the events `$maxAge` hides: it finds the first unexpired one by binary search.
pub fn read_stream_page(
    shared: &Shared,
    name: &str,
    options: ReadStreamOptions,
) -> Result<Vec<RecordedEvent>, ReadError> {
    let (len, lowest, max_age) = {
        let index = shared.index();
        let entry = visible_entry(&index, name)?;
        let len = entry.next_revision();
        let metadata = entry.metadata.as_deref();
        let lowest = metadata.map_or(0, |m| m.first_visible(len));
        (len, lowest, metadata.and_then(|m| m.max_age))
    };
    // The revisions the page may take, before max age: `low..high`.
    let (low, high) = match options.direction {
        Direction::Forwards => (options.from.unwrap_or(0).max(lowest).min(len), len),
        Direction::Backwards => {
            let start = options.from.unwrap_or(len - 1).min(len - 1);
            (lowest.min(start + 1), start + 1)
        }
    };
    let low = match max_age {
        Some(max_age) => {
            let max_age = u64::try_from(max_age.as_micros()).unwrap_or(u64::MAX);
            let cutoff = Timestamp::now().as_micros().saturating_sub(max_age);
            first_recorded_at_or_after(shared, name, low, high, cutoff)?
        }
        None => low,
    };
    let limit = options.limit as u64;
    let (first, end) = match options.direction {
        Direction::Forwards => (low, high.min(low.saturating_add(limit))),
        Direction::Backwards => (low.max(high.saturating_sub(limit)), high),
    };
    let lookup = {
        let index = shared.index();
        visible_entry(&index, name)?;
        index.lookup(name, first, end)
    };
    let mut events = reader::read_revisions(shared, name, first, &lookup)?;
    if options.direction == Direction::Backwards {
        events.reverse();
    }
    Ok(events)
}

/// The first revision in `low..high` of stream `name` recorded at or after `cutoff`
/// (in microseconds), or `high` if there is none.
///
/// `recorded_at` never goes backwards along the log (the writer enforces it), so the
/// events `$maxAge` hides are the oldest ones of a stream and a binary search over
/// revisions finds the boundary: at most 65 records are read, however many expired.
fn first_recorded_at_or_after(
    shared: &Shared,
    name: &str,
    mut low: u64,
    mut high: u64,
    cutoff: u64,
) -> Result<u64, ReadError> {
    let unexpired = |revision: u64| -> Result<bool, ReadError> {
        let lookup = {
            let index = shared.index();
            visible_entry(&index, name)?;
            index.lookup(name, revision, revision + 1)
        };
        let event = reader::read_revisions(shared, name, revision, &lookup)?;
        Ok(event
            .first()
            .is_some_and(|event| event.recorded_at.as_micros() >= cutoff))
    };
    // The common case, nothing expired in the range, costs one record.
    if low >= high || unexpired(low)? {
        return Ok(low);
    }
    // Invariant: `low` is expired; `high` is unexpired or the end of the range.
    while high - low > 1 {
        let middle = low + (high - low) / 2;
        if unexpired(middle)? {
            high = middle;
        } else {
            low = middle;
        }
    }
    Ok(high)
}

/// The index entry of a stream that reads can see: not tombstoned, not soft-deleted,
/// with at least one event.
fn visible_entry(index: &index::Index, name: &str) -> Result<index::StreamEntry, ReadError> {
    let not_found = || ReadError::StreamNotFound {
        stream: name.to_owned(),
    };
    let entry = index.heads.get(name).ok_or_else(not_found)?;
    if entry.tombstoned {
        return Err(ReadError::StreamDeleted {
            stream: name.to_owned(),
        });
    }
    if entry.is_deleted() || entry.next_revision() == 0 {
        return Err(not_found());
    }
    Ok(entry)
}
