//! Time travel: a projection evaluated as of a past position or instant.
//!
//! The log up to that point is replayed into a scratch in-memory sink (never emitting
//! events); the live read model is not touched.

use super::definition::Projection;
use super::error::RunError;
use super::processor::on_sink;
use super::rebuild::{replay, Plan, RebuildOptions, Until};
use super::sink::{DocumentTx, MemorySink, ReadModel, ReadModelSnapshot, Sink};
use crate::event::{Position, Timestamp};
use crate::store::Store;
use std::sync::Arc;

/// A point in the history of the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AsOf {
    /// Just after the event at this position (events beyond the head do not exist yet:
    /// a position past it means the head).
    Position(Position),
    /// Just after the last event recorded at or before this instant (`recorded_at`,
    /// which never decreases along the log).
    Time(Timestamp),
}

impl From<AsOf> for Until {
    fn from(as_of: AsOf) -> Until {
        match as_of {
            AsOf::Position(position) => Until::Position(position),
            AsOf::Time(time) => Until::Time(time),
        }
    }
}

/// Replays the log into `sink` from its checkpoint up to `as_of` (the head if `None`),
/// without emitting events; returns the checkpoint reached. A sink with no checkpoint is
/// cleared first and, if the projection declares partitions, replayed into in parallel
/// as `options` allow.
pub async fn replay_into<P, S>(
    store: &Store,
    projection: P,
    sink: S,
    as_of: Option<AsOf>,
    options: RebuildOptions,
) -> Result<Option<Position>, RunError>
where
    S: Sink,
    P: Projection<S::Tx>,
{
    let sink = Arc::new(sink);
    let name = projection.name().to_owned();
    let key = name.clone();
    let after = on_sink(&sink, &name, move |sink| {
        let checkpoint = sink.checkpoint(&key)?;
        if checkpoint.is_none() {
            sink.reset(&key)?;
        }
        Ok(checkpoint)
    })
    .await?;
    let plan = Plan {
        after,
        until: as_of.map_or(Until::Head, Until::from),
        parallelism: options.parallelism,
        batch_events: options.batch_events,
        page_events: options.page_events,
        block_events: options.block_events,
    };
    let replayed = replay(store, projection, sink, plan, &mut |_| {}).await?;
    Ok(replayed.checkpoint)
}

/// The read model `projection` had as of `as_of`: its documents and the position of the
/// last event they reflect.
///
/// ```
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use strata::projection::{project_as_of, AsOf, DocumentTx, Projection, ProjectionError};
/// use strata::{EventData, ExpectedRevision, Position, RecordedEvent, Store};
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
/// for _ in 0..3 {
///     store.append("cart-1", ExpectedRevision::Any, vec![EventData::json("Added", &1)?]).await?;
/// }
/// let then = project_as_of(&store, Counts, AsOf::Position(Position(1))).await?;
/// assert_eq!(then.rows["cart-1"], serde_json::json!(2));
/// # Ok(()) }
/// ```
pub async fn project_as_of<P>(
    store: &Store,
    projection: P,
    as_of: AsOf,
) -> Result<ReadModelSnapshot, RunError>
where
    P: Projection<DocumentTx>,
{
    let name = projection.name().to_owned();
    let sink = MemorySink::new();
    let options = RebuildOptions::default();
    replay_into(store, projection, sink.clone(), Some(as_of), options).await?;
    sink.snapshot(&name).map_err(|source| RunError::Sink {
        projection: name,
        source,
    })
}
