//! Property test: random sequences of appends, reads, deletes, metadata changes, clean
//! restarts and simulated power losses give the same results as a simple in-memory model
//! of the documented semantics.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::Arc;

use proptest::prelude::*;
use strata::engine::io::{CrashMode, MemoryStorage};
use strata::metadata::DELETED_TRUNCATE_BEFORE;
use strata::{
    AppendError, AppendRequest, AppendResult, CurrentRevision, Engine, EventData, ExpectedRevision,
    Options, Position, ReadAllOptions, ReadError, ReadStreamOptions, Store, StreamMetadata,
};
use uuid::Uuid;

#[derive(Clone, Debug)]
enum Op {
    Append {
        stream: usize,
        expected: Expected,
        count: usize,
    },
    RetryLast,
    Multi {
        a: usize,
        b: usize,
        expected_a: Expected,
        expected_b: Expected,
        count: usize,
    },
    ReadStream {
        stream: usize,
        backwards: bool,
        from: Option<u64>,
        limit: usize,
    },
    ReadAll {
        backwards: bool,
        from: Option<u64>,
        limit: usize,
    },
    Delete {
        stream: usize,
        expected: Expected,
    },
    Tombstone {
        stream: usize,
    },
    SetMaxCount {
        stream: usize,
        max_count: u64,
    },
    Restart,
    Crash {
        seed: u64,
    },
}

#[derive(Clone, Copy, Debug)]
enum Expected {
    Any,
    NoStream,
    Exists,
    Exact(u64),
}

impl Expected {
    fn get(self) -> ExpectedRevision {
        match self {
            Expected::Any => ExpectedRevision::Any,
            Expected::NoStream => ExpectedRevision::NoStream,
            Expected::Exists => ExpectedRevision::StreamExists,
            Expected::Exact(n) => ExpectedRevision::Exact(n),
        }
    }
}

fn expected() -> impl Strategy<Value = Expected> {
    prop_oneof![
        Just(Expected::Any),
        Just(Expected::NoStream),
        Just(Expected::Exists),
        (0u64..6).prop_map(Expected::Exact),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0usize..4, expected(), 0usize..4).prop_map(|(stream, expected, count)| Op::Append { stream, expected, count }),
        2 => Just(Op::RetryLast),
        2 => (0usize..4, 0usize..4, expected(), expected(), 1usize..3)
            .prop_map(|(a, b, expected_a, expected_b, count)| Op::Multi { a, b, expected_a, expected_b, count }),
        3 => (0usize..4, any::<bool>(), proptest::option::of(0u64..8), 1usize..6)
            .prop_map(|(stream, backwards, from, limit)| Op::ReadStream { stream, backwards, from, limit }),
        3 => (any::<bool>(), proptest::option::of(0u64..60), 1usize..20)
            .prop_map(|(backwards, from, limit)| Op::ReadAll { backwards, from, limit }),
        1 => (0usize..4, expected()).prop_map(|(stream, expected)| Op::Delete { stream, expected }),
        1 => (0usize..4).prop_map(|stream| Op::Tombstone { stream }),
        1 => (0usize..4, 1u64..4).prop_map(|(stream, max_count)| Op::SetMaxCount { stream, max_count }),
        1 => Just(Op::Restart),
        1 => any::<u64>().prop_map(|seed| Op::Crash { seed }),
    ]
}

fn name(stream: usize) -> String {
    format!("s{stream}")
}

#[derive(Clone, Debug, Default)]
struct ModelStream {
    /// (id, position) by revision.
    events: Vec<(Uuid, u64)>,
    tombstoned: bool,
    metadata: StreamMetadata,
}

#[derive(Debug, Default)]
struct Model {
    streams: HashMap<String, ModelStream>,
    /// (stream, revision, id) by position.
    log: Vec<(String, u64, Uuid)>,
}

/// The comparable part of an outcome.
type Outcome<T> = Result<T, String>;

fn append_error(error: &AppendError) -> String {
    match error {
        AppendError::WrongExpectedRevision {
            stream,
            expected,
            actual,
        } => format!("wrong {stream} {expected:?} {actual:?}"),
        AppendError::StreamDeleted { stream } => format!("deleted {stream}"),
        AppendError::IdempotencyConflict { stream, .. } => format!("conflict {stream}"),
        other => format!("other {other:?}"),
    }
}

fn read_error(error: &ReadError) -> String {
    match error {
        ReadError::StreamNotFound { stream } => format!("not found {stream}"),
        ReadError::StreamDeleted { stream } => format!("deleted {stream}"),
        other => format!("other {other:?}"),
    }
}

impl Model {
    fn stream(&self, name: &str) -> ModelStream {
        self.streams.get(name).cloned().unwrap_or_default()
    }

    fn current(stream: &ModelStream) -> CurrentRevision {
        if stream.metadata.is_deleted() || stream.events.is_empty() {
            CurrentRevision::NoStream
        } else {
            CurrentRevision::Current(stream.events.len() as u64 - 1)
        }
    }

    fn write(&mut self, name: &str, id: Uuid) -> u64 {
        let position = self.log.len() as u64;
        let stream = self.streams.entry(name.to_owned()).or_default();
        let revision = stream.events.len() as u64;
        stream.events.push((id, position));
        self.log.push((name.to_owned(), revision, id));
        position
    }

    fn set_metadata(&mut self, target: &str, metadata: StreamMetadata) {
        self.write(&format!("$${target}"), Uuid::nil());
        self.streams.entry(target.to_owned()).or_default().metadata = metadata;
    }

    /// Checks one part: `Ok(Some(result))` for an exact retry, `Ok(None)` to write.
    fn check(
        &self,
        name: &str,
        expected: ExpectedRevision,
        ids: &[Uuid],
    ) -> Outcome<Option<AppendResult>> {
        let stream = self.stream(name);
        if stream.tombstoned {
            return Err(format!("deleted {name}"));
        }
        if let Some(first) = ids.first() {
            if let Some(start) = stream.events.iter().position(|e| e.0 == *first) {
                let mut positions = Vec::new();
                for (i, id) in ids.iter().enumerate() {
                    match stream.events.get(start + i) {
                        Some((recorded, position)) if recorded == id => {
                            positions.push(Position(*position))
                        }
                        _ => return Err(format!("conflict {name}")),
                    }
                }
                return Ok(Some(AppendResult {
                    stream: name.to_owned(),
                    first_revision: start as u64,
                    current_revision: CurrentRevision::Current((start + ids.len() - 1) as u64),
                    positions,
                }));
            }
        }
        let current = Model::current(&stream);
        let ok = match expected {
            ExpectedRevision::Any => true,
            ExpectedRevision::NoStream => current == CurrentRevision::NoStream,
            ExpectedRevision::StreamExists => current != CurrentRevision::NoStream,
            ExpectedRevision::Exact(n) => current == CurrentRevision::Current(n),
        };
        if !ok {
            return Err(format!("wrong {name} {expected:?} {current:?}"));
        }
        Ok(None)
    }

    fn append(
        &mut self,
        parts: &[(String, ExpectedRevision, Vec<Uuid>)],
    ) -> Outcome<Vec<AppendResult>> {
        let mut retries = Vec::new();
        for (name, expected, ids) in parts {
            if let Some(result) = self.check(name, *expected, ids)? {
                retries.push(result);
            }
        }
        if !retries.is_empty() {
            return if retries.len() == parts.len() {
                Ok(retries)
            } else {
                Err(format!("conflict {}", retries[0].stream))
            };
        }
        let mut results = Vec::new();
        for (name, _, ids) in parts {
            let stream = self.stream(name);
            if stream.metadata.is_deleted() && !ids.is_empty() {
                let mut metadata = stream.metadata.clone();
                metadata.truncate_before = Some(stream.events.len() as u64);
                self.set_metadata(name, metadata);
            }
            let first_revision = self.stream(name).events.len() as u64;
            let positions = ids
                .iter()
                .map(|id| Position(self.write(name, *id)))
                .collect();
            results.push(AppendResult {
                stream: name.clone(),
                first_revision,
                positions,
                current_revision: Model::current(&self.stream(name)),
            });
        }
        Ok(results)
    }

    fn delete(
        &mut self,
        name: &str,
        expected: ExpectedRevision,
        tombstone: bool,
    ) -> Outcome<Position> {
        self.check(name, expected, &[])?;
        if tombstone {
            let position = self.write(name, Uuid::nil());
            self.streams.get_mut(name).unwrap().tombstoned = true;
            return Ok(Position(position));
        }
        let mut metadata = self.stream(name).metadata;
        metadata.truncate_before = Some(DELETED_TRUNCATE_BEFORE);
        self.set_metadata(name, metadata);
        Ok(Position(self.log.len() as u64 - 1))
    }

    fn read_stream(
        &self,
        name: &str,
        backwards: bool,
        from: Option<u64>,
        limit: usize,
    ) -> Outcome<Vec<(u64, Uuid)>> {
        let stream = self.stream(name);
        if stream.tombstoned {
            return Err(format!("deleted {name}"));
        }
        let len = stream.events.len() as u64;
        if len == 0 || stream.metadata.is_deleted() {
            return Err(format!("not found {name}"));
        }
        let lowest = stream.metadata.truncate_before.unwrap_or(0).max(
            stream
                .metadata
                .max_count
                .map_or(0, |c| len.saturating_sub(c)),
        );
        let revisions: Vec<u64> = if backwards {
            let start = from.unwrap_or(len - 1).min(len - 1);
            if start < lowest {
                vec![]
            } else {
                (lowest.max((start + 1).saturating_sub(limit as u64))..=start)
                    .rev()
                    .collect()
            }
        } else {
            let start = from.unwrap_or(0).max(lowest);
            (start..len.min(start + limit as u64)).collect()
        };
        Ok(revisions
            .into_iter()
            .map(|r| (r, stream.events[r as usize].0))
            .collect())
    }

    fn read_all(
        &self,
        backwards: bool,
        from: Option<u64>,
        limit: usize,
    ) -> Vec<(String, u64, u64)> {
        let all: Vec<_> = self
            .log
            .iter()
            .enumerate()
            .map(|(p, (s, r, _))| (s.clone(), *r, p as u64))
            .collect();
        if backwards {
            let Some(last) = (all.len() as u64).checked_sub(1) else {
                return vec![];
            };
            let start = from.unwrap_or(last).min(last) as usize;
            all[..=start].iter().rev().take(limit).cloned().collect()
        } else {
            all.into_iter()
                .skip(from.unwrap_or(0) as usize)
                .take(limit)
                .collect()
        }
    }
}

fn open(storage: &MemoryStorage) -> Store {
    Store::from_engine(
        Engine::open_storage(Arc::new(storage.clone()), Options::small_for_tests()).unwrap(),
    )
}

fn events_with(ids: &[Uuid]) -> Vec<EventData> {
    ids.iter()
        .map(|id| {
            EventData::json("E", &serde_json::json!({ "pad": "y".repeat(700) }))
                .unwrap()
                .with_id(*id)
        })
        .collect()
}

async fn run(ops: Vec<Op>) {
    let mut storage = MemoryStorage::new();
    let mut store = open(&storage);
    let mut model = Model::default();
    let mut last: Option<Vec<(String, ExpectedRevision, Vec<Uuid>)>> = None;
    for op in ops {
        match op {
            Op::Append { .. } | Op::Multi { .. } | Op::RetryLast => {
                let parts = match op {
                    Op::Append {
                        stream,
                        expected,
                        count,
                    } => {
                        vec![(
                            name(stream),
                            expected.get(),
                            (0..count).map(|_| Uuid::new_v4()).collect(),
                        )]
                    }
                    Op::Multi {
                        a,
                        b,
                        expected_a,
                        expected_b,
                        count,
                    } => vec![
                        (
                            name(a),
                            expected_a.get(),
                            (0..count).map(|_| Uuid::new_v4()).collect(),
                        ),
                        (
                            name(b),
                            expected_b.get(),
                            (0..count).map(|_| Uuid::new_v4()).collect(),
                        ),
                    ],
                    _ => match last.clone() {
                        Some(parts) => parts,
                        None => continue,
                    },
                };
                if parts.len() == 2 && parts[0].0 == parts[1].0 {
                    continue; // Duplicate streams are an input error, tested elsewhere.
                }
                let requests = parts
                    .iter()
                    .map(|(s, e, ids)| AppendRequest::new(s.clone(), *e, events_with(ids)))
                    .collect();
                let actual = store
                    .append_multi(requests)
                    .await
                    .map_err(|e| append_error(&e));
                let wanted = model.append(&parts);
                assert_eq!(actual, wanted, "append {parts:?}");
                if actual.is_ok() {
                    last = Some(parts);
                }
            }
            Op::ReadStream {
                stream,
                backwards,
                from,
                limit,
            } => {
                let options = ReadStreamOptions {
                    direction: if backwards {
                        strata::Direction::Backwards
                    } else {
                        strata::Direction::Forwards
                    },
                    from,
                    limit,
                };
                let actual = store
                    .read_stream(&name(stream), options)
                    .await
                    .map(|events| {
                        events
                            .iter()
                            .map(|e| (e.revision, e.id))
                            .collect::<Vec<_>>()
                    })
                    .map_err(|e| read_error(&e));
                assert_eq!(
                    actual,
                    model.read_stream(&name(stream), backwards, from, limit),
                    "read {stream} {options:?}"
                );
            }
            Op::ReadAll {
                backwards,
                from,
                limit,
            } => {
                let mut options = if backwards {
                    ReadAllOptions::backwards()
                } else {
                    ReadAllOptions::forwards()
                };
                options.from = from.map(Position);
                options.limit = limit;
                let actual: Vec<_> = store
                    .read_all(options)
                    .await
                    .unwrap()
                    .iter()
                    .map(|e| (e.stream.clone(), e.revision, e.position.0))
                    .collect();
                assert_eq!(actual, model.read_all(backwards, from, limit));
            }
            Op::Delete { stream, expected } => {
                let actual = store
                    .delete_stream(&name(stream), expected.get())
                    .await
                    .map_err(|e| append_error(&e));
                assert_eq!(actual, model.delete(&name(stream), expected.get(), false));
            }
            Op::Tombstone { stream } => {
                let actual = store
                    .tombstone_stream(&name(stream), ExpectedRevision::Any)
                    .await
                    .map_err(|e| append_error(&e));
                assert_eq!(
                    actual,
                    model.delete(&name(stream), ExpectedRevision::Any, true)
                );
            }
            Op::SetMaxCount { stream, max_count } => {
                let metadata = StreamMetadata {
                    max_count: Some(max_count),
                    ..StreamMetadata::default()
                };
                let actual = store
                    .set_stream_metadata(&name(stream), ExpectedRevision::Any, &metadata)
                    .await;
                assert!(actual.is_ok(), "{actual:?}");
                model.set_metadata(&name(stream), metadata);
            }
            Op::Restart => {
                store.close().await.unwrap();
                store = open(&storage);
            }
            Op::Crash { seed } => {
                let mode = if seed % 2 == 0 {
                    CrashMode::TornPrefix { seed }
                } else {
                    CrashMode::ScatteredSectors { seed }
                };
                storage = storage.crash(mode);
                drop(store);
                store = open(&storage);
            }
        }
    }
    let all = store.read_all(ReadAllOptions::forwards()).await.unwrap();
    assert_eq!(all.len(), model.log.len());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn the_store_behaves_like_the_model(ops in proptest::collection::vec(op(), 1..60)) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(run(ops));
    }
}
