//! Bounded scans of the global log: a filtered read stops at its scan budget and says
//! where to continue, a scan whose caller went away stops, the number of scans running
//! at once is bounded, and a filtered subscription moves past what it has checked.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use common::events;
use strata::engine::io::{Fault, FaultyStorage, MemoryStorage};
use strata::{
    AppendError, AppendRequest, AppendResult, Engine, EventData, EventStore, ExpectedRevision,
    Filter, ListStreamsOptions, Options, PageEnd, Position, ReadAllOptions, ReadError,
    ReadStreamOptions, RecordedEvent, StoreStats, StreamInfo, SubscribeFrom, SubscriptionMessage,
};
use strata::{Store, Subscription};
use tokio::sync::watch;

/// A storage whose file reads are counted and, once armed, each take `delay`: a slow
/// disk, so that a scan lasts long enough to watch it.
/// Events of about 6 KiB, so that a few hundred fill dozens of 64 KiB test segments.
fn big_events(n: usize) -> Vec<EventData> {
    (0..n)
        .map(|i| {
            EventData::json(
                "Big",
                &serde_json::json!({ "i": i, "pad": "x".repeat(6000) }),
            )
            .unwrap()
        })
        .collect()
}

/// What makes the store's storage slow once injected.
const SLOW_READS: Fault = Fault::SlowReads {
    delay: Duration::from_millis(20),
};

/// A store on storage that can be made slow holding dozens of segments of events of `other-*` streams.
async fn slow_store(options: Options) -> (FaultyStorage, Store) {
    // Tests count the storage's reads: no background scrubber may add its own.
    let options = Options {
        scrub_bytes_per_second: 0,
        ..options
    };
    let storage = FaultyStorage::new(Arc::new(MemoryStorage::new()));
    let store =
        Store::from_engine(Engine::open_storage(Arc::new(storage.clone()), options).unwrap());
    for i in 0..250 {
        store
            .append(format!("other-{i}"), ExpectedRevision::Any, big_events(2))
            .await
            .unwrap();
    }
    (storage, store)
}

/// Polls `condition` every 10 ms for up to 10 s.
async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if condition() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting until {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scan_whose_caller_went_away_stops() {
    let (storage, store) = slow_store(Options::small_for_tests()).await;
    storage.inject(SLOW_READS);
    let scan = {
        let store = store.clone();
        tokio::spawn(async move {
            let nothing = Filter::new().stream("no-such-stream");
            store
                .read_all(ReadAllOptions::forwards().filter(nothing))
                .await
        })
    };
    eventually("the scan has started", || storage.seen() >= 2).await;
    scan.abort();
    // Let a read under way finish, then see that no more follow.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let stopped_at = storage.seen();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        storage.seen(),
        stopped_at,
        "the scan goes on reading after its caller went away"
    );
}

/// Forwards to an engine and records the `from` of every filtered `read_all`; the
/// first `busy_first` filtered reads find the store busy.
struct Recording {
    inner: Store,
    filtered_reads_from: Mutex<Vec<Position>>,
    busy_first: AtomicU64,
}

#[async_trait]
impl EventStore for Recording {
    async fn append_multi(
        &self,
        requests: Vec<AppendRequest>,
    ) -> Result<Vec<AppendResult>, AppendError> {
        self.inner.append_multi(requests).await
    }
    async fn read_stream(
        &self,
        stream: &str,
        options: ReadStreamOptions,
    ) -> Result<Vec<RecordedEvent>, ReadError> {
        self.inner.read_stream(stream, options).await
    }
    async fn read_all(&self, options: ReadAllOptions) -> Result<Vec<RecordedEvent>, ReadError> {
        if !options.filter.is_empty() {
            let busy = self
                .busy_first
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
            if busy.is_ok() {
                return Err(ReadError::Busy {
                    running: 1,
                    waited: Duration::ZERO,
                });
            }
            let from = options.from.unwrap_or(Position::START);
            self.filtered_reads_from.lock().unwrap().push(from);
        }
        self.inner.read_all(options).await
    }
    async fn list_streams(
        &self,
        options: ListStreamsOptions,
    ) -> Result<Vec<StreamInfo>, ReadError> {
        self.inner.list_streams(options).await
    }
    async fn delete_stream(
        &self,
        stream: &str,
        expected: ExpectedRevision,
    ) -> Result<Position, AppendError> {
        self.inner.delete_stream(stream, expected).await
    }
    async fn tombstone_stream(
        &self,
        stream: &str,
        expected: ExpectedRevision,
    ) -> Result<Position, AppendError> {
        self.inner.tombstone_stream(stream, expected).await
    }
    fn watch_head(&self) -> watch::Receiver<Option<Position>> {
        self.inner.backend().watch_head()
    }
    async fn stats(&self) -> Result<StoreStats, ReadError> {
        self.inner.stats().await
    }
    fn limits(&self) -> &strata::Limits {
        self.inner.limits()
    }
}

#[tokio::test]
async fn a_filtered_subscription_moves_past_what_it_checked() {
    let engine = common::open(Arc::new(MemoryStorage::new()));
    let recording = Arc::new(Recording {
        inner: engine.clone(),
        filtered_reads_from: Mutex::new(Vec::new()),
        busy_first: AtomicU64::new(0),
    });
    let store = Store::from_backend(recording.clone());
    store
        .append("match-1", ExpectedRevision::NoStream, events(1))
        .await
        .unwrap();
    let mut subscription: Subscription =
        store.subscribe_all(SubscribeFrom::Start, Filter::new().stream_prefix("match-"));
    assert!(matches!(
        subscription.next().await.unwrap(),
        SubscriptionMessage::Event(event) if event.stream == "match-1"
    ));
    assert_eq!(
        subscription.next().await.unwrap(),
        SubscriptionMessage::CaughtUp
    );
    let (delivered, mut received) = tokio::sync::mpsc::unbounded_channel();
    let running = tokio::spawn(async move {
        loop {
            let event = subscription.next_event().await.unwrap();
            if delivered.send(event).is_err() {
                return;
            }
        }
    });
    let reads = || recording.filtered_reads_from.lock().unwrap().len();
    let mut unrelated = Vec::new();
    for i in 0..5 {
        let before = reads();
        let result = store
            .append(format!("other-{i}"), ExpectedRevision::Any, events(1))
            .await
            .unwrap();
        unrelated.push(result.positions[0]);
        eventually("the subscription has looked at the new event", || {
            reads() > before
        })
        .await;
    }
    let froms = recording.filtered_reads_from.lock().unwrap().clone();
    // The last read was woken by the last unrelated append: everything before it had
    // been checked by the reads woken by the earlier ones.
    let last_from = *froms.last().unwrap();
    assert!(
        last_from > unrelated[3],
        "the subscription read from {last_from:?} again after checking everything up to \
         {:?} (reads from: {froms:?})",
        unrelated[3]
    );
    store
        .append("match-2", ExpectedRevision::NoStream, events(1))
        .await
        .unwrap();
    let next = tokio::time::timeout(Duration::from_secs(10), received.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(next.stream, "match-2");
    running.abort();
}

/// A store of 100 events: `hit-N` at every tenth position (0, 10, …), `miss-N` between.
async fn sparse_hits() -> Store {
    let store = common::open(Arc::new(MemoryStorage::new()));
    for i in 0..100 {
        let stream = if i % 10 == 0 { "hit" } else { "miss" };
        store
            .append(
                format!("{stream}-{i}"),
                ExpectedRevision::NoStream,
                events(1),
            )
            .await
            .unwrap();
    }
    store
}

fn positions(events: &[RecordedEvent]) -> Vec<u64> {
    events.iter().map(|event| event.position.0).collect()
}

#[tokio::test]
async fn a_filtered_read_stops_at_its_budget_and_says_where_to_continue() {
    let store = sparse_hits().await;
    let hits = Filter::new().stream_prefix("hit-");
    let options = ReadAllOptions::forwards()
        .filter(hits.clone())
        .limit(100)
        .scan_budget(25);
    let page = store.read_all_page(options.clone()).await.unwrap();
    assert_eq!(positions(&page.events), [0, 10, 20]);
    assert_eq!(page.next, Some(Position(25)));
    assert_eq!(page.end, PageEnd::ScanBudget);
    // read_all cannot return a short page that is not the end: it fails, with the
    // events found and where to continue.
    match store.read_all(options.clone()).await {
        Err(ReadError::ScanBudgetSpent {
            budget: 25,
            found,
            next: Position(25),
        }) => assert_eq!(positions(&found), [0, 10, 20]),
        other => panic!("expected ScanBudgetSpent, got {other:?}"),
    }
    // Paging on from `next` finds every hit exactly once.
    let mut all = page.events;
    let mut next = page.next;
    loop {
        let page = store
            .read_all_page(options.clone().from_position(next.unwrap()))
            .await
            .unwrap();
        all.extend(page.events);
        next = page.next;
        if page.end == PageEnd::End {
            break;
        }
    }
    assert_eq!(positions(&all), (0..100).step_by(10).collect::<Vec<_>>());
    assert_eq!(
        next,
        Some(Position(100)),
        "the end: where the next event goes"
    );
    // A page that fills its limit says so, and continues after its last event.
    let page = store
        .read_all_page(ReadAllOptions::forwards().filter(hits.clone()).limit(2))
        .await
        .unwrap();
    assert_eq!((page.end, page.next), (PageEnd::Limit, Some(Position(11))));
    // Unfiltered reads return all they examine: the budget does not cut them.
    let everything = store
        .read_all(ReadAllOptions::forwards().scan_budget(1))
        .await
        .unwrap();
    assert_eq!(everything.len(), 100);
    // Backwards, page by page, the same hits newest first.
    let backwards = ReadAllOptions::backwards()
        .filter(hits)
        .limit(3)
        .scan_budget(1);
    let mut all = Vec::new();
    let mut from = None;
    loop {
        let mut options = backwards.clone();
        options.from = from;
        let page = store.read_all_page(options).await.unwrap();
        all.extend(page.events);
        if page.end == PageEnd::End {
            assert_eq!(page.next, None, "backwards, the end is position 0");
        }
        // `None`: position 0 was examined, nothing is left.
        let Some(next) = page.next else { break };
        from = Some(next);
    }
    let mut expected: Vec<u64> = (0..100).step_by(10).collect();
    expected.reverse();
    assert_eq!(positions(&all), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scans_over_the_limit_wait_then_fail_busy_and_a_dropped_scan_frees_its_slot() {
    let options = Options {
        scans_max: 1,
        scan_wait_max: Duration::from_millis(100),
        ..Options::small_for_tests()
    };
    let (storage, store) = slow_store(options).await;
    let engine = || store.embedded().unwrap();
    storage.inject(SLOW_READS);
    let nothing = || ReadAllOptions::forwards().filter(Filter::new().stream("no-such-stream"));
    let first = {
        let store = store.clone();
        tokio::spawn(async move { store.read_all(nothing()).await })
    };
    eventually("the first scan holds the slot", || {
        engine().scans_running() == 1
    })
    .await;
    match store.read_all(nothing()).await {
        Err(ReadError::Busy { running: 1, .. }) => {}
        other => panic!("expected Busy, got {other:?}"),
    }
    first.abort();
    eventually("the dropped scan has freed its slot", || {
        engine().scans_running() == 0
    })
    .await;
    storage.clear();
    let found = store.read_all(nothing()).await.unwrap();
    assert!(found.is_empty());
}

#[tokio::test]
async fn a_filtered_subscription_waits_out_a_busy_store() {
    let recording = Arc::new(Recording {
        inner: common::open(Arc::new(MemoryStorage::new())),
        filtered_reads_from: Mutex::new(Vec::new()),
        busy_first: AtomicU64::new(2),
    });
    let store = Store::from_backend(recording.clone());
    store
        .append("match-1", ExpectedRevision::NoStream, events(1))
        .await
        .unwrap();
    let mut subscription =
        store.subscribe_all(SubscribeFrom::Start, Filter::new().stream_prefix("match-"));
    let event = tokio::time::timeout(Duration::from_secs(10), subscription.next_event())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(event.stream, "match-1");
    assert_eq!(
        recording.busy_first.load(Ordering::SeqCst),
        0,
        "it was busy twice"
    );
}

#[tokio::test]
async fn a_pathological_pattern_spends_the_scan_budget_faster() {
    let store = common::open(Arc::new(MemoryStorage::new()));
    // Names on which `^(a+)+\1b` backtracks past its limit (2^40 ways to split them).
    for i in 0..30 {
        store
            .append(
                format!("{}{i}", "a".repeat(40)),
                ExpectedRevision::NoStream,
                events(1),
            )
            .await
            .unwrap();
    }
    let options = ReadAllOptions::forwards()
        .filter(Filter::new().stream_regex("^(a+)+\\1b").unwrap())
        .limit(100)
        .scan_budget(10 * strata::Pattern::OVERRUN_COST);
    let page = store.read_all_page(options).await.unwrap();
    assert!(page.events.is_empty());
    assert_eq!(
        (page.end, page.next),
        (PageEnd::ScanBudget, Some(Position(10))),
        "ten overruns spend a budget of ten overruns' worth"
    );
}
