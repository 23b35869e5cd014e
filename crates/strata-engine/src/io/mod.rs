//! The I/O seam: every byte the engine reads or writes goes through [`Storage`] and
//! [`StorageFile`]. The engine runs on real files ([`DirStorage`]), on memory that can
//! simulate a crash ([`MemoryStorage`]), or on either wrapped in [`FaultyStorage`], which
//! injects disk-full, I/O and sync errors and torn writes.

mod dir;
mod faulty;
mod memory;

use std::fmt::Debug;
use std::io;
use std::sync::Arc;

pub use dir::DirStorage;
pub use faulty::{Fault, FaultyStorage};
pub use memory::{CrashMode, MemoryStorage};

/// A flat directory of files.
pub trait Storage: Send + Sync + Debug {
    /// Names of the files in the directory, in no particular order.
    fn list(&self) -> io::Result<Vec<String>>;
    /// Opens an existing file for reading and writing.
    fn open(&self, name: &str) -> io::Result<Arc<dyn StorageFile>>;
    /// Creates a new, empty file; fails if it exists.
    fn create(&self, name: &str) -> io::Result<Arc<dyn StorageFile>>;
    /// Removes a file.
    fn remove(&self, name: &str) -> io::Result<()>;
    /// Renames a file, replacing `to` if it exists.
    fn rename(&self, from: &str, to: &str) -> io::Result<()>;
    /// Makes the directory's entries (created, removed and renamed files) durable.
    fn sync_dir(&self) -> io::Result<()>;
    /// Takes the exclusive writer lock, or fails with `WouldBlock` if someone holds it.
    /// The lock is held until the returned guard is dropped.
    fn lock(&self) -> io::Result<Box<dyn Send + Sync + Debug>>;
    /// A human-readable location for messages (a path, or `memory`).
    fn describe(&self) -> String;
}

/// One file, read and written at explicit offsets.
#[allow(clippy::len_without_is_empty)] // a file's length is a size, not a collection's
pub trait StorageFile: Send + Sync + Debug {
    /// Reads up to `buf.len()` bytes at `offset`; returns fewer only at the end of the file.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
    /// Writes all of `buf` at `offset`, or fails (possibly after writing a part of it).
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Makes the written data durable (`fdatasync`).
    fn sync_data(&self) -> io::Result<()>;
    /// The file's length in bytes.
    fn len(&self) -> io::Result<u64>;
    /// Truncates or extends the file.
    fn set_len(&self, len: u64) -> io::Result<()>;
}

/// Reads exactly `buf.len()` bytes at `offset`, failing with `UnexpectedEof` if the file
/// is shorter.
pub fn read_exact_at(file: &dyn StorageFile, buf: &mut [u8], offset: u64) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let n = file.read_at(&mut buf[done..], offset + done as u64)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("file ends before offset {}", offset + buf.len() as u64),
            ));
        }
        done += n;
    }
    Ok(())
}

/// Reads as many bytes as the file holds at `offset`, up to `buf.len()`.
pub fn read_full_at(file: &dyn StorageFile, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        let n = file.read_at(&mut buf[done..], offset + done as u64)?;
        if n == 0 {
            break;
        }
        done += n;
    }
    Ok(done)
}
