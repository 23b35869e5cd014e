//! Stream heads in memory, packed: what the writer needs to check an append (next
//! revision, tombstone, metadata) and what reads need to bound a stream, for every
//! stream with events or metadata.
//!
//! A store with millions of streams keeps millions of heads, so their layout is the
//! engine's memory floor. A `HashMap<Arc<str>, _>` costs ~150 B per stream (an
//! allocation per name with its header and the allocator's rounding, a 40 B+ bucket,
//! and a second `Arc` per memtable run). Here a stream is a dense [`StreamId`] (its
//! position in creation order) and costs:
//! - its name's bytes, back to back in one arena;
//! - 8 B for where its name starts and 8 B for its next revision and tombstone bit;
//! - ~5 B in the hash table that finds its id by name (a `u32` and a control byte at
//!   the table's load factor).
//!
//! Metadata is rare, so it lives in a side map keyed by id.
//!
//! Ids never change while a store is open, and a checkpoint writes heads in id order so
//! that decoding it gives every stream the same id again: memtables and checkpoints
//! name streams by id instead of repeating their names.
//!
//! Invariants: ids are `0..len()`, one per distinct name; `name_starts` is
//! non-decreasing and every name's bytes are valid UTF-8 (they were a `&str`).

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::ops::ControlFlow;
use std::sync::{Arc, Mutex, MutexGuard};

use hashbrown::hash_table::Entry;
use hashbrown::HashTable;

use crate::metadata::StreamMetadata;

/// A stream's number in the index: its position in creation order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId(pub u32);

impl StreamId {
    fn index(self) -> usize {
        self.0 as usize
    }
}

/// The top bit of a packed revision word: the stream is tombstoned. Revisions stay far
/// below 2^63 (the log would need 2^63 events).
pub const TOMBSTONE_BIT: u64 = 1 << 63;

/// What the index knows of one stream: its head.
#[derive(Clone, Debug, Default)]
pub struct StreamEntry {
    /// The revision the next event gets (the stream's event count).
    pub next_revision: u64,
    /// Whether the stream is tombstoned.
    pub tombstoned: bool,
    /// The stream's current metadata, if any was set.
    pub metadata: Option<Arc<StreamMetadata>>,
}

impl StreamEntry {
    /// The revision the next event gets.
    pub fn next_revision(&self) -> u64 {
        self.next_revision
    }

    /// Whether the stream is soft-deleted (and not appended to since).
    pub fn is_deleted(&self) -> bool {
        self.metadata.as_ref().is_some_and(|m| m.is_deleted())
    }
}

/// Every stream's head, packed (see the module documentation).
#[derive(Debug, Default)]
pub struct Heads {
    /// Names back to back, in id order.
    names: Vec<u8>,
    /// Where each id's name starts in `names` (it ends where the next one starts).
    name_starts: Vec<u64>,
    /// Each id's next revision, with [`TOMBSTONE_BIT`] set for a tombstoned stream.
    revisions: Vec<u64>,
    /// Ids, found by their name's hash.
    by_name: HashTable<StreamId>,
    /// Keyed hashing (SipHash with random keys): stream names come from clients, and a
    /// fixed hash would let one craft names that all collide.
    hasher: std::collections::hash_map::RandomState,
    /// Metadata of the streams that have some.
    metadata: HashMap<StreamId, Arc<StreamMetadata>>,
    /// The ids `0..k` in name order, for listing streams a page at a time. Ids from `k`
    /// on (streams created since) are not in it: a listing sorts those few and merges
    /// them in, and folds them into the order once they are more than
    /// [`NAME_ORDER_SLACK`] or an eighth of it. Behind a lock of its own so that
    /// listings, which hold the index for reading, can fold.
    name_order: Mutex<Vec<StreamId>>,
}

/// Streams created since the name order was last folded that a listing sorts on the
/// fly before it folds them in (or an eighth of the order, if more).
const NAME_ORDER_SLACK: usize = 4096;

/// The name of `id` in an arena (a free function so that the hash table can rehash while
/// it is borrowed mutably).
fn name_in<'a>(names: &'a [u8], starts: &[u64], id: StreamId) -> &'a str {
    let start = starts[id.index()] as usize;
    let end = starts
        .get(id.index() + 1)
        .map_or(names.len(), |&next| next as usize);
    // Every name was appended from a `&str` and names are appended whole, so each slice
    // between two starts is valid UTF-8; a failure here is a bug in this module.
    std::str::from_utf8(&names[start..end]).unwrap_or_else(|_| unreachable!("names are UTF-8"))
}

impl Heads {
    /// Room for `streams` streams whose names take `name_bytes` bytes together.
    pub fn reserve(&mut self, streams: usize, name_bytes: usize) {
        self.names.reserve(name_bytes);
        self.name_starts.reserve(streams);
        self.revisions.reserve(streams);
        let (names, starts, hasher) = (&self.names, &self.name_starts, &self.hasher);
        self.by_name
            .reserve(streams, |&id| hasher.hash_one(name_in(names, starts, id)));
    }

    /// Number of streams.
    pub fn len(&self) -> usize {
        self.revisions.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.revisions.is_empty()
    }

    /// The id of `name`, if it has a head.
    pub fn id(&self, name: &str) -> Option<StreamId> {
        let hash = self.hasher.hash_one(name);
        let (names, starts) = (&self.names, &self.name_starts);
        self.by_name
            .find(hash, |&id| name_in(names, starts, id) == name)
            .copied()
    }

    /// The id of `name`, given a head (at revision 0) if it had none.
    pub fn id_or_insert(&mut self, name: &str) -> StreamId {
        let hash = self.hasher.hash_one(name);
        let (names, starts, hasher) = (&self.names, &self.name_starts, &self.hasher);
        // One probe sequence finds the stream or the slot its id goes in.
        let slot = match self.by_name.entry(
            hash,
            |&id| name_in(names, starts, id) == name,
            |&id| hasher.hash_one(name_in(names, starts, id)),
        ) {
            Entry::Occupied(found) => return *found.get(),
            Entry::Vacant(slot) => slot,
        };
        // Ids are u32: four billion streams is beyond what one index holds in memory.
        let id = StreamId(
            u32::try_from(self.revisions.len())
                .unwrap_or_else(|_| unreachable!("more than 2^32 streams in memory")),
        );
        slot.insert(id);
        self.name_starts.push(self.names.len() as u64);
        self.names.extend_from_slice(name.as_bytes());
        self.revisions.push(0);
        id
    }

    /// The name of `id`.
    pub fn name(&self, id: StreamId) -> &str {
        name_in(&self.names, &self.name_starts, id)
    }

    /// Whether `id` names a stream here.
    pub fn contains(&self, id: StreamId) -> bool {
        id.index() < self.revisions.len()
    }

    /// The head of `name`, if it has one.
    pub fn get(&self, name: &str) -> Option<StreamEntry> {
        self.id(name).map(|id| self.entry(id))
    }

    /// The head of `id`.
    pub fn entry(&self, id: StreamId) -> StreamEntry {
        let word = self.revisions[id.index()];
        StreamEntry {
            next_revision: word & !TOMBSTONE_BIT,
            tombstoned: word & TOMBSTONE_BIT != 0,
            metadata: self.metadata.get(&id).cloned(),
        }
    }

    /// The next revision of `id`.
    pub fn next_revision(&self, id: StreamId) -> u64 {
        self.revisions[id.index()] & !TOMBSTONE_BIT
    }

    /// Sets the next revision of `id`.
    pub fn set_next_revision(&mut self, id: StreamId, next_revision: u64) {
        assert!(next_revision < TOMBSTONE_BIT, "revision out of range");
        let word = &mut self.revisions[id.index()];
        // A published head never moves back: the log only grows.
        debug_assert!(next_revision >= *word & !TOMBSTONE_BIT, "a head moved back");
        *word = (*word & TOMBSTONE_BIT) | next_revision;
    }

    /// Marks `id` tombstoned.
    pub fn set_tombstoned(&mut self, id: StreamId) {
        self.revisions[id.index()] |= TOMBSTONE_BIT;
    }

    /// Sets the metadata of `id`.
    pub fn set_metadata(&mut self, id: StreamId, metadata: Option<Arc<StreamMetadata>>) {
        match metadata {
            Some(metadata) => self.metadata.insert(id, metadata),
            None => self.metadata.remove(&id),
        };
    }

    /// Every stream in id order: id, name, head.
    pub fn iter(&self) -> impl Iterator<Item = (StreamId, &str, StreamEntry)> + '_ {
        (0..self.revisions.len()).map(move |i| {
            let id = StreamId(i as u32);
            (id, self.name(id), self.entry(id))
        })
    }

    /// Events of all streams together (the sum of their next revisions).
    pub fn events(&self) -> u64 {
        self.revisions
            .iter()
            .map(|word| word & !TOMBSTONE_BIT)
            .sum()
    }

    /// The names back to back, in id order (a checkpoint copies it whole).
    pub fn name_arena(&self) -> &[u8] {
        &self.names
    }

    /// Each id's name length, in id order.
    pub fn name_lens(&self) -> impl Iterator<Item = usize> + '_ {
        let total = self.names.len() as u64;
        (0..self.name_starts.len()).map(move |i| {
            let end = self.name_starts.get(i + 1).copied().unwrap_or(total);
            (end - self.name_starts[i]) as usize
        })
    }

    /// Each id's next revision with the tombstone in the top bit, in id order.
    pub fn revision_words(&self) -> &[u64] {
        &self.revisions
    }

    /// The streams that have metadata, in id order.
    pub fn metadata(&self) -> Vec<(StreamId, &Arc<StreamMetadata>)> {
        let mut all: Vec<_> = self.metadata.iter().map(|(&id, m)| (id, m)).collect();
        all.sort_unstable_by_key(|(id, _)| *id);
        all
    }

    /// Heads from their parts as [`Heads::name_arena`], [`Heads::name_lens`] and
    /// [`Heads::revision_words`] give them (metadata is set afterwards). Fails if the
    /// lengths do not cover the arena exactly, a name is not UTF-8, or a name repeats.
    pub fn from_parts(
        names: Vec<u8>,
        lens: impl ExactSizeIterator<Item = usize>,
        revisions: Vec<u64>,
    ) -> Result<Heads, &'static str> {
        if lens.len() != revisions.len() {
            return Err("as many name lengths as heads");
        }
        let mut heads = Heads {
            names,
            name_starts: Vec::with_capacity(revisions.len()),
            revisions,
            ..Heads::default()
        };
        let mut start = 0usize;
        for len in lens {
            let end = start.checked_add(len).ok_or("name lengths overflow")?;
            let name = heads
                .names
                .get(start..end)
                .ok_or("names shorter than their lengths")?;
            std::str::from_utf8(name).map_err(|_| "stream name not UTF-8")?;
            heads.name_starts.push(start as u64);
            start = end;
        }
        if start != heads.names.len() {
            return Err("names longer than their lengths");
        }
        let (names, starts, hasher) = (&heads.names, &heads.name_starts, &heads.hasher);
        heads.by_name.reserve(starts.len(), |&id| {
            hasher.hash_one(name_in(names, starts, id))
        });
        for i in 0..starts.len() {
            let id = StreamId(u32::try_from(i).map_err(|_| "too many streams")?);
            let name = name_in(names, starts, id);
            let hash = hasher.hash_one(name);
            // One probe sequence finds a duplicate or the free slot (the table was sized
            // above, so the rehash closure is never called here).
            let slot = heads.by_name.entry(
                hash,
                |&other| name_in(names, starts, other) == name,
                |&id| hasher.hash_one(name_in(names, starts, id)),
            );
            match slot {
                Entry::Occupied(_) => return Err("a stream appears twice"),
                Entry::Vacant(slot) => {
                    slot.insert(id);
                }
            }
        }
        Ok(heads)
    }

    /// Calls `visit` with each stream whose name sorts after `after` and starts with
    /// `prefix`, in name order, until it breaks. Costs a binary search and the streams
    /// visited, plus a sort of the streams created since the order was last folded (at
    /// most an eighth of them, or [`NAME_ORDER_SLACK`]).
    pub fn visit_by_name(
        &self,
        after: Option<&str>,
        prefix: Option<&str>,
        mut visit: impl FnMut(StreamId, &str) -> ControlFlow<()>,
    ) {
        let mut order = self.name_order();
        let folded = order.len();
        let mut newer: Vec<StreamId> = (folded..self.len()).map(|i| StreamId(i as u32)).collect();
        newer.sort_unstable_by(|&a, &b| self.name(a).cmp(self.name(b)));
        if newer.len() > NAME_ORDER_SLACK.max(folded / 8) {
            *order = merge_by_name(self, &order, &newer);
            newer.clear();
        }
        let start = |ids: &[StreamId]| {
            let after_start = after.map_or(0, |a| ids.partition_point(|&id| self.name(id) <= a));
            let prefix_start = prefix.map_or(0, |p| ids.partition_point(|&id| self.name(id) < p));
            after_start.max(prefix_start)
        };
        let (mut old, mut new) = (order[start(&order)..].iter(), newer[start(&newer)..].iter());
        let (mut a, mut b) = (old.next(), new.next());
        loop {
            let id = match (a, b) {
                (Some(&x), Some(&y)) if self.name(x) <= self.name(y) => {
                    a = old.next();
                    x
                }
                (_, Some(&y)) => {
                    b = new.next();
                    y
                }
                (Some(&x), None) => {
                    a = old.next();
                    x
                }
                (None, None) => return,
            };
            let name = self.name(id);
            // Names with a prefix are contiguous in name order: the first without it
            // ends them.
            if prefix.is_some_and(|p| !name.starts_with(p)) {
                return;
            }
            if visit(id, name).is_break() {
                return;
            }
        }
    }

    /// The ids in name order as far as it is folded (what a checkpoint saves).
    pub fn name_order(&self) -> MutexGuard<'_, Vec<StreamId>> {
        // A listing that panicked left a valid order (it is replaced whole).
        self.name_order.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets the name order read from a checkpoint: the ids `0..k` sorted by name, each
    /// once. Refused (and the order left to be built) if it is not.
    pub fn set_name_order(&mut self, order: Vec<StreamId>) -> Result<(), &'static str> {
        if order.len() > self.len() {
            return Err("name order longer than the streams");
        }
        let mut seen = vec![false; order.len()];
        for &id in &order {
            match seen.get_mut(id.index()) {
                Some(seen) if !*seen => *seen = true,
                _ => return Err("name order is not a permutation"),
            }
        }
        if order.windows(2).any(|w| self.name(w[0]) >= self.name(w[1])) {
            return Err("name order not sorted");
        }
        *self.name_order.get_mut().unwrap_or_else(|p| p.into_inner()) = order;
        Ok(())
    }

    /// Bytes of name arena: what a checkpoint needs to size its buffer.
    pub fn name_bytes(&self) -> usize {
        self.names.len()
    }

    /// Memory the heads take (allocated capacity, without the allocator's own rounding).
    pub fn memory_bytes(&self) -> usize {
        self.names.capacity()
            + self.name_starts.capacity() * 8
            + self.revisions.capacity() * 8
            + self.by_name.capacity() * (std::mem::size_of::<StreamId>() + 1)
            + self.metadata.len() * 64
            + self.name_order().capacity() * std::mem::size_of::<StreamId>()
    }
}

/// `old` and `new` (each sorted by name, no name in both) merged in name order.
fn merge_by_name(heads: &Heads, old: &[StreamId], new: &[StreamId]) -> Vec<StreamId> {
    let mut merged = Vec::with_capacity(old.len() + new.len());
    let (mut i, mut j) = (0, 0);
    while i < old.len() && j < new.len() {
        if heads.name(old[i]) <= heads.name(new[j]) {
            merged.push(old[i]);
            i += 1;
        } else {
            merged.push(new[j]);
            j += 1;
        }
    }
    merged.extend_from_slice(&old[i..]);
    merged.extend_from_slice(&new[j..]);
    merged
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a test panics on a failed expectation
mod tests {
    use super::*;

    #[test]
    fn ids_are_dense_and_stable_and_heads_round_trip() {
        let mut heads = Heads::default();
        let names: Vec<String> = (0..10_000).map(|i| format!("stream-{i}")).collect();
        for (i, name) in names.iter().enumerate() {
            assert_eq!(heads.id_or_insert(name), StreamId(i as u32));
        }
        assert_eq!(
            heads.id_or_insert("stream-17"),
            StreamId(17),
            "no second id"
        );
        assert_eq!(heads.len(), names.len());
        for (i, name) in names.iter().enumerate() {
            assert_eq!(heads.id(name), Some(StreamId(i as u32)));
            assert_eq!(heads.name(StreamId(i as u32)), name);
        }
        assert_eq!(
            heads.id("stream-"),
            None,
            "a prefix of a name is not the name"
        );
        assert_eq!(heads.id("absent"), None);

        let id = heads.id_or_insert("é-unicode");
        heads.set_next_revision(id, 41);
        heads.set_tombstoned(id);
        heads.set_next_revision(id, 42);
        let entry = heads.entry(id);
        assert_eq!((entry.next_revision, entry.tombstoned), (42, true));
        let metadata = Arc::new(StreamMetadata::from_slice(b"{\"$maxCount\":3}").unwrap());
        heads.set_metadata(id, Some(metadata));
        assert_eq!(
            heads.get("é-unicode").and_then(|e| e.metadata?.max_count),
            Some(3)
        );
        assert_eq!(heads.get("stream-1").map(|e| e.next_revision), Some(0));
        let listed: Vec<&str> = heads.iter().map(|(_, name, _)| name).collect();
        assert_eq!(listed.len(), names.len() + 1);
        assert_eq!(listed[5], "stream-5");
        assert_eq!(*listed.last().unwrap(), "é-unicode");
    }

    #[test]
    fn parts_give_back_the_same_heads_and_bad_parts_are_refused() {
        let mut heads = Heads::default();
        for name in ["a", "", "ünïcode", "stream-1", "stream-10"] {
            let id = heads.id_or_insert(name);
            heads.set_next_revision(id, name.len() as u64);
        }
        heads.set_tombstoned(StreamId(3));
        let again = Heads::from_parts(
            heads.name_arena().to_vec(),
            heads.name_lens().collect::<Vec<_>>().into_iter(),
            heads.revision_words().to_vec(),
        )
        .unwrap();
        for (id, name, entry) in heads.iter() {
            assert_eq!(again.id(name), Some(id));
            let other = again.entry(id);
            assert_eq!(
                (other.next_revision, other.tombstoned),
                (entry.next_revision, entry.tombstoned)
            );
        }
        let parts = |names: &[u8], lens: &[usize], n: usize| {
            Heads::from_parts(names.to_vec(), lens.iter().copied(), vec![0; n])
        };
        assert!(parts(b"ab", &[1, 1], 2).is_ok());
        assert!(parts(b"aa", &[1, 1], 2).is_err(), "a name twice");
        assert!(parts(b"ab", &[1], 1).is_err(), "bytes left over");
        assert!(parts(b"ab", &[1, 2], 2).is_err(), "lengths past the names");
        assert!(parts(b"ab", &[1, 1], 3).is_err(), "counts differ");
        assert!(
            parts(&[0xc3, 0xa9], &[1, 1], 2).is_err(),
            "a name cut inside a char"
        );
    }

    fn listed(
        heads: &Heads,
        after: Option<&str>,
        prefix: Option<&str>,
        limit: usize,
    ) -> Vec<String> {
        let mut names = Vec::new();
        heads.visit_by_name(after, prefix, |_, name| {
            names.push(name.to_owned());
            if names.len() == limit {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        });
        names
    }

    #[test]
    fn listing_by_name_pages_in_order_while_streams_keep_coming() {
        let mut heads = Heads::default();
        let mut all: Vec<String> = Vec::new();
        // Inserted in a scrambled order, in rounds, listing between rounds: some
        // listings see a folded order plus a few newer streams, some fold.
        for round in 0..6u64 {
            for i in 0..3000u64 {
                let n = (i * 7919 + round * 104_729) % 1_000_003;
                let name = format!("s-{n:07}-{round}");
                heads.id_or_insert(&name);
                all.push(name);
            }
            all.sort();
            all.dedup();
            let mut paged = Vec::new();
            let mut after: Option<String> = None;
            loop {
                let page = listed(&heads, after.as_deref(), None, 1000);
                if page.is_empty() {
                    break;
                }
                after = page.last().cloned();
                paged.extend(page);
            }
            assert_eq!(paged, all, "round {round}");
        }
        let with_prefix: Vec<String> = all
            .iter()
            .filter(|n| n.starts_with("s-00"))
            .cloned()
            .collect();
        assert_eq!(listed(&heads, None, Some("s-00"), usize::MAX), with_prefix);
        assert_eq!(
            listed(&heads, Some(&with_prefix[10]), Some("s-00"), 5),
            with_prefix[11..16].to_vec()
        );
        assert!(listed(&heads, None, Some("t"), usize::MAX).is_empty());
    }

    #[test]
    fn a_saved_name_order_is_checked_before_it_is_used() {
        let mut heads = Heads::default();
        for name in ["c", "a", "b"] {
            heads.id_or_insert(name);
        }
        let ids = |v: &[u32]| v.iter().map(|&i| StreamId(i)).collect::<Vec<_>>();
        // Ids: c = 0, a = 1, b = 2.
        assert!(heads.set_name_order(ids(&[0, 1])).is_err(), "c before a");
        assert!(heads.set_name_order(ids(&[1, 1])).is_err(), "a twice");
        assert!(
            heads.set_name_order(ids(&[0, 2])).is_err(),
            "not the ids 0..2"
        );
        assert!(
            heads.set_name_order(ids(&[1, 2, 0, 0])).is_err(),
            "longer than the streams"
        );
        // A prefix of the ids: the newer ones (b) are merged in by a listing.
        assert!(heads.set_name_order(ids(&[1, 0])).is_ok());
        assert_eq!(listed(&heads, None, None, 10), vec!["a", "b", "c"]);
        assert!(heads.set_name_order(ids(&[1, 2, 0])).is_ok());
        assert_eq!(listed(&heads, Some("a"), None, 10), vec!["b", "c"]);
    }

    #[test]
    fn an_empty_name_is_a_name() {
        let mut heads = Heads::default();
        let a = heads.id_or_insert("");
        let b = heads.id_or_insert("b");
        assert_ne!(a, b);
        assert_eq!(heads.id(""), Some(a));
        assert_eq!(heads.name(a), "");
        assert_eq!(heads.name(b), "b");
    }
}
