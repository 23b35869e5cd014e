//! [`DurableSink`]: documents and checkpoints in one redb file.
//!
//! Layout: one table per projection, `strata/rows/<projection>` (key → JSON bytes), and
//! one table `strata/checkpoints` (projection → position). A commit is one redb write
//! transaction that changes both, so output and checkpoint are atomic and durable
//! together.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::{decode_row, DocumentSource, DocumentTx, ReadModel, ReadModelSnapshot, Sink};
use crate::event::Position;
use crate::projection::error::SinkError;

type Rows<'a> = TableDefinition<'a, &'static str, &'static [u8]>;
type RowsTable = redb::ReadOnlyTable<&'static str, &'static [u8]>;

const CHECKPOINTS: TableDefinition<'static, &'static str, u64> =
    TableDefinition::new("strata/checkpoints");

fn rows_name(projection: &str) -> String {
    format!("strata/rows/{projection}")
}

/// Turns redb's many error types into a [`SinkError`] saying what was being done.
trait OrSink<T> {
    fn or_sink(self, operation: &'static str) -> Result<T, SinkError>;
}

impl<T, E: Into<redb::Error>> OrSink<T> for Result<T, E> {
    fn or_sink(self, operation: &'static str) -> Result<T, SinkError> {
        self.map_err(|error| SinkError::storage(operation, error.into()))
    }
}

fn decode(projection: &str, key: &str, bytes: &[u8]) -> Result<Value, SinkError> {
    serde_json::from_slice(bytes).map_err(|error| SinkError::Decode {
        projection: projection.to_owned(),
        key: key.to_owned(),
        reason: error.to_string(),
    })
}

/// A projection's rows as of one read transaction, opened on first use.
struct DurableSource {
    db: Arc<redb::Database>,
    projection: String,
    table: OnceLock<Result<Option<RowsTable>, SinkError>>,
}

impl DurableSource {
    fn open(&self) -> Result<Option<RowsTable>, SinkError> {
        let read = self.db.begin_read().or_sink("begin read")?;
        let name = rows_name(&self.projection);
        match read.open_table(Rows::new(&name)) {
            Ok(table) => Ok(Some(table)),
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
            Err(error) => Err(SinkError::storage("open table", redb::Error::from(error))),
        }
    }
}

impl DocumentSource for DurableSource {
    fn load(&self, key: &str) -> Result<Option<Value>, SinkError> {
        let table = match self.table.get_or_init(|| self.open()) {
            Ok(Some(table)) => table,
            Ok(None) => return Ok(None),
            Err(error) => return Err(error.clone()),
        };
        let row = table.get(key).or_sink("read")?;
        row.map(|bytes| decode(&self.projection, key, bytes.value()))
            .transpose()
    }
}

/// A sink that keeps every projection's documents and checkpoint in one redb file,
/// `<dir>/projections.redb`: output and checkpoint are committed in one durable
/// transaction, so a projection resumes exactly where it stopped after a restart or a
/// crash.
///
/// Cheap to clone; clones share the open file. One process at a time may open it.
#[derive(Clone)]
pub struct DurableSink {
    db: Arc<redb::Database>,
    path: PathBuf,
}

impl std::fmt::Debug for DurableSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DurableSink")
            .field("path", &self.path)
            .finish()
    }
}

impl DurableSink {
    /// The file name inside the directory given to [`DurableSink::open`].
    pub const FILE_NAME: &'static str = "projections.redb";

    /// Opens (or creates) `dir/projections.redb`, creating `dir` if needed.
    pub fn open(dir: impl AsRef<Path>) -> Result<DurableSink, SinkError> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|e| SinkError::storage("create directory", e))?;
        DurableSink::open_file(dir.join(DurableSink::FILE_NAME))
    }

    /// Opens (or creates) the redb file at `path`.
    pub fn open_file(path: impl AsRef<Path>) -> Result<DurableSink, SinkError> {
        let path = path.as_ref().to_path_buf();
        let db = redb::Database::create(&path).or_sink("open")?;
        Ok(DurableSink {
            db: Arc::new(db),
            path,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The document `key` of `projection`, if there is one.
    pub fn get(&self, projection: &str, key: &str) -> Result<Option<Value>, SinkError> {
        let source = DurableSource {
            db: self.db.clone(),
            projection: projection.to_owned(),
            table: OnceLock::new(),
        };
        source.load(key)
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
        Ok(ReadModel::snapshot(self, projection)?.rows)
    }

    /// The projections that have a checkpoint here, with it.
    pub fn checkpoints(&self) -> Result<Vec<(String, Position)>, SinkError> {
        let read = self.db.begin_read().or_sink("begin read")?;
        let table = match read.open_table(CHECKPOINTS) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(error) => return Err(SinkError::storage("open table", redb::Error::from(error))),
        };
        let mut out = Vec::new();
        for entry in table.iter().or_sink("read")? {
            let (name, position) = entry.or_sink("read")?;
            out.push((name.value().to_owned(), Position(position.value())));
        }
        Ok(out)
    }
}

impl Sink for DurableSink {
    type Tx = DocumentTx;

    fn begin(&self, projection: &str) -> Result<DocumentTx, SinkError> {
        Ok(DocumentTx::new(Arc::new(DurableSource {
            db: self.db.clone(),
            projection: projection.to_owned(),
            table: OnceLock::new(),
        })))
    }

    fn commit(
        &self,
        projection: &str,
        tx: DocumentTx,
        checkpoint: Option<Position>,
    ) -> Result<(), SinkError> {
        let (changes, _outbox) = tx.into_changes()?;
        let mut write = self.db.begin_write().or_sink("begin write")?;
        if checkpoint.is_none() {
            // Output without a checkpoint is only kept if a later commit with one makes it
            // durable (see the `Sink` contract): no need to sync it now.
            write
                .set_durability(redb::Durability::None)
                .or_sink("set durability")?;
        }
        let name = rows_name(projection);
        {
            let mut rows = write.open_table(Rows::new(&name)).or_sink("open table")?;
            let mut bytes = Vec::new();
            for (key, value) in &changes {
                match value {
                    Some(value) => {
                        bytes.clear();
                        serde_json::to_writer(&mut bytes, value).map_err(|error| {
                            SinkError::Encode {
                                key: key.clone(),
                                reason: error.to_string(),
                            }
                        })?;
                        rows.insert(key.as_str(), bytes.as_slice())
                            .or_sink("write")?;
                    }
                    None => {
                        rows.remove(key.as_str()).or_sink("write")?;
                    }
                }
            }
        }
        if let Some(checkpoint) = checkpoint {
            let mut table = write.open_table(CHECKPOINTS).or_sink("open table")?;
            table.insert(projection, checkpoint.0).or_sink("write")?;
        }
        write.commit().or_sink("commit")
    }

    fn checkpoint(&self, projection: &str) -> Result<Option<Position>, SinkError> {
        let read = self.db.begin_read().or_sink("begin read")?;
        let table = match read.open_table(CHECKPOINTS) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(error) => return Err(SinkError::storage("open table", redb::Error::from(error))),
        };
        let value = table.get(projection).or_sink("read")?;
        Ok(value.map(|v| Position(v.value())))
    }

    fn reset(&self, projection: &str) -> Result<(), SinkError> {
        let write = self.db.begin_write().or_sink("begin write")?;
        let name = rows_name(projection);
        write
            .delete_table(Rows::new(&name))
            .or_sink("delete table")?;
        {
            let mut table = write.open_table(CHECKPOINTS).or_sink("open table")?;
            table.remove(projection).or_sink("write")?;
        }
        write.commit().or_sink("commit")
    }
}

impl ReadModel for DurableSink {
    fn get(&self, projection: &str, key: &str) -> Result<Option<Value>, SinkError> {
        DurableSink::get(self, projection, key)
    }

    fn snapshot(&self, projection: &str) -> Result<ReadModelSnapshot, SinkError> {
        let read = self.db.begin_read().or_sink("begin read")?;
        let mut snapshot = ReadModelSnapshot::default();
        match read.open_table(CHECKPOINTS) {
            Ok(table) => {
                let value = table.get(projection).or_sink("read")?;
                snapshot.checkpoint = value.map(|v| Position(v.value()));
            }
            Err(redb::TableError::TableDoesNotExist(_)) => {}
            Err(error) => return Err(SinkError::storage("open table", redb::Error::from(error))),
        }
        let name = rows_name(projection);
        let rows = match read.open_table(Rows::new(&name)) {
            Ok(rows) => rows,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(snapshot),
            Err(error) => return Err(SinkError::storage("open table", redb::Error::from(error))),
        };
        for entry in rows.iter().or_sink("read")? {
            let (key, value) = entry.or_sink("read")?;
            let key = key.value();
            let value = decode(projection, key, value.value())?;
            snapshot.rows.insert(key.to_owned(), value);
        }
        Ok(snapshot)
    }
}
