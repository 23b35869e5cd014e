//! A store keeps at most `Options::segment_handles_max` segment files (and as many
//! segment tables) open, however many segments it has: before, every segment stayed
//! open, so a store of ~1 000 segments failed under a default `ulimit -n` of 1 024.
#![cfg(target_os = "linux")]
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;

use common::{check_invariants, everything};
use strata::{EventData, ExpectedRevision, Options, ReadStreamOptions, Store};

const HANDLES_MAX: usize = 4;

fn options() -> Options {
    Options {
        segment_handles_max: HANDLES_MAX,
        // A scrubber reading a segment whose handle the cache closes meanwhile holds one
        // file more than the cache for that moment (allowed by the cache's design); the
        // exact counts here are about the cache alone.
        scrub_bytes_per_second: 0,
        ..Options::small_for_tests()
    }
}

/// Segment files of `dir` this process has open now.
fn open_segment_files(dir: &Path) -> usize {
    open_files(dir, "seg")
}

/// Files of `dir` with extension `extension` this process has open now.
fn open_files(dir: &Path, extension: &str) -> usize {
    let dir = dir.canonicalize().unwrap();
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
        .filter(|target| {
            target.starts_with(&dir) && target.extension().is_some_and(|e| e == extension)
        })
        .count()
}

fn segments_in(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|entry| {
            entry
                .as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|e| e == "seg")
        })
        .count()
}

fn padded(i: usize) -> Vec<EventData> {
    vec![EventData::json(
        "Padded",
        &serde_json::json!({ "i": i, "pad": "p".repeat(4000) }),
    )
    .unwrap()]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_of_many_segments_keeps_few_files_open() {
    let dir = tempfile::tempdir().unwrap();
    let streams = 600;
    {
        let store = Store::open_with(dir.path(), options()).unwrap();
        for i in 0..streams {
            store
                .append(format!("s-{i}"), ExpectedRevision::NoStream, padded(i))
                .await
                .unwrap();
            assert!(open_segment_files(dir.path()) <= HANDLES_MAX + 1);
        }
        store.close().await.unwrap();
    }
    let segments = segments_in(dir.path());
    assert!(segments > 8 * HANDLES_MAX, "only {segments} segments");

    // Reopened (which reads every segment's header), read whole, read stream by stream
    // across every segment, and appended to: never more than the cache holds, plus the
    // writer's own handle of the segment it writes.
    let store = Store::open_with(dir.path(), options()).unwrap();
    assert!(open_segment_files(dir.path()) <= HANDLES_MAX + 1);
    let all = everything(&store).await;
    assert_eq!(all.len(), streams);
    check_invariants(&all);
    assert!(open_segment_files(dir.path()) <= HANDLES_MAX + 1);
    for i in (0..streams).step_by(7) {
        let events = store
            .read_stream(&format!("s-{i}"), ReadStreamOptions::forwards())
            .await
            .unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].data, padded(i)[0].data);
    }
    assert!(open_segment_files(dir.path()) <= HANDLES_MAX + 1);
    assert!(
        open_files(dir.path(), "tbl") <= HANDLES_MAX,
        "segment tables are cached within the same bound"
    );
    store
        .append("s-0", ExpectedRevision::Exact(0), padded(0))
        .await
        .unwrap();
    assert!(open_segment_files(dir.path()) <= HANDLES_MAX + 1);
    store.close().await.unwrap();
    assert_eq!(
        open_segment_files(dir.path()) + open_files(dir.path(), "tbl"),
        0,
        "closing closes every file"
    );
}
