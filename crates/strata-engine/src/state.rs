//! State shared between the writer and the readers.
//!
//! The writer is the only one that changes it, and only after a batch is durable; readers
//! take short read locks to find what to read and never see a byte that is not synced.

use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

use tokio::sync::watch;

use super::handles::{SegmentFile, SegmentHandles};
use super::index::Index;
use super::io::Storage;
use super::options::Options;
use crate::error::StorageError;
use crate::event::Position;

/// A frame start is remembered in the sparse index at least every this many bytes, so a
/// position lookup scans at most this much (plus one frame).
pub const SPARSE_STRIDE_BYTES: u32 = 4096;

/// One segment file as readers see it.
#[derive(Debug)]
pub struct SegmentInfo {
    /// Its number.
    pub number: u32,
    /// Its file name.
    pub name: String,
    /// Position of its first event.
    pub first_position: u64,
    /// Its file, opened on demand through the store's handle cache.
    pub file: SegmentFile,
    /// `(first position, offset)` of some frame starts, in order; always the first frame.
    pub sparse: Vec<(u64, u32)>,
    /// End of the durable frames: nothing past it is read.
    pub end_offset: u32,
    /// Position after its last durable event.
    pub end_position: u64,
    /// Where its last durable frame starts (`None`: no frame yet). A checkpoint records
    /// it so that opening can prove the checkpoint's resume point is a frame boundary
    /// of this very log before trusting it.
    pub last_frame_offset: Option<u32>,
}

impl SegmentInfo {
    /// Notes a durable frame at `offset` holding events `first_position..end_position`.
    pub fn add_frame(&mut self, first_position: u64, end_position: u64, offset: u32, length: u32) {
        debug_assert_eq!(offset, self.end_offset, "frames are added in order");
        debug_assert_eq!(first_position, self.end_position, "positions have no gaps");
        let due = match self.sparse.last() {
            None => true,
            Some(&(_, last)) => offset - last >= SPARSE_STRIDE_BYTES,
        };
        if due && end_position > first_position {
            self.sparse.push((first_position, offset));
        }
        self.last_frame_offset = Some(offset);
        self.end_offset = offset + length;
        self.end_position = end_position;
    }

    /// The offset of the last remembered frame start at or before `position`.
    pub fn seek(&self, position: u64) -> Option<(usize, u32)> {
        let i = self.sparse.partition_point(|&(p, _)| p <= position);
        i.checked_sub(1).map(|i| (i, self.sparse[i].1))
    }
}

/// All segments, oldest first; numbers are contiguous.
#[derive(Debug, Default)]
pub struct Segments {
    /// The segments.
    pub list: Vec<SegmentInfo>,
    /// The id every segment header and the checkpoint of this store carry (nil for a
    /// store created before store ids existed: it keeps nil in its new segments).
    pub store_id: uuid::Uuid,
}

impl Segments {
    /// Position after the last durable event.
    pub fn next_position(&self) -> u64 {
        self.list.last().map_or(0, |s| s.end_position)
    }

    /// Index (in `list`) of the segment holding `position`, if it is durable.
    pub fn find(&self, position: u64) -> Option<usize> {
        if position >= self.next_position() {
            return None;
        }
        let i = self.list.partition_point(|s| s.first_position <= position);
        // Skip back over empty segments that share a first position.
        (0..i).rev().find(|&j| self.list[j].end_position > position)
    }

    /// The segment with number `number`.
    pub fn by_number(&self, number: u32) -> Option<&SegmentInfo> {
        let first = self.list.first()?.number;
        self.list.get(number.checked_sub(first)? as usize)
    }
}

/// Everything the writer and readers share.
#[derive(Debug)]
pub struct Shared {
    /// Where the files live.
    pub storage: Arc<dyn Storage>,
    /// The store's options.
    pub options: Options,
    /// The segments.
    pub segments: RwLock<Segments>,
    /// The indexes.
    pub index: RwLock<Index>,
    /// The last durable position, published after every batch.
    pub head: watch::Sender<Option<Position>>,
    /// Set when a write or sync failed: no append is acknowledged afterwards.
    pub poisoned: Mutex<Option<String>>,
    /// The open segment files (bounded).
    pub handles: Arc<SegmentHandles>,
    /// The open segment table files (bounded the same way).
    pub table_handles: Arc<SegmentHandles>,
}

impl Shared {
    /// Read access to the segments. A poisoned lock means a reader panicked while holding
    /// it; the data behind it is only ever changed whole by the writer, so it is sound.
    pub fn segments(&self) -> RwLockReadGuard<'_, Segments> {
        self.segments.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Write access to the segments (writer only).
    pub fn segments_mut(&self) -> RwLockWriteGuard<'_, Segments> {
        self.segments.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Read access to the indexes.
    pub fn index(&self) -> RwLockReadGuard<'_, Index> {
        self.index.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Write access to the indexes (writer only).
    pub fn index_mut(&self) -> RwLockWriteGuard<'_, Index> {
        self.index.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The error appends get once the writer is poisoned.
    pub fn poison_error(&self) -> Option<StorageError> {
        let poisoned = self.poisoned.lock().unwrap_or_else(|p| p.into_inner());
        poisoned.as_ref().map(|cause| StorageError::Poisoned {
            cause: cause.clone(),
        })
    }

    /// Publishes the durable head to subscribers.
    pub fn publish_head(&self) {
        let next = self.segments().next_position();
        let head = next.checked_sub(1).map(Position);
        self.head.send_if_modified(|current| {
            // Invariant: the published head only moves forwards. Subscribers and
            // read-your-writes waits trust every position up to it to stay; a head that
            // moved back would have shown them events that are gone.
            assert!(
                head >= *current,
                "the published head moved back from {current:?} to {head:?}"
            );
            let changed = *current != head;
            *current = head;
            changed
        });
    }
}
