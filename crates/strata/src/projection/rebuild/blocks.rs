//! The parallel replay of the embedded log: every thread scans blocks of the log and
//! handles partitions.
//!
//! The log up to the bound is cut into blocks of `block_events` positions; thread `k`
//! of `n` scans blocks `k`, `k + n`, `k + 2n`, … With each event it scans, it fills a
//! reusable event in place, asks for its partition, and copies the encoded record into
//! the *deal* of the thread owning that partition for that block. Each thread consumes
//! its deals block after block, in order, so it sees its partitions' events in log
//! order; between two deals it scans its next block. Scanning, the costly part of a
//! replay (reading, checksums, decoding), is thus shared by all threads instead of
//! being done by one reader.
//!
//! A thread scans at most [`LOOKAHEAD_BLOCKS`] blocks past the one it consumes, which
//! bounds memory. It can always make progress: the block a thread waits for belongs to a
//! thread that consumes further behind, and so on around the threads, which cannot go on
//! forever.
//!
//! An event with no partition is a barrier: its scanner puts a marker in every thread's
//! deal at its place; each thread commits what it handled before it and waits; thread 0
//! then handles the event, commits, and lets everyone go on.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use tokio::sync::watch;

use super::replay::{mix, Until};
use super::worker::{blank_event, fill, Batch};
use super::RebuildProgress;
use crate::engine::format::record;
use crate::engine::Engine;
use crate::error::{ReadError, StorageError};
use crate::event::{Position, RecordedEvent};
use crate::filter::Filter;
use crate::projection::definition::Projection;
use crate::projection::error::RunError;
use crate::projection::processor::EventCounts;
use crate::projection::sink::Sink;

/// Blocks a thread may scan past the one it consumes.
const LOOKAHEAD_BLOCKS: u64 = 2;
/// The reason of the error a thread reports when another one failed; that one's own
/// error replaces it.
pub(super) const ANOTHER_FAILED: &str = "another replay thread failed";

enum Entry {
    /// An encoded record starting at this offset of the deal's buffer.
    Record(usize),
    /// A barrier event at this position; the thread that handles it also gets its
    /// record.
    Barrier(Position, Option<usize>),
}

/// What one block holds for one thread.
#[derive(Default)]
struct Deal {
    buffer: Vec<u8>,
    entries: Vec<Entry>,
}

impl Deal {
    fn push(&mut self, encoded: &[u8]) -> usize {
        let start = self.buffer.len();
        self.buffer.extend_from_slice(encoded);
        start
    }
}

struct Board {
    /// Deals of scanned blocks not yet consumed: block → one per thread.
    deals: HashMap<u64, Vec<Option<Deal>>>,
    failed: bool,
    /// Threads waiting at the current barrier.
    arrived: usize,
    /// The last barrier handled.
    barrier_done: Option<Position>,
    /// The last position admitted (for a replay bounded by time).
    admitted: Option<Position>,
    /// Events that passed the filter.
    events: u64,
}

/// What the threads share.
pub(super) struct Exchange<'a> {
    board: Mutex<Board>,
    changed: Condvar,
    threads: usize,
    report: &'a watch::Sender<RebuildProgress>,
}

impl Exchange<'_> {
    fn board(&self) -> MutexGuard<'_, Board> {
        self.board.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn wait<'g>(&self, board: MutexGuard<'g, Board>) -> MutexGuard<'g, Board> {
        self.changed
            .wait(board)
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn fail(&self) {
        self.board().failed = true;
        self.changed.notify_all();
    }
}

/// The replay's fixed facts.
pub(super) struct Blocks<'a, P> {
    pub engine: &'a Engine,
    pub projection: &'a P,
    pub filter: Filter,
    pub until: Until,
    /// The first position to replay.
    pub first: Position,
    /// The last position to replay.
    pub bound: Position,
    pub target: Option<Position>,
    pub batch_events: usize,
    pub block_events: u64,
}

impl<P> Blocks<'_, P> {
    fn count(&self) -> u64 {
        (self.bound.0 + 1)
            .saturating_sub(self.first.0)
            .div_ceil(self.block_events)
    }

    fn start_of(&self, block: u64) -> u64 {
        self.first.0 + block * self.block_events
    }
}

fn another_failed(name: &str) -> RunError {
    RunError::Worker {
        projection: name.to_owned(),
        reason: ANOTHER_FAILED.into(),
    }
}

fn corrupt(reason: &str) -> RunError {
    let error = StorageError::corrupt("(records dealt to a replay thread)", 0, reason);
    RunError::Read(ReadError::Storage(error))
}

/// One thread of the replay.
struct Thread<'a, 'b, P, S: Sink> {
    me: usize,
    blocks: &'b Blocks<'a, P>,
    exchange: &'b Exchange<'b>,
    batch: Batch<'a, P, S>,
    scratch: RecordedEvent,
    /// Bytes and entries of the deals of the last block scanned, per thread.
    sizes: Vec<(usize, usize)>,
}

impl<'a, 'b, P, S> Thread<'a, 'b, P, S>
where
    S: Sink,
    P: Projection<S::Tx>,
{
    /// Scans `block` and deals its events.
    fn scan(&mut self, block: u64) -> Result<(), RunError> {
        let threads = self.exchange.threads;
        // Sized like the last block's deals, to spare the copies of growing buffers.
        let mut deals: Vec<Deal> = self
            .sizes
            .iter()
            .map(|&(bytes, entries)| Deal {
                buffer: Vec::with_capacity(bytes + bytes / 8),
                entries: Vec::with_capacity(entries + entries / 8),
            })
            .collect();
        let start = self.blocks.start_of(block);
        let end = (start + self.blocks.block_events - 1).min(self.blocks.bound.0);
        let (mut admitted, mut events) = (None, 0u64);
        let scratch = &mut self.scratch;
        let (projection, filter, until) = (
            self.blocks.projection,
            &self.blocks.filter,
            self.blocks.until,
        );
        self.blocks
            .engine
            .scan(Position(start), |view, buffer, at| {
                let past = view.position > end
                    || matches!(until, Until::Time(time) if view.recorded_at > time);
                if past {
                    return ControlFlow::Break(());
                }
                admitted = Some(Position(view.position));
                if !filter.matches(view.stream, view.event_type) {
                    return ControlFlow::Continue(());
                }
                events += 1;
                fill(scratch, view, buffer);
                let length = record::record_len(buffer, at).unwrap_or(0);
                let encoded = buffer.get(at..at + length).unwrap_or_default();
                match projection.partition_key(scratch) {
                    Some(key) => {
                        let deal = &mut deals[(mix(key) % threads as u64) as usize];
                        let start = deal.push(encoded);
                        deal.entries.push(Entry::Record(start));
                    }
                    None => {
                        let position = Position(view.position);
                        for (owner, deal) in deals.iter_mut().enumerate() {
                            let record = (owner == 0).then(|| deal.push(encoded));
                            deal.entries.push(Entry::Barrier(position, record));
                        }
                    }
                }
                ControlFlow::Continue(())
            })
            .map_err(|error| RunError::Read(ReadError::Storage(error)))?;
        for (size, deal) in self.sizes.iter_mut().zip(&deals) {
            *size = (deal.buffer.len(), deal.entries.len());
        }
        let mut board = self.exchange.board();
        board
            .deals
            .insert(block, deals.into_iter().map(Some).collect());
        board.admitted = board.admitted.max(admitted);
        board.events += events;
        drop(board);
        self.exchange.changed.notify_all();
        Ok(())
    }

    /// Handles the events of one deal, in order.
    fn consume(&mut self, deal: Deal) -> Result<(), RunError> {
        let buffer = Bytes::from(deal.buffer);
        for entry in deal.entries {
            match entry {
                Entry::Record(start) => {
                    self.handle_record(&buffer, start)?;
                    if self.batch.full() {
                        self.batch.commit(None)?;
                    }
                }
                Entry::Barrier(position, record) => {
                    self.batch.commit(None)?;
                    self.barrier(position, record.map(|start| (&buffer, start)))?;
                }
            }
        }
        Ok(())
    }

    fn handle_record(&mut self, buffer: &Bytes, start: usize) -> Result<(), RunError> {
        let view = record::decode(buffer, start, false).map_err(corrupt)?;
        fill(&mut self.scratch, &view, buffer);
        self.batch.handle(&self.scratch)
    }

    /// Waits until every thread reached the barrier at `position`; the thread given
    /// its `record` then handles it while the others wait.
    fn barrier(
        &mut self,
        position: Position,
        record: Option<(&Bytes, usize)>,
    ) -> Result<(), RunError> {
        let exchange = self.exchange;
        let mut board = exchange.board();
        board.arrived += 1;
        exchange.changed.notify_all();
        let Some((buffer, start)) = record else {
            while !board.failed && board.barrier_done < Some(position) {
                board = exchange.wait(board);
            }
            return match board.failed {
                true => Err(another_failed(self.batch.name)),
                false => Ok(()),
            };
        };
        while !board.failed && board.arrived < exchange.threads {
            board = exchange.wait(board);
        }
        if board.failed {
            return Err(another_failed(self.batch.name));
        }
        drop(board);
        self.handle_record(buffer, start)?;
        self.batch.commit(None)?;
        let mut board = exchange.board();
        board.arrived = 0;
        board.barrier_done = Some(position);
        drop(board);
        exchange.changed.notify_all();
        Ok(())
    }

    /// The next deal to consume, or `None` if it is time to scan the next block.
    fn next_deal(&self, consume: u64, scan: u64) -> Result<Option<Deal>, RunError> {
        let may_scan = scan < self.blocks.count() && scan <= consume + LOOKAHEAD_BLOCKS;
        let mut board = self.exchange.board();
        loop {
            if board.failed {
                return Err(another_failed(self.batch.name));
            }
            if let Some(deals) = board.deals.get_mut(&consume) {
                let deal = deals[self.me].take();
                if deals.iter().all(Option::is_none) {
                    board.deals.remove(&consume);
                }
                return Ok(deal);
            }
            if may_scan {
                return Ok(None);
            }
            board = self.exchange.wait(board);
        }
    }

    fn run(&mut self) -> Result<(), RunError> {
        let threads = self.exchange.threads as u64;
        let count = self.blocks.count();
        let (mut consume, mut scan) = (0, self.me as u64);
        while consume < count {
            match self.next_deal(consume, scan)? {
                Some(deal) => {
                    self.consume(deal)?;
                    consume += 1;
                    if self.me == 0 {
                        self.report(consume);
                    }
                }
                None => {
                    self.scan(scan)?;
                    scan += threads;
                }
            }
        }
        self.batch.commit(None)
    }

    fn report(&self, consumed: u64) {
        let events = self.exchange.board().events;
        let end = self.blocks.start_of(consumed).saturating_sub(1);
        self.exchange.report.send_replace(RebuildProgress {
            position: Some(Position(end.min(self.blocks.bound.0))),
            target: self.blocks.target,
            events,
        });
    }
}

/// Replays `blocks` with `threads` threads into `sink` (which the caller reset);
/// commits without a checkpoint. Returns the counts and the last position replayed.
pub(super) fn replay_blocks<P, S>(
    blocks: &Blocks<'_, P>,
    sink: &S,
    threads: usize,
    report: &watch::Sender<RebuildProgress>,
) -> Result<(EventCounts, Option<Position>), RunError>
where
    S: Sink,
    P: Projection<S::Tx>,
{
    let name = blocks.projection.name();
    let exchange = Exchange {
        board: Mutex::new(Board {
            deals: HashMap::new(),
            failed: false,
            arrived: 0,
            barrier_done: None,
            admitted: None,
            events: 0,
        }),
        changed: Condvar::new(),
        threads,
        report,
    };
    let outcomes: Vec<Result<EventCounts, RunError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|me| {
                let exchange = &exchange;
                scope.spawn(move || {
                    let mut thread = Thread {
                        me,
                        blocks,
                        exchange,
                        batch: Batch::new(blocks.projection, sink, name, blocks.batch_events),
                        scratch: blank_event(),
                        sizes: vec![(0, 0); threads],
                    };
                    // A panicking handler must not leave the other threads waiting.
                    let run = std::panic::AssertUnwindSafe(|| thread.run());
                    let outcome = std::panic::catch_unwind(run).unwrap_or_else(|_| {
                        Err(RunError::Worker {
                            projection: name.to_owned(),
                            reason: "a handler panicked".into(),
                        })
                    });
                    if outcome.is_err() {
                        exchange.fail();
                    }
                    outcome.map(|()| thread.batch.counts)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| {
                handle.join().unwrap_or_else(|_| {
                    exchange.fail();
                    Err(RunError::Worker {
                        projection: name.to_owned(),
                        reason: "a handler panicked".into(),
                    })
                })
            })
            .collect()
    });
    let mut counts = EventCounts::default();
    let mut errors = Vec::new();
    for outcome in outcomes {
        match outcome {
            Ok(thread_counts) => counts += thread_counts,
            Err(error) => errors.push(error),
        }
    }
    // The failure itself, rather than the threads that stopped because of it.
    let secondary =
        |e: &RunError| matches!(e, RunError::Worker { reason, .. } if reason == ANOTHER_FAILED);
    if let Some(index) = errors
        .iter()
        .position(|e| !secondary(e))
        .or((!errors.is_empty()).then_some(0))
    {
        return Err(errors.swap_remove(index));
    }
    let admitted = exchange.board().admitted;
    let last = match blocks.until {
        Until::Time(_) => admitted,
        _ => Some(blocks.bound),
    };
    Ok((counts, last))
}
