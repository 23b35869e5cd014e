//! The "database in code": aggregates (decide/apply), command handling with conflict
//! retry, idempotent commands, snapshots that invalidate themselves when the code
//! changes, upcasting of old event versions, and time travel.
//!
//! Everything here works on the [`Store`](crate::Store) handle, so it runs the same on
//! every backend.

mod aggregate;
mod codec;
mod context;
mod error;
mod repository;
mod snapshot;
pub mod testing;
mod upcast;

pub use aggregate::Aggregate;
pub use codec::{
    decode, encode, metadata_object, schema_version, to_event_data, SCHEMA_VERSION_FIELD,
};
pub use context::{fields, CommandContext};
pub use error::{HandleError, ModelError};
pub use repository::{
    command_stream, AsOf, DryRun, Handled, Loaded, Repository, RepositoryConfig, SnapshotUse,
    COMMAND_CATEGORY,
};
pub use snapshot::{FileSnapshots, MemorySnapshots, Snapshot, SnapshotStore};
pub use upcast::{Upcasters, Versioned};
