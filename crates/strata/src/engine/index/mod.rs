//! The in-memory indexes: stream → event locations, stream metadata, and a window of
//! recently written appends (by their first event id) for idempotent retries.
//!
//! All of it is derived from the log: [`Index::apply`] is the one place that turns a
//! recorded event into index state, used both by the writer after a durable batch and by
//! recovery when it scans the log. A checkpoint ([`checkpoint`]) saves a copy so that
//! opening a large store does not rescan it.

pub mod checkpoint;
mod recent;

use std::collections::HashMap;
use std::sync::Arc;

use uuid::Uuid;

use crate::metadata::StreamMetadata;
use crate::stream;

pub use recent::RecentIds;

/// The event type of a metadata event (in a `$$stream`).
pub const METADATA_EVENT_TYPE: &str = "$metadata";
/// The event type of a tombstone (in the stream it deletes).
pub const TOMBSTONE_EVENT_TYPE: &str = "$streamDeleted";

/// Where an event lies: segment number in the high 32 bits, byte offset of its record in
/// the low 32.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Location(pub u64);

impl Location {
    /// The location of the record at `offset` in segment `segment`.
    pub fn new(segment: u32, offset: u32) -> Location {
        Location((u64::from(segment) << 32) | u64::from(offset))
    }

    /// The segment number.
    pub fn segment(self) -> u32 {
        (self.0 >> 32) as u32
    }

    /// The byte offset in the segment.
    pub fn offset(self) -> u32 {
        self.0 as u32
    }
}

/// What the index knows of one stream.
#[derive(Clone, Debug, Default)]
pub struct StreamEntry {
    /// Location of each event, by revision.
    pub locations: Vec<Location>,
    /// Whether the stream is tombstoned.
    pub tombstoned: bool,
    /// The stream's current metadata, if any was set.
    pub metadata: Option<Arc<StreamMetadata>>,
}

impl StreamEntry {
    /// The revision the next event gets.
    pub fn next_revision(&self) -> u64 {
        self.locations.len() as u64
    }

    /// Whether the stream is soft-deleted (and not appended to since).
    pub fn is_deleted(&self) -> bool {
        self.metadata.as_ref().is_some_and(|m| m.is_deleted())
    }
}

/// The indexes.
#[derive(Debug)]
pub struct Index {
    /// Every stream that has events or metadata.
    pub streams: HashMap<Box<str>, StreamEntry>,
    /// Recently written event ids.
    pub recent: RecentIds,
    /// Number of events indexed.
    pub events: u64,
}

/// Consecutive events of one stream in one frame, as the index sees them. An append
/// writes one run per stream (two when it revives a soft-deleted stream).
#[derive(Clone, Copy, Debug)]
pub struct IndexedRun<'a> {
    /// Their stream.
    pub stream: &'a str,
    /// Revision of the first.
    pub first_revision: u64,
    /// Location of each.
    pub locations: &'a [Location],
    /// Id of the first (where a retry of the append is looked up).
    pub first_id: Uuid,
    /// Whether the run holds a tombstone.
    pub tombstone: bool,
    /// Data of the run's last metadata event, for a metadata stream.
    pub metadata: Option<&'a [u8]>,
}

/// The log and the index disagree: a bug or damage that a checksum did not catch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inconsistent(pub String);

impl Index {
    /// An empty index remembering the first event ids of up to `recent_ids_max` appends.
    pub fn new(recent_ids_max: usize) -> Index {
        Index {
            streams: HashMap::new(),
            recent: RecentIds::new(recent_ids_max),
            events: 0,
        }
    }

    /// Records a run of events. Runs must be applied in log order.
    pub fn apply(&mut self, run: &IndexedRun<'_>) -> Result<(), Inconsistent> {
        let Some(&first_location) = run.locations.first() else {
            return Ok(());
        };
        let entry = match self.streams.get_mut(run.stream) {
            Some(entry) => entry,
            None => self.streams.entry(run.stream.into()).or_default(),
        };
        if run.first_revision != entry.next_revision() {
            return Err(Inconsistent(format!(
                "event {} of stream {:?} has revision {}, expected {}",
                run.first_id,
                run.stream,
                run.first_revision,
                entry.next_revision()
            )));
        }
        entry.locations.extend_from_slice(run.locations);
        if run.tombstone && !stream::is_system(run.stream) {
            entry.tombstoned = true;
        }
        self.events += run.locations.len() as u64;
        self.recent.insert(run.first_id, first_location);
        if let (Some(data), Some(target)) = (run.metadata, stream::metastream_target(run.stream)) {
            // Metadata was validated when written; an unreadable one (impossible
            // without damage the checksums would catch) leaves the old metadata.
            if let Ok(metadata) = StreamMetadata::from_slice(data) {
                let target = match self.streams.get_mut(target) {
                    Some(entry) => entry,
                    None => self.streams.entry(target.into()).or_default(),
                };
                target.metadata = Some(Arc::new(metadata));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run<'a>(stream: &'a str, first_revision: u64, locations: &'a [Location]) -> IndexedRun<'a> {
        IndexedRun {
            stream,
            first_revision,
            locations,
            first_id: Uuid::new_v4(),
            tombstone: false,
            metadata: None,
        }
    }

    #[test]
    fn apply_tracks_revisions_metadata_and_tombstones() {
        let mut index = Index::new(10);
        let locations = [Location::new(1, 64), Location::new(1, 200)];
        assert!(index.apply(&run("a", 0, &locations)).is_ok());
        assert!(
            index.apply(&run("a", 3, &locations[..1])).is_err(),
            "revision gap"
        );
        let meta = IndexedRun {
            metadata: Some(b"{\"$maxCount\":1}"),
            ..run("$$a", 0, &locations[..1])
        };
        assert!(index.apply(&meta).is_ok());
        assert_eq!(
            index.streams["a"]
                .metadata
                .as_ref()
                .and_then(|m| m.max_count),
            Some(1)
        );
        let tombstone = IndexedRun {
            tombstone: true,
            ..run("a", 2, &locations[..1])
        };
        assert!(index.apply(&tombstone).is_ok());
        assert!(index.streams["a"].tombstoned);
        assert_eq!(index.events, 4);
        let location = Location::new(7, 123);
        assert_eq!((location.segment(), location.offset()), (7, 123));
    }
}
