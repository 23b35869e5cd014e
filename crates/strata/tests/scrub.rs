//! The background scrubber re-verifies old sealed segments, which open does not check:
//! a flipped byte there is reported (segment, offset, what) and left in place; a clean
//! store reports no damage and counts the bytes it verified; the rate bounds the reads;
//! rate 0 means no scrubber at all; and closing never waits for the scrubber's pauses.
#![allow(clippy::unwrap_used)]

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{events, files_with};
use strata::engine::format::{frame, segment};
use strata::{
    Durability, ExpectedRevision, Options, ReadAllOptions, ReadError, ScrubStatus, StorageError,
    Store,
};

/// Tests here count the process's scrub threads: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Longest any wait for the scrubber may take before the test fails.
const DEADLINE: Duration = Duration::from_secs(60);

/// Fast enough that a pass over a test store takes milliseconds.
const FAST: u64 = 1 << 30;

fn options(scrub_bytes_per_second: u64, scrub_interval: Duration) -> Options {
    Options {
        scrub_bytes_per_second,
        scrub_interval,
        // Building the stores is not what is tested here.
        durability: Durability::NoSync,
        ..Options::small_for_tests()
    }
}

/// A closed store in `dir` of at least five segments (four sealed), written without a
/// scrubber.
async fn build(dir: &Path) {
    let store = Store::open_with(dir, options(0, Duration::ZERO)).unwrap();
    let mut i = 0;
    while store.stats().await.unwrap().segments < 5 {
        store
            .append(format!("s-{}", i % 7), ExpectedRevision::Any, events(5))
            .await
            .unwrap();
        i += 1;
    }
    store.close().await.unwrap();
}

/// The store's segment files, oldest first.
fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| {
            path.file_name()
                .and_then(|name| segment::parse_file_name(name.to_str()?))
                .is_some()
        })
        .collect();
    files.sort();
    files
}

/// Bytes of the sealed segments (all but the last).
fn sealed_bytes(dir: &Path) -> u64 {
    let files = segment_files(dir);
    files[..files.len() - 1]
        .iter()
        .map(|path| fs::metadata(path).unwrap().len())
        .sum()
}

/// Threads of this process named `strata-scrub`.
fn scrub_threads() -> usize {
    fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|task| fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .filter(|name| name.trim_end() == "strata-scrub")
        .count()
}

/// Polls the scrub status until `done` holds, failing after [`DEADLINE`].
async fn wait_for(store: &Store, what: &str, done: impl Fn(&ScrubStatus) -> bool) -> ScrubStatus {
    let engine = store.embedded().unwrap();
    let started = Instant::now();
    loop {
        let status = engine.scrub_status().expect("the scrubber is on");
        if done(&status) {
            return status;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "timed out waiting until {what}: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Polls `condition` until it holds, failing after [`DEADLINE`].
async fn eventually(what: &str, condition: impl Fn() -> bool) {
    let started = Instant::now();
    while !condition() {
        assert!(
            started.elapsed() < DEADLINE,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_byte_in_an_old_sealed_segment_is_reported_and_left_in_place() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    build(dir.path()).await;
    let files = segment_files(dir.path());
    let oldest = &files[0];
    let mut bytes = fs::read(oldest).unwrap();
    // Inside the first record of the first frame: open never reads it (the checkpoint
    // covers the segment, and only the last frame of each segment is checked against
    // it), so without a scrubber nothing notices.
    let first_frame = segment::HEADER_LEN;
    let flipped = first_frame + frame::HEADER_LEN + 20;
    bytes[flipped] ^= 0x01;
    fs::write(oldest, &bytes).unwrap();

    let store = Store::open_with(dir.path(), options(FAST, Duration::from_millis(20))).unwrap();
    let engine = store.embedded().unwrap();
    let verified = engine.open_report().verified_segment.clone();
    assert!(
        verified.is_some() && verified.as_deref() != Some("0000000001.seg"),
        "open checked only the newest sealed segment: {verified:?}"
    );
    let status = wait_for(&store, "a pass completed", |s| s.passes >= 1).await;
    assert_eq!(status.damage_found, 1, "{status:?}");
    assert_eq!(status.damage.len(), 1, "{status:?}");
    let damage = &status.damage[0];
    assert_eq!(damage.segment, 1);
    assert_eq!(
        damage.offset, first_frame as u64,
        "the damaged frame's offset"
    );
    assert!(damage.detail.contains("checksum"), "{damage:?}");
    assert!(
        status.last_pass_finished_at.is_some(),
        "a finished pass says when"
    );
    // The damage stays reported once however many passes find it again.
    let status = wait_for(&store, "two more passes", |s| s.passes >= status.passes + 2).await;
    assert_eq!(status.damage_found, 1, "{status:?}");
    assert_eq!(status.damage.len(), 1);
    // The stats say the same.
    let stats = store.stats().await.unwrap();
    assert_eq!(stats.scrub.map(|s| s.damage_found), Some(1));
    // Nothing was cut or repaired: the evidence stays, and reads of it fail loudly.
    assert_eq!(fs::read(oldest).unwrap(), bytes, "the file is unchanged");
    match store.read_all(ReadAllOptions::forwards()).await {
        Err(ReadError::Storage(StorageError::Corrupt { file, .. })) => {
            assert_eq!(file, "0000000001.seg")
        }
        other => panic!("expected a corruption error, got {other:?}"),
    }
    // The rest of the store works as before.
    store
        .append("after", ExpectedRevision::NoStream, events(1))
        .await
        .unwrap();
    store.close().await.unwrap();
    assert_eq!(fs::read(oldest).unwrap(), bytes, "the file is unchanged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_segment_table_is_rebuilt_and_reads_work_again() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    build(dir.path()).await;
    let tables = files_with(dir.path(), ".tbl");
    assert!(tables.len() >= 2, "{tables:?}");
    let damaged = &dir.path().join(&tables[0]);
    let good = fs::read(damaged).unwrap();
    let mut bytes = good.clone();
    // In the first entry block (after the 64-byte header): loading the table checks its
    // header and summary, not its blocks, so the open uses it.
    bytes[64 + 5] ^= 0x40;
    fs::write(damaged, &bytes).unwrap();

    // Without a scrubber, a read that needs the block fails, naming the table.
    {
        let store = Store::open_with(dir.path(), options(0, Duration::ZERO)).unwrap();
        let mut failed = None;
        for i in 0..7 {
            if let Err(error) = store
                .read_stream(&format!("s-{i}"), strata::ReadStreamOptions::forwards())
                .await
            {
                failed = Some(error);
            }
        }
        match failed {
            Some(ReadError::Storage(StorageError::Corrupt { file, .. })) => {
                assert_eq!(file, "0000000001.tbl")
            }
            other => panic!("expected a read to fail on the damaged table, got {other:?}"),
        }
        store.close().await.unwrap();
    }

    let store = Store::open_with(dir.path(), options(FAST, Duration::from_secs(3600))).unwrap();
    let status = wait_for(&store, "a pass completed", |s| s.passes >= 1).await;
    assert_eq!(status.tables_repaired, 1, "{status:?}");
    assert_eq!(status.damage_found, 0, "a table is not the log: {status:?}");
    assert!(status.table_bytes_verified > 0, "{status:?}");
    assert_eq!(fs::read(damaged).unwrap(), good, "rebuilt byte for byte");
    // Every stream reads whole again, in this process, without a restart.
    let mut events = 0;
    for i in 0..7 {
        events += store
            .read_stream(&format!("s-{i}"), strata::ReadStreamOptions::forwards())
            .await
            .unwrap()
            .len();
    }
    assert_eq!(
        events as u64,
        store.stats().await.unwrap().events,
        "every event of every stream"
    );
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_store_reports_no_damage_and_counts_every_sealed_byte() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    build(dir.path()).await;
    let sealed = sealed_bytes(dir.path());
    let before = scrub_threads();
    // A long interval: after the first pass the scrubber waits, and its count stays.
    let store = Store::open_with(dir.path(), options(FAST, Duration::from_secs(3600))).unwrap();
    // A new thread names itself once it runs: polled.
    eventually("one scrub thread runs for the store", || {
        scrub_threads() == before + 1
    })
    .await;
    let status = wait_for(&store, "a pass completed", |s| s.passes >= 1).await;
    assert_eq!(status.passes, 1);
    assert_eq!(
        status.bytes_verified, sealed,
        "every byte of every sealed segment, the tail excluded"
    );
    assert_eq!(status.damage_found, 0);
    assert!(status.damage.is_empty());
    assert_eq!(status.current_segment, None, "between passes");
    assert!(status.last_pass_finished_at.is_some());
    // Closing does not wait out the hour.
    let closing = Instant::now();
    store.close().await.unwrap();
    assert!(
        closing.elapsed() < Duration::from_secs(10),
        "close took {:?}",
        closing.elapsed()
    );
    eventually("the scrub thread is gone", || scrub_threads() == before).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_zero_means_no_scrubber() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    build(dir.path()).await;
    let before = scrub_threads();
    // The interval of a scrubber that is off does not matter, zero included.
    let store = Store::open_with(dir.path(), options(0, Duration::ZERO)).unwrap();
    assert_eq!(store.embedded().unwrap().scrub_status(), None);
    assert_eq!(store.stats().await.unwrap().scrub, None);
    assert!(scrub_threads() <= before, "no scrub thread");
    store.close().await.unwrap();
}

#[tokio::test]
async fn a_scrubber_without_a_pause_between_passes_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let refused = Store::open_with(dir.path(), options(FAST, Duration::ZERO));
    assert!(
        matches!(refused, Err(strata::OpenError::InvalidOptions { .. })),
        "{refused:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_bounds_the_reads_and_close_does_not_wait_for_the_pass() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    build(dir.path()).await;
    // Slow enough that a pass over the ~250 KiB of sealed segments takes many seconds.
    let rate: u64 = 16 << 10;
    // The scrubber reads a quarter second's worth at a time, 4 KiB at least (frames
    // here are smaller).
    let chunk = (rate / 4).max(4 << 10);
    assert!(sealed_bytes(dir.path()) > 10 * rate);
    let opened = Instant::now();
    let store = Store::open_with(dir.path(), options(rate, Duration::from_secs(3600))).unwrap();
    let engine = store.embedded().unwrap();
    let status = wait_for(&store, "scrubbing started", |s| s.bytes_verified > 0).await;
    assert_eq!(status.passes, 0);
    // However slow this machine, the scrubber never reads faster than the rate (plus
    // the chunk it reads before it pauses).
    for _ in 0..10 {
        let status = engine.scrub_status().unwrap();
        let elapsed = opened.elapsed();
        let allowed = (rate as f64 * elapsed.as_secs_f64()) as u64 + chunk;
        assert!(
            status.bytes_verified <= allowed,
            "{} bytes verified in {elapsed:?}, at most {allowed} allowed",
            status.bytes_verified
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status = engine.scrub_status().unwrap();
    assert_eq!(status.passes, 0, "the pass is still under way: {status:?}");
    assert!(status.current_segment.is_some());
    let closing = Instant::now();
    store.close().await.unwrap();
    assert!(
        closing.elapsed() < Duration::from_secs(10),
        "close took {:?}",
        closing.elapsed()
    );
}
