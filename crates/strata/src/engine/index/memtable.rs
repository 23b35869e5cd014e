//! The locations of events in segments that have no table yet (the segment being
//! written, and sealed ones until their table is built), in memory.
//!
//! Bounded by the log written since the newest table: about 4 bytes per event plus one
//! entry per stream the segment touches.

use std::collections::HashMap;
use std::sync::Arc;

use super::Inconsistent;

/// One segment's event locations, by stream.
#[derive(Debug, Default)]
pub struct Memtable {
    streams: HashMap<Arc<str>, Run>,
    events: u64,
}

/// Consecutive revisions of one stream in the segment.
#[derive(Debug)]
struct Run {
    first_revision: u64,
    offsets: Vec<u32>,
}

impl Memtable {
    /// Records that revisions `first_revision..` of `stream` lie at `offsets`. A
    /// stream's revisions in one segment have no gaps, and runs come in log order.
    pub fn add(
        &mut self,
        stream: &Arc<str>,
        first_revision: u64,
        offsets: impl ExactSizeIterator<Item = u32>,
    ) -> Result<(), Inconsistent> {
        let count = offsets.len() as u64;
        match self.streams.get_mut(&**stream) {
            Some(run) => {
                let next = run.first_revision + run.offsets.len() as u64;
                if next != first_revision {
                    return Err(Inconsistent(format!(
                        "stream {stream:?} continues at revision {first_revision} in a \
                         segment where its next revision is {next}"
                    )));
                }
                run.offsets.extend(offsets);
            }
            None => {
                self.streams.insert(
                    stream.clone(),
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
    pub fn get(&self, stream: &str, revision: u64) -> Option<u32> {
        let run = self.streams.get(stream)?;
        let at = revision.checked_sub(run.first_revision)?;
        run.offsets.get(usize::try_from(at).ok()?).copied()
    }

    /// The run of `stream` in this segment: its first revision and the offsets.
    pub fn run(&self, stream: &str) -> Option<(u64, &[u32])> {
        let run = self.streams.get(stream)?;
        Some((run.first_revision, &run.offsets))
    }

    /// Each stream's run: name, first revision, offsets.
    pub fn runs(&self) -> impl Iterator<Item = (&Arc<str>, u64, &[u32])> {
        self.streams
            .iter()
            .map(|(name, run)| (name, run.first_revision, run.offsets.as_slice()))
    }

    /// Events it locates.
    pub fn events(&self) -> u64 {
        self.events
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
        let a: Arc<str> = "a".into();
        assert!(memtable.add(&a, 3, [10u32, 20].into_iter()).is_ok());
        assert!(memtable.add(&a, 5, [30u32].into_iter()).is_ok());
        assert!(memtable.add(&a, 7, [40u32].into_iter()).is_err(), "gap");
        assert_eq!(memtable.get("a", 2), None);
        assert_eq!(memtable.get("a", 3), Some(10));
        assert_eq!(memtable.get("a", 5), Some(30));
        assert_eq!(memtable.get("a", 6), None);
        assert_eq!(memtable.get("b", 0), None);
        assert_eq!(memtable.events(), 3);
    }
}
