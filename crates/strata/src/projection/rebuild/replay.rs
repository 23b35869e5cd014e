//! Replaying the log into a sink: serially, or in parallel by partition.
//!
//! Serially, one thread reads the log and handles every event. On the embedded store it
//! uses [`Engine::scan`](crate::Engine::scan), which visits records in the buffers it
//! reads without allocating, and fills one reusable event in place for the handler;
//! other backends are read page by page.
//!
//! In parallel on the embedded store, every thread scans part of the log and handles
//! some partitions (see [`blocks`](super::blocks)). On other backends, one reader reads
//! pages and deals owned events to partition workers (scoped threads fed through bounded
//! channels of [`QUEUE_MESSAGES_MAX`] messages), handling a share of the partitions
//! itself.

use std::ops::ControlFlow;
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::Arc;

use tokio::sync::watch;

use super::blocks::{replay_blocks, Blocks};
use super::worker::{blank_event, fill, work, Batch, Work, HAND_EVENTS_MAX};
use super::RebuildProgress;
use crate::error::ReadError;
use crate::event::{Position, RecordedEvent, Timestamp};
use crate::filter::Filter;
use crate::projection::definition::Projection;
use crate::projection::error::RunError;
use crate::projection::processor::EventCounts;
use crate::projection::sink::Sink;
use crate::store::{PageEnd, ReadAllOptions, Store};

/// Messages waiting per worker.
const QUEUE_MESSAGES_MAX: usize = 8;
/// Events visited between two progress reports.
const PROGRESS_EVERY_EVENTS: u64 = 16_384;
/// The reason of the error a reader reports when a worker is gone; the worker's own
/// error replaces it.
const WORKER_GONE: &str = "a worker stopped";

/// Where a replay stops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Until {
    /// At the end of the durable log when the scan gets there.
    Head,
    /// After this position.
    Position(Position),
    /// Before the first event recorded after this instant.
    Time(Timestamp),
}

/// What to replay, and how.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Plan {
    /// Start after this position (the sink's checkpoint); `None`: from the start.
    pub after: Option<Position>,
    /// Where to stop.
    pub until: Until,
    /// Worker threads; more than 1 only from the start (see [`replay`]).
    pub parallelism: usize,
    /// Handled events per transaction.
    pub batch_events: usize,
    /// Events per read on backends other than the embedded one.
    pub page_events: usize,
    /// Positions per block of a parallel replay of the embedded store.
    pub block_events: u64,
}

/// What a replay did.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Replayed {
    pub counts: EventCounts,
    /// The checkpoint committed at the end.
    pub checkpoint: Option<Position>,
    /// Threads that handled events.
    pub parallelism: usize,
}

/// Buckets partitions are grouped in: each bucket has one owner for a whole replay.
const BUCKETS: usize = 256;

/// Who handles a bucket of partitions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Owner {
    /// The reader, between scanning events.
    Reader,
    /// A worker thread.
    Worker(usize),
}

/// Mixes a partition key (a 64-bit finaliser), so that small or patterned keys still
/// spread evenly over threads.
pub(super) fn mix(key: u64) -> u64 {
    let mut x = key;
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The bucket of a partition key.
fn bucket_of(key: u64) -> usize {
    (mix(key) % BUCKETS as u64) as usize
}

/// The first owners of the buckets with `threads` threads in all (the reader and
/// `threads - 1` workers). The reader also scans and deals every event, which costs
/// about as much as handling a simple one, so it starts with a smaller share: one part
/// in `2 × threads - 1`, each worker two.
fn first_owners(threads: usize) -> Vec<Owner> {
    let parts = 2 * threads - 1;
    (0..BUCKETS)
        .map(|bucket| match bucket % parts {
            0 => Owner::Reader,
            part => Owner::Worker((part - 1) / 2),
        })
        .collect()
}

fn worker_gone(name: &str) -> RunError {
    RunError::Worker {
        projection: name.to_owned(),
        reason: WORKER_GONE.into(),
    }
}

enum Admit {
    Stop,
    Skip,
    Take,
}

/// The reader's side.
struct Dealer<'a, P, S: Sink> {
    own: Batch<'a, P, S>,
    filter: Filter,
    until: Until,
    senders: Vec<SyncSender<Work>>,
    /// Events dealt to each worker and not yet sent.
    hands: Vec<Vec<RecordedEvent>>,
    /// Who handles each bucket of partitions; empty for a serial replay.
    owners: Vec<Owner>,
    /// Whether workers may hold events not yet committed.
    dealt: bool,
    /// Whether the reader's open transaction holds the output of a barrier event.
    barrier_pending: bool,
    /// The last position visited: every event up to it is handled or filtered out.
    visited: Option<Position>,
    visits: u64,
    events: u64,
    target: Option<Position>,
    report: &'a watch::Sender<RebuildProgress>,
}

impl<P, S> Dealer<'_, P, S>
where
    S: Sink,
    P: Projection<S::Tx>,
{
    fn admit(
        &mut self,
        position: u64,
        recorded_at: Timestamp,
        stream: &str,
        event_type: &str,
    ) -> Admit {
        let past = match self.until {
            Until::Head => false,
            Until::Position(bound) => position > bound.0,
            Until::Time(time) => recorded_at > time,
        };
        if past {
            return Admit::Stop;
        }
        self.visited = Some(Position(position));
        self.visits += 1;
        if self.visits.is_multiple_of(PROGRESS_EVERY_EVENTS) {
            self.report_progress();
        }
        if self.filter.matches(stream, event_type) {
            Admit::Take
        } else {
            Admit::Skip
        }
    }

    fn report_progress(&self) {
        self.report.send_replace(RebuildProgress {
            position: self.visited,
            target: self.target,
            events: self.events,
        });
    }

    /// Handles `event` here (serially, in a bucket the reader owns, or as a barrier) or
    /// deals it to the worker owning its bucket.
    fn take(&mut self, event: &RecordedEvent) -> Result<(), RunError> {
        self.events += 1;
        if self.owners.is_empty() {
            self.own.handle(event)?;
            if self.own.full() {
                self.own.commit(self.visited)?;
            }
            return Ok(());
        }
        let owner = self
            .own
            .projection
            .partition_key(event)
            .map(|key| self.owners[bucket_of(key)]);
        match owner {
            Some(Owner::Reader) => self.handle_here(event)?,
            Some(Owner::Worker(worker)) => {
                // Workers must see the output of the barrier events before them.
                if self.barrier_pending {
                    self.own.commit(None)?;
                    self.barrier_pending = false;
                }
                self.hands[worker].push(event.clone());
                self.dealt = true;
                if self.hands[worker].len() >= HAND_EVENTS_MAX {
                    self.send(worker)?;
                }
            }
            None => {
                if self.dealt {
                    self.flush_workers()?;
                    // A transaction may read from a snapshot taken before the workers'
                    // commits: start a fresh one.
                    self.own.commit(None)?;
                }
                self.barrier_pending = true;
                self.handle_here(event)?;
            }
        }
        Ok(())
    }

    fn handle_here(&mut self, event: &RecordedEvent) -> Result<(), RunError> {
        self.own.handle(event)?;
        if self.own.full() {
            self.own.commit(None)?;
            self.barrier_pending = false;
        }
        Ok(())
    }

    fn send(&mut self, worker: usize) -> Result<(), RunError> {
        if self.hands[worker].is_empty() {
            return Ok(());
        }
        let events = std::mem::take(&mut self.hands[worker]);
        self.senders[worker]
            .send(Work::Events(events))
            .map_err(|_| worker_gone(self.own.name))
    }

    /// Sends what was dealt and waits until every worker has committed it.
    fn flush_workers(&mut self) -> Result<(), RunError> {
        for worker in 0..self.senders.len() {
            self.send(worker)?;
        }
        let (done, answers) = sync_channel(self.senders.len());
        for sender in &self.senders {
            sender
                .send(Work::Flush(done.clone()))
                .map_err(|_| worker_gone(self.own.name))?;
        }
        drop(done);
        for _ in &self.senders {
            answers.recv().map_err(|_| worker_gone(self.own.name))?;
        }
        self.dealt = false;
        Ok(())
    }

    /// Scans the embedded log (serially: in parallel, it goes by blocks), or reads
    /// another backend's in pages.
    fn run(
        &mut self,
        store: &Store,
        after: Option<Position>,
        page_events: usize,
    ) -> Result<(), RunError> {
        let from = after.map_or(Position::START, Position::next);
        let Some(engine) = store.embedded() else {
            return self.read_pages(store, from, page_events);
        };
        let mut event = blank_event();
        let mut failure = None;
        engine
            .scan(from, |view, buffer, _| {
                match self.admit(
                    view.position,
                    view.recorded_at,
                    view.stream,
                    view.event_type,
                ) {
                    Admit::Stop => return ControlFlow::Break(()),
                    Admit::Skip => return ControlFlow::Continue(()),
                    Admit::Take => {}
                }
                fill(&mut event, view, buffer);
                match self.take(&event) {
                    Ok(()) => ControlFlow::Continue(()),
                    Err(error) => {
                        failure = Some(error);
                        ControlFlow::Break(())
                    }
                }
            })
            .map_err(|error| RunError::Read(ReadError::Storage(error)))?;
        failure.map_or(Ok(()), Err)
    }

    fn read_pages(
        &mut self,
        store: &Store,
        mut from: Position,
        page_events: usize,
    ) -> Result<(), RunError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|error| RunError::Worker {
            projection: self.own.name.to_owned(),
            reason: error.to_string(),
        })?;
        loop {
            let head = store.head();
            let options = ReadAllOptions::forwards()
                .from_position(from)
                .limit(page_events)
                .filter(self.filter.clone());
            let page = runtime.block_on(store.read_all_page(options))?;
            for event in &page.events {
                match self.admit(
                    event.position.0,
                    event.recorded_at,
                    &event.stream,
                    &event.event_type,
                ) {
                    Admit::Stop => return Ok(()),
                    Admit::Skip => {}
                    Admit::Take => self.take(event)?,
                }
                from = event.position.next();
            }
            match (page.end, page.next) {
                (PageEnd::End, _) => {}
                // Cut short by the scan budget (a filter that rarely matches): go on
                // past everything the page examined.
                (PageEnd::ScanBudget, Some(next)) => {
                    from = from.max(next);
                    continue;
                }
                // A full page: go on after its last event.
                _ => continue,
            }
            // A page that reached the end read everything up to the head seen before it.
            let through = match self.until {
                Until::Head => head,
                Until::Position(bound) => head.min(Some(bound)),
                Until::Time(_) => None,
            };
            self.visited = self.visited.max(through);
            return Ok(());
        }
    }

    /// Sends the rest to the workers and lets them stop; commits the reader's own
    /// batch (with the final checkpoint if serial).
    fn finish(&mut self) -> Result<(), RunError> {
        for worker in 0..self.senders.len() {
            self.send(worker)?;
        }
        let serial = self.owners.is_empty();
        self.senders.clear();
        self.own.commit(if serial { self.visited } else { None })
    }
}

/// Replays the log into `sink` on a blocking thread (and `plan.parallelism` worker
/// threads if the replay starts from zero), forwarding progress to `progress`.
///
/// Only a replay from zero may run in parallel: its workers commit without a
/// checkpoint, and a failure leaves output without a checkpoint, which the next start
/// clears. Resumed from a checkpoint, a replay commits a checkpoint with every batch.
pub(crate) async fn replay<P, S>(
    store: &Store,
    projection: P,
    sink: Arc<S>,
    plan: Plan,
    progress: &mut (impl FnMut(RebuildProgress) + Send),
) -> Result<Replayed, RunError>
where
    S: Sink,
    P: Projection<S::Tx>,
{
    let target = match plan.until {
        Until::Position(bound) => Some(bound),
        _ => store.head(),
    };
    let start = RebuildProgress {
        position: plan.after,
        target,
        events: 0,
    };
    let (report, mut reports) = watch::channel(start);
    let name = projection.name().to_owned();
    let store = store.clone();
    let mut task = tokio::task::spawn_blocking(move || {
        replay_blocking(&store, &projection, &*sink, plan, target, &report)
    });
    let mut delivered = None;
    let joined = loop {
        tokio::select! {
            joined = &mut task => break joined,
            changed = reports.changed() => match changed {
                Ok(()) => {
                    let now = *reports.borrow_and_update();
                    progress(now);
                    delivered = Some(now);
                }
                Err(_) => break (&mut task).await,
            },
        }
    };
    let replayed = joined.map_err(|error| RunError::Worker {
        projection: name,
        reason: error.to_string(),
    })??;
    let last = *reports.borrow();
    if delivered != Some(last) {
        progress(last);
    }
    Ok(replayed)
}

fn replay_blocking<P, S>(
    store: &Store,
    projection: &P,
    sink: &S,
    plan: Plan,
    target: Option<Position>,
    report: &watch::Sender<RebuildProgress>,
) -> Result<Replayed, RunError>
where
    S: Sink,
    P: Projection<S::Tx>,
{
    let name = projection.name();
    let threads = if plan.after.is_none() {
        plan.parallelism.clamp(1, BUCKETS)
    } else {
        1
    };
    if let (true, Some(engine), Some(bound)) =
        (threads > 1, store.embedded(), target.min(store.head()))
    {
        let blocks = Blocks {
            engine,
            projection,
            filter: projection.filter(),
            until: plan.until,
            first: Position::START,
            bound,
            target,
            batch_events: plan.batch_events,
            block_events: plan.block_events.max(1),
        };
        let (counts, last) = replay_blocks(&blocks, sink, threads, report)?;
        Batch::new(projection, sink, name, plan.batch_events).commit(last)?;
        report.send_replace(RebuildProgress {
            position: last,
            target,
            events: counts.handled + counts.skipped,
        });
        return Ok(Replayed {
            counts,
            checkpoint: last,
            parallelism: threads,
        });
    }
    let workers = threads - 1;
    std::thread::scope(|scope| {
        let mut senders = Vec::with_capacity(workers);
        let mut handles = Vec::with_capacity(workers);
        for _ in 0..workers {
            let (sender, queue) = sync_channel(QUEUE_MESSAGES_MAX);
            let batch = Batch::new(projection, sink, name, plan.batch_events);
            handles.push(scope.spawn(move || work(batch, queue)));
            senders.push(sender);
        }
        let mut dealer = Dealer {
            own: Batch::new(projection, sink, name, plan.batch_events),
            filter: projection.filter(),
            until: plan.until,
            hands: senders.iter().map(|_| Vec::new()).collect(),
            senders,
            owners: if threads > 1 {
                first_owners(threads)
            } else {
                Vec::new()
            },
            dealt: false,
            barrier_pending: false,
            visited: plan.after,
            visits: 0,
            events: 0,
            target,
            report,
        };
        let mut failure = dealer
            .run(store, plan.after, plan.page_events)
            .and_then(|()| dealer.finish())
            .err();
        // Whatever happened, no worker can receive more.
        dealer.senders.clear();
        let mut counts = dealer.own.counts;
        for handle in handles {
            let outcome = handle.join().unwrap_or_else(|_| {
                Err(RunError::Worker {
                    projection: name.to_owned(),
                    reason: "a handler panicked".into(),
                })
            });
            match outcome {
                Ok(worker_counts) => counts += worker_counts,
                Err(error) => {
                    let placeholder = matches!(&failure,
                        Some(RunError::Worker { reason, .. }) if reason == WORKER_GONE);
                    if failure.is_none() || placeholder {
                        failure = Some(error);
                    }
                }
            }
        }
        if let Some(error) = failure {
            return Err(error);
        }
        if threads > 1 {
            dealer.own.commit(dealer.visited)?;
        }
        dealer.report_progress();
        Ok(Replayed {
            counts,
            checkpoint: dealer.visited,
            parallelism: threads,
        })
    })
}
