//! # strata
//!
//! An event-sourcing database you embed like SQLite: open a directory, append events to
//! streams, read them back by stream or in global order, and subscribe to what comes
//! next.
//!
//! ```
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use strata::{EventData, ExpectedRevision, ReadAllOptions, Store};
//! let dir = tempfile::tempdir()?;
//! let store = Store::open(dir.path())?;
//! store.append("order-1", ExpectedRevision::NoStream, vec![EventData::json("Placed", &42)?]).await?;
//! let all = store.read_all(ReadAllOptions::forwards()).await?;
//! assert_eq!(all.len(), 1);
//! # Ok(()) }
//! ```
//!
//! This crate is the facade users import. The layers under it are crates of their own:
//! - `strata-core`: [`event`] (what is written and read), [`store`] (the [`EventStore`]
//!   trait and its request and result types), [`subscription`] (catch-up
//!   subscriptions), errors, filters, metadata, limits and validation;
//! - `strata-engine`, re-exported as [`engine`]: the embedded storage engine (segments,
//!   frames, group commit, segment tables, recovery, scrubbing).
//!
//! On them, this crate holds the [`Store`] handle, and the framework written against the
//! [`EventStore`] trait: aggregates ([`model`]), projections ([`projection`]) and the
//! leases that spread work over nodes ([`lease`]).

#![warn(missing_docs)]

mod handle;
pub mod lease;
pub mod model;
pub mod projection;

#[cfg(feature = "conformance")]
pub mod conformance;

/// The embedded storage engine (the `strata-engine` crate).
pub use strata_engine as engine;

pub use strata_core::{
    error, event, filter, limits, metadata, revision, scan, scrub, stream, subscription, validate,
    write,
};

#[cfg(feature = "fuzz")]
pub use strata_core::fuzz;

/// The [`EventStore`] trait every backend implements, the request and result types it
/// speaks, and [`Store`], the handle users hold.
pub mod store {
    pub use crate::handle::Store;
    pub use strata_core::store::*;
}

pub use engine::{Durability, Engine, OpenReport, Options, ScrubDamage, ScrubStatus};
pub use error::{AppendError, InvalidInput, OpenError, ReadError, StorageError};
pub use event::{ContentType, EventData, Position, RecordedEvent, Timestamp};
pub use filter::{Filter, FilterError, Pattern};
pub use limits::Limits;
pub use metadata::StreamMetadata;
pub use revision::{CurrentRevision, ExpectedRevision};
pub use store::{
    AppendRequest, AppendResult, Direction, EventStore, ListStreamsOptions, MetadataResult,
    PageEnd, ReadAllOptions, ReadAllPage, ReadStreamOptions, Store, StoreStats, StreamInfo,
};
pub use subscription::{SubscribeFrom, Subscription, SubscriptionMessage};
