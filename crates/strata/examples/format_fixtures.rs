//! Writes the on-disk format fixtures of `tests/fixtures/format-v1/`: store directories
//! of the current format, clean and damaged in the ways recovery must tell apart.
//! `tests/format_fixtures.rs` opens each with its documented outcome, and every future
//! version must keep opening them the same way, so they are written once and checked in;
//! regenerate them only when the format changes on purpose.
//!
//! ```sh
//! cargo run -p strata --example format_fixtures -- crates/strata/tests/fixtures/format-v1
//! ```
#![allow(clippy::unwrap_used)] // a generator: a failure is a bug to fix, not to handle

use std::fs;
use std::path::{Path, PathBuf};

use strata::engine::index::checkpoint;
use strata::{EventData, ExpectedRevision, Options, Store};
use uuid::Uuid;

/// Events in the clean store: enough to fill three 64 KiB segments.
const EVENTS: u128 = 300;

/// Event `i` of every fixture: a fixed id, so tests can check exactly what is read.
fn event(i: u128) -> EventData {
    let mut event = EventData::json(
        "Placed",
        &serde_json::json!({ "i": i as u64, "pad": "x".repeat(400) }),
    )
    .unwrap();
    event.id = Uuid::from_u128(i + 1);
    event
}

async fn write_store(dir: &Path, count: u128) {
    let store = Store::open_with(dir, Options::small_for_tests()).unwrap();
    for i in 0..count {
        store
            .append(
                format!("order-{}", i % 5),
                ExpectedRevision::Any,
                vec![event(i)],
            )
            .await
            .unwrap();
    }
    store.close().await.unwrap();
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        // The lock and the live readers' marker are not part of the format on disk.
        if name != "LOCK" && name != "durable.pos" {
            fs::copy(entry.path(), to.join(name)).unwrap();
        }
    }
}

fn flip_byte_in_the_middle(path: &Path) {
    let mut bytes = fs::read(path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    fs::write(path, bytes).unwrap();
}

#[tokio::main]
async fn main() {
    let out = PathBuf::from(
        std::env::args()
            .nth(1)
            .expect("usage: format_fixtures OUT_DIR"),
    );
    let scratch = tempfile::tempdir().unwrap();
    let clean = scratch.path().join("clean");
    write_store(&clean, EVENTS).await;
    copy_dir(&clean, &out.join("clean"));

    // A torn last batch after the checkpoint's end: cut off and reported.
    let torn = out.join("torn-tail");
    copy_dir(&clean, &torn);
    let last = format!("{:010}.seg", 3);
    let mut bytes = fs::read(torn.join(&last)).unwrap();
    bytes.extend_from_slice(&[0x5A; 100]);
    fs::write(torn.join(&last), bytes).unwrap();

    // A flipped byte in the oldest sealed segment, found by the full scan (no checkpoint).
    let corrupt = out.join("corrupt-sealed");
    copy_dir(&clean, &corrupt);
    fs::remove_file(corrupt.join(checkpoint::FILE_NAME)).unwrap();
    flip_byte_in_the_middle(&corrupt.join("0000000001.seg"));

    // A flipped byte in the newest sealed segment, which the checkpoint covers: found by
    // the check of that segment at open.
    let newest = out.join("corrupt-newest-sealed");
    copy_dir(&clean, &newest);
    flip_byte_in_the_middle(&newest.join("0000000002.seg"));

    // The checkpoint of another store: discarded, the index rebuilt, nothing cut.
    let other = scratch.path().join("other");
    write_store(&other, 7).await;
    let foreign = out.join("foreign-checkpoint");
    copy_dir(&clean, &foreign);
    fs::copy(
        other.join(checkpoint::FILE_NAME),
        foreign.join(checkpoint::FILE_NAME),
    )
    .unwrap();
}
