//! Fuzz targets for every decoder of bytes this crate reads back from disk or takes from
//! clients: frames, records, segment headers, the index checkpoint, whole store
//! directories (recovery and reads over damaged files), stream metadata JSON and filter
//! regular expressions. See [`crate::fuzz`] for the budget and `docs/fuzzing.md`.
//!
//! Seeds come from the real encoders (a real store is written to memory and its files
//! taken apart); mutated inputs are sometimes "resealed" (their checksums recomputed)
//! so that the decoding behind the checksums is reached too, as a hostile writer of the
//! files could.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use proptest::prelude::*;
use proptest::sample::Index;
use uuid::Uuid;

use crate::event::{ContentType, Timestamp};
use crate::format::segment::{self, SegmentHeader};
use crate::format::{frame, record, u32_at};
use crate::fuzz::{ensure, mutated, mutated_text, run, Mutation};
use crate::index::checkpoint;
use crate::io::{MemoryStorage, Storage};
use crate::limits::Limits;
use crate::store::EventStore as _;
use crate::{Durability, Engine, Options};
use crate::{
    EventData, ExpectedRevision, Filter, ReadAllOptions, ReadStreamOptions, StreamMetadata,
};

/// Default cases per target in the normal test suite (debug builds): a few seconds each.
const QUICK: u64 = 512;
/// Default cases for the targets that open a whole store per case.
const QUICK_STORE: u64 = 256;

// ---------------------------------------------------------------------------------------
// Seeds: a small real store, written to memory.

/// Options that make small segments, so a seed store has several.
fn small_options() -> Options {
    Options {
        limits: Limits {
            event_size_bytes_max: 512,
            append_events_max: 4,
            append_size_bytes_max: 1024,
            stream_name_bytes_max: 32,
            event_type_bytes_max: 32,
            append_streams_max: 2,
        },
        segment_size_bytes: 4096,
        checkpoint_interval_bytes: 1024,
        durability: Durability::NoSync,
        recent_ids_max: 64,
        ..Options::default()
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The files of a store written by the real engine: several segments, frames of one and
/// of several events, metadata, a soft delete, a tombstone, binary events and `valid_at`.
fn seed_store() -> &'static Vec<(String, Vec<u8>)> {
    static SEED: OnceLock<Vec<(String, Vec<u8>)>> = OnceLock::new();
    SEED.get_or_init(|| {
        let storage = MemoryStorage::new();
        let engine = Engine::open_storage(Arc::new(storage.clone()), small_options()).unwrap();
        let store = engine;
        runtime().block_on(async {
            for i in 0..24u64 {
                let mut events = vec![EventData::json(
                    "Placed",
                    &serde_json::json!({ "n": i, "pad": "x".repeat(100) }),
                )
                .unwrap()
                .with_metadata(&b"{\"by\":\"fuzz\"}"[..])];
                if i % 3 == 0 {
                    events.push(
                        EventData::binary("Blob", vec![i as u8; 40])
                            .with_valid_at(Timestamp::from_micros(1_000 + i)),
                    );
                }
                store
                    .append(format!("order-{}", i % 4), ExpectedRevision::Any, events)
                    .await
                    .unwrap();
            }
            let metadata = StreamMetadata {
                max_count: Some(3),
                acl: Some(serde_json::json!({"$r": "$all"})),
                ..StreamMetadata::default()
            };
            store
                .set_stream_metadata("order-1", ExpectedRevision::Any, &metadata)
                .await
                .unwrap();
            store
                .delete_stream("order-2", ExpectedRevision::Any)
                .await
                .unwrap();
            store
                .tombstone_stream("order-3", ExpectedRevision::Any)
                .await
                .unwrap();
            store.checkpoint().await.unwrap();
        });
        store.close().unwrap();
        let mut files: Vec<(String, Vec<u8>)> = storage
            .list()
            .unwrap()
            .into_iter()
            .filter(|name| name != "LOCK")
            .map(|name| {
                let bytes = storage.contents(&name).unwrap();
                (name, bytes)
            })
            .collect();
        files.sort();
        assert!(files.iter().filter(|(n, _)| n.ends_with(".seg")).count() >= 2);
        assert!(files.iter().any(|(n, _)| n == checkpoint::FILE_NAME));
        files
    })
}

/// The frames of the seed store's segments, each on its own.
fn seed_frames() -> Vec<Vec<u8>> {
    let mut frames = Vec::new();
    for (name, bytes) in seed_store() {
        if !name.ends_with(".seg") {
            continue;
        }
        let mut at = segment::HEADER_LEN;
        while let Ok(header) = frame::check(&bytes[at.min(bytes.len())..]) {
            frames.push(bytes[at..at + header.length as usize].to_vec());
            at += header.length as usize;
        }
    }
    assert!(frames.len() > 4);
    frames
}

/// The records of the seed frames, each on its own.
fn seed_records() -> Vec<Vec<u8>> {
    let mut records = Vec::new();
    for frame_bytes in seed_frames() {
        let header = frame::check(&frame_bytes).unwrap();
        for at in frame::record_offsets(&frame_bytes, &header).unwrap() {
            let len = record::record_len(&frame_bytes, at).unwrap();
            records.push(frame_bytes[at..at + len].to_vec());
        }
    }
    records
}

// ---------------------------------------------------------------------------------------
// Resealing: recompute checksums so the decoding behind them is reached.

fn put_crc(bytes: &mut [u8], at: usize, crc: u32) {
    bytes[at..at + 4].copy_from_slice(&crc.to_le_bytes());
}

/// Recomputes the checksum of the record at `at` if its length field fits.
fn reseal_record(bytes: &mut [u8], at: usize, end: usize) -> Option<usize> {
    if at + record::HEADER_LEN > end {
        return None;
    }
    let len = u32_at(bytes, at) as usize;
    if len < record::HEADER_LEN || at + len > end {
        return None;
    }
    let crc = crc32c::crc32c(&bytes[at + 8..at + len]);
    put_crc(bytes, at + 4, crc);
    Some(len)
}

/// Recomputes the checksums of the frame at `at` and of its records, as far as their
/// length fields fit; returns the frame's length.
fn reseal_frame(bytes: &mut [u8], at: usize) -> Option<usize> {
    if at + frame::HEADER_LEN > bytes.len() {
        return None;
    }
    let len = u32_at(bytes, at + 4) as usize;
    if len < frame::HEADER_LEN || at + len > bytes.len() {
        return None;
    }
    let mut r = at + frame::HEADER_LEN;
    while let Some(record_len) = reseal_record(bytes, r, at + len) {
        r += record_len;
    }
    let crc = crc32c::crc32c(&bytes[at + 12..at + len]);
    put_crc(bytes, at + 8, crc);
    Some(len)
}

fn reseal_segment(bytes: &mut [u8]) {
    if bytes.len() >= segment::HEADER_LEN {
        let crc = crc32c::crc32c(&bytes[..60]);
        put_crc(bytes, 60, crc);
    }
    let mut at = segment::HEADER_LEN;
    while let Some(len) = reseal_frame(bytes, at) {
        at += len;
    }
}

fn reseal_checkpoint(bytes: &mut [u8]) {
    if bytes.len() >= 4 {
        let end = bytes.len() - 4;
        let crc = crc32c::crc32c(&bytes[..end]);
        put_crc(bytes, end, crc);
    }
}

// ---------------------------------------------------------------------------------------
// Frames and records.

#[test]
fn fuzz_frame() {
    let strategy = (mutated(seed_frames(), 8, 256), any::<bool>());
    run("frame", QUICK, strategy, |(mut bytes, reseal)| {
        if reseal {
            reseal_frame(&mut bytes, 0);
        }
        let _ = frame::parse_header(&bytes);
        let Ok(header) = frame::check(&bytes) else {
            return Ok(());
        };
        let end = header.end_position();
        ensure(end >= header.first_position, || "end before start".into())?;
        let Ok(offsets) = frame::record_offsets(&bytes, &header) else {
            return Ok(());
        };
        // Memory is bounded by the input, not by the count field.
        ensure(
            offsets.capacity() <= bytes.len() / record::HEADER_LEN + 1,
            || {
                format!(
                    "{} offsets reserved for a frame of {} bytes",
                    offsets.capacity(),
                    bytes.len()
                )
            },
        )?;
        let buffer = Bytes::from(bytes.clone());
        for at in offsets {
            for check_crc in [false, true] {
                if let Ok(view) = record::decode(&bytes, at, check_crc) {
                    let _ = view.to_event(&buffer);
                }
            }
        }
        Ok(())
    });
}

#[test]
fn fuzz_record() {
    let strategy = (mutated(seed_records(), 8, 256), 0usize..4, any::<bool>());
    run("record", QUICK, strategy, |(mut bytes, at, reseal)| {
        let at = at.min(bytes.len());
        if reseal {
            let end = bytes.len();
            reseal_record(&mut bytes, at, end);
        }
        let _ = record::record_len(&bytes, at);
        let buffer = Bytes::from(bytes.clone());
        for check_crc in [false, true] {
            if let Ok(view) = record::decode(&bytes, at, check_crc) {
                ensure(view.data.end <= bytes.len(), || "data past the end".into())?;
                ensure(view.metadata.end <= bytes.len(), || {
                    "metadata past the end".into()
                })?;
                let _ = view.to_event(&buffer);
            }
        }
        Ok(())
    });
}

/// The fields of one arbitrary event record.
#[derive(Clone, Debug)]
struct OwnedFields {
    position: u64,
    revision: u64,
    recorded_at: u64,
    id: u128,
    binary: bool,
    valid_at: Option<u64>,
    stream: String,
    event_type: String,
    data: Vec<u8>,
    metadata: Vec<u8>,
}

fn owned_fields() -> impl Strategy<Value = OwnedFields> {
    (
        (any::<u64>(), any::<u64>(), any::<u64>(), any::<u128>()),
        (any::<bool>(), any::<Option<u64>>()),
        (".{0,12}", ".{0,12}"),
        (
            proptest::collection::vec(any::<u8>(), 0..64),
            proptest::collection::vec(any::<u8>(), 0..16),
        ),
    )
        .prop_map(
            |(
                (position, revision, recorded_at, id),
                (binary, valid_at),
                (stream, event_type),
                (data, metadata),
            )| OwnedFields {
                position,
                revision,
                recorded_at,
                id,
                binary,
                valid_at,
                stream,
                event_type,
                data,
                metadata,
            },
        )
}

impl OwnedFields {
    fn encode(&self, out: &mut Vec<u8>) {
        record::RecordFields {
            position: self.position,
            revision: self.revision,
            recorded_at: Timestamp::from_micros(self.recorded_at),
            id: Uuid::from_u128(self.id),
            content_type: if self.binary {
                ContentType::Binary
            } else {
                ContentType::Json
            },
            valid_at: self.valid_at.map(Timestamp::from_micros),
            stream: &self.stream,
            event_type: &self.event_type,
            data: &self.data,
            metadata: &self.metadata,
        }
        .encode(out);
    }
}

#[test]
fn fuzz_frame_round_trip() {
    let strategy = (
        proptest::collection::vec(owned_fields(), 0..6),
        any::<u32>(),
        any::<u64>(),
    );
    run(
        "frame_round_trip",
        QUICK,
        strategy,
        |(events, batch_offset, first)| {
            let first = first % (1 << 62);
            let mut out = Vec::new();
            let start = frame::begin(&mut out, first, batch_offset);
            for event in &events {
                event.encode(&mut out);
            }
            frame::finish(&mut out, start, events.len() as u32);
            let header = frame::check(&out).map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
            prop_assert_eq!(header.first_position, first);
            prop_assert_eq!(header.event_count as usize, events.len());
            prop_assert_eq!(header.batch_offset, batch_offset);
            prop_assert_eq!(header.length as usize, out.len());
            let offsets = frame::record_offsets(&out, &header)
                .map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
            let buffer = Bytes::from(out.clone());
            for (event, at) in events.iter().zip(offsets) {
                let view = record::decode(&out, at, true).map_err(TestCaseError::fail)?;
                let decoded = view.to_event(&buffer);
                prop_assert_eq!(decoded.position.0, event.position);
                prop_assert_eq!(decoded.revision, event.revision);
                prop_assert_eq!(decoded.recorded_at.as_micros(), event.recorded_at);
                prop_assert_eq!(decoded.id.as_u128(), event.id);
                prop_assert_eq!(decoded.content_type == ContentType::Binary, event.binary);
                prop_assert_eq!(decoded.valid_at.map(Timestamp::as_micros), event.valid_at);
                prop_assert_eq!(&decoded.stream, &event.stream);
                prop_assert_eq!(&decoded.event_type, &event.event_type);
                prop_assert_eq!(&decoded.data[..], &event.data[..]);
                prop_assert_eq!(&decoded.metadata[..], &event.metadata[..]);
            }
            Ok(())
        },
    );
}

// ---------------------------------------------------------------------------------------
// Segment headers.

fn seed_segment_headers() -> Vec<Vec<u8>> {
    seed_store()
        .iter()
        .filter(|(name, _)| name.ends_with(".seg"))
        .map(|(_, bytes)| bytes[..segment::HEADER_LEN].to_vec())
        .collect()
}

#[test]
fn fuzz_segment_header() {
    let strategy = (mutated(seed_segment_headers(), 6, 128), any::<bool>());
    run("segment_header", QUICK, strategy, |(mut bytes, reseal)| {
        if reseal {
            reseal_segment(&mut bytes);
        }
        let _ = SegmentHeader::decode(&bytes);
        Ok(())
    });
    let strategy = (any::<u32>(), any::<u64>(), any::<u64>(), any::<u128>());
    run(
        "segment_header_round_trip",
        QUICK,
        strategy,
        |(number, first_position, created_at_micros, store_id)| {
            let header = SegmentHeader {
                number,
                first_position,
                created_at_micros,
                store_id: uuid::Uuid::from_u128(store_id),
            };
            prop_assert_eq!(SegmentHeader::decode(&header.encode()), Ok(header));
            Ok(())
        },
    );
}

// ---------------------------------------------------------------------------------------
// Segment tables.

fn seed_tables() -> Vec<Vec<u8>> {
    use crate::index::bloom::stream_hash;
    use crate::index::table::{encode, Entry};
    let mut entries: Vec<Entry> = (0..300u64)
        .map(|i| Entry {
            hash: stream_hash(&format!("s-{}", i % 40)),
            revision: i / 40,
            offset: 64 + i as u32 * 100,
        })
        .collect();
    entries.sort_unstable();
    vec![
        encode(1, Uuid::nil(), 4096, &entries),
        encode(1, Uuid::nil(), 4096, &entries[..3]),
        encode(1, Uuid::nil(), 4096, &[]),
    ]
}

/// Reseals a table's header and summary checksums (block checksums are left, so that
/// both a damaged block and the decoding behind it are reached).
fn reseal_table(bytes: &mut [u8]) {
    use crate::index::table::{ENTRY_LEN, HEADER_LEN};
    if bytes.len() < HEADER_LEN + 4 {
        return;
    }
    let crc = crc32c::crc32c(&bytes[..60]);
    bytes[60..64].copy_from_slice(&crc.to_le_bytes());
    let entries = crate::format::u64_at(bytes, 40);
    let Some(summary) = entries
        .checked_mul(ENTRY_LEN as u64)
        .and_then(|n| n.checked_add(HEADER_LEN as u64))
        .and_then(|n| usize::try_from(n).ok())
        .filter(|&n| n + 4 <= bytes.len())
    else {
        return;
    };
    let end = bytes.len() - 4;
    let crc = crc32c::crc32c(&bytes[summary..end]);
    bytes[end..].copy_from_slice(&crc.to_le_bytes());
}

#[test]
fn fuzz_table() {
    use crate::index::table::{file_name, Table};
    let strategy = (
        mutated(seed_tables(), 8, 256),
        any::<bool>(),
        any::<u64>(),
        0u64..16,
    );
    run(
        "table",
        QUICK,
        strategy,
        |(mut bytes, reseal, hash, low)| {
            if reseal {
                reseal_table(&mut bytes);
            }
            let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
            let file = storage.create(&file_name(1)).unwrap();
            file.write_at(&bytes, 0).unwrap();
            let handles = Arc::new(crate::handles::SegmentHandles::named(
                storage.clone(),
                2,
                file_name,
            ));
            let Ok(table) = Table::load(&*storage, &handles, 1, Uuid::nil(), 4096) else {
                return Ok(());
            };
            // Whatever a table file says, memory stays within a small multiple of it.
            ensure(table.memory_bytes() <= 4 * bytes.len() + 1024, || {
                format!(
                    "{} bytes in memory from {}",
                    table.memory_bytes(),
                    bytes.len()
                )
            })?;
            let _ = table.find(hash, low, low + 4);
            let seeded = crate::index::bloom::stream_hash("s-3");
            let _ = table.find(seeded, 0, u64::MAX);
            Ok(())
        },
    );
}

// ---------------------------------------------------------------------------------------
// The index checkpoint.

fn seed_checkpoints() -> Vec<Vec<u8>> {
    seed_store()
        .iter()
        .filter(|(name, _)| name == checkpoint::FILE_NAME)
        .map(|(_, bytes)| bytes.clone())
        .collect()
}

/// Roughly the heap bytes a decoded checkpoint holds.
fn checkpoint_heap_bytes(decoded: &checkpoint::Checkpoint) -> usize {
    let segments = decoded.segments.capacity() * std::mem::size_of::<checkpoint::SegmentSummary>()
        + decoded
            .segments
            .iter()
            .map(|s| s.sparse.capacity() * 16)
            .sum::<usize>();
    let streams = decoded.index.heads.memory_bytes()
        + decoded
            .index
            .heads
            .iter()
            .map(|(_, _, entry)| {
                entry
                    .metadata
                    .as_ref()
                    .map_or(0, |m| m.to_json().to_string().len() * 8)
            })
            .sum::<usize>();
    let memtables = decoded
        .index
        .memtables
        .values()
        .map(|m| m.events() as usize * 4 + m.streams() * 64)
        .sum::<usize>();
    segments + streams + memtables + decoded.index.recent.len() * 64
}

#[test]
fn fuzz_checkpoint() {
    let strategy = (
        mutated(seed_checkpoints(), 8, 512),
        any::<bool>(),
        prop_oneof![Just(0usize), Just(4), Just(1 << 20)],
    );
    run(
        "checkpoint",
        QUICK,
        strategy,
        |(mut bytes, reseal, recent_ids_max)| {
            if reseal {
                reseal_checkpoint(&mut bytes);
            }
            let Ok(decoded) = checkpoint::decode(&bytes, recent_ids_max) else {
                return Ok(());
            };
            let heap = checkpoint_heap_bytes(&decoded);
            ensure(heap <= 64 * bytes.len() + (64 << 10), || {
                format!("{heap} bytes decoded from {} bytes", bytes.len())
            })?;
            Ok(())
        },
    );
}

#[test]
fn checkpoint_round_trips() {
    for seed in seed_checkpoints() {
        let decoded = checkpoint::decode(&seed, 64).unwrap();
        // The checkpoint encodes no file: segments whose files are never opened do.
        let handles = Arc::new(crate::handles::SegmentHandles::new(
            Arc::new(MemoryStorage::new()),
            1,
        ));
        let segments = crate::state::Segments {
            store_id: decoded.store_id,
            list: decoded
                .segments
                .iter()
                .map(|s| crate::state::SegmentInfo {
                    number: s.number,
                    name: segment::file_name(s.number),
                    first_position: s.first_position,
                    file: crate::handles::SegmentFile::new(s.number, handles.clone()),
                    sparse: s.sparse.clone(),
                    end_offset: s.end_offset,
                    end_position: s.end_position,
                    last_frame_offset: s.last_frame_offset,
                })
                .collect(),
        };
        let again = checkpoint::decode(&checkpoint::encode(&segments, &decoded.index), 64).unwrap();
        assert_eq!(again.store_id, decoded.store_id);
        assert_eq!(again.segments, decoded.segments);
        assert_eq!(again.index.events, decoded.index.events);
        assert_eq!(again.index.heads.len(), decoded.index.heads.len());
        for (id, name, entry) in decoded.index.heads.iter() {
            assert_eq!(again.index.heads.id(name), Some(id), "{name}: same id");
            let other = again.index.heads.entry(id);
            assert_eq!(other.next_revision, entry.next_revision, "{name}");
            assert_eq!(other.tombstoned, entry.tombstoned, "{name}");
            assert_eq!(other.metadata, entry.metadata, "{name}");
        }
        assert_eq!(
            *again.index.heads.name_order(),
            *decoded.index.heads.name_order()
        );
        assert_eq!(
            again.index.recent.iter().collect::<Vec<_>>(),
            decoded.index.recent.iter().collect::<Vec<_>>()
        );
        let runs = |index: &crate::index::Index| {
            let mut runs: Vec<(u32, String, u64, Vec<u32>)> = index
                .memtables
                .iter()
                .flat_map(|(&segment, m)| {
                    m.runs()
                        .map(move |(id, run)| {
                            let name = index.heads.name(id).to_owned();
                            (segment, name, run.first_revision(), run.offsets().collect())
                        })
                        .collect::<Vec<_>>()
                })
                .collect();
            runs.sort();
            runs
        };
        assert_eq!(runs(&again.index), runs(&decoded.index));
    }
}

// ---------------------------------------------------------------------------------------
// Whole store directories: recovery, then reads, over one damaged file.

/// A seed store with one of its files mutated.
#[derive(Clone, Debug)]
struct DamagedStore {
    file: usize,
    mutations: Vec<Mutation>,
    reseal: bool,
    drop_checkpoint: bool,
}

fn damaged_store() -> impl Strategy<Value = DamagedStore> {
    let files = seed_store().len();
    let mutation = crate::fuzz::mutation();
    (
        0..files,
        proptest::collection::vec(mutation, 0..6),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(file, mutations, reseal, drop_checkpoint)| DamagedStore {
            file,
            mutations,
            reseal,
            drop_checkpoint,
        })
}

impl DamagedStore {
    fn build(&self) -> MemoryStorage {
        let storage = MemoryStorage::new();
        let seeds: Vec<Vec<u8>> = seed_store().iter().map(|(_, b)| b.clone()).collect();
        for (i, (name, bytes)) in seed_store().iter().enumerate() {
            if self.drop_checkpoint && name == checkpoint::FILE_NAME {
                continue;
            }
            let mut bytes = bytes.clone();
            if i == self.file {
                for mutation in &self.mutations {
                    mutation.apply(&mut bytes, &seeds);
                }
                if self.reseal {
                    if name == checkpoint::FILE_NAME {
                        reseal_checkpoint(&mut bytes);
                    } else {
                        reseal_segment(&mut bytes);
                    }
                }
            }
            let file = storage.create(name).unwrap();
            file.write_at(&bytes, 0).unwrap();
            file.sync_data().unwrap();
        }
        storage.sync_dir().unwrap();
        storage
    }
}

#[test]
fn fuzz_store_files() {
    let rt = runtime();
    // How many damaged stores opened and were read: the reads are the deeper half of
    // the target, so a run that never gets there is not fuzzing them.
    let opened = std::sync::atomic::AtomicU64::new(0);
    run(
        "store_files",
        QUICK_STORE,
        damaged_store(),
        |damaged: DamagedStore| {
            let storage = damaged.build();
            let _ = crate::verify(&storage, |_, _| {});
            let Ok(engine) = Engine::open_storage(Arc::new(storage), small_options()) else {
                return Ok(());
            };
            opened.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let store = engine;
            rt.block_on(async {
                let _ = store
                    .read_all(ReadAllOptions::forwards().limit(10_000))
                    .await;
                let _ = store
                    .read_all(ReadAllOptions::backwards().limit(10_000))
                    .await;
                let filter = Filter::new().stream_prefix("order-");
                let _ = store
                    .read_all(ReadAllOptions::forwards().filter(filter))
                    .await;
                for i in 0..4 {
                    let stream = format!("order-{i}");
                    let _ = store
                        .read_stream(&stream, ReadStreamOptions::forwards())
                        .await;
                    let _ = store
                        .read_stream(&stream, ReadStreamOptions::backwards().limit(2))
                        .await;
                    let _ = store
                        .read_stream(
                            &crate::stream::metastream(&stream),
                            ReadStreamOptions::backwards().limit(1),
                        )
                        .await;
                }
                let _ = store.stats().await;
            });
            let _ = store.close();
            Ok(())
        },
    );
    let opened = opened.into_inner();
    eprintln!("fuzz target store_files: {opened} damaged stores opened and read");
    assert!(
        opened > 0,
        "no damaged store opened: the reads were never fuzzed"
    );
}

// ---------------------------------------------------------------------------------------
// Stream metadata JSON (from clients over HTTP and gRPC, and from the log).

fn seed_metadata() -> Vec<String> {
    [
        r#"{}"#,
        r#"{"$maxCount": 10, "$maxAge": 3600, "$tb": 4, "$cacheControl": 60}"#,
        r#"{"$acl": {"$r": "$all", "$w": ["a", "b"], "$d": [], "$mr": "m", "$mw": ["n"]}}"#,
        r#"{"$tb": 9223372036854775807, "owner": {"team": ["ops", 1, null, true]}}"#,
        r#"{"$maxCount": 18446744073709551615, "custom": "x"}"#,
    ]
    .into_iter()
    .map(str::to_owned)
    .collect()
}

/// JSON values shaped like metadata: KurrentDB's keys with values of every type.
fn metadata_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<u64>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(serde_json::Value::from),
        ".{0,8}".prop_map(serde_json::Value::from),
    ];
    let value = leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::Array),
            proptest::collection::btree_map(key(), inner, 0..6)
                .prop_map(|map| serde_json::Value::Object(map.into_iter().collect())),
        ]
    });
    proptest::collection::btree_map(key(), value, 0..6)
        .prop_map(|map| serde_json::Value::Object(map.into_iter().collect()))
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("$maxCount".to_owned()),
        Just("$maxAge".to_owned()),
        Just("$tb".to_owned()),
        Just("$cacheControl".to_owned()),
        Just("$acl".to_owned()),
        Just("$r".to_owned()),
        Just("$w".to_owned()),
        Just("$d".to_owned()),
        Just("$mr".to_owned()),
        Just("$mw".to_owned()),
        ".{0,6}",
    ]
}

fn check_metadata(metadata: &StreamMetadata) -> Result<(), TestCaseError> {
    let json = metadata.to_json();
    prop_assert_eq!(&StreamMetadata::from_json(&json), &Ok(metadata.clone()));
    // Through text as it is stored (serde_json does not promise that floats in custom
    // values survive the round trip to the last digit, so compare with its own parse).
    let text = json.to_string();
    let reparsed: serde_json::Value = serde_json::from_str(&text).unwrap();
    prop_assert_eq!(
        StreamMetadata::from_slice(text.as_bytes()),
        StreamMetadata::from_json(&reparsed)
    );
    Ok(())
}

#[test]
fn fuzz_metadata() {
    run(
        "metadata_bytes",
        QUICK,
        mutated_text(seed_metadata(), 8, 128),
        |text| {
            if let Ok(metadata) = StreamMetadata::from_slice(text.as_bytes()) {
                check_metadata(&metadata)?;
            }
            Ok(())
        },
    );
    run("metadata_json", QUICK, metadata_value(), |value| {
        if let Ok(metadata) = StreamMetadata::from_json(&value) {
            check_metadata(&metadata)?;
        }
        Ok(())
    });
}

// ---------------------------------------------------------------------------------------
// Filters (regular expressions and prefixes from clients).

fn seed_patterns() -> Vec<String> {
    [
        r"^(?!\$)",
        r"^(?!(\$.*$|snapshot-.*$))",
        r"(?<=Order)Paid",
        r"^order-\d+$",
        r"[a-z]+-(?:[0-9]{1,4})",
        r"(a|b)*c\b",
        r"\p{L}+",
        r"(?i)ORDER",
        r"^(?:(a+)+)$",
        r"(?=a)(?!b)\1",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect()
}

#[test]
fn fuzz_filter() {
    let names = [
        "order-1",
        "$$order-1",
        "snapshot-7",
        "OrderPaid",
        "",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaab",
        "é-ü",
    ];
    let strategy = (
        mutated_text(seed_patterns(), 6, 64),
        mutated_text(names.iter().map(|n| (*n).to_owned()).collect(), 4, 64),
        any::<Index>(),
    );
    run("filter", QUICK, strategy, |(pattern, name, which)| {
        let prefix: String = pattern.chars().take(4).collect();
        let filter = Filter::new()
            .stream_prefix(prefix.clone())
            .category(prefix.clone())
            .event_type_prefix(prefix);
        let _ = filter.matches(&name, &name);
        let built = if which.index(2) == 0 {
            Filter::new().stream_regex(&pattern)
        } else {
            Filter::new().event_type_regex(&pattern)
        };
        if let Ok(filter) = built {
            let _ = filter.matches(&name, &name);
            for other in names {
                let _ = filter.matches(other, other);
            }
            let _ = filter.clone().exclude_system_events().matches(&name, "$x");
        }
        Ok(())
    });
}
