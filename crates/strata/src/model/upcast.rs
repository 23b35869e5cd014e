//! Upcasting: old versions of events become the current one on read. Stored bytes are
//! never rewritten.
//!
//! An event's schema version is the `schema_version` field of its JSON metadata (1 when
//! absent). An upcaster turns one (type, version) into one or more events of a later
//! version (or another type): chains run until no upcaster applies.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value;

use super::error::ModelError;

/// The most upcasting steps one event may take before it is declared a loop.
const STEPS_MAX: usize = 64;

/// An event on its way through upcasting.
#[derive(Clone, Debug, PartialEq)]
pub struct Versioned {
    /// Its type.
    pub event_type: String,
    /// Its schema version.
    pub version: u32,
    /// Its data.
    pub data: Value,
}

impl Versioned {
    /// An event of `event_type` at `version`.
    pub fn new(event_type: impl Into<String>, version: u32, data: Value) -> Versioned {
        Versioned {
            event_type: event_type.into(),
            version,
            data,
        }
    }
}

type Upcaster = Arc<dyn Fn(Value) -> Vec<Versioned> + Send + Sync>;

/// The registered upcasters.
///
/// ```
/// use serde_json::json;
/// use strata::model::{Upcasters, Versioned};
/// let upcasters = Upcasters::new()
///     // v1 had `amount` in cents as a string; v2 has a number.
///     .register("Deposited", 1, |data| {
///         let cents: u64 = data["amount"].as_str().unwrap_or("0").parse().unwrap_or(0);
///         vec![Versioned::new("Deposited", 2, json!({ "cents": cents }))]
///     });
/// let current = upcasters.upcast(Versioned::new("Deposited", 1, json!({"amount": "250"}))).unwrap();
/// assert_eq!(current, vec![Versioned::new("Deposited", 2, json!({"cents": 250}))]);
/// assert_eq!(upcasters.current_version("Deposited"), 2);
/// ```
#[derive(Clone, Default)]
pub struct Upcasters {
    by_version: HashMap<(String, u32), Upcaster>,
    current: HashMap<String, u32>,
}

impl std::fmt::Debug for Upcasters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upcasters")
            .field("current", &self.current)
            .finish()
    }
}

impl Upcasters {
    /// No upcasters: every event is current.
    pub fn new() -> Upcasters {
        Upcasters::default()
    }

    /// Registers how events of `event_type` at `version` become later ones (a rename
    /// returns another type; a split returns several events).
    pub fn register(
        mut self,
        event_type: impl Into<String>,
        version: u32,
        upcaster: impl Fn(Value) -> Vec<Versioned> + Send + Sync + 'static,
    ) -> Upcasters {
        let event_type = event_type.into();
        let current = self.current.entry(event_type.clone()).or_insert(1);
        *current = (*current).max(version + 1);
        self.by_version
            .insert((event_type, version), Arc::new(upcaster));
        self
    }

    /// The version new events of `event_type` are written with: one past the highest
    /// version an upcaster reads (1 when none is registered).
    pub fn current_version(&self, event_type: &str) -> u32 {
        self.current.get(event_type).copied().unwrap_or(1)
    }

    /// Runs the chain of upcasters on one event.
    pub fn upcast(&self, event: Versioned) -> Result<Vec<Versioned>, ModelError> {
        let mut done = Vec::new();
        let mut pending = vec![(event, 0usize)];
        while let Some((event, steps)) = pending.pop() {
            let key = (event.event_type.clone(), event.version);
            match self.by_version.get(&key) {
                None => done.push(event),
                Some(_) if steps >= STEPS_MAX => {
                    return Err(ModelError::UpcastLoop {
                        event_type: event.event_type,
                        version: event.version,
                        steps,
                    })
                }
                Some(upcaster) => {
                    let next = upcaster(event.data);
                    // Keep the order: the first produced event comes out first.
                    pending.extend(next.into_iter().rev().map(|e| (e, steps + 1)));
                }
            }
        }
        Ok(done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn chains_renames_splits_and_loops() {
        let upcasters = Upcasters::new()
            .register("A", 1, |d| vec![Versioned::new("A", 2, json!({"v2": d}))])
            .register("A", 2, |d| {
                vec![Versioned::new("B", 1, d.clone()), Versioned::new("C", 1, d)]
            })
            .register("Loop", 1, |d| vec![Versioned::new("Loop", 1, d)]);
        let out = upcasters
            .upcast(Versioned::new("A", 1, json!(1)))
            .expect("chain");
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].event_type, "B");
        assert_eq!(out[1].event_type, "C");
        assert_eq!(out[0].data, json!({"v2": 1}));
        assert_eq!(upcasters.current_version("A"), 3);
        assert!(matches!(
            upcasters.upcast(Versioned::new("Loop", 1, json!(null))),
            Err(ModelError::UpcastLoop { .. })
        ));
        let current = Versioned::new("A", 3, json!(0));
        assert_eq!(
            upcasters.upcast(current.clone()).expect("current"),
            vec![current]
        );
    }
}
