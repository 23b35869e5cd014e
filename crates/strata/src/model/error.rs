//! Errors of the model layer.

use crate::error::{AppendError, ReadError};

/// Loading, decoding or storing failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    /// Reading the stream failed.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// Appending failed for a reason other than a concurrency conflict.
    #[error(transparent)]
    Append(#[from] AppendError),
    /// A stored event has a type (at a schema version) no upcaster or event variant knows.
    #[error("unknown event type {event_type:?} (schema version {version}) at revision {revision} of {stream:?}")]
    UnknownEvent {
        /// The stream.
        stream: String,
        /// The event's revision.
        revision: u64,
        /// Its type, after upcasting.
        event_type: String,
        /// Its schema version, after upcasting.
        version: u32,
    },
    /// A stored event could not be decoded (not JSON, or not the shape of its type).
    #[error("cannot decode event {event_type:?} at revision {revision} of {stream:?}: {reason}")]
    Decode {
        /// The stream.
        stream: String,
        /// The event's revision.
        revision: u64,
        /// Its type.
        event_type: String,
        /// What is wrong.
        reason: String,
    },
    /// An event to write does not serialise as an externally tagged enum variant.
    #[error("cannot encode event: {reason}")]
    Encode {
        /// What is wrong.
        reason: String,
    },
    /// An upcaster chain did not end (an upcaster returns its own input version).
    #[error("upcasting {event_type:?} from version {version} did not end after {steps} steps")]
    UpcastLoop {
        /// The type.
        event_type: String,
        /// The version it started at.
        version: u32,
        /// Steps taken.
        steps: usize,
    },
    /// The snapshot store failed.
    #[error("snapshot store: {0}")]
    Snapshot(String),
}

/// Why handling a command failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HandleError<E: std::error::Error + 'static> {
    /// The aggregate refused the command. Nothing was written.
    #[error("command refused: {0}")]
    Domain(#[source] E),
    /// Other writers kept changing the aggregate: every attempt met a conflict.
    #[error("gave up after {attempts} attempts: the aggregate kept changing")]
    TooManyConflicts {
        /// Attempts made.
        attempts: u32,
    },
    /// Loading, decoding or storing failed.
    #[error(transparent)]
    Model(#[from] ModelError),
}

impl<E: std::error::Error + 'static> From<ReadError> for HandleError<E> {
    fn from(error: ReadError) -> Self {
        HandleError::Model(ModelError::Read(error))
    }
}

impl<E: std::error::Error + 'static> From<AppendError> for HandleError<E> {
    fn from(error: AppendError) -> Self {
        HandleError::Model(ModelError::Append(error))
    }
}
