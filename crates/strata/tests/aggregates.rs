//! The model layer through its public API: command handling, dry runs, metadata,
//! idempotent commands, snapshots, upcasting and time travel.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::json;
use strata::model::{
    fields, AsOf, CommandContext, FileSnapshots, HandleError, MemorySnapshots, ModelError,
    Repository, RepositoryConfig, SnapshotStore, SnapshotUse, Upcasters, Versioned,
};
use strata::model::{Aggregate, Snapshot};
use strata::{EventData, ExpectedRevision, Position, ReadStreamOptions, Store, Timestamp};
use uuid::Uuid;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct Counter {
    total: u64,
    history: Vec<u64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
enum CounterEvent {
    Added { n: u64 },
    Reset,
}

#[derive(Clone, Debug, PartialEq)]
enum CounterCommand {
    Add(u64),
    AddTwice(u64),
    TakeAll,
}

#[derive(Debug, PartialEq, thiserror::Error)]
enum CounterError {
    #[error("nothing to take")]
    Empty,
}

impl Aggregate for Counter {
    type Event = CounterEvent;
    type Command = CounterCommand;
    type Error = CounterError;
    const CATEGORY: &'static str = "counter";

    fn apply(&mut self, event: &CounterEvent) {
        match event {
            CounterEvent::Added { n } => {
                self.total += n;
                self.history.push(*n);
            }
            CounterEvent::Reset => self.total = 0,
        }
    }

    fn decide(&self, command: &CounterCommand) -> Result<Vec<CounterEvent>, CounterError> {
        match command {
            CounterCommand::Add(0) => Ok(vec![]),
            CounterCommand::Add(n) => Ok(vec![CounterEvent::Added { n: *n }]),
            CounterCommand::AddTwice(n) => Ok(vec![
                CounterEvent::Added { n: *n },
                CounterEvent::Added { n: *n },
            ]),
            CounterCommand::TakeAll if self.total == 0 => Err(CounterError::Empty),
            CounterCommand::TakeAll => Ok(vec![CounterEvent::Reset]),
        }
    }
}

/// The same aggregate after a change of its state's shape.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct CounterV2 {
    sum: u64,
}

impl Aggregate for CounterV2 {
    type Event = CounterEvent;
    type Command = CounterCommand;
    type Error = CounterError;
    const CATEGORY: &'static str = "counter";
    const STATE_VERSION: u32 = 2;

    fn apply(&mut self, event: &CounterEvent) {
        match event {
            CounterEvent::Added { n } => self.sum += n,
            CounterEvent::Reset => self.sum = 0,
        }
    }

    fn decide(&self, _: &CounterCommand) -> Result<Vec<CounterEvent>, CounterError> {
        Ok(vec![])
    }
}

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("log")).unwrap();
    (dir, store)
}

async fn stream_len(store: &Store, stream: &str) -> usize {
    store
        .read_stream(stream, ReadStreamOptions::forwards())
        .await
        .map(|e| e.len())
        .unwrap_or(0)
}

#[tokio::test]
async fn commands_append_and_refusals_write_nothing() {
    let (_dir, store) = store();
    let counters = Repository::<Counter>::new(store.clone());
    let ctx = CommandContext::new();
    match counters.handle("a", &CounterCommand::TakeAll, &ctx).await {
        Err(HandleError::Domain(CounterError::Empty)) => {}
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(stream_len(&store, "counter-a").await, 0);
    let handled = counters
        .handle("a", &CounterCommand::AddTwice(3), &ctx)
        .await
        .unwrap();
    assert_eq!(handled.state.total, 6);
    assert_eq!(handled.result.as_ref().unwrap().first_revision, 0);
    let none = counters
        .handle("a", &CounterCommand::Add(0), &ctx)
        .await
        .unwrap();
    assert!(none.events.is_empty() && none.result.is_none());
    assert_eq!(stream_len(&store, "counter-a").await, 2);
    let loaded = counters.load("a").await.unwrap();
    assert_eq!(
        (loaded.state.total, loaded.revision, loaded.events_read),
        (6, Some(1), 2)
    );
}

#[tokio::test]
async fn dry_run_shows_the_outcome_and_writes_nothing() {
    let (_dir, store) = store();
    let counters = Repository::<Counter>::new(store.clone());
    counters
        .handle("d", &CounterCommand::Add(5), &CommandContext::new())
        .await
        .unwrap();
    let dry = counters
        .dry_run("d", &CounterCommand::AddTwice(1))
        .await
        .unwrap();
    assert_eq!(dry.events.len(), 2);
    assert_eq!(dry.state.total, 7);
    assert_eq!(dry.expected, ExpectedRevision::Exact(0));
    assert_eq!(stream_len(&store, "counter-d").await, 1);
    assert!(matches!(
        counters.dry_run("none", &CounterCommand::TakeAll).await,
        Err(HandleError::Domain(_))
    ));
}

#[tokio::test]
async fn every_event_carries_the_command_context() {
    let (_dir, store) = store();
    let counters = Repository::<Counter>::new(store.clone());
    let command_id = Uuid::new_v4();
    let ctx = CommandContext::new()
        .with_actor("alice")
        .with_field("tenant", "acme")
        .with_command_id(command_id);
    counters
        .handle("m", &CounterCommand::AddTwice(1), &ctx)
        .await
        .unwrap();
    let events = store
        .read_stream("counter-m", ReadStreamOptions::forwards())
        .await
        .unwrap();
    for event in &events {
        let metadata: serde_json::Value = serde_json::from_slice(&event.metadata).unwrap();
        assert_eq!(
            metadata[fields::CORRELATION_ID],
            ctx.correlation_id.to_string()
        );
        assert_eq!(metadata[fields::CAUSATION_ID], command_id.to_string());
        assert_eq!(metadata[fields::ACTOR], "alice");
        assert_eq!(metadata["tenant"], "acme");
        assert_eq!(metadata["schema_version"], 1);
    }
    // A command caused by an event keeps the correlation and names the event as cause.
    let caused = CommandContext::caused_by(&events[0]);
    assert_eq!(caused.correlation_id, ctx.correlation_id);
    assert_eq!(caused.causation_id, Some(events[0].id));
    counters
        .handle("n", &CounterCommand::Add(1), &caused)
        .await
        .unwrap();
    let next = store
        .read_stream("counter-n", ReadStreamOptions::forwards())
        .await
        .unwrap();
    let metadata: serde_json::Value = serde_json::from_slice(&next[0].metadata).unwrap();
    assert_eq!(metadata[fields::CAUSATION_ID], events[0].id.to_string());
    assert_eq!(
        metadata[fields::CORRELATION_ID],
        ctx.correlation_id.to_string()
    );
}

#[tokio::test]
async fn a_retried_command_returns_its_first_result() {
    let (_dir, store) = store();
    let counters = Repository::<Counter>::new(store.clone());
    counters
        .handle("i", &CounterCommand::Add(4), &CommandContext::new())
        .await
        .unwrap();
    let ctx = CommandContext::new().with_command_id(Uuid::new_v4());
    let first = counters
        .handle("i", &CounterCommand::TakeAll, &ctx)
        .await
        .unwrap();
    assert!(!first.replayed);
    counters
        .handle("i", &CounterCommand::Add(2), &CommandContext::new())
        .await
        .unwrap();
    // Deciding again would now be refused or differ; the retry returns the first result.
    let again = counters
        .handle("i", &CounterCommand::TakeAll, &ctx)
        .await
        .unwrap();
    assert!(again.replayed);
    assert_eq!(again.events, first.events);
    assert_eq!(again.result, first.result);
    assert_eq!(
        again.state.total, 0,
        "the state as the first handling left it"
    );
    assert_eq!(
        stream_len(&store, "counter-i").await,
        3,
        "the retry wrote nothing"
    );
    // Concurrent retries of one command: exactly one of them writes.
    let ctx = CommandContext::new().with_command_id(Uuid::new_v4());
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let counters = counters.clone();
            let ctx = ctx.clone();
            tokio::spawn(async move {
                counters
                    .handle("i", &CounterCommand::Add(10), &ctx)
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.unwrap());
    }
    assert!(
        results.windows(2).all(|w| w[0].result == w[1].result),
        "every caller gets the one result"
    );
    assert!(results.iter().all(|h| h.state.total == 12));
    assert_eq!(stream_len(&store, "counter-i").await, 4);
}

#[tokio::test]
async fn a_snapshot_limits_the_events_read() {
    let (dir, store) = store();
    for chunk in 0..100 {
        let events: Vec<_> = (0..1000)
            .map(|i| EventData::json("Added", &json!({ "n": chunk * 1000 + i })).unwrap())
            .collect();
        store
            .append("counter-big", ExpectedRevision::Any, events)
            .await
            .unwrap();
    }
    let snapshots: Arc<dyn SnapshotStore> =
        Arc::new(FileSnapshots::new(dir.path().join("snapshots")).unwrap());
    let counters = Repository::<Counter>::new(store.clone()).with_snapshots(snapshots.clone());
    let cold = counters.load("big").await.unwrap();
    assert_eq!(cold.events_read, 100_000);
    assert_eq!(cold.snapshot, SnapshotUse::None);
    counters.snapshot("big").await.unwrap();
    for _ in 0..7 {
        counters
            .handle("big", &CounterCommand::Add(1), &CommandContext::new())
            .await
            .unwrap();
    }
    let warm = counters.load("big").await.unwrap();
    assert_eq!(
        warm.events_read, 7,
        "only the events after the snapshot are read"
    );
    assert_eq!(warm.snapshot, SnapshotUse::Used { revision: 99_999 });
    assert_eq!(
        warm.state,
        counters
            .load_as_of("big", AsOf::Position(Position(u64::MAX)))
            .await
            .unwrap()
            .state
    );
    assert_eq!(warm.state.total, (0..100_000u64).sum::<u64>() + 7);

    // Changing the state's shape invalidates the snapshot: rebuilt and replaced.
    let v2 = Repository::<CounterV2>::new(store.clone()).with_snapshots(snapshots.clone());
    let rebuilt = v2.load("big").await.unwrap();
    assert!(matches!(rebuilt.snapshot, SnapshotUse::Ignored { .. }));
    assert_eq!(rebuilt.events_read, 100_007);
    assert_eq!(rebuilt.state.sum, warm.state.total);
    assert!(matches!(
        v2.load("big").await.unwrap().snapshot,
        SnapshotUse::Used { .. }
    ));

    // A damaged snapshot file is ignored too.
    for entry in std::fs::read_dir(dir.path().join("snapshots")).unwrap() {
        std::fs::write(entry.unwrap().path(), b"{ not json").unwrap();
    }
    let damaged = counters.load("big").await.unwrap();
    assert_eq!(damaged.snapshot, SnapshotUse::None);
    assert_eq!(damaged.state, warm.state);
}

#[tokio::test]
async fn snapshots_are_taken_every_n_events() {
    let (_dir, store) = store();
    let snapshots = Arc::new(MemorySnapshots::new());
    let config = RepositoryConfig {
        snapshot_every: Some(10),
        ..RepositoryConfig::default()
    };
    let counters = Repository::<Counter>::new(store)
        .with_snapshots(snapshots.clone())
        .with_config(config);
    for _ in 0..12 {
        counters
            .handle("s", &CounterCommand::Add(1), &CommandContext::new())
            .await
            .unwrap();
    }
    let snapshot: Snapshot = snapshots.load("counter-s").await.unwrap().unwrap();
    assert_eq!(snapshot.revision, 9);
    let loaded = counters.load("s").await.unwrap();
    assert_eq!((loaded.events_read, loaded.state.total), (2, 12));
}

#[tokio::test]
async fn old_event_versions_are_upcast_on_read() {
    let (_dir, store) = store();
    // History written by older code: v1 "Incremented" (renamed since) and a v1 "Doubled"
    // that is now two Added events; stored bytes stay as they are.
    let v1 = |event_type: &str, data: serde_json::Value| {
        EventData::json(event_type, &data)
            .unwrap()
            .with_metadata(serde_json::to_vec(&json!({"schema_version": 1})).unwrap())
    };
    store
        .append(
            "counter-u",
            ExpectedRevision::NoStream,
            vec![
                v1("Incremented", json!({"by": 2})),
                v1("Doubled", json!({"value": 5})),
            ],
        )
        .await
        .unwrap();
    let upcasters = Upcasters::new()
        .register("Incremented", 1, |data| {
            vec![Versioned::new(
                "Incremented",
                2,
                json!({ "amount": data["by"] }),
            )]
        })
        .register("Incremented", 2, |data| {
            vec![Versioned::new("Added", 1, json!({ "n": data["amount"] }))]
        })
        .register("Doubled", 1, |data| {
            vec![
                Versioned::new("Added", 1, json!({ "n": data["value"] })),
                Versioned::new("Added", 1, json!({ "n": data["value"] })),
            ]
        });
    let counters = Repository::<Counter>::new(store.clone()).with_upcasters(upcasters);
    let loaded = counters.load("u").await.unwrap();
    assert_eq!(loaded.state.history, vec![2, 5, 5]);
    let raw = store
        .read_stream("counter-u", ReadStreamOptions::forwards())
        .await
        .unwrap();
    assert_eq!(
        raw[0].event_type, "Incremented",
        "stored events are never rewritten"
    );
    // Without the upcasters the old type is a typed error.
    match Repository::<Counter>::new(store).load("u").await {
        Err(ModelError::UnknownEvent {
            event_type,
            version,
            revision,
            ..
        }) => {
            assert_eq!(
                (event_type.as_str(), version, revision),
                ("Incremented", 1, 0)
            );
        }
        other => panic!("expected UnknownEvent, got {other:?}"),
    }
}

#[tokio::test]
async fn aggregates_can_be_evaluated_at_any_point_in_time() {
    let (_dir, store) = store();
    let counters = Repository::<Counter>::new(store.clone());
    let first = counters
        .handle("t", &CounterCommand::Add(1), &CommandContext::new())
        .await
        .unwrap();
    let after_first = first.result.unwrap().last_position().unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let between = Timestamp::now();
    tokio::time::sleep(Duration::from_millis(5)).await;
    counters
        .handle("t", &CounterCommand::Add(10), &CommandContext::new())
        .await
        .unwrap();
    let at = |as_of| counters.load_as_of("t", as_of);
    assert_eq!(
        at(AsOf::Position(after_first)).await.unwrap().state.total,
        1
    );
    assert_eq!(at(AsOf::RecordedAt(between)).await.unwrap().state.total, 1);
    assert_eq!(
        at(AsOf::RecordedAt(Timestamp::now()))
            .await
            .unwrap()
            .state
            .total,
        11
    );

    // Bi-temporal: a correction recorded now about last year.
    let last_year = Timestamp::from_micros(Timestamp::now().as_micros() - 365 * 86_400 * 1_000_000);
    let earlier = Timestamp::from_micros(last_year.as_micros() - 1_000_000);
    let known_before_correction = Timestamp::now();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let ctx = CommandContext::new().with_valid_at(last_year);
    counters
        .handle("t", &CounterCommand::Add(100), &ctx)
        .await
        .unwrap();
    let now = Timestamp::now();
    let known = |known_at, valid_at| at(AsOf::KnownAt { known_at, valid_at });
    assert_eq!(
        known(now, last_year).await.unwrap().state.total,
        100,
        "as known now, about last year"
    );
    assert_eq!(
        known(known_before_correction, last_year)
            .await
            .unwrap()
            .state
            .total,
        0,
        "before the correction"
    );
    assert_eq!(known(now, earlier).await.unwrap().state.total, 0);
    assert_eq!(known(now, now).await.unwrap().state.total, 111);
}
