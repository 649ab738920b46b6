//! Garbage collection: deleting blobs no name needs.
//!
//! Safety against concurrent writers (another kiln pulling, loading or
//! building into the same store) rests on two rules:
//!
//! 1. The whole collection runs under the store's exclusive lock, so the set
//!    of names cannot change while it decides; names are read from
//!    `index.json` directly (not through `names()`, whose shared lock would
//!    wait for our own exclusive one).
//! 2. A writer stores blobs first and names them last, so between the two an
//!    unreferenced blob may be about to become referenced. Such a blob is
//!    young: `put` has just written it, or the writer touched it (see
//!    [`Store::touch_blob`]) right before naming. So a blob whose mtime is
//!    within the grace period is never deleted, and files in `tmp/` (writes
//!    in flight) are only removed once older than [`STALE_TMP`].
//!
//! Referenced = reachable from a name or from a layer cache record (see
//! `cache.rs`): a manifest's config and layers, an index's manifests
//! (recursively), a `subject`. Any blob that fails to parse as JSON is a
//! leaf. The build cache is kept unless [`GcOptions::drop_cache`] asks to
//! drop it (`kiln prune --cache`), as docker keeps its build cache through
//! `docker image prune` and drops it with `docker builder prune`.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::time::{Duration, SystemTime};

use super::{Digest, Store, StoreError};

/// Default age below which an unreferenced blob is kept.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(60 * 60);
/// Temp files older than this are leftovers of a crashed writer.
pub const STALE_TMP: Duration = Duration::from_secs(24 * 60 * 60);
/// Blobs larger than this are never parsed for references (layers).
const MAX_DOCUMENT: u64 = 4 * 1024 * 1024;

/// What to collect.
#[derive(Debug, Clone)]
pub struct GcOptions {
    /// Unreferenced blobs younger than this are kept.
    pub grace: Duration,
    /// Only consider these blobs (e.g. those of an image just removed);
    /// `None`: every blob.
    pub only: Option<BTreeSet<Digest>>,
    /// Also drop unpacked layers that named images still use (they are
    /// re-created on demand), not only unused ones.
    pub all_unpacked: bool,
    /// Delete these, when unreferenced, whatever their age: the manifest of
    /// an image `rmi` just removed, so it does not linger as a dangling
    /// image. A writer racing to name that same manifest gets `MissingBlob`
    /// from `set_name` (never a dangling name).
    pub immediate: BTreeSet<Digest>,
    /// Drop the layer cache first (every record, slot and context hash
    /// cache), so the blobs only it kept become unreferenced.
    pub drop_cache: bool,
}

impl Default for GcOptions {
    fn default() -> Self {
        GcOptions {
            grace: DEFAULT_GRACE,
            only: None,
            all_unpacked: false,
            immediate: BTreeSet::new(),
            drop_cache: false,
        }
    }
}

/// What a collection did.
#[derive(Debug, Default, Clone)]
pub struct GcReport {
    /// Deleted blobs and their sizes.
    pub removed: Vec<(Digest, u64)>,
    /// Unreferenced blobs kept because they are younger than the grace period.
    pub kept_young: usize,
    /// Stale temp files deleted.
    pub removed_tmp: usize,
    /// Keys of the layer cache records dropped (`drop_cache`).
    pub removed_cache: Vec<Digest>,
    /// Bytes freed in total (blobs, temp files, unpacked layers, cache records).
    pub reclaimed: u64,
}

impl Store {
    /// The size of a stored blob, if present.
    pub fn blob_size(&self, d: &Digest) -> Option<u64> {
        fs::metadata(self.blob_path(d)).ok().map(|m| m.len())
    }

    /// Marks a blob as just used (mtime = now), so a concurrent `gc` keeps it
    /// for a grace period. Writers call this for every blob of an image right
    /// before naming it. Fails with `BlobNotFound` if the blob is gone.
    /// A blob known only by its registry location has its record touched.
    pub fn touch_blob(&self, d: &Digest) -> Result<(), StoreError> {
        let path = if !self.has(d) && self.remote_path(d).is_file() {
            self.remote_path(d)
        } else {
            self.blob_path(d)
        };
        let f = fs::File::options().append(true).open(&path).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                StoreError::BlobNotFound {
                    root: self.root.clone(),
                    digest: d.clone(),
                }
            } else {
                self.io(format!("touch {}", path.display()), e)
            }
        })?;
        f.set_modified(SystemTime::now())
            .map_err(|e| self.io(format!("touch {}", path.display()), e))
    }

    /// Digests of the blobs no name reaches, with their sizes (read-only;
    /// used to list dangling images).
    pub fn unreferenced_blobs(&self) -> Result<Vec<(Digest, u64)>, StoreError> {
        let referenced = {
            let _lock = self.lock_shared()?;
            self.referenced()?
        };
        let dir = self.blobs_dir();
        let entries =
            fs::read_dir(&dir).map_err(|e| self.io(format!("list {}", dir.display()), e))?;
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let Some(d) = entry
                .file_name()
                .to_str()
                .and_then(|hex| Digest::parse(&format!("sha256:{hex}")).ok())
            else {
                continue;
            };
            if !referenced.contains(&d) {
                if let Ok(m) = entry.metadata() {
                    out.push((d, m.len()));
                }
            }
        }
        Ok(out)
    }

    /// Deletes unreferenced blobs (see the module notes for the rules).
    pub fn gc(&self, opts: &GcOptions) -> Result<GcReport, StoreError> {
        let _lock = self.lock_exclusive()?;
        let mut report = GcReport::default();
        if opts.drop_cache {
            let (keys, freed) = self.drop_cache()?;
            report.removed_cache = keys;
            report.reclaimed += freed;
        }
        let referenced = self.referenced()?;
        let now = SystemTime::now();
        let age = |m: &fs::Metadata| {
            m.modified()
                .ok()
                .and_then(|t| now.duration_since(t).ok())
                .unwrap_or(Duration::ZERO)
        };
        let dir = self.blobs_dir();
        let entries =
            fs::read_dir(&dir).map_err(|e| self.io(format!("list {}", dir.display()), e))?;
        for entry in entries {
            let entry = entry.map_err(|e| self.io(format!("list {}", dir.display()), e))?;
            let Some(digest) = entry
                .file_name()
                .to_str()
                .and_then(|hex| Digest::parse(&format!("sha256:{hex}")).ok())
            else {
                continue; // stray files are `check`'s to report, not ours to delete
            };
            if referenced.contains(&digest) {
                continue;
            }
            if opts
                .only
                .as_ref()
                .is_some_and(|only| !only.contains(&digest))
            {
                continue;
            }
            let Ok(meta) = entry.metadata() else { continue };
            if age(&meta) < opts.grace && !opts.immediate.contains(&digest) {
                report.kept_young += 1;
                continue;
            }
            match fs::remove_file(entry.path()) {
                Ok(()) => {
                    report.reclaimed += meta.len();
                    report.removed.push((digest, meta.len()));
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(self.io(format!("remove {}", entry.path().display()), e)),
            }
        }
        if !report.removed.is_empty() {
            self.sync_dir(&dir)?;
        }
        // Remote records follow the blob rules: unreferenced and old, or
        // redundant because the bytes are here.
        for (digest, path) in self.remote_records()? {
            let redundant = self.has(&digest);
            if !redundant && referenced.contains(&digest) {
                continue;
            }
            if !redundant && opts.only.as_ref().is_some_and(|o| !o.contains(&digest)) {
                continue;
            }
            let Ok(meta) = fs::metadata(&path) else {
                continue;
            };
            if !redundant && age(&meta) < opts.grace && !opts.immediate.contains(&digest) {
                report.kept_young += 1;
                continue;
            }
            match fs::remove_file(&path) {
                Ok(()) => report.reclaimed += meta.len(),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(self.io(format!("remove {}", path.display()), e)),
            }
        }
        if opts.only.is_none() {
            let tmp = self.tmp_dir();
            if let Ok(entries) = fs::read_dir(&tmp) {
                for entry in entries.flatten() {
                    let Ok(meta) = entry.metadata() else { continue };
                    if meta.is_file()
                        && age(&meta) >= STALE_TMP
                        && fs::remove_file(entry.path()).is_ok()
                    {
                        report.removed_tmp += 1;
                        report.reclaimed += meta.len();
                    }
                }
            }
            report.reclaimed += self.prune_unpacked(&referenced, opts.all_unpacked)?;
        }
        Ok(report)
    }

    /// Every blob reachable from a name or a cache record. Caller holds the lock.
    pub(super) fn referenced(&self) -> Result<BTreeSet<Digest>, StoreError> {
        let path = self.index_path();
        let index: serde_json::Value = match fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|source| StoreError::Json {
                root: self.root.clone(),
                what: format!("parse {}", path.display()),
                source,
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(BTreeSet::new()),
            Err(e) => return Err(self.io(format!("read {}", path.display()), e)),
        };
        let mut seen = BTreeSet::new();
        // Every index.json entry counts, named or not: an unnamed entry put
        // there by another tool is not ours to delete.
        let mut todo: Vec<Digest> = child_digests(&index);
        todo.extend(self.cache_roots()?);
        while let Some(d) = todo.pop() {
            if !seen.insert(d.clone()) {
                continue;
            }
            if self.blob_size(&d).is_some_and(|n| n <= MAX_DOCUMENT) {
                if let Ok(bytes) = fs::read(self.blob_path(&d)) {
                    if bytes.first() == Some(&b'{') {
                        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes) {
                            todo.extend(child_digests(&v));
                        }
                    }
                }
            }
        }
        Ok(seen)
    }
}

/// The digests an OCI/Docker document points at: `config`, `layers[]`,
/// `manifests[]`, `subject`, `blobs[]`.
pub(super) fn child_digests(v: &serde_json::Value) -> Vec<Digest> {
    let digest_of = |d: &serde_json::Value| {
        d.get("digest")
            .and_then(|s| s.as_str())
            .and_then(|s| Digest::parse(s).ok())
    };
    let mut out = Vec::new();
    for key in ["config", "subject"] {
        if let Some(d) = v.get(key).and_then(digest_of) {
            out.push(d);
        }
    }
    for key in ["layers", "manifests", "blobs"] {
        if let Some(list) = v.get(key).and_then(|l| l.as_array()) {
            out.extend(list.iter().filter_map(digest_of));
        }
    }
    out
}
