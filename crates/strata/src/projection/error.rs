//! Errors of projections, one enum per kind of operation: what a handler returns
//! ([`ProjectionError`]), what a sink returns ([`SinkError`]), why processing stopped
//! ([`RunError`]), why a wait ended ([`WaitError`]) and why an inline append failed
//! ([`InlineAppendError`]).

use std::sync::Arc;
use std::time::Duration;

use crate::error::{AppendError, ReadError};
use crate::event::{Position, RecordedEvent};
use crate::store::AppendResult;

/// Why a projection's handler could not handle an event.
///
/// Handlers return these; the runner adds which projection and which event it was
/// ([`RunError::Handler`]). Nothing here is a panic: a bad event stops the projection
/// at that event, with its checkpoint before it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProjectionError {
    /// The handler does not know this event type. Skipped (and counted) when the
    /// projection's [`UnknownEvents`](super::UnknownEvents) policy is `Skip`, the default.
    /// Return it before writing anything for the event.
    #[error("unknown event type {event_type:?}")]
    UnknownEventType {
        /// The event's type.
        event_type: String,
    },
    /// The event's data (or a stored document) did not decode as the handler expected.
    #[error("cannot decode: {0}")]
    Decode(#[from] serde_json::Error),
    /// The handler rejected the event (a broken invariant of the read model).
    #[error("{reason}")]
    Rejected {
        /// Why.
        reason: String,
    },
    /// An emitted event could not be prepared (its metadata is not a JSON object).
    #[error("cannot emit an event: {reason}")]
    Emit {
        /// Why.
        reason: String,
    },
    /// The sink failed while the handler read or wrote it.
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// Any other failure of user code.
    #[error(transparent)]
    Other(Box<dyn std::error::Error + Send + Sync>),
}

impl ProjectionError {
    /// The error for an event type the handler does not handle.
    pub fn unknown(event: &RecordedEvent) -> ProjectionError {
        ProjectionError::UnknownEventType {
            event_type: event.event_type.clone(),
        }
    }

    /// The handler rejects the event.
    pub fn rejected(reason: impl Into<String>) -> ProjectionError {
        ProjectionError::Rejected {
            reason: reason.into(),
        }
    }
}

/// Why a sink operation failed.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SinkError {
    /// The sink's storage failed (for the durable sink: a redb error).
    #[error("{operation} failed: {source}")]
    Storage {
        /// What was being done.
        operation: &'static str,
        /// The underlying error.
        #[source]
        source: Arc<dyn std::error::Error + Send + Sync>,
    },
    /// A stored document is not valid JSON (the file was changed outside strata), or
    /// not of the type it was read as.
    #[error("document {key:?} of projection {projection:?} cannot be decoded: {reason}")]
    Decode {
        /// The projection.
        projection: String,
        /// The row's key.
        key: String,
        /// The decoder's complaint.
        reason: String,
    },
    /// A document could not be encoded as JSON (e.g. a map with non-string keys).
    #[error("document {key:?} cannot be encoded as JSON: {reason}")]
    Encode {
        /// The document's key.
        key: String,
        /// The encoder's complaint.
        reason: String,
    },
    /// The sink refused the commit (a user sink's own rule, or an injected failure).
    #[error("commit refused: {reason}")]
    Refused {
        /// Why.
        reason: String,
    },
    /// The sink is fenced by a lease this node no longer holds (it expired, or another
    /// node took it over): nothing was written. The node must stop writing; the lease's
    /// new holder carries on from the checkpoint.
    #[error("lease {lease:?} is no longer held by {holder:?} in epoch {epoch}: write refused")]
    Fenced {
        /// The lease's name.
        lease: String,
        /// The holder the sink writes for.
        holder: String,
        /// The epoch the sink writes for.
        epoch: u64,
    },
}

impl SinkError {
    /// Wraps a storage error of a sink's backend.
    pub fn storage(
        operation: &'static str,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> SinkError {
        SinkError::Storage {
            operation,
            source: Arc::new(source),
        }
    }
}

/// Why a projection stopped processing (runner, inline catch-up, rebuild, replay).
///
/// Whatever the cause, the sink holds the output of exactly the events up to its
/// checkpoint: the failed batch was not committed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// Reading the log failed.
    #[error("reading the log failed: {0}")]
    Read(#[from] ReadError),
    /// The sink failed (begin, commit, checkpoint or reset).
    #[error("projection {projection:?}: sink failed: {source}")]
    Sink {
        /// The projection.
        projection: String,
        /// The sink's error.
        #[source]
        source: SinkError,
    },
    /// The handler failed on an event.
    #[error("projection {projection:?} failed on event {position} ({event_type}): {source}")]
    Handler {
        /// The projection.
        projection: String,
        /// The event's position.
        position: Position,
        /// The event's type.
        event_type: String,
        /// The handler's error.
        #[source]
        source: Box<ProjectionError>,
    },
    /// Appending the events a handler emitted failed.
    #[error(
        "projection {projection:?}: appending events emitted for event {cause} failed: {source}"
    )]
    Emit {
        /// The projection.
        projection: String,
        /// Position of the event whose handling emitted them.
        cause: Position,
        /// The store's error.
        #[source]
        source: AppendError,
    },
    /// The sink's checkpoint is past the end of the log: the read model was built from
    /// another (or a longer) log, e.g. the store was restored from an older backup.
    /// Rebuild it.
    #[error("projection {projection:?} has checkpoint {checkpoint}, past the end of the log ({head:?}); rebuild it")]
    CheckpointAhead {
        /// The projection.
        projection: String,
        /// Its checkpoint.
        checkpoint: Position,
        /// The last position of the log.
        head: Option<Position>,
    },
    /// A worker thread or task ended abnormally (a handler panicked).
    #[error("projection {projection:?}: a worker stopped abnormally: {reason}")]
    Worker {
        /// The projection.
        projection: String,
        /// What happened.
        reason: String,
    },
}

/// Why [`wait_for`](super::ProjectionRunner::wait_for) returned without the projection
/// reaching the position.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WaitError {
    /// The projection did not reach the position in time.
    #[error(
        "projection did not reach position {position} within {timeout:?} (it is at {reached:?})"
    )]
    Timeout {
        /// The position waited for.
        position: Position,
        /// How long it waited.
        timeout: Duration,
        /// The position the projection had reached.
        reached: Option<Position>,
    },
    /// The projection stopped (or failed) before reaching the position.
    #[error("projection stopped at {reached:?} before reaching position {position}{}", reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default())]
    Stopped {
        /// The position waited for.
        position: Position,
        /// The position the projection had reached.
        reached: Option<Position>,
        /// Why it stopped, if it failed.
        reason: Option<String>,
    },
}

/// Why an append through an [`InlineStore`](super::InlineStore) failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InlineAppendError {
    /// The append failed: nothing was written.
    #[error(transparent)]
    Append(#[from] AppendError),
    /// The events **were recorded**, but an inline projection failed to process them:
    /// its read model lags the log until the next successful catch-up (the next append,
    /// [`InlineStore::catch_up`](super::InlineStore::catch_up), or the next open).
    #[error("the events were recorded, but an inline projection failed: {source}")]
    Projection {
        /// Where the events were recorded.
        results: Vec<AppendResult>,
        /// What failed.
        #[source]
        source: RunError,
    },
}
