//! Projections through the public API: sinks, runners, inline projections, emitted
//! events, rebuilds, read-your-writes, reconciliation and time travel.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use strata::projection::{
    partition_of_stream, project_as_of, rebuild, reconcile, replay_into, AsOf, DocumentTx,
    DurableSink, InlineAppendError, InlineStore, MemorySink, Projection, ProjectionError,
    ProjectionRunner, ReadModel, RebuildOptions, RunError, RunnerOptions, Sink, SinkError,
    UnknownEvents, WaitError,
};
use strata::{
    Durability, EventData, ExpectedRevision, Filter, Options, Position, ReadAllOptions,
    RecordedEvent, Store, StreamMetadata,
};
use tempfile::TempDir;
use uuid::Uuid;

/// Long enough never to be reached by a working test; only failures wait this long.
const PATIENCE: Duration = Duration::from_secs(20);

fn open(dir: &TempDir) -> Store {
    let options = Options {
        durability: Durability::NoSync,
        ..Options::small_for_tests()
    };
    Store::open_with(dir.path().join("log"), options).unwrap()
}

fn event(event_type: &str, n: u64) -> EventData {
    EventData::json(event_type, &json!({ "n": n })).unwrap()
}

/// Appends `count` events spread over `streams` streams `{category}-{i}`, a few per
/// append; returns the last position.
async fn fill(store: &Store, category: &str, streams: u64, count: u64) -> Position {
    let mut last = Position(0);
    let mut n = 0;
    while n < count {
        let stream = format!("{category}-{}", (n / 3) % streams);
        let batch: Vec<_> = (n..(n + 3).min(count)).map(|i| event("Added", i)).collect();
        n += batch.len() as u64;
        let result = store
            .append(stream, ExpectedRevision::Any, batch)
            .await
            .unwrap();
        last = result.last_position().unwrap();
    }
    last
}

/// Events per stream, as the log says (system events left out).
async fn log_counts(store: &Store, filter: Filter) -> BTreeMap<String, Value> {
    let events = store
        .read_all(ReadAllOptions::forwards().filter(filter))
        .await
        .unwrap();
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    for event in events {
        *counts.entry(event.stream).or_default() += 1;
    }
    counts.into_iter().map(|(k, v)| (k, json!(v))).collect()
}

/// Counts events per stream: applying an event twice or skipping one shows.
#[derive(Clone)]
struct Counts;

impl Projection for Counts {
    fn name(&self) -> &str {
        "counts"
    }

    fn handle(&self, event: &RecordedEvent, tx: &mut DocumentTx) -> Result<(), ProjectionError> {
        tx.update(&event.stream, |n: &mut u64| *n += 1)
    }

    fn partition_key(&self, event: &RecordedEvent) -> Option<u64> {
        Some(partition_of_stream(event))
    }
}

/// Wraps a sink and fails commits while `failing` is set.
#[derive(Clone)]
struct FlakySink {
    inner: MemorySink,
    commits: Arc<AtomicUsize>,
    fail_after: Arc<Mutex<Option<usize>>>,
}

impl FlakySink {
    fn new(inner: MemorySink, fail_after: Option<usize>) -> FlakySink {
        FlakySink {
            inner,
            commits: Arc::new(AtomicUsize::new(0)),
            fail_after: Arc::new(Mutex::new(fail_after)),
        }
    }
}

impl Sink for FlakySink {
    type Tx = DocumentTx;

    fn begin(&self, projection: &str) -> Result<DocumentTx, SinkError> {
        self.inner.begin(projection)
    }

    fn commit(
        &self,
        projection: &str,
        tx: DocumentTx,
        checkpoint: Option<Position>,
    ) -> Result<(), SinkError> {
        let done = self.commits.fetch_add(1, Ordering::SeqCst);
        if self.fail_after.lock().unwrap().is_some_and(|n| done >= n) {
            return Err(SinkError::Refused {
                reason: "injected failure".into(),
            });
        }
        self.inner.commit(projection, tx, checkpoint)
    }

    fn checkpoint(&self, projection: &str) -> Result<Option<Position>, SinkError> {
        self.inner.checkpoint(projection)
    }

    fn reset(&self, projection: &str) -> Result<(), SinkError> {
        self.inner.reset(projection)
    }
}

fn small_batches() -> RunnerOptions {
    RunnerOptions::default().batch_events(7).page_events(16)
}

#[tokio::test]
async fn sinks_commit_documents_with_their_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let durable = DurableSink::open(dir.path()).unwrap();
    let memory = MemorySink::new();
    fn exercise<S: Sink<Tx = DocumentTx> + ReadModel>(sink: &S) {
        assert_eq!(sink.checkpoint("p").unwrap(), None);
        let mut tx = sink.begin("p").unwrap();
        tx.put("a", json!({ "x": 1 }));
        tx.update("b", |n: &mut u64| *n += 5).unwrap();
        tx.put("gone", json!(0));
        tx.delete("gone");
        sink.commit("p", tx, Some(Position(3))).unwrap();
        // A dropped transaction changes nothing.
        let mut tx = sink.begin("p").unwrap();
        tx.put("a", json!("lost"));
        drop(tx);
        // A commit without a checkpoint keeps the old one.
        let mut tx = sink.begin("p").unwrap();
        assert_eq!(tx.get_as::<u64>("b").unwrap(), Some(5));
        tx.update("b", |n: &mut u64| *n += 1).unwrap();
        sink.commit("p", tx, None).unwrap();
        let snapshot = sink.snapshot("p").unwrap();
        assert_eq!(snapshot.checkpoint, Some(Position(3)));
        assert_eq!(
            snapshot.rows,
            BTreeMap::from([("a".into(), json!({ "x": 1 })), ("b".into(), json!(6))])
        );
        assert_eq!(sink.get("p", "a").unwrap(), Some(json!({ "x": 1 })));
        assert_eq!(sink.get("other", "a").unwrap(), None);
        sink.reset("p").unwrap();
        assert_eq!(sink.checkpoint("p").unwrap(), None);
        assert!(sink.snapshot("p").unwrap().rows.is_empty());
    }
    exercise(&memory);
    exercise(&durable);
    // The durable sink keeps what it committed across a reopen.
    let mut tx = durable.begin("q").unwrap();
    tx.put("k", json!([1, 2]));
    durable.commit("q", tx, Some(Position(9))).unwrap();
    drop(durable);
    let durable = DurableSink::open(dir.path()).unwrap();
    assert_eq!(
        durable.get_as::<Vec<u8>>("q", "k").unwrap(),
        Some(vec![1, 2])
    );
    assert_eq!(
        durable.checkpoints().unwrap(),
        vec![("q".into(), Position(9))]
    );
}

#[tokio::test]
async fn runner_follows_the_log_and_waits_for_positions() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    fill(&store, "cart", 5, 40).await;
    let sink = MemorySink::new();
    let runner = ProjectionRunner::start(store.clone(), Counts, sink.clone(), small_batches())
        .await
        .unwrap();
    let last = fill(&store, "cart", 7, 30).await;
    runner.wait_for(last, PATIENCE).await.unwrap();
    assert!(runner.position() >= Some(last));
    assert_eq!(runner.lag(), 0);
    assert_eq!(
        sink.scan("counts").unwrap(),
        log_counts(&store, Filter::new()).await
    );
    // Read-your-writes, one append at a time.
    for i in 0..5 {
        let appended = store
            .append("cart-x", ExpectedRevision::Any, vec![event("Added", i)])
            .await
            .unwrap();
        runner
            .wait_for(appended.positions[0], PATIENCE)
            .await
            .unwrap();
        assert_eq!(sink.get_as::<u64>("counts", "cart-x").unwrap(), Some(i + 1));
    }
    let report = runner.stop().await.unwrap();
    assert_eq!(report.counts.handled, 75);
    assert_eq!(report.checkpoint, store.head());
    assert_eq!(sink.checkpoint("counts").unwrap(), store.head());
}

#[tokio::test]
async fn wait_for_times_out_with_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let last = fill(&store, "cart", 2, 5).await;
    let runner = ProjectionRunner::start(store.clone(), Counts, MemorySink::new(), small_batches())
        .await
        .unwrap();
    runner.wait_for(last, PATIENCE).await.unwrap();
    let error = runner
        .wait_for(Position(1_000), Duration::from_millis(20))
        .await
        .unwrap_err();
    assert_eq!(
        error,
        WaitError::Timeout {
            position: Position(1_000),
            timeout: Duration::from_millis(20),
            reached: Some(last),
        }
    );
    runner.stop().await.unwrap();
}

/// Blocks in its handler while the test holds the gate.
struct Gated {
    gate: Arc<Mutex<()>>,
}

impl Projection for Gated {
    fn name(&self) -> &str {
        "gated"
    }

    fn handle(&self, event: &RecordedEvent, tx: &mut DocumentTx) -> Result<(), ProjectionError> {
        let _open = self.gate.lock().unwrap();
        tx.update(&event.stream, |n: &mut u64| *n += 1)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(
    clippy::await_holding_lock,
    reason = "the held lock is the gate that stalls the handler"
)]
async fn runner_reports_its_lag_and_position() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let gate = Arc::new(Mutex::new(()));
    let closed = gate.lock().unwrap();
    let last = fill(&store, "cart", 3, 10).await;
    let projection = Gated { gate: gate.clone() };
    let runner = ProjectionRunner::start(
        store.clone(),
        projection,
        MemorySink::new(),
        small_batches(),
    )
    .await
    .unwrap();
    let mut watch = runner.watch();
    assert_eq!(runner.position(), None);
    assert_eq!(runner.lag(), 10);
    drop(closed);
    runner.wait_for(last, PATIENCE).await.unwrap();
    assert_eq!(runner.lag(), 0);
    assert_eq!(*watch.borrow_and_update(), Some(last));
    let more = fill(&store, "cart", 3, 4).await;
    tokio::time::timeout(PATIENCE, watch.wait_for(|p| *p == Some(more)))
        .await
        .unwrap()
        .unwrap();
    runner.stop().await.unwrap();
}

#[tokio::test]
async fn a_failed_commit_applies_nothing_and_a_restart_applies_everything_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let last = fill(&store, "cart", 9, 200).await;
    let memory = MemorySink::new();
    // Commits 0, 1 and 2 succeed, the fourth fails mid-way through the backlog.
    let flaky = FlakySink::new(memory.clone(), Some(3));
    let runner = ProjectionRunner::start(store.clone(), Counts, flaky.clone(), small_batches())
        .await
        .unwrap();
    let stopped = runner.wait_for(last, PATIENCE).await.unwrap_err();
    assert!(matches!(stopped, WaitError::Stopped { .. }), "{stopped}");
    let error = runner.stop().await.unwrap_err();
    assert!(matches!(error, RunError::Sink { .. }), "{error}");
    let checkpoint = memory.checkpoint("counts").unwrap().unwrap();
    assert!(checkpoint < last);
    // The sink holds exactly the events up to its checkpoint.
    let upto = store
        .read_all(ReadAllOptions::forwards().limit(checkpoint.0 as usize + 1))
        .await
        .unwrap();
    let total: u64 = memory
        .scan("counts")
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(total, upto.len() as u64);
    // Resume: every event applied exactly once.
    *flaky.fail_after.lock().unwrap() = None;
    let runner = ProjectionRunner::start(store.clone(), Counts, flaky, small_batches())
        .await
        .unwrap();
    runner.wait_for(last, PATIENCE).await.unwrap();
    let report = runner.stop().await.unwrap();
    assert_eq!(report.counts.handled, last.0 - checkpoint.0);
    assert_eq!(
        memory.scan("counts").unwrap(),
        log_counts(&store, Filter::new()).await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runners_stopped_between_batches_resume_without_gaps_or_repeats() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let sink = MemorySink::new();
    let mut last = Position(0);
    for round in 0..6u64 {
        let middle = fill(&store, &format!("s{round}"), 4, 30).await;
        last = fill(&store, &format!("t{round}"), 4, 30).await;
        let runner = ProjectionRunner::start(store.clone(), Counts, sink.clone(), small_batches())
            .await
            .unwrap();
        // Stop somewhere in the backlog: what the runner did is committed with its
        // checkpoint, the rest is left for the next one.
        if round % 2 == 0 {
            runner.wait_for(middle, PATIENCE).await.unwrap();
        }
        runner.stop().await.unwrap();
        let checkpoint = sink.checkpoint("counts").unwrap();
        let upto = match checkpoint {
            Some(c) => store
                .read_all(ReadAllOptions::forwards().limit(c.0 as usize + 1))
                .await
                .unwrap()
                .len(),
            None => 0,
        };
        let total: u64 = sink
            .scan("counts")
            .unwrap()
            .values()
            .map(|v| v.as_u64().unwrap())
            .sum();
        assert_eq!(total, upto as u64, "output matches the checkpoint");
    }
    let runner = ProjectionRunner::start(store.clone(), Counts, sink.clone(), small_batches())
        .await
        .unwrap();
    runner.wait_for(last, PATIENCE).await.unwrap();
    runner.stop().await.unwrap();
    assert_eq!(
        sink.scan("counts").unwrap(),
        log_counts(&store, Filter::new()).await
    );
}

#[tokio::test]
async fn durable_runner_resumes_after_reopening_store_and_sink() {
    let dir = tempfile::tempdir().unwrap();
    let sink_dir = dir.path().join("read-models");
    let first = {
        let store = open(&dir);
        let last = fill(&store, "cart", 6, 100).await;
        let sink = DurableSink::open(&sink_dir).unwrap();
        let runner = ProjectionRunner::start(store.clone(), Counts, sink, small_batches())
            .await
            .unwrap();
        runner.wait_for(last, PATIENCE).await.unwrap();
        runner.stop().await.unwrap();
        store.close().await.unwrap();
        last
    };
    let store = open(&dir);
    let sink = DurableSink::open(&sink_dir).unwrap();
    assert_eq!(sink.checkpoint("counts").unwrap(), Some(first));
    let last = fill(&store, "cart", 6, 50).await;
    let runner = ProjectionRunner::start(store.clone(), Counts, sink.clone(), small_batches())
        .await
        .unwrap();
    runner.wait_for(last, PATIENCE).await.unwrap();
    let report = runner.stop().await.unwrap();
    assert_eq!(report.counts.handled, 50, "resumed after the checkpoint");
    assert_eq!(
        sink.scan("counts").unwrap(),
        log_counts(&store, Filter::new()).await
    );
}

/// Rejects events of type `Poison`.
struct Picky;

impl Projection for Picky {
    fn name(&self) -> &str {
        "picky"
    }

    fn handle(&self, event: &RecordedEvent, tx: &mut DocumentTx) -> Result<(), ProjectionError> {
        if event.event_type == "Poison" {
            return Err(ProjectionError::rejected("poison"));
        }
        tx.update(&event.stream, |n: &mut u64| *n += 1)
    }
}

#[tokio::test]
async fn a_failing_handler_stops_the_runner_before_the_event() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    fill(&store, "cart", 3, 20).await;
    let poison = store
        .append("cart-0", ExpectedRevision::Any, vec![event("Poison", 0)])
        .await
        .unwrap()
        .positions[0];
    fill(&store, "cart", 3, 5).await;
    let sink = MemorySink::new();
    let runner = ProjectionRunner::start(store.clone(), Picky, sink.clone(), small_batches())
        .await
        .unwrap();
    let error = runner.wait_for(poison, PATIENCE).await.unwrap_err();
    assert!(
        matches!(
            error,
            WaitError::Stopped {
                reason: Some(_),
                ..
            }
        ),
        "{error}"
    );
    assert!(runner.position() < Some(poison));
    match runner.stop().await.unwrap_err() {
        RunError::Handler { position, .. } => assert_eq!(position, poison),
        other => panic!("unexpected {other}"),
    }
    assert!(sink.checkpoint("picky").unwrap() < Some(poison));
}

#[tokio::test]
async fn inline_projections_are_consistent_with_the_append() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let memory = MemorySink::new();
    let durable = DurableSink::open(dir.path().join("rm")).unwrap();
    let inline = InlineStore::builder(store.clone())
        .projection(Counts, memory.clone())
        .projection(Picky, durable.clone())
        .open()
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for writer in 0..8u64 {
        let inline = inline.clone();
        let memory = memory.clone();
        let durable = durable.clone();
        tasks.push(tokio::spawn(async move {
            let stream = format!("cart-{writer}");
            for i in 0..10u64 {
                let result = inline
                    .append(
                        stream.clone(),
                        ExpectedRevision::Any,
                        vec![event("Added", i)],
                    )
                    .await
                    .unwrap();
                assert!(inline.position() >= result.last_position());
                // The append's effect is visible as soon as it returns.
                assert_eq!(
                    memory.get_as::<u64>("counts", &stream).unwrap(),
                    Some(i + 1)
                );
                assert_eq!(
                    durable.get_as::<u64>("picky", &stream).unwrap(),
                    Some(i + 1)
                );
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(
        memory.scan("counts").unwrap(),
        log_counts(&store, Filter::new()).await
    );
    assert_eq!(inline.position(), store.head());
}

#[tokio::test]
async fn inline_store_repairs_a_crash_between_append_and_projection_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let sink = DurableSink::open(dir.path().join("rm")).unwrap();
    {
        let inline = InlineStore::builder(store.clone())
            .projection(Counts, sink.clone())
            .open()
            .await
            .unwrap();
        inline
            .append("cart-1", ExpectedRevision::Any, vec![event("Added", 1)])
            .await
            .unwrap();
    }
    // Appended, then "crashed" before the projection ran.
    let last = fill(&store, "cart", 3, 12).await;
    assert_ne!(sink.checkpoint("counts").unwrap(), Some(last));
    let inline = InlineStore::builder(store.clone())
        .projection(Counts, sink.clone())
        .open()
        .await
        .unwrap();
    assert_eq!(inline.position(), Some(last));
    assert_eq!(
        sink.scan("counts").unwrap(),
        log_counts(&store, Filter::new()).await
    );
    inline.wait_for(last, PATIENCE).await.unwrap();
    let timeout = inline
        .wait_for(Position(last.0 + 100), Duration::from_millis(10))
        .await;
    assert!(matches!(timeout, Err(WaitError::Timeout { .. })));
}

#[tokio::test]
async fn inline_failure_reports_the_recorded_append() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let sink = MemorySink::new();
    let inline = InlineStore::builder(store.clone())
        .projection(Picky, sink.clone())
        .open()
        .await
        .unwrap();
    let error = inline
        .append("cart-1", ExpectedRevision::Any, vec![event("Poison", 1)])
        .await
        .unwrap_err();
    let InlineAppendError::Projection { results, source } = error else {
        panic!("expected a projection failure");
    };
    assert!(matches!(source, RunError::Handler { .. }));
    let recorded = store
        .read_stream("cart-1", strata::ReadStreamOptions::forwards())
        .await
        .unwrap();
    assert_eq!(recorded[0].position, results[0].positions[0]);
    // Nothing else is wrong: a plain append still fails on the poison event first.
    assert!(inline
        .append("cart-2", ExpectedRevision::Any, vec![event("Added", 1)])
        .await
        .is_err());
    assert_eq!(sink.checkpoint("picky").unwrap(), None);
}

/// A process manager: each order placed emits a reservation to a stock stream.
struct Reservations;

impl Projection for Reservations {
    fn name(&self) -> &str {
        "reservations"
    }

    fn filter(&self) -> Filter {
        Filter::new().category("order")
    }

    fn handle(&self, event: &RecordedEvent, tx: &mut DocumentTx) -> Result<(), ProjectionError> {
        if event.event_type != "Placed" {
            return Err(ProjectionError::unknown(event));
        }
        let order: Value = event.json()?;
        tx.update("placed", |n: &mut u64| *n += 1)?;
        tx.emit(
            format!("stock-{}", order["sku"].as_str().unwrap_or("none")),
            EventData::json("Reserve", &json!({ "order": event.stream }))?,
        )?;
        tx.emit(
            "audit",
            EventData::json("Seen", &json!({ "order": event.stream }))?,
        )
    }
}

async fn emitted(store: &Store) -> Vec<RecordedEvent> {
    store
        .read_all(
            ReadAllOptions::forwards()
                .filter(Filter::new().event_type("Reserve").event_type("Seen")),
        )
        .await
        .unwrap()
}

#[tokio::test]
async fn emitted_events_carry_causation_and_are_not_repeated_on_replay() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let correlation = Uuid::new_v4().to_string();
    let mut placed = Vec::new();
    for i in 0..6u64 {
        let mut order =
            EventData::json("Placed", &json!({ "sku": format!("s{}", i % 2) })).unwrap();
        if i == 0 {
            order = order.with_metadata(
                serde_json::to_vec(&json!({ "correlation_id": correlation })).unwrap(),
            );
        }
        let shipped = event("Shipped", i);
        let result = store
            .append(
                format!("order-{i}"),
                ExpectedRevision::NoStream,
                vec![order, shipped],
            )
            .await
            .unwrap();
        placed.push(result.positions[0]);
    }
    let memory = MemorySink::new();
    // The first commit fails after the emitted events were appended: a crash between the
    // two. The restarted runner handles the same events and re-sends the same appends.
    let flaky = FlakySink::new(memory.clone(), Some(0));
    let runner = ProjectionRunner::start(
        store.clone(),
        Reservations,
        flaky.clone(),
        RunnerOptions::default(),
    )
    .await
    .unwrap();
    let head = store.head().unwrap();
    assert!(runner.wait_for(head, PATIENCE).await.is_err());
    assert!(runner.stop().await.is_err());
    assert_eq!(emitted(&store).await.len(), 12);
    *flaky.fail_after.lock().unwrap() = None;
    let runner =
        ProjectionRunner::start(store.clone(), Reservations, flaky, RunnerOptions::default())
            .await
            .unwrap();
    runner.wait_for(head, PATIENCE).await.unwrap();
    let report = runner.stop().await.unwrap();
    assert_eq!(report.counts.handled, 6);
    assert_eq!(report.counts.skipped, 6, "Shipped is unknown and skipped");
    let events = emitted(&store).await;
    assert_eq!(events.len(), 12, "no duplicates");
    assert_eq!(
        memory.get_as::<u64>("reservations", "placed").unwrap(),
        Some(6)
    );
    let orders = store
        .read_all(ReadAllOptions::forwards().filter(Filter::new().event_type("Placed")))
        .await
        .unwrap();
    for order in &orders {
        let caused: Vec<_> = events
            .iter()
            .filter(|e| {
                let meta: Value = serde_json::from_slice(&e.metadata).unwrap();
                meta["causation_id"] == json!(order.id.to_string())
            })
            .collect();
        assert_eq!(caused.len(), 2);
        for e in caused {
            let meta: Value = serde_json::from_slice(&e.metadata).unwrap();
            let expected = if order.position == placed[0] {
                correlation.clone()
            } else {
                order.id.to_string()
            };
            assert_eq!(meta["correlation_id"], json!(expected));
        }
    }
    // A rebuild replays history without emitting again.
    rebuild(
        &store,
        Reservations,
        memory.clone(),
        RebuildOptions::serial(),
        |_| {},
    )
    .await
    .unwrap();
    assert_eq!(emitted(&store).await.len(), 12);
    assert_eq!(
        memory.get_as::<u64>("reservations", "placed").unwrap(),
        Some(6)
    );
}

/// A read model whose documents depend on the order of events within a stream, plus
/// `Global` events with no partition that read a partition's output (barriers).
struct Ordered;

impl Projection for Ordered {
    fn name(&self) -> &str {
        "ordered"
    }

    fn handle(&self, event: &RecordedEvent, tx: &mut DocumentTx) -> Result<(), ProjectionError> {
        let n = event.json::<Value>()?["n"].as_u64().unwrap_or(0);
        if event.event_type == "Poison" {
            return Err(ProjectionError::rejected("poison"));
        }
        if event.event_type == "Panic" {
            panic!("a handler bug");
        }
        if event.event_type == "Global" {
            let seen = tx.get("chain-0")?.cloned().unwrap_or(Value::Null);
            return tx.update("global", |log: &mut Vec<Value>| log.push(json!([n, seen])));
        }
        let key = format!(
            "chain-{}",
            &event.stream[event.stream.find('-').unwrap() + 1..]
        );
        tx.update(&key, |chain: &mut String| {
            // Order-sensitive: a running hash of the sequence.
            let mut hash = chain.len() as u64;
            for b in chain.bytes() {
                hash = hash.wrapping_mul(31).wrapping_add(u64::from(b));
            }
            *chain = format!("{:x}", hash.wrapping_mul(131).wrapping_add(n));
        })
    }

    fn partition_key(&self, event: &RecordedEvent) -> Option<u64> {
        (event.event_type != "Global").then(|| partition_of_stream(event))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_rebuild_gives_exactly_the_serial_output() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    for round in 0..20u64 {
        fill(&store, "item", 13, 60).await;
        store
            .append(
                "global",
                ExpectedRevision::Any,
                vec![event("Global", round)],
            )
            .await
            .unwrap();
    }
    let head = store.head();
    let serial = MemorySink::new();
    let mut reported = None;
    let report = rebuild(
        &store,
        Ordered,
        serial.clone(),
        RebuildOptions::serial(),
        |p| {
            assert_eq!(p.target, head);
            reported = p.position;
        },
    )
    .await
    .unwrap();
    assert_eq!(reported, head, "the last progress report is the end");
    assert_eq!(report.checkpoint, head);
    assert_eq!(report.counts.handled, 1220);
    // The same backend behind the generic interface: read in pages and dealt to workers.
    let generic = Store::from_backend(store.backend().clone());
    let cases = [
        (&store, 2, 5, 50),
        (&store, 4, 64, 7),
        (&store, 3, 100_000, 1 << 20),
        (&generic, 2, 5, 0),
        (&generic, 3, 64, 0),
    ];
    for (index, (store, parallelism, batch, block)) in cases.into_iter().enumerate() {
        let options = RebuildOptions::default()
            .parallelism(parallelism)
            .batch_events(batch)
            .page_events(97)
            .block_events(block);
        let memory = MemorySink::new();
        let mut last = None;
        let report = rebuild(store, Ordered, memory.clone(), options.clone(), |p| {
            last = p.position
        })
        .await
        .unwrap();
        assert_eq!(last, head);
        assert_eq!(report.parallelism, parallelism);
        assert_eq!(report.counts.handled, 1220);
        assert_eq!(
            memory.snapshot("ordered").unwrap(),
            serial.snapshot("ordered").unwrap()
        );
        let durable = DurableSink::open(dir.path().join(format!("rm-{index}"))).unwrap();
        rebuild(store, Ordered, durable.clone(), options, |_| {})
            .await
            .unwrap();
        assert_eq!(
            durable.snapshot("ordered").unwrap(),
            serial.snapshot("ordered").unwrap()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_rebuild_reports_the_failing_event() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    for round in 0..10u64 {
        fill(&store, "item", 13, 40).await;
        store
            .append(
                "global",
                ExpectedRevision::Any,
                vec![event("Global", round)],
            )
            .await
            .unwrap();
    }
    let poison = store
        .append("item-3", ExpectedRevision::Any, vec![event("Poison", 0)])
        .await
        .unwrap()
        .positions[0];
    fill(&store, "item", 13, 40).await;
    store
        .append("global", ExpectedRevision::Any, vec![event("Global", 99)])
        .await
        .unwrap();
    let generic = Store::from_backend(store.backend().clone());
    for (store, parallelism) in [(&store, 2), (&store, 3), (&generic, 3), (&store, 1)] {
        let options = RebuildOptions::default()
            .parallelism(parallelism)
            .block_events(11)
            .batch_events(4);
        let sink = MemorySink::new();
        let error = rebuild(store, Ordered, sink.clone(), options, |_| {})
            .await
            .unwrap_err();
        match error {
            RunError::Handler { position, .. } => assert_eq!(position, poison),
            other => panic!("unexpected {other}"),
        }
        if parallelism > 1 {
            // Output without a checkpoint: cleared by whatever starts next.
            assert_eq!(sink.checkpoint("ordered").unwrap(), None);
        } else {
            assert!(sink.checkpoint("ordered").unwrap() < Some(poison));
        }
    }
    // A panicking handler stops the rebuild with an error; no thread is left waiting.
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    fill(&store, "item", 13, 100).await;
    store
        .append("item-5", ExpectedRevision::Any, vec![event("Panic", 0)])
        .await
        .unwrap();
    for round in 0..3 {
        fill(&store, "item", 13, 40).await;
        let global = vec![event("Global", round)];
        store
            .append("global", ExpectedRevision::Any, global)
            .await
            .unwrap();
    }
    for parallelism in [2, 3] {
        let options = RebuildOptions::default()
            .parallelism(parallelism)
            .block_events(11);
        let error = rebuild(&store, Ordered, MemorySink::new(), options, |_| {})
            .await
            .unwrap_err();
        assert!(matches!(error, RunError::Worker { .. }), "{error}");
    }
}

#[tokio::test]
async fn output_left_without_a_checkpoint_is_cleared_before_starting() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let last = fill(&store, "cart", 3, 20).await;
    let sink = MemorySink::new();
    // What an interrupted parallel rebuild leaves: output, no checkpoint.
    let mut tx = sink.begin("counts").unwrap();
    tx.put("cart-0", json!(1000));
    tx.put("junk", json!(true));
    sink.commit("counts", tx, None).unwrap();
    let runner = ProjectionRunner::start(store.clone(), Counts, sink.clone(), small_batches())
        .await
        .unwrap();
    runner.wait_for(last, PATIENCE).await.unwrap();
    runner.stop().await.unwrap();
    assert_eq!(
        sink.scan("counts").unwrap(),
        log_counts(&store, Filter::new()).await
    );
    // A checkpoint past the end of the log: the read model belongs to another log.
    let mut tx = sink.begin("counts").unwrap();
    tx.put("x", json!(1));
    sink.commit("counts", tx, Some(Position(last.0 + 50)))
        .unwrap();
    let error = ProjectionRunner::start(store.clone(), Counts, sink.clone(), small_batches())
        .await
        .unwrap_err();
    assert!(matches!(error, RunError::CheckpointAhead { .. }), "{error}");
}

#[tokio::test]
async fn reconciliation_finds_tampered_keys() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let last = fill(&store, "cart", 5, 40).await;
    let sink = DurableSink::open(dir.path().join("rm")).unwrap();
    let runner = ProjectionRunner::start(store.clone(), Counts, sink.clone(), small_batches())
        .await
        .unwrap();
    runner.wait_for(last, PATIENCE).await.unwrap();
    runner.stop().await.unwrap();
    let clean = reconcile(&store, Counts, &sink).await.unwrap();
    assert!(clean.is_consistent(), "{clean:?}");
    assert_eq!(clean.checkpoint, Some(last));
    let mut tx = sink.begin("counts").unwrap();
    tx.put("cart-1", json!(999));
    tx.delete("cart-2");
    tx.put("cart-99", json!(1));
    sink.commit("counts", tx, None).unwrap();
    let report = reconcile(&store, Counts, &sink).await.unwrap();
    assert!(!report.is_consistent());
    assert_eq!(report.missing, vec!["cart-2".to_string()]);
    assert_eq!(report.extra, vec!["cart-99".to_string()]);
    assert_eq!(report.different.len(), 1);
    assert_eq!(report.different[0].key, "cart-1");
    assert_eq!(report.different[0].live, json!(999));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_travel_as_of_a_position_and_an_instant() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let middle = fill(&store, "cart", 4, 300).await;
    fill(&store, "cart", 6, 300).await;
    let all = store.read_all(ReadAllOptions::forwards()).await.unwrap();
    let expected = |keep: &dyn Fn(&RecordedEvent) -> bool| {
        let mut counts: BTreeMap<String, u64> = BTreeMap::new();
        for event in all.iter().filter(|e| keep(e)) {
            *counts.entry(event.stream.clone()).or_default() += 1;
        }
        counts
            .into_iter()
            .map(|(k, v)| (k, json!(v)))
            .collect::<BTreeMap<_, _>>()
    };
    let then = project_as_of(&store, Counts, AsOf::Position(middle))
        .await
        .unwrap();
    assert_eq!(then.checkpoint, Some(middle));
    assert_eq!(then.rows, expected(&|e| e.position <= middle));
    let instant = all[400].recorded_at;
    let then = project_as_of(&store, Counts, AsOf::Time(instant))
        .await
        .unwrap();
    assert_eq!(then.rows, expected(&|e| e.recorded_at <= instant));
    let last_then = all.iter().rfind(|e| e.recorded_at <= instant).unwrap();
    assert_eq!(then.checkpoint, Some(last_then.position));
    let zero = AsOf::Time(strata::Timestamp::from_micros(0));
    let before = project_as_of(&store, Counts, zero).await.unwrap();
    assert!(before.rows.is_empty());
    assert_eq!(before.checkpoint, None);
    let now = project_as_of(&store, Counts, AsOf::Position(Position(u64::MAX)))
        .await
        .unwrap();
    assert_eq!(now.rows, expected(&|_| true));
    // The same in parallel over many blocks, and on a backend read in pages.
    let generic = Store::from_backend(store.backend().clone());
    for (store, parallelism) in [(&store, 3), (&generic, 2), (&generic, 1), (&store, 1)] {
        let options = RebuildOptions::default()
            .parallelism(parallelism)
            .block_events(37)
            .page_events(50);
        for (as_of, keep) in [
            (
                AsOf::Position(middle),
                &(|e: &RecordedEvent| e.position <= middle) as &dyn Fn(&RecordedEvent) -> bool,
            ),
            (AsOf::Time(instant), &|e: &RecordedEvent| {
                e.recorded_at <= instant
            }),
        ] {
            let sink = MemorySink::new();
            replay_into(store, Counts, sink.clone(), Some(as_of), options.clone())
                .await
                .unwrap();
            assert_eq!(sink.scan("counts").unwrap(), expected(keep), "{as_of:?}");
        }
    }
}

/// Handles `Added` in carts only; says so for everything else.
struct CartsOnly {
    unknown: UnknownEvents,
}

impl Projection for CartsOnly {
    fn name(&self) -> &str {
        "carts"
    }

    fn filter(&self) -> Filter {
        Filter::new().category("cart").exclude_system_events()
    }

    fn handle(&self, event: &RecordedEvent, tx: &mut DocumentTx) -> Result<(), ProjectionError> {
        match event.event_type.as_str() {
            "Added" => tx.update(&event.stream, |n: &mut u64| *n += 1),
            _ => Err(ProjectionError::unknown(event)),
        }
    }

    fn unknown_events(&self) -> UnknownEvents {
        self.unknown
    }
}

#[tokio::test]
async fn filters_and_unknown_event_types() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    fill(&store, "cart", 2, 10).await;
    fill(&store, "order", 2, 10).await;
    let renamed = store
        .append("cart-0", ExpectedRevision::Any, vec![event("Renamed", 0)])
        .await
        .unwrap()
        .positions[0];
    store
        .set_stream_metadata("cart-1", ExpectedRevision::Any, &StreamMetadata::default())
        .await
        .unwrap();
    let last = fill(&store, "order", 2, 5).await;
    let sink = MemorySink::new();
    let runner = ProjectionRunner::start(
        store.clone(),
        CartsOnly {
            unknown: UnknownEvents::Skip,
        },
        sink.clone(),
        small_batches(),
    )
    .await
    .unwrap();
    // Waiting for a position outside the filter works: the runner scanned past it.
    runner.wait_for(last, PATIENCE).await.unwrap();
    let report = runner.stop().await.unwrap();
    assert_eq!(report.counts.handled, 10);
    assert_eq!(report.counts.skipped, 1);
    assert_eq!(
        sink.scan("carts").unwrap(),
        BTreeMap::from([("cart-0".into(), json!(6)), ("cart-1".into(), json!(4))])
    );
    let strict = CartsOnly {
        unknown: UnknownEvents::Fail,
    };
    let error = rebuild(
        &store,
        strict,
        MemorySink::new(),
        RebuildOptions::serial(),
        |_| {},
    )
    .await
    .unwrap_err();
    match error {
        RunError::Handler {
            position, source, ..
        } => {
            assert_eq!(position, renamed);
            assert!(matches!(*source, ProjectionError::UnknownEventType { .. }));
        }
        other => panic!("unexpected {other}"),
    }
}
