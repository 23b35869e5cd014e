//! Fault injection through the I/O seam: a full disk, write errors, failed syncs. Each
//! fails the waiting appends with a typed error, poisons the writer, and loses no
//! acknowledged event once the store is reopened.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use common::{check_invariants, events, everything, open};
use strata::engine::io::{CrashMode, Fault, FaultyStorage, MemoryStorage, Storage};
use strata::{AppendError, ExpectedRevision, ReadStreamOptions, StorageError};

/// Writes some acknowledged events, arms `fault`, checks the failing append and the
/// poisoning, then reopens (after a simulated power loss) and checks nothing
/// acknowledged was lost.
async fn fault_scenario(fault: Fault, check_error: impl Fn(&StorageError) -> bool) {
    let memory = MemoryStorage::new();
    let faulty = FaultyStorage::new(Arc::new(memory.clone()));
    let store = open(Arc::new(faulty.clone()));
    let mut acknowledged = Vec::new();
    for i in 0..20 {
        let batch = events(3);
        let stream = format!("acct-{}", i % 4);
        store
            .append(&stream, ExpectedRevision::Any, batch.clone())
            .await
            .unwrap();
        acknowledged.extend(batch.iter().map(|e| e.id));
    }
    faulty.inject(fault);
    let failed = store
        .append("acct-0", ExpectedRevision::Any, events(2))
        .await;
    match &failed {
        Err(AppendError::Storage(error)) => {
            assert!(check_error(error), "unexpected error {error:?}")
        }
        other => panic!("the append must fail, got {other:?}"),
    }
    // Even with the fault gone, the writer stays poisoned: the kernel may have dropped
    // the pages it could not write, so nothing is acknowledged until a reopen.
    faulty.clear();
    match store
        .append("acct-1", ExpectedRevision::Any, events(1))
        .await
    {
        Err(AppendError::Storage(StorageError::Poisoned { .. })) => {}
        other => panic!("the writer must be poisoned, got {other:?}"),
    }
    // Readers still see every acknowledged event, and nothing else.
    let seen = check_invariants(&everything(&store).await);
    assert_eq!(seen, acknowledged);
    let stream = store
        .read_stream("acct-0", ReadStreamOptions::forwards())
        .await
        .unwrap();
    assert_eq!(stream.len(), 15);
    drop(store);
    for mode in [CrashMode::DropUnsynced, CrashMode::TornPrefix { seed: 3 }] {
        let restarted = memory.crash(mode);
        let store = open(Arc::new(restarted.clone()) as Arc<dyn Storage>);
        let after = check_invariants(&everything(&store).await);
        assert_eq!(
            &after[..acknowledged.len()],
            &acknowledged[..],
            "every acknowledged event survives"
        );
        assert!(
            after.len() <= acknowledged.len() + 2,
            "at most the failed append's events, complete"
        );
        store
            .append("acct-9", ExpectedRevision::Any, events(1))
            .await
            .unwrap();
        drop(store);
    }
}

#[tokio::test]
async fn disk_full_fails_the_append_and_poisons_the_writer() {
    fault_scenario(
        Fault::DiskFull {
            after_writes: 0,
            torn_bytes: 57,
        },
        |e| matches!(e, StorageError::DiskFull { .. }),
    )
    .await;
}

#[tokio::test]
async fn write_error_fails_the_append_and_poisons_the_writer() {
    fault_scenario(
        Fault::WriteError {
            after_writes: 0,
            torn_bytes: 0,
        },
        |e| {
            matches!(
                e,
                StorageError::Io {
                    operation: "write",
                    ..
                }
            )
        },
    )
    .await;
}

#[tokio::test]
async fn fsync_failure_fails_the_append_and_poisons_the_writer() {
    fault_scenario(Fault::SyncError { after_syncs: 0 }, |e| {
        matches!(
            e,
            StorageError::Io {
                operation: "fdatasync",
                ..
            }
        )
    })
    .await;
}

#[tokio::test]
async fn failure_while_rolling_to_a_new_segment_loses_nothing() {
    // Small segments: the fault fires on some later write, often a segment roll.
    for after_writes in [1, 2, 5, 9] {
        let memory = MemoryStorage::new();
        let faulty = FaultyStorage::new(Arc::new(memory.clone()));
        let store = open(Arc::new(faulty.clone()));
        faulty.inject(Fault::DiskFull {
            after_writes,
            torn_bytes: 13,
        });
        let mut acknowledged = Vec::new();
        for i in 0..400 {
            let batch = events(10);
            match store
                .append(format!("s-{}", i % 7), ExpectedRevision::Any, batch.clone())
                .await
            {
                Ok(_) => acknowledged.extend(batch.iter().map(|e| e.id)),
                Err(AppendError::Storage(_)) => break,
                Err(other) => panic!("unexpected {other:?}"),
            }
        }
        assert!(
            store
                .append("x", ExpectedRevision::Any, events(1))
                .await
                .is_err(),
            "poisoned"
        );
        drop(store);
        let store = open(Arc::new(
            memory.crash(CrashMode::TornPrefix { seed: after_writes }),
        ));
        let after = check_invariants(&everything(&store).await);
        assert_eq!(&after[..acknowledged.len()], &acknowledged[..]);
    }
}

#[tokio::test]
async fn concurrent_appends_waiting_on_a_failed_sync_all_fail() {
    let memory = MemoryStorage::new();
    let faulty = FaultyStorage::new(Arc::new(memory.clone()));
    let store = open(Arc::new(faulty.clone()));
    store
        .append("a", ExpectedRevision::NoStream, events(1))
        .await
        .unwrap();
    faulty.inject(Fault::SyncError { after_syncs: 0 });
    let tasks: Vec<_> = (0..32)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .append(format!("c-{i}"), ExpectedRevision::Any, events(1))
                    .await
            })
        })
        .collect();
    for task in tasks {
        assert!(
            task.await.unwrap().is_err(),
            "no append is acknowledged after a failed sync"
        );
    }
    assert_eq!(everything(&store).await.len(), 1);
}

#[tokio::test]
async fn a_retry_after_a_crash_returns_the_original_positions() {
    // The append reached the disk, but the process died before the caller saw the
    // acknowledgement: the caller retries with the same ids after the restart.
    for expected in [
        ExpectedRevision::Any,
        ExpectedRevision::NoStream,
        ExpectedRevision::StreamExists,
    ] {
        let memory = MemoryStorage::new();
        let store = open(Arc::new(memory.clone()));
        store
            .append("other", ExpectedRevision::Any, events(5))
            .await
            .unwrap();
        if expected == ExpectedRevision::StreamExists {
            store
                .append("order-1", ExpectedRevision::Any, events(1))
                .await
                .unwrap();
        }
        let batch = events(3);
        let original = store
            .append("order-1", expected, batch.clone())
            .await
            .unwrap();
        store
            .append("other", ExpectedRevision::Any, events(5))
            .await
            .unwrap();
        let restarted = memory.crash(CrashMode::DropUnsynced);
        drop(store);
        let store = open(Arc::new(restarted));
        let retry = store.append("order-1", expected, batch).await.unwrap();
        assert_eq!(retry, original, "{expected:?}");
        assert_eq!(
            everything(&store).await.len(),
            13 + usize::from(expected == ExpectedRevision::StreamExists)
        );
    }
}

#[tokio::test]
async fn events_served_after_a_failed_sync_survive_a_later_power_loss() {
    // A sync fails: the batch's bytes may sit in the page cache only. The process
    // restarts without a power loss, then the power fails. Nothing the restarted process
    // served may disappear, and no position may be given to two events.
    let memory = MemoryStorage::new();
    let faulty = FaultyStorage::new(Arc::new(memory.clone()));
    let store = open(Arc::new(faulty.clone()));
    store
        .append("a", ExpectedRevision::Any, events(2))
        .await
        .unwrap();
    faulty.inject(Fault::SyncError { after_syncs: 0 });
    assert!(store
        .append("a", ExpectedRevision::Any, events(3))
        .await
        .is_err());
    faulty.clear();
    drop(store);
    let restarted = open(Arc::new(memory.clone()));
    let served = check_invariants(&everything(&restarted).await);
    drop(restarted);
    let after_power_loss = memory.crash(CrashMode::DropUnsynced);
    let store = open(Arc::new(after_power_loss));
    let kept = check_invariants(&everything(&store).await);
    assert_eq!(kept, served, "what was served survives the power loss");
    let next = store
        .append("b", ExpectedRevision::Any, events(1))
        .await
        .unwrap();
    assert_eq!(
        next.positions[0].0,
        served.len() as u64,
        "no position is reused"
    );
}
