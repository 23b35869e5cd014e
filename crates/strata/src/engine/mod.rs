//! The embedded engine: a segmented, checksummed log written by one group-committing
//! writer, with derived in-memory indexes.
//!
//! Data flows one way: an append is validated by the caller's task, planned and written
//! by the `writer`, and only once durable does it reach the [`index`], the published
//! head, and then the readers (`reader`) and subscriptions.

pub mod format;
mod handles;
pub mod index;
pub mod io;
mod options;
mod reader;
mod recovery;
mod scrub;
mod state;
mod verify;
mod writer;

#[cfg(test)]
mod fuzz_targets;

use std::ops::ControlFlow;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, watch};

use crate::error::{AppendError, OpenError, ReadError, StorageError};
use crate::event::{Position, RecordedEvent, Timestamp};
use crate::store::{
    AppendRequest, AppendResult, Direction, EventStore, ListStreamsOptions, PageEnd,
    ReadAllOptions, ReadAllPage, ReadStreamOptions, StoreStats, StreamInfo,
};
use crate::{stream, ExpectedRevision};
use format::record::RecordView;
use index::checkpoint;
use io::{DirStorage, Storage};
use state::Shared;
use writer::{Command, Part, PartKind, Writer};

pub use options::{Durability, Options};
pub use recovery::{IndexSource, OpenReport, TruncatedTail};
pub use scrub::{ScrubDamage, ScrubStatus};
pub use verify::{verify, VerifyReport};

/// Reads of at most this many events run on the caller's thread; larger ones on the
/// blocking pool, so an async runtime is never stalled by a long read.
const INLINE_READ_EVENTS_MAX: usize = 4096;

/// The embedded event store.
pub struct Engine {
    shared: Arc<Shared>,
    /// Slots for reads that run on the blocking pool (filtered or large reads of the
    /// global log), so a burst of them cannot take every thread.
    scans: crate::scan::ScanSlots,
    queue: Option<mpsc::Sender<Command>>,
    /// Bytes of appends queued for or being written by the writer, against
    /// `Options::write_queue_bytes_max`: one permit per byte, held until the answer.
    queue_bytes: Arc<tokio::sync::Semaphore>,
    writer: Mutex<Option<JoinHandle<()>>>,
    /// The background scrubber (`None`: turned off by the options).
    scrubber: Option<scrub::Scrubber>,
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
        let handles = Arc::new(handles::SegmentHandles::new(
            storage.clone(),
            options.segment_handles_max,
        ));
        let recovered = recovery::recover(&*storage, &handles, &options)?;
        let head = recovered
            .segments
            .next_position()
            .checked_sub(1)
            .map(Position);
        let (head_sender, _) = watch::channel(head);
        let write_queue_max = options.write_queue_max;
        let queue_bytes = Arc::new(tokio::sync::Semaphore::new(options.write_queue_bytes_max));
        let scans = crate::scan::ScanSlots::new(options.scans_max, options.scan_wait_max);
        let shared = Arc::new(Shared {
            storage,
            options,
            segments: std::sync::RwLock::new(recovered.segments),
            index: std::sync::RwLock::new(recovered.index),
            head: head_sender,
            poisoned: Mutex::new(None),
            handles,
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
        let never = std::sync::atomic::AtomicBool::new(false);
        let one = reader::ScanBounds {
            limit: 1,
            budget: u64::MAX,
            cancelled: &never,
        };
        let last = reader::read_all_backwards(&shared, None, &crate::Filter::new(), &one)?;
        let last_recorded_at = last
            .events
            .first()
            .map_or(0, |event| event.recorded_at.as_micros())
            .max(recovered.last_recorded_at);
        let (queue, receiver) = mpsc::channel(write_queue_max);
        let writer = Writer::new(shared.clone(), last_recorded_at)?;
        let handle = std::thread::Builder::new()
            .name("strata-writer".into())
            .spawn(move || writer.run(receiver))
            .map_err(|e| {
                StorageError::io("start writer thread for", shared.storage.describe(), e)
            })?;
        let mut engine = Engine {
            shared,
            scans,
            queue: Some(queue),
            queue_bytes,
            writer: Mutex::new(Some(handle)),
            scrubber: None,
            report,
            _lock: lock,
        };
        // Started last, on a whole engine: if the thread cannot start, dropping the
        // engine stops its writer properly.
        engine.scrubber = scrub::Scrubber::start(&engine.shared)?;
        Ok(engine)
    }

    /// What the background scrubber has verified and found since the store opened
    /// (`None`: it is off, [`Options::scrub_bytes_per_second`] is 0).
    pub fn scrub_status(&self) -> Option<ScrubStatus> {
        self.scrubber.as_ref().map(scrub::Scrubber::status)
    }

    /// What opening the store found and did (a cut-off torn tail, an index rebuild, …).
    pub fn open_report(&self) -> &OpenReport {
        &self.report
    }

    /// The options the store was opened with.
    pub fn options(&self) -> &Options {
        &self.shared.options
    }

    /// Reads running on the blocking pool now (filtered or large reads of the global
    /// log), at most [`Options::scans_max`].
    pub fn scans_running(&self) -> usize {
        self.scans.running()
    }

    /// Reads one page of the global log on the blocking pool, holding a scan slot; the
    /// scan stops soon after this future is dropped.
    async fn scan_all(&self, options: ReadAllOptions) -> Result<ReadAllPage, ReadError> {
        let slot = self.scans.acquire().await?;
        let shared = self.shared.clone();
        let guard = crate::scan::CancelOnDrop::new();
        let cancelled = guard.flag();
        let work = move || {
            // The slot is freed when the scan ends, not when its caller stops waiting.
            let _slot = slot;
            read_all_on(&shared, &options, &cancelled)
        };
        let result = tokio::task::spawn_blocking(work)
            .await
            .unwrap_or(Err(ReadError::Storage(StorageError::Closed)));
        drop(guard);
        result
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
            let file = file.open()?;
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
        // The scrubber first: it stops within one chunk, never waits out its interval.
        if let Some(scrubber) = self.scrubber.as_mut() {
            scrubber.stop();
        }
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
        // Wait for room in the queue's byte budget first: queued appends hold their
        // events in memory until the writer is done with them. `validate` caps an
        // append below the budget, so the wait always ends.
        let budget = self.shared.options.write_queue_bytes_max;
        // Clamped: an append over the whole budget (impossible once validated) takes all
        // of it rather than wait for ever.
        let size = writer::parts_size(&parts).min(budget);
        let permits = u32::try_from(size).unwrap_or(u32::MAX);
        let _room = self
            .queue_bytes
            .acquire_many(permits)
            .await
            .map_err(|_| StorageError::Closed)?;
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

    /// One bounded page of a stream, honouring its metadata. Never recursive, and never
    /// reads the events `$maxAge` hides: it finds the first unexpired one by binary search.
    fn read_stream_now(
        &self,
        name: &str,
        options: ReadStreamOptions,
    ) -> Result<Vec<RecordedEvent>, ReadError> {
        let (len, lowest, max_age) = {
            let index = self.shared.index();
            let entry = visible_entry(&index, name)?;
            let len = entry.next_revision();
            let metadata = entry.metadata.as_deref();
            let lowest = metadata.map_or(0, |m| m.first_visible(len));
            (len, lowest, metadata.and_then(|m| m.max_age))
        };
        // The revisions the page may take, before max age: `low..high`.
        let (low, high) = match options.direction {
            Direction::Forwards => (options.from.unwrap_or(0).max(lowest).min(len), len),
            Direction::Backwards => {
                let start = options.from.unwrap_or(len - 1).min(len - 1);
                (lowest.min(start + 1), start + 1)
            }
        };
        let low = match max_age {
            Some(max_age) => {
                let max_age = u64::try_from(max_age.as_micros()).unwrap_or(u64::MAX);
                let cutoff = Timestamp::now().as_micros().saturating_sub(max_age);
                self.first_recorded_at_or_after(name, low, high, cutoff)?
            }
            None => low,
        };
        let limit = options.limit as u64;
        let revisions: Vec<u64> = match options.direction {
            Direction::Forwards => (low..high.min(low.saturating_add(limit))).collect(),
            Direction::Backwards => (low.max(high.saturating_sub(limit))..high).rev().collect(),
        };
        let wanted = {
            let index = self.shared.index();
            let entry = visible_entry(&index, name)?;
            revisions
                .iter()
                .map(|&revision| {
                    Ok(reader::StreamLocation {
                        revision,
                        location: location_of(entry, name, revision)?,
                    })
                })
                .collect::<Result<Vec<_>, ReadError>>()?
        };
        Ok(reader::read_stream_locations(&self.shared, name, &wanted)?)
    }

    /// The first revision in `low..high` of stream `name` recorded at or after `cutoff`
    /// (in microseconds), or `high` if there is none.
    ///
    /// `recorded_at` never goes backwards along the log (the writer enforces it), so the
    /// events `$maxAge` hides are the oldest ones of a stream and a binary search over
    /// revisions finds the boundary: at most 65 records are read, however many expired.
    fn first_recorded_at_or_after(
        &self,
        name: &str,
        mut low: u64,
        mut high: u64,
        cutoff: u64,
    ) -> Result<u64, ReadError> {
        let unexpired = |revision: u64| -> Result<bool, ReadError> {
            let location = {
                let index = self.shared.index();
                location_of(visible_entry(&index, name)?, name, revision)?
            };
            let wanted = [reader::StreamLocation { revision, location }];
            let event = reader::read_stream_locations(&self.shared, name, &wanted)?;
            Ok(event
                .first()
                .is_some_and(|event| event.recorded_at.as_micros() >= cutoff))
        };
        // The common case, nothing expired in the range, costs one record.
        if low >= high || unexpired(low)? {
            return Ok(low);
        }
        // Invariant: `low` is expired; `high` is unexpired or the end of the range.
        while high - low > 1 {
            let middle = low + (high - low) / 2;
            if unexpired(middle)? {
                high = middle;
            } else {
                low = middle;
            }
        }
        Ok(high)
    }
}

/// The index entry of a stream that reads can see: not tombstoned, not soft-deleted,
/// with at least one event.
fn visible_entry<'a>(
    index: &'a index::Index,
    name: &str,
) -> Result<&'a index::StreamEntry, ReadError> {
    let not_found = || ReadError::StreamNotFound {
        stream: name.to_owned(),
    };
    let entry = index.streams.get(name).ok_or_else(not_found)?;
    if entry.tombstoned {
        return Err(ReadError::StreamDeleted {
            stream: name.to_owned(),
        });
    }
    if entry.is_deleted() || entry.next_revision() == 0 {
        return Err(not_found());
    }
    Ok(entry)
}

/// Where the event at `revision` of a stream lies. The entry's locations only grow, so a
/// revision below a length read earlier is always there; if not, the index is broken.
fn location_of(
    entry: &index::StreamEntry,
    name: &str,
    revision: u64,
) -> Result<index::Location, ReadError> {
    usize::try_from(revision)
        .ok()
        .and_then(|at| entry.locations.get(at).copied())
        .ok_or_else(|| {
            ReadError::Storage(StorageError::Corrupt {
                file: "index".into(),
                offset: revision,
                reason: format!("stream {name:?} has no location for revision {revision}"),
            })
        })
}

impl Drop for Engine {
    fn drop(&mut self) {
        if let Err(error) = self.stop() {
            tracing::error!(%error, "closing the store failed");
        }
    }
}

fn read_all_on(
    shared: &Shared,
    options: &ReadAllOptions,
    cancelled: &AtomicBool,
) -> Result<ReadAllPage, ReadError> {
    let bounds = reader::ScanBounds {
        limit: options.limit,
        budget: options.scan_budget,
        cancelled,
    };
    let scanned = match options.direction {
        Direction::Forwards => reader::read_all_forwards(
            shared,
            options.from.unwrap_or(Position::START).0,
            &options.filter,
            &bounds,
        )?,
        Direction::Backwards => {
            reader::read_all_backwards(shared, options.from.map(|p| p.0), &options.filter, &bounds)?
        }
    };
    Ok(ReadAllPage {
        events: scanned.events,
        next: scanned.next.map(Position),
        end: scanned.end,
    })
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
        let budget = options.scan_budget;
        let page = self.read_all_page(options).await?;
        match (page.end, page.next) {
            (PageEnd::ScanBudget, Some(next)) => Err(ReadError::ScanBudgetSpent {
                budget,
                found: page.events,
                next,
            }),
            _ => Ok(page.events),
        }
    }

    async fn read_all_page(&self, options: ReadAllOptions) -> Result<ReadAllPage, ReadError> {
        // A filtered read may scan far more events than it returns: never inline.
        if options.limit > INLINE_READ_EVENTS_MAX || !options.filter.is_empty() {
            return self.scan_all(options).await;
        }
        let never = AtomicBool::new(false);
        read_all_on(&self.shared, &options, &never)
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

    fn limits(&self) -> &crate::Limits {
        &self.shared.options.limits
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
            scrub: self.scrub_status(),
        })
    }
}
