//! Reconciliation: does a live read model match a fresh replay of the log?
//!
//! The live read model is read at one instant (documents and checkpoint together); the
//! log is replayed into a scratch sink up to exactly that checkpoint; then the two are
//! compared key by key. Differences mean the live output was changed behind the
//! projection's back, or the handler is not deterministic, or it changed since the
//! output was built.

use serde_json::Value;

use super::definition::Projection;
use super::error::RunError;
use super::rebuild::RebuildOptions;
use super::sink::{DocumentTx, MemorySink, ReadModel, Sink};
use super::time_travel::{replay_into, AsOf};
use crate::event::Position;
use crate::store::Store;

/// A key whose document differs.
#[derive(Clone, Debug, PartialEq)]
pub struct Difference {
    /// The key.
    pub key: String,
    /// The live document.
    pub live: Value,
    /// The document a replay produces.
    pub rebuilt: Value,
}

/// The differences between a live read model and a replay of the log.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Reconciliation {
    /// The live checkpoint both sides were compared at.
    pub checkpoint: Option<Position>,
    /// Keys the replay produces that the live read model lacks.
    pub missing: Vec<String>,
    /// Keys the live read model has that the replay does not produce.
    pub extra: Vec<String>,
    /// Keys both have, with different documents.
    pub different: Vec<Difference>,
}

impl Reconciliation {
    /// Whether the live read model matches the replay exactly.
    pub fn is_consistent(&self) -> bool {
        self.missing.is_empty() && self.extra.is_empty() && self.different.is_empty()
    }
}

/// Compares `live`'s documents of `projection` with a replay of the log into memory.
pub async fn reconcile<P, L>(
    store: &Store,
    projection: P,
    live: &L,
) -> Result<Reconciliation, RunError>
where
    P: Projection<DocumentTx>,
    L: ReadModel + ?Sized,
{
    reconcile_with(store, projection, live, MemorySink::new()).await
}

/// Like [`reconcile`], replaying into `scratch` (an empty sink of any kind whose
/// documents can be read).
pub async fn reconcile_with<P, L, S>(
    store: &Store,
    projection: P,
    live: &L,
    scratch: S,
) -> Result<Reconciliation, RunError>
where
    S: Sink + ReadModel + Clone,
    P: Projection<S::Tx>,
    L: ReadModel + ?Sized,
{
    let name = projection.name().to_owned();
    let sink_error = |source| RunError::Sink {
        projection: name.clone(),
        source,
    };
    let live = live.snapshot(&name).map_err(sink_error)?;
    if let Some(checkpoint) = live.checkpoint {
        let as_of = Some(AsOf::Position(checkpoint));
        let options = RebuildOptions::default();
        replay_into(store, projection, scratch.clone(), as_of, options).await?;
    }
    let rebuilt = scratch.snapshot(&name).map_err(sink_error)?;
    let mut report = Reconciliation {
        checkpoint: live.checkpoint,
        ..Reconciliation::default()
    };
    for (key, value) in &rebuilt.rows {
        match live.rows.get(key) {
            None => report.missing.push(key.clone()),
            Some(live_value) if live_value != value => report.different.push(Difference {
                key: key.clone(),
                live: live_value.clone(),
                rebuilt: value.clone(),
            }),
            Some(_) => {}
        }
    }
    report.extra = live
        .rows
        .keys()
        .filter(|key| !rebuilt.rows.contains_key(*key))
        .cloned()
        .collect();
    Ok(report)
}
