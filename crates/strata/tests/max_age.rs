//! `$maxAge` over a long run of expired events: reads and subscriptions skip them
//! without recursing or reading them (issue 11: one HTTP read of a stream with 60 000
//! expired events overflowed the server's stack, one recursion per page of them).
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use strata::engine::io::{Fault, FaultyStorage, MemoryStorage};
use strata::{
    Engine, EventData, ExpectedRevision, Options, ReadStreamOptions, Store, StreamMetadata,
    SubscribeFrom, SubscriptionMessage,
};

/// Counts file reads (with no delay), so a test can bound how much a read touches;
/// injecting it again restarts the count.
const COUNT_READS: Fault = Fault::SlowReads {
    delay: Duration::ZERO,
};

/// Expired events before the live ones: enough that reading (or recursing over) them
/// one page at a time is unmistakable.
const EXPIRED: u64 = 60_000;

/// Most file reads one bounded read may make: a binary search over the revisions reads
/// one record per probe (17 for 60 000 events), then the page itself. Reading the
/// expired events would take well over a thousand.
const READS_MAX: u64 = 100;

/// The default options without the background scrubber, whose reads would be counted.
fn counted_options() -> Options {
    Options {
        scrub_bytes_per_second: 0,
        ..Options::default()
    }
}

fn small_events(n: usize) -> Vec<EventData> {
    (0..n)
        .map(|i| EventData::json("Tested", &serde_json::json!({ "i": i })).unwrap())
        .collect()
}

#[tokio::test]
async fn reads_and_subscriptions_skip_many_expired_events_without_reading_them() {
    let storage = FaultyStorage::new(Arc::new(MemoryStorage::new()));
    storage.inject(COUNT_READS);
    let store = Store::from_engine(
        Engine::open_storage(Arc::new(storage.clone()), counted_options()).unwrap(),
    );
    let stream = "aging-1";
    for _ in 0..EXPIRED / 10_000 {
        store
            .append(stream, ExpectedRevision::Any, small_events(10_000))
            .await
            .unwrap();
    }
    let metadata = StreamMetadata {
        max_age: Some(Duration::from_secs(1)),
        ..StreamMetadata::default()
    };
    store
        .set_stream_metadata(stream, ExpectedRevision::Any, &metadata)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    store
        .append(
            stream,
            ExpectedRevision::Exact(EXPIRED - 1),
            small_events(3),
        )
        .await
        .unwrap();
    let live: Vec<u64> = (EXPIRED..EXPIRED + 3).collect();
    let revisions = |events: &[strata::RecordedEvent]| -> Vec<u64> {
        events.iter().map(|e| e.revision).collect()
    };

    // Forwards, one event, from the start and from inside the expired run.
    for from in [None, Some(0), Some(1234), Some(EXPIRED - 1)] {
        storage.inject(COUNT_READS);
        let mut options = ReadStreamOptions::forwards().limit(1);
        options.from = from;
        let page = store.read_stream(stream, options).await.unwrap();
        assert_eq!(revisions(&page), vec![EXPIRED], "forwards from {from:?}");
        let used = storage.seen();
        assert!(
            used <= READS_MAX,
            "forwards from {from:?} made {used} reads"
        );
    }
    // A page larger than the live events, and an unbounded (paged) read.
    for limit in [512, usize::MAX] {
        storage.inject(COUNT_READS);
        let page = store
            .read_stream(stream, ReadStreamOptions::forwards().limit(limit))
            .await
            .unwrap();
        assert_eq!(revisions(&page), live, "forwards, limit {limit}");
        assert!(storage.seen() <= READS_MAX);
    }
    // Backwards: from the end, and from an expired revision (nothing there).
    storage.inject(COUNT_READS);
    let back = store
        .read_stream(stream, ReadStreamOptions::backwards())
        .await
        .unwrap();
    assert_eq!(
        revisions(&back),
        live.iter().rev().copied().collect::<Vec<_>>()
    );
    assert!(storage.seen() <= READS_MAX);
    let back = store
        .read_stream(
            stream,
            ReadStreamOptions::backwards()
                .from_revision(EXPIRED + 1)
                .limit(5),
        )
        .await
        .unwrap();
    assert_eq!(revisions(&back), vec![EXPIRED + 1, EXPIRED]);
    storage.inject(COUNT_READS);
    let expired = store
        .read_stream(
            stream,
            ReadStreamOptions::backwards()
                .from_revision(EXPIRED - 1)
                .limit(100),
        )
        .await
        .unwrap();
    assert!(expired.is_empty(), "{:?}", revisions(&expired));
    assert!(storage.seen() <= READS_MAX);

    // Catch-up subscriptions from the start and from inside the expired run.
    for from in [SubscribeFrom::Start, SubscribeFrom::After(10)] {
        storage.inject(COUNT_READS);
        let mut subscription = store.subscribe_stream(stream, from);
        let mut delivered = Vec::new();
        loop {
            let message = tokio::time::timeout(Duration::from_secs(30), subscription.next())
                .await
                .expect("not stalled")
                .unwrap();
            match message {
                SubscriptionMessage::Event(event) => delivered.push(event.revision),
                SubscriptionMessage::CaughtUp => break,
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(delivered, live, "subscription from {from:?}");
        assert!(storage.seen() <= READS_MAX);
    }
}
