//! Integrity check: report, never repair, so a human decides what to delete.

use std::fs::{self, File};
use std::io;
use std::path::PathBuf;

use sha2::{Digest as _, Sha256};

use super::{Digest, Store, StoreError};

/// Problems found by [`Store::check`].
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CheckReport {
    /// Blob files hashed.
    pub blobs_checked: usize,
    /// Blobs whose content hashes to something else: (expected, got).
    pub corrupt_blobs: Vec<(Digest, Digest)>,
    /// Names whose blob is absent: (name, digest).
    pub missing_blobs: Vec<(String, Digest)>,
    /// Files under `blobs/sha256/` whose name is not a valid digest.
    pub stray_files: Vec<PathBuf>,
    /// Leftover files in `tmp/` (from crashed or in-flight writes).
    pub stale_tmp_files: usize,
    /// Layer cache records read.
    pub cache_records: usize,
    /// Cache records whose manifest, config or a layer is absent: (key, digest).
    pub cache_missing_blobs: Vec<(Digest, Digest)>,
    /// Cache record files that cannot be read, or whose manifest cannot be.
    pub corrupt_cache_records: Vec<PathBuf>,
    /// Blobs known only by their registry location (`remote/`).
    pub remote_blobs: usize,
    /// Remote records that cannot be read or name another digest.
    pub corrupt_remote_records: Vec<PathBuf>,
}

impl CheckReport {
    /// No corruption, no dangling names or cache records, no stray files.
    /// Temp files alone do not make a store unhealthy: they may belong to a
    /// write in progress.
    pub fn is_ok(&self) -> bool {
        self.corrupt_blobs.is_empty()
            && self.missing_blobs.is_empty()
            && self.stray_files.is_empty()
            && self.cache_missing_blobs.is_empty()
            && self.corrupt_cache_records.is_empty()
            && self.corrupt_remote_records.is_empty()
    }
}

impl Store {
    /// Re-hashes every blob, confirms every name's blob and every blob of
    /// each layer cache record exist, and counts temp files. Read-only; cost
    /// is proportional to the store's size.
    pub fn check(&self) -> Result<CheckReport, StoreError> {
        let mut report = CheckReport::default();
        let blobs_dir = self.blobs_dir();
        let entries = fs::read_dir(&blobs_dir)
            .map_err(|e| self.io(format!("list {}", blobs_dir.display()), e))?;
        for entry in entries {
            let entry = entry.map_err(|e| self.io(format!("list {}", blobs_dir.display()), e))?;
            let path = entry.path();
            let digest = entry
                .file_name()
                .to_str()
                .and_then(|hex| Digest::parse(&format!("sha256:{hex}")).ok());
            let Some(digest) = digest else {
                report.stray_files.push(path);
                continue;
            };
            let got = self.hash_file(&path)?;
            report.blobs_checked += 1;
            if got != digest {
                report.corrupt_blobs.push((digest, got));
            }
        }
        for (name, desc) in self.names()? {
            if !self.knows(&desc.digest) {
                report.missing_blobs.push((name, desc.digest));
            }
        }
        self.check_cache(&mut report)?;
        for (d, path) in self.remote_records()? {
            if self.has(&d) {
                continue;
            }
            match self.remote(&d) {
                Some(_) => report.remote_blobs += 1,
                None => report.corrupt_remote_records.push(path),
            }
        }
        let tmp_dir = self.tmp_dir();
        report.stale_tmp_files = match fs::read_dir(&tmp_dir) {
            Ok(entries) => entries.count(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
            Err(e) => return Err(self.io(format!("list {}", tmp_dir.display()), e)),
        };
        Ok(report)
    }

    fn hash_file(&self, path: &std::path::Path) -> Result<Digest, StoreError> {
        let mut hasher = Sha256::new();
        File::open(path)
            .and_then(|mut f| io::copy(&mut f, &mut hasher))
            .map_err(|e| self.io(format!("hash {}", path.display()), e))?;
        Ok(Digest::from_hasher(hasher))
    }
}
