//! Expected and current stream revisions (optimistic concurrency).

use std::fmt;

use serde::{Deserialize, Serialize};

/// What a writer expects of a stream's state; a mismatch fails the append with
/// [`AppendError::WrongExpectedRevision`](crate::AppendError::WrongExpectedRevision).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExpectedRevision {
    /// No check.
    Any,
    /// The stream must have no events (or have been soft-deleted).
    NoStream,
    /// The stream must have at least one event.
    StreamExists,
    /// The stream's last event must have this revision.
    Exact(u64),
}

impl ExpectedRevision {
    /// Whether a stream in state `current` meets this expectation.
    ///
    /// ```
    /// use strata_core::{CurrentRevision, ExpectedRevision};
    /// assert!(ExpectedRevision::NoStream.is_satisfied_by(CurrentRevision::NoStream));
    /// assert!(!ExpectedRevision::Exact(1).is_satisfied_by(CurrentRevision::Current(2)));
    /// ```
    pub fn is_satisfied_by(self, current: CurrentRevision) -> bool {
        match self {
            ExpectedRevision::Any => true,
            ExpectedRevision::NoStream => current == CurrentRevision::NoStream,
            ExpectedRevision::StreamExists => current != CurrentRevision::NoStream,
            ExpectedRevision::Exact(revision) => current == CurrentRevision::Current(revision),
        }
    }
}

impl fmt::Display for ExpectedRevision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpectedRevision::Any => f.write_str("any"),
            ExpectedRevision::NoStream => f.write_str("no stream"),
            ExpectedRevision::StreamExists => f.write_str("stream exists"),
            ExpectedRevision::Exact(revision) => revision.fmt(f),
        }
    }
}

/// A stream's actual state, as reported in a conflict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CurrentRevision {
    /// The stream has no events (or reads as deleted).
    NoStream,
    /// The revision of the stream's last event.
    Current(u64),
}

impl CurrentRevision {
    /// The revision the next event of the stream gets.
    pub fn next(self) -> u64 {
        match self {
            CurrentRevision::NoStream => 0,
            CurrentRevision::Current(revision) => revision + 1,
        }
    }
}

/// What to expect when writing back to a stream read in this state: exactly this
/// state, so that a change made in between is refused instead of overwritten.
impl From<CurrentRevision> for ExpectedRevision {
    fn from(current: CurrentRevision) -> ExpectedRevision {
        match current {
            CurrentRevision::NoStream => ExpectedRevision::NoStream,
            CurrentRevision::Current(revision) => ExpectedRevision::Exact(revision),
        }
    }
}

impl fmt::Display for CurrentRevision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CurrentRevision::NoStream => f.write_str("no stream"),
            CurrentRevision::Current(revision) => revision.fmt(f),
        }
    }
}
