//! Rebuilding a projection from zero: reset its output, replay the log into it.
//!
//! A rebuild replays the log up to the head as it was when the rebuild started, then
//! commits that position as the checkpoint; a runner started afterwards continues from
//! there. Replays never emit events (see [`emit`](super::emit)).
//!
//! ## Parallel rebuilds
//! If the projection declares partitions ([`Projection::partition_key`]) and the
//! options allow more than one thread, one reader reads the log in pages and deals each
//! event to the worker owning its partition, through bounded channels; each worker
//! handles its events in log order in its own transactions. Since a partition's events
//! all go to one worker, in order, and partitions write disjoint keys, the output is
//! exactly the serial one. Events without a partition are barriers, handled by the
//! reader once every worker has committed what came before.
//!
//! Workers commit without a checkpoint; the checkpoint is written once, at the end, when
//! every worker is done. An interrupted parallel rebuild therefore leaves output without
//! a checkpoint, which the next run clears before starting from zero. A serial rebuild
//! commits a checkpoint with every batch and can be resumed by a runner.

mod blocks;
mod replay;
mod worker;

use std::sync::Arc;

pub(crate) use replay::{replay, Plan, Until};
use std::time::{Duration, Instant};

use super::definition::Projection;
use super::error::RunError;
use super::processor::{on_sink, EventCounts};
use super::sink::Sink;
use crate::event::Position;
use crate::store::Store;

/// How a rebuild runs.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RebuildOptions {
    /// Worker threads for a partitioned projection (default: the available cores); 1
    /// rebuilds serially.
    pub parallelism: usize,
    /// Handled events per committed transaction (per worker).
    pub batch_events: usize,
    /// Events per read of the log, on backends other than the embedded one (which is
    /// scanned without pages).
    pub page_events: usize,
    /// Positions per block of a parallel replay of the embedded store (each thread scans
    /// whole blocks; memory grows with it, about 3 blocks of events per thread).
    pub block_events: u64,
}

impl Default for RebuildOptions {
    fn default() -> RebuildOptions {
        RebuildOptions {
            parallelism: std::thread::available_parallelism().map_or(1, usize::from),
            batch_events: 16_384,
            page_events: 4096,
            block_events: 32_768,
        }
    }
}

impl RebuildOptions {
    /// A serial rebuild.
    pub fn serial() -> RebuildOptions {
        RebuildOptions::default().parallelism(1)
    }

    /// Sets [`RebuildOptions::parallelism`] (at least 1).
    pub fn parallelism(mut self, threads: usize) -> RebuildOptions {
        self.parallelism = threads.max(1);
        self
    }

    /// Sets [`RebuildOptions::batch_events`].
    pub fn batch_events(mut self, events: usize) -> RebuildOptions {
        self.batch_events = events.max(1);
        self
    }

    /// Sets [`RebuildOptions::page_events`].
    pub fn page_events(mut self, events: usize) -> RebuildOptions {
        self.page_events = events.max(1);
        self
    }

    /// Sets [`RebuildOptions::block_events`].
    pub fn block_events(mut self, events: u64) -> RebuildOptions {
        self.block_events = events.max(1);
        self
    }
}

/// How far a rebuild is, as reported to its progress callback every few thousand
/// events and at the end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RebuildProgress {
    /// The last position read.
    pub position: Option<Position>,
    /// The position the rebuild stops at (the head when it started).
    pub target: Option<Position>,
    /// Events that passed the filter so far.
    pub events: u64,
}

/// What a finished rebuild did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RebuildReport {
    /// The checkpoint it committed: the head of the log when it started.
    pub checkpoint: Option<Position>,
    /// Events handled and skipped.
    pub counts: EventCounts,
    /// Threads that handled events (1 for a serial rebuild).
    pub parallelism: usize,
    /// Wall-clock time.
    pub elapsed: Duration,
}

/// Clears `projection`'s output and checkpoint in `sink` and replays the log into it,
/// in parallel if the projection declares partitions and `options` allow it.
///
/// Stop any runner of the projection first: one writer per projection at a time.
/// `progress` is called as the rebuild advances (for a progress bar).
pub async fn rebuild<P, S>(
    store: &Store,
    projection: P,
    sink: S,
    options: RebuildOptions,
    mut progress: impl FnMut(RebuildProgress) + Send,
) -> Result<RebuildReport, RunError>
where
    S: Sink,
    P: Projection<S::Tx>,
{
    let started = Instant::now();
    let sink = Arc::new(sink);
    let name = projection.name().to_owned();
    let key = name.clone();
    on_sink(&sink, &name, move |sink| sink.reset(&key)).await?;
    let target = store.head();
    let Some(target) = target else {
        return Ok(RebuildReport {
            checkpoint: None,
            counts: EventCounts::default(),
            parallelism: 1,
            elapsed: started.elapsed(),
        });
    };
    let plan = Plan {
        after: None,
        until: Until::Position(target),
        parallelism: options.parallelism,
        batch_events: options.batch_events,
        page_events: options.page_events,
        block_events: options.block_events,
    };
    let replayed = replay(store, projection, sink, plan, &mut progress).await?;
    Ok(RebuildReport {
        checkpoint: replayed.checkpoint,
        counts: replayed.counts,
        parallelism: replayed.parallelism,
        elapsed: started.elapsed(),
    })
}
