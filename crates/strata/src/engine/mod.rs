//! The embedded engine: a segmented, checksummed log written by one group-committing
//! writer, with derived in-memory indexes.
//!
//! Data flows one way: an append is validated by the caller's task, planned and written
//! by the `writer`, and only once durable does it reach the [`index`], the published
//! head, and then the readers (`reader`) and subscriptions.

pub mod format;
pub mod index;
pub mod io;
mod options;
mod reader;
mod recovery;
mod state;
mod verify;
mod writer;

#[cfg(test)]
mod fuzz_targets;

use std::ops::ControlFlow;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, watch};

use crate::error::{AppendError, OpenError, ReadError, StorageError};
use crate::event::{Position, RecordedEvent, Timestamp};
use crate::store::{
    AppendRequest, AppendResult, Direction, EventStore, ListStreamsOptions, ReadAllOptions,
    ReadStreamOptions, StoreStats, StreamInfo,
};
use crate::{stream, ExpectedRevision};
use format::record::RecordView;
use index::checkpoint;
use io::{DirStorage, Storage};
use state::Shared;
use writer::{Command, Part, PartKind, Writer};

pub use options::{Durability, Options};
pub use recovery::{IndexSource, OpenReport, TruncatedTail};
pub use verify::{verify, VerifyReport};

/// Reads of at most this many events run on the caller's thread; larger ones on the
/// blocking pool, so an async runtime is never stalled by a long read.
const INLINE_READ_EVENTS_MAX: usize = 4096;

/// The embedded event store.
pub struct Engine {
    shared: Arc<Shared>,
    queue: Option<mpsc::Sender<Command>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    report: OpenReport,
    _lock: Box<dyn Send + Sync + std::fmt::Debug>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("storage", &self.shared.storage.describe())
            .finish()
    }
}

impl Engine {
    /// Opens (or creates) the store in directory `path`.
    pub fn open(path: impl AsRef<Path>, options: Options) -> Result<Engine, OpenError> {
        let storage = DirStorage::new(path.as_ref()).map_err(|e| {
            StorageError::io("create directory", path.as_ref().display().to_string(), e)
        })?;
        Engine::open_storage(Arc::new(storage), options)
    }

    /// Opens (or creates) a store on any [`Storage`] (memory, fault-injecting, …).
    pub fn open_storage(storage: Arc<dyn Storage>, options: Options) -> Result<Engine, OpenError> {
        options.validate()?;
        let lock = storage.lock().map_err(|error| {
            if error.kind() == std::io::ErrorKind::WouldBlock {
                OpenError::Locked {
                    path: storage.describe().into(),
                }
            } else {
                StorageError::io("lock", format!("{}/LOCK", storage.describe()), error).into()
            }
        })?;
        let recovered = recovery::recover(&*storage, &options)?;
        let head = recovered
            .segments
            .next_position()
            .checked_sub(1)
            .map(Position);
        let (head_sender, _) = watch::channel(head);
        let write_queue_max = options.write_queue_max;
        let shared = Arc::new(Shared {
            storage,
            options,
            segments: std::sync::RwLock::new(recovered.segments),
            index: std::sync::RwLock::new(recovered.index),
            head: head_sender,
            poisoned: Mutex::new(None),
        });
        let report = recovered.report;
        let rebuilt = matches!(report.index_source, IndexSource::Rebuilt { .. });
        if rebuilt || report.scanned_events > 10_000 {
            // Save the scan's result so the next open does not repeat it.
            let bytes = checkpoint::encode(&shared.segments(), &shared.index());
            checkpoint::write(&*shared.storage, &bytes)
                .map_err(|e| StorageError::io("write", checkpoint::FILE_NAME, e))?;
        }
        // recorded_at never goes backwards along the log, even if the clock does: start
        // from the last recorded event (the scan may have started after it).
        let last = reader::read_all_backwards(&shared, None, 1, &crate::Filter::new())?;
        let last_recorded_at = last
            .first()
            .map_or(0, |event| event.recorded_at.as_micros())
            .max(recovered.last_recorded_at);
        let (queue, receiver) = mpsc::channel(write_queue_max);
        let writer = Writer::new(shared.clone(), last_recorded_at);
        let handle = std::thread::Builder::new()
            .name("strata-writer".into())
            .spawn(move || writer.run(receiver))
            .map_err(|e| {
                StorageError::io("start writer thread for", shared.storage.describe(), e)
            })?;
        Ok(Engine {
            shared,
            queue: Some(queue),
            writer: Mutex::new(Some(handle)),
            report,
            _lock: lock,
        })
    }

    /// What opening the store found and did (a cut-off torn tail, an index rebuild, …).
    pub fn open_report(&self) -> &OpenReport {
        &self.report
    }

    /// The options the store was opened with.
    pub fn options(&self) -> &Options {
        &self.shared.options
    }

    /// Visits the durable events of the global log from `from` (inclusive), in log
    /// order, without allocating per event: `visit` gets a view of each record, the
    /// checked buffer it lies in (`RecordView::to_event(buffer)` makes an owned event)
    /// and the offset of the record in that buffer (it is `record_len` bytes long), and
    /// ends the scan early by returning `Break`. Events that become durable during the
    /// scan may or may not be visited.
    ///
    /// Blocking: call it from a blocking thread. Projection rebuilds use it (each thread
    /// of a parallel rebuild scans its own blocks of the log): it is about three times
    /// faster than reading owned events.
    pub fn scan(
        &self,
        from: Position,
        mut visit: impl FnMut(&RecordView<'_>, &Bytes, usize) -> ControlFlow<()>,
    ) -> Result<(), StorageError> {
        let (mut index, mut offset) = {
            let segments = self.shared.segments();
            let Some(i) = segments.find(from.0) else {
                return Ok(());
            };
            let Some((_, offset)) = segments.list[i].seek(from.0) else {
                return Ok(());
            };
            (i, offset)
        };
        loop {
            let (file, name, end) = {
                let segments = self.shared.segments();
                let Some(segment) = segments.list.get(index) else {
                    return Ok(());
                };
                (
                    segment.file.clone(),
                    segment.name.clone(),
                    segment.end_offset,
                )
            };
            let flow = reader::for_each_frame(&*file, &name, offset.into(), end.into(), |frame| {
                if frame.header.end_position() <= from.0 {
                    return Ok(ControlFlow::Continue(()));
                }
                frame.for_each_record(&name, |view, file_offset| {
                    if view.position < from.0 {
                        return ControlFlow::Continue(());
                    }
                    let at = frame.at + (file_offset - frame.file_offset) as usize;
                    visit(&view, frame.chunk, at)
                })
            })?;
            if flow.is_break() {
                return Ok(());
            }
            index += 1;
            offset = format::segment::HEADER_LEN as u32;
        }
    }

    /// Writes the index checkpoint now (it is also written as the log grows and at close).
    pub async fn checkpoint(&self) -> Result<(), StorageError> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Checkpoint { reply }).await?;
        answer.await.map_err(|_| StorageError::Closed)?
    }

    /// Finishes pending appends, writes the checkpoint, stops the writer and releases the
    /// lock. Blocks until done.
    pub fn close(mut self) -> Result<(), StorageError> {
        self.stop()
    }

    fn stop(&mut self) -> Result<(), StorageError> {
        self.queue.take();
        let handle = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take();
        match handle.map(JoinHandle::join) {
            Some(Err(_)) => Err(StorageError::Poisoned {
                cause: "the writer thread panicked".into(),
            }),
            _ => Ok(()),
        }
    }

    async fn send(&self, command: Command) -> Result<(), StorageError> {
        let queue = self.queue.as_ref().ok_or(StorageError::Closed)?;
        queue.send(command).await.map_err(|_| StorageError::Closed)
    }

    async fn submit(&self, parts: Vec<Part>) -> Result<Vec<AppendResult>, AppendError> {
        if let Some(error) = self.shared.poison_error() {
            return Err(error.into());
        }
        let (reply, answer) = oneshot::channel();
        self.send(Command::Append { parts, reply }).await?;
        answer.await.map_err(|_| StorageError::Closed)?
    }

    async fn delete(
        &self,
        stream: &str,
        expected: ExpectedRevision,
        kind: PartKind,
    ) -> Result<Position, AppendError> {
        stream::validate_writable(stream, &self.shared.options.limits)?;
        let part = Part {
            stream: stream.to_owned(),
            expected,
            events: Vec::new(),
            kind,
        };
        let results = self.submit(vec![part]).await?;
        results
            .first()
            .and_then(AppendResult::last_position)
            .ok_or(AppendError::Storage(StorageError::Closed))
    }

    fn read_stream_now(
        &self,
        name: &str,
        options: ReadStreamOptions,
    ) -> Result<Vec<RecordedEvent>, ReadError> {
        let not_found = || ReadError::StreamNotFound {
            stream: name.to_owned(),
        };
        let (locations, max_age, last_read) = {
            let index = self.shared.index();
            let entry = index.streams.get(name).ok_or_else(not_found)?;
            if entry.tombstoned {
                return Err(ReadError::StreamDeleted {
                    stream: name.to_owned(),
                });
            }
            let len = entry.next_revision();
            if entry.is_deleted() || len == 0 {
                return Err(not_found());
            }
            let metadata = entry.metadata.as_deref().cloned().unwrap_or_default();
            let lowest = metadata.first_visible(len);
            let limit = options.limit as u64;
            let revisions: Vec<u64> = match options.direction {
                Direction::Forwards => {
                    let start = options.from.unwrap_or(0).max(lowest);
                    (start..len.min(start.saturating_add(limit))).collect()
                }
                Direction::Backwards => {
                    let start = options.from.unwrap_or(len - 1).min(len - 1);
                    if start < lowest {
                        Vec::new()
                    } else {
                        let stop = lowest.max((start + 1).saturating_sub(limit));
                        (stop..=start).rev().collect()
                    }
                }
            };
            let locations: Vec<_> = revisions
                .iter()
                .map(|&r| entry.locations[r as usize])
                .collect();
            (locations, metadata.max_age, revisions.last().copied())
        };
        let mut events = reader::read_locations(&self.shared, &locations)?;
        if let Some(max_age) = max_age {
            let now = Timestamp::now().as_micros();
            let cutoff = now.saturating_sub(u64::try_from(max_age.as_micros()).unwrap_or(u64::MAX));
            events.retain(|event| event.recorded_at.as_micros() >= cutoff);
            if options.direction == Direction::Forwards && events.len() < locations.len() {
                // Expired events are the oldest ones: read on past them (past whole pages
                // of them if need be) to fill the page.
                if let Some(last) = last_read {
                    let more = options
                        .from_revision(last + 1)
                        .limit(locations.len() - events.len());
                    events.extend(self.read_stream_now(name, more)?);
                }
            }
        }
        Ok(events)
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        if let Err(error) = self.stop() {
            tracing::error!(%error, "closing the store failed");
        }
    }
}

fn read_all_on(shared: &Shared, options: &ReadAllOptions) -> Result<Vec<RecordedEvent>, ReadError> {
    let events = match options.direction {
        Direction::Forwards => reader::read_all_forwards(
            shared,
            options.from.unwrap_or(Position::START).0,
            options.limit,
            &options.filter,
        )?,
        Direction::Backwards => reader::read_all_backwards(
            shared,
            options.from.map(|p| p.0),
            options.limit,
            &options.filter,
        )?,
    };
    Ok(events)
}

/// Runs `work` on the blocking pool if the read is large.
async fn run_read<T: Send + 'static>(
    large: bool,
    work: impl FnOnce() -> Result<T, ReadError> + Send + 'static,
) -> Result<T, ReadError> {
    if !large {
        return work();
    }
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or(Err(ReadError::Storage(StorageError::Closed)))
}

#[async_trait]
impl EventStore for Engine {
    async fn append_multi(
        &self,
        requests: Vec<AppendRequest>,
    ) -> Result<Vec<AppendResult>, AppendError> {
        crate::validate::append(&requests, &self.shared.options.limits)?;
        if requests.is_empty() {
            return Ok(Vec::new());
        }
        let parts = requests
            .into_iter()
            .map(|request| Part {
                stream: request.stream,
                expected: request.expected,
                events: request.events,
                kind: PartKind::Append,
            })
            .collect();
        self.submit(parts).await
    }

    async fn read_stream(
        &self,
        stream: &str,
        options: ReadStreamOptions,
    ) -> Result<Vec<RecordedEvent>, ReadError> {
        stream::validate_name(stream, &self.shared.options.limits)?;
        if options.limit <= INLINE_READ_EVENTS_MAX {
            return self.read_stream_now(stream, options);
        }
        // Large reads: page through on the caller's task, one bounded read at a time.
        let mut out = Vec::new();
        let mut page = options.limit(INLINE_READ_EVENTS_MAX);
        loop {
            let events = self.read_stream_now(stream, page)?;
            let done =
                events.len() < INLINE_READ_EVENTS_MAX || out.len() + events.len() >= options.limit;
            let next = events.last().map(|e| e.revision);
            out.extend(events);
            out.truncate(options.limit);
            match (done, next, options.direction) {
                (false, Some(last), Direction::Forwards) => page = page.from_revision(last + 1),
                (false, Some(last), Direction::Backwards) if last > 0 => {
                    page = page.from_revision(last - 1)
                }
                _ => return Ok(out),
            }
            tokio::task::yield_now().await;
        }
    }

    async fn read_all(&self, options: ReadAllOptions) -> Result<Vec<RecordedEvent>, ReadError> {
        let shared = self.shared.clone();
        // A filtered read may scan far more events than it returns: never inline.
        let large = options.limit > INLINE_READ_EVENTS_MAX || !options.filter.is_empty();
        run_read(large, move || read_all_on(&shared, &options)).await
    }

    async fn list_streams(
        &self,
        options: ListStreamsOptions,
    ) -> Result<Vec<StreamInfo>, ReadError> {
        let index = self.shared.index();
        let mut streams: Vec<StreamInfo> = index
            .streams
            .iter()
            .filter(|(name, entry)| {
                !entry.locations.is_empty()
                    && !entry.tombstoned
                    && !entry.is_deleted()
                    && (options.include_system || !stream::is_system(name))
                    && options
                        .prefix
                        .as_deref()
                        .is_none_or(|p| name.starts_with(p))
                    && options.after.as_deref().is_none_or(|a| &***name > a)
            })
            .map(|(name, entry)| {
                let len = entry.next_revision();
                let metadata = entry.metadata.as_deref();
                let lowest = metadata.map_or(0, |m| m.first_visible(len));
                StreamInfo {
                    name: name.to_string(),
                    last_revision: len - 1,
                    visible_events: len.saturating_sub(lowest),
                }
            })
            .collect();
        drop(index);
        streams.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        if let Some(limit) = options.limit {
            streams.truncate(limit);
        }
        Ok(streams)
    }

    async fn delete_stream(
        &self,
        stream: &str,
        expected: ExpectedRevision,
    ) -> Result<Position, AppendError> {
        self.delete(stream, expected, PartKind::SoftDelete).await
    }

    async fn tombstone_stream(
        &self,
        stream: &str,
        expected: ExpectedRevision,
    ) -> Result<Position, AppendError> {
        self.delete(stream, expected, PartKind::Tombstone).await
    }

    fn watch_head(&self) -> watch::Receiver<Option<Position>> {
        self.shared.head.subscribe()
    }

    async fn stats(&self) -> Result<StoreStats, ReadError> {
        let (events, streams) = {
            let index = self.shared.index();
            let streams = index
                .streams
                .values()
                .filter(|e| !e.locations.is_empty())
                .count();
            (index.events, streams as u64)
        };
        let (disk_bytes, segments, head) = {
            let segments = self.shared.segments();
            let bytes: u64 = segments.list.iter().map(|s| u64::from(s.end_offset)).sum();
            let head = segments.next_position().checked_sub(1).map(Position);
            (bytes, segments.list.len() as u64, head)
        };
        let checkpoint_bytes = self
            .shared
            .storage
            .open(checkpoint::FILE_NAME)
            .and_then(|file| file.len())
            .unwrap_or(0);
        Ok(StoreStats {
            events,
            streams,
            head,
            disk_bytes: disk_bytes + checkpoint_bytes,
            segments,
            backend: "embedded".into(),
        })
    }
}
