//! The pieces a replay is made of: a batch of handled events in one sink transaction,
//! an event filled in place from an encoded record, and the loop of a worker fed by a
//! reader.

use std::sync::mpsc::{Receiver, SyncSender};

use bytes::Bytes;

use crate::engine::format::record::RecordView;
use crate::event::{ContentType, Position, RecordedEvent, Timestamp};
use crate::projection::definition::Projection;
use crate::projection::error::RunError;
use crate::projection::processor::{handle_one, sink_error, EventCounts};
use crate::projection::sink::{Sink, Transaction};

/// Events collected for one worker before they are sent.
pub(super) const HAND_EVENTS_MAX: usize = 512;

/// Events handled in one open transaction of the sink.
pub(super) struct Batch<'a, P, S: Sink> {
    pub projection: &'a P,
    pub sink: &'a S,
    pub name: &'a str,
    tx: Option<S::Tx>,
    in_tx: usize,
    batch_events: usize,
    pub counts: EventCounts,
}

impl<'a, P, S> Batch<'a, P, S>
where
    S: Sink,
    P: Projection<S::Tx>,
{
    pub fn new(projection: &'a P, sink: &'a S, name: &'a str, batch_events: usize) -> Self {
        Batch {
            projection,
            sink,
            name,
            tx: None,
            in_tx: 0,
            batch_events: batch_events.max(1),
            counts: EventCounts::default(),
        }
    }

    pub fn handle(&mut self, event: &RecordedEvent) -> Result<(), RunError> {
        let tx = match &mut self.tx {
            Some(tx) => tx,
            None => {
                let mut tx = self.sink.begin(self.name).map_err(sink_error(self.name))?;
                if let Some(outbox) = tx.outbox() {
                    outbox.discard();
                }
                self.tx.insert(tx)
            }
        };
        if handle_one(self.projection, self.name, event, tx)? {
            self.counts.handled += 1;
            self.in_tx += 1;
        } else {
            self.counts.skipped += 1;
        }
        Ok(())
    }

    pub fn full(&self) -> bool {
        self.in_tx >= self.batch_events
    }

    /// Commits the open transaction (an empty one if a checkpoint is to be set). A
    /// replay drops what handlers emitted.
    pub fn commit(&mut self, checkpoint: Option<Position>) -> Result<(), RunError> {
        self.in_tx = 0;
        let mut tx = match self.tx.take() {
            Some(tx) => tx,
            None if checkpoint.is_some() => {
                self.sink.begin(self.name).map_err(sink_error(self.name))?
            }
            None => return Ok(()),
        };
        if let Some(outbox) = tx.outbox() {
            outbox.take();
        }
        self.sink
            .commit(self.name, tx, checkpoint)
            .map_err(sink_error(self.name))
    }
}

/// What a reader sends a partition worker.
pub(super) enum Work {
    /// Events to handle, in order.
    Events(Vec<RecordedEvent>),
    /// Commit everything received so far, then answer.
    Flush(SyncSender<()>),
}

/// An event to fill in place, record after record, without allocating.
pub(super) fn blank_event() -> RecordedEvent {
    RecordedEvent {
        stream: String::new(),
        revision: 0,
        position: Position::START,
        id: uuid::Uuid::nil(),
        event_type: String::new(),
        data: Bytes::new(),
        metadata: Bytes::new(),
        content_type: ContentType::Json,
        recorded_at: Timestamp::from_micros(0),
        valid_at: None,
    }
}

/// Makes `event` the event `view` describes; its data and metadata share `buffer`.
pub(super) fn fill(event: &mut RecordedEvent, view: &RecordView<'_>, buffer: &Bytes) {
    event.stream.clear();
    event.stream.push_str(view.stream);
    event.event_type.clear();
    event.event_type.push_str(view.event_type);
    event.revision = view.revision;
    event.position = Position(view.position);
    event.id = view.id;
    event.data = buffer.slice(view.data.clone());
    event.metadata = buffer.slice(view.metadata.clone());
    event.content_type = view.content_type;
    event.recorded_at = view.recorded_at;
    event.valid_at = view.valid_at;
}

/// A partition worker: handles what it receives, in order, in its own transactions,
/// committed without a checkpoint.
pub(super) fn work<P, S>(
    mut batch: Batch<'_, P, S>,
    queue: Receiver<Work>,
) -> Result<EventCounts, RunError>
where
    S: Sink,
    P: Projection<S::Tx>,
{
    for work in queue {
        match work {
            Work::Events(events) => {
                for event in &events {
                    batch.handle(event)?;
                    if batch.full() {
                        batch.commit(None)?;
                    }
                }
            }
            Work::Flush(done) => {
                batch.commit(None)?;
                let _ = done.send(());
            }
        }
    }
    batch.commit(None)?;
    Ok(batch.counts)
}
