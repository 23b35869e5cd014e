//! Snapshots: a read-through cache of aggregate state, keyed by stream and the state
//! version the aggregate declares. Never the source of truth: a snapshot that is missing,
//! of another version, or unreadable is ignored and rebuilt from the events.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::error::ModelError;
use crate::event::Position;

/// A saved state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The aggregate's stream.
    pub stream: String,
    /// The aggregate's state version when it was taken.
    pub state_version: u32,
    /// The revision of the last event folded into it.
    pub revision: u64,
    /// The position of that event.
    pub position: Position,
    /// The state, as JSON.
    pub state: serde_json::Value,
}

/// Where snapshots are kept.
#[async_trait]
pub trait SnapshotStore: Send + Sync + 'static {
    /// The latest snapshot of `stream`, if any. An unreadable one is `Ok(None)`.
    async fn load(&self, stream: &str) -> Result<Option<Snapshot>, ModelError>;
    /// Saves (replaces) the snapshot of its stream.
    async fn save(&self, snapshot: Snapshot) -> Result<(), ModelError>;
}

/// Snapshots in memory (lost at exit).
#[derive(Debug, Default)]
pub struct MemorySnapshots {
    snapshots: Mutex<HashMap<String, Snapshot>>,
}

impl MemorySnapshots {
    /// No snapshots yet.
    pub fn new() -> MemorySnapshots {
        MemorySnapshots::default()
    }
}

#[async_trait]
impl SnapshotStore for MemorySnapshots {
    async fn load(&self, stream: &str) -> Result<Option<Snapshot>, ModelError> {
        let snapshots = self.snapshots.lock().unwrap_or_else(|p| p.into_inner());
        Ok(snapshots.get(stream).cloned())
    }

    async fn save(&self, snapshot: Snapshot) -> Result<(), ModelError> {
        let mut snapshots = self.snapshots.lock().unwrap_or_else(|p| p.into_inner());
        snapshots.insert(snapshot.stream.clone(), snapshot);
        Ok(())
    }
}

/// Snapshots as files in a directory (by default `snapshots/` beside the store's
/// segments), one JSON file per stream, replaced atomically (write, sync, rename).
#[derive(Debug)]
pub struct FileSnapshots {
    dir: PathBuf,
}

impl FileSnapshots {
    /// Keeps snapshots in `dir`, creating it if needed.
    pub fn new(dir: impl AsRef<Path>) -> Result<FileSnapshots, ModelError> {
        let dir = dir.as_ref().to_path_buf();
        fs::create_dir_all(&dir)
            .map_err(|e| ModelError::Snapshot(format!("create {}: {e}", dir.display())))?;
        Ok(FileSnapshots { dir })
    }

    /// The file of `stream`: its name hex-encoded, so any stream name is a safe file name.
    fn path(&self, stream: &str) -> PathBuf {
        let mut name = String::with_capacity(stream.len() * 2 + 5);
        for byte in stream.bytes() {
            name.push_str(&format!("{byte:02x}"));
        }
        name.push_str(".json");
        self.dir.join(name)
    }
}

#[async_trait]
impl SnapshotStore for FileSnapshots {
    async fn load(&self, stream: &str) -> Result<Option<Snapshot>, ModelError> {
        let path = self.path(stream);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(ModelError::Snapshot(format!(
                    "read {}: {e}",
                    path.display()
                )))
            }
        };
        // A damaged file is a cache miss, not an error: the events are the truth.
        Ok(serde_json::from_slice(&bytes)
            .ok()
            .filter(|s: &Snapshot| s.stream == stream))
    }

    async fn save(&self, snapshot: Snapshot) -> Result<(), ModelError> {
        let path = self.path(&snapshot.stream);
        let temp = path.with_extension("tmp");
        let bytes =
            serde_json::to_vec(&snapshot).map_err(|e| ModelError::Snapshot(e.to_string()))?;
        let write = || -> std::io::Result<()> {
            let mut file = fs::File::create(&temp)?;
            file.write_all(&bytes)?;
            file.sync_data()?;
            fs::rename(&temp, &path)
        };
        write().map_err(|e| ModelError::Snapshot(format!("write {}: {e}", path.display())))
    }
}
