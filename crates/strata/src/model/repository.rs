//! Loading aggregates and handling commands: load (snapshot + newer events), decide,
//! append at the loaded revision, retry on a conflict.

use std::marker::PhantomData;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::aggregate::Aggregate;
use super::codec;
use super::context::CommandContext;
use super::error::{HandleError, ModelError};
use super::snapshot::{Snapshot, SnapshotStore};
use super::upcast::Upcasters;
use crate::error::{AppendError, ReadError};
use crate::event::{EventData, Position, RecordedEvent, Timestamp};
use crate::filter::Filter;
use crate::revision::{CurrentRevision, ExpectedRevision};
use crate::store::{AppendRequest, AppendResult, ReadAllOptions, ReadStreamOptions, Store};

/// Events read per page when folding a stream.
const PAGE_EVENTS: usize = 4096;

/// The category of the streams that record handled command ids.
pub const COMMAND_CATEGORY: &str = "strata.command";

/// How a [`Repository`] behaves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepositoryConfig {
    /// How many times a command is tried when other writers change the aggregate in
    /// between (each attempt reloads and decides again).
    pub max_attempts: u32,
    /// Take a snapshot every this many events of an aggregate (`None`: only on demand).
    pub snapshot_every: Option<u64>,
}

impl Default for RepositoryConfig {
    fn default() -> Self {
        RepositoryConfig {
            max_attempts: 16,
            snapshot_every: None,
        }
    }
}

/// What a snapshot contributed to a load.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SnapshotUse {
    /// No snapshot was there (or no snapshot store is configured).
    None,
    /// The state started from the snapshot of this revision.
    Used {
        /// Revision of the snapshot.
        revision: u64,
    },
    /// A snapshot was there but unusable; the state was rebuilt from the events and the
    /// snapshot replaced.
    Ignored {
        /// Why.
        reason: String,
    },
}

/// A loaded aggregate.
#[derive(Clone, Debug)]
pub struct Loaded<A> {
    /// Its state.
    pub state: A,
    /// Revision of its last event (`None`: no events).
    pub revision: Option<u64>,
    /// Position of its last event.
    pub position: Option<Position>,
    /// How many events were read from the store to build it.
    pub events_read: u64,
    /// What the snapshot did.
    pub snapshot: SnapshotUse,
}

/// A point in time to evaluate an aggregate at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AsOf {
    /// Events up to and including this global position.
    Position(Position),
    /// Events recorded at or before this time.
    RecordedAt(Timestamp),
    /// Bi-temporal: what was known at `known_at` (recorded then) about `valid_at`
    /// (events whose business time, or recording time when they have none, is not later).
    KnownAt {
        /// Recording-time bound.
        known_at: Timestamp,
        /// Business-time bound.
        valid_at: Timestamp,
    },
}

/// The outcome of a handled command.
#[derive(Clone, Debug)]
pub struct Handled<A: Aggregate> {
    /// The aggregate's state after the command.
    pub state: A,
    /// The events the command produced.
    pub events: Vec<A::Event>,
    /// Where they were recorded (`None` if the command produced none).
    pub result: Option<AppendResult>,
    /// How many times the command was decided and appended (1 without conflicts; each
    /// conflict with another writer adds one).
    pub attempts: u32,
    /// Whether the command id was found already handled before deciding, so this is the
    /// first result read back. (A duplicate racing the first to the store also gets the
    /// first result, from the store's idempotency, with `replayed` false.)
    pub replayed: bool,
}

/// The outcome of a dry run: what a command would do, with nothing written.
#[derive(Clone, Debug)]
pub struct DryRun<A: Aggregate> {
    /// The state the command would leave.
    pub state: A,
    /// The events it would append.
    pub events: Vec<A::Event>,
    /// The revision it would append at.
    pub expected: ExpectedRevision,
}

/// What the command-id stream records.
#[derive(Debug, Serialize, Deserialize)]
struct CommandRecord {
    stream: String,
    count: usize,
}

/// Loads aggregates of type `A` and handles their commands.
pub struct Repository<A: Aggregate> {
    store: Store,
    snapshots: Option<Arc<dyn SnapshotStore>>,
    upcasters: Arc<Upcasters>,
    config: RepositoryConfig,
    aggregate: PhantomData<fn() -> A>,
}

impl<A: Aggregate> Clone for Repository<A> {
    fn clone(&self) -> Self {
        Repository {
            store: self.store.clone(),
            snapshots: self.snapshots.clone(),
            upcasters: self.upcasters.clone(),
            config: self.config.clone(),
            aggregate: PhantomData,
        }
    }
}

impl<A: Aggregate> Repository<A> {
    /// A repository on `store` with no snapshots and no upcasters.
    pub fn new(store: Store) -> Repository<A> {
        Repository {
            store,
            snapshots: None,
            upcasters: Arc::new(Upcasters::new()),
            config: RepositoryConfig::default(),
            aggregate: PhantomData,
        }
    }

    /// Keeps snapshots in `snapshots`.
    pub fn with_snapshots(mut self, snapshots: Arc<dyn SnapshotStore>) -> Repository<A> {
        self.snapshots = Some(snapshots);
        self
    }

    /// Upcasts old event versions with `upcasters`.
    pub fn with_upcasters(mut self, upcasters: Upcasters) -> Repository<A> {
        self.upcasters = Arc::new(upcasters);
        self
    }

    /// Sets the retry and snapshot policy.
    pub fn with_config(mut self, config: RepositoryConfig) -> Repository<A> {
        self.config = config;
        self
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Loads aggregate `id`: its snapshot (if usable) and the events after it.
    pub async fn load(&self, id: &str) -> Result<Loaded<A>, ModelError> {
        let stream = A::stream_name(id);
        let (mut loaded, stale) = self.start_from_snapshot(&stream, None).await?;
        let start = loaded.revision.map_or(0, |r| r + 1);
        if !self
            .fold(&stream, start, &mut loaded, |_| Fold::Apply)
            .await?
        {
            // The stream was truncated or deleted past the snapshot: start over.
            loaded = empty(SnapshotUse::Ignored {
                reason: "the stream no longer holds the events after the snapshot".into(),
            });
            self.fold(&stream, 0, &mut loaded, |_| Fold::Apply).await?;
        }
        if stale {
            self.save_snapshot(&stream, &loaded).await?;
        }
        Ok(loaded)
    }

    /// Evaluates aggregate `id` as of a point in time (time travel). Stored events are
    /// only read; snapshots are used when they are not newer than the point.
    pub async fn load_as_of(&self, id: &str, as_of: AsOf) -> Result<Loaded<A>, ModelError> {
        let stream = A::stream_name(id);
        let bound = match as_of {
            AsOf::Position(position) => Some(position),
            _ => None,
        };
        let (mut loaded, _) = self.start_from_snapshot(&stream, bound).await?;
        let start = loaded.revision.map_or(0, |r| r + 1);
        let decide = move |event: &RecordedEvent| match as_of {
            AsOf::Position(position) if event.position > position => Fold::Stop,
            AsOf::RecordedAt(time) if event.recorded_at > time => Fold::Stop,
            AsOf::KnownAt { known_at, .. } if event.recorded_at > known_at => Fold::Stop,
            AsOf::KnownAt { valid_at, .. }
                if event.valid_at.unwrap_or(event.recorded_at) > valid_at =>
            {
                Fold::Skip
            }
            _ => Fold::Apply,
        };
        if !self.fold(&stream, start, &mut loaded, decide).await? {
            loaded = empty(SnapshotUse::None);
            self.fold(&stream, 0, &mut loaded, decide).await?;
        }
        Ok(loaded)
    }

    /// Handles a command on aggregate `id`: load, decide, append at the loaded revision;
    /// on a conflict, reload and decide again (up to `max_attempts`). A refused command
    /// writes nothing. With a command id in `context`, a command already handled returns
    /// its first result and writes nothing.
    pub async fn handle(
        &self,
        id: &str,
        command: &A::Command,
        context: &CommandContext,
    ) -> Result<Handled<A>, HandleError<A::Error>> {
        let stream = A::stream_name(id);
        for attempt in 1..=self.config.max_attempts {
            if let Some(command_id) = context.command_id {
                if let Some(mut first) = self.first_result(command_id).await? {
                    first.attempts = attempt;
                    return Ok(first);
                }
            }
            let loaded = self.load(id).await?;
            let events = loaded.state.decide(command).map_err(HandleError::Domain)?;
            if events.is_empty() {
                return Ok(Handled {
                    state: loaded.state,
                    events,
                    result: None,
                    attempts: attempt,
                    replayed: false,
                });
            }
            let mut state = loaded.state.clone();
            for event in &events {
                state.apply(event);
            }
            let expected = loaded
                .revision
                .map_or(ExpectedRevision::NoStream, ExpectedRevision::Exact);
            let mut requests = vec![AppendRequest::new(
                &stream,
                expected,
                self.event_data(&events, context)?,
            )];
            if let Some(command_id) = context.command_id {
                requests.push(command_record(command_id, &stream, events.len())?);
            }
            match self.store.append_multi(requests).await {
                Ok(mut results) => {
                    let result = results.swap_remove(0);
                    let next = loaded.revision.map_or(0, |r| r + 1);
                    if result.first_revision != next {
                        // The store recognised the deterministic event ids: a concurrent
                        // caller of the same command recorded it first, after this one
                        // looked. Its result, not this decision, is the command's.
                        if let Some(command_id) = context.command_id {
                            if let Some(mut first) = self.first_result(command_id).await? {
                                first.attempts = attempt;
                                return Ok(first);
                            }
                        }
                    }
                    self.after_append(&stream, &state, &result, loaded.revision)
                        .await?;
                    return Ok(Handled {
                        state,
                        events,
                        result: Some(result),
                        attempts: attempt,
                        replayed: false,
                    });
                }
                Err(AppendError::WrongExpectedRevision { .. }) => continue,
                Err(error) => return Err(error.into()),
            }
        }
        Err(HandleError::TooManyConflicts {
            attempts: self.config.max_attempts,
        })
    }

    /// What `handle` would do, without writing anything.
    pub async fn dry_run(
        &self,
        id: &str,
        command: &A::Command,
    ) -> Result<DryRun<A>, HandleError<A::Error>> {
        let loaded = self.load(id).await?;
        let events = loaded.state.decide(command).map_err(HandleError::Domain)?;
        let mut state = loaded.state;
        for event in &events {
            state.apply(event);
        }
        Ok(DryRun {
            state,
            events,
            expected: loaded
                .revision
                .map_or(ExpectedRevision::NoStream, ExpectedRevision::Exact),
        })
    }

    /// Takes a snapshot of aggregate `id` now.
    pub async fn snapshot(&self, id: &str) -> Result<Loaded<A>, ModelError> {
        let stream = A::stream_name(id);
        let loaded = self.load(id).await?;
        self.save_snapshot(&stream, &loaded).await?;
        Ok(loaded)
    }

    /// Starts from the snapshot of `stream` if it is usable (and not past `bound`).
    /// Returns the starting point and whether a stale snapshot should be replaced.
    async fn start_from_snapshot(
        &self,
        stream: &str,
        bound: Option<Position>,
    ) -> Result<(Loaded<A>, bool), ModelError> {
        let Some(snapshots) = &self.snapshots else {
            return Ok((empty(SnapshotUse::None), false));
        };
        let Some(snapshot) = snapshots.load(stream).await? else {
            return Ok((empty(SnapshotUse::None), false));
        };
        if bound.is_some_and(|bound| snapshot.position > bound) {
            return Ok((empty(SnapshotUse::None), false));
        }
        if snapshot.state_version != A::STATE_VERSION {
            let reason = format!(
                "snapshot has state version {}, the aggregate declares {}",
                snapshot.state_version,
                A::STATE_VERSION
            );
            return Ok((empty(SnapshotUse::Ignored { reason }), true));
        }
        match serde_json::from_value::<A>(snapshot.state) {
            Ok(state) => Ok((
                Loaded {
                    state,
                    revision: Some(snapshot.revision),
                    position: Some(snapshot.position),
                    events_read: 0,
                    snapshot: SnapshotUse::Used {
                        revision: snapshot.revision,
                    },
                },
                false,
            )),
            Err(error) => {
                let reason = format!("snapshot does not decode: {error}");
                Ok((empty(SnapshotUse::Ignored { reason }), true))
            }
        }
    }

    /// Folds the events of `stream` from revision `start` into `loaded`. Returns false if
    /// the stream does not continue at `start` (events were truncated or deleted).
    async fn fold(
        &self,
        stream: &str,
        start: u64,
        loaded: &mut Loaded<A>,
        decide: impl Fn(&RecordedEvent) -> Fold,
    ) -> Result<bool, ModelError> {
        let mut next = start;
        let mut first_page = true;
        loop {
            let options = ReadStreamOptions::forwards()
                .from_revision(next)
                .limit(PAGE_EVENTS);
            let page = match self.store.read_stream(stream, options).await {
                Ok(page) => page,
                Err(ReadError::StreamNotFound { .. }) => {
                    return Ok(start == 0 || loaded.revision.is_none())
                }
                Err(error) => return Err(error.into()),
            };
            if first_page && start > 0 && page.first().is_some_and(|e| e.revision != start) {
                return Ok(false);
            }
            first_page = false;
            for event in &page {
                match decide(event) {
                    Fold::Stop => return Ok(true),
                    Fold::Skip => continue,
                    Fold::Apply => {}
                }
                for typed in codec::decode::<A::Event>(event, &self.upcasters)? {
                    loaded.state.apply(&typed);
                }
                loaded.revision = Some(event.revision);
                loaded.position = Some(event.position);
                loaded.events_read += 1;
            }
            match page.last() {
                Some(last) if page.len() == PAGE_EVENTS => next = last.revision + 1,
                _ => return Ok(true),
            }
        }
    }

    fn event_data(
        &self,
        events: &[A::Event],
        context: &CommandContext,
    ) -> Result<Vec<EventData>, ModelError> {
        let metadata = context.metadata();
        events
            .iter()
            .enumerate()
            .map(|(i, event)| {
                let mut data = codec::to_event_data(event, &self.upcasters, metadata.clone())?;
                if let Some(command_id) = context.command_id {
                    // The same command always produces the same ids.
                    data = data.with_id(Uuid::new_v5(&command_id, &(i as u64).to_le_bytes()));
                }
                if let Some(valid_at) = context.valid_at {
                    data = data.with_valid_at(valid_at);
                }
                Ok(data)
            })
            .collect()
    }

    async fn after_append(
        &self,
        stream: &str,
        state: &A,
        result: &AppendResult,
        before: Option<u64>,
    ) -> Result<(), ModelError> {
        let Some(every) = self.config.snapshot_every.filter(|n| *n > 0) else {
            return Ok(());
        };
        let count_before = before.map_or(0, |r| r + 1);
        let count_after = result.current_revision.next();
        if count_after / every > count_before / every {
            let loaded = Loaded {
                state: state.clone(),
                revision: count_after.checked_sub(1),
                position: result.last_position(),
                events_read: 0,
                snapshot: SnapshotUse::None,
            };
            self.save_snapshot(stream, &loaded).await?;
        }
        Ok(())
    }

    async fn save_snapshot(&self, stream: &str, loaded: &Loaded<A>) -> Result<(), ModelError> {
        let (Some(snapshots), Some(revision), Some(position)) =
            (&self.snapshots, loaded.revision, loaded.position)
        else {
            return Ok(());
        };
        let state =
            serde_json::to_value(&loaded.state).map_err(|e| ModelError::Snapshot(e.to_string()))?;
        snapshots
            .save(Snapshot {
                stream: stream.to_owned(),
                state_version: A::STATE_VERSION,
                revision,
                position,
                state,
            })
            .await
    }

    /// The first result of command `command_id`, if it was handled already.
    async fn first_result(&self, command_id: Uuid) -> Result<Option<Handled<A>>, ModelError> {
        let record_stream = command_stream(command_id);
        let records = match self
            .store
            .read_stream(&record_stream, ReadStreamOptions::forwards().limit(1))
            .await
        {
            Ok(records) => records,
            Err(ReadError::StreamNotFound { .. }) => return Ok(None),
            Err(error) => return Err(error.into()),
        };
        let Some(record_event) = records.first() else {
            return Ok(None);
        };
        let record: CommandRecord = record_event.json().map_err(|e| ModelError::Decode {
            stream: record_stream.clone(),
            revision: 0,
            event_type: record_event.event_type.clone(),
            reason: e.to_string(),
        })?;
        // The command's events were appended in the same frame, just before the record.
        let Some(before) = record_event.position.0.checked_sub(1) else {
            return Ok(None);
        };
        let options = ReadAllOptions::backwards()
            .from_position(Position(before))
            .limit(record.count)
            .filter(Filter::new().stream(&record.stream));
        let mut recorded = self.store.read_all(options).await?;
        recorded.reverse();
        let mut events = Vec::new();
        for event in &recorded {
            events.extend(codec::decode::<A::Event>(event, &self.upcasters)?);
        }
        let (Some(first), Some(last)) = (recorded.first(), recorded.last()) else {
            return Ok(None);
        };
        let id = record
            .stream
            .strip_prefix(&format!("{}-", A::CATEGORY))
            .unwrap_or(&record.stream)
            .to_owned();
        let state = self
            .load_as_of(&id, AsOf::Position(last.position))
            .await?
            .state;
        Ok(Some(Handled {
            state,
            events,
            result: Some(AppendResult {
                stream: record.stream.clone(),
                first_revision: first.revision,
                positions: recorded.iter().map(|e| e.position).collect(),
                current_revision: CurrentRevision::Current(last.revision),
            }),
            attempts: 1,
            replayed: true,
        }))
    }
}

/// What to do with an event while folding.
#[derive(Clone, Copy)]
enum Fold {
    Apply,
    Skip,
    Stop,
}

fn empty<A: Default>(snapshot: SnapshotUse) -> Loaded<A> {
    Loaded {
        state: A::default(),
        revision: None,
        position: None,
        events_read: 0,
        snapshot,
    }
}

/// The stream recording that command `command_id` was handled.
pub fn command_stream(command_id: Uuid) -> String {
    format!("{COMMAND_CATEGORY}-{command_id}")
}

fn command_record(
    command_id: Uuid,
    stream: &str,
    count: usize,
) -> Result<AppendRequest, ModelError> {
    let record = CommandRecord {
        stream: stream.to_owned(),
        count,
    };
    let event = EventData::json("CommandHandled", &record)
        .map_err(|e| ModelError::Encode {
            reason: e.to_string(),
        })?
        .with_id(Uuid::new_v5(&command_id, b"handled"));
    Ok(AppendRequest::new(
        command_stream(command_id),
        ExpectedRevision::NoStream,
        vec![event],
    ))
}
