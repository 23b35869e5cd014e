//! Segment tables: for one sealed segment, every event's (stream hash, revision) →
//! record offset, sorted, on disk; in memory only a bloom filter of the stream hashes
//! and one fence per block of entries.
//!
//! Why: the index used to hold 8 bytes of location per event in RAM for ever (0.8 GB
//! at 100 M events, plus vector slack). A sealed segment never changes, so its part of
//! the index can be written once, next to it, and read back on demand: RAM per event
//! drops to ~1.4 bytes (bloom and fences), and a lookup costs a bloom probe per table
//! plus one block read (usually from the page cache) per table that has the stream.
//!
//! ```text
//! header, 64 bytes:
//!      0   8  magic "STRATTBL"
//!      8   4  version (1)
//!     12   4  segment number
//!     16  16  store id (the segment header's)
//!     32   8  segment length covered (the sealed segment's size in bytes)
//!     40   8  entry count
//!     48   4  bloom size in 64-bit words
//!     52   8  reserved, zero
//!     60   4  CRC32C of bytes 0..60
//! entries: count × 20 bytes, (u64 stream hash, u64 revision, u32 record offset),
//!          sorted by (hash, revision, offset)
//! bloom:   words × 8 bytes
//! fences:  one per block of 128 entries: (u64 hash, u64 revision) of the block's
//!          first entry, u32 CRC32C of the block's bytes
//! u32 CRC32C of the bloom and the fences
//! ```
//!
//! Tables are derived data: a missing, damaged, foreign or stale table (one whose
//! segment length differs from the segment's) is ignored at open, and the segment's
//! locations come from the checkpoint or a scan until a new table is built. A block
//! whose checksum fails when read is reported as corruption of the table file.

use std::sync::Arc;

use uuid::Uuid;

use super::bloom::{stream_hash, Bloom};
use crate::error::StorageError;
use crate::format::{segment, u32_at, u64_at};
use crate::handles::SegmentHandles;
use crate::io::{read_exact_at, Storage, StorageFile};

const MAGIC: &[u8; 8] = b"STRATTBL";
const VERSION: u32 = 1;
/// Size of the header in bytes.
pub const HEADER_LEN: usize = 64;
/// Size of an entry in bytes.
pub const ENTRY_LEN: usize = 20;
/// Entries per block (one fence and one checksum each).
pub const BLOCK_ENTRIES: usize = 128;
/// Bytes of a full entry block.
pub const BLOCK_BYTES: usize = BLOCK_ENTRIES * ENTRY_LEN;
const FENCE_LEN: usize = 20;

/// The file name of segment `number`'s table.
pub fn file_name(number: u32) -> String {
    format!("{number:010}.tbl")
}

/// The name a table is written under before it is renamed into place.
pub fn temp_file_name(number: u32) -> String {
    format!("{number:010}.tbl.tmp")
}

/// The segment number in a table's file name (or its temporary name), if it is one.
pub fn parse_file_name(name: &str) -> Option<u32> {
    let digits = name
        .strip_suffix(".tbl")
        .or_else(|| name.strip_suffix(".tbl.tmp"))?;
    if digits.len() != 10 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// One entry: where revision `revision` of the stream(s) hashing to `hash` lies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Entry {
    /// [`stream_hash`] of the stream name.
    pub hash: u64,
    /// The event's revision in its stream.
    pub revision: u64,
    /// Its record's offset in the segment.
    pub offset: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Fence {
    hash: u64,
    revision: u64,
    crc: u32,
}

/// A table as the index holds it: what finding an entry needs without reading the file.
#[derive(Debug)]
pub struct Table {
    /// The segment it indexes.
    pub segment: u32,
    /// Entries in the file.
    pub entries: u64,
    bloom: Bloom,
    fences: Vec<Fence>,
    handles: Arc<SegmentHandles>,
}

/// Why a table file was not used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Unusable(pub String);

impl Table {
    /// Bytes of memory the table holds.
    pub fn memory_bytes(&self) -> usize {
        self.bloom.size_bytes() + self.fences.len() * std::mem::size_of::<Fence>()
    }

    /// Bytes the table's file takes on disk.
    pub fn file_bytes(&self) -> u64 {
        HEADER_LEN as u64
            + self.entries * ENTRY_LEN as u64
            + self.bloom.size_bytes() as u64
            + self.fences.len() as u64 * FENCE_LEN as u64
            + 4
    }

    /// Checks every entry block against its checksum, `blocks_per_read` blocks per file
    /// read, calling `paced` with the bytes of each read (the scrubber sleeps there to
    /// keep its rate; `false` stops the check). The rest of the file (bloom filter,
    /// fences) was checked when the table was loaded and is used from memory since.
    /// Returns whether every block was checked.
    pub fn verify_blocks(
        &self,
        blocks_per_read: usize,
        mut paced: impl FnMut(u64) -> bool,
    ) -> Result<bool, StorageError> {
        let name = file_name(self.segment);
        let blocks_per_read = blocks_per_read.max(1);
        let mut block = 0;
        while block < self.fences.len() {
            let last = (block + blocks_per_read).min(self.fences.len());
            let first_entry = block * BLOCK_ENTRIES;
            let entries = (self.entries as usize).min(last * BLOCK_ENTRIES) - first_entry;
            let mut bytes = vec![0u8; entries * ENTRY_LEN];
            let at = (HEADER_LEN + first_entry * ENTRY_LEN) as u64;
            let file = self.handles.file(self.segment)?;
            read_exact_at(&*file, &mut bytes, at)
                .map_err(|e| StorageError::io("read", &name, e))?;
            drop(file);
            for (i, chunk) in bytes.chunks(BLOCK_ENTRIES * ENTRY_LEN).enumerate() {
                if crc32c::crc32c(chunk) != self.fences[block + i].crc {
                    return Err(StorageError::corrupt(
                        &name,
                        at + (i * BLOCK_ENTRIES * ENTRY_LEN) as u64,
                        "table block checksum mismatch",
                    ));
                }
            }
            if !paced(bytes.len() as u64) {
                return Ok(false);
            }
            block = last;
        }
        Ok(true)
    }

    /// Whether the table may hold events of streams hashing to `hash`.
    pub fn may_hold(&self, hash: u64) -> bool {
        self.bloom.may_contain(hash)
    }

    /// The entries of stream hash `hash` with revisions in `low..high`, in order. May
    /// include entries of other streams sharing the hash: callers check the records.
    pub fn find(&self, hash: u64, low: u64, high: u64) -> Result<Vec<Entry>, StorageError> {
        let mut found = Vec::new();
        if low >= high || !self.bloom.may_contain(hash) {
            return Ok(found);
        }
        let name = file_name(self.segment);
        let start = self
            .fences
            .partition_point(|f| (f.hash, f.revision) <= (hash, low))
            .saturating_sub(1);
        let file = self.handles.file(self.segment)?;
        for block in start..self.fences.len() {
            let fence = self.fences[block];
            if (fence.hash, fence.revision) >= (hash, high) && block > start {
                break;
            }
            let first = block * BLOCK_ENTRIES;
            let count = (self.entries as usize - first).min(BLOCK_ENTRIES);
            let mut bytes = vec![0u8; count * ENTRY_LEN];
            let at = (HEADER_LEN + first * ENTRY_LEN) as u64;
            read_exact_at(&*file, &mut bytes, at)
                .map_err(|e| StorageError::io("read", &name, e))?;
            if crc32c::crc32c(&bytes) != fence.crc {
                return Err(StorageError::corrupt(
                    &name,
                    at,
                    "table block checksum mismatch",
                ));
            }
            for chunk in bytes.chunks_exact(ENTRY_LEN) {
                let entry = decode_entry(chunk);
                if (entry.hash, entry.revision) < (hash, low) {
                    continue;
                }
                if (entry.hash, entry.revision) >= (hash, high) {
                    return Ok(found);
                }
                found.push(entry);
            }
        }
        Ok(found)
    }

    /// Loads table `segment` if its file is a complete table of that segment, of this
    /// store, covering `segment_len` bytes of it.
    pub fn load(
        storage: &dyn Storage,
        handles: &Arc<SegmentHandles>,
        segment: u32,
        store_id: Uuid,
        segment_len: u64,
    ) -> Result<Table, Unusable> {
        let name = file_name(segment);
        let file = storage
            .open(&name)
            .map_err(|e| Unusable(format!("cannot open {name}: {e}")))?;
        let len = file
            .len()
            .map_err(|e| Unusable(format!("cannot stat {name}: {e}")))?;
        let mut header = [0u8; HEADER_LEN];
        read_exact_at(&*file, &mut header, 0)
            .map_err(|e| Unusable(format!("cannot read {name}: {e}")))?;
        if &header[..8] != MAGIC {
            return Err(Unusable(format!("{name} is not a segment table")));
        }
        if crc32c::crc32c(&header[..60]) != u32_at(&header, 60) {
            return Err(Unusable(format!("{name}: header checksum mismatch")));
        }
        if u32_at(&header, 8) != VERSION {
            return Err(Unusable(format!("{name}: table of another version")));
        }
        let file_store = Uuid::from_slice(&header[16..32]).unwrap_or_default();
        if u32_at(&header, 12) != segment || file_store != store_id {
            return Err(Unusable(format!(
                "{name} belongs to another segment or store"
            )));
        }
        if u64_at(&header, 32) != segment_len {
            return Err(Unusable(format!(
                "{name} covers {} bytes of its segment, which has {segment_len}",
                u64_at(&header, 32)
            )));
        }
        let entries = u64_at(&header, 40);
        let words = u64::from(u32_at(&header, 48));
        let blocks = entries.div_ceil(BLOCK_ENTRIES as u64);
        // Sizes come from the file: checked against its length before anything is
        // allocated by them.
        let expected = (HEADER_LEN as u64)
            .checked_add(entries.saturating_mul(ENTRY_LEN as u64))
            .and_then(|n| n.checked_add(words * 8))
            .and_then(|n| n.checked_add(blocks * FENCE_LEN as u64))
            .and_then(|n| n.checked_add(4));
        if expected != Some(len) || words == 0 {
            return Err(Unusable(format!("{name} has the wrong length")));
        }
        let summary_at = HEADER_LEN as u64 + entries * ENTRY_LEN as u64;
        let mut summary = vec![0u8; (len - summary_at) as usize];
        read_exact_at(&*file, &mut summary, summary_at)
            .map_err(|e| Unusable(format!("cannot read {name}: {e}")))?;
        let (body, crc) = summary.split_at(summary.len() - 4);
        if crc32c::crc32c(body) != u32_at(crc, 0) {
            return Err(Unusable(format!("{name}: summary checksum mismatch")));
        }
        let (bloom_bytes, fence_bytes) = body.split_at(words as usize * 8);
        let bloom = Bloom::from_words(bloom_bytes.chunks_exact(8).map(|c| u64_at(c, 0)).collect())
            .ok_or_else(|| Unusable(format!("{name}: empty bloom filter")))?;
        let fences: Vec<Fence> = fence_bytes
            .chunks_exact(FENCE_LEN)
            .map(|c| Fence {
                hash: u64_at(c, 0),
                revision: u64_at(c, 8),
                crc: u32_at(c, 16),
            })
            .collect();
        if fences
            .windows(2)
            .any(|w| (w[0].hash, w[0].revision) > (w[1].hash, w[1].revision))
        {
            return Err(Unusable(format!("{name}: fences out of order")));
        }
        handles.insert(segment, file);
        Ok(Table {
            segment,
            entries,
            bloom,
            fences,
            handles: handles.clone(),
        })
    }
}

fn decode_entry(chunk: &[u8]) -> Entry {
    Entry {
        hash: u64_at(chunk, 0),
        revision: u64_at(chunk, 8),
        offset: u32_at(chunk, 16),
    }
}

/// Reads every record of sealed segment `segment` (its first `segment_len` bytes, all
/// checked frames) and returns its entries, sorted.
pub fn entries_of_segment(
    file: &dyn StorageFile,
    segment: u32,
    segment_len: u64,
) -> Result<Vec<Entry>, StorageError> {
    let name = segment::file_name(segment);
    let mut entries = Vec::new();
    let _: std::ops::ControlFlow<()> = crate::frames::for_each_frame(
        file,
        &name,
        segment::HEADER_LEN as u64,
        segment_len,
        |frame| {
            frame.for_each_record(&name, |view, file_offset| {
                entries.push(Entry {
                    hash: stream_hash(view.stream),
                    revision: view.revision,
                    offset: file_offset as u32,
                });
                std::ops::ControlFlow::Continue(())
            })
        },
    )?;
    entries.sort_unstable();
    Ok(entries)
}

/// Encodes a table of `entries` (sorted) for segment `segment` of `segment_len` bytes.
pub fn encode(segment: u32, store_id: Uuid, segment_len: u64, entries: &[Entry]) -> Vec<u8> {
    debug_assert!(
        entries.windows(2).all(|w| w[0] <= w[1]),
        "entries are sorted"
    );
    let mut distinct = 0usize;
    let mut bloom_keys = entries.iter().map(|e| e.hash).peekable();
    while let Some(hash) = bloom_keys.next() {
        distinct += 1;
        while bloom_keys.peek() == Some(&hash) {
            bloom_keys.next();
        }
    }
    let mut bloom = Bloom::with_keys(distinct);
    let mut out = Vec::with_capacity(HEADER_LEN + entries.len() * ENTRY_LEN + distinct * 2);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&segment.to_le_bytes());
    out.extend_from_slice(store_id.as_bytes());
    out.extend_from_slice(&segment_len.to_le_bytes());
    out.extend_from_slice(&(entries.len() as u64).to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes()); // bloom words, filled below
    out.extend_from_slice(&[0u8; 8]);
    out.extend_from_slice(&0u32.to_le_bytes()); // header CRC, filled below
    let mut fences = Vec::with_capacity(entries.len().div_ceil(BLOCK_ENTRIES) * FENCE_LEN);
    for block in entries.chunks(BLOCK_ENTRIES) {
        let start = out.len();
        for entry in block {
            bloom.insert(entry.hash);
            out.extend_from_slice(&entry.hash.to_le_bytes());
            out.extend_from_slice(&entry.revision.to_le_bytes());
            out.extend_from_slice(&entry.offset.to_le_bytes());
        }
        fences.extend_from_slice(&block[0].hash.to_le_bytes());
        fences.extend_from_slice(&block[0].revision.to_le_bytes());
        fences.extend_from_slice(&crc32c::crc32c(&out[start..]).to_le_bytes());
    }
    let words = bloom.words().len() as u32;
    out[48..52].copy_from_slice(&words.to_le_bytes());
    let header_crc = crc32c::crc32c(&out[..60]);
    out[60..64].copy_from_slice(&header_crc.to_le_bytes());
    let summary_at = out.len();
    for word in bloom.words() {
        out.extend_from_slice(&word.to_le_bytes());
    }
    out.extend_from_slice(&fences);
    let crc = crc32c::crc32c(&out[summary_at..]);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Builds segment `segment`'s table from the segment file and writes it crash-atomically
/// (temporary file, synced, renamed, directory synced). Returns the loaded table.
pub fn build(
    storage: &dyn Storage,
    segment_handles: &Arc<SegmentHandles>,
    table_handles: &Arc<SegmentHandles>,
    segment: u32,
    store_id: Uuid,
    segment_len: u64,
) -> Result<Table, StorageError> {
    let file = segment_handles.file(segment)?;
    let entries = entries_of_segment(&*file, segment, segment_len)?;
    let bytes = encode(segment, store_id, segment_len, &entries);
    drop(entries);
    let temp = temp_file_name(segment);
    let name = file_name(segment);
    match storage.remove(&temp) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
            return Err(StorageError::io("remove", &temp, error))
        }
        _ => {}
    }
    let out = storage
        .create(&temp)
        .map_err(|e| StorageError::io("create", &temp, e))?;
    out.write_at(&bytes, 0)
        .map_err(|e| StorageError::io("write", &temp, e))?;
    out.sync_data()
        .map_err(|e| StorageError::io("fdatasync", &temp, e))?;
    drop(out);
    table_handles.forget(segment);
    storage
        .rename(&temp, &name)
        .map_err(|e| StorageError::io("rename", &temp, e))?;
    storage
        .sync_dir()
        .map_err(|e| StorageError::io("sync directory of", &name, e))?;
    Table::load(storage, table_handles, segment, store_id, segment_len)
        .map_err(|unusable| StorageError::corrupt(&name, 0, unusable.0))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a test panics on a failed expectation
mod tests {
    use super::*;
    use crate::io::MemoryStorage;

    fn entries(n: u64) -> Vec<Entry> {
        let mut all: Vec<Entry> = (0..n)
            .flat_map(|s| {
                (0..5).map(move |revision| Entry {
                    hash: stream_hash(&format!("s-{s}")),
                    revision,
                    offset: (s * 5 + revision) as u32,
                })
            })
            .collect();
        all.sort_unstable();
        all
    }

    fn written(storage: &Arc<dyn Storage>, all: &[Entry]) -> Table {
        let file = storage.create(&file_name(3)).unwrap();
        file.write_at(&encode(3, Uuid::nil(), 999, all), 0).unwrap();
        let handles = Arc::new(SegmentHandles::named(storage.clone(), 4, file_name));
        Table::load(&**storage, &handles, 3, Uuid::nil(), 999).unwrap()
    }

    #[test]
    fn finds_every_entry_of_a_stream_by_revision_range() {
        let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
        let all = entries(1000);
        let table = written(&storage, &all);
        assert_eq!(table.entries, 5000);
        for s in [0u64, 1, 499, 999] {
            let hash = stream_hash(&format!("s-{s}"));
            let found = table.find(hash, 0, u64::MAX).unwrap();
            assert_eq!(
                found.iter().map(|e| e.revision).collect::<Vec<_>>(),
                vec![0, 1, 2, 3, 4]
            );
            assert!(found
                .iter()
                .all(|e| e.offset == (s * 5 + e.revision) as u32));
            let some = table.find(hash, 2, 4).unwrap();
            assert_eq!(
                some.iter().map(|e| e.revision).collect::<Vec<_>>(),
                vec![2, 3]
            );
        }
        assert!(table
            .find(stream_hash("absent"), 0, u64::MAX)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn a_foreign_stale_or_damaged_table_is_not_used() {
        let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
        let handles = Arc::new(SegmentHandles::named(storage.clone(), 4, file_name));
        let all = entries(300);
        let bytes = encode(3, Uuid::nil(), 999, &all);
        let file = storage.create(&file_name(3)).unwrap();
        file.write_at(&bytes, 0).unwrap();
        assert!(Table::load(&*storage, &handles, 3, Uuid::new_v4(), 999).is_err());
        assert!(Table::load(&*storage, &handles, 3, Uuid::nil(), 1000).is_err());
        assert!(Table::load(&*storage, &handles, 4, Uuid::nil(), 999).is_err());
        // A flipped bit in the summary: refused at load.
        let mut damaged = bytes.clone();
        let last = damaged.len() - 10;
        damaged[last] ^= 1;
        file.write_at(&damaged, 0).unwrap();
        assert!(Table::load(&*storage, &handles, 3, Uuid::nil(), 999).is_err());
        // A flipped bit in an entry block: found when the block is read.
        let mut damaged = bytes;
        damaged[HEADER_LEN + 3] ^= 1;
        file.write_at(&damaged, 0).unwrap();
        let table = Table::load(&*storage, &handles, 3, Uuid::nil(), 999).unwrap();
        let first = all[0];
        let error = table.find(first.hash, 0, u64::MAX).unwrap_err();
        assert!(error.to_string().contains("checksum"), "{error}");
        // Cut short: refused.
        file.set_len(100).unwrap();
        assert!(Table::load(&*storage, &handles, 3, Uuid::nil(), 999).is_err());
    }

    #[test]
    fn an_empty_segment_has_a_usable_table() {
        let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
        let table = written(&storage, &[]);
        assert!(table.find(1, 0, 10).unwrap().is_empty());
    }
}
