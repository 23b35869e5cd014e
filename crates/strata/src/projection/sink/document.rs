//! [`DocumentTx`]: a batch of document writes on top of a sink's committed documents.

use std::any::Any;
use std::collections::HashMap;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use super::Transaction;
use crate::event::EventData;
use crate::projection::emit::Outbox;
use crate::projection::error::{ProjectionError, SinkError};

/// The committed documents of one projection, as a [`DocumentTx`] reads them.
///
/// Implement it to reuse [`DocumentTx`] in a sink of your own (documents in a SQL
/// table, say): load one document by key, as of the last commit.
pub trait DocumentSource: Send + Sync + 'static {
    /// The committed document `key`, if there is one.
    fn load(&self, key: &str) -> Result<Option<Value>, SinkError>;
}

/// The documents a transaction changed, sorted by key: `None` means deleted.
pub type DocumentChanges = Vec<(String, Option<Value>)>;

/// A document that a handler updated through [`DocumentTx::update`], kept as its own
/// type until the commit so that a run of updates costs one encoding, not one per event.
trait TypedDocument: Send {
    fn to_json(&self) -> Result<Value, serde_json::Error>;
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

impl<T: Serialize + Send + 'static> TypedDocument for T {
    fn to_json(&self) -> Result<Value, serde_json::Error> {
        serde_json::to_value(self)
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

enum Content {
    Json(Option<Value>),
    Typed(Box<dyn TypedDocument>),
}

struct Slot {
    key: Box<str>,
    content: Content,
    dirty: bool,
}

/// A transaction of document writes: the built-in sinks' [`Sink::Tx`](super::Sink::Tx).
///
/// Reads see the committed documents plus this transaction's own writes. Nothing is
/// visible to anyone else until the runner commits the transaction, together with the
/// checkpoint. Keys are strings; documents are JSON values, read and written either
/// as [`Value`]s or as any serde type.
///
/// ```
/// # use strata::projection::{DocumentTx, ProjectionError};
/// # fn handle(tx: &mut DocumentTx) -> Result<(), ProjectionError> {
/// #[derive(Default, serde::Serialize, serde::Deserialize)]
/// struct Cart { items: u32, total_cents: u64 }
///
/// tx.update("cart-1", |cart: &mut Cart| {
///     cart.items += 1;
///     cart.total_cents += 250;
/// })?;
/// tx.delete("cart-0");
/// # Ok(()) }
/// ```
pub struct DocumentTx {
    source: Arc<dyn DocumentSource>,
    /// Key → index in `slots` (an index, not the slot, so that a hit costs one lookup).
    index: HashMap<Box<str>, usize>,
    slots: Vec<Slot>,
    outbox: Outbox,
}

impl std::fmt::Debug for DocumentTx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DocumentTx")
            .field("documents", &self.slots.len())
            .field("emitted", &self.outbox.len())
            .finish()
    }
}

impl Transaction for DocumentTx {
    fn outbox(&mut self) -> Option<&mut Outbox> {
        Some(&mut self.outbox)
    }
}

impl DocumentTx {
    /// A transaction reading committed documents from `source`.
    pub fn new(source: Arc<dyn DocumentSource>) -> DocumentTx {
        DocumentTx {
            source,
            index: HashMap::new(),
            slots: Vec::new(),
            outbox: Outbox::new(),
        }
    }

    /// The slot of `key`, loading the committed document on first use.
    fn slot(&mut self, key: &str) -> Result<&mut Slot, SinkError> {
        let at = match self.index.get(key) {
            Some(&at) => at,
            None => {
                let value = self.source.load(key)?;
                self.insert(key.into(), Content::Json(value), false)
            }
        };
        Ok(&mut self.slots[at])
    }

    /// Sets the slot of `key`, returning its index.
    fn insert(&mut self, key: Box<str>, content: Content, dirty: bool) -> usize {
        if let Some(&at) = self.index.get(&key) {
            self.slots[at].content = content;
            self.slots[at].dirty |= dirty;
            return at;
        }
        let at = self.slots.len();
        self.index.insert(key.clone(), at);
        self.slots.push(Slot {
            key,
            content,
            dirty,
        });
        at
    }

    /// The document `key` as JSON, if there is one.
    pub fn get(&mut self, key: &str) -> Result<Option<&Value>, ProjectionError> {
        let slot = self.slot(key)?;
        if let Content::Typed(document) = &slot.content {
            slot.content = Content::Json(Some(document.to_json()?));
        }
        match &slot.content {
            Content::Json(value) => Ok(value.as_ref()),
            Content::Typed(_) => Ok(None),
        }
    }

    /// The document `key` decoded as `T`, if there is one.
    pub fn get_as<T: DeserializeOwned>(&mut self, key: &str) -> Result<Option<T>, ProjectionError> {
        match self.get(key)? {
            Some(value) => Ok(Some(T::deserialize(value)?)),
            None => Ok(None),
        }
    }

    /// Sets the document `key`.
    pub fn put(&mut self, key: impl Into<String>, value: Value) {
        let key: String = key.into();
        self.insert(key.into_boxed_str(), Content::Json(Some(value)), true);
    }

    /// Sets the document `key` to `value` encoded as JSON.
    pub fn put_as<T: Serialize>(
        &mut self,
        key: impl Into<String>,
        value: &T,
    ) -> Result<(), ProjectionError> {
        self.put(key, serde_json::to_value(value)?);
        Ok(())
    }

    /// Removes the document `key` (nothing happens if there is none).
    pub fn delete(&mut self, key: impl Into<String>) {
        let key: String = key.into();
        self.insert(key.into_boxed_str(), Content::Json(None), true);
    }

    /// Reads the document `key` as `T` (`T::default()` if there is none), lets `f`
    /// change it, and stores it; returns what `f` returns.
    ///
    /// Repeated updates of one key in a batch decode and encode it once.
    pub fn update<T, R>(
        &mut self,
        key: &str,
        f: impl FnOnce(&mut T) -> R,
    ) -> Result<R, ProjectionError>
    where
        T: Serialize + DeserializeOwned + Default + Send + 'static,
    {
        let slot = self.slot(key)?;
        if let Content::Typed(document) = &mut slot.content {
            if let Some(typed) = document.as_any_mut().downcast_mut::<T>() {
                slot.dirty = true;
                return Ok(f(typed));
            }
            // Updated earlier as another type: go through JSON.
            slot.content = Content::Json(Some(document.to_json()?));
        }
        let mut typed = match &slot.content {
            Content::Json(Some(value)) => T::deserialize(value)?,
            _ => T::default(),
        };
        let result = f(&mut typed);
        slot.content = Content::Typed(Box::new(typed));
        slot.dirty = true;
        Ok(result)
    }

    /// Emits `event` to `stream`: it is appended before this transaction commits, with a
    /// deterministic id (see [`Outbox::emit`]).
    pub fn emit(
        &mut self,
        stream: impl Into<String>,
        event: EventData,
    ) -> Result<(), ProjectionError> {
        self.outbox.emit(stream, event)
    }

    /// How many documents this transaction changed so far.
    pub fn changed(&self) -> usize {
        self.slots.iter().filter(|slot| slot.dirty).count()
    }

    /// The changed documents, sorted by key (`None`: deleted), and the emitted events:
    /// what a sink writes at commit.
    pub fn into_changes(self) -> Result<(DocumentChanges, Outbox), SinkError> {
        let mut changes = Vec::with_capacity(self.slots.len());
        for slot in self.slots {
            if !slot.dirty {
                continue;
            }
            let key = String::from(slot.key);
            let value = match slot.content {
                Content::Json(value) => value,
                Content::Typed(document) => match document.to_json() {
                    Ok(value) => Some(value),
                    Err(error) => {
                        return Err(SinkError::Encode {
                            key,
                            reason: error.to_string(),
                        })
                    }
                },
            };
            changes.push((key, value));
        }
        changes.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        Ok((changes, self.outbox))
    }
}
