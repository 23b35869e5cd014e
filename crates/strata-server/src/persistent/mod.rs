//! Persistent subscriptions (competing consumers): server-side groups that read a
//! stream or `$all`, hand each event to one of the group's connected consumers at a
//! time, wait for an ack, retry on nack or timeout, park poison events, and keep a
//! durable checkpoint.
//!
//! - [`settings`]: what a group is (source, start, settings) and how it is validated.
//! - [`storage`]: the durable state, kept in the store itself (see there for the layout).
//! - [`group`]: one task per group owning its in-flight events, retries, parking and
//!   consumers.
//! - [`registry`]: every group of the server, by source and name; what the APIs call.
//! - [`lease`]: with several nodes on one database, a group runs only on the node
//!   holding its lease.
//!
//! Delivery is at least once: the checkpoint only moves past events that are finished
//! (acked, skipped or parked), so after a restart the group resumes after the
//! checkpoint and may redeliver events finished after it, but never loses one.

pub mod group;
pub mod lease;
pub mod registry;
pub mod settings;
pub mod storage;

pub use lease::{GroupLeases, GROUP_LEASE_TTL_DEFAULT};
pub use registry::{Consumer, ConsumerMessage, Registry};
pub use settings::{
    ConsumerStrategy, FilterOn, FilterSpec, GroupConfig, Settings, Source, StartFrom,
};

/// Why a persistent-subscription operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PersistentError {
    /// No group of that name reads that source.
    #[error("Subscription group {group} on stream {stream} does not exist.")]
    NotFound {
        /// The source (`$all` or a stream).
        stream: String,
        /// The group.
        group: String,
    },
    /// A group of that name already reads that source.
    #[error("Subscription group {group} on stream {stream} exists.")]
    Exists {
        /// The source.
        stream: String,
        /// The group.
        group: String,
    },
    /// The group has as many consumers as its settings allow.
    #[error("Maximum subscriptions reached for subscription group {group} on stream {stream}.")]
    MaxSubscribers {
        /// The source.
        stream: String,
        /// The group.
        group: String,
    },
    /// The group stopped (deleted, updated, or the server is stopping) while the
    /// consumer was connected.
    #[error("Subscription group {group} on stream {stream} was dropped.")]
    Dropped {
        /// The source.
        stream: String,
        /// The group.
        group: String,
    },
    /// Another node runs the group (holds its lease): the client should go there.
    /// KurrentDB's message, which clients recognise.
    #[error("Leader info available")]
    NotLeader {
        /// The host of the node holding the group's lease.
        host: String,
        /// Its gRPC port.
        port: u16,
    },
    /// The lease store (shared by the nodes) failed: which node runs the group is
    /// unknown for now.
    #[error(transparent)]
    Lease(#[from] strata::lease::LeaseError),
    /// A setting or name is out of range.
    #[error("invalid persistent subscription settings: {0}")]
    InvalidSettings(String),
    /// Reading the store failed.
    #[error(transparent)]
    Read(#[from] strata::ReadError),
    /// Writing the group's state to the store failed.
    #[error(transparent)]
    Append(#[from] strata::AppendError),
    /// The stored state of the groups cannot be understood.
    #[error("stored persistent subscription state is invalid: {0}")]
    CorruptState(String),
}
