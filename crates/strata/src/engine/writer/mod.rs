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

use std::ops::ControlFlow;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use super::format::{frame, record, segment};
use super::index::{checkpoint, IndexedEvent, Location};
use super::options::Durability;
use super::recovery::create_segment;
use super::state::{SegmentInfo, Shared};
use crate::error::{AppendError, StorageError};
use crate::event::Timestamp;
use crate::store::AppendResult;

pub use plan::{metadata_event, Part, PartKind};
use plan::{Overlay, Planned, PlannedEvent, Planner};

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
    fn size_hint(&self) -> usize {
        match self {
            Command::Append { parts, .. } => parts
                .iter()
                .flat_map(|p| &p.events)
                .map(|e| e.size_bytes() + record::HEADER_LEN)
                .sum(),
            Command::Checkpoint { .. } => 0,
        }
    }
}

/// Where the outcome of an append goes.
type Reply = oneshot::Sender<Result<Vec<AppendResult>, AppendError>>;

/// Bytes written to one segment in a batch, kept to update the index once durable.
struct Written {
    segment: u32,
    offset: u64,
    bytes: Bytes,
}

/// What a batch put on disk.
#[derive(Default)]
struct BatchOutput {
    written: Vec<Written>,
    created: Vec<SegmentInfo>,
}

/// The writer's own state.
pub struct Writer {
    shared: Arc<Shared>,
    /// Segment currently written: number, name, file.
    tail: SegmentInfo,
    last_recorded_at: u64,
    bytes_since_checkpoint: u64,
    last_checkpoint_bytes: u64,
}

impl Writer {
    /// A writer that continues the last segment of `shared`.
    pub fn new(shared: Arc<Shared>, last_recorded_at: u64) -> Writer {
        let tail = {
            let segments = shared.segments();
            let last = segments
                .list
                .last()
                .unwrap_or_else(|| unreachable!("recovery creates a segment"));
            SegmentInfo {
                number: last.number,
                name: last.name.clone(),
                first_position: last.first_position,
                file: last.file.clone(),
                sparse: Vec::new(),
                end_offset: last.end_offset,
                end_position: last.end_position,
            }
        };
        Writer {
            shared,
            tail,
            last_recorded_at,
            bytes_since_checkpoint: 0,
            last_checkpoint_bytes: 0,
        }
    }

    /// Runs until every sender is gone, then writes a final checkpoint.
    pub fn run(mut self, mut queue: mpsc::Receiver<Command>) {
        let batch_bytes_max = self.shared.options.batch_bytes_max;
        let mut batch = Vec::new();
        while let Some(first) = queue.blocking_recv() {
            let mut bytes = first.size_hint();
            batch.push(first);
            while bytes < batch_bytes_max {
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
        if self.shared.poison_error().is_none() {
            if let Err(error) = self.checkpoint() {
                tracing::warn!(%error, "could not write the index checkpoint at close");
            }
        }
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
            if let Err(error) = self.checkpoint() {
                tracing::warn!(%error, "could not write the index checkpoint");
            }
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
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    let _ = reply.send(outcome);
                }
            }
            Err(error) => {
                self.poison(&error);
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
        let mut overlay = Overlay::default();
        let mut output = BatchOutput::default();
        let mut buffer = Vec::new();
        let mut buffer_offset = u64::from(self.tail.end_offset);
        let mut batch_offset = self.tail.end_offset;
        let mut next_position = self.tail.end_position;
        let capacity = u64::from(shared.options.segment_size_bytes);
        // Every reply is kept before anything can fail, so that a failure answers every
        // append of the batch with the error, not with a dropped channel.
        let (all_parts, all_replies): (Vec<_>, Vec<_>) = appends.into_iter().unzip();
        replies.extend(all_replies);
        for parts in all_parts {
            let mut planner = Planner {
                shared: &shared,
                index: &index,
                overlay: &mut overlay,
                frame_bytes_max: capacity - segment::HEADER_LEN as u64,
            };
            let (events, results) = match planner.plan(parts, next_position) {
                Ok(Planned::Write { events, results }) => (events, results),
                Ok(Planned::Retry(results)) => {
                    outcomes.push(Ok(results));
                    continue;
                }
                Err(error) => {
                    outcomes.push(Err(error));
                    continue;
                }
            };
            if events.is_empty() {
                outcomes.push(Ok(results));
                continue;
            }
            let size = frame_size(&events);
            let end = buffer_offset + buffer.len() as u64;
            if end + size > capacity && end > segment::HEADER_LEN as u64 {
                // Seal the current segment: write and sync what it has, then start the
                // next one, so every segment but the last is complete and durable.
                self.write_and_sync(&buffer, buffer_offset)?;
                output.written.push(Written {
                    segment: self.tail.number,
                    offset: buffer_offset,
                    bytes: Bytes::from(std::mem::take(&mut buffer)),
                });
                let next = create_segment(&*shared.storage, self.tail.number + 1, next_position)?;
                output.created.push(SegmentInfo {
                    number: next.number,
                    name: next.name.clone(),
                    first_position: next.first_position,
                    file: next.file.clone(),
                    sparse: Vec::new(),
                    end_offset: next.end_offset,
                    end_position: next.end_position,
                });
                self.tail = next;
                buffer_offset = segment::HEADER_LEN as u64;
                batch_offset = segment::HEADER_LEN as u32;
            }
            self.encode_frame(&mut buffer, &events, batch_offset);
            next_position += events.len() as u64;
            outcomes.push(Ok(results));
        }
        drop(index);
        if !buffer.is_empty() {
            self.write_and_sync(&buffer, buffer_offset)?;
            output.written.push(Written {
                segment: self.tail.number,
                offset: buffer_offset,
                bytes: Bytes::from(buffer),
            });
        }
        Ok(output)
    }

    fn encode_frame(&mut self, buffer: &mut Vec<u8>, events: &[PlannedEvent], batch_offset: u32) {
        let now = Timestamp::now().as_micros();
        let start = frame::begin(buffer, events[0].position, batch_offset);
        for planned in events {
            let event = &planned.event;
            let wanted = event.recorded_at.map_or(now, Timestamp::as_micros);
            // recorded_at never goes backwards along the log, whatever the clock does.
            self.last_recorded_at = self.last_recorded_at.max(wanted);
            record::RecordFields {
                position: planned.position,
                revision: planned.revision,
                recorded_at: Timestamp::from_micros(self.last_recorded_at),
                id: event.id,
                content_type: event.content_type,
                valid_at: event.valid_at,
                stream: &planned.stream,
                event_type: &event.event_type,
                data: &event.data,
                metadata: &event.metadata,
            }
            .encode(buffer);
        }
        frame::finish(buffer, start, events.len() as u32);
    }

    fn write_and_sync(&mut self, bytes: &[u8], offset: u64) -> Result<(), StorageError> {
        let file = &self.tail.file;
        file.write_at(bytes, offset)
            .map_err(|e| StorageError::io("write", &self.tail.name, e))?;
        if self.shared.options.durability == Durability::Fsync {
            file.sync_data()
                .map_err(|e| StorageError::io("fdatasync", &self.tail.name, e))?;
        }
        self.bytes_since_checkpoint += bytes.len() as u64;
        Ok(())
    }

    /// Makes a durable batch visible: segments first (so the index never points past
    /// them), then the index, then the head.
    fn publish(&mut self, output: BatchOutput) {
        let shared = self.shared.clone();
        let mut frames = Vec::new();
        {
            let mut segments = shared.segments_mut();
            segments.list.extend(output.created);
            for (chunk_index, chunk) in output.written.iter().enumerate() {
                let first = segments.list[0].number;
                let info = &mut segments.list[(chunk.segment - first) as usize];
                let mut at = 0;
                while at < chunk.bytes.len() {
                    let header = frame::parse_header(&chunk.bytes[at..])
                        .unwrap_or_else(|_| unreachable!("the writer encoded this frame"));
                    let offset = chunk.offset + at as u64;
                    info.add_frame(
                        header.first_position,
                        header.end_position(),
                        offset as u32,
                        header.length,
                    );
                    frames.push((chunk_index, at, header));
                    at += header.length as usize;
                }
            }
            self.tail.end_offset = segments.list.last().map_or(0, |s| s.end_offset);
            self.tail.end_position = segments.next_position();
        }
        if let Err(error) = self.index_frames(&output.written, &frames) {
            self.poison(&error);
        }
        shared.publish_head();
    }

    fn index_frames(
        &self,
        written: &[Written],
        frames: &[(usize, usize, frame::FrameHeader)],
    ) -> Result<(), StorageError> {
        let mut index = self.shared.index_mut();
        for &(chunk_index, at, header) in frames {
            let chunk = &written[chunk_index];
            let found = super::reader::FrameRef {
                chunk: &chunk.bytes,
                at,
                header,
                file_offset: chunk.offset + at as u64,
            };
            let name = segment::file_name(chunk.segment);
            let mut failure = None;
            let mut previous_stream: Option<String> = None;
            let _complete = found.for_each_record(&name, |view, record_offset| {
                let starts_append = previous_stream.as_deref() != Some(view.stream);
                if starts_append {
                    previous_stream = Some(view.stream.to_owned());
                }
                let event = IndexedEvent {
                    stream: view.stream,
                    revision: view.revision,
                    event_type: view.event_type,
                    id: view.id,
                    location: Location::new(chunk.segment, record_offset as u32),
                    data: &chunk.bytes[view.data.clone()],
                    starts_append,
                };
                match index.apply(&event) {
                    Ok(()) => ControlFlow::Continue(()),
                    Err(error) => {
                        failure = Some(StorageError::corrupt(&name, record_offset, error.0));
                        ControlFlow::Break(())
                    }
                }
            })?;
            if let Some(error) = failure {
                return Err(error);
            }
        }
        Ok(())
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

    /// Writes the index checkpoint for everything durable so far.
    fn checkpoint(&mut self) -> Result<(), StorageError> {
        let bytes = {
            let segments = self.shared.segments();
            let index = self.shared.index();
            checkpoint::encode(&segments, &index)
        };
        checkpoint::write(&*self.shared.storage, &bytes)
            .map_err(|e| StorageError::io("write", checkpoint::FILE_NAME, e))?;
        self.bytes_since_checkpoint = 0;
        self.last_checkpoint_bytes = bytes.len() as u64;
        Ok(())
    }
}

fn frame_size(events: &[PlannedEvent]) -> u64 {
    let records: u64 = events
        .iter()
        .map(|p| plan::encoded_len(&p.stream, &p.event))
        .sum();
    frame::HEADER_LEN as u64 + records
}
