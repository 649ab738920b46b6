//! Durable-write helpers: temp files in `<root>/tmp`, fsync, atomic rename, locks.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use super::{Store, StoreError};

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A temp file that is deleted on drop unless [`TempFile::persist`] succeeds,
/// so every error path (including panics) cleans up after itself.
pub(crate) struct TempFile {
    pub(crate) file: File,
    path: PathBuf,
    armed: bool,
}

impl TempFile {
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Renames into place; the temp path no longer exists afterwards.
    pub(crate) fn persist(mut self, dest: &Path) -> io::Result<()> {
        fs::rename(&self.path, dest)?;
        self.armed = false;
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if self.armed {
            // Best effort: a leftover is reported by `check` as a stale temp file.
            let _ = fs::remove_file(&self.path);
        }
    }
}

impl Store {
    /// Creates a uniquely named file in `<root>/tmp` with `create_new`, so two
    /// writers (threads or processes) can never share a temp file.
    pub(crate) fn temp_file(&self, purpose: &str) -> Result<TempFile, StoreError> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let mut last_err = None;
        for _ in 0..16 {
            let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
            let name = format!("{purpose}-{}-{nanos}-{n}", std::process::id());
            let path = self.tmp_dir().join(name);
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(file) => {
                    return Ok(TempFile {
                        file,
                        path,
                        armed: true,
                    })
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last_err = Some(e),
                Err(e) => return Err(self.io(format!("create {}", path.display()), e)),
            }
        }
        let e = last_err.unwrap_or_else(|| io::Error::other("no unique temp name"));
        Err(self.io(
            format!("create temp file in {}", self.tmp_dir().display()),
            e,
        ))
    }

    /// Writes `dest` atomically: temp file, fsync, rename, fsync the directory.
    pub(crate) fn write_atomic(&self, dest: &Path, data: &[u8]) -> Result<(), StoreError> {
        let mut tmp = self.temp_file("write")?;
        let what = || format!("write {}", dest.display());
        tmp.file.write_all(data).map_err(|e| self.io(what(), e))?;
        tmp.file.sync_all().map_err(|e| self.io(what(), e))?;
        tmp.persist(dest).map_err(|e| self.io(what(), e))?;
        self.sync_dir(dest.parent().unwrap_or(&self.root))
    }

    /// fsyncs a directory so a rename into it survives a crash.
    pub(crate) fn sync_dir(&self, dir: &Path) -> Result<(), StoreError> {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| self.io(format!("fsync {}", dir.display()), e))
    }

    fn lock_file(&self) -> Result<File, StoreError> {
        let path = self.root.join("lock");
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| self.io(format!("open {}", path.display()), e))
    }

    /// Exclusive lock for index.json read-modify-write. Released when the
    /// returned file is dropped. Each call opens its own file description, so
    /// it also excludes other threads of this process, not just other processes.
    pub(crate) fn lock_exclusive(&self) -> Result<File, StoreError> {
        let f = self.lock_file()?;
        f.lock()
            .map_err(|e| self.io(format!("lock {}", self.root.join("lock").display()), e))?;
        Ok(f)
    }

    /// Shared lock for readers: never sees a writer mid-update.
    pub(crate) fn lock_shared(&self) -> Result<File, StoreError> {
        let f = self.lock_file()?;
        f.lock_shared()
            .map_err(|e| self.io(format!("lock {}", self.root.join("lock").display()), e))?;
        Ok(f)
    }
}
