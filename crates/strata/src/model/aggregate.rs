//! The [`Aggregate`] trait: a consistency boundary that decides on commands and is
//! rebuilt by applying its events.

use std::fmt::Debug;

use serde::de::DeserializeOwned;
use serde::Serialize;

/// An aggregate: its state, the events that change it and the commands it decides on.
///
/// `decide` is a pure function of the state and a command; `apply` folds one event into
/// the state. Events are an enum serialised by serde in its default (externally tagged)
/// form: the variant name becomes the stored event type and its content the JSON data.
///
/// ```
/// use serde::{Deserialize, Serialize};
/// use strata::model::Aggregate;
///
/// #[derive(Clone, Debug, Default, Serialize, Deserialize)]
/// struct Counter { value: u64 }
///
/// #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
/// enum CounterEvent { Incremented { by: u64 } }
///
/// #[derive(Debug, thiserror::Error)]
/// #[error("cannot add zero")]
/// struct Zero;
///
/// impl Aggregate for Counter {
///     type Event = CounterEvent;
///     type Command = u64;
///     type Error = Zero;
///     const CATEGORY: &'static str = "counter";
///     fn apply(&mut self, event: &CounterEvent) {
///         let CounterEvent::Incremented { by } = event;
///         self.value += by;
///     }
///     fn decide(&self, by: &u64) -> Result<Vec<CounterEvent>, Zero> {
///         if *by == 0 { return Err(Zero); }
///         Ok(vec![CounterEvent::Incremented { by: *by }])
///     }
/// }
/// assert_eq!(Counter::stream_name("7"), "counter-7");
/// ```
pub trait Aggregate:
    Default + Clone + Serialize + DeserializeOwned + Send + Sync + 'static
{
    /// The events, usually an enum.
    type Event: Serialize + DeserializeOwned + Clone + Debug + Send + Sync + 'static;
    /// The commands it decides on.
    type Command: Clone + Debug + Send + Sync + 'static;
    /// Why a command is refused (a business outcome, not a failure).
    type Error: std::error::Error + Send + Sync + 'static;

    /// The category of its streams: aggregate `id` lives in `{CATEGORY}-{id}`.
    const CATEGORY: &'static str;

    /// The version of the state's shape. Snapshots taken with another version are
    /// ignored and rebuilt from the events, so changing the state type needs no
    /// migration: bump this.
    const STATE_VERSION: u32 = 1;

    /// Folds one event into the state.
    fn apply(&mut self, event: &Self::Event);

    /// Decides which events a command produces, or refuses it.
    fn decide(&self, command: &Self::Command) -> Result<Vec<Self::Event>, Self::Error>;

    /// The stream of aggregate `id`.
    fn stream_name(id: &str) -> String {
        format!("{}-{id}", Self::CATEGORY)
    }
}
