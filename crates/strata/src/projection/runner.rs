//! Async projections: a background task that follows the log from the checkpoint.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::definition::Projection;
use super::error::{RunError, WaitError};
use super::processor::{EventCounts, Page, Processor, Sizes};
use super::sink::Sink;
use super::wait::{lag, progress, Progress, ProgressWriter};
use crate::error::{ReadError, StorageError};
use crate::event::Position;
use crate::store::Store;

/// How a [`ProjectionRunner`] batches its work.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RunnerOptions {
    /// Handled events per committed transaction when catching up a backlog. When the
    /// runner reaches the head of the log it commits at once, whatever the count.
    pub batch_events: usize,
    /// Events per read of the log.
    pub page_events: usize,
    /// When only filtered-out events were read, the checkpoint is still committed once
    /// it trails the scan position by this many positions (so a restart need not
    /// rescan them). Readers see the progress at once either way.
    pub checkpoint_gap_events: u64,
}

impl Default for RunnerOptions {
    fn default() -> RunnerOptions {
        RunnerOptions {
            batch_events: 4096,
            page_events: 4096,
            checkpoint_gap_events: 100_000,
        }
    }
}

impl RunnerOptions {
    /// Sets [`RunnerOptions::batch_events`].
    pub fn batch_events(mut self, events: usize) -> RunnerOptions {
        self.batch_events = events;
        self
    }

    /// Sets [`RunnerOptions::page_events`].
    pub fn page_events(mut self, events: usize) -> RunnerOptions {
        self.page_events = events;
        self
    }

    /// Sets [`RunnerOptions::checkpoint_gap_events`].
    pub fn checkpoint_gap_events(mut self, events: u64) -> RunnerOptions {
        self.checkpoint_gap_events = events;
        self
    }
}

/// What a runner did before it stopped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RunnerReport {
    /// The checkpoint it committed last.
    pub checkpoint: Option<Position>,
    /// Events it processed in this run.
    pub counts: EventCounts,
}

/// An async projection: a background task that reads the log after the sink's
/// checkpoint, applies it in batches, and follows new events as they are appended.
///
/// It commits every [`RunnerOptions::batch_events`] handled events and whenever it
/// catches up, each time with the checkpoint in the same transaction; after a restart it
/// resumes after that checkpoint. Readers can [`wait_for`](ProjectionRunner::wait_for) a
/// position (read-your-writes), watch its position, and read its lag.
///
/// ```
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use strata::projection::{DocumentTx, MemorySink, Projection, ProjectionError, ProjectionRunner, RunnerOptions};
/// use strata::{EventData, ExpectedRevision, RecordedEvent, Store};
///
/// struct Counts;
/// impl Projection for Counts {
///     fn name(&self) -> &str { "counts" }
///     fn handle(&self, event: &RecordedEvent, tx: &mut DocumentTx) -> Result<(), ProjectionError> {
///         tx.update(&event.stream, |n: &mut u64| *n += 1)
///     }
/// }
///
/// let dir = tempfile::tempdir()?;
/// let store = Store::open(dir.path())?;
/// let sink = MemorySink::new();
/// let runner = ProjectionRunner::start(store.clone(), Counts, sink.clone(), RunnerOptions::default()).await?;
/// let appended = store.append("cart-1", ExpectedRevision::Any, vec![EventData::json("Added", &1)?]).await?;
/// runner.wait_for(appended.positions[0], Duration::from_secs(5)).await?;
/// assert_eq!(sink.get_as::<u64>("counts", "cart-1")?, Some(1));
/// runner.stop().await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct ProjectionRunner {
    name: String,
    store: Store,
    progress: Progress,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<Result<RunnerReport, RunError>>>,
}

impl ProjectionRunner {
    /// Reads the checkpoint (clearing any output left without one) and starts the
    /// background task. Needs a tokio runtime.
    pub async fn start<P, S>(
        store: Store,
        projection: P,
        sink: S,
        options: RunnerOptions,
    ) -> Result<ProjectionRunner, RunError>
    where
        S: Sink,
        P: Projection<S::Tx>,
    {
        let sizes = Sizes {
            batch_events: options.batch_events,
            page_events: options.page_events,
        };
        let processor = Processor::open(store.clone(), projection, Arc::new(sink), sizes).await?;
        let name = processor.name.clone();
        let (writer, progress) = progress(processor.committed());
        let (stop, stopped) = watch::channel(false);
        let gap = options.checkpoint_gap_events;
        let task = tokio::spawn(run(processor, writer, stopped, gap));
        Ok(ProjectionRunner {
            name,
            store,
            progress,
            stop,
            task: Some(task),
        })
    }

    /// The projection's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The position up to which the read model shows every event's effect.
    pub fn position(&self) -> Option<Position> {
        self.progress.position()
    }

    /// A receiver of [`position`](ProjectionRunner::position), updated as it advances.
    pub fn watch(&self) -> watch::Receiver<Option<Position>> {
        self.progress.watch()
    }

    /// Events of the log not yet reflected in the read model: the head's position minus
    /// the runner's (a count of events on the embedded store, whose positions have no
    /// gaps).
    pub fn lag(&self) -> u64 {
        lag(self.store.head(), self.position())
    }

    /// Waits until the read model reflects every event up to `position`, at most
    /// `timeout`.
    pub async fn wait_for(&self, position: Position, timeout: Duration) -> Result<(), WaitError> {
        self.progress.wait_for(position, timeout).await
    }

    /// Whether the task ended (it failed, or it was stopped).
    pub fn is_finished(&self) -> bool {
        self.task.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Why the task failed, if it did.
    pub fn failure(&self) -> Option<String> {
        self.progress.failure()
    }

    /// Commits the batch in progress and stops; returns what the run did, or why it
    /// failed earlier.
    pub async fn stop(mut self) -> Result<RunnerReport, RunError> {
        let _ = self.stop.send(true);
        match self.task.take() {
            Some(task) => task.await.unwrap_or_else(|error| {
                Err(RunError::Worker {
                    projection: self.name.clone(),
                    reason: error.to_string(),
                })
            }),
            None => Ok(RunnerReport::default()),
        }
    }
}

impl Drop for ProjectionRunner {
    /// Asks the task to commit its batch and stop, without waiting for it: use
    /// [`stop`](ProjectionRunner::stop) before starting another writer of the same
    /// projection.
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

async fn run<P, S>(
    mut processor: Processor<P, S>,
    writer: ProgressWriter,
    stopped: watch::Receiver<bool>,
    checkpoint_gap: u64,
) -> Result<RunnerReport, RunError>
where
    S: Sink,
    P: Projection<S::Tx>,
{
    let outcome = follow(&mut processor, &writer, stopped, checkpoint_gap).await;
    let outcome = match outcome {
        Ok(()) => processor.flush().await,
        Err(error) => Err(error),
    };
    writer.publish(processor.visible());
    match outcome {
        Ok(()) => Ok(RunnerReport {
            checkpoint: processor.committed(),
            counts: processor.counts,
        }),
        Err(error) => {
            tracing::error!(%error, projection = %processor.name, "projection stopped");
            writer.fail(error.to_string());
            Err(error)
        }
    }
}

/// Processes pages until stopped, waiting for the head to move when caught up.
async fn follow<P, S>(
    processor: &mut Processor<P, S>,
    writer: &ProgressWriter,
    mut stopped: watch::Receiver<bool>,
    checkpoint_gap: u64,
) -> Result<(), RunError>
where
    S: Sink,
    P: Projection<S::Tx>,
{
    loop {
        if *stopped.borrow_and_update() {
            return Ok(());
        }
        let page = processor.step().await?;
        if page == Page::More {
            writer.publish(processor.visible());
            tokio::task::yield_now().await;
            continue;
        }
        if processor.pending() > 0 || processor.uncommitted_positions() >= checkpoint_gap {
            processor.flush().await?;
        }
        writer.publish(processor.visible());
        // `step` marked the head it read as seen: a newer one wakes this at once.
        tokio::select! {
            _ = stopped.changed() => return Ok(()),
            changed = processor.head.changed() => {
                if changed.is_err() {
                    return Err(RunError::Read(ReadError::Storage(StorageError::Closed)));
                }
            }
        }
    }
}
