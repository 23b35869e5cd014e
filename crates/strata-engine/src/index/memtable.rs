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

/// Consecutive revisions of one stream in the segment.
#[derive(Debug)]
struct Run {
    first_revision: u64,
    offsets: Vec<u32>,
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
        offsets: impl ExactSizeIterator<Item = u32>,
    ) -> Result<(), Inconsistent> {
        let count = offsets.len() as u64;
        match self.streams.get_mut(&stream) {
            Some(run) => {
                let next = run.first_revision + run.offsets.len() as u64;
                if next != first_revision {
                    return Err(Inconsistent(format!(
                        "stream #{} continues at revision {first_revision} in a \
                         segment where its next revision is {next}",
                        stream.0
                    )));
                }
                run.offsets.extend(offsets);
            }
            None => {
                self.streams.insert(
                    stream,
                    Run {
                        first_revision,
                        offsets: offsets.collect(),
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
        run.offsets.get(usize::try_from(at).ok()?).copied()
    }

    /// The run of `stream` in this segment: its first revision and the offsets.
    pub fn run(&self, stream: StreamId) -> Option<(u64, &[u32])> {
        let run = self.streams.get(&stream)?;
        Some((run.first_revision, &run.offsets))
    }

    /// Each stream's run: name, first revision, offsets.
    pub fn runs(&self) -> impl Iterator<Item = (StreamId, u64, &[u32])> {
        self.streams
            .iter()
            .map(|(&id, run)| (id, run.first_revision, run.offsets.as_slice()))
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
                .map(|run| run.offsets.capacity() * 4)
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
    }
}
