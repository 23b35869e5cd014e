//! The single writer: every append goes through it, in batches (group commit).
//!
//! One loop on its own thread takes every append waiting in the queue, plans each
//! against the index and the appends before it, encodes the accepted ones as frames into
//! one buffer, writes the buffer with one call and syncs once. Only then does it update
//! the index, publish the new head and answer every append of the batch. If a write or a
//! sync fails, every append of the batch fails and the writer is poisoned: the kernel may
//! have dropped pages it could not write, so nothing is acknowledged until the store is
//! reopened and recovery has looked at what really is on disk.

mod plan;

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use super::format::{self, frame, record, segment};
use super::index::{checkpoint, IndexedRun, Location, METADATA_EVENT_TYPE, TOMBSTONE_EVENT_TYPE};
use super::indexer::Indexer;
use super::options::{Durability, PART_BYTES_MIN};
use super::recovery::create_segment;
use super::state::{SegmentInfo, Shared};
use crate::error::{AppendError, StorageError};
use crate::event::Timestamp;
use crate::store::AppendResult;

use plan::{Overlay, Planned, PlannedRun, Planner};
pub use plan::{Part, PartKind};

/// A request to the writer.
#[derive(Debug)]
pub enum Command {
    /// Append (one or many streams, all or nothing).
    Append {
        /// The parts.
        parts: Vec<Part>,
        /// Where the outcome goes.
        reply: oneshot::Sender<Result<Vec<AppendResult>, AppendError>>,
    },
    /// Write the index checkpoint now.
    Checkpoint {
        /// Where the outcome goes.
        reply: oneshot::Sender<Result<(), StorageError>>,
    },
}

impl Command {
    /// Bytes the command holds and will write: what it costs against the queue's and a
    /// batch's byte bounds.
    pub fn size_hint(&self) -> usize {
        match self {
            Command::Append { parts, .. } => parts_size(parts),
            // A checkpoint is written by the writer, not queued data; it still counts,
            // so a flood of them cannot make a batch unbounded in work.
            Command::Checkpoint { .. } => PART_BYTES_MIN,
        }
    }
}

/// Bytes `parts` cost in the queue and in a batch.
pub fn parts_size(parts: &[Part]) -> usize {
    parts
        .iter()
        .map(|part| {
            PART_BYTES_MIN
                + part
                    .events
                    .iter()
                    .map(|e| e.size_bytes() + record::HEADER_LEN)
                    .sum::<usize>()
        })
        .sum()
}

/// Where the outcome of an append goes.
type Reply = oneshot::Sender<Result<Vec<AppendResult>, AppendError>>;

/// A frame a batch wrote, to publish once durable.
struct FrameDone {
    segment: u32,
    offset: u32,
    first_position: u64,
    end_position: u64,
    length: u32,
}

/// A run of one stream's events a batch wrote, to index once durable.
struct RunDone {
    stream: Arc<str>,
    first_revision: u64,
    locations: Vec<Location>,
    first_id: uuid::Uuid,
    tombstone: bool,
    metadata: Option<Bytes>,
}

/// What a batch put on disk.
#[derive(Default)]
struct BatchOutput {
    created: Vec<SegmentInfo>,
    frames: Vec<FrameDone>,
    runs: Vec<RunDone>,
}

/// The writer's own state.
pub struct Writer {
    shared: Arc<Shared>,
    /// Segment currently written: number, name, file.
    tail: SegmentInfo,
    /// The tail segment's open file, held by the writer for as long as it writes there
    /// (the handle cache may close its own copy; this one stays valid).
    tail_file: Arc<dyn crate::io::StorageFile>,
    /// The store's id, written into every new segment's header.
    store_id: uuid::Uuid,
    last_recorded_at: u64,
    bytes_since_checkpoint: u64,
    last_checkpoint_bytes: u64,
    /// A periodic checkpoint being written by a helper thread (at most one at a time, so
    /// two writes never share the temporary file).
    checkpoint_in_flight: Option<std::thread::JoinHandle<Result<(), StorageError>>>,
    /// Reused from batch to batch to keep its allocations.
    overlay: Overlay,
    buffer: Vec<u8>,
    /// The durable-point marker for readers in other processes (`None`: it could not
    /// be opened; it is only a hint, so the store works without it).
    durable_marker: Option<Arc<dyn crate::io::StorageFile>>,
    /// Builds the table of every segment the writer seals.
    indexer: Indexer,
}

impl Writer {
    /// A writer that continues the last segment of `shared`.
    /// `unindexed`: the sealed segments that have no table yet.
    pub fn new(
        shared: Arc<Shared>,
        last_recorded_at: u64,
        unindexed: Vec<u32>,
    ) -> Result<Writer, StorageError> {
        let shared_for_marker = shared.storage.clone();
        let (tail, store_id) = {
            let segments = shared.segments();
            let last = segments
                .list
                .last()
                .unwrap_or_else(|| unreachable!("recovery creates a segment"));
            let tail = SegmentInfo {
                number: last.number,
                name: last.name.clone(),
                first_position: last.first_position,
                file: last.file.clone(),
                sparse: Vec::new(),
                end_offset: last.end_offset,
                end_position: last.end_position,
                last_frame_offset: last.last_frame_offset,
            };
            (tail, segments.store_id)
        };
        let tail_file = tail.file.open()?;
        let indexer = Indexer::start(shared.clone(), unindexed)?;
        Ok(Writer {
            shared,
            tail,
            tail_file,
            store_id,
            last_recorded_at,
            bytes_since_checkpoint: 0,
            last_checkpoint_bytes: 0,
            checkpoint_in_flight: None,
            overlay: Overlay::default(),
            buffer: Vec::new(),
            durable_marker: open_durable_marker(&*shared_for_marker),
            indexer,
        })
    }

    /// Runs until every sender is gone, then writes a final checkpoint.
    pub fn run(mut self, mut queue: mpsc::Receiver<Command>) {
        let batch_bytes_max = self.shared.options.batch_bytes_max;
        // A batch takes at most a queue's worth of commands, so it is bounded in count
        // as well as in bytes.
        let batch_commands_max = self.shared.options.write_queue_max;
        let mut batch = Vec::new();
        while let Some(first) = queue.blocking_recv() {
            let mut bytes = first.size_hint();
            batch.push(first);
            while bytes < batch_bytes_max && batch.len() < batch_commands_max {
                match queue.try_recv() {
                    Ok(command) => {
                        bytes += command.size_hint();
                        batch.push(command);
                    }
                    Err(_) => break,
                }
            }
            self.process(&mut batch);
        }
        // The table being built is finished first, so the checkpoint does not carry a
        // memtable the table already replaced.
        self.indexer.stop();
        if self.shared.poison_error().is_none() {
            if let Err(error) = self.checkpoint() {
                tracing::warn!(%error, "could not write the index checkpoint at close");
            }
        }
        // Never leave a checkpoint write running past the lock's release.
        self.finish_background_checkpoint();
    }

    fn process(&mut self, batch: &mut Vec<Command>) {
        let mut appends = Vec::new();
        let mut checkpoints = Vec::new();
        for command in batch.drain(..) {
            match command {
                Command::Append { parts, reply } => appends.push((parts, reply)),
                Command::Checkpoint { reply } => checkpoints.push(reply),
            }
        }
        if !appends.is_empty() {
            self.append_batch(appends);
        }
        if !checkpoints.is_empty() {
            let outcome = match self.shared.poison_error() {
                Some(error) => Err(error),
                None => self.checkpoint(),
            };
            for reply in checkpoints {
                let _ = reply.send(outcome.clone());
            }
        }
        if self.bytes_since_checkpoint
            >= self
                .shared
                .options
                .checkpoint_interval_bytes
                .max(self.last_checkpoint_bytes)
            && self.shared.poison_error().is_none()
        {
            self.checkpoint_in_background();
        }
    }

    /// Plans, writes, syncs and publishes one batch of appends, then answers them.
    fn append_batch(&mut self, appends: Vec<(Vec<Part>, Reply)>) {
        if let Some(error) = self.shared.poison_error() {
            for (_, reply) in appends {
                let _ = reply.send(Err(error.clone().into()));
            }
            return;
        }
        let mut outcomes = Vec::with_capacity(appends.len());
        let mut replies = Vec::with_capacity(appends.len());
        let outcome = self.write_batch(appends, &mut outcomes, &mut replies);
        match outcome {
            Ok(output) => {
                self.publish(output);
                self.mark_durable();
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    let _ = reply.send(outcome);
                }
            }
            Err(error) => {
                self.poison(&error);
                self.drop_unpublished();
                for reply in replies {
                    let _ = reply.send(Err(error.clone().into()));
                }
            }
        }
    }

    /// Plans and encodes the batch, writes it and syncs. Returns what was written.
    fn write_batch(
        &mut self,
        appends: Vec<(Vec<Part>, Reply)>,
        outcomes: &mut Vec<Result<Vec<AppendResult>, AppendError>>,
        replies: &mut Vec<Reply>,
    ) -> Result<BatchOutput, StorageError> {
        let shared = self.shared.clone();
        let index = shared.index();
        self.overlay.clear();
        let mut output = BatchOutput::default();
        let mut buffer = std::mem::take(&mut self.buffer);
        buffer.clear();
        let mut buffer_offset = u64::from(self.tail.end_offset);
        let mut batch_offset = self.tail.end_offset;
        let mut next_position = self.tail.end_position;
        let capacity = u64::from(shared.options.segment_size_bytes);
        // Every reply is kept before anything can fail, so that a failure answers every
        // append of the batch with the error, not with a dropped channel.
        let (all_parts, all_replies): (Vec<_>, Vec<_>) = appends.into_iter().unzip();
        replies.extend(all_replies);
        for parts in all_parts {
            let planned = Planner {
                shared: &shared,
                index: &index,
                overlay: &mut self.overlay,
                frame_bytes_max: capacity - segment::HEADER_LEN as u64,
            }
            .plan(parts, next_position);
            let (runs, results) = match planned {
                Ok(Planned::Write { runs, results }) => (runs, results),
                Ok(Planned::Retry(results)) => {
                    outcomes.push(Ok(results));
                    continue;
                }
                Err(error) => {
                    outcomes.push(Err(error));
                    continue;
                }
            };
            if runs.is_empty() {
                outcomes.push(Ok(results));
                continue;
            }
            let size = frame_size(&runs);
            let end = buffer_offset + buffer.len() as u64;
            if end + size > capacity && end > segment::HEADER_LEN as u64 {
                // Seal the current segment: write and sync what it has, then start the
                // next one, so every segment but the last is complete and durable.
                self.write_and_sync(&buffer, buffer_offset)?;
                if self.shared.options.durability != Durability::Fsync {
                    // A sealed segment is always synced, whatever the durability: damage
                    // in a sealed segment is reported as corruption at the next open.
                    self.tail_file
                        .sync_data()
                        .map_err(|e| StorageError::io("fdatasync", &self.tail.name, e))?;
                }
                buffer.clear();
                let next = create_segment(
                    &*shared.storage,
                    &shared.handles,
                    self.tail.number + 1,
                    next_position,
                    self.store_id,
                )?;
                output.created.push(SegmentInfo {
                    number: next.number,
                    name: next.name.clone(),
                    first_position: next.first_position,
                    file: next.file.clone(),
                    sparse: Vec::new(),
                    end_offset: next.end_offset,
                    end_position: next.end_position,
                    last_frame_offset: None,
                });
                self.tail_file = next.file.open()?;
                self.tail = next;
                buffer_offset = segment::HEADER_LEN as u64;
                batch_offset = segment::HEADER_LEN as u32;
            }
            let frame_offset = buffer_offset + buffer.len() as u64;
            let count =
                self.encode_frame(&mut buffer, &runs, batch_offset, frame_offset, &mut output);
            output.frames.push(FrameDone {
                segment: self.tail.number,
                offset: frame_offset as u32,
                first_position: next_position,
                end_position: next_position + count,
                length: (buffer_offset + buffer.len() as u64 - frame_offset) as u32,
            });
            next_position += count;
            outcomes.push(Ok(results));
        }
        drop(index);
        let written = if buffer.is_empty() {
            Ok(())
        } else {
            self.write_and_sync(&buffer, buffer_offset)
        };
        self.buffer = buffer;
        written?;
        Ok(output)
    }

    /// Encodes one frame at the end of `buffer` (which will be written at `frame_offset`
    /// minus what it already holds) and notes where each event goes. Returns the number
    /// of events.
    fn encode_frame(
        &mut self,
        buffer: &mut Vec<u8>,
        runs: &[PlannedRun],
        batch_offset: u32,
        frame_offset: u64,
        output: &mut BatchOutput,
    ) -> u64 {
        let now = Timestamp::now().as_micros();
        let buffer_base = frame_offset - (buffer.len() as u64);
        let start = frame::begin(buffer, runs[0].first_position, batch_offset);
        let mut count = 0u64;
        for run in runs {
            let mut locations = Vec::with_capacity(run.events.len());
            let mut tombstone = false;
            let mut metadata = None;
            for (i, event) in run.events.iter().enumerate() {
                let wanted = event.recorded_at.map_or(now, Timestamp::as_micros);
                // recorded_at never goes backwards along the log, whatever the clock does.
                self.last_recorded_at = self.last_recorded_at.max(wanted);
                locations.push(Location::new(
                    self.tail.number,
                    (buffer_base + buffer.len() as u64) as u32,
                ));
                record::RecordFields {
                    position: run.first_position + i as u64,
                    revision: run.first_revision + i as u64,
                    recorded_at: Timestamp::from_micros(self.last_recorded_at),
                    id: event.id,
                    content_type: event.content_type,
                    valid_at: event.valid_at,
                    stream: &run.stream,
                    event_type: &event.event_type,
                    data: &event.data,
                    metadata: &event.metadata,
                }
                .encode(buffer);
                tombstone |= event.event_type == TOMBSTONE_EVENT_TYPE;
                if event.event_type == METADATA_EVENT_TYPE {
                    metadata = Some(event.data.clone());
                }
            }
            count += run.events.len() as u64;
            output.runs.push(RunDone {
                stream: run.stream.clone(),
                first_revision: run.first_revision,
                locations,
                first_id: run.events[0].id,
                tombstone,
                metadata,
            });
        }
        frame::finish(buffer, start, count as u32);
        count
    }

    fn write_and_sync(&mut self, bytes: &[u8], offset: u64) -> Result<(), StorageError> {
        let file = &self.tail_file;
        file.write_at(bytes, offset)
            .map_err(|e| StorageError::io("write", &self.tail.name, e))?;
        if self.shared.options.durability == Durability::Fsync {
            file.sync_data()
                .map_err(|e| StorageError::io("fdatasync", &self.tail.name, e))?;
        }
        self.bytes_since_checkpoint += bytes.len() as u64;
        Ok(())
    }

    /// Rewrites the durable-point marker after a synced batch (a hint: not synced, and a
    /// failure only stops the hint).
    fn mark_durable(&mut self) {
        if self.shared.options.durability != Durability::Fsync {
            // Without syncs nothing is proven durable: readers fall back on sealed
            // segments and later batches.
            return;
        }
        let Some(marker) = &self.durable_marker else {
            return;
        };
        let point = format::durable::DurablePoint {
            segment: self.tail.number,
            end_offset: self.tail.end_offset,
            end_position: self.tail.end_position,
        };
        if let Err(error) = marker.write_at(&point.encode(), 0) {
            tracing::warn!(%error, "cannot update the durable-point marker; live readers in other processes will lag");
            self.durable_marker = None;
        }
    }

    /// Makes a durable batch visible: segments first (so the index never points past
    /// them), then the index, then the head.
    fn publish(&mut self, output: BatchOutput) {
        let shared = self.shared.clone();
        // Every segment before a created one is sealed now: it gets its table.
        let sealed: Vec<u32> = output.created.iter().map(|s| s.number - 1).collect();
        {
            let mut segments = shared.segments_mut();
            segments.list.extend(output.created);
            let first = segments.list.first().map_or(0, |s| s.number);
            for frame in &output.frames {
                let info = &mut segments.list[(frame.segment - first) as usize];
                info.add_frame(
                    frame.first_position,
                    frame.end_position,
                    frame.offset,
                    frame.length,
                );
            }
            self.tail.end_offset = segments.list.last().map_or(0, |s| s.end_offset);
            self.tail.end_position = segments.next_position();
        }
        let outcome = {
            let mut index = shared.index_mut();
            output.runs.iter().try_for_each(|run| {
                index.apply(&IndexedRun {
                    stream: &run.stream,
                    first_revision: run.first_revision,
                    locations: &run.locations,
                    first_id: run.first_id,
                    tombstone: run.tombstone,
                    metadata: run.metadata.as_deref(),
                })
            })
        };
        if let Err(error) = outcome {
            // The planner checked every revision against the same index: a bug.
            self.poison(&StorageError::corrupt(
                segment::file_name(self.tail.number),
                0,
                error.0,
            ));
        }
        shared.publish_head();
        for number in sealed {
            self.indexer.sealed(number);
        }
    }

    /// After a failed write or sync, cuts what the failed batch wrote off every segment
    /// it touched (best effort): after a failed fsync the kernel may have marked those
    /// pages clean without writing them, and a later open must not serve bytes that may
    /// not be on disk. A batch that rolled to a new segment had already synced its first
    /// frames into the previous one: they are cut too (the callers were told nothing was
    /// written), and the segments it created are removed (they would start after frames
    /// that no longer exist).
    fn drop_unpublished(&mut self) {
        let (published_number, published_end) = {
            let segments = self.shared.segments();
            let last = segments
                .list
                .last()
                .unwrap_or_else(|| unreachable!("a store always has a segment"));
            (last.number, last.end_offset)
        };
        let storage = &*self.shared.storage;
        // Every segment after the published one was created by the failed batch, even
        // one whose creation itself failed half way (so `self.tail` may not name it).
        let mut outcome = storage.list().and_then(|names| {
            let mut created: Vec<u32> = names
                .iter()
                .filter_map(|name| segment::parse_file_name(name))
                .filter(|&number| number > published_number)
                .collect();
            created.sort_unstable();
            for &number in created.iter().rev() {
                self.shared.handles.forget(number);
                storage.remove(&segment::file_name(number))?;
            }
            if created.is_empty() {
                Ok(())
            } else {
                storage.sync_dir()
            }
        });
        let name = segment::file_name(published_number);
        outcome = outcome.and_then(|()| {
            let file = storage.open(&name)?;
            file.set_len(u64::from(published_end))?;
            file.sync_data()
        });
        if let Err(error) = outcome {
            tracing::warn!(%error, file = name, "could not cut the failed batch off the log");
        }
    }

    fn poison(&self, error: &StorageError) {
        tracing::error!(%error, "the writer stopped: appends fail until the store is reopened");
        let mut poisoned = self
            .shared
            .poisoned
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        poisoned.get_or_insert_with(|| error.to_string());
    }

    /// Writes the index checkpoint for everything durable so far, and waits for it.
    fn checkpoint(&mut self) -> Result<(), StorageError> {
        self.finish_background_checkpoint();
        let bytes = self.encode_checkpoint();
        checkpoint::write(&*self.shared.storage, &bytes)
            .map_err(|e| StorageError::io("write", checkpoint::FILE_NAME, e))
    }

    /// Encodes the checkpoint (appends wait for this part, a copy of the indexes) and
    /// leaves writing and syncing it to a helper thread, unless one is still busy.
    fn checkpoint_in_background(&mut self) {
        if self
            .checkpoint_in_flight
            .as_ref()
            .is_some_and(|h| !h.is_finished())
        {
            return;
        }
        self.finish_background_checkpoint();
        let bytes = self.encode_checkpoint();
        let storage = self.shared.storage.clone();
        let spawned = std::thread::Builder::new()
            .name("strata-checkpoint".into())
            .spawn(move || {
                checkpoint::write(&*storage, &bytes)
                    .map_err(|e| StorageError::io("write", checkpoint::FILE_NAME, e))
            });
        match spawned {
            Ok(handle) => self.checkpoint_in_flight = Some(handle),
            Err(error) => tracing::warn!(%error, "could not start the checkpoint thread"),
        }
    }

    /// Waits for a background checkpoint, logging its failure (the checkpoint is derived
    /// data: a failed one only makes the next open scan more of the log).
    fn finish_background_checkpoint(&mut self) {
        if let Some(handle) = self.checkpoint_in_flight.take() {
            match handle.join() {
                Ok(Ok(())) => {}
                Ok(Err(error)) => tracing::warn!(%error, "could not write the index checkpoint"),
                Err(_) => tracing::warn!("the checkpoint thread panicked"),
            }
        }
    }

    fn encode_checkpoint(&mut self) -> Vec<u8> {
        let bytes = {
            let segments = self.shared.segments();
            let index = self.shared.index();
            checkpoint::encode(&segments, &index)
        };
        self.bytes_since_checkpoint = 0;
        self.last_checkpoint_bytes = bytes.len() as u64;
        bytes
    }
}

fn frame_size(runs: &[PlannedRun]) -> u64 {
    let records: u64 = runs
        .iter()
        .flat_map(|run| run.events.iter().map(|e| plan::encoded_len(&run.stream, e)))
        .sum();
    frame::HEADER_LEN as u64 + records
}

/// Opens (or creates) the durable-point marker; `None` if that fails.
fn open_durable_marker(
    storage: &dyn crate::io::Storage,
) -> Option<Arc<dyn crate::io::StorageFile>> {
    let name = format::durable::FILE_NAME;
    match storage.open(name).or_else(|_| storage.create(name)) {
        Ok(file) => Some(file),
        Err(error) => {
            tracing::warn!(%error, "cannot open the durable-point marker");
            None
        }
    }
}
