//! Damaged files: every torn tail is cut off and reported, never served; damage anywhere
//! else is a loud error naming the file and offset; a damaged index checkpoint is
//! rebuilt from the log.
#![allow(clippy::unwrap_used)]

mod common;

use std::fs;
use std::path::Path;

use common::{check_invariants, copy_dir, events, everything};
use strata::engine::index::checkpoint;
use strata::engine::io::DirStorage;
use strata::engine::IndexSource;
use strata::{ExpectedRevision, OpenError, Options, StorageError, Store};

const SEGMENT: &str = "0000000001.seg";

fn options() -> Options {
    Options::small_for_tests()
}

/// A closed store with `batches` appends of 3 events; returns the file offsets where
/// each append's frame starts (one append per batch, written sequentially).
async fn build(dir: &Path, batches: usize) -> Vec<u64> {
    let store = Store::open_with(dir, options()).unwrap();
    let mut starts = Vec::new();
    for i in 0..batches {
        starts.push(fs::metadata(dir.join(SEGMENT)).unwrap().len());
        store
            .append(format!("s-{}", i % 3), ExpectedRevision::Any, events(3))
            .await
            .unwrap();
    }
    store.close().await.unwrap();
    starts
}

fn open(dir: &Path) -> Result<Store, OpenError> {
    Store::open_with(dir, options())
}

#[tokio::test]
async fn truncating_the_last_frame_at_every_offset_cuts_it_off() {
    let original = tempfile::tempdir().unwrap();
    let starts = build(original.path(), 4).await;
    let full = fs::read(original.path().join(SEGMENT)).unwrap();
    let last = *starts.last().unwrap() as usize;
    let expected = {
        let store = open(original.path()).unwrap();
        let all = everything(&store).await;
        store.close().await.unwrap();
        all
    };
    for cut in last..full.len() {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(original.path(), dir.path());
        // A torn tail has no checkpoint pointing past it: drop the one written at close.
        fs::remove_file(dir.path().join(checkpoint::FILE_NAME)).unwrap();
        fs::write(dir.path().join(SEGMENT), &full[..cut]).unwrap();
        let store = open(dir.path()).unwrap();
        let report = store.embedded().unwrap().open_report().clone();
        if cut == last {
            assert_eq!(report.truncated_tail, None);
        } else {
            let tail = report.truncated_tail.expect("a torn tail is reported");
            assert_eq!(tail.offset, last as u64);
            assert_eq!(tail.bytes, (cut - last) as u64);
        }
        let all = everything(&store).await;
        check_invariants(&all);
        assert_eq!(all, expected[..expected.len() - 3].to_vec(), "cut at {cut}");
        // The store keeps working where the torn frame was.
        store
            .append("s-0", ExpectedRevision::Any, events(1))
            .await
            .unwrap();
        store.close().await.unwrap();
        let store = open(dir.path()).unwrap();
        assert_eq!(everything(&store).await.len(), expected.len() - 2);
    }
}

#[tokio::test]
async fn a_flipped_bit_in_the_last_batch_is_a_torn_tail() {
    let original = tempfile::tempdir().unwrap();
    let starts = build(original.path(), 5).await;
    let full = fs::read(original.path().join(SEGMENT)).unwrap();
    let last = *starts.last().unwrap() as usize;
    for at in (last..full.len()).step_by(7) {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(original.path(), dir.path());
        fs::remove_file(dir.path().join(checkpoint::FILE_NAME)).unwrap();
        let mut damaged = full.clone();
        damaged[at] ^= 0x04;
        fs::write(dir.path().join(SEGMENT), &damaged).unwrap();
        let store = open(dir.path()).unwrap();
        let tail = store
            .embedded()
            .unwrap()
            .open_report()
            .truncated_tail
            .clone();
        assert_eq!(tail.map(|t| t.offset), Some(last as u64), "flip at {at}");
        assert_eq!(everything(&store).await.len(), 12);
    }
}

#[tokio::test]
async fn a_flipped_bit_in_the_middle_is_a_loud_error() {
    let original = tempfile::tempdir().unwrap();
    let starts = build(original.path(), 5).await;
    let full = fs::read(original.path().join(SEGMENT)).unwrap();
    for at in (starts[1] as usize..starts[2] as usize).step_by(11) {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(original.path(), dir.path());
        fs::remove_file(dir.path().join(checkpoint::FILE_NAME)).unwrap();
        let mut damaged = full.clone();
        damaged[at] ^= 0x80;
        fs::write(dir.path().join(SEGMENT), &damaged).unwrap();
        match open(dir.path()) {
            Err(OpenError::Storage(StorageError::Corrupt { file, offset, .. })) => {
                assert_eq!(file, SEGMENT);
                assert_eq!(offset, starts[1], "the error names the damaged frame");
            }
            other => panic!("flip at {at}: expected a corruption error, got {other:?}"),
        }
        let report =
            strata::engine::verify(&DirStorage::new(dir.path()).unwrap(), |_, _| {}).unwrap();
        assert!(!report.is_ok(), "verify finds the damage");
    }
}

#[tokio::test]
async fn damage_in_a_sealed_segment_is_a_loud_error() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).unwrap();
    for i in 0..200 {
        store
            .append(format!("s-{}", i % 5), ExpectedRevision::Any, events(5))
            .await
            .unwrap();
    }
    let segments = store.stats().await.unwrap().segments;
    assert!(
        segments >= 3,
        "the test needs several segments, got {segments}"
    );
    store.close().await.unwrap();
    let path = dir.path().join(SEGMENT);
    let mut bytes = fs::read(&path).unwrap();
    let last = bytes.len() - 10;
    bytes[last] ^= 1;
    fs::write(&path, &bytes).unwrap();
    fs::remove_file(dir.path().join(checkpoint::FILE_NAME)).unwrap();
    match open(dir.path()) {
        Err(OpenError::Storage(StorageError::Corrupt { file, .. })) => assert_eq!(file, SEGMENT),
        other => panic!("expected a corruption error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_missing_segment_is_a_loud_error() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).unwrap();
    for _ in 0..200 {
        store
            .append("s", ExpectedRevision::Any, events(5))
            .await
            .unwrap();
    }
    store.close().await.unwrap();
    fs::remove_file(dir.path().join("0000000002.seg")).unwrap();
    match open(dir.path()) {
        Err(OpenError::Storage(StorageError::Corrupt { file, reason, .. })) => {
            assert_eq!(file, "0000000002.seg");
            assert!(reason.contains("missing"), "{reason}");
        }
        other => panic!("expected a corruption error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_half_created_last_segment_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), 2).await;
    fs::write(dir.path().join("0000000002.seg"), b"STRATSEG\x01\0").unwrap();
    let store = open(dir.path()).unwrap();
    let report = store.embedded().unwrap().open_report().clone();
    assert_eq!(report.removed_segment.as_deref(), Some("0000000002.seg"));
    assert_eq!(everything(&store).await.len(), 6);
    store
        .append("s", ExpectedRevision::Any, events(1))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_damaged_or_stale_checkpoint_is_rebuilt_from_the_log() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), 6).await;
    let expected = {
        let store = open(dir.path()).unwrap();
        assert_eq!(
            store.embedded().unwrap().open_report().index_source,
            IndexSource::Checkpoint
        );
        let all = everything(&store).await;
        store.close().await.unwrap();
        all
    };
    let path = dir.path().join(checkpoint::FILE_NAME);
    let mut bytes = fs::read(&path).unwrap();
    bytes[20] ^= 0xFF;
    fs::write(&path, &bytes).unwrap();
    let store = open(dir.path()).unwrap();
    assert!(matches!(
        store.embedded().unwrap().open_report().index_source,
        IndexSource::Rebuilt { .. }
    ));
    assert_eq!(everything(&store).await, expected);
    let stream = store
        .read_stream("s-1", strata::ReadStreamOptions::forwards())
        .await
        .unwrap();
    assert_eq!(stream.len(), 6, "the stream index was rebuilt too");
    // A checkpoint from an older state of the log (stale) is also detected.
    store.close().await.unwrap();
    let old = fs::read(&path).unwrap();
    let store = open(dir.path()).unwrap();
    store
        .append("s-1", ExpectedRevision::Any, events(1))
        .await
        .unwrap();
    store.close().await.unwrap();
    fs::write(&path, &old).unwrap();
    let store = open(dir.path()).unwrap();
    let events_now = everything(&store).await;
    assert_eq!(
        events_now.len(),
        expected.len() + 1,
        "the log after a stale checkpoint is scanned"
    );
    let stream = store
        .read_stream("s-1", strata::ReadStreamOptions::forwards())
        .await
        .unwrap();
    assert_eq!(stream.len(), 7);
}

#[tokio::test]
async fn a_segment_of_an_unknown_format_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), 1).await;
    let path = dir.path().join(SEGMENT);
    let mut bytes = fs::read(&path).unwrap();
    bytes[8] = 9;
    let crc = crc32c::crc32c(&bytes[..60]);
    bytes[60..64].copy_from_slice(&crc.to_le_bytes());
    fs::write(&path, &bytes).unwrap();
    match open(dir.path()) {
        Err(OpenError::Storage(StorageError::UnsupportedFormat { version: 9, .. })) => {}
        other => panic!("expected an unsupported format error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_second_open_is_refused_while_the_first_holds_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).unwrap();
    match open(dir.path()) {
        Err(OpenError::Locked { .. }) => {}
        other => panic!("expected Locked, got {other:?}"),
    }
    store.close().await.unwrap();
    open(dir.path()).unwrap();
}
