//! Open segment files, bounded: at most [`Options::segment_handles_max`] stay open, the
//! least recently used closed first, and any segment is opened again on demand.
//!
//! Why: a store keeps one file per 256 MiB of log; holding every one open made a store
//! of ~1 000 segments (≈ 250 GB) fail under a default `ulimit -n` of 1 024, and a
//! server's client connections compete for the same descriptors.
//!
//! Invariant: a handle handed out stays valid while its holder keeps it, even if the
//! cache closes its own copy meanwhile (handles are reference counted), so eviction
//! never breaks a read or the writer. The open count can therefore briefly exceed the
//! maximum by the handles readers still hold.
//!
//! [`Options::segment_handles_max`]: super::options::Options::segment_handles_max

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use super::format::segment;
use super::io::{Storage, StorageFile};
use crate::error::StorageError;

/// The store's cache of open segment files.
pub struct SegmentHandles {
    storage: Arc<dyn Storage>,
    /// The file name of number `n` (segments, or their tables).
    name_of: fn(u32) -> String,
    max: usize,
    cache: Mutex<Cache>,
    /// Files opened because they were not in the cache (for tests and metrics).
    opens: AtomicU64,
}

#[derive(Default)]
struct Cache {
    files: HashMap<u32, Cached>,
    /// Advances on every use; the entry with the smallest `used` is the least recent.
    clock: u64,
}

struct Cached {
    file: Arc<dyn StorageFile>,
    used: u64,
}

impl fmt::Debug for SegmentHandles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SegmentHandles")
            .field("max", &self.max)
            .field("open", &self.open_count())
            .finish()
    }
}

impl SegmentHandles {
    /// A cache of at most `max` (at least 1) open segment files of `storage`.
    pub fn new(storage: Arc<dyn Storage>, max: usize) -> SegmentHandles {
        SegmentHandles::named(storage, max, segment::file_name)
    }

    /// A cache of at most `max` (at least 1) open files of `storage` named by number
    /// with `name_of` (segment tables, say).
    pub fn named(
        storage: Arc<dyn Storage>,
        max: usize,
        name_of: fn(u32) -> String,
    ) -> SegmentHandles {
        SegmentHandles {
            storage,
            name_of,
            max: max.max(1),
            cache: Mutex::default(),
            opens: AtomicU64::new(0),
        }
    }

    fn cache(&self) -> MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Segment `number`'s file, from the cache or opened now.
    pub fn file(&self, number: u32) -> Result<Arc<dyn StorageFile>, StorageError> {
        if let Some(file) = self.cached(number) {
            return Ok(file);
        }
        // Opened outside the lock: an open is a system call, and readers of other
        // segments must not wait behind it.
        let name = (self.name_of)(number);
        let file = self
            .storage
            .open(&name)
            .map_err(|e| StorageError::io("open", &name, e))?;
        self.opens.fetch_add(1, Ordering::Relaxed);
        Ok(self.insert(number, file))
    }

    fn cached(&self, number: u32) -> Option<Arc<dyn StorageFile>> {
        let mut cache = self.cache();
        cache.clock += 1;
        let now = cache.clock;
        cache.files.get_mut(&number).map(|cached| {
            cached.used = now;
            cached.file.clone()
        })
    }

    /// Caches `file` as segment `number`'s (a segment just created or opened) and
    /// returns the handle to use: the one already cached if another thread was first.
    pub fn insert(&self, number: u32, file: Arc<dyn StorageFile>) -> Arc<dyn StorageFile> {
        let mut cache = self.cache();
        cache.clock += 1;
        let now = cache.clock;
        let file = cache
            .files
            .entry(number)
            .and_modify(|cached| cached.used = now)
            .or_insert(Cached { file, used: now })
            .file
            .clone();
        while cache.files.len() > self.max {
            // A linear pass over at most `max + 1` entries: cheaper than keeping an
            // ordered structure up to date on every read.
            let oldest = cache
                .files
                .iter()
                .min_by_key(|(_, cached)| cached.used)
                .map(|(&number, _)| number);
            match oldest {
                Some(oldest) => {
                    cache.files.remove(&oldest);
                }
                None => break,
            }
        }
        debug_assert!(cache.files.len() <= self.max);
        file
    }

    /// Forgets segment `number` (its file was removed).
    pub fn forget(&self, number: u32) {
        self.cache().files.remove(&number);
    }

    /// Segment files the cache holds open now.
    pub fn open_count(&self) -> usize {
        self.cache().files.len()
    }

    /// Files opened on a cache miss since the store opened.
    pub fn opens(&self) -> u64 {
        self.opens.load(Ordering::Relaxed)
    }
}

/// A segment's file as [`SegmentInfo`](super::state::SegmentInfo) holds it: opened
/// through the store's [`SegmentHandles`] when needed, not held open.
#[derive(Clone)]
pub struct SegmentFile {
    number: u32,
    handles: Arc<SegmentHandles>,
}

impl fmt::Debug for SegmentFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SegmentFile")
            .field("number", &self.number)
            .finish()
    }
}

impl SegmentFile {
    /// Segment `number` of the store whose handles are `handles`.
    pub fn new(number: u32, handles: Arc<SegmentHandles>) -> SegmentFile {
        SegmentFile { number, handles }
    }

    /// The open file (from the cache, or opened now).
    pub fn open(&self) -> Result<Arc<dyn StorageFile>, StorageError> {
        self.handles.file(self.number)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a test panics on a failed expectation
mod tests {
    use super::*;
    use crate::io::MemoryStorage;

    fn storage_with(segments: u32) -> Arc<dyn Storage> {
        let storage = MemoryStorage::new();
        for number in 1..=segments {
            let file = storage.create(&segment::file_name(number)).unwrap();
            file.write_at(&number.to_le_bytes(), 0).unwrap();
        }
        Arc::new(storage)
    }

    fn first_word(file: &dyn StorageFile) -> u32 {
        let mut bytes = [0u8; 4];
        file.read_at(&mut bytes, 0).unwrap();
        u32::from_le_bytes(bytes)
    }

    #[test]
    fn at_most_max_files_stay_open_and_the_least_recently_used_goes_first() {
        let handles = SegmentHandles::new(storage_with(10), 3);
        for number in 1..=10 {
            let file = handles.file(number).unwrap();
            assert_eq!(first_word(&*file), number);
            assert!(handles.open_count() <= 3);
        }
        assert_eq!(handles.opens(), 10);
        // 8, 9, 10 are cached; using 8 makes 9 the least recent.
        handles.file(8).unwrap();
        assert_eq!(handles.opens(), 10);
        handles.file(1).unwrap();
        assert_eq!(handles.opens(), 11);
        handles.file(8).unwrap();
        handles.file(10).unwrap();
        assert_eq!(handles.opens(), 11, "8 and 10 stayed open");
        handles.file(9).unwrap();
        assert_eq!(handles.opens(), 12, "9 was closed first");
    }

    #[test]
    fn a_handle_outlives_its_eviction() {
        let handles = SegmentHandles::new(storage_with(3), 1);
        let held = handles.file(1).unwrap();
        handles.file(2).unwrap();
        handles.file(3).unwrap();
        assert_eq!(handles.open_count(), 1);
        assert_eq!(first_word(&*held), 1);
    }

    #[test]
    fn a_missing_segment_is_an_io_error_naming_it() {
        let handles = SegmentHandles::new(storage_with(1), 4);
        let error = handles.file(7).unwrap_err();
        assert!(
            error.to_string().contains(&segment::file_name(7)),
            "{error}"
        );
    }
}
