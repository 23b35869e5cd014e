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

/// An event as the index sees it.
#[derive(Clone, Copy, Debug)]
pub struct IndexedEvent<'a> {
    /// Its stream.
    pub stream: &'a str,
    /// Its revision.
    pub revision: u64,
    /// Its type.
    pub event_type: &'a str,
    /// Its id.
    pub id: Uuid,
    /// Its location.
    pub location: Location,
    /// Its data (read only for metadata events).
    pub data: &'a [u8],
    /// Whether it starts a run of its stream's events in its frame (the first event of an
    /// append, where a retry is looked up by id).
    pub starts_append: bool,
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

    /// Records one event. Events must be applied in log order.
    pub fn apply(&mut self, event: &IndexedEvent<'_>) -> Result<(), Inconsistent> {
        let entry = match self.streams.get_mut(event.stream) {
            Some(entry) => entry,
            None => self.streams.entry(event.stream.into()).or_default(),
        };
        if event.revision != entry.next_revision() {
            return Err(Inconsistent(format!(
                "event {} of stream {:?} has revision {}, expected {}",
                event.id,
                event.stream,
                event.revision,
                entry.next_revision()
            )));
        }
        entry.locations.push(event.location);
        if event.event_type == TOMBSTONE_EVENT_TYPE && !stream::is_system(event.stream) {
            entry.tombstoned = true;
        }
        self.events += 1;
        if event.starts_append {
            self.recent.insert(event.id, event.location);
        }
        if event.event_type == METADATA_EVENT_TYPE {
            if let Some(target) = stream::metastream_target(event.stream) {
                // Metadata was validated when written; an unreadable one (impossible
                // without damage the checksums would catch) leaves the old metadata.
                if let Ok(metadata) = StreamMetadata::from_slice(event.data) {
                    let target = match self.streams.get_mut(target) {
                        Some(entry) => entry,
                        None => self.streams.entry(target.into()).or_default(),
                    };
                    target.metadata = Some(Arc::new(metadata));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event<'a>(
        stream: &'a str,
        revision: u64,
        event_type: &'a str,
        data: &'a [u8],
    ) -> IndexedEvent<'a> {
        IndexedEvent {
            stream,
            revision,
            event_type,
            id: Uuid::new_v4(),
            location: Location::new(1, 64 + revision as u32),
            data,
            starts_append: true,
        }
    }

    #[test]
    fn apply_tracks_revisions_metadata_and_tombstones() {
        let mut index = Index::new(10);
        assert!(index.apply(&event("a", 0, "X", b"")).is_ok());
        assert!(
            index.apply(&event("a", 2, "X", b"")).is_err(),
            "revision gap"
        );
        assert!(index
            .apply(&event("$$a", 0, METADATA_EVENT_TYPE, b"{\"$maxCount\":1}"))
            .is_ok());
        assert_eq!(
            index.streams["a"]
                .metadata
                .as_ref()
                .and_then(|m| m.max_count),
            Some(1)
        );
        assert!(index
            .apply(&event("a", 1, TOMBSTONE_EVENT_TYPE, b""))
            .is_ok());
        assert!(index.streams["a"].tombstoned);
        assert_eq!(index.events, 3);
        let location = Location::new(7, 123);
        assert_eq!((location.segment(), location.offset()), (7, 123));
    }
}
