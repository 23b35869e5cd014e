//! # strata-core
//!
//! The types every part of strata speaks, and nothing that stores them: events and
//! positions ([`event`]), stream names and revisions ([`stream`], [`revision`]), stream
//! metadata, filters, limits and input validation, the typed errors, the [`EventStore`]
//! trait every backend implements (the embedded engine in `strata-engine`, PostgreSQL in
//! `strata-postgres`) with its request and result types ([`store`]), and catch-up
//! subscriptions written once over that trait ([`subscription`]).
//!
//! Users import the `strata` crate, which re-exports all of this; backends and the
//! engine depend on this crate alone, so that the layout shows the layers: core types at
//! the bottom, the engine on them, the framework on the trait.

#![warn(missing_docs)]

pub mod error;
pub mod event;
pub mod filter;
pub mod limits;
pub mod metadata;
pub mod revision;
pub mod scan;
pub mod scrub;
pub mod store;
pub mod stream;
pub mod subscription;
pub mod validate;
pub mod write;

#[cfg(any(test, feature = "fuzz"))]
pub mod fuzz;

pub use error::{AppendError, InvalidInput, OpenError, ReadError, StorageError};
pub use event::{ContentType, EventData, Position, RecordedEvent, Timestamp};
pub use filter::{Filter, FilterError, Pattern};
pub use limits::Limits;
pub use metadata::StreamMetadata;
pub use revision::{CurrentRevision, ExpectedRevision};
pub use scrub::{ScrubDamage, ScrubStatus};
pub use store::{
    AppendRequest, AppendResult, Direction, EventStore, ListStreamsOptions, MetadataResult,
    PageEnd, ReadAllOptions, ReadAllPage, ReadStreamOptions, StoreStats, StreamInfo,
};
pub use subscription::{SubscribeFrom, Subscription, SubscriptionMessage};
