//! Sinks: where a projection's output lives, committed together with its checkpoint.
//!
//! A [`Sink`] hands out transactions, one batch of events at a time, and commits each
//! with the position of the last event it covers. Because the output and the checkpoint
//! change in one atomic commit, a crash at any moment leaves the sink holding the effect
//! of exactly the events up to its checkpoint: a restart resumes after it, so no event is
//! applied twice and none is skipped.
//!
//! The built-in sinks store documents (a key → JSON value map per projection) and share
//! one transaction type, [`DocumentTx`]: [`MemorySink`] keeps them in memory,
//! [`DurableSink`] in one redb file. A user sink (SQL tables, a search index) implements
//! [`Sink`] with its own transaction type, and its projections implement
//! `Projection<ThatTx>`.

mod document;
mod durable;
mod memory;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

use super::emit::Outbox;
use super::error::SinkError;
use crate::event::Position;

pub use document::{DocumentChanges, DocumentSource, DocumentTx};
pub use durable::DurableSink;
pub use memory::MemorySink;

/// A transaction of a sink: what a handler writes into.
pub trait Transaction: Send + 'static {
    /// Where handlers collect the events they emit (see [`Outbox`]), if this sink's
    /// transactions carry them; `None` (the default) means emitting is not supported.
    fn outbox(&mut self) -> Option<&mut Outbox> {
        None
    }
}

/// Where a projection's output and checkpoint live.
///
/// One writer per projection at a time: a runner, an inline store, or a rebuild. (The
/// parallel rebuild is the exception that proves the rule: its workers write disjoint
/// keys and commit without a checkpoint until the end.)
///
/// ## The contract
/// - [`commit`](Sink::commit) applies the transaction's output and sets the checkpoint
///   in one atomic step: after a crash, both or neither are visible.
/// - A commit with no checkpoint (`None`) leaves the checkpoint as it is. Rebuilds use
///   it for intermediate work, which may be made durable lazily (by the next commit with
///   a checkpoint): output without a checkpoint is treated as garbage and cleared by
///   [`reset`](Sink::reset) when processing starts from no checkpoint.
/// - A transaction reads the committed state as of its first read (or later): it sees
///   every transaction committed before that. Readers see every committed transaction.
pub trait Sink: Send + Sync + 'static {
    /// The transaction handlers write into.
    type Tx: Transaction;

    /// Starts a transaction on `projection`'s output.
    fn begin(&self, projection: &str) -> Result<Self::Tx, SinkError>;

    /// Commits `tx` and, if given, the new checkpoint, atomically.
    fn commit(
        &self,
        projection: &str,
        tx: Self::Tx,
        checkpoint: Option<Position>,
    ) -> Result<(), SinkError>;

    /// The position of the last event whose effect `projection`'s output holds.
    fn checkpoint(&self, projection: &str) -> Result<Option<Position>, SinkError>;

    /// Removes `projection`'s output and checkpoint.
    fn reset(&self, projection: &str) -> Result<(), SinkError>;
}

/// Shares one sink between several users.
impl<S: Sink> Sink for Arc<S> {
    type Tx = S::Tx;

    fn begin(&self, projection: &str) -> Result<Self::Tx, SinkError> {
        (**self).begin(projection)
    }

    fn commit(
        &self,
        projection: &str,
        tx: Self::Tx,
        checkpoint: Option<Position>,
    ) -> Result<(), SinkError> {
        (**self).commit(projection, tx, checkpoint)
    }

    fn checkpoint(&self, projection: &str) -> Result<Option<Position>, SinkError> {
        (**self).checkpoint(projection)
    }

    fn reset(&self, projection: &str) -> Result<(), SinkError> {
        (**self).reset(projection)
    }
}

/// All of a projection's documents and its checkpoint, read at one instant.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ReadModelSnapshot {
    /// The position of the last event reflected in `rows`.
    pub checkpoint: Option<Position>,
    /// The documents, by key.
    pub rows: BTreeMap<String, Value>,
}

/// Reading the documents of a sink: what reconciliation and callers need.
pub trait ReadModel: Send + Sync {
    /// The document `key` of `projection`, if there is one.
    fn get(&self, projection: &str, key: &str) -> Result<Option<Value>, SinkError>;

    /// Every document of `projection` and its checkpoint, consistent with each other.
    fn snapshot(&self, projection: &str) -> Result<ReadModelSnapshot, SinkError>;
}

impl<R: ReadModel> ReadModel for Arc<R> {
    fn get(&self, projection: &str, key: &str) -> Result<Option<Value>, SinkError> {
        (**self).get(projection, key)
    }

    fn snapshot(&self, projection: &str) -> Result<ReadModelSnapshot, SinkError> {
        (**self).snapshot(projection)
    }
}

/// Decodes a stored document into `T`.
pub(crate) fn decode_row<T: serde::de::DeserializeOwned>(
    projection: &str,
    key: &str,
    value: Option<Value>,
) -> Result<Option<T>, SinkError> {
    value
        .map(|value| {
            serde_json::from_value(value).map_err(|error| SinkError::Decode {
                projection: projection.to_owned(),
                key: key.to_owned(),
                reason: error.to_string(),
            })
        })
        .transpose()
}
