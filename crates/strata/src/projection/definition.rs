//! The [`Projection`] trait: what a user writes to derive a read model from the log.

use std::sync::Arc;

use crate::event::RecordedEvent;
use crate::filter::Filter;

use super::error::ProjectionError;
use super::sink::{DocumentTx, Transaction};

/// What to do when a handler returns [`ProjectionError::UnknownEventType`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum UnknownEvents {
    /// Count the event as processed and go on (the default): a projection written before
    /// a new event type existed keeps working.
    #[default]
    Skip,
    /// Stop the projection at the event, like any other handler error.
    Fail,
}

/// A read model derived from the global log.
///
/// A projection is a name, a filter, and a handler that writes each event's effect
/// into a sink transaction. The runners call `handle` for every event that passes the
/// filter, in log order, and commit the transaction together with the position of the
/// last event it holds, so the output and the checkpoint can never disagree.
///
/// `Tx` is the sink's transaction type; the built-in sinks
/// ([`MemorySink`](super::MemorySink), [`DurableSink`](super::DurableSink)) both use
/// [`DocumentTx`], a key → JSON document map, which is the default.
///
/// ```
/// use strata::projection::{DocumentTx, Projection, ProjectionError};
/// use strata::RecordedEvent;
///
/// /// Events per stream.
/// struct EventCounts;
///
/// impl Projection for EventCounts {
///     fn name(&self) -> &str {
///         "event-counts"
///     }
///
///     fn handle(&self, event: &RecordedEvent, tx: &mut DocumentTx) -> Result<(), ProjectionError> {
///         tx.update(&event.stream, |count: &mut u64| *count += 1)
///     }
/// }
/// ```
///
/// State belongs in the transaction, not in `self`: the handler takes `&self` because
/// only what is committed with the checkpoint survives a failed batch, a restart or a
/// rebuild. `self` is for configuration and caches that can be recomputed.
pub trait Projection<Tx: Transaction = DocumentTx>: Send + Sync + 'static {
    /// The projection's name: it keys its output and checkpoint in the sink, so it must
    /// stay the same across restarts (change it to start over).
    fn name(&self) -> &str;

    /// Which events to handle. The default is every event except system events
    /// (metadata streams and `$`-types).
    fn filter(&self) -> Filter {
        Filter::new().exclude_system_events()
    }

    /// Writes the effect of `event` into `tx`.
    ///
    /// Return [`ProjectionError::unknown`] (before writing anything) for an event type the
    /// projection does not handle; see [`Projection::unknown_events`].
    fn handle(&self, event: &RecordedEvent, tx: &mut Tx) -> Result<(), ProjectionError>;

    /// What to do with events whose handler reports an unknown type. Default: skip.
    fn unknown_events(&self) -> UnknownEvents {
        UnknownEvents::Skip
    }

    /// The partition of `event`, for parallel rebuilds; `None` (the default) means none.
    ///
    /// Declare one only if the output of a partition depends on that partition's events
    /// alone (in log order) and partitions write disjoint keys: e.g. a read model keyed by
    /// stream, partitioned by [`partition_of_stream`]. A rebuild then runs partitions on
    /// several threads and gives exactly the serial result. An event with no partition is
    /// a barrier: everything before it finishes, it is handled alone, then parallel work
    /// resumes.
    fn partition_key(&self, _event: &RecordedEvent) -> Option<u64> {
        None
    }
}

/// Shares one projection between several users (a runner and a rebuild, say).
impl<Tx: Transaction, P: Projection<Tx>> Projection<Tx> for Arc<P> {
    fn name(&self) -> &str {
        (**self).name()
    }

    fn filter(&self) -> Filter {
        (**self).filter()
    }

    fn handle(&self, event: &RecordedEvent, tx: &mut Tx) -> Result<(), ProjectionError> {
        (**self).handle(event, tx)
    }

    fn unknown_events(&self) -> UnknownEvents {
        (**self).unknown_events()
    }

    fn partition_key(&self, event: &RecordedEvent) -> Option<u64> {
        (**self).partition_key(event)
    }
}

/// A partition key from a string: the same string gives the same key in every process
/// and version (FNV-1a, not the randomly seeded std hasher).
pub fn partition_of(text: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// The partition key of an event's stream: for read models keyed by stream.
pub fn partition_of_stream(event: &RecordedEvent) -> u64 {
    partition_of(&event.stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_keys_are_stable() {
        assert_eq!(partition_of(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(partition_of("a"), 0xaf63_dc4c_8601_ec8c);
        assert_ne!(partition_of("order-1"), partition_of("order-2"));
    }
}
