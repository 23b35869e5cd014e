//! A bounded window of recently written event ids, for idempotent retries of appends
//! that do not name an exact expected revision.

use std::collections::{HashMap, VecDeque};

use uuid::Uuid;

use super::Location;

/// The last `capacity` event ids written, with their locations. Oldest ids are evicted
/// first.
#[derive(Debug, Default)]
pub struct RecentIds {
    capacity: usize,
    by_id: HashMap<Uuid, Location>,
    order: VecDeque<(Uuid, Location)>,
}

impl RecentIds {
    /// An empty window of `capacity` ids.
    pub fn new(capacity: usize) -> RecentIds {
        RecentIds {
            capacity,
            by_id: HashMap::with_capacity(capacity.min(1 << 16)),
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
