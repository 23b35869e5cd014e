//! A [`Storage`] wrapper that injects faults: a full disk, I/O errors, failed syncs,
//! torn writes and a slow device.

use std::fmt::Debug;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{Storage, StorageFile};

/// A fault to inject. Once armed, it fires on every matching call until cleared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// File writes fail with ENOSPC after `after_writes` more successful writes; the
    /// failing write first writes `torn_bytes` bytes of its buffer.
    DiskFull {
        /// Writes that still succeed before the fault fires.
        after_writes: u64,
        /// Bytes the failing write leaves behind.
        torn_bytes: usize,
    },
    /// File writes fail with EIO after `after_writes` more successful writes.
    WriteError {
        /// Writes that still succeed before the fault fires.
        after_writes: u64,
        /// Bytes the failing write leaves behind.
        torn_bytes: usize,
    },
    /// `sync_data` fails with EIO after `after_syncs` more successful syncs.
    SyncError {
        /// Syncs that still succeed before the fault fires.
        after_syncs: u64,
    },
    /// Every file read takes `delay` longer (a slow or overloaded device), and succeeds.
    /// With a zero delay, only counts reads ([`FaultyStorage::seen`]).
    SlowReads {
        /// Added to each read.
        delay: Duration,
    },
}

/// Wraps another storage and injects the armed [`Fault`].
#[derive(Clone, Debug)]
pub struct FaultyStorage {
    inner: Arc<dyn Storage>,
    plan: Arc<Mutex<Plan>>,
}

#[derive(Debug, Default)]
struct Plan {
    fault: Option<Fault>,
    /// Calls of the armed kind seen since it was armed.
    seen: u64,
}

#[derive(Debug)]
struct FaultyFile {
    inner: Arc<dyn StorageFile>,
    plan: Arc<Mutex<Plan>>,
}

impl FaultyStorage {
    /// Wraps `inner`; no fault is armed.
    pub fn new(inner: Arc<dyn Storage>) -> FaultyStorage {
        FaultyStorage {
            inner,
            plan: Arc::default(),
        }
    }

    /// Arms `fault`, replacing any other.
    pub fn inject(&self, fault: Fault) {
        let mut plan = self
            .plan
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        *plan = Plan {
            fault: Some(fault),
            seen: 0,
        };
    }

    /// How many calls of the armed fault's kind (writes, syncs or reads) were made since
    /// it was armed.
    pub fn seen(&self) -> u64 {
        self.plan
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .seen
    }

    /// Disarms the fault (the disk has space again, the device works again).
    pub fn clear(&self) {
        let mut plan = self
            .plan
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        *plan = Plan::default();
    }

    fn wrap(&self, file: Arc<dyn StorageFile>) -> Arc<dyn StorageFile> {
        Arc::new(FaultyFile {
            inner: file,
            plan: self.plan.clone(),
        })
    }
}

impl Plan {
    /// Counts a write and says whether it fails, how, and how many bytes it leaves.
    fn on_write(&mut self) -> Option<(io::Error, usize)> {
        let (after, torn, errno) = match self.fault? {
            Fault::DiskFull {
                after_writes,
                torn_bytes,
            } => (after_writes, torn_bytes, libc::ENOSPC),
            Fault::WriteError {
                after_writes,
                torn_bytes,
            } => (after_writes, torn_bytes, libc::EIO),
            Fault::SyncError { .. } | Fault::SlowReads { .. } => return None,
        };
        self.seen += 1;
        (self.seen > after).then(|| (io::Error::from_raw_os_error(errno), torn))
    }

    fn on_sync(&mut self) -> Option<io::Error> {
        let Fault::SyncError { after_syncs } = self.fault? else {
            return None;
        };
        self.seen += 1;
        (self.seen > after_syncs).then(|| io::Error::from_raw_os_error(libc::EIO))
    }

    /// Counts a read and says how long it is delayed.
    fn on_read(&mut self) -> Option<Duration> {
        let Fault::SlowReads { delay } = self.fault? else {
            return None;
        };
        self.seen += 1;
        Some(delay)
    }
}

impl Storage for FaultyStorage {
    fn list(&self) -> io::Result<Vec<String>> {
        self.inner.list()
    }

    fn open(&self, name: &str) -> io::Result<Arc<dyn StorageFile>> {
        Ok(self.wrap(self.inner.open(name)?))
    }

    fn create(&self, name: &str) -> io::Result<Arc<dyn StorageFile>> {
        Ok(self.wrap(self.inner.create(name)?))
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        self.inner.remove(name)
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        self.inner.rename(from, to)
    }

    fn sync_dir(&self) -> io::Result<()> {
        self.inner.sync_dir()
    }

    fn lock(&self) -> io::Result<Box<dyn Send + Sync + Debug>> {
        self.inner.lock()
    }

    fn describe(&self) -> String {
        format!("faulty {}", self.inner.describe())
    }
}

impl StorageFile for FaultyFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let delay = self
            .plan
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .on_read();
        // Slept outside the lock, so that slow reads on several threads overlap.
        if let Some(delay) = delay.filter(|delay| !delay.is_zero()) {
            std::thread::sleep(delay);
        }
        self.inner.read_at(buf, offset)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let fault = self
            .plan
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .on_write();
        match fault {
            None => self.inner.write_at(buf, offset),
            Some((error, torn)) => {
                let torn = torn.min(buf.len());
                if torn > 0 {
                    self.inner.write_at(&buf[..torn], offset)?;
                }
                Err(error)
            }
        }
    }

    fn sync_data(&self) -> io::Result<()> {
        let fault = self
            .plan
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .on_sync();
        match fault {
            None => self.inner.sync_data(),
            Some(error) => Err(error),
        }
    }

    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.inner.set_len(len)
    }
}
