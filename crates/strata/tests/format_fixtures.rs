//! Checked-in store directories (`tests/fixtures/format-v1/`, written by
//! `examples/format_fixtures.rs`, and `v0.1.0-store` by strata 0.1.0 before store ids)
//! that this and every future version must open with the documented outcome: the format
//! on disk is a promise to every user's data, not an implementation detail.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::{Path, PathBuf};

use strata::engine::IndexSource;
use strata::{
    EventData, ExpectedRevision, OpenError, Options, ReadAllOptions, StorageError, Store,
};
use uuid::Uuid;

fn fixture(name: &str) -> tempfile::TempDir {
    let from: PathBuf = [
        env!("CARGO_MANIFEST_DIR"),
        "tests",
        "fixtures",
        "format-v1",
        name,
    ]
    .iter()
    .collect();
    let dir = tempfile::tempdir().unwrap();
    for entry in fs::read_dir(&from).unwrap() {
        let entry = entry.unwrap();
        fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
    }
    dir
}

fn open(dir: &Path) -> Result<Store, OpenError> {
    Store::open_with(dir, Options::small_for_tests())
}

/// The ids of the fixture's events, in log order: 1, 2, 3, … as the generator wrote them.
async fn ids(store: &Store) -> Vec<Uuid> {
    let all = store
        .read_all(ReadAllOptions::forwards().limit(100_000))
        .await
        .unwrap();
    for (i, event) in all.iter().enumerate() {
        assert_eq!(event.position.0, i as u64);
    }
    all.iter().map(|event| event.id).collect()
}

fn expected(count: u128) -> Vec<Uuid> {
    (1..=count).map(Uuid::from_u128).collect()
}

#[tokio::test]
async fn clean_opens_from_its_checkpoint_with_every_event() {
    let dir = fixture("clean");
    let store = open(dir.path()).unwrap();
    let report = store.embedded().unwrap().open_report().clone();
    assert_eq!(report.index_source, IndexSource::Checkpoint);
    assert_eq!(report.truncated_tail, None);
    assert_eq!(report.verified_segment.as_deref(), Some("0000000002.seg"));
    assert_eq!(ids(&store).await, expected(300));
    // It keeps working: appends go on from where it was.
    let result = store
        .append(
            "order-0",
            ExpectedRevision::Exact(59),
            vec![EventData::json("Paid", &1).unwrap()],
        )
        .await
        .unwrap();
    assert_eq!(result.first_revision, 60);
}

/// `clean-checkpoint-v3`: the clean store as strata wrote it with segment tables and a
/// version 3 checkpoint, whose memtable runs (of the segment being written) name their
/// stream instead of giving its id.
#[tokio::test]
async fn a_version_3_checkpoint_is_used_and_its_memtable_streams_found_by_name() {
    let dir = fixture("clean-checkpoint-v3");
    let checkpoint = fs::read(dir.path().join("index.ckpt")).unwrap();
    assert_eq!(
        &checkpoint[8..12],
        &3u32.to_le_bytes(),
        "the fixture is version 3"
    );
    {
        let store = open(dir.path()).unwrap();
        let report = store.embedded().unwrap().open_report().clone();
        assert_eq!(report.index_source, IndexSource::Checkpoint);
        assert_eq!(report.scanned_events, 0, "nothing rescanned: {report:?}");
        assert_eq!(report.truncated_tail, None);
        assert_eq!(ids(&store).await, expected(300));
        // Every stream reads whole through its tables and the memtable: events in log
        // order, stream `order-k` holding events k, k + 5, k + 10, …
        for k in 0..5u128 {
            let events = store
                .read_stream(&format!("order-{k}"), strata::ReadStreamOptions::forwards())
                .await
                .unwrap();
            let got: Vec<Uuid> = events.iter().map(|e| e.id).collect();
            let want: Vec<Uuid> = (0..60).map(|j| Uuid::from_u128(k + 5 * j + 1)).collect();
            assert_eq!(got, want, "order-{k}");
        }
        let result = store
            .append(
                "order-0",
                ExpectedRevision::Exact(59),
                vec![EventData::json("Paid", &1).unwrap()],
            )
            .await
            .unwrap();
        assert_eq!(result.first_revision, 60);
        store.close().await.unwrap();
    }
    // Closed, it writes the current version, which the next open uses.
    let checkpoint = fs::read(dir.path().join("index.ckpt")).unwrap();
    assert_eq!(&checkpoint[8..12], &4u32.to_le_bytes());
    let store = open(dir.path()).unwrap();
    assert_eq!(
        store.embedded().unwrap().open_report().index_source,
        IndexSource::Checkpoint
    );
    assert_eq!(ids(&store).await.len(), 301);
}

#[tokio::test]
async fn torn_tail_is_cut_and_reported_and_kept_aside() {
    let dir = fixture("torn-tail");
    let segment = dir.path().join("0000000003.seg");
    let len = fs::metadata(&segment).unwrap().len();
    let store = open(dir.path()).unwrap();
    let tail = store
        .embedded()
        .unwrap()
        .open_report()
        .truncated_tail
        .clone()
        .unwrap();
    assert_eq!(
        (tail.file.as_str(), tail.offset, tail.bytes),
        ("0000000003.seg", len - 100, 100)
    );
    assert_eq!(
        fs::read(dir.path().join(tail.kept_in.unwrap())).unwrap(),
        vec![0x5A; 100]
    );
    assert_eq!(ids(&store).await, expected(300));
}

#[tokio::test]
async fn a_damaged_sealed_segment_is_corrupt_and_not_opened() {
    for (name, segment) in [
        ("corrupt-sealed", "0000000001.seg"),
        ("corrupt-newest-sealed", "0000000002.seg"),
    ] {
        let dir = fixture(name);
        let before = fs::read(dir.path().join(segment)).unwrap();
        match open(dir.path()) {
            Err(OpenError::Storage(StorageError::Corrupt { file, .. })) => {
                assert!(file.ends_with(segment), "{name}: {file}")
            }
            other => panic!("{name}: expected Corrupt in {segment}, got {other:?}"),
        }
        assert_eq!(
            fs::read(dir.path().join(segment)).unwrap(),
            before,
            "{name}: untouched"
        );
    }
}

#[tokio::test]
async fn a_foreign_checkpoint_is_discarded_and_the_index_rebuilt() {
    let dir = fixture("foreign-checkpoint");
    let store = open(dir.path()).unwrap();
    let report = store.embedded().unwrap().open_report().clone();
    match report.index_source {
        IndexSource::Rebuilt { reason } => assert!(reason.contains("another store"), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(report.truncated_tail, None);
    assert_eq!(ids(&store).await, expected(300));
}

#[tokio::test]
async fn a_store_of_strata_0_1_0_opens_rebuilds_its_index_and_keeps_working() {
    let dir = fixture("v0.1.0-store");
    {
        let store = open(dir.path()).unwrap();
        let report = store.embedded().unwrap().open_report().clone();
        // Its checkpoint is of version 1: rebuilt from the log, nothing cut.
        assert!(
            matches!(report.index_source, IndexSource::Rebuilt { .. }),
            "{report:?}"
        );
        assert_eq!(report.truncated_tail, None);
        assert_eq!(ids(&store).await, expected(40));
        store
            .append(
                "order-1",
                ExpectedRevision::Exact(39),
                vec![EventData::json("Paid", &1).unwrap()],
            )
            .await
            .unwrap();
        store.close().await.unwrap();
    }
    // The checkpoint written at close (the current version, with the store's nil id) is
    // used next time.
    let store = open(dir.path()).unwrap();
    assert_eq!(
        store.embedded().unwrap().open_report().index_source,
        IndexSource::Checkpoint
    );
    assert_eq!(ids(&store).await.len(), 41);
}
