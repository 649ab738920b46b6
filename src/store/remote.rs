//! Blobs the store knows by digest and by where a registry holds them,
//! without having their bytes: the layers of a FROM image or of a step
//! imported from a registry cache, until something needs their content.
//!
//! ```text
//! <root>/remote/<hex>.json   {digest, size, mediaType, registry, repository}
//! ```
//!
//! Rules, alongside those of `names.rs` and `cache.rs`:
//!
//! - a record is written (atomically) before any name or cache record that
//!   needs the blob, like a blob file; [`Store::knows`] (bytes or record)
//!   is what `set_name_with_blobs` and `cache_put` check under the
//!   exclusive lock, so a name never points at a blob the store can
//!   neither read nor fetch;
//! - `touch_blob` refreshes a record's age when the bytes are absent, and
//!   `gc` deletes records no name or cache record reaches (after the same
//!   grace period as blobs), so a record is a blob for every rule;
//! - the bytes arrive through one path, `registry::lazy::ensure_blobs`,
//!   which downloads into the store (verified) and then drops the record:
//!   once the file exists the record is redundant.

use std::fs;
use std::io;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{Digest, Store, StoreError};

/// Where a blob can be fetched from.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct RemoteBlob {
    pub digest: Digest,
    pub size: u64,
    #[serde(rename = "mediaType")]
    pub media_type: String,
    /// `host[:port]` as in references.
    pub registry: String,
    pub repository: String,
}

impl Store {
    /// Whether the store has the blob's bytes or knows where to fetch them.
    pub fn knows(&self, d: &Digest) -> bool {
        self.has(d) || self.remote_path(d).is_file()
    }

    /// The remote record of `d`, when its bytes are absent and a record exists.
    pub fn remote(&self, d: &Digest) -> Option<RemoteBlob> {
        if self.has(d) {
            return None;
        }
        let bytes = fs::read(self.remote_path(d)).ok()?;
        let rec: RemoteBlob = serde_json::from_slice(&bytes).ok()?;
        (rec.digest == *d).then_some(rec)
    }

    /// Records where `rec.digest` can be fetched (replacing an older
    /// record: the newest location wins). A no-op when the bytes are here.
    pub fn put_remote(&self, rec: &RemoteBlob) -> Result<(), StoreError> {
        if self.has(&rec.digest) {
            return Ok(());
        }
        let dir = self.remote_dir();
        fs::create_dir_all(&dir).map_err(|e| self.io(format!("create {}", dir.display()), e))?;
        let bytes = serde_json::to_vec(rec).map_err(|source| StoreError::Json {
            root: self.root.clone(),
            what: "serialise a remote blob record".into(),
            source,
        })?;
        self.write_atomic(&self.remote_path(&rec.digest), &bytes)
    }

    /// Drops the record of `d` (its bytes are now in the store).
    pub fn drop_remote(&self, d: &Digest) -> Result<(), StoreError> {
        let path = self.remote_path(d);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.io(format!("remove {}", path.display()), e)),
        }
    }

    /// Every record's digest and file (for `gc` and `check`).
    pub(super) fn remote_records(&self) -> Result<Vec<(Digest, PathBuf)>, StoreError> {
        let dir = self.remote_dir();
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(self.io(format!("list {}", dir.display()), e)),
        };
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let Some(d) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.strip_suffix(".json"))
                .and_then(|hex| Digest::parse(&format!("sha256:{hex}")).ok())
            else {
                continue;
            };
            out.push((d, entry.path()));
        }
        Ok(out)
    }

    pub(super) fn remote_path(&self, d: &Digest) -> PathBuf {
        self.remote_dir().join(format!("{}.json", d.hex()))
    }

    fn remote_dir(&self) -> PathBuf {
        self.root.join("remote")
    }
}
