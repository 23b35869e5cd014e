//! [`Storage`] in memory, with simulated crashes.
//!
//! Each file keeps two copies: what was written, and what was last made durable by
//! `sync_data`. The directory likewise remembers which names were durable at the last
//! `sync_dir`. [`MemoryStorage::crash`] throws away what was never made durable (or keeps
//! a torn part of it) and returns the storage a restarted process would find; handles
//! from before the crash fail every call afterwards, as a killed process would.

use std::collections::HashMap;
use std::fmt::Debug;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use super::{Storage, StorageFile};

/// What a simulated crash keeps of data that was written but not yet synced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrashMode {
    /// Nothing: every file reverts to its last synced content.
    DropUnsynced,
    /// A pseudo-random prefix of each file's unsynced bytes (a torn write).
    TornPrefix {
        /// Seed of the pseudo-random choice.
        seed: u64,
    },
    /// A pseudo-random subset of the unsynced 512-byte sectors; sectors not kept read as
    /// zeros (the disk wrote pages out of order).
    ScatteredSectors {
        /// Seed of the pseudo-random choice.
        seed: u64,
    },
}

/// A directory of files held in memory.
#[derive(Clone, Debug, Default)]
pub struct MemoryStorage {
    dir: Arc<Mutex<MemoryDir>>,
}

#[derive(Debug, Default)]
struct MemoryDir {
    files: HashMap<String, Arc<MemoryFile>>,
    /// The directory entries as of the last `sync_dir`.
    durable_files: HashMap<String, Arc<MemoryFile>>,
    locked: Arc<AtomicBool>,
    crashed: Arc<AtomicBool>,
}

#[derive(Debug, Default)]
struct MemoryFile {
    state: Mutex<FileState>,
    crashed: Arc<AtomicBool>,
}

#[derive(Clone, Debug, Default)]
struct FileState {
    data: Vec<u8>,
    durable: Vec<u8>,
}

#[derive(Debug)]
struct MemoryLock(Arc<AtomicBool>);

impl Drop for MemoryLock {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

fn crashed_error() -> io::Error {
    io::Error::other("simulated crash: this handle belongs to a dead process")
}

fn not_found(name: &str) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("no file {name}"))
}

/// A small deterministic generator (xorshift64*), enough to pick torn lengths.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

impl MemoryStorage {
    /// An empty directory.
    pub fn new() -> MemoryStorage {
        MemoryStorage::default()
    }

    fn dir(&self) -> io::Result<MutexGuard<'_, MemoryDir>> {
        let dir = self.dir.lock().unwrap_or_else(|poison| poison.into_inner());
        if dir.crashed.load(Ordering::SeqCst) {
            return Err(crashed_error());
        }
        Ok(dir)
    }

    /// Simulates a power loss: returns the storage a restarted process finds, and makes
    /// every handle from before fail.
    pub fn crash(&self, mode: CrashMode) -> MemoryStorage {
        let dir = self.dir.lock().unwrap_or_else(|poison| poison.into_inner());
        dir.crashed.store(true, Ordering::SeqCst);
        let seed = match mode {
            CrashMode::DropUnsynced => 1,
            CrashMode::TornPrefix { seed } | CrashMode::ScatteredSectors { seed } => seed | 1,
        };
        let mut rng = Rng(seed);
        let crashed = Arc::new(AtomicBool::new(false));
        let mut names: Vec<_> = dir.durable_files.keys().cloned().collect();
        names.sort();
        let mut files = HashMap::new();
        for name in names {
            let old = &dir.durable_files[&name];
            let state = old
                .state
                .lock()
                .unwrap_or_else(|poison| poison.into_inner());
            let content = survivor(&state, mode, &mut rng);
            files.insert(
                name,
                Arc::new(MemoryFile {
                    state: Mutex::new(FileState {
                        data: content.clone(),
                        durable: content,
                    }),
                    crashed: crashed.clone(),
                }),
            );
        }
        MemoryStorage {
            dir: Arc::new(Mutex::new(MemoryDir {
                durable_files: files.clone(),
                files,
                locked: Arc::new(AtomicBool::new(false)),
                crashed,
            })),
        }
    }

    /// The current (not necessarily durable) content of a file, for tests.
    pub fn contents(&self, name: &str) -> io::Result<Vec<u8>> {
        let dir = self.dir()?;
        let file = dir.files.get(name).ok_or_else(|| not_found(name))?;
        let state = file
            .state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        Ok(state.data.clone())
    }
}

/// What survives of one file in a crash.
fn survivor(state: &FileState, mode: CrashMode, rng: &mut Rng) -> Vec<u8> {
    let durable = &state.durable;
    // Bytes written since the last sync, beyond the durable length. Overwrites of durable
    // bytes are not modelled: the engine only appends and truncates.
    let shared = durable.len().min(state.data.len());
    let mut content = state.data[..shared].to_vec();
    content.truncate(durable.len());
    let unsynced = state.data.get(durable.len()..).unwrap_or(&[]);
    match mode {
        CrashMode::DropUnsynced => {}
        CrashMode::TornPrefix { .. } => {
            let keep = if unsynced.is_empty() {
                0
            } else {
                (rng.next() % (unsynced.len() as u64 + 1)) as usize
            };
            content.extend_from_slice(&unsynced[..keep]);
        }
        CrashMode::ScatteredSectors { .. } => {
            let mut tail = vec![0u8; unsynced.len()];
            let mut last_kept = 0;
            for (i, sector) in unsynced.chunks(512).enumerate() {
                if rng.next().is_multiple_of(2) {
                    tail[i * 512..i * 512 + sector.len()].copy_from_slice(sector);
                    last_kept = i * 512 + sector.len();
                }
            }
            content.extend_from_slice(&tail[..last_kept]);
        }
    }
    content
}

impl Storage for MemoryStorage {
    fn list(&self) -> io::Result<Vec<String>> {
        Ok(self.dir()?.files.keys().cloned().collect())
    }

    fn open(&self, name: &str) -> io::Result<Arc<dyn StorageFile>> {
        let dir = self.dir()?;
        let file = dir.files.get(name).ok_or_else(|| not_found(name))?;
        Ok(file.clone())
    }

    fn create(&self, name: &str) -> io::Result<Arc<dyn StorageFile>> {
        let mut dir = self.dir()?;
        if dir.files.contains_key(name) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                name.to_owned(),
            ));
        }
        let file = Arc::new(MemoryFile {
            state: Mutex::default(),
            crashed: dir.crashed.clone(),
        });
        dir.files.insert(name.to_owned(), file.clone());
        Ok(file)
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        let mut dir = self.dir()?;
        dir.files
            .remove(name)
            .map(drop)
            .ok_or_else(|| not_found(name))
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let mut dir = self.dir()?;
        let file = dir.files.remove(from).ok_or_else(|| not_found(from))?;
        dir.files.insert(to.to_owned(), file);
        Ok(())
    }

    fn sync_dir(&self) -> io::Result<()> {
        let mut dir = self.dir()?;
        dir.durable_files = dir.files.clone();
        Ok(())
    }

    fn lock(&self) -> io::Result<Box<dyn Send + Sync + Debug>> {
        let dir = self.dir()?;
        if dir.locked.swap(true, Ordering::SeqCst) {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(Box::new(MemoryLock(dir.locked.clone())))
    }

    fn describe(&self) -> String {
        "memory".to_owned()
    }
}

impl MemoryFile {
    /// Locks the file's state. The crash flag is checked under the lock: a crash sets
    /// the flag before it copies any file, so a sync either completes before the copy
    /// (and survives) or fails (and is never acknowledged).
    fn state(&self) -> io::Result<MutexGuard<'_, FileState>> {
        let state = self
            .state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if self.crashed.load(Ordering::SeqCst) {
            return Err(crashed_error());
        }
        Ok(state)
    }
}

impl StorageFile for MemoryFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let state = self.state()?;
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(state.data.len());
        let n = buf.len().min(state.data.len() - start);
        buf[..n].copy_from_slice(&state.data[start..start + n]);
        Ok(n)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let mut state = self.state()?;
        let start = usize::try_from(offset).map_err(io::Error::other)?;
        if state.data.len() < start + buf.len() {
            state.data.resize(start + buf.len(), 0);
        }
        state.data[start..start + buf.len()].copy_from_slice(buf);
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        let mut state = self.state()?;
        state.durable = state.data.clone();
        Ok(())
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.state()?.data.len() as u64)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut state = self.state()?;
        let len = usize::try_from(len).map_err(io::Error::other)?;
        state.data.resize(len, 0);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crash_keeps_only_durable_state() -> io::Result<()> {
        let storage = MemoryStorage::new();
        let a = storage.create("a")?;
        a.write_at(b"hello", 0)?;
        a.sync_data()?;
        storage.sync_dir()?;
        a.write_at(b" world", 5)?;
        let b = storage.create("b")?;
        b.write_at(b"lost", 0)?;
        b.sync_data()?;
        let after = storage.crash(CrashMode::DropUnsynced);
        assert_eq!(after.contents("a")?, b"hello");
        assert!(
            after.open("b").is_err(),
            "b was never made durable in the directory"
        );
        assert!(a.read_at(&mut [0; 1], 0).is_err(), "old handles are dead");
        let torn = storage_with_unsynced_tail()?.crash(CrashMode::TornPrefix { seed: 7 });
        let kept = torn.contents("f")?;
        assert!(kept.len() >= 4 && kept.len() <= 4 + 1000);
        Ok(())
    }

    fn storage_with_unsynced_tail() -> io::Result<MemoryStorage> {
        let storage = MemoryStorage::new();
        let f = storage.create("f")?;
        f.write_at(b"keep", 0)?;
        f.sync_data()?;
        storage.sync_dir()?;
        f.write_at(&[9u8; 1000], 4)?;
        Ok(storage)
    }
}
