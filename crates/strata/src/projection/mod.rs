//! Projections: read models derived from the global log, with checkpoints stored
//! atomically with their output, inline and async runners, rebuilds and reconciliation.
//!
//! ## The pieces
//! - A [`Projection`] is a name, a [`Filter`](crate::Filter) and a handler that writes
//!   each event's effect into a sink transaction; optionally a partition key (for
//!   parallel rebuilds) and a policy for unknown event types.
//! - A [`Sink`] holds the output and the **checkpoint** (the position of the last event
//!   the output reflects) and commits both in one atomic step, so a crash at any point
//!   neither applies an event twice nor skips one. Built in: [`MemorySink`] and
//!   [`DurableSink`] (one redb file), both storing JSON documents by key through
//!   [`DocumentTx`]. A SQL table or a search index is a [`Sink`] of your own.
//! - **Async**: a [`ProjectionRunner`] follows the log in the background from the
//!   checkpoint, in batches, and reports its position, a watch of it, and its lag.
//! - **Inline**: an [`InlineStore`] appends and then brings its projections up to the
//!   appended events before returning, so the read model is consistent with every
//!   acknowledged append made through it.
//! - **Read-your-writes**: `wait_for(position, timeout)` on either returns once the
//!   read model reflects that position, or a typed [`WaitError`].
//! - **Rebuild**: [`rebuild`] clears the output and replays the log, on several threads
//!   when the projection declares partitions, with exactly the serial result.
//! - **Process managers**: handlers can emit events ([`DocumentTx::emit`]), appended
//!   with causation and correlation metadata and deterministic ids, so a replay after a
//!   crash does not append them twice (see [`Outbox::emit`]).
//! - **Time travel** ([`project_as_of`]) and **reconciliation** ([`reconcile`]) replay
//!   the log into a scratch sink, as of a position or an instant, or up to the live
//!   checkpoint to compare.
//!
//! ```
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use strata::projection::{DocumentTx, InlineStore, MemorySink, Projection, ProjectionError};
//! use strata::{EventData, ExpectedRevision, RecordedEvent, Store};
//!
//! #[derive(Default, serde::Serialize, serde::Deserialize)]
//! struct Cart { items: u32 }
//!
//! struct Carts;
//! impl Projection for Carts {
//!     fn name(&self) -> &str { "carts" }
//!     fn filter(&self) -> strata::Filter { strata::Filter::new().category("cart") }
//!     fn handle(&self, event: &RecordedEvent, tx: &mut DocumentTx) -> Result<(), ProjectionError> {
//!         match event.event_type.as_str() {
//!             "ItemAdded" => tx.update(&event.stream, |cart: &mut Cart| cart.items += 1),
//!             _ => Err(ProjectionError::unknown(event)),
//!         }
//!     }
//! }
//!
//! let dir = tempfile::tempdir()?;
//! let store = Store::open(dir.path())?;
//! let carts = MemorySink::new();
//! let inline = InlineStore::builder(store).projection(Carts, carts.clone()).open().await?;
//! inline.append("cart-1", ExpectedRevision::Any, vec![EventData::json("ItemAdded", &"book")?]).await?;
//! // Consistent with the append: no waiting needed.
//! assert_eq!(carts.get_as::<Cart>("carts", "cart-1")?.map(|c| c.items), Some(1));
//! # Ok(()) }
//! ```
//!
//! One writer per projection at a time: run a projection either inline or in a runner,
//! and stop it before rebuilding it.

pub mod bench;
mod definition;
mod emit;
mod error;
mod inline;
mod processor;
mod rebuild;
mod reconcile;
mod runner;
pub mod sink;
mod time_travel;
mod wait;

pub use definition::{partition_of, partition_of_stream, Projection, UnknownEvents};
pub use emit::{Emission, Outbox, EMIT_NAMESPACE};
pub use error::{InlineAppendError, ProjectionError, RunError, SinkError, WaitError};
pub use inline::{InlineStore, InlineStoreBuilder};
pub use processor::EventCounts;
pub use rebuild::{rebuild, RebuildOptions, RebuildProgress, RebuildReport};
pub use reconcile::{reconcile, reconcile_with, Difference, Reconciliation};
pub use runner::{ProjectionRunner, RunnerOptions, RunnerReport};
pub use sink::{
    DocumentChanges, DocumentSource, DocumentTx, DurableSink, MemorySink, ReadModel,
    ReadModelSnapshot, Sink, Transaction,
};
pub use time_travel::{project_as_of, replay_into, AsOf};
