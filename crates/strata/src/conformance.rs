//! The conformance suite: behaviour every [`EventStore`](crate::EventStore) backend must
//! show, written once against the [`Store`] handle.
//!
//! A backend's test file instantiates it with [`conformance_tests!`](crate::conformance_tests),
//! giving an async factory that returns a [`Harness`]. Each test uses stream names of
//! its own, so one store may serve every test.
//!
//! The functions panic on a failed expectation, like any test.
#![allow(clippy::unwrap_used, missing_docs)]

use std::any::Any;
use std::collections::HashSet;
use std::time::Duration;

use uuid::Uuid;

use crate::{
    AppendError, AppendRequest, CurrentRevision, EventData, ExpectedRevision, Filter, InvalidInput,
    Limits, ListStreamsOptions, PageEnd, Position, ReadAllOptions, ReadError, ReadStreamOptions,
    RecordedEvent, Store, StreamMetadata, SubscribeFrom, SubscriptionMessage,
};

/// A store to test, with what keeps it alive and the limits it enforces.
pub struct Harness {
    /// The store.
    pub store: Store,
    /// The limits the backend was configured with.
    pub limits: Limits,
    /// Anything that must outlive the store (a temporary directory, a server).
    pub guard: Box<dyn Any + Send>,
}

/// Instantiates every conformance test as a `#[tokio::test]`, each calling `$factory`
/// (an expression evaluating to a future of [`Harness`]).
#[macro_export]
macro_rules! conformance_tests {
    ($factory:expr) => {
        $crate::conformance_tests!(@each $factory;
            append_and_read_back, expected_revision_checks, idempotent_retries,
            multi_stream_appends_are_atomic, read_all_order_and_filters, metadata_rules,
            max_age_hides_old_events, huge_max_age_hides_nothing, soft_delete_and_revival, tombstone_is_final, list_streams,
            invalid_input_is_rejected, stream_subscription_catches_up_then_goes_live,
            stream_subscription_from_the_end_gets_every_later_event,
            subscriptions_after_the_last_possible_revision_get_nothing,
            all_subscription_filters_and_resumes, racing_writers_get_one_winner_per_revision,
            filtered_reads_stop_at_their_scan_budget);
    };
    (@each $factory:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let harness = $factory.await;
                $crate::conformance::$name(&harness).await;
            }
        )*
    };
}

fn unique(prefix: &str) -> String {
    format!("{prefix}{}", Uuid::new_v4().simple())
}

fn events(n: usize) -> Vec<EventData> {
    (0..n)
        .map(|i| EventData::json("Tested", &serde_json::json!({ "i": i })).unwrap())
        .collect()
}

async fn read(store: &Store, stream: &str) -> Vec<RecordedEvent> {
    store
        .read_stream(stream, ReadStreamOptions::forwards())
        .await
        .unwrap()
}

pub async fn append_and_read_back(h: &Harness) {
    let store = &h.store;
    let stream = unique("conf-");
    let written = events(5);
    let result = store
        .append(&stream, ExpectedRevision::NoStream, written.clone())
        .await
        .unwrap();
    assert_eq!(result.first_revision, 0);
    assert_eq!(result.current_revision, CurrentRevision::Current(4));
    assert_eq!(result.positions.len(), 5);
    assert!(result.positions.windows(2).all(|w| w[0] < w[1]));
    let forwards = read(store, &stream).await;
    assert_eq!(
        forwards.iter().map(|e| e.id).collect::<Vec<_>>(),
        written.iter().map(|e| e.id).collect::<Vec<_>>()
    );
    assert_eq!(
        forwards.iter().map(|e| e.revision).collect::<Vec<_>>(),
        vec![0, 1, 2, 3, 4]
    );
    assert_eq!(
        forwards.iter().map(|e| e.position).collect::<Vec<_>>(),
        result.positions
    );
    assert!(forwards
        .iter()
        .all(|e| e.stream == stream && e.event_type == "Tested"));
    assert_eq!(
        forwards[2].json::<serde_json::Value>().unwrap(),
        serde_json::json!({"i": 2})
    );
    assert!(forwards
        .windows(2)
        .all(|w| w[0].recorded_at <= w[1].recorded_at));
    let backwards = store
        .read_stream(&stream, ReadStreamOptions::backwards())
        .await
        .unwrap();
    assert_eq!(
        backwards.iter().rev().cloned().collect::<Vec<_>>(),
        forwards
    );
    let page = store
        .read_stream(
            &stream,
            ReadStreamOptions::forwards().from_revision(1).limit(2),
        )
        .await
        .unwrap();
    assert_eq!(
        page.iter().map(|e| e.revision).collect::<Vec<_>>(),
        vec![1, 2]
    );
    let page = store
        .read_stream(
            &stream,
            ReadStreamOptions::backwards().from_revision(3).limit(2),
        )
        .await
        .unwrap();
    assert_eq!(
        page.iter().map(|e| e.revision).collect::<Vec<_>>(),
        vec![3, 2]
    );
    let past_end = store
        .read_stream(&stream, ReadStreamOptions::forwards().from_revision(9))
        .await
        .unwrap();
    assert!(past_end.is_empty());
    let more = store
        .append(&stream, ExpectedRevision::Exact(4), events(1))
        .await
        .unwrap();
    assert_eq!(more.first_revision, 5);
    assert!(more.positions[0] > result.positions[4]);
    match store
        .read_stream(&unique("conf-missing-"), ReadStreamOptions::forwards())
        .await
    {
        Err(ReadError::StreamNotFound { .. }) => {}
        other => panic!("expected StreamNotFound, got {other:?}"),
    }
    let metadata_and_binary = EventData::binary("Blob", vec![0u8, 1, 2, 255])
        .with_metadata(&b"{\"correlation_id\":\"c1\"}"[..])
        .with_valid_at(crate::Timestamp::from_micros(1_000_000));
    store
        .append(
            &stream,
            ExpectedRevision::Any,
            vec![metadata_and_binary.clone()],
        )
        .await
        .unwrap();
    let last = store
        .read_stream(&stream, ReadStreamOptions::backwards().limit(1))
        .await
        .unwrap();
    assert_eq!(last[0].data, metadata_and_binary.data);
    assert_eq!(last[0].metadata, metadata_and_binary.metadata);
    assert_eq!(last[0].content_type, crate::ContentType::Binary);
    assert_eq!(last[0].valid_at, metadata_and_binary.valid_at);
}

pub async fn expected_revision_checks(h: &Harness) {
    let store = &h.store;
    let stream = unique("conf-");
    match store
        .append(&stream, ExpectedRevision::StreamExists, events(1))
        .await
    {
        Err(AppendError::WrongExpectedRevision {
            actual: CurrentRevision::NoStream,
            ..
        }) => {}
        other => panic!("expected a conflict, got {other:?}"),
    }
    match store
        .append(&stream, ExpectedRevision::Exact(0), events(1))
        .await
    {
        Err(AppendError::WrongExpectedRevision {
            expected: ExpectedRevision::Exact(0),
            actual: CurrentRevision::NoStream,
            ..
        }) => {}
        other => panic!("expected a conflict, got {other:?}"),
    }
    store
        .append(&stream, ExpectedRevision::NoStream, events(2))
        .await
        .unwrap();
    // The largest revision is an ordinary mismatch, not an overflow.
    match store
        .append(&stream, ExpectedRevision::Exact(u64::MAX), events(1))
        .await
    {
        Err(AppendError::WrongExpectedRevision {
            actual: CurrentRevision::Current(1),
            ..
        }) => {}
        other => panic!("expected a conflict, got {other:?}"),
    }
    match store
        .append(&stream, ExpectedRevision::NoStream, events(1))
        .await
    {
        Err(AppendError::WrongExpectedRevision {
            stream: s,
            expected: ExpectedRevision::NoStream,
            actual: CurrentRevision::Current(1),
        }) => {
            assert_eq!(s, stream)
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    match store
        .append(&stream, ExpectedRevision::Exact(0), events(1))
        .await
    {
        Err(AppendError::WrongExpectedRevision {
            actual: CurrentRevision::Current(1),
            ..
        }) => {}
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(
        read(store, &stream).await.len(),
        2,
        "a failed append writes nothing"
    );
    store
        .append(&stream, ExpectedRevision::Exact(1), events(1))
        .await
        .unwrap();
    store
        .append(&stream, ExpectedRevision::StreamExists, events(1))
        .await
        .unwrap();
    store
        .append(&stream, ExpectedRevision::Any, events(1))
        .await
        .unwrap();
    assert_eq!(read(store, &stream).await.len(), 5);
    let empty = store
        .append(&stream, ExpectedRevision::Exact(4), Vec::new())
        .await
        .unwrap();
    assert_eq!(empty.current_revision, CurrentRevision::Current(4));
    assert!(empty.positions.is_empty());
    assert!(store
        .append(&stream, ExpectedRevision::Exact(3), Vec::new())
        .await
        .is_err());
}

pub async fn idempotent_retries(h: &Harness) {
    let store = &h.store;
    for expected in [ExpectedRevision::NoStream, ExpectedRevision::Any] {
        let stream = unique("conf-");
        let batch = events(3);
        let first = store
            .append(&stream, expected, batch.clone())
            .await
            .unwrap();
        let again = store
            .append(&stream, expected, batch.clone())
            .await
            .unwrap();
        assert_eq!(
            first, again,
            "a retry returns the original result ({expected:?})"
        );
        assert_eq!(
            read(store, &stream).await.len(),
            3,
            "a retry writes nothing"
        );
        // After other events, an exact retry still answers with the original positions.
        let next = store
            .append(&stream, ExpectedRevision::Exact(2), events(2))
            .await
            .unwrap();
        assert_eq!(next.first_revision, 3);
        assert_eq!(
            store
                .append(&stream, expected, batch.clone())
                .await
                .unwrap(),
            first
        );
        // A retry that overlaps only partly is neither new nor a retry.
        let mut partial = batch[..2].to_vec();
        partial.extend(events(1));
        match store.append(&stream, expected, partial).await {
            Err(AppendError::IdempotencyConflict { stream: s, .. }) => assert_eq!(s, stream),
            other => panic!("expected an idempotency conflict, got {other:?}"),
        }
        assert_eq!(read(store, &stream).await.len(), 5);
    }
    let stream = unique("conf-");
    store
        .append(&stream, ExpectedRevision::NoStream, events(1))
        .await
        .unwrap();
    let batch = events(2);
    let first = store
        .append(&stream, ExpectedRevision::Exact(0), batch.clone())
        .await
        .unwrap();
    store
        .append(&stream, ExpectedRevision::Exact(2), events(3))
        .await
        .unwrap();
    assert_eq!(
        store
            .append(&stream, ExpectedRevision::Exact(0), batch)
            .await
            .unwrap(),
        first
    );
    // Retrying with only a later part of the original batch is also an exact retry.
    assert_eq!(read(store, &stream).await.len(), 6);
}

pub async fn multi_stream_appends_are_atomic(h: &Harness) {
    let store = &h.store;
    let (a, b) = (unique("conf-a-"), unique("conf-b-"));
    let results = store
        .append_multi(vec![
            AppendRequest::new(&a, ExpectedRevision::NoStream, events(2)),
            AppendRequest::new(&b, ExpectedRevision::NoStream, events(1)),
        ])
        .await
        .unwrap();
    assert_eq!(results.len(), 2);
    assert_eq!(results[0].stream, a);
    assert_eq!(results[1].positions.len(), 1);
    let failed = store
        .append_multi(vec![
            AppendRequest::new(&a, ExpectedRevision::Exact(1), events(1)),
            AppendRequest::new(&b, ExpectedRevision::Exact(7), events(1)),
        ])
        .await;
    match failed {
        Err(AppendError::WrongExpectedRevision {
            stream,
            actual: CurrentRevision::Current(0),
            ..
        }) => assert_eq!(stream, b),
        other => panic!("expected a conflict on {b}, got {other:?}"),
    }
    assert_eq!(
        read(store, &a).await.len(),
        2,
        "nothing of a failed multi-stream append is written"
    );
    assert_eq!(read(store, &b).await.len(), 1);
    let duplicate = store
        .append_multi(vec![
            AppendRequest::new(&a, ExpectedRevision::Any, events(1)),
            AppendRequest::new(&a, ExpectedRevision::Any, events(1)),
        ])
        .await;
    assert!(matches!(
        duplicate,
        Err(AppendError::Invalid(InvalidInput::DuplicateStream { .. }))
    ));
    // A multi-stream retry is idempotent as a whole.
    let batch = vec![
        AppendRequest::new(&a, ExpectedRevision::Exact(1), events(1)),
        AppendRequest::new(&b, ExpectedRevision::Exact(0), events(2)),
    ];
    let first = store.append_multi(batch.clone()).await.unwrap();
    assert_eq!(store.append_multi(batch).await.unwrap(), first);
    assert_eq!(read(store, &b).await.len(), 3);
}

pub async fn read_all_order_and_filters(h: &Harness) {
    let store = &h.store;
    let category = unique("cat");
    let other = unique("oth");
    let start = store.head().map_or(Position::START, Position::next);
    for i in 0..6 {
        let stream = if i % 2 == 0 {
            format!("{category}-{i}")
        } else {
            format!("{other}-{i}")
        };
        let kind = if i % 3 == 0 { "Even3" } else { "Other" };
        store
            .append(
                &stream,
                ExpectedRevision::Any,
                vec![EventData::json(kind, &i).unwrap()],
            )
            .await
            .unwrap();
    }
    let ours = Filter::new().category(&category).category(&other);
    let all = store
        .read_all(
            ReadAllOptions::forwards()
                .from_position(start)
                .filter(ours.clone()),
        )
        .await
        .unwrap();
    assert_eq!(all.len(), 6);
    assert!(all.windows(2).all(|w| w[0].position < w[1].position));
    let back = store
        .read_all(ReadAllOptions::backwards().filter(ours.clone()).limit(6))
        .await
        .unwrap();
    assert_eq!(back.iter().rev().cloned().collect::<Vec<_>>(), all);
    let from = all[2].position;
    let tail = store
        .read_all(
            ReadAllOptions::forwards()
                .from_position(from)
                .filter(ours.clone()),
        )
        .await
        .unwrap();
    assert_eq!(tail[0].position, from, "from is inclusive");
    let before = store
        .read_all(
            ReadAllOptions::backwards()
                .from_position(from)
                .filter(ours.clone())
                .limit(10),
        )
        .await
        .unwrap();
    assert_eq!(
        before.iter().map(|e| e.position).collect::<Vec<_>>(),
        vec![all[2].position, all[1].position, all[0].position]
    );
    let by_category = store
        .read_all(
            ReadAllOptions::forwards()
                .from_position(start)
                .filter(Filter::new().category(&category)),
        )
        .await
        .unwrap();
    assert_eq!(by_category.len(), 3);
    assert!(by_category.iter().all(|e| e.category() == category));
    let by_prefix = store
        .read_all(
            ReadAllOptions::forwards()
                .from_position(start)
                .filter(Filter::new().stream_prefix(format!("{other}-"))),
        )
        .await
        .unwrap();
    assert_eq!(by_prefix.len(), 3);
    let by_type = store
        .read_all(
            ReadAllOptions::forwards()
                .from_position(start)
                .filter(Filter::new().category(&category).event_type("Even3")),
        )
        .await
        .unwrap();
    assert_eq!(
        by_type.iter().map(|e| e.stream.clone()).collect::<Vec<_>>(),
        vec![format!("{category}-0")]
    );
    let limited = store
        .read_all(
            ReadAllOptions::forwards()
                .from_position(start)
                .filter(ours)
                .limit(2),
        )
        .await
        .unwrap();
    assert_eq!(limited, all[..2].to_vec());
    // The published head covers at least this test's appends; other writers sharing the
    // store may have moved the log further since.
    let head = store.head().unwrap();
    assert!(
        head >= all[5].position,
        "the head covers every acknowledged append"
    );
    let last = store
        .read_all(ReadAllOptions::backwards().limit(1))
        .await
        .unwrap();
    assert!(
        last[0].position >= head,
        "the head never runs ahead of what reads show"
    );
}

pub async fn metadata_rules(h: &Harness) {
    let store = &h.store;
    let stream = unique("conf-");
    let initial = store.stream_metadata(&stream).await.unwrap();
    assert_eq!(initial.metadata, StreamMetadata::default());
    assert_eq!(initial.revision, CurrentRevision::NoStream);
    store
        .append(&stream, ExpectedRevision::NoStream, events(10))
        .await
        .unwrap();
    let mut metadata = StreamMetadata {
        max_count: Some(3),
        ..StreamMetadata::default()
    };
    metadata
        .custom
        .insert("owner".into(), serde_json::json!("billing"));
    store
        .set_stream_metadata(&stream, ExpectedRevision::NoStream, &metadata)
        .await
        .unwrap();
    let revisions =
        |events: Vec<RecordedEvent>| events.iter().map(|e| e.revision).collect::<Vec<_>>();
    assert_eq!(
        revisions(read(store, &stream).await),
        vec![7, 8, 9],
        "max count applies at once"
    );
    assert_eq!(
        revisions(
            store
                .read_stream(&stream, ReadStreamOptions::backwards())
                .await
                .unwrap()
        ),
        vec![9, 8, 7]
    );
    assert_eq!(
        revisions(
            store
                .read_stream(&stream, ReadStreamOptions::forwards().from_revision(2))
                .await
                .unwrap()
        ),
        vec![7, 8, 9]
    );
    let stored = store.stream_metadata(&stream).await.unwrap();
    assert_eq!(stored.metadata, metadata);
    assert_eq!(stored.revision, CurrentRevision::Current(0));
    match store
        .set_stream_metadata(&stream, ExpectedRevision::NoStream, &metadata)
        .await
    {
        Err(AppendError::WrongExpectedRevision { .. }) => {}
        other => panic!("metadata writes check their expected revision, got {other:?}"),
    }
    let truncate = StreamMetadata {
        truncate_before: Some(5),
        ..StreamMetadata::default()
    };
    store
        .set_stream_metadata(&stream, ExpectedRevision::Exact(0), &truncate)
        .await
        .unwrap();
    assert_eq!(revisions(read(store, &stream).await), vec![5, 6, 7, 8, 9]);
    let hidden_everything = StreamMetadata {
        truncate_before: Some(100),
        ..StreamMetadata::default()
    };
    store
        .set_stream_metadata(&stream, ExpectedRevision::Any, &hidden_everything)
        .await
        .unwrap();
    assert!(
        read(store, &stream).await.is_empty(),
        "the stream exists but shows nothing"
    );
    store
        .append(&stream, ExpectedRevision::Exact(9), events(1))
        .await
        .unwrap();
    let bad = EventData::new("$metadata", &b"[1,2]"[..], crate::ContentType::Json);
    match store
        .append(
            crate::stream::metastream(&stream),
            ExpectedRevision::Any,
            vec![bad],
        )
        .await
    {
        Err(AppendError::Invalid(InvalidInput::InvalidMetadata { .. })) => {}
        other => panic!("invalid metadata is rejected, got {other:?}"),
    }
}

pub async fn max_age_hides_old_events(h: &Harness) {
    let store = &h.store;
    let stream = unique("conf-");
    // More expired events than one page of a subscription (512) holds.
    for _ in 0..10 {
        store
            .append(&stream, ExpectedRevision::Any, events(60))
            .await
            .unwrap();
    }
    let metadata = StreamMetadata {
        max_age: Some(Duration::from_secs(1)),
        ..StreamMetadata::default()
    };
    store
        .set_stream_metadata(&stream, ExpectedRevision::Any, &metadata)
        .await
        .unwrap();
    assert_eq!(read(store, &stream).await.len(), 600);
    tokio::time::sleep(Duration::from_millis(1300)).await;
    store
        .append(&stream, ExpectedRevision::Exact(599), events(1))
        .await
        .unwrap();
    let visible = read(store, &stream).await;
    assert_eq!(
        visible.iter().map(|e| e.revision).collect::<Vec<_>>(),
        vec![600],
        "events older than max age are hidden"
    );
    let page = store
        .read_stream(&stream, ReadStreamOptions::forwards().limit(512))
        .await
        .unwrap();
    assert_eq!(
        page.len(),
        1,
        "a page is not emptied by expired events before it"
    );
    let back = store
        .read_stream(&stream, ReadStreamOptions::backwards())
        .await
        .unwrap();
    assert_eq!(back.len(), 1);
    let mut subscription = store.subscribe_stream(&stream, SubscribeFrom::Start);
    let first = tokio::time::timeout(Duration::from_secs(10), subscription.next_event())
        .await
        .expect("not stalled");
    assert_eq!(first.unwrap().revision, 600);
    store
        .append(&stream, ExpectedRevision::Exact(600), events(1))
        .await
        .unwrap();
    let live = tokio::time::timeout(Duration::from_secs(10), subscription.next_event())
        .await
        .expect("not stalled");
    assert_eq!(live.unwrap().revision, 601);
}

/// A `$maxAge` too large to subtract from the clock hides nothing: every backend
/// saturates instead of truncating it (issue 11: PostgreSQL cast the microseconds of
/// 76 480 200 929 599 801 seconds to 64 and hid every event).
pub async fn huge_max_age_hides_nothing(h: &Harness) {
    let store = &h.store;
    let stream = unique("conf-");
    store
        .append(&stream, ExpectedRevision::NoStream, events(3))
        .await
        .unwrap();
    // 76 480 200 929 599 801 s is 2^64 + 64 µs: truncated to 64 bits, 64 µs.
    for seconds in [76_480_200_929_599_801, i64::MAX as u64, u64::MAX] {
        let metadata = StreamMetadata {
            max_age: Some(Duration::from_secs(seconds)),
            ..StreamMetadata::default()
        };
        store
            .set_stream_metadata(&stream, ExpectedRevision::Any, &metadata)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert_eq!(read(store, &stream).await.len(), 3, "$maxAge {seconds}");
        let back = store
            .read_stream(&stream, ReadStreamOptions::backwards())
            .await
            .unwrap();
        assert_eq!(back.len(), 3, "$maxAge {seconds}, backwards");
    }
}

pub async fn soft_delete_and_revival(h: &Harness) {
    let store = &h.store;
    let stream = unique("conf-");
    store
        .append(&stream, ExpectedRevision::NoStream, events(3))
        .await
        .unwrap();
    match store
        .delete_stream(&stream, ExpectedRevision::Exact(0))
        .await
    {
        Err(AppendError::WrongExpectedRevision {
            actual: CurrentRevision::Current(2),
            ..
        }) => {}
        other => panic!("delete checks the expected revision, got {other:?}"),
    }
    store
        .delete_stream(&stream, ExpectedRevision::Exact(2))
        .await
        .unwrap();
    match store
        .read_stream(&stream, ReadStreamOptions::forwards())
        .await
    {
        Err(ReadError::StreamNotFound { .. }) => {}
        other => panic!("a deleted stream reads as not found, got {other:?}"),
    }
    let listed = store
        .list_streams(ListStreamsOptions {
            prefix: Some(stream.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(listed.is_empty());
    let revived = store
        .append(&stream, ExpectedRevision::NoStream, events(2))
        .await
        .unwrap();
    assert_eq!(
        revived.first_revision, 3,
        "revisions continue after a soft delete"
    );
    let visible = read(store, &stream).await;
    assert_eq!(
        visible.iter().map(|e| e.revision).collect::<Vec<_>>(),
        vec![3, 4]
    );
    store
        .append(&stream, ExpectedRevision::Exact(4), events(1))
        .await
        .unwrap();
}

pub async fn tombstone_is_final(h: &Harness) {
    let store = &h.store;
    let stream = unique("conf-");
    store
        .append(&stream, ExpectedRevision::NoStream, events(2))
        .await
        .unwrap();
    store
        .tombstone_stream(&stream, ExpectedRevision::Any)
        .await
        .unwrap();
    match store
        .read_stream(&stream, ReadStreamOptions::forwards())
        .await
    {
        Err(ReadError::StreamDeleted { .. }) => {}
        other => panic!("a tombstoned stream reads as deleted, got {other:?}"),
    }
    for expected in [
        ExpectedRevision::Any,
        ExpectedRevision::NoStream,
        ExpectedRevision::Exact(1),
    ] {
        match store.append(&stream, expected, events(1)).await {
            Err(AppendError::StreamDeleted { stream: s }) => assert_eq!(s, stream),
            other => panic!("a tombstoned stream cannot be written, got {other:?}"),
        }
    }
    assert!(matches!(
        store.tombstone_stream(&stream, ExpectedRevision::Any).await,
        Err(AppendError::StreamDeleted { .. })
    ));
    assert!(matches!(
        store.delete_stream(&stream, ExpectedRevision::Any).await,
        Err(AppendError::StreamDeleted { .. })
    ));
    let never = unique("conf-");
    store
        .tombstone_stream(&never, ExpectedRevision::NoStream)
        .await
        .unwrap();
    assert!(matches!(
        store.append(&never, ExpectedRevision::Any, events(1)).await,
        Err(AppendError::StreamDeleted { .. })
    ));
}

pub async fn list_streams(h: &Harness) {
    let store = &h.store;
    let prefix = unique("lst");
    for name in ["c", "a", "b", "d"] {
        store
            .append(
                format!("{prefix}-{name}"),
                ExpectedRevision::NoStream,
                events(2),
            )
            .await
            .unwrap();
    }
    store
        .delete_stream(&format!("{prefix}-d"), ExpectedRevision::Any)
        .await
        .unwrap();
    let options = ListStreamsOptions {
        prefix: Some(prefix.clone()),
        ..Default::default()
    };
    let listed = store.list_streams(options.clone()).await.unwrap();
    let names: Vec<_> = listed.iter().map(|s| s.name.clone()).collect();
    assert_eq!(
        names,
        vec![
            format!("{prefix}-a"),
            format!("{prefix}-b"),
            format!("{prefix}-c")
        ]
    );
    assert!(listed
        .iter()
        .all(|s| s.last_revision == 1 && s.visible_events == 2));
    let page = store
        .list_streams(ListStreamsOptions {
            after: Some(format!("{prefix}-a")),
            limit: Some(1),
            ..options
        })
        .await
        .unwrap();
    assert_eq!(
        page.iter().map(|s| s.name.clone()).collect::<Vec<_>>(),
        vec![format!("{prefix}-b")]
    );
}

pub async fn invalid_input_is_rejected(h: &Harness) {
    let store = &h.store;
    let limits = &h.limits;
    let check = |result: Result<crate::AppendResult, AppendError>, what: &str| match result {
        Err(AppendError::Invalid(_)) => {}
        other => panic!("{what}: expected a typed invalid-input error, got {other:?}"),
    };
    check(
        store.append("", ExpectedRevision::Any, events(1)).await,
        "empty name",
    );
    check(
        store
            .append("$system", ExpectedRevision::Any, events(1))
            .await,
        "reserved name",
    );
    check(
        store
            .append(
                "x".repeat(limits.stream_name_bytes_max + 1),
                ExpectedRevision::Any,
                events(1),
            )
            .await,
        "long name",
    );
    let stream = unique("conf-");
    check(
        store
            .append(
                &stream,
                ExpectedRevision::Any,
                vec![EventData::binary("", vec![])],
            )
            .await,
        "empty type",
    );
    check(
        store
            .append(
                &stream,
                ExpectedRevision::Any,
                vec![EventData::binary("$reserved", vec![])],
            )
            .await,
        "reserved type",
    );
    let big = EventData::binary("Big", vec![0u8; limits.event_size_bytes_max + 1]);
    match store
        .append(&stream, ExpectedRevision::Any, vec![big])
        .await
    {
        Err(AppendError::Invalid(InvalidInput::EventTooLarge { max, .. })) => {
            assert_eq!(max, limits.event_size_bytes_max)
        }
        other => panic!("expected EventTooLarge, got {other:?}"),
    }
    check(
        store
            .append(
                &stream,
                ExpectedRevision::Any,
                events(limits.append_events_max + 1),
            )
            .await,
        "too many events",
    );
    let long_type = "T".repeat(limits.event_type_bytes_max + 1);
    check(
        store
            .append(
                &stream,
                ExpectedRevision::Any,
                vec![EventData::binary(long_type, vec![])],
            )
            .await,
        "long type",
    );
    let each = limits.event_size_bytes_max - 64;
    let count = limits.append_size_bytes_max / each + 1;
    let large: Vec<_> = (0..count)
        .map(|_| EventData::binary("Big", vec![7u8; each]))
        .collect();
    match store.append(&stream, ExpectedRevision::Any, large).await {
        Err(AppendError::Invalid(InvalidInput::AppendTooLarge { max, .. })) => {
            assert_eq!(max, limits.append_size_bytes_max)
        }
        other => panic!("expected AppendTooLarge, got {other:?}"),
    }
    let parts: Vec<_> = (0..=limits.append_streams_max)
        .map(|i| AppendRequest::new(format!("{stream}-{i}"), ExpectedRevision::Any, events(1)))
        .collect();
    match store.append_multi(parts).await {
        Err(AppendError::Invalid(InvalidInput::TooManyStreams { max, .. })) => {
            assert_eq!(max, limits.append_streams_max)
        }
        other => panic!("expected TooManyStreams, got {other:?}"),
    }
    assert!(matches!(
        store
            .delete_stream("$reserved", ExpectedRevision::Any)
            .await,
        Err(AppendError::Invalid(_))
    ));
    assert!(matches!(
        store
            .read_stream(&stream, ReadStreamOptions::forwards())
            .await,
        Err(ReadError::StreamNotFound { .. })
    ));
    assert!(matches!(
        store.read_stream("", ReadStreamOptions::forwards()).await,
        Err(ReadError::Invalid(_))
    )); // The largest allowed event is accepted.
    let largest = EventData::binary("Big", vec![1u8; limits.event_size_bytes_max - 3]);
    store
        .append(&stream, ExpectedRevision::Any, vec![largest])
        .await
        .unwrap();
}

pub async fn stream_subscription_catches_up_then_goes_live(h: &Harness) {
    let store = &h.store;
    let stream = unique("conf-sub-");
    for _ in 0..10 {
        store
            .append(&stream, ExpectedRevision::Any, events(50))
            .await
            .unwrap();
    }
    let mut subscription = store.subscribe_stream(&stream, SubscribeFrom::Start);
    let writer = {
        let store = store.clone();
        let stream = stream.clone();
        tokio::spawn(async move {
            for _ in 0..50 {
                store
                    .append(&stream, ExpectedRevision::Any, events(10))
                    .await
                    .unwrap();
            }
        })
    };
    let mut revisions = Vec::new();
    let mut caught_up = 0;
    while revisions.len() < 1000 {
        match tokio::time::timeout(Duration::from_secs(20), subscription.next())
            .await
            .expect("subscription stalled")
            .unwrap()
        {
            SubscriptionMessage::Event(event) => revisions.push(event.revision),
            SubscriptionMessage::CaughtUp => caught_up += 1,
            other => panic!("unexpected message {other:?}"),
        }
    }
    writer.await.unwrap();
    assert_eq!(
        revisions,
        (0..1000).collect::<Vec<u64>>(),
        "no gap, no duplicate, in order"
    );
    assert!(caught_up <= 1);
    let mut resumed = store.subscribe_stream(&stream, SubscribeFrom::After(994));
    for expected in 995..1000 {
        assert_eq!(resumed.next_event().await.unwrap().revision, expected);
    }
    assert_eq!(resumed.next().await.unwrap(), SubscriptionMessage::CaughtUp);
    store
        .append(&stream, ExpectedRevision::Exact(999), events(1))
        .await
        .unwrap();
    assert_eq!(
        resumed.next_event().await.unwrap().revision,
        1000,
        "live events follow"
    );
    let mut from_end = store.subscribe_stream(&stream, SubscribeFrom::End);
    assert_eq!(
        from_end.next().await.unwrap(),
        SubscriptionMessage::CaughtUp
    );
    store
        .append(&stream, ExpectedRevision::Exact(1000), events(1))
        .await
        .unwrap();
    assert_eq!(from_end.next_event().await.unwrap().revision, 1001);
}

/// The next event of a subscription, failing the test if it stalls.
async fn next_event_soon(subscription: &mut crate::Subscription) -> RecordedEvent {
    tokio::time::timeout(Duration::from_secs(10), subscription.next_event())
        .await
        .expect("the subscription delivers the event")
        .unwrap()
}

/// "From the end" means the events recorded after the subscription was created, even
/// when it first reads after some were (issue 11: a subscription to a stream that did
/// not exist yet missed the stream's first event).
pub async fn stream_subscription_from_the_end_gets_every_later_event(h: &Harness) {
    let store = &h.store;
    // A stream that does not exist yet, the subscription reading only after two appends.
    let fresh = unique("conf-end-");
    let mut lazy = store.subscribe_stream(&fresh, SubscribeFrom::End);
    for _ in 0..2 {
        store
            .append(&fresh, ExpectedRevision::Any, events(1))
            .await
            .unwrap();
    }
    assert_eq!(next_event_soon(&mut lazy).await.revision, 0);
    assert_eq!(next_event_soon(&mut lazy).await.revision, 1);
    // The same, having caught up first (what a live HTTP stream does).
    let other = unique("conf-end-");
    let mut eager = store.subscribe_stream(&other, SubscribeFrom::End);
    assert_eq!(eager.next().await.unwrap(), SubscriptionMessage::CaughtUp);
    for _ in 0..2 {
        store
            .append(&other, ExpectedRevision::Any, events(1))
            .await
            .unwrap();
    }
    assert_eq!(next_event_soon(&mut eager).await.revision, 0);
    assert_eq!(next_event_soon(&mut eager).await.revision, 1);
    // A stream with history: only what follows it, even past a chunk of new events.
    store
        .append(&fresh, ExpectedRevision::Exact(1), events(3))
        .await
        .unwrap();
    let mut existing = store.subscribe_stream(&fresh, SubscribeFrom::End);
    for _ in 0..10 {
        store
            .append(&fresh, ExpectedRevision::Any, events(60))
            .await
            .unwrap();
    }
    for revision in 5..605 {
        assert_eq!(next_event_soon(&mut existing).await.revision, revision);
    }
    // `$all` from the end: the events recorded after it was created.
    let category = unique("confend");
    let filter = Filter::new().category(&category);
    let mut all = store.subscribe_all(SubscribeFrom::End, filter);
    let stream = format!("{category}-1");
    let written = store
        .append(&stream, ExpectedRevision::NoStream, events(2))
        .await
        .unwrap();
    assert_eq!(
        next_event_soon(&mut all).await.position,
        written.positions[0]
    );
    assert_eq!(
        next_event_soon(&mut all).await.position,
        written.positions[1]
    );
}

/// Nothing can follow `u64::MAX`: a subscription after it delivers no event, rather
/// than wrapping around to the start (issue 11).
pub async fn subscriptions_after_the_last_possible_revision_get_nothing(h: &Harness) {
    let store = &h.store;
    let stream = unique("conf-max-");
    store
        .append(&stream, ExpectedRevision::NoStream, events(3))
        .await
        .unwrap();
    let mut by_revision = store.subscribe_stream(&stream, SubscribeFrom::After(u64::MAX));
    let mut by_position =
        store.subscribe_all(SubscribeFrom::After(Position(u64::MAX)), Filter::new());
    let mut reference = store.subscribe_stream(&stream, SubscribeFrom::After(2));
    for subscription in [&mut by_revision, &mut by_position, &mut reference] {
        let first = tokio::time::timeout(Duration::from_secs(10), subscription.next())
            .await
            .expect("not stalled")
            .unwrap();
        assert_eq!(first, SubscriptionMessage::CaughtUp);
    }
    store
        .append(&stream, ExpectedRevision::Exact(2), events(1))
        .await
        .unwrap();
    // Once the reference subscription has the new event, the others would have it too.
    assert_eq!(next_event_soon(&mut reference).await.revision, 3);
    for subscription in [&mut by_revision, &mut by_position] {
        let nothing = tokio::time::timeout(Duration::from_millis(300), subscription.next()).await;
        assert!(nothing.is_err(), "nothing is delivered, got {nothing:?}");
    }
}

pub async fn all_subscription_filters_and_resumes(h: &Harness) {
    let store = &h.store;
    let category = unique("subcat");
    let start = store.head();
    let from = start.map_or(SubscribeFrom::Start, SubscribeFrom::After);
    let filter = Filter::new().category(&category);
    let mut subscription = store.subscribe_all(from, filter.clone());
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let store = store.clone();
            let category = category.clone();
            tokio::spawn(async move {
                for i in 0..100 {
                    let ours = format!("{category}-{w}");
                    let noise = format!("noise{category}-{w}");
                    store
                        .append(&ours, ExpectedRevision::Any, events(1))
                        .await
                        .unwrap();
                    if i % 3 == 0 {
                        store
                            .append(&noise, ExpectedRevision::Any, events(1))
                            .await
                            .unwrap();
                    }
                }
            })
        })
        .collect();
    let mut seen = Vec::new();
    while seen.len() < 400 {
        let message = tokio::time::timeout(Duration::from_secs(20), subscription.next())
            .await
            .expect("subscription stalled")
            .unwrap();
        if let SubscriptionMessage::Event(event) = message {
            assert_eq!(event.category(), category);
            seen.push(event);
        }
    }
    for writer in writers {
        writer.await.unwrap();
    }
    assert!(
        seen.windows(2).all(|w| w[0].position < w[1].position),
        "global order"
    );
    let ids: HashSet<_> = seen.iter().map(|e| e.id).collect();
    assert_eq!(ids.len(), 400, "no duplicates");
    let everything = store
        .read_all(
            ReadAllOptions::forwards()
                .from_position(start.map_or(Position::START, Position::next))
                .filter(filter.clone()),
        )
        .await
        .unwrap();
    assert_eq!(
        everything, seen,
        "the subscription saw exactly what the log holds"
    );
    let mut resumed = store.subscribe_all(SubscribeFrom::After(seen[349].position), filter);
    let mut rest = Vec::new();
    while rest.len() < 50 {
        rest.push(resumed.next_event().await.unwrap());
    }
    assert_eq!(rest, seen[350..].to_vec());
}

pub async fn racing_writers_get_one_winner_per_revision(h: &Harness) {
    let store = &h.store;
    let stream = unique("conf-race-");
    store
        .append(&stream, ExpectedRevision::NoStream, events(1))
        .await
        .unwrap();
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            let stream = stream.clone();
            tokio::spawn(async move {
                let mut wins = 0;
                for _ in 0..25 {
                    let last = store
                        .read_stream(&stream, ReadStreamOptions::backwards().limit(1))
                        .await
                        .unwrap();
                    let expected = ExpectedRevision::Exact(last[0].revision);
                    match store.append(&stream, expected, events(1)).await {
                        Ok(_) => wins += 1,
                        Err(AppendError::WrongExpectedRevision { .. }) => {}
                        Err(other) => panic!("unexpected error {other:?}"),
                    }
                }
                wins
            })
        })
        .collect();
    let mut wins = 0;
    for task in tasks {
        wins += task.await.unwrap();
    }
    let all = read(store, &stream).await;
    assert_eq!(
        all.len(),
        1 + wins,
        "every win is one event, every loss none"
    );
    assert!(all.iter().enumerate().all(|(i, e)| e.revision == i as u64));
}

/// A filtered read examines at most its scan budget: `read_all_page` returns what it
/// found and where to go on, `read_all` fails with both, and paging on finds every match.
pub async fn filtered_reads_stop_at_their_scan_budget(h: &Harness) {
    let store = &h.store;
    let prefix = unique("budget-");
    let hit = |i: usize| format!("{prefix}-hit-{i}");
    let first = store
        .append(hit(0), ExpectedRevision::NoStream, events(1))
        .await
        .unwrap()
        .positions[0];
    for i in 0..30 {
        store
            .append(
                unique("budget-miss-"),
                ExpectedRevision::NoStream,
                events(1),
            )
            .await
            .unwrap();
        if i == 14 {
            store
                .append(hit(1), ExpectedRevision::NoStream, events(1))
                .await
                .unwrap();
        }
    }
    let options = ReadAllOptions::forwards()
        .from_position(first)
        .filter(Filter::new().stream_prefix(&prefix))
        .limit(100)
        .scan_budget(10);
    let page = store.read_all_page(options.clone()).await.unwrap();
    assert_eq!(page.end, PageEnd::ScanBudget);
    assert_eq!(page.events.len(), 1);
    assert_eq!(page.events[0].stream, hit(0));
    let next = page.next.unwrap();
    assert!(next > first, "the scan moved on: {next:?}");
    match store.read_all(options.clone()).await {
        Err(ReadError::ScanBudgetSpent {
            found, next: at, ..
        }) => {
            assert_eq!(found.len(), 1);
            assert_eq!(at, next);
        }
        other => panic!("expected ScanBudgetSpent, got {other:?}"),
    }
    let mut found = page.events;
    let mut from = next;
    let mut pages = 1;
    loop {
        let page = store
            .read_all_page(options.clone().from_position(from))
            .await
            .unwrap();
        pages += 1;
        assert!(pages < 10_000, "paging makes progress");
        found.extend(page.events);
        let next = page.next.unwrap();
        assert!(next >= from);
        from = next;
        if page.end == PageEnd::End {
            break;
        }
    }
    let streams: Vec<&str> = found.iter().map(|e| e.stream.as_str()).collect();
    assert_eq!(streams, [hit(0), hit(1)]);
    assert!(pages >= 4, "32 events in steps of 10: {pages} pages");
}
