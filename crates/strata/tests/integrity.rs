//! Files that may not belong to the store are never trusted to decide what to cut: a
//! checkpoint of another store or of a diverged copy is discarded (the index is rebuilt
//! and nothing is cut), a segment of another store stops the open, an invalid tail
//! longer than one unacknowledged batch is damage (kept, not cut), and a torn tail that
//! is cut is first copied to a side file.
#![allow(clippy::unwrap_used)]

mod common;

use std::fs;
use std::path::Path;

use common::{check_invariants, copy_dir, events, everything};
use strata::engine::index::checkpoint;
use strata::engine::IndexSource;
use strata::{EventData, ExpectedRevision, OpenError, Options, StorageError, Store};

const SEGMENT: &str = "0000000001.seg";

fn options() -> Options {
    Options {
        batch_bytes_max: 4096,
        ..Options::small_for_tests()
    }
}

fn big_events(n: usize, pad: usize) -> Vec<EventData> {
    (0..n)
        .map(|i| {
            EventData::json(
                "Big",
                &serde_json::json!({ "i": i, "pad": "y".repeat(pad) }),
            )
            .unwrap()
        })
        .collect()
}

async fn append_closed(dir: &Path, batches: Vec<Vec<EventData>>) {
    let store = Store::open_with(dir, options()).unwrap();
    for (i, batch) in batches.into_iter().enumerate() {
        store
            .append(format!("s-{i}"), ExpectedRevision::Any, batch)
            .await
            .unwrap();
    }
    store.close().await.unwrap();
}

/// Opens `dir`, checks nothing was cut, and returns every event and the index source.
async fn open_intact(dir: &Path) -> (Vec<strata::RecordedEvent>, IndexSource) {
    let store = Store::open_with(dir, options()).unwrap();
    let report = store.embedded().unwrap().open_report().clone();
    assert_eq!(report.truncated_tail, None, "nothing may be cut");
    let all = everything(&store).await;
    check_invariants(&all);
    store.close().await.unwrap();
    (all, report.index_source)
}

#[tokio::test]
async fn a_checkpoint_of_another_store_is_discarded_and_nothing_is_cut() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    append_closed(a.path(), vec![events(2), events(2)]).await;
    append_closed(
        b.path(),
        vec![big_events(3, 300), big_events(3, 300), events(1)],
    )
    .await;
    let (before, _) = open_intact(b.path()).await;
    fs::copy(
        a.path().join(checkpoint::FILE_NAME),
        b.path().join(checkpoint::FILE_NAME),
    )
    .unwrap();
    let (after, source) = open_intact(b.path()).await;
    match source {
        IndexSource::Rebuilt { reason } => assert!(reason.contains("another store"), "{reason}"),
        other => panic!("the foreign checkpoint was used: {other:?}"),
    }
    assert_eq!(after, before);
}

#[tokio::test]
async fn a_checkpoint_of_a_diverged_copy_is_discarded_and_nothing_is_cut() {
    let a = tempfile::tempdir().unwrap();
    append_closed(a.path(), vec![events(3)]).await;
    // A copy (a backup, say) shares the store id; both then go their own ways.
    let c = tempfile::tempdir().unwrap();
    copy_dir(a.path(), c.path());
    append_closed(a.path(), vec![events(1)]).await;
    append_closed(c.path(), vec![big_events(2, 900), events(2)]).await;
    let (before, _) = open_intact(c.path()).await;
    fs::copy(
        a.path().join(checkpoint::FILE_NAME),
        c.path().join(checkpoint::FILE_NAME),
    )
    .unwrap();
    let (after, source) = open_intact(c.path()).await;
    match source {
        IndexSource::Rebuilt { reason } => {
            assert!(reason.contains("not a frame boundary"), "{reason}")
        }
        other => panic!("the diverged checkpoint was used: {other:?}"),
    }
    assert_eq!(after, before);
}

#[tokio::test]
async fn a_checkpoint_of_an_older_format_version_is_rebuilt_from_the_log() {
    let dir = tempfile::tempdir().unwrap();
    append_closed(dir.path(), vec![events(3), events(2)]).await;
    let (before, _) = open_intact(dir.path()).await;
    let path = dir.path().join(checkpoint::FILE_NAME);
    let mut bytes = fs::read(&path).unwrap();
    bytes[8..12].copy_from_slice(&1u32.to_le_bytes());
    let body = bytes.len() - 4;
    let crc = crc32c::crc32c(&bytes[..body]);
    bytes[body..].copy_from_slice(&crc.to_le_bytes());
    fs::write(&path, bytes).unwrap();
    let (after, source) = open_intact(dir.path()).await;
    assert!(matches!(source, IndexSource::Rebuilt { .. }), "{source:?}");
    assert_eq!(after, before);
}

#[tokio::test]
async fn a_segment_of_another_store_stops_the_open() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    // Enough to fill a few 64 KiB segments in each.
    let many: Vec<Vec<EventData>> = (0..60).map(|_| big_events(4, 900)).collect();
    append_closed(a.path(), many.clone()).await;
    append_closed(b.path(), many).await;
    fs::copy(
        a.path().join("0000000002.seg"),
        b.path().join("0000000002.seg"),
    )
    .unwrap();
    fs::remove_file(b.path().join(checkpoint::FILE_NAME)).unwrap();
    match Store::open_with(b.path(), options()) {
        Err(OpenError::Storage(StorageError::Corrupt { file, reason, .. })) => {
            assert!(file.ends_with("0000000002.seg"), "{file}");
            assert!(reason.contains("another store"), "{reason}");
        }
        other => panic!("a segment of another store was accepted: {other:?}"),
    }
}

#[tokio::test]
async fn a_cut_torn_tail_is_kept_in_a_side_file() {
    let dir = tempfile::tempdir().unwrap();
    append_closed(dir.path(), vec![events(3), events(3)]).await;
    let segment = dir.path().join(SEGMENT);
    let intact = fs::read(&segment).unwrap();
    // A batch torn half way: a frame header's worth of bytes that do not check.
    let torn = vec![0x5Au8; 100];
    let mut bytes = intact.clone();
    bytes.extend_from_slice(&torn);
    fs::write(&segment, &bytes).unwrap();
    fs::remove_file(dir.path().join(checkpoint::FILE_NAME)).unwrap();
    let store = Store::open_with(dir.path(), options()).unwrap();
    let tail = store
        .embedded()
        .unwrap()
        .open_report()
        .truncated_tail
        .clone()
        .unwrap();
    store.close().await.unwrap();
    assert_eq!(tail.offset, intact.len() as u64);
    let kept = tail.kept_in.expect("the cut bytes are kept");
    assert_eq!(fs::read(dir.path().join(&kept)).unwrap(), torn);
    assert_eq!(fs::read(&segment).unwrap(), intact);
}

#[tokio::test]
async fn an_invalid_tail_longer_than_any_batch_is_damage_and_is_not_cut() {
    let dir = tempfile::tempdir().unwrap();
    append_closed(dir.path(), vec![events(3), events(3)]).await;
    let segment = dir.path().join(SEGMENT);
    let options = options();
    let most = options.batch_bytes_max + options.limits.append_size_bytes_max + (16 << 20);
    let mut bytes = fs::read(&segment).unwrap();
    bytes.resize(bytes.len() + most + 1, 0xA5);
    fs::write(&segment, &bytes).unwrap();
    fs::remove_file(dir.path().join(checkpoint::FILE_NAME)).unwrap();
    match Store::open_with(dir.path(), options) {
        Err(OpenError::Storage(StorageError::Corrupt { reason, .. })) => {
            assert!(reason.contains("not a torn write"), "{reason}")
        }
        other => panic!("a long invalid tail was not reported as damage: {other:?}"),
    }
    assert_eq!(
        fs::read(&segment).unwrap().len(),
        bytes.len(),
        "nothing was cut"
    );
}

#[tokio::test]
async fn a_flipped_byte_in_the_newest_sealed_segment_stops_the_open() {
    let dir = tempfile::tempdir().unwrap();
    let many: Vec<Vec<EventData>> = (0..60).map(|_| big_events(4, 900)).collect();
    append_closed(dir.path(), many).await;
    let mut segments: Vec<String> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.ends_with(".seg"))
        .collect();
    segments.sort();
    assert!(segments.len() >= 3, "{segments:?}");
    // The checkpoint written at close covers every sealed segment: the open scan
    // would not read them.
    let sealed = dir.path().join(&segments[segments.len() - 2]);
    let mut bytes = fs::read(&sealed).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    fs::write(&sealed, bytes).unwrap();
    match Store::open_with(dir.path(), options()) {
        Err(OpenError::Storage(StorageError::Corrupt { file, .. })) => {
            assert!(file.ends_with(&segments[segments.len() - 2]), "{file}")
        }
        other => panic!("the damaged sealed segment went unnoticed: {other:?}"),
    }
}

/// A batch that fails after it rolled to a new segment had already synced its first
/// frames into the previous segment: none of them may be served after a reopen, since
/// their callers were told the append failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_batch_that_crossed_a_segment_leaves_nothing_behind() {
    use std::sync::Arc;
    use strata::engine::io::{Fault, FaultyStorage, MemoryStorage};
    for fail_at_sync in 0..12u64 {
        let memory = MemoryStorage::new();
        let faulty = FaultyStorage::new(Arc::new(memory.clone()));
        let store = common::open(Arc::new(faulty.clone()));
        // Nearly fill the first 64 KiB segment.
        for _ in 0..55 {
            store
                .append("fill", ExpectedRevision::Any, big_events(1, 1000))
                .await
                .unwrap();
        }
        faulty.inject(Fault::SyncError {
            after_syncs: fail_at_sync,
        });
        // Many appends at once, so that batches hold several and one rolls mid-batch.
        let tasks: Vec<_> = (0..40)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    let batch = big_events(1, 1000);
                    let id = batch[0].id;
                    let ok = store
                        .append(format!("w-{i}"), ExpectedRevision::Any, batch)
                        .await
                        .is_ok();
                    (id, ok)
                })
            })
            .collect();
        let mut acknowledged = std::collections::HashSet::new();
        for task in tasks {
            let (id, ok) = task.await.unwrap();
            if ok {
                acknowledged.insert(id);
            }
        }
        drop(store);
        faulty.clear();
        let reopened = common::open(Arc::new(memory.clone()));
        let all = everything(&reopened).await;
        check_invariants(&all);
        let served: std::collections::HashSet<_> = all
            .iter()
            .filter(|e| e.stream.starts_with("w-"))
            .map(|e| e.id)
            .collect();
        assert_eq!(
            served, acknowledged,
            "fail at sync {fail_at_sync}: exactly the acknowledged events are served"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn appends_beyond_the_write_queues_byte_budget_wait_for_room_and_all_complete() {
    let base = options();
    let budget = base.limits.append_size_bytes_max * 2;
    let options = Options {
        write_queue_bytes_max: budget,
        ..base
    };
    // The budget must hold the largest append: a smaller one is refused at open.
    let too_small = Options {
        write_queue_bytes_max: 1024,
        ..options.clone()
    };
    let dir = tempfile::tempdir().unwrap();
    match Store::open_with(dir.path(), too_small) {
        Err(OpenError::InvalidOptions { reason }) => {
            assert!(reason.contains("write_queue_bytes_max"), "{reason}")
        }
        other => panic!("a budget below the largest append was accepted: {other:?}"),
    }
    let store = Store::open_with(dir.path(), options).unwrap();
    // Far more bytes at once than the budget: callers wait for room, none is lost.
    let tasks: Vec<_> = (0..32)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .append(
                        format!("q-{i}"),
                        ExpectedRevision::NoStream,
                        big_events(6, 2000),
                    )
                    .await
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let all = everything(&store).await;
    check_invariants(&all);
    assert_eq!(all.len(), 32 * 6);
}

/// Where the single location of the stream with id `id` (its place among the
/// checkpoint's streams) lies in an encoded checkpoint: the u32 offset of its memtable
/// run (u32 stream id, u64 first revision 0, u32 count 1). Memtables follow the heads,
/// and only the recent ids (random) follow them: the last match is the run.
fn only_location_offset(bytes: &[u8], id: u32) -> usize {
    let mut key = id.to_le_bytes().to_vec();
    key.extend_from_slice(&0u64.to_le_bytes());
    key.extend_from_slice(&1u32.to_le_bytes());
    let at = bytes
        .windows(key.len())
        .rposition(|window| window == key.as_slice())
        .unwrap_or_else(|| panic!("stream #{id} is in the checkpoint"));
    at + key.len()
}

/// Issue 12: a read did not check that the record at an indexed location is the
/// stream and revision asked for, so a wrong index (here, a checkpoint whose locations
/// of two streams were swapped, with a valid checksum) silently served another stream's
/// events. The read now fails as corruption, naming the record it found.
#[tokio::test]
async fn a_read_that_finds_another_streams_record_fails_as_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let alpha = events(1);
    {
        let store = Store::open_with(dir.path(), options()).unwrap();
        for (name, batch) in [("alpha", alpha.clone()), ("bravo", events(1))] {
            store
                .append(name, ExpectedRevision::NoStream, batch)
                .await
                .unwrap();
        }
        store.close().await.unwrap();
    }
    let path = dir.path().join(checkpoint::FILE_NAME);
    let mut bytes = fs::read(&path).unwrap();
    // Ids in the order the store first saw the streams.
    let (a, b) = (
        only_location_offset(&bytes, 0),
        only_location_offset(&bytes, 1),
    );
    let (location_a, location_b) = (bytes[a..a + 4].to_vec(), bytes[b..b + 4].to_vec());
    assert_ne!(location_a, location_b);
    bytes[a..a + 4].copy_from_slice(&location_b);
    bytes[b..b + 4].copy_from_slice(&location_a);
    let end = bytes.len() - 4;
    let crc = crc32c::crc32c(&bytes[..end]);
    bytes[end..].copy_from_slice(&crc.to_le_bytes());
    fs::write(&path, &bytes).unwrap();

    let store = Store::open_with(dir.path(), options()).unwrap();
    let report = store.embedded().unwrap().open_report().clone();
    assert!(
        matches!(report.index_source, IndexSource::Checkpoint),
        "the swapped checkpoint is still valid as a file: {:?}",
        report.index_source
    );
    for (asked, found) in [("alpha", "bravo"), ("bravo", "alpha")] {
        let error = store
            .read_stream(asked, strata::ReadStreamOptions::forwards())
            .await
            .unwrap_err();
        match error {
            strata::ReadError::Storage(StorageError::Corrupt { reason, .. }) => {
                assert!(
                    reason.contains(&format!("stream {asked:?}"))
                        && reason.contains(&format!("stream {found:?}")),
                    "{reason}"
                );
            }
            other => panic!("reading {asked} gave {other:?}"),
        }
    }
    // A retried append compares its ids with the stream's recorded events, read
    // through the same check: it fails as corruption too, rather than deciding on
    // another stream's record.
    let retry = store
        .append("alpha", ExpectedRevision::NoStream, alpha)
        .await
        .unwrap_err();
    assert!(
        matches!(
            retry,
            strata::AppendError::Storage(StorageError::Corrupt { .. })
        ),
        "{retry:?}"
    );
    store.close().await.unwrap();
}
