//! Errors, one enum per operation, wrapping a shared [`StorageError`].
//!
//! Business outcomes (a concurrency conflict, a deleted stream) are variants with data,
//! so callers can match on them; storage failures are a separate variant that says the
//! store itself is in trouble.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;

use crate::revision::{CurrentRevision, ExpectedRevision};

/// Input that breaks a rule or a limit. Nothing was written.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidInput {
    /// A stream name was empty.
    #[error("stream name is empty")]
    EmptyStreamName,
    /// A stream name was longer than the limit.
    #[error("stream name is {length} bytes long, the limit is {max}")]
    StreamNameTooLong {
        /// Length of the name, in bytes.
        length: usize,
        /// The limit, in bytes.
        max: usize,
    },
    /// A stream name contained a forbidden character.
    #[error("stream name {name:?} is invalid: {reason}")]
    InvalidStreamName {
        /// The name.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A write named a stream reserved for the system (starting with `$`).
    #[error("stream name {name:?} is reserved for the system (names starting with '$')")]
    ReservedStreamName {
        /// The name.
        name: String,
    },
    /// An event type was empty.
    #[error("event {id} has an empty event type")]
    EmptyEventType {
        /// The event's id.
        id: Uuid,
    },
    /// An event type was longer than the limit.
    #[error("event {id} has an event type of {length} bytes, the limit is {max}")]
    EventTypeTooLong {
        /// The event's id.
        id: Uuid,
        /// Length of the type, in bytes.
        length: usize,
        /// The limit, in bytes.
        max: usize,
    },
    /// An event type was reserved for the system (starting with `$`).
    #[error("event type {event_type:?} is reserved for the system (types starting with '$')")]
    ReservedEventType {
        /// The type.
        event_type: String,
    },
    /// An event was larger than the limit.
    #[error("event {id} is {size} bytes, the limit is {max}")]
    EventTooLarge {
        /// The event's id.
        id: Uuid,
        /// Its size (type + data + metadata), in bytes.
        size: usize,
        /// The limit, in bytes.
        max: usize,
    },
    /// An append held more events than the limit.
    #[error("append holds {count} events, the limit is {max}")]
    TooManyEvents {
        /// Number of events.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// An append was larger than the limit.
    #[error("append is {size} bytes, the limit is {max}")]
    AppendTooLarge {
        /// Its size, in bytes.
        size: usize,
        /// The limit, in bytes.
        max: usize,
    },
    /// A multi-stream append named more streams than the limit.
    #[error("append names {count} streams, the limit is {max}")]
    TooManyStreams {
        /// Number of streams.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A multi-stream append named the same stream twice.
    #[error("stream {stream:?} appears twice in one multi-stream append")]
    DuplicateStream {
        /// The stream.
        stream: String,
    },
    /// Stream metadata was not a JSON object of the documented shape.
    #[error("invalid stream metadata: {reason}")]
    InvalidMetadata {
        /// What is wrong with it.
        reason: String,
    },
    /// A read asked for zero events or another impossible range.
    #[error("invalid read: {reason}")]
    InvalidRead {
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// The storage underneath failed. Shared by every operation's error.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// An operating-system I/O call failed.
    #[error("{operation} {file}: {source}")]
    Io {
        /// What was being done (`write`, `fdatasync`, …).
        operation: &'static str,
        /// The file (or directory) it was done to.
        file: String,
        /// The operating system's error.
        #[source]
        source: Arc<io::Error>,
    },
    /// The disk is full (ENOSPC). Appends fail until space is freed and the store reopened.
    #[error("no space left on device while writing {file}")]
    DiskFull {
        /// The file being written.
        file: String,
    },
    /// A checksum or structural check failed inside the log (not at its tail).
    #[error("corrupt data in {file} at offset {offset}: {reason}")]
    Corrupt {
        /// The file.
        file: String,
        /// Byte offset of the damaged record.
        offset: u64,
        /// Which check failed.
        reason: String,
    },
    /// A file was written by a newer (or unknown) format version.
    #[error("{file} has format version {version}, this build reads up to {supported}")]
    UnsupportedFormat {
        /// The file.
        file: String,
        /// The version it declares.
        version: u32,
        /// The newest version this build reads.
        supported: u32,
    },
    /// An earlier write or sync failed, so the writer stopped acknowledging appends:
    /// the kernel may have dropped pages it could not write. Reopen the store.
    #[error("the store stopped accepting writes after an earlier failure ({cause}); reopen it")]
    Poisoned {
        /// The failure that poisoned the writer.
        cause: String,
    },
    /// The store was closed.
    #[error("the store is closed")]
    Closed,
    /// A server backend (PostgreSQL) failed or could not be reached. Appends that get
    /// this error may or may not have been recorded: retry them with the same event ids,
    /// which the store recognises.
    #[error("{backend}: {message}")]
    Backend {
        /// Which backend.
        backend: &'static str,
        /// What it said.
        message: String,
        /// The backend could not be reached or the connection broke: the operation may
        /// succeed if tried again (an append with the same event ids is recognised).
        transient: bool,
    },
    /// A server backend (PostgreSQL) did not serve the operation within a time limit:
    /// no pooled connection became free in time (the store is busy), or a statement
    /// ran longer than it may (a read too large for the time allowed). Nothing was
    /// written; trying again later, or reading less at a time, may succeed.
    #[error("{backend}: {operation} took longer than the {limit:?} allowed")]
    Timeout {
        /// Which backend.
        backend: &'static str,
        /// What timed out (`waiting for a free connection`, `a read statement`, …).
        operation: &'static str,
        /// The limit that was reached.
        limit: Duration,
    },
}

impl StorageError {
    /// Whether the failure may pass by itself (a server backend that could not be
    /// reached, or was too busy to answer in time), so that trying again later is the
    /// right response.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            StorageError::Backend {
                transient: true,
                ..
            } | StorageError::Timeout { .. }
        )
    }

    /// Wraps an I/O error, recognising a full disk.
    pub fn io(operation: &'static str, file: impl Into<String>, source: io::Error) -> StorageError {
        let file = file.into();
        if source.raw_os_error() == Some(libc::ENOSPC)
            || source.kind() == io::ErrorKind::StorageFull
        {
            return StorageError::DiskFull { file };
        }
        StorageError::Io {
            operation,
            file,
            source: Arc::new(source),
        }
    }

    /// A structural or checksum failure at `offset` of `file`.
    pub fn corrupt(
        file: impl Into<String>,
        offset: u64,
        reason: impl Into<String>,
    ) -> StorageError {
        StorageError::Corrupt {
            file: file.into(),
            offset,
            reason: reason.into(),
        }
    }
}

/// Why an append (or a delete, or a metadata write) failed. Nothing was written.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AppendError {
    /// The stream was not in the state the writer expected.
    #[error("wrong expected revision on stream {stream:?}: expected {expected}, actual {actual}")]
    WrongExpectedRevision {
        /// The stream.
        stream: String,
        /// What the writer expected.
        expected: ExpectedRevision,
        /// What the stream's state is.
        actual: CurrentRevision,
    },
    /// The stream was tombstoned (hard-deleted); its name can never be written again.
    #[error("stream {stream:?} is deleted permanently (tombstoned)")]
    StreamDeleted {
        /// The stream.
        stream: String,
    },
    /// Some but not all of the event ids were already recorded in this stream in this
    /// order: the append is neither new nor an exact retry.
    #[error("append to {stream:?} partially overlaps events already recorded (event {event_id})")]
    IdempotencyConflict {
        /// The stream.
        stream: String,
        /// The first event whose id does not match the recorded one.
        event_id: Uuid,
    },
    /// The input broke a rule or a limit.
    #[error(transparent)]
    Invalid(#[from] InvalidInput),
    /// The storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Why a read or a subscription failed.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// The stream has no events, or was soft-deleted.
    #[error("stream {stream:?} not found")]
    StreamNotFound {
        /// The stream.
        stream: String,
    },
    /// The stream was tombstoned (hard-deleted).
    #[error("stream {stream:?} is deleted permanently (tombstoned)")]
    StreamDeleted {
        /// The stream.
        stream: String,
    },
    /// A filtered read of the global log examined its scan budget
    /// ([`ReadAllOptions::scan_budget`](crate::ReadAllOptions::scan_budget)) before it
    /// found as many events as asked for. Nothing is lost: `found` holds the events it
    /// found, and the read goes on from `next` (pass it as `from`, with the same
    /// options). [`EventStore::read_all_page`](crate::EventStore::read_all_page) returns
    /// the same as a short page instead.
    #[error(
        "a filtered read of the global log examined its scan budget of {budget} events and \
         found {} matching events; continue from position {next}",
        found.len()
    )]
    ScanBudgetSpent {
        /// The read's scan budget, in events.
        budget: u64,
        /// The matching events found, in the order read.
        found: Vec<crate::event::RecordedEvent>,
        /// Where to continue (forwards, the first position not examined; backwards, the
        /// last).
        next: crate::event::Position,
    },
    /// Too many scans of the global log are running; none was started. Try again later.
    #[error(
        "the store is busy: {running} scans of the global log are running (the limit), \
         waited {waited:?} for one to end; try again later"
    )]
    Busy {
        /// Scans running, the configured limit.
        running: usize,
        /// How long this read waited for one to end.
        waited: std::time::Duration,
    },
    /// The request broke a rule or a limit.
    #[error(transparent)]
    Invalid(#[from] InvalidInput),
    /// The storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Why a store could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// Another process (or another handle in this one) has the store open for writing.
    #[error(
        "the store at {path} is already open in another process (lock file {path}/LOCK is held)"
    )]
    Locked {
        /// The store's directory.
        path: PathBuf,
    },
    /// The options contradict each other.
    #[error("invalid options: {reason}")]
    InvalidOptions {
        /// What is wrong.
        reason: String,
    },
    /// The storage failed or holds corrupt data.
    #[error(transparent)]
    Storage(#[from] StorageError),
}
