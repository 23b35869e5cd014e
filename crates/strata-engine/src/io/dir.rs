//! [`Storage`] on a real directory.

use std::fmt::Debug;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{Storage, StorageFile};

/// A directory of real files.
#[derive(Debug)]
pub struct DirStorage {
    path: PathBuf,
}

impl DirStorage {
    /// Uses `path` as the store's directory, creating it if needed.
    ///
    /// Every directory it creates is synced into its parent: otherwise a power loss
    /// could take the new directory back, with every event acknowledged in it (the
    /// segment files are synced into the store's directory, but that directory's own
    /// entry lives in its parent).
    pub fn new(path: impl AsRef<Path>) -> io::Result<DirStorage> {
        let path = path.as_ref().to_path_buf();
        // The ancestors that do not exist yet, nearest to the root last.
        let missing: Vec<&Path> = path.ancestors().take_while(|dir| !dir.exists()).collect();
        fs::create_dir_all(&path)?;
        for created in missing.iter().rev() {
            let parent = match created.parent() {
                Some(parent) if !parent.as_os_str().is_empty() => parent,
                _ => Path::new("."),
            };
            File::open(parent)?.sync_all()?;
        }
        Ok(DirStorage { path })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[derive(Debug)]
struct DirFile(File);

#[derive(Debug)]
struct DirLock(#[allow(dead_code)] File);

impl Storage for DirStorage {
    fn list(&self) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(&self.path)? {
            if let Ok(name) = entry?.file_name().into_string() {
                names.push(name);
            }
        }
        Ok(names)
    }

    fn open(&self, name: &str) -> io::Result<Arc<dyn StorageFile>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(self.path.join(name))?;
        Ok(Arc::new(DirFile(file)))
    }

    fn create(&self, name: &str) -> io::Result<Arc<dyn StorageFile>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(self.path.join(name))?;
        Ok(Arc::new(DirFile(file)))
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        fs::remove_file(self.path.join(name))
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        fs::rename(self.path.join(from), self.path.join(to))
    }

    fn sync_dir(&self) -> io::Result<()> {
        File::open(&self.path)?.sync_all()
    }

    fn lock(&self) -> io::Result<Box<dyn Send + Sync + Debug>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(self.path.join("LOCK"))?;
        match file.try_lock() {
            Ok(()) => Ok(Box::new(DirLock(file))),
            Err(fs::TryLockError::WouldBlock) => Err(io::ErrorKind::WouldBlock.into()),
            Err(fs::TryLockError::Error(error)) => Err(error),
        }
    }

    fn describe(&self) -> String {
        self.path.display().to_string()
    }
}

impl StorageFile for DirFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        loop {
            match self.0.read_at(buf, offset) {
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                other => return other,
            }
        }
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.0.write_all_at(buf, offset)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
}
