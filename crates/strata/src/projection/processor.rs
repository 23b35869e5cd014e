//! The engine room of live processing (runners and inline projections): read the log
//! page by page after the checkpoint, hand each event to the handler, append what it
//! emitted, and commit batches with their checkpoint.
//!
//! The processor tracks two positions. `committed` is the sink's checkpoint. `scanned`
//! is how far the log has been read: every event at or below it is either in the open
//! transaction or was filtered out. A commit moves `committed` up to `scanned`. If
//! anything fails, the open transaction is dropped and `scanned` falls back to
//! `committed`, so the next attempt reads those events again: the sink never holds the
//! effect of an event its checkpoint does not cover, and never misses one it does.

use std::sync::Arc;

use tokio::sync::watch;

use super::definition::{Projection, UnknownEvents};
use super::emit::{append_emissions, Outbox};
use super::error::{ProjectionError, RunError, SinkError};
use super::sink::{Sink, Transaction};
use crate::event::{Position, RecordedEvent};
use crate::filter::Filter;
use crate::store::{PageEnd, ReadAllOptions, Store};

/// How many events were handed to a handler.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventCounts {
    /// Events the handler handled.
    pub handled: u64,
    /// Events skipped as unknown types (see [`UnknownEvents`]).
    pub skipped: u64,
}

impl std::ops::AddAssign for EventCounts {
    fn add_assign(&mut self, other: EventCounts) {
        self.handled += other.handled;
        self.skipped += other.skipped;
    }
}

/// What one page of the log brought.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Page {
    /// There is more to read.
    More,
    /// Everything up to the head (as of the start of the read) was processed.
    Done,
}

/// Batch and page sizes.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Sizes {
    /// Handled events per committed transaction.
    pub batch_events: usize,
    /// Events per read of the log.
    pub page_events: usize,
}

pub(crate) fn sink_error(projection: &str) -> impl FnOnce(SinkError) -> RunError + '_ {
    move |source| RunError::Sink {
        projection: projection.to_owned(),
        source,
    }
}

/// Runs `work` on the sink in the blocking pool: sinks are synchronous and may sync files.
pub(crate) async fn on_sink<S: Sink, T: Send + 'static>(
    sink: &Arc<S>,
    projection: &str,
    work: impl FnOnce(&S) -> Result<T, SinkError> + Send + 'static,
) -> Result<T, RunError> {
    let sink = sink.clone();
    match tokio::task::spawn_blocking(move || work(&sink)).await {
        Ok(result) => result.map_err(sink_error(projection)),
        Err(error) => Err(RunError::Worker {
            projection: projection.to_owned(),
            reason: format!("the sink panicked: {error}"),
        }),
    }
}

/// Applies one event to `tx`: `Ok(true)` if handled, `Ok(false)` if skipped as unknown.
pub(crate) fn handle_one<P, T>(
    projection: &P,
    name: &str,
    event: &RecordedEvent,
    tx: &mut T,
) -> Result<bool, RunError>
where
    T: Transaction,
    P: Projection<T> + ?Sized,
{
    if let Some(outbox) = tx.outbox() {
        outbox.begin(name, event);
    }
    match projection.handle(event, tx) {
        Ok(()) => Ok(true),
        Err(ProjectionError::UnknownEventType { .. })
            if projection.unknown_events() == UnknownEvents::Skip =>
        {
            Ok(false)
        }
        Err(source) => Err(RunError::Handler {
            projection: name.to_owned(),
            position: event.position,
            event_type: event.event_type.clone(),
            source: Box::new(source),
        }),
    }
}

/// Reads the log after a checkpoint and applies it to a sink in committed batches.
pub(crate) struct Processor<P, S: Sink> {
    store: Store,
    projection: P,
    sink: Arc<S>,
    pub name: String,
    filter: Filter,
    sizes: Sizes,
    /// The head of the log, as published by the store.
    pub head: watch::Receiver<Option<Position>>,
    committed: Option<Position>,
    scanned: Option<Position>,
    tx: Option<S::Tx>,
    /// Handled events in `tx`.
    in_tx: usize,
    pub counts: EventCounts,
}

impl<P, S> Processor<P, S>
where
    S: Sink,
    P: Projection<S::Tx>,
{
    /// Starts after the sink's checkpoint. With no checkpoint, clears the sink's output
    /// for the projection first: output without a checkpoint is what an interrupted
    /// rebuild leaves behind.
    pub async fn open(
        store: Store,
        projection: P,
        sink: Arc<S>,
        sizes: Sizes,
    ) -> Result<Processor<P, S>, RunError> {
        let name = projection.name().to_owned();
        let key = name.clone();
        let checkpoint = on_sink(&sink, &name, move |sink| {
            let checkpoint = sink.checkpoint(&key)?;
            if checkpoint.is_none() {
                sink.reset(&key)?;
            }
            Ok(checkpoint)
        })
        .await?;
        let head = store.head();
        if let Some(checkpoint) = checkpoint.filter(|&checkpoint| Some(checkpoint) > head) {
            return Err(RunError::CheckpointAhead {
                projection: name,
                checkpoint,
                head,
            });
        }
        Ok(Processor {
            head: store.backend().watch_head(),
            store,
            filter: projection.filter(),
            projection,
            sink,
            name,
            sizes: Sizes {
                batch_events: sizes.batch_events.max(1),
                page_events: sizes.page_events.max(1),
            },
            committed: checkpoint,
            scanned: checkpoint,
            tx: None,
            in_tx: 0,
            counts: EventCounts::default(),
        })
    }

    /// The sink's checkpoint.
    pub fn committed(&self) -> Option<Position> {
        self.committed
    }

    /// The position up to which the sink shows the effect of every event: the scan
    /// position if no handled event awaits its commit, else the checkpoint.
    pub fn visible(&self) -> Option<Position> {
        if self.in_tx == 0 {
            self.scanned
        } else {
            self.committed
        }
    }

    /// Positions scanned but not yet covered by the checkpoint.
    pub fn uncommitted_positions(&self) -> u64 {
        let next = |p: Option<Position>| p.map_or(0, |p| p.0 + 1);
        next(self.scanned).saturating_sub(next(self.committed))
    }

    /// Handled events waiting for their commit.
    pub fn pending(&self) -> usize {
        self.in_tx
    }

    /// Drops the open transaction: the next read starts after the checkpoint again.
    fn discard(&mut self) {
        self.tx = None;
        self.in_tx = 0;
        self.scanned = self.committed;
    }

    fn apply(&mut self, event: &RecordedEvent) -> Result<(), RunError> {
        let tx = match &mut self.tx {
            Some(tx) => tx,
            None => {
                let tx = self
                    .sink
                    .begin(&self.name)
                    .map_err(sink_error(&self.name))?;
                self.tx.insert(tx)
            }
        };
        match handle_one(&self.projection, &self.name, event, tx) {
            Ok(true) => {
                self.in_tx += 1;
                self.counts.handled += 1;
            }
            Ok(false) => self.counts.skipped += 1,
            Err(error) => {
                self.discard();
                return Err(error);
            }
        }
        self.scanned = Some(event.position);
        Ok(())
    }

    /// Appends what the batch emitted, then commits it with the scan position as the
    /// checkpoint.
    pub async fn flush(&mut self) -> Result<(), RunError> {
        if self.tx.is_none() && self.scanned == self.committed {
            return Ok(());
        }
        let mut tx = match self.tx.take() {
            Some(tx) => tx,
            None => self
                .sink
                .begin(&self.name)
                .map_err(sink_error(&self.name))?,
        };
        let emissions = tx.outbox().map(Outbox::take).unwrap_or_default();
        if !emissions.is_empty() {
            if let Err(error) = append_emissions(&self.store, &self.name, emissions).await {
                self.discard();
                return Err(error);
            }
        }
        let checkpoint = self.scanned;
        let name = self.name.clone();
        let result = on_sink(&self.sink, &self.name, move |sink| {
            sink.commit(&name, tx, checkpoint)
        })
        .await;
        if let Err(error) = result {
            self.discard();
            return Err(error);
        }
        self.committed = checkpoint;
        self.in_tx = 0;
        Ok(())
    }

    /// Reads and applies one page of the log, committing whenever a batch is full.
    pub async fn step(&mut self) -> Result<Page, RunError> {
        let head = *self.head.borrow_and_update();
        let from = self.scanned.map_or(Position::START, Position::next);
        if head.is_none_or(|head| head < from) {
            return Ok(Page::Done);
        }
        let options = ReadAllOptions::forwards()
            .from_position(from)
            .limit(self.sizes.page_events)
            .filter(self.filter.clone());
        let page = self.store.read_all_page(options).await?;
        for event in &page.events {
            self.apply(event)?;
            if self.in_tx >= self.sizes.batch_events {
                self.flush().await?;
            }
        }
        // `apply` moved `scanned` to each event; the page may have examined more.
        match page.end {
            PageEnd::End => {
                // A page that reached the end read everything visible when it started.
                let last = page.events.last().map(|event| event.position);
                self.scanned = self.scanned.max(head.max(last));
                Ok(Page::Done)
            }
            PageEnd::ScanBudget => {
                // Cut short by the scan budget: move past what it examined.
                self.scanned = self.scanned.max(page.examined_through());
                Ok(Page::More)
            }
            _ => Ok(Page::More),
        }
    }

    /// Processes everything up to the head of the log and commits it.
    pub async fn catch_up(&mut self) -> Result<(), RunError> {
        while self.step().await? == Page::More {
            tokio::task::yield_now().await;
        }
        self.flush().await
    }
}
