//! The locations of events in segments that have no table yet (the segment being
//! written, and sealed ones until their table is built), in memory.
//!
//! Bounded by the log written since the newest table: about 4 bytes per event plus one
//! entry per stream the segment touches.

use std::collections::HashMap;

use super::heads::StreamId;
use super::Inconsistent;

/// One segment's event locations, by stream (its id in the heads).
#[derive(Debug, Default)]
pub struct Memtable {
    streams: HashMap<StreamId, Run>,
    events: u64,
}

/// Consecutive revisions of one stream in the segment, and where each lies.
///
/// The first offset is kept in place: most streams have one event in a segment (a
/// segment holds ~1 M events of as many streams), and a `Vec` of one would cost an
/// allocation (~32 B with the allocator's header) per stream. An empty `Vec` allocates
/// nothing.
#[derive(Debug)]
pub struct Run {
    first_revision: u64,
    first_offset: u32,
    more_offsets: Vec<u32>,
}

impl Run {
    /// The revision of the first event.
    pub fn first_revision(&self) -> u64 {
        self.first_revision
    }

    /// Number of events.
    pub fn len(&self) -> usize {
        1 + self.more_offsets.len()
    }

    /// Whether the run is empty (never: a run has at least one event).
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The offset of the `i`th event of the run.
    pub fn offset(&self, i: usize) -> Option<u32> {
        match i {
            0 => Some(self.first_offset),
            _ => self.more_offsets.get(i - 1).copied(),
        }
    }

    /// The offsets, in revision order.
    pub fn offsets(&self) -> impl Iterator<Item = u32> + '_ {
        std::iter::once(self.first_offset).chain(self.more_offsets.iter().copied())
    }
}

impl Memtable {
    /// An empty memtable with room for runs of `streams` streams.
    pub fn with_capacity(streams: usize) -> Memtable {
        Memtable {
            streams: HashMap::with_capacity(streams),
            events: 0,
        }
    }

    /// Records that revisions `first_revision..` of `stream` lie at `offsets`. A
    /// stream's revisions in one segment have no gaps, and runs come in log order.
    pub fn add(
        &mut self,
        stream: StreamId,
        first_revision: u64,
        mut offsets: impl ExactSizeIterator<Item = u32>,
    ) -> Result<(), Inconsistent> {
        let count = offsets.len() as u64;
        match self.streams.get_mut(&stream) {
            Some(run) => {
                let next = run.first_revision + run.len() as u64;
                if next != first_revision {
                    return Err(Inconsistent(format!(
                        "stream #{} continues at revision {first_revision} in a \
                         segment where its next revision is {next}",
                        stream.0
                    )));
                }
                run.more_offsets.extend(offsets);
            }
            None => {
                let Some(first_offset) = offsets.next() else {
                    return Ok(());
                };
                self.streams.insert(
                    stream,
                    Run {
                        first_revision,
                        first_offset,
                        more_offsets: offsets.collect(),
                    },
                );
            }
        }
        self.events += count;
        Ok(())
    }

    /// The offset of revision `revision` of `stream`, if it lies in this segment.
    pub fn get(&self, stream: StreamId, revision: u64) -> Option<u32> {
        let run = self.streams.get(&stream)?;
        let at = revision.checked_sub(run.first_revision)?;
        run.offset(usize::try_from(at).ok()?)
    }

    /// The run of `stream` in this segment.
    pub fn run(&self, stream: StreamId) -> Option<&Run> {
        self.streams.get(&stream)
    }

    /// Each stream's run.
    pub fn runs(&self) -> impl Iterator<Item = (StreamId, &Run)> {
        self.streams.iter().map(|(&id, run)| (id, run))
    }

    /// Events it locates.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// Memory it takes (allocated capacity, without the allocator's own rounding).
    pub fn memory_bytes(&self) -> usize {
        let slot = std::mem::size_of::<(StreamId, Run)>() + 1;
        self.streams.capacity() * slot
            + self
                .streams
                .values()
                .map(|run| run.more_offsets.capacity() * 4)
                .sum::<usize>()
    }

    /// Streams it has runs of.
    pub fn streams(&self) -> usize {
        self.streams.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_grow_without_gaps() {
        let mut memtable = Memtable::default();
        let (a, b) = (StreamId(0), StreamId(1));
        assert!(memtable.add(a, 3, [10u32, 20].into_iter()).is_ok());
        assert!(memtable.add(a, 5, [30u32].into_iter()).is_ok());
        assert!(memtable.add(a, 7, [40u32].into_iter()).is_err(), "gap");
        assert_eq!(memtable.get(a, 2), None);
        assert_eq!(memtable.get(a, 3), Some(10));
        assert_eq!(memtable.get(a, 5), Some(30));
        assert_eq!(memtable.get(a, 6), None);
        assert_eq!(memtable.get(b, 0), None);
        assert_eq!(memtable.events(), 3);
        let run = memtable.run(a).expect("a has a run");
        assert_eq!(run.offsets().collect::<Vec<_>>(), vec![10, 20, 30]);
        assert_eq!((run.first_revision(), run.len()), (3, 3));
        assert!(
            memtable.add(b, 0, std::iter::empty()).is_ok(),
            "nothing to add"
        );
        assert!(memtable.run(b).is_none());
    }
}
