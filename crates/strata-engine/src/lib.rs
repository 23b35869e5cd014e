//! # strata-engine
//!
//! strata's embedded storage engine: a segmented, checksummed log written by one
//! group-committing writer, with derived indexes (stream heads in memory, event locations
//! in per-segment tables on disk), recovery, a scrubber and `verify`. It implements
//! [`strata_core::store::EventStore`]; users reach it through the `strata` crate, which
//! re-exports it as `strata::engine`.
//!
//! Data flows one way: an append is validated by the caller's task, planned and written
//! by the `writer`, and only once durable does it reach the [`index`], the published
//! head, and then the readers (`reader`) and subscriptions.

#![warn(missing_docs)]

// The core types under the names the engine's modules use (`crate::error::…`,
// `crate::ExpectedRevision`): the engine sits on `strata-core` and nothing else of
// strata. The engine's own modules (`scrub`) shadow core's of the same name.
#[allow(unused_imports)]
pub(crate) use strata_core::*;

pub mod format;
mod frames;
mod handles;
pub mod index;
mod indexer;
pub mod io;
mod options;
mod reader;
mod recovery;
mod scrub;
mod state;
mod stream_reads;
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
use crate::event::{Position, RecordedEvent};
use crate::store::{
    AppendRequest, AppendResult, Direction, EventStore, ListStreamsOptions, PageEnd,
    ReadAllOptions, ReadAllPage, ReadStreamOptions, StoreStats, StreamInfo,
};
use format::record::RecordView;
use index::checkpoint;
use io::{DirStorage, Storage};
use state::Shared;
use writer::{Command, Part, PartKind, Writer};

pub use index::IndexStats;
pub use options::{Durability, Options};
pub use recovery::{IndexSource, OpenReport, TruncatedTail};
pub use strata_core::scrub::{ScrubDamage, ScrubStatus};
pub use verify::{verify, VerifyReport};

/// Reads are served in pages of at most this many events, each off the async runtime
/// (see `off_runtime`): a page bounds how long one read holds a thread.
const READ_PAGE_EVENTS_MAX: usize = 4096;

/// Runs `work`, which blocks on file reads, without holding up the async runtime's
/// other tasks: in place on a multi-threaded runtime (`block_in_place` hands the worker's
/// queue to another thread first, so the caller waits for no thread hand-off: a single
/// client's random stream read took ~80 µs through the blocking pool, most of it two
/// thread wake-ups), on the blocking pool on a current-thread runtime (where
/// `block_in_place` is not allowed). `None` if the blocking pool dropped the work (the
/// runtime is shutting down).
async fn off_runtime<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            Some(tokio::task::block_in_place(work))
        }
        _ => tokio::task::spawn_blocking(work).await.ok(),
    }
}

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
        let table_handles = Arc::new(handles::SegmentHandles::named(
            storage.clone(),
            options.segment_handles_max,
            index::table::file_name,
        ));
        let recovered = recovery::recover(&*storage, &handles, &table_handles, &options)?;
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
            table_handles,
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
        let writer = Writer::new(shared.clone(), last_recorded_at, recovered.unindexed)?;
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

    /// What the index holds in memory and on disk now.
    pub fn index_stats(&self) -> IndexStats {
        self.shared.index().stats()
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

    /// Reads one page of a stream off the async runtime.
    async fn read_stream_blocking(
        &self,
        stream: &str,
        options: ReadStreamOptions,
    ) -> Result<Vec<RecordedEvent>, ReadError> {
        let shared = self.shared.clone();
        let stream = stream.to_owned();
        off_runtime(move || stream_reads::read_stream_page(&shared, &stream, options))
            .await
            .unwrap_or(Err(ReadError::Storage(StorageError::Closed)))
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
            let flow = frames::for_each_frame(&*file, &name, offset.into(), end.into(), |frame| {
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
        if options.limit <= READ_PAGE_EVENTS_MAX {
            return self.read_stream_blocking(stream, options).await;
        }
        // Large reads: page through, one bounded read at a time.
        let mut out = Vec::new();
        let mut page = options.limit(READ_PAGE_EVENTS_MAX);
        loop {
            let events = self.read_stream_blocking(stream, page).await?;
            let done =
                events.len() < READ_PAGE_EVENTS_MAX || out.len() + events.len() >= options.limit;
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
        // A filtered read may scan far more events than it returns: it takes a scan
        // slot, on the blocking pool (so that dropping the future cancels it). Any other
        // read is one bounded page, read off the runtime too.
        if options.limit > READ_PAGE_EVENTS_MAX || !options.filter.is_empty() {
            return self.scan_all(options).await;
        }
        let shared = self.shared.clone();
        off_runtime(move || {
            let never = AtomicBool::new(false);
            read_all_on(&shared, &options, &never)
        })
        .await
        .unwrap_or(Err(ReadError::Storage(StorageError::Closed)))
    }

    async fn list_streams(
        &self,
        options: ListStreamsOptions,
    ) -> Result<Vec<StreamInfo>, ReadError> {
        // In name order from `after`: a page costs a binary search and the streams it
        // passes over, not a walk of every stream. Off the runtime: folding newly
        // created streams into the name order is a merge over all of them.
        let shared = self.shared.clone();
        let page = off_runtime(move || {
            let limit = options.limit.unwrap_or(usize::MAX);
            let mut page = Vec::new();
            if limit == 0 {
                return page;
            }
            let index = shared.index();
            let heads = &index.heads;
            heads.visit_by_name(
                options.after.as_deref(),
                options.prefix.as_deref(),
                |id, name| {
                    if !options.include_system && stream::is_system(name) {
                        return ControlFlow::Continue(());
                    }
                    let entry = heads.entry(id);
                    if entry.next_revision == 0 || entry.tombstoned || entry.is_deleted() {
                        return ControlFlow::Continue(());
                    }
                    let len = entry.next_revision;
                    let lowest = entry
                        .metadata
                        .as_deref()
                        .map_or(0, |m| m.first_visible(len));
                    page.push(StreamInfo {
                        name: name.to_owned(),
                        last_revision: len - 1,
                        visible_events: len.saturating_sub(lowest),
                    });
                    if page.len() >= limit {
                        ControlFlow::Break(())
                    } else {
                        ControlFlow::Continue(())
                    }
                },
            );
            page
        })
        .await
        .ok_or(ReadError::Storage(StorageError::Closed))?;
        Ok(page)
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
        let (events, streams, table_bytes) = {
            let index = self.shared.index();
            let tables: u64 = index.tables.values().map(|t| t.file_bytes()).sum();
            (index.events, index.streams_with_events, tables)
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
            disk_bytes: disk_bytes + checkpoint_bytes + table_bytes,
            segments,
            backend: "embedded".into(),
            scrub: self.scrub_status(),
        })
    }
}

/// Conveniences the engine's own tests use (users get them from `strata::Store`).
#[cfg(test)]
impl Engine {
    /// Appends `events` to `stream` if it is in the `expected` state.
    pub(crate) async fn append(
        &self,
        stream: impl Into<String>,
        expected: ExpectedRevision,
        events: Vec<crate::EventData>,
    ) -> Result<AppendResult, AppendError> {
        let request = AppendRequest::new(stream, expected, events);
        let mut results = self.append_multi(vec![request]).await?;
        Ok(results.swap_remove(0))
    }

    /// Replaces a stream's metadata.
    pub(crate) async fn set_stream_metadata(
        &self,
        stream: &str,
        expected: ExpectedRevision,
        metadata: &crate::StreamMetadata,
    ) -> Result<AppendResult, AppendError> {
        let event = crate::write::metadata_event(metadata);
        self.append(stream::metastream(stream), expected, vec![event])
            .await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a test panics on a failed expectation
mod tests {
    use super::*;
    use crate::index::bloom::stream_hash;
    use crate::index::table::{self, Entry, Table};
    use crate::io::MemoryStorage;
    use crate::EventData;

    /// Tables key streams by a 64-bit hash. Two streams that share it in one table must
    /// each read their own events: the reader reads every candidate and keeps the record
    /// of the stream asked for.
    #[tokio::test]
    async fn streams_sharing_a_hash_in_a_table_read_their_own_events() {
        let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
        let engine = Engine::open_storage(storage.clone(), Options::small_for_tests()).unwrap();
        for name in ["b", "a"] {
            let event = EventData::json("E", &serde_json::json!({ "stream": name })).unwrap();
            engine
                .append_multi(vec![AppendRequest::new(
                    name,
                    ExpectedRevision::NoStream,
                    vec![event],
                )])
                .await
                .unwrap();
        }
        let (b, a) = {
            let index = engine.shared.index();
            let at = |name: &str| {
                let id = index.heads.id(name).unwrap();
                index.memtables[&1]
                    .run(id)
                    .and_then(|run| run.offset(0))
                    .unwrap()
            };
            (at("b"), at("a"))
        };
        // A table for segment 1 in which "b" collides with "a": both entries under
        // a's hash, b's first (lower offset).
        let hash = stream_hash("a");
        let entries = vec![
            Entry {
                hash,
                revision: 0,
                offset: b,
            },
            Entry {
                hash,
                revision: 0,
                offset: a,
            },
        ];
        let file = storage.create(&table::file_name(1)).unwrap();
        let store_id = engine.shared.segments().store_id;
        file.write_at(&table::encode(1, store_id, 4096, &entries), 0)
            .unwrap();
        let loaded =
            Table::load(&*storage, &engine.shared.table_handles, 1, store_id, 4096).unwrap();
        engine.shared.index_mut().install_table(Arc::new(loaded));
        let events = engine
            .read_stream("a", ReadStreamOptions::forwards())
            .await
            .unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].stream, "a");
        assert_eq!(
            events[0].data,
            EventData::json("E", &serde_json::json!({ "stream": "a" }))
                .unwrap()
                .data
        );
    }
}
