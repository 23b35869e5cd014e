//! [`MemorySink`]: documents and checkpoints in memory.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::{decode_row, DocumentSource, DocumentTx, ReadModel, ReadModelSnapshot, Sink};
use crate::event::Position;
use crate::projection::error::SinkError;

#[derive(Debug, Default)]
struct TableState {
    rows: BTreeMap<String, Value>,
    checkpoint: Option<Position>,
}

/// One projection's documents.
#[derive(Debug, Default)]
struct Table {
    state: RwLock<TableState>,
}

impl Table {
    fn read(&self) -> RwLockReadGuard<'_, TableState> {
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, TableState> {
        self.state.write().unwrap_or_else(PoisonError::into_inner)
    }
}

impl DocumentSource for Table {
    fn load(&self, key: &str) -> Result<Option<Value>, SinkError> {
        Ok(self.read().rows.get(key).cloned())
    }
}

/// A sink that keeps each projection's documents (key → JSON value) and checkpoint in
/// memory: fast, and gone when the process ends (a runner then starts from zero).
///
/// Cheap to clone; clones share the documents.
///
/// ```
/// use strata::projection::{MemorySink, Sink};
/// let sink = MemorySink::new();
/// let mut tx = sink.begin("totals")?;
/// tx.put("a", serde_json::json!(1));
/// sink.commit("totals", tx, Some(strata::Position(0)))?;
/// assert_eq!(sink.get("totals", "a")?, Some(serde_json::json!(1)));
/// assert_eq!(sink.checkpoint("totals")?, Some(strata::Position(0)));
/// # Ok::<(), strata::projection::SinkError>(())
/// ```
#[derive(Clone, Debug, Default)]
pub struct MemorySink {
    tables: Arc<Mutex<HashMap<String, Arc<Table>>>>,
}

impl MemorySink {
    /// An empty sink.
    pub fn new() -> MemorySink {
        MemorySink::default()
    }

    fn tables(&self) -> MutexGuard<'_, HashMap<String, Arc<Table>>> {
        self.tables.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn table(&self, projection: &str) -> Arc<Table> {
        let mut tables = self.tables();
        match tables.get(projection) {
            Some(table) => table.clone(),
            None => {
                let table = Arc::new(Table::default());
                tables.insert(projection.to_owned(), table.clone());
                table
            }
        }
    }

    /// The document `key` of `projection`, if there is one.
    pub fn get(&self, projection: &str, key: &str) -> Result<Option<Value>, SinkError> {
        Ok(self.table(projection).read().rows.get(key).cloned())
    }

    /// The document `key` of `projection` decoded as `T`, if there is one.
    pub fn get_as<T: DeserializeOwned>(
        &self,
        projection: &str,
        key: &str,
    ) -> Result<Option<T>, SinkError> {
        decode_row(projection, key, self.get(projection, key)?)
    }

    /// Every document of `projection`, by key.
    pub fn scan(&self, projection: &str) -> Result<BTreeMap<String, Value>, SinkError> {
        Ok(self.table(projection).read().rows.clone())
    }

    /// Number of documents of `projection`.
    pub fn len(&self, projection: &str) -> usize {
        self.table(projection).read().rows.len()
    }

    /// The names of the projections this sink holds output or a checkpoint for.
    pub fn projections(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .tables()
            .iter()
            .filter(|(_, table)| {
                let state = table.read();
                state.checkpoint.is_some() || !state.rows.is_empty()
            })
            .map(|(name, _)| name.clone())
            .collect();
        names.sort_unstable();
        names
    }
}

impl Sink for MemorySink {
    type Tx = DocumentTx;

    fn begin(&self, projection: &str) -> Result<DocumentTx, SinkError> {
        Ok(DocumentTx::new(self.table(projection)))
    }

    fn commit(
        &self,
        projection: &str,
        tx: DocumentTx,
        checkpoint: Option<Position>,
    ) -> Result<(), SinkError> {
        let (changes, _outbox) = tx.into_changes()?;
        let table = self.table(projection);
        let mut state = table.write();
        for (key, value) in changes {
            match value {
                Some(value) => {
                    state.rows.insert(key, value);
                }
                None => {
                    state.rows.remove(&key);
                }
            }
        }
        if checkpoint.is_some() {
            state.checkpoint = checkpoint;
        }
        Ok(())
    }

    fn checkpoint(&self, projection: &str) -> Result<Option<Position>, SinkError> {
        Ok(self.table(projection).read().checkpoint)
    }

    fn reset(&self, projection: &str) -> Result<(), SinkError> {
        let table = self.table(projection);
        let mut state = table.write();
        state.rows.clear();
        state.checkpoint = None;
        Ok(())
    }
}

impl ReadModel for MemorySink {
    fn get(&self, projection: &str, key: &str) -> Result<Option<Value>, SinkError> {
        MemorySink::get(self, projection, key)
    }

    fn snapshot(&self, projection: &str) -> Result<ReadModelSnapshot, SinkError> {
        let table = self.table(projection);
        let state = table.read();
        Ok(ReadModelSnapshot {
            checkpoint: state.checkpoint,
            rows: state.rows.clone(),
        })
    }
}
