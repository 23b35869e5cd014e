//! The indexes: per stream its head (next revision, tombstone, metadata) in memory;
//! where each event lies in segment tables on disk for sealed segments and in memtables
//! for the rest; a window of recently written appends (by their first event id) for
//! idempotent retries.
//!
//! All of it is derived from the log: [`Index::apply`] is the one place that turns a
//! recorded event into index state, used both by the writer after a durable batch and by
//! recovery when it scans the log. A checkpoint ([`checkpoint`]) saves the heads and the
//! memtables so that opening a large store does not rescan it; tables ([`table`]) are
//! written once per sealed segment by the engine's indexer thread.

pub mod bloom;
pub mod checkpoint;
mod heads;
mod memtable;
mod recent;
pub mod table;

use std::collections::BTreeMap;
use std::sync::Arc;

use uuid::Uuid;

use crate::error::StorageError;
use crate::metadata::StreamMetadata;
use crate::stream;

pub use heads::{Heads, StreamEntry, StreamId};
pub use memtable::{Memtable, Run};
pub use recent::RecentIds;
use table::Table;

pub use crate::stream::{METADATA_EVENT_TYPE, TOMBSTONE_EVENT_TYPE};

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

/// The indexes.
#[derive(Debug)]
pub struct Index {
    /// The head of every stream that has events or metadata.
    pub heads: Heads,
    /// Recently written event ids.
    pub recent: RecentIds,
    /// Number of events indexed.
    pub events: u64,
    /// Number of streams with at least one event (kept up to date, so statistics never
    /// walk every stream).
    pub streams_with_events: u64,
    /// Event locations of segments without a table, by segment number.
    pub memtables: BTreeMap<u32, Memtable>,
    /// Tables of sealed segments, by segment number.
    pub tables: BTreeMap<u32, Arc<Table>>,
}

/// What the index holds in memory and on disk.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IndexStats {
    /// Streams whose head is in memory (every stream with events or metadata).
    pub streams: u64,
    /// Memory the heads take.
    pub head_memory_bytes: u64,
    /// Sealed segments with a table on disk.
    pub tables: u64,
    /// Memory the tables take (bloom filters and block fences).
    pub table_memory_bytes: u64,
    /// Disk the tables take.
    pub table_file_bytes: u64,
    /// Segments whose event locations are in memory (the one being written, and
    /// sealed ones whose table is not built yet).
    pub memtables: u64,
    /// Events those memtables locate.
    pub memtable_events: u64,
    /// Memory the memtables take.
    pub memtable_memory_bytes: u64,
}

/// Consecutive events of one stream in one frame, as the index sees them. An append
/// writes one run per stream (two when it revives a soft-deleted stream).
#[derive(Clone, Copy, Debug)]
pub struct IndexedRun<'a> {
    /// Their stream.
    pub stream: &'a str,
    /// Revision of the first.
    pub first_revision: u64,
    /// Location of each (all in one segment: a frame never spans two).
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
            heads: Heads::default(),
            recent: RecentIds::new(recent_ids_max),
            events: 0,
            streams_with_events: 0,
            memtables: BTreeMap::new(),
            tables: BTreeMap::new(),
        }
    }

    /// Records a run of events. Runs must be applied in log order.
    pub fn apply(&mut self, run: &IndexedRun<'_>) -> Result<(), Inconsistent> {
        let Some(&first_location) = run.locations.first() else {
            return Ok(());
        };
        let segment = first_location.segment();
        debug_assert!(
            run.locations.iter().all(|l| l.segment() == segment),
            "a run lies in one segment"
        );
        let has_table = self.tables.contains_key(&segment);
        let id = self.heads.id_or_insert(run.stream);
        let next_revision = self.heads.next_revision(id);
        if run.first_revision != next_revision {
            return Err(Inconsistent(format!(
                "event {} of stream {:?} has revision {}, expected {}",
                run.first_id, run.stream, run.first_revision, next_revision
            )));
        }
        self.heads
            .set_next_revision(id, next_revision + run.locations.len() as u64);
        if run.tombstone && !stream::is_system(run.stream) {
            self.heads.set_tombstoned(id);
        }
        if next_revision == 0 {
            self.streams_with_events += 1;
        }
        self.events += run.locations.len() as u64;
        if !has_table {
            // A segment whose table exists (recovery rescanning it) needs no memtable.
            self.memtables.entry(segment).or_default().add(
                id,
                run.first_revision,
                run.locations.iter().map(|l| l.offset()),
            )?;
        }
        self.recent.insert(run.first_id, first_location);
        if let (Some(data), Some(target)) = (run.metadata, stream::metastream_target(run.stream)) {
            // Metadata was validated when written; an unreadable one (impossible
            // without damage the checksums would catch) leaves the old metadata.
            if let Ok(metadata) = StreamMetadata::from_slice(data) {
                let target = self.heads.id_or_insert(target);
                self.heads.set_metadata(target, Some(Arc::new(metadata)));
            }
        }
        Ok(())
    }

    /// Puts a segment's table in place of its memtable.
    pub fn install_table(&mut self, table: Arc<Table>) {
        self.memtables.remove(&table.segment);
        self.tables.insert(table.segment, table);
    }

    /// Where revisions `low..high` of `name` lie, as far as memory knows, and the tables
    /// to search for the rest.
    pub fn lookup(&self, name: &str, low: u64, high: u64) -> Lookup {
        let hash = bloom::stream_hash(name);
        let mut known = vec![None; usize::try_from(high.saturating_sub(low)).unwrap_or(0)];
        // A stream without a head has no events: no memtable or table can hold any.
        let Some(id) = self.heads.id(name) else {
            return Lookup {
                low,
                hash,
                known,
                tables: Vec::new(),
            };
        };
        for (&segment, memtable) in &self.memtables {
            let Some(run) = memtable.run(id) else {
                continue;
            };
            let first = run.first_revision();
            let from = first.max(low);
            let to = (first + run.len() as u64).min(high);
            for revision in from..to {
                if let Some(offset) = run.offset((revision - first) as usize) {
                    known[(revision - low) as usize] = Some(Location::new(segment, offset));
                }
            }
        }
        let tables = if known.iter().all(Option::is_some) {
            Vec::new()
        } else {
            self.tables
                .values()
                .rev()
                .filter(|table| table.may_hold(hash))
                .cloned()
                .collect()
        };
        Lookup {
            low,
            hash,
            known,
            tables,
        }
    }

    /// What the index holds where.
    pub fn stats(&self) -> IndexStats {
        IndexStats {
            streams: self.heads.len() as u64,
            head_memory_bytes: self.heads.memory_bytes() as u64,
            tables: self.tables.len() as u64,
            table_memory_bytes: self.tables.values().map(|t| t.memory_bytes() as u64).sum(),
            table_file_bytes: self.tables.values().map(|t| t.file_bytes()).sum(),
            memtables: self.memtables.len() as u64,
            memtable_events: self.memtables.values().map(Memtable::events).sum(),
            memtable_memory_bytes: self
                .memtables
                .values()
                .map(|m| m.memory_bytes() as u64)
                .sum(),
        }
    }
}

/// Where a range of a stream's revisions lies: found in memory, or to be searched for in
/// tables (which takes file reads, so it happens after the index lock is released).
#[derive(Debug)]
pub struct Lookup {
    low: u64,
    hash: u64,
    known: Vec<Option<Location>>,
    /// Tables whose bloom filter may hold the stream, newest first.
    tables: Vec<Arc<Table>>,
}

impl Lookup {
    /// The one location of each revision, `low` first, if every revision has exactly
    /// one candidate (the common case, which allocates one vector instead of one per
    /// revision); `None` if any has none or several (the caller then asks
    /// [`Lookup::resolve_all`] for every candidate).
    pub fn resolve_unique(&self) -> Result<Option<Vec<Location>>, StorageError> {
        let mut found = self.known.clone();
        for table in &self.tables {
            let first = found.iter().position(Option::is_none);
            let last = found.iter().rposition(Option::is_none);
            let (Some(first), Some(last)) = (first, last) else {
                break;
            };
            let low = self.low + first as u64;
            let high = self.low + last as u64 + 1;
            for entry in table.find(self.hash, low, high)? {
                let at = (entry.revision - self.low) as usize;
                if self.known[at].is_some() {
                    continue;
                }
                if found[at].is_some() {
                    // A second candidate: a stream sharing the name's hash.
                    return Ok(None);
                }
                found[at] = Some(Location::new(table.segment, entry.offset));
            }
        }
        Ok(found.into_iter().collect())
    }

    /// Every candidate location of each revision, `low` first: every table is searched,
    /// and a revision may get candidates of other streams sharing the name's hash (the
    /// caller reads the records to tell). A revision no table holds gets none. The
    /// common case, one candidate each, is [`Lookup::resolve_unique`].
    pub fn resolve_all(&self) -> Result<Vec<Vec<Location>>, StorageError> {
        let mut candidates: Vec<Vec<Location>> = self
            .known
            .iter()
            .map(|known| known.iter().copied().collect())
            .collect();
        if candidates.is_empty() {
            return Ok(candidates);
        }
        let low = self.low;
        let high = self.low + candidates.len() as u64;
        for table in &self.tables {
            for entry in table.find(self.hash, low, high)? {
                let at = (entry.revision - self.low) as usize;
                // A revision memory knows is never looked for in tables: a colliding
                // stream's entry must not shadow it.
                if self.known[at].is_none() {
                    candidates[at].push(Location::new(table.segment, entry.offset));
                }
            }
        }
        Ok(candidates)
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
            index
                .heads
                .get("a")
                .expect("a has a head")
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
        assert!(index.heads.get("a").is_some_and(|a| a.tombstoned));
        assert_eq!(index.events, 4);
        let location = Location::new(7, 123);
        assert_eq!((location.segment(), location.offset()), (7, 123));
    }
}
