//! A bounded window of recently written event ids, for idempotent retries of appends
//! that do not name an exact expected revision.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};

use uuid::Uuid;

use super::Location;

/// Hashes a UUID by mixing its two halves. Ids are usually random (v4) already, and a
/// keyed SipHash of 16 bytes per event cost a fifth of the write path's CPU; crafted ids
/// can only make their own lookups slower, never wrong.
#[derive(Default)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = (self.0.rotate_left(29) ^ u64::from_le_bytes(word))
                .wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
}

/// The last `capacity` event ids written, with their locations. Oldest ids are evicted
/// first.
#[derive(Debug, Default)]
pub struct RecentIds {
    capacity: usize,
    by_id: HashMap<Uuid, Location, BuildHasherDefault<IdHasher>>,
    order: VecDeque<(Uuid, Location)>,
}

impl RecentIds {
    /// An empty window of `capacity` ids.
    pub fn new(capacity: usize) -> RecentIds {
        RecentIds {
            capacity,
            by_id: HashMap::with_capacity_and_hasher(
                capacity.min(1 << 16),
                BuildHasherDefault::default(),
            ),
            order: VecDeque::new(),
        }
    }

    /// Remembers that `id` was written at `location`.
    pub fn insert(&mut self, id: Uuid, location: Location) {
        if self.capacity == 0 {
            return;
        }
        if self.order.len() == self.capacity {
            if let Some((oldest, location)) = self.order.pop_front() {
                // Only forget the id if it still points at the evicted write (an id may
                // be written again, to another stream).
                if self.by_id.get(&oldest) == Some(&location) {
                    self.by_id.remove(&oldest);
                }
            }
        }
        self.by_id.insert(id, location);
        self.order.push_back((id, location));
    }

    /// Where `id` was last written, if it is still in the window.
    pub fn get(&self, id: &Uuid) -> Option<Location> {
        self.by_id.get(id).copied()
    }

    /// The ids in the window, oldest first, with their locations.
    pub fn iter(&self) -> impl Iterator<Item = (Uuid, Location)> + '_ {
        self.order.iter().copied()
    }

    /// How many ids the window holds.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether the window is empty.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}
