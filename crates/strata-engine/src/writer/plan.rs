//! Deciding what an append writes: expected revisions, idempotent retries, deletes.
//!
//! Runs on the writer thread against the durable index plus an overlay of what earlier
//! appends of the same batch will write, so that appends in one batch see each other.

use std::collections::HashMap;
use std::sync::Arc;

use uuid::Uuid;

use crate::error::{AppendError, InvalidInput, StorageError};
use crate::event::{EventData, Position};
use crate::format::{frame, record};
use crate::index::{Index, METADATA_EVENT_TYPE, TOMBSTONE_EVENT_TYPE};
use crate::metadata::StreamMetadata;
use crate::reader;
use crate::revision::{CurrentRevision, ExpectedRevision};
use crate::state::Shared;
use crate::store::AppendResult;
use crate::stream;
use crate::write::{self, TargetState};

/// What one part of an append asks for.
pub use crate::write::WriteKind as PartKind;

/// One stream's part of an append, as the writer receives it.
#[derive(Debug)]
pub struct Part {
    /// The stream the request names (for deletes: the stream being deleted).
    pub stream: String,
    /// What the caller expects of that stream.
    pub expected: ExpectedRevision,
    /// The events (empty for deletes).
    pub events: Vec<EventData>,
    /// What to do.
    pub kind: PartKind,
}

/// Consecutive events of one stream to encode.
#[derive(Debug)]
pub struct PlannedRun {
    /// Their stream.
    pub stream: Arc<str>,
    /// Revision of the first.
    pub first_revision: u64,
    /// Position of the first.
    pub first_position: u64,
    /// The events.
    pub events: Vec<EventData>,
}

/// What the writer does with an append.
#[derive(Debug)]
pub enum Planned {
    /// An exact retry of an append already recorded: reply with the original result.
    Retry(Vec<AppendResult>),
    /// Write these events as one frame, then reply with the results.
    Write {
        /// The events, in log order, by stream.
        runs: Vec<PlannedRun>,
        /// One result per part.
        results: Vec<AppendResult>,
    },
}

#[derive(Clone, Debug, Default)]
struct PendingStream {
    next_revision: u64,
    tombstoned: bool,
    metadata: Option<Arc<StreamMetadata>>,
    /// Events of this batch not yet durable: (revision, id, position).
    events: Vec<(u64, Uuid, u64)>,
}

/// The state of streams as earlier appends of the current batch leave them.
#[derive(Default)]
pub struct Overlay {
    streams: HashMap<String, PendingStream>,
    /// First event id of each append in the batch: its stream and revision.
    ids: HashMap<Uuid, (String, u64)>,
}

impl Overlay {
    /// Forgets the batch, keeping the allocations for the next one.
    pub fn clear(&mut self) {
        self.streams.clear();
        self.ids.clear();
    }
}

/// A stream's state as the planner sees it.
struct View {
    next_revision: u64,
    tombstoned: bool,
    deleted: bool,
    metadata: Option<Arc<StreamMetadata>>,
}

impl View {
    fn current(&self) -> CurrentRevision {
        if self.deleted || self.next_revision == 0 {
            CurrentRevision::NoStream
        } else {
            CurrentRevision::Current(self.next_revision - 1)
        }
    }
}

/// The planner for one batch.
pub struct Planner<'a> {
    /// For reading recorded events (idempotency checks).
    pub shared: &'a Shared,
    /// The durable index.
    pub index: &'a Index,
    /// What earlier appends of the batch write.
    pub overlay: &'a mut Overlay,
    /// The largest frame a segment can hold.
    pub frame_bytes_max: u64,
}

enum PartOutcome {
    Retry(AppendResult),
    New,
}

impl Planner<'_> {
    fn view(&self, name: &str) -> View {
        if let Some(pending) = self.overlay.streams.get(name) {
            return View {
                next_revision: pending.next_revision,
                tombstoned: pending.tombstoned,
                deleted: pending.metadata.as_ref().is_some_and(|m| m.is_deleted()),
                metadata: pending.metadata.clone(),
            };
        }
        match self.index.heads.get(name) {
            Some(entry) => View {
                next_revision: entry.next_revision(),
                tombstoned: entry.tombstoned,
                deleted: entry.is_deleted(),
                metadata: entry.metadata.clone(),
            },
            None => View {
                next_revision: 0,
                tombstoned: false,
                deleted: false,
                metadata: None,
            },
        }
    }

    fn pending(&mut self, name: &str) -> &mut PendingStream {
        if !self.overlay.streams.contains_key(name) {
            let view = self.view(name);
            self.overlay.streams.insert(
                name.to_owned(),
                PendingStream {
                    next_revision: view.next_revision,
                    tombstoned: view.tombstoned,
                    metadata: view.metadata,
                    events: Vec::new(),
                },
            );
        }
        self.overlay
            .streams
            .get_mut(name)
            .unwrap_or_else(|| unreachable!("inserted above"))
    }

    /// The id and position of the event at `revision` of `name`, durable or pending.
    fn recorded(&self, name: &str, revision: u64) -> Result<Option<(Uuid, u64)>, StorageError> {
        if let Some(pending) = self.overlay.streams.get(name) {
            if let Some(&(_, id, position)) = pending.events.iter().find(|e| e.0 == revision) {
                return Ok(Some((id, position)));
            }
        }
        let recorded = self
            .index
            .heads
            .get(name)
            .is_some_and(|entry| revision < entry.next_revision);
        if !recorded {
            return Ok(None);
        }
        let lookup = self.index.lookup(name, revision, revision + 1);
        let events = reader::read_revisions(self.shared, name, revision, &lookup)?;
        let event = events.first().ok_or(StorageError::Closed)?;
        Ok(Some((event.id, event.position.0)))
    }

    /// Where an earlier write of `id` to `name` put it, if the window remembers it.
    fn recent_revision(&self, name: &str, id: &Uuid) -> Result<Option<u64>, StorageError> {
        if let Some((stream, revision)) = self.overlay.ids.get(id) {
            return Ok((stream == name).then_some(*revision));
        }
        let Some(location) = self.index.recent.get(id) else {
            return Ok(None);
        };
        let event = reader::read_locations(self.shared, &[location])?;
        Ok(event
            .first()
            .filter(|e| e.stream == name && e.id == *id)
            .map(|e| e.revision))
    }

    /// Checks one part: an exact retry, a valid new append, or an error.
    fn check(&self, part: &Part) -> Result<PartOutcome, AppendError> {
        let view = self.view(&part.stream);
        if view.tombstoned {
            return Err(AppendError::StreamDeleted {
                stream: part.stream.clone(),
            });
        }
        if part.kind == PartKind::Append && !part.events.is_empty() {
            if let Some(result) = self.retry_of(part, &view)? {
                return Ok(PartOutcome::Retry(result));
            }
        }
        let current = view.current();
        if !part.expected.is_satisfied_by(current) {
            return Err(AppendError::WrongExpectedRevision {
                stream: part.stream.clone(),
                expected: part.expected,
                actual: current,
            });
        }
        Ok(PartOutcome::New)
    }

    /// If the part's events are already recorded in its stream in the same order, the
    /// original result; if only some are, a conflict.
    fn retry_of(&self, part: &Part, view: &View) -> Result<Option<AppendResult>, AppendError> {
        let first = &part.events[0];
        let candidate = match part.expected {
            ExpectedRevision::Exact(revision)
                if revision
                    .checked_add(1)
                    .is_some_and(|next| next < view.next_revision) =>
            {
                Some(revision + 1)
            }
            ExpectedRevision::NoStream if view.next_revision > 0 => Some(0),
            _ => None,
        };
        let candidate = match candidate {
            Some(revision)
                if self.recorded(&part.stream, revision)?.map(|r| r.0) == Some(first.id) =>
            {
                Some(revision)
            }
            _ => self.recent_revision(&part.stream, &first.id)?,
        };
        let Some(start) = candidate else {
            return Ok(None);
        };
        let mut positions = Vec::with_capacity(part.events.len());
        for (i, event) in part.events.iter().enumerate() {
            match self.recorded(&part.stream, start + i as u64)? {
                Some((id, position)) if id == event.id => positions.push(Position(position)),
                _ => {
                    return Err(AppendError::IdempotencyConflict {
                        stream: part.stream.clone(),
                        event_id: event.id,
                    })
                }
            }
        }
        Ok(Some(AppendResult {
            stream: part.stream.clone(),
            first_revision: start,
            current_revision: CurrentRevision::Current(start + positions.len() as u64 - 1),
            positions,
        }))
    }

    /// Plans a whole append (all its parts), starting at log position `next_position`.
    pub fn plan(&mut self, parts: Vec<Part>, next_position: u64) -> Result<Planned, AppendError> {
        for (i, part) in parts.iter().enumerate() {
            if parts[..i].iter().any(|p| p.stream == part.stream) {
                return Err(InvalidInput::DuplicateStream {
                    stream: part.stream.clone(),
                }
                .into());
            }
        }
        let mut retries = Vec::new();
        for part in &parts {
            if let PartOutcome::Retry(result) = self.check(part)? {
                retries.push(result);
            }
        }
        if !retries.is_empty() {
            if retries.len() == parts.len() {
                return Ok(Planned::Retry(retries));
            }
            let first = &retries[0];
            let part = parts.iter().find(|p| p.stream == first.stream);
            return Err(AppendError::IdempotencyConflict {
                stream: first.stream.clone(),
                event_id: part.map(|p| p.events[0].id).unwrap_or_default(),
            });
        }
        let expanded: Vec<_> = parts.into_iter().map(|part| self.expand(part)).collect();
        let size = frame::HEADER_LEN as u64
            + expanded
                .iter()
                .flat_map(|(_, runs)| runs)
                .flat_map(|(name, events)| events.iter().map(|event| encoded_len(name, event)))
                .sum::<u64>();
        if size > self.frame_bytes_max {
            return Err(InvalidInput::AppendTooLarge {
                size: size as usize,
                max: self.frame_bytes_max as usize,
            }
            .into());
        }
        let mut runs = Vec::new();
        let mut results = Vec::with_capacity(expanded.len());
        let mut position = next_position;
        for (stream, to_write) in expanded {
            let mut first_revision = None;
            let mut positions = Vec::new();
            for (name, events) in to_write {
                if name == stream {
                    first_revision.get_or_insert(self.pending(&name).next_revision);
                    positions.extend((0..events.len() as u64).map(|i| Position(position + i)));
                }
                self.push_run(&name, events, &mut runs, &mut position);
            }
            let first_revision = first_revision.unwrap_or_else(|| self.view(&stream).next_revision);
            let current_revision = self.view(&stream).current();
            results.push(AppendResult {
                stream,
                first_revision,
                positions,
                current_revision,
            });
        }
        Ok(Planned::Write { runs, results })
    }

    /// The events a part writes, with their streams (deletes and revivals write metadata
    /// events), and the stream its result describes. Changes nothing.
    #[allow(clippy::type_complexity)]
    fn expand(&self, part: Part) -> (String, Vec<(String, Vec<EventData>)>) {
        let view = self.view(&part.stream);
        let state = TargetState {
            next_revision: view.next_revision,
            deleted: view.deleted,
            metadata: view.metadata.as_deref(),
        };
        write::expand(part.kind, part.stream, part.events, state)
    }

    /// Adds a run of one stream's events to the frame and to the overlay.
    fn push_run(
        &mut self,
        name: &str,
        events: Vec<EventData>,
        runs: &mut Vec<PlannedRun>,
        position: &mut u64,
    ) {
        let Some(first) = events.first() else {
            return;
        };
        let first_id = first.id;
        let pending = self.pending(name);
        let first_revision = pending.next_revision;
        let count = events.len() as u64;
        pending.events.extend(
            events
                .iter()
                .enumerate()
                .map(|(i, e)| (first_revision + i as u64, e.id, *position + i as u64)),
        );
        pending.next_revision += count;
        // System event types only appear in system-written runs (users cannot use `$`).
        if !stream::is_system(name) && events.iter().any(|e| e.event_type == TOMBSTONE_EVENT_TYPE) {
            pending.tombstoned = true;
        }
        if let Some(target) = stream::metastream_target(name) {
            let last = events
                .iter()
                .rev()
                .find(|e| e.event_type == METADATA_EVENT_TYPE);
            if let Some(metadata) = last.and_then(|e| StreamMetadata::from_slice(&e.data).ok()) {
                self.pending(target).metadata = Some(Arc::new(metadata));
            }
        }
        self.overlay
            .ids
            .insert(first_id, (name.to_owned(), first_revision));
        runs.push(PlannedRun {
            stream: Arc::from(name),
            first_revision,
            first_position: *position,
            events,
        });
        *position += count;
    }
}

/// The encoded size of an event's record.
pub fn encoded_len(stream: &str, event: &EventData) -> u64 {
    (record::HEADER_LEN
        + if event.valid_at.is_some() { 8 } else { 0 }
        + stream.len()
        + event.event_type.len()
        + event.data.len()
        + event.metadata.len()) as u64
}
