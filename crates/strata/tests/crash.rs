//! A real crash test: a child process appends under load and is killed with SIGKILL at
//! a random moment, many times over the same store. After each kill the store must open,
//! hold every event the child saw acknowledged, and have no gap in its global order.
//!
//! The child is this test binary itself, started with `STRATA_CRASH_CHILD=<dir>`: the
//! `child` test then appends forever, printing each acknowledged event id on stdout.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{check_invariants, events};
use strata::{ExpectedRevision, Options, ReadAllOptions, Store};
use uuid::Uuid;

const CHILD_ENV: &str = "STRATA_CRASH_CHILD";
const KILLS: u64 = 12;

fn options() -> Options {
    Options {
        // Small segments and checkpoints so kills land in rolls and checkpoint writes.
        segment_size_bytes: 256 << 10,
        checkpoint_interval_bytes: 64 << 10,
        ..Options::small_for_tests()
    }
}

/// The child: appends from many tasks until killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return; // Not a child: nothing to do in a normal test run.
    };
    let store = Store::open_with(&dir, options()).unwrap();
    let (sender, mut receiver) = tokio::sync::mpsc::unbounded_channel::<Vec<Uuid>>();
    for task in 0..16 {
        let store = store.clone();
        let sender = sender.clone();
        tokio::spawn(async move {
            for i in 0u64.. {
                let batch = events(1 + (i % 4) as usize);
                let ids = batch.iter().map(|e| e.id).collect();
                let stream = format!("crash-{}", (task * 7 + i) % 23);
                store
                    .append(stream, ExpectedRevision::Any, batch)
                    .await
                    .unwrap();
                if sender.send(ids).is_err() {
                    return;
                }
            }
        });
    }
    drop(sender);
    let mut out = std::io::stdout().lock();
    while let Some(ids) = receiver.recv().await {
        for id in ids {
            writeln!(out, "ack {id}").unwrap();
        }
        out.flush().unwrap();
    }
}

#[test]
fn sigkill_under_load_never_loses_an_acknowledged_event() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut acknowledged: HashSet<Uuid> = HashSet::new();
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    for round in 0..KILLS {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "child", "--nocapture", "--test-threads", "1"])
            .env(CHILD_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut ids = Vec::new();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(id) = line.strip_prefix("ack ") {
                    ids.push(Uuid::parse_str(id.trim()).unwrap());
                }
            }
            ids
        });
        // Let it start, then kill it at a pseudo-random moment.
        let delay = Duration::from_millis(150 + seed % 350);
        let started = Instant::now();
        while started.elapsed() < delay {
            std::thread::sleep(Duration::from_millis(10));
        }
        child.kill().unwrap();
        child.wait().unwrap();
        let ids = reader.join().unwrap();
        assert!(
            !ids.is_empty() || round > 0,
            "the child acknowledged nothing in round {round}"
        );
        acknowledged.extend(ids);
        runtime.block_on(async {
            let store = Store::open_with(dir.path(), options()).unwrap();
            let all = store.read_all(ReadAllOptions::forwards()).await.unwrap();
            let present: HashSet<Uuid> = check_invariants(&all).into_iter().collect();
            let lost = acknowledged.difference(&present).count();
            assert_eq!(lost, 0, "round {round}: {lost} acknowledged events lost");
            let report = strata::engine::verify(
                &strata::engine::io::DirStorage::new(dir.path()).unwrap(),
                |_, _| {},
            )
            .unwrap();
            assert!(report.is_ok(), "round {round}: {:?}", report.errors);
            store.close().await.unwrap();
        });
    }
    assert!(
        acknowledged.len() > 100,
        "the child did real work: {}",
        acknowledged.len()
    );
}
