//! The content store: an OCI image layout on disk.
//!
//! ```text
//! <root>/oci-layout          {"imageLayoutVersion":"1.0.0"}
//! <root>/index.json          OCI index; names live in the ref.name annotation
//! <root>/blobs/sha256/<hex>  content-addressed blobs
//! <root>/tmp/                in-flight writes (same filesystem, so rename is atomic)
//! <root>/lock                flock target serialising index.json updates
//! <root>/cache/              the layer cache index (see `cache.rs`)
//! <root>/remote/             blobs known by registry location only (see `remote.rs`)
//! ```
//!
//! Ordering rule: blobs are written (and fsynced) before any name refers to
//! them, and `set_name` refuses a descriptor whose blob is absent, so a crash
//! at any point leaves at worst an unreferenced blob or a stale temp file,
//! never a name pointing at nothing.

mod adopt;
mod blobs;
mod cache;
mod check;
mod digest;
mod error;
mod fsutil;
mod gc;
mod names;
mod remote;
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
mod unpacked;
mod unsynced;
mod writer;

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

pub use adopt::{Adoption, ADOPT_ENV};
pub use blobs::VerifiedReader;
pub use cache::CacheRecord;
pub use check::CheckReport;
pub use digest::Digest;
pub use error::StoreError;
pub use gc::{GcOptions, GcReport, DEFAULT_GRACE};
pub use names::{Descriptor, REF_NAME_ANNOTATION};
pub use remote::RemoteBlob;
pub use unpacked::{
    chain_ids, walk_cache_paths, LayerSource, UnpackError, Unpacked, WalkCachePaths,
};
pub use writer::BlobWriter;

const LAYOUT_FILE: &str = "oci-layout";
const LAYOUT_VERSION: &str = "1.0.0";

/// Handle on a store root. Cheap; several handles (in one or many processes)
/// may share a root, coordinated by the lock file.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

impl Store {
    /// Opens the layout at `root`, creating directories, `oci-layout` and an
    /// empty `index.json` if missing. Idempotent; safe to race with other
    /// openers (initialisation happens under the exclusive lock). Refuses a
    /// directory whose `oci-layout` declares a different version.
    pub fn open(root: &Path) -> Result<Store, StoreError> {
        let store = Store {
            root: root.to_path_buf(),
        };
        for dir in [store.root.clone(), store.blobs_dir(), store.tmp_dir()] {
            fs::create_dir_all(&dir)
                .map_err(|e| store.io(format!("create {}", dir.display()), e))?;
        }
        let _lock = store.lock_exclusive()?;
        store.init_layout_file()?;
        store.init_index()?;
        Ok(store)
    }

    /// Where the store lives when the CLI is given no `--root`/`$KILN_ROOT`:
    /// `/var/lib/kiln` for root (euid 0), else `$XDG_DATA_HOME/kiln`, else
    /// `$HOME/.local/share/kiln`, else `<tmp>/kiln` as a last resort.
    pub fn default_root() -> PathBuf {
        if is_root_user() {
            return PathBuf::from("/var/lib/kiln");
        }
        // XDG says relative values are invalid and must be ignored.
        let abs_env = |k: &str| {
            std::env::var_os(k)
                .map(PathBuf::from)
                .filter(|p| p.is_absolute())
        };
        if let Some(xdg) = abs_env("XDG_DATA_HOME") {
            return xdg.join("kiln");
        }
        if let Some(home) = abs_env("HOME") {
            return home.join(".local/share/kiln");
        }
        std::env::temp_dir().join("kiln")
    }

    /// The store root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Streams `r` into the store. See [`Store::put_reader`] in `blobs.rs`.
    pub fn put_bytes(&self, b: &[u8]) -> Result<(Digest, u64), StoreError> {
        self.put_reader(b, None)
    }

    /// Reads a whole blob into memory, verifying its digest. Meant for small
    /// blobs (manifests, configs); use [`Store::open_blob`] for layers.
    pub fn read_blob(&self, d: &Digest) -> Result<Vec<u8>, StoreError> {
        let mut reader = self.open_blob(d)?;
        let mut out = Vec::new();
        reader
            .read_to_end(&mut out)
            .map_err(|e| self.read_error(d, e))?;
        Ok(out)
    }

    fn blobs_dir(&self) -> PathBuf {
        self.root.join("blobs").join("sha256")
    }

    fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    fn index_path(&self) -> PathBuf {
        self.root.join("index.json")
    }

    fn io(&self, what: String, source: io::Error) -> StoreError {
        StoreError::Io {
            root: self.root.clone(),
            what,
            source,
        }
    }

    fn init_layout_file(&self) -> Result<(), StoreError> {
        let path = self.root.join(LAYOUT_FILE);
        match fs::read(&path) {
            Ok(bytes) => {
                let v: serde_json::Value =
                    serde_json::from_slice(&bytes).map_err(|source| StoreError::Json {
                        root: self.root.clone(),
                        what: format!("parse {}", path.display()),
                        source,
                    })?;
                match v.get("imageLayoutVersion").and_then(|v| v.as_str()) {
                    Some(LAYOUT_VERSION) => Ok(()),
                    other => Err(StoreError::Layout {
                        root: self.root.clone(),
                        reason: format!(
                            "unsupported imageLayoutVersion {other:?} in {} (want {LAYOUT_VERSION:?})",
                            path.display()
                        ),
                    }),
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let body = format!("{{\"imageLayoutVersion\":\"{LAYOUT_VERSION}\"}}");
                self.write_atomic(&path, body.as_bytes())
            }
            Err(e) => Err(self.io(format!("read {}", path.display()), e)),
        }
    }
}

/// Effective uid 0? Read from /proc because std has no safe geteuid and the
/// crate forbids unsafe; fall back to `$USER` where /proc is unavailable.
fn is_root_user() -> bool {
    if let Ok(status) = fs::read_to_string("/proc/self/status") {
        if let Some(line) = status.lines().find(|l| l.starts_with("Uid:")) {
            // Fields: real, effective, saved, filesystem.
            return line.split_whitespace().nth(2) == Some("0");
        }
    }
    std::env::var("USER").is_ok_and(|u| u == "root")
}
