//! The layer cache index: for each cache key (see `plan::cache_key`), the
//! image the step produced.
//!
//! ```text
//! <root>/cache/keys/<key hex>.json   one CacheRecord per key (+ version, key)
//! <root>/cache/slots/<sha256(slot)>  the key last recorded for a slot
//! <root>/cache/context/<..>.json     context::HashCache files (not written here)
//! ```
//!
//! One file per key, so a lookup reads one small file, and the index needs
//! no global file to rewrite.
//!
//! Rules, the same as for names (`names.rs`), so that neither a crash nor a
//! concurrent `prune` can leave a record pointing at nothing:
//!
//! - the image's blobs (manifest, config, layers) are stored first, the
//!   record last; [`Store::cache_put`] checks that they are all present
//!   under the exclusive store lock, which `gc` holds for its whole run;
//! - `gc` treats every record's image as a root, unless asked to drop the
//!   cache ([`super::GcOptions::drop_cache`]), which removes the records
//!   before it decides what is referenced, under that same lock;
//! - [`Store::cache_get`] checks the blobs under the shared lock and
//!   refreshes their age, so a prune dropping the cache right after a hit
//!   keeps them for the grace period, long enough for the build to name its
//!   result (which `set_name_with_blobs` then checks again).

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::gc::child_digests;
use super::{CheckReport, Descriptor, Digest, Store, StoreError};

const RECORD_VERSION: u32 = 1;

/// What the cache remembers about one step.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct CacheRecord {
    /// The manifest of the image state after the step.
    pub image: Descriptor,
    /// The key's named inputs (`plan::cache_key::KeyInputs::parts`), kept to
    /// explain a later miss.
    pub inputs: BTreeMap<String, String>,
    /// The step's position as the engine names it (e.g. a digest of the
    /// Dockerfile path, stage and step index).
    pub slot: String,
}

/// The file form of a record: the key is repeated so a file renamed or
/// copied to the wrong name is refused.
#[derive(Serialize, Deserialize)]
struct RecordFile {
    version: u32,
    key: Digest,
    #[serde(flatten)]
    record: CacheRecord,
}

/// A record file `check` and `gc` read, or why it could not be read.
pub(super) enum Listed {
    Record(Digest, CacheRecord),
    Corrupt(PathBuf),
}

impl Store {
    /// The record for `key`, if there is one and its manifest, config and
    /// layers are all still in the store (else `None`: a miss). A record
    /// that cannot be read is a miss too, with a warning; `kiln system
    /// check` reports it. On a hit the blobs' ages are refreshed (see the
    /// module notes). Takes the shared lock: lookups do not wait for each
    /// other, only for a running `prune` or name update.
    pub fn cache_get(&self, key: &Digest) -> Result<Option<CacheRecord>, StoreError> {
        let _lock = self.lock_shared()?;
        let record = match self.read_record(key) {
            Ok(Some(r)) => r,
            Ok(None) => return Ok(None),
            Err(e) => {
                tracing::warn!("layer cache: ignoring record: {e}");
                return Ok(None);
            }
        };
        let blobs = match self.cache_blobs(key, &record.image) {
            Ok(b) => b,
            Err(StoreError::CacheMissingBlob { digest, .. }) => {
                tracing::debug!(%key, %digest, "layer cache: record's blob is gone");
                return Ok(None);
            }
            Err(e) => {
                tracing::warn!("layer cache: ignoring record: {e}");
                return Ok(None);
            }
        };
        for d in &blobs {
            match self.touch_blob(d) {
                Ok(()) => {}
                Err(StoreError::BlobNotFound { .. }) => return Ok(None),
                // Age refresh is a courtesy towards a concurrent prune; a
                // read-only store still serves hits.
                Err(e) => tracing::debug!("layer cache: {e}"),
            }
        }
        Ok(Some(record))
    }

    /// Records `rec` under `key` (replacing any record for that key: the
    /// last writer wins) and makes it the latest record of `rec.slot`.
    /// Refuses with `CacheMissingBlob` if the manifest, its config or a
    /// layer is absent, checked under the exclusive lock that `prune` holds,
    /// so a record can never be written after a prune removed its blobs.
    /// Atomic (temp + fsync + rename per file); idempotent.
    pub fn cache_put(&self, key: &Digest, rec: &CacheRecord) -> Result<(), StoreError> {
        for dir in [self.cache_keys_dir(), self.cache_slots_dir()] {
            fs::create_dir_all(&dir)
                .map_err(|e| self.io(format!("create {}", dir.display()), e))?;
        }
        let body = RecordFile {
            version: RECORD_VERSION,
            key: key.clone(),
            record: rec.clone(),
        };
        let path = self.record_path(key);
        let bytes = serde_json::to_vec_pretty(&body).map_err(|source| StoreError::Json {
            root: self.root.clone(),
            what: format!("serialise {}", path.display()),
            source,
        })?;
        let _lock = self.lock_exclusive()?;
        self.cache_blobs(key, &rec.image)?;
        self.write_atomic(&path, &bytes)?;
        self.write_atomic(&self.slot_path(&rec.slot), key.as_str().as_bytes())
    }

    /// The record last put for `slot`, to explain a miss by comparing its
    /// inputs with the step's. Its blobs may be gone (the inputs still
    /// explain); `None` if the slot has no record or the cache was dropped.
    /// When two slots produced the same key, the record names the slot that
    /// wrote it last; its inputs are the same either way.
    pub fn cache_last_for_slot(&self, slot: &str) -> Result<Option<CacheRecord>, StoreError> {
        let path = self.slot_path(slot);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.io(format!("read {}", path.display()), e)),
        };
        let Ok(key) = Digest::parse(text.trim()) else {
            tracing::warn!(slot = %path.display(), "layer cache: ignoring corrupt slot");
            return Ok(None);
        };
        match self.read_record(&key) {
            Ok(r) => Ok(r),
            Err(e) => {
                tracing::warn!("layer cache: ignoring record: {e}");
                Ok(None)
            }
        }
    }

    fn cache_dir(&self) -> PathBuf {
        self.root.join("cache")
    }

    fn cache_keys_dir(&self) -> PathBuf {
        self.cache_dir().join("keys")
    }

    fn cache_slots_dir(&self) -> PathBuf {
        self.cache_dir().join("slots")
    }

    pub(super) fn record_path(&self, key: &Digest) -> PathBuf {
        self.cache_keys_dir().join(format!("{}.json", key.hex()))
    }

    /// Slots are the engine's strings; hashing them gives a safe file name.
    fn slot_path(&self, slot: &str) -> PathBuf {
        self.cache_slots_dir()
            .join(Digest::of_bytes(slot.as_bytes()).hex())
    }

    /// The record for `key`; `None` if there is no file; an error if it
    /// cannot be read or parsed, or is not the record of `key`.
    fn read_record(&self, key: &Digest) -> Result<Option<CacheRecord>, StoreError> {
        let path = self.record_path(key);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.io(format!("read {}", path.display()), e)),
        };
        self.parse_record(&path, &bytes, key).map(Some)
    }

    fn parse_record(
        &self,
        path: &std::path::Path,
        bytes: &[u8],
        key: &Digest,
    ) -> Result<CacheRecord, StoreError> {
        let file: RecordFile =
            serde_json::from_slice(bytes).map_err(|source| StoreError::Json {
                root: self.root.clone(),
                what: format!("parse {}", path.display()),
                source,
            })?;
        if file.version != RECORD_VERSION || file.key != *key {
            return Err(StoreError::Layout {
                root: self.root.clone(),
                reason: format!(
                    "{}: record version {} for key {} (want version {RECORD_VERSION}, key {key})",
                    path.display(),
                    file.version,
                    file.key
                ),
            });
        }
        Ok(file.record)
    }

    /// The manifest and every blob it points at, all present, or
    /// `CacheMissingBlob` naming the first absent one. Reads (and verifies)
    /// the manifest.
    fn cache_blobs(&self, key: &Digest, image: &Descriptor) -> Result<Vec<Digest>, StoreError> {
        let missing = |digest: &Digest| StoreError::CacheMissingBlob {
            root: self.root.clone(),
            key: key.clone(),
            digest: digest.clone(),
        };
        let bytes = match self.read_blob(&image.digest) {
            Ok(b) => b,
            Err(StoreError::BlobNotFound { .. }) => return Err(missing(&image.digest)),
            Err(e) => return Err(e),
        };
        let manifest: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|source| StoreError::Json {
                root: self.root.clone(),
                what: format!("parse manifest {} of cache record {key}", image.digest),
                source,
            })?;
        let mut blobs = vec![image.digest.clone()];
        blobs.extend(child_digests(&manifest));
        // A layer known only by its registry location counts: it is
        // fetched when a step needs its bytes (`remote.rs`).
        match blobs.iter().find(|d| !self.knows(d)) {
            Some(d) => Err(missing(d)),
            None => Ok(blobs),
        }
    }

    /// Every record file, parsed. Caller holds a lock (so `gc` sees a
    /// stable set).
    pub(super) fn cache_records(&self) -> Result<Vec<Listed>, StoreError> {
        let dir = self.cache_keys_dir();
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(self.io(format!("list {}", dir.display()), e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| self.io(format!("list {}", dir.display()), e))?;
            let path = entry.path();
            let key = entry
                .file_name()
                .to_str()
                .and_then(|n| n.strip_suffix(".json"))
                .and_then(|hex| Digest::parse(&format!("sha256:{hex}")).ok());
            let parsed = key.and_then(|key| {
                let bytes = fs::read(&path).ok()?;
                let rec = self.parse_record(&path, &bytes, &key).ok()?;
                Some((key, rec))
            });
            out.push(match parsed {
                Some((key, rec)) => Listed::Record(key, rec),
                None => Listed::Corrupt(path),
            });
        }
        Ok(out)
    }

    /// The manifests of every readable record: roots for `gc`. Caller holds
    /// a lock.
    pub(super) fn cache_roots(&self) -> Result<Vec<Digest>, StoreError> {
        Ok(self
            .cache_records()?
            .into_iter()
            .filter_map(|l| match l {
                Listed::Record(_, r) => Some(r.image.digest),
                Listed::Corrupt(_) => None,
            })
            .collect())
    }

    /// Deletes every record, slot and context hash cache; returns the keys
    /// of the records removed and the bytes freed. Caller holds the
    /// exclusive lock. Context hash caches are written without the store
    /// lock, so only finished files (`*.json`) go, never a save in flight.
    pub(super) fn drop_cache(&self) -> Result<(Vec<Digest>, u64), StoreError> {
        let mut keys = Vec::new();
        let mut freed = 0;
        for dir in [
            self.cache_keys_dir(),
            self.cache_slots_dir(),
            self.cache_dir().join("context"),
        ] {
            let entries = match fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(self.io(format!("list {}", dir.display()), e)),
            };
            let is_keys = dir == self.cache_keys_dir();
            let mut removed_any = false;
            for entry in entries {
                let entry = entry.map_err(|e| self.io(format!("list {}", dir.display()), e))?;
                let name = entry.file_name();
                let name = name.to_string_lossy();
                if dir.ends_with("context") && !name.ends_with(".json") {
                    continue;
                }
                let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
                match fs::remove_file(entry.path()) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(self.io(format!("remove {}", entry.path().display()), e)),
                }
                removed_any = true;
                freed += size;
                if is_keys {
                    if let Some(key) = name
                        .strip_suffix(".json")
                        .and_then(|hex| Digest::parse(&format!("sha256:{hex}")).ok())
                    {
                        keys.push(key);
                    }
                }
            }
            if removed_any {
                self.sync_dir(&dir)?;
            }
        }
        keys.sort();
        Ok((keys, freed))
    }

    /// Fills the cache part of `report`: records read, records whose blobs
    /// are missing, records that cannot be read. Takes the shared lock, so
    /// a prune dropping the cache is never seen half done.
    pub(super) fn check_cache(&self, report: &mut CheckReport) -> Result<(), StoreError> {
        let _lock = self.lock_shared()?;
        for listed in self.cache_records()? {
            match listed {
                Listed::Corrupt(path) => report.corrupt_cache_records.push(path),
                Listed::Record(key, rec) => {
                    report.cache_records += 1;
                    match self.cache_blobs(&key, &rec.image) {
                        Ok(_) => {}
                        Err(StoreError::CacheMissingBlob { digest, .. }) => {
                            report.cache_missing_blobs.push((key, digest))
                        }
                        Err(_) => report.corrupt_cache_records.push(self.record_path(&key)),
                    }
                }
            }
        }
        Ok(())
    }
}
