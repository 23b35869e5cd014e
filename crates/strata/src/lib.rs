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
//! The pieces: [`event`] (what is written and read), [`store`] (the [`EventStore`] trait
//! and the [`Store`] handle), [`subscription`] (catch-up subscriptions), and [`engine`]
//! (the embedded storage engine: segments, frames, group commit, recovery).

#![warn(missing_docs)]

pub mod engine;
pub mod error;
pub mod event;
pub mod filter;
pub mod lease;
pub mod limits;
pub mod metadata;
pub mod model;
pub mod projection;
pub mod revision;
pub mod scan;
pub mod store;
pub mod stream;
pub mod subscription;
pub mod validate;
pub mod write;

#[cfg(feature = "conformance")]
pub mod conformance;

#[cfg(any(test, feature = "fuzz"))]
pub mod fuzz;

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
