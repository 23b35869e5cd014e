//! The SIGKILL loop of `crash.rs` on a store of a million streams (issue 12): the
//! kills land while appends go to random streams among them, while segment tables are
//! built and while checkpoints of a million stream heads are written. After each kill
//! the store opens, every event the child saw acknowledged reads back at the stream and
//! revision it was acknowledged at, the event count holds every preloaded event, and
//! `verify` finds the log whole.
//!
//! The child is this test binary, started with `STRATA_CRASH_SCALE_CHILD=<dir>`.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::events;
use strata::{AppendRequest, Durability, ExpectedRevision, Options, ReadStreamOptions, Store};
use uuid::Uuid;

const CHILD_ENV: &str = "STRATA_CRASH_SCALE_CHILD";
const STREAMS: u64 = 1_000_000;
const KILLS: u64 = 4;

fn options() -> Options {
    Options {
        // 2 MiB segments: the preload seals about fifty, each getting a table.
        segment_size_bytes: 2 << 20,
        checkpoint_interval_bytes: 2 << 20,
        limits: strata::Limits {
            event_size_bytes_max: 16 << 10,
            append_size_bytes_max: 256 << 10,
            append_events_max: 1000,
            stream_name_bytes_max: 64,
            event_type_bytes_max: 64,
            append_streams_max: 1000,
        },
        ..Options::default()
    }
}

fn stream(n: u64) -> String {
    format!("big-{n}")
}

/// The child: appends one event at a time to pseudo-random streams until killed,
/// printing `ack <stream> <revision> <id>` for each acknowledged one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return; // Not a child: nothing to do in a normal test run.
    };
    let store = Store::open_with(&dir, options()).unwrap();
    let (sender, mut receiver) = tokio::sync::mpsc::unbounded_channel::<(String, u64, Uuid)>();
    for task in 0..8u64 {
        let store = store.clone();
        let sender = sender.clone();
        tokio::spawn(async move {
            let mut seed = 0x2545_F491_4F6C_DD1D ^ (task + 1).wrapping_mul(0x9E37_79B9);
            loop {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let name = stream(seed % STREAMS);
                let batch = events(1);
                let id = batch[0].id;
                let result = store
                    .append(name.clone(), ExpectedRevision::Any, batch)
                    .await
                    .unwrap();
                if sender.send((name, result.first_revision, id)).is_err() {
                    return;
                }
            }
        });
    }
    drop(sender);
    let mut out = std::io::stdout().lock();
    while let Some((name, revision, id)) = receiver.recv().await {
        writeln!(out, "ack {name} {revision} {id}").unwrap();
        out.flush().unwrap();
    }
}

/// Writes one event to each of `STREAMS` streams, 1 000 streams per append, without
/// syncing each batch (the close syncs and checkpoints).
async fn preload(dir: &std::path::Path) {
    let store = Store::open_with(
        dir,
        Options {
            durability: Durability::NoSync,
            ..options()
        },
    )
    .unwrap();
    for first in (0..STREAMS).step_by(1000) {
        let requests = (first..first + 1000)
            .map(|n| AppendRequest::new(stream(n), ExpectedRevision::NoStream, events(1)))
            .collect();
        store.append_multi(requests).await.unwrap();
    }
    store.close().await.unwrap();
}

#[test]
fn sigkill_on_a_store_of_a_million_streams_never_loses_an_acknowledged_event() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(preload(dir.path()));
    let mut acknowledged: Vec<(String, u64, Uuid)> = Vec::new();
    for round in 0..KILLS {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "child", "--nocapture", "--test-threads", "1"])
            .env(CHILD_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (acks, received) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let mut parts = line.split_whitespace();
                if parts.next() != Some("ack") {
                    continue;
                }
                let (Some(name), Some(revision), Some(id)) =
                    (parts.next(), parts.next(), parts.next())
                else {
                    continue;
                };
                let ack = (
                    name.to_owned(),
                    revision.parse::<u64>().unwrap(),
                    Uuid::parse_str(id).unwrap(),
                );
                if acks.send(ack).is_err() {
                    break;
                }
            }
        });
        // The child first opens a store of a million streams: wait for its first
        // acknowledgement, then kill it at a moment that varies by round.
        let first = received
            .recv_timeout(Duration::from_secs(300))
            .expect("the child acknowledged an append");
        acknowledged.push(first);
        std::thread::sleep(Duration::from_millis(50 + round * 130));
        child.kill().unwrap();
        child.wait().unwrap();
        reader.join().unwrap();
        acknowledged.extend(received.try_iter());
        runtime.block_on(async {
            let store = Store::open_with(dir.path(), options()).unwrap();
            for (name, revision, id) in &acknowledged {
                let found = store
                    .read_stream(
                        name,
                        ReadStreamOptions::forwards()
                            .from_revision(*revision)
                            .limit(1),
                    )
                    .await
                    .unwrap();
                assert_eq!(
                    found.first().map(|e| e.id),
                    Some(*id),
                    "round {round}: {name}@{revision} lost"
                );
            }
            let stats = store.stats().await.unwrap();
            assert_eq!(stats.streams, STREAMS, "round {round}");
            assert!(
                stats.events >= STREAMS + acknowledged.len() as u64,
                "round {round}: {} events",
                stats.events
            );
            store.close().await.unwrap();
        });
    }
    let report = strata::engine::verify(
        &strata::engine::io::DirStorage::new(dir.path()).unwrap(),
        |_, _| {},
    )
    .unwrap();
    assert!(report.is_ok(), "{:?}", report.errors);
}
