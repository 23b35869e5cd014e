//! `$maxAge` over a long run of expired events: reads and subscriptions skip them
//! without recursing or reading them (issue 11: one HTTP read of a stream with 60 000
//! expired events overflowed the server's stack, one recursion per page of them).
#![allow(clippy::unwrap_used)]

use std::fmt::Debug;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use strata::engine::io::{MemoryStorage, Storage, StorageFile};
use strata::{
    Engine, EventData, ExpectedRevision, Options, ReadStreamOptions, Store, StreamMetadata,
    SubscribeFrom, SubscriptionMessage,
};

/// A storage that counts the reads of its files, so a test can bound how much a read
/// touches.
#[derive(Debug)]
struct CountingStorage {
    inner: MemoryStorage,
    reads: Arc<AtomicU64>,
}

#[derive(Debug)]
struct CountingFile {
    inner: Arc<dyn StorageFile>,
    reads: Arc<AtomicU64>,
}

impl CountingStorage {
    fn wrap(&self, file: Arc<dyn StorageFile>) -> Arc<dyn StorageFile> {
        Arc::new(CountingFile {
            inner: file,
            reads: self.reads.clone(),
        })
    }
}

impl Storage for CountingStorage {
    fn list(&self) -> io::Result<Vec<String>> {
        self.inner.list()
    }
    fn open(&self, name: &str) -> io::Result<Arc<dyn StorageFile>> {
        self.inner.open(name).map(|file| self.wrap(file))
    }
    fn create(&self, name: &str) -> io::Result<Arc<dyn StorageFile>> {
        self.inner.create(name).map(|file| self.wrap(file))
    }
    fn remove(&self, name: &str) -> io::Result<()> {
        self.inner.remove(name)
    }
    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        self.inner.rename(from, to)
    }
    fn sync_dir(&self) -> io::Result<()> {
        self.inner.sync_dir()
    }
    fn lock(&self) -> io::Result<Box<dyn Send + Sync + Debug>> {
        self.inner.lock()
    }
    fn describe(&self) -> String {
        self.inner.describe()
    }
}

impl StorageFile for CountingFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        self.inner.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.inner.write_at(buf, offset)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.inner.sync_data()
    }
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.inner.set_len(len)
    }
}

/// Expired events before the live ones: enough that reading (or recursing over) them
/// one page at a time is unmistakable.
const EXPIRED: u64 = 60_000;

/// Most file reads one bounded read may make: a binary search over the revisions reads
/// one record per probe (17 for 60 000 events), then the page itself. Reading the
/// expired events would take well over a thousand.
const READS_MAX: u64 = 100;

fn small_events(n: usize) -> Vec<EventData> {
    (0..n)
        .map(|i| EventData::json("Tested", &serde_json::json!({ "i": i })).unwrap())
        .collect()
}

#[tokio::test]
async fn reads_and_subscriptions_skip_many_expired_events_without_reading_them() {
    let reads = Arc::new(AtomicU64::new(0));
    let storage = CountingStorage {
        inner: MemoryStorage::new(),
        reads: reads.clone(),
    };
    let store =
        Store::from_engine(Engine::open_storage(Arc::new(storage), Options::default()).unwrap());
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
        reads.store(0, Ordering::Relaxed);
        let mut options = ReadStreamOptions::forwards().limit(1);
        options.from = from;
        let page = store.read_stream(stream, options).await.unwrap();
        assert_eq!(revisions(&page), vec![EXPIRED], "forwards from {from:?}");
        let used = reads.load(Ordering::Relaxed);
        assert!(
            used <= READS_MAX,
            "forwards from {from:?} made {used} reads"
        );
    }
    // A page larger than the live events, and an unbounded (paged) read.
    for limit in [512, usize::MAX] {
        reads.store(0, Ordering::Relaxed);
        let page = store
            .read_stream(stream, ReadStreamOptions::forwards().limit(limit))
            .await
            .unwrap();
        assert_eq!(revisions(&page), live, "forwards, limit {limit}");
        assert!(reads.load(Ordering::Relaxed) <= READS_MAX);
    }
    // Backwards: from the end, and from an expired revision (nothing there).
    reads.store(0, Ordering::Relaxed);
    let back = store
        .read_stream(stream, ReadStreamOptions::backwards())
        .await
        .unwrap();
    assert_eq!(
        revisions(&back),
        live.iter().rev().copied().collect::<Vec<_>>()
    );
    assert!(reads.load(Ordering::Relaxed) <= READS_MAX);
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
    reads.store(0, Ordering::Relaxed);
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
    assert!(reads.load(Ordering::Relaxed) <= READS_MAX);

    // Catch-up subscriptions from the start and from inside the expired run.
    for from in [SubscribeFrom::Start, SubscribeFrom::After(10)] {
        reads.store(0, Ordering::Relaxed);
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
        assert!(reads.load(Ordering::Relaxed) <= READS_MAX);
    }
}
