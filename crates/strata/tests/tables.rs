//! Segment tables: the event locations of sealed segments live on disk, not in memory.
//!
//! Issue 12: the whole index lived in RAM (8 bytes per event for ever). Now each sealed
//! segment gets a table written by a background thread, its memtable is dropped, and
//! reads find events through the tables, also after a reopen, with a damaged, missing
//! or stale table, and for streams spread over many segments.
#![allow(clippy::unwrap_used)]

mod common;

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{check_invariants, everything, files_with};
use strata::engine::index::table;
use strata::{EventData, ExpectedRevision, ListStreamsOptions, Options, ReadStreamOptions, Store};

const STREAMS: usize = 200;
const ROUNDS: usize = 12;

fn options() -> Options {
    Options::small_for_tests()
}

fn event(stream: usize, round: usize) -> EventData {
    EventData::json(
        "Noted",
        &serde_json::json!({ "stream": stream, "round": round, "pad": "x".repeat(300) }),
    )
    .unwrap()
}

/// Appends `ROUNDS` events to each of `STREAMS` streams, round by round, so every stream
/// spreads over many segments.
async fn fill(store: &Store) {
    for round in 0..ROUNDS {
        for stream in 0..STREAMS {
            let expected = if round == 0 {
                ExpectedRevision::NoStream
            } else {
                ExpectedRevision::Exact(round as u64 - 1)
            };
            store
                .append(format!("s-{stream}"), expected, vec![event(stream, round)])
                .await
                .unwrap();
        }
    }
}

/// Waits until every sealed segment has its table in the index.
async fn tables_built(store: &Store, dir: &Path) {
    let sealed = files_with(dir, ".seg").len() as u64 - 1;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let stats = store.embedded().unwrap().index_stats();
        if stats.tables == sealed {
            return;
        }
        assert!(Instant::now() < deadline, "tables not built: {stats:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn verify(dir: &Path) -> strata::engine::VerifyReport {
    let storage = strata::engine::io::DirStorage::new(dir).unwrap();
    strata::engine::verify(&storage, |_, _| {}).unwrap()
}

async fn check_every_stream(store: &Store) {
    for stream in (0..STREAMS).step_by(7) {
        let name = format!("s-{stream}");
        let forwards = store
            .read_stream(&name, ReadStreamOptions::forwards())
            .await
            .unwrap();
        assert_eq!(forwards.len(), ROUNDS, "{name}");
        for (round, recorded) in forwards.iter().enumerate() {
            assert_eq!(recorded.stream, name);
            assert_eq!(recorded.revision, round as u64);
            assert_eq!(recorded.data, event(stream, round).data);
        }
        let backwards = store
            .read_stream(&name, ReadStreamOptions::backwards().limit(3))
            .await
            .unwrap();
        let revisions: Vec<u64> = backwards.iter().map(|e| e.revision).collect();
        assert_eq!(revisions, vec![11, 10, 9], "{name}");
        let middle = store
            .read_stream(
                &name,
                ReadStreamOptions::forwards().from_revision(5).limit(2),
            )
            .await
            .unwrap();
        let revisions: Vec<u64> = middle.iter().map(|e| e.revision).collect();
        assert_eq!(revisions, vec![5, 6], "{name}");
    }
}

#[tokio::test]
async fn sealed_segments_move_their_locations_to_tables() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with(dir.path(), options()).unwrap();
    fill(&store).await;
    tables_built(&store, dir.path()).await;
    let stats = store.embedded().unwrap().index_stats();
    let segments = files_with(dir.path(), ".seg").len() as u64;
    assert!(segments > 10, "only {segments} segments");
    assert_eq!(
        stats.memtables, 1,
        "only the segment being written: {stats:?}"
    );
    let total = (STREAMS * ROUNDS) as u64;
    assert!(
        stats.memtable_events < total / 4,
        "most locations left memory: {stats:?}"
    );
    assert_eq!(stats.streams, STREAMS as u64);
    check_every_stream(&store).await;
    check_invariants(&everything(&store).await);
    // Idempotent retries look up recorded ids through the tables too.
    let first = store
        .read_stream("s-3", ReadStreamOptions::forwards().limit(1))
        .await
        .unwrap();
    let retried = EventData {
        id: first[0].id,
        ..event(3, 0)
    };
    let result = store
        .append("s-3", ExpectedRevision::NoStream, vec![retried])
        .await
        .unwrap();
    assert_eq!(result.last_position(), Some(first[0].position));
    store.close().await.unwrap();

    // Reopened: the tables are loaded, not rebuilt; the checkpoint holds no locations of
    // sealed segments.
    let store = Store::open_with(dir.path(), options()).unwrap();
    let stats = store.embedded().unwrap().index_stats();
    assert_eq!(stats.tables, segments - 1, "{stats:?}");
    assert_eq!(stats.memtables, 1, "{stats:?}");
    check_every_stream(&store).await;
    let stats = store.stats().await.unwrap();
    assert_eq!(stats.streams, STREAMS as u64);
    assert_eq!(stats.events, total);
    store.close().await.unwrap();
}

#[tokio::test]
async fn damaged_missing_and_stale_tables_never_cost_a_read() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open_with(dir.path(), options()).unwrap();
        fill(&store).await;
        tables_built(&store, dir.path()).await;
        store.close().await.unwrap();
    }
    let tables = files_with(dir.path(), ".tbl");
    assert!(tables.len() > 10);
    // A flipped byte in one table's summary (its bloom filter): refused at open and
    // rebuilt from the segment.
    let damaged = dir.path().join(&tables[2]);
    let mut bytes = fs::read(&damaged).unwrap();
    let at = bytes.len() - 40;
    bytes[at] ^= 0x10;
    fs::write(&damaged, &bytes).unwrap();
    // Another table is gone although the checkpoint relied on it: built again at open.
    fs::remove_file(dir.path().join(&tables[5])).unwrap();
    // A table for the segment being written (left by a version that sealed it before a
    // failed roll, say) would be stale as soon as the writer appends: removed.
    let segments = files_with(dir.path(), ".seg");
    let last: u32 = segments.last().unwrap()[..10].parse().unwrap();
    fs::copy(
        dir.path().join(&tables[0]),
        dir.path().join(table::file_name(last)),
    )
    .unwrap();

    let store = Store::open_with(dir.path(), options()).unwrap();
    check_every_stream(&store).await;
    tables_built(&store, dir.path()).await;
    assert!(!dir.path().join(table::file_name(last)).exists());
    assert!(dir.path().join(&tables[5]).exists(), "rebuilt");
    assert_ne!(fs::read(&damaged).unwrap(), bytes, "rewritten");
    store.close().await.unwrap();

    let verified = verify(dir.path());
    assert!(verified.is_ok(), "{:?}", verified.errors);
    assert_eq!(verified.tables, tables.len() as u64);

    // A flipped byte inside an entry block cannot be told at open (only the summary is
    // checked there); the read that needs the block fails as corruption naming the
    // table, and never serves a wrong event. `verify` finds it.
    let victim = dir.path().join(&tables[4]);
    let mut bytes = fs::read(&victim).unwrap();
    for at in (table::HEADER_LEN..table::HEADER_LEN + 20 * 128).step_by(20) {
        bytes[at + 8] ^= 0x01;
    }
    fs::write(&victim, &bytes).unwrap();
    let verified = verify(dir.path());
    assert_eq!(verified.errors.len(), 1, "{:?}", verified.errors);
    assert!(verified.errors[0].to_string().contains(&tables[4]));
    let store = Store::open_with(dir.path(), options()).unwrap();
    let mut corrupt = 0;
    for stream in 0..STREAMS {
        match store
            .read_stream(&format!("s-{stream}"), ReadStreamOptions::forwards())
            .await
        {
            Ok(events) => {
                assert_eq!(events.len(), ROUNDS);
                assert!(events
                    .iter()
                    .enumerate()
                    .all(|(i, e)| e.revision == i as u64));
            }
            Err(strata::ReadError::Storage(strata::StorageError::Corrupt { file, .. })) => {
                assert_eq!(file, tables[4]);
                corrupt += 1;
            }
            Err(other) => panic!("{other:?}"),
        }
    }
    assert!(corrupt > 0, "the damaged block was read");
    store.close().await.unwrap();
    // Removing the damaged table is the repair: it is rebuilt from the segment.
    fs::remove_file(&victim).unwrap();
    let store = Store::open_with(dir.path(), options()).unwrap();
    check_every_stream(&store).await;
    store.close().await.unwrap();
}

#[tokio::test]
async fn list_streams_pages_in_name_order_and_stats_count_streams() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with(dir.path(), options()).unwrap();
    for i in (0..50).rev() {
        store
            .append(
                format!("p-{i:02}"),
                ExpectedRevision::NoStream,
                vec![event(i, 0)],
            )
            .await
            .unwrap();
    }
    store
        .tombstone_stream("p-07", ExpectedRevision::Any)
        .await
        .unwrap();
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .list_streams(ListStreamsOptions {
                after: after.clone(),
                limit: Some(8),
                ..ListStreamsOptions::default()
            })
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 8);
        after = page.last().map(|s| s.name.clone());
        seen.extend(page.into_iter().map(|s| s.name));
    }
    let expected: Vec<String> = (0..50)
        .filter(|&i| i != 7)
        .map(|i| format!("p-{i:02}"))
        .collect();
    assert_eq!(seen, expected);
    assert_eq!(store.stats().await.unwrap().streams, 50);
    store.close().await.unwrap();
    let store = Store::open_with(dir.path(), options()).unwrap();
    assert_eq!(store.stats().await.unwrap().streams, 50);
    store.close().await.unwrap();
}

/// Every stream name `list_streams` gives, page by page (`limit` each), with `prefix`.
async fn list_all(store: &Store, prefix: Option<&str>, limit: usize) -> Vec<String> {
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .list_streams(ListStreamsOptions {
                after: after.clone(),
                prefix: prefix.map(str::to_owned),
                limit: Some(limit),
                ..ListStreamsOptions::default()
            })
            .await
            .unwrap();
        assert!(page.len() <= limit);
        let Some(last) = page.last() else {
            return seen;
        };
        after = Some(last.name.clone());
        seen.extend(page.into_iter().map(|s| s.name));
    }
}

/// Listing pages through a name order kept beside the heads (streams created since it
/// was last folded are sorted when listed, and folded in past a few thousand), which a
/// checkpoint saves: pages stay in order across folds, across streams created between
/// pages, and across a reopen.
#[tokio::test]
async fn list_streams_keeps_name_order_across_folds_new_streams_and_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with(dir.path(), options()).unwrap();
    let mut names: Vec<String> = Vec::new();
    // Created in a scrambled order over 12 000 streams (as many per append as the
    // limits allow), listed now and then: several folds.
    let scrambled = |i: usize| format!("o-{:05}", (i * 7_919) % 12_000);
    let per_append = store.limits().append_streams_max;
    for i in (0..12_000).step_by(per_append) {
        let requests = (i..(i + per_append).min(12_000))
            .map(|i| {
                names.push(scrambled(i));
                strata::AppendRequest::new(
                    scrambled(i),
                    ExpectedRevision::NoStream,
                    vec![event(i, 0)],
                )
            })
            .collect();
        store.append_multi(requests).await.unwrap();
        if i % 2_500 < per_append {
            let mut expected = names.clone();
            expected.sort();
            assert_eq!(list_all(&store, None, 997).await, expected, "at {i}");
        }
    }
    names.sort();
    assert_eq!(list_all(&store, None, 1000).await, names);
    let with_prefix: Vec<String> = names
        .iter()
        .filter(|n| n.starts_with("o-01"))
        .cloned()
        .collect();
    assert_eq!(with_prefix.len(), 1000);
    assert_eq!(list_all(&store, Some("o-01"), 64).await, with_prefix);
    // Streams created between two pages of one listing are listed when they sort after
    // the page already seen.
    let first = store
        .list_streams(ListStreamsOptions {
            limit: Some(10),
            ..ListStreamsOptions::default()
        })
        .await
        .unwrap();
    for name in ["o-00000x", "zz-late"] {
        store
            .append(name, ExpectedRevision::NoStream, vec![event(0, 1)])
            .await
            .unwrap();
    }
    let rest = store
        .list_streams(ListStreamsOptions {
            after: first.last().map(|s| s.name.clone()),
            limit: Some(5),
            ..ListStreamsOptions::default()
        })
        .await
        .unwrap();
    assert_eq!(rest[0].name, names[10]);
    names.push("o-00000x".into());
    names.push("zz-late".into());
    names.sort();
    store.close().await.unwrap();

    let store = Store::open_with(dir.path(), options()).unwrap();
    assert_eq!(list_all(&store, None, 1000).await, names, "after a reopen");
    assert_eq!(store.stats().await.unwrap().streams, 12_002);
    store.close().await.unwrap();
}
