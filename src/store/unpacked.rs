//! Unpacked layers, stored once per chain id and shared read-only by builds.
//!
//! ```text
//! <root>/unpacked/<kind>/<chain-id hex>/rootfs/      the tree
//! <root>/unpacked/<kind>/<chain-id hex>/meta.jsonl   layer::Metadata sidecar
//! <root>/unpacked/locks/<kind>-<chain-id hex>.lock   flock: one unpacker per chain id
//! <root>/unpacked/walk-merged/<kind>-<chain-id hex>/   the walk snapshotter's
//!                                                      cached merged tree
//! <root>/unpacked/locks/walk-<kind>-<chain-id hex>.lock flock: its one user
//! ```
//!
//! `<kind>` is `flat` (the whole chain flattened into one root filesystem),
//! `overlay-user` or `overlay-trusted` (one layer per directory, whiteouts in
//! overlayfs form with `user.overlay.*` or `trusted.overlay.*` xattrs; see
//! `layer`).
//!
//! Discipline: a tree is unpacked into `<root>/tmp/`, marked as not synced
//! in this boot (see `unsynced`: a tree a crash may have cut short is
//! unpacked again; `syncfs` only where the boot id cannot be read), and
//! renamed into place while holding the store's shared lock
//! (so a collector holding the exclusive lock never sees it half-moved). A
//! per-chain-id lock file makes a second process wait and then reuse the
//! first one's result instead of unpacking again; should two still race
//! (say a lock file was removed), the rename loser discards its copy. A
//! directory under `unpacked/<kind>/` is therefore always complete.

use std::fs::{self, OpenOptions};
use std::io;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest as _, Sha256};

use super::{unsynced, Digest, Store, StoreError};
use crate::layer::{self, LayerError, Metadata, Mode, OverlayXattrs, UnpackOptions};
use crate::sys::fs as sfs;

static UNPACK_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A layer as an image describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerSource {
    /// Digest of the (possibly compressed) blob in the store.
    pub blob: Digest,
    /// Digest of the uncompressed tar (`rootfs.diff_ids` in the config).
    pub diff_id: Digest,
}

/// One unpacked tree in the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unpacked {
    pub chain_id: Digest,
    /// The tree (the root filesystem, or one overlay lower dir).
    pub rootfs: PathBuf,
    /// Its [`layer::Metadata`] sidecar (may be empty).
    pub metadata: PathBuf,
    /// Whether this call unpacked it (false: it was already there).
    pub fresh: bool,
}

/// Errors of [`Store::ensure_unpacked`].
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("store {root}: unpack: {source}")]
    Layer {
        root: PathBuf,
        #[source]
        source: LayerError,
    },
}

/// OCI chain ids: `chain(L0) = diff_id(L0)`,
/// `chain(Ln) = sha256(chain(Ln-1) + " " + diff_id(Ln))`.
pub fn chain_ids(diff_ids: &[Digest]) -> Vec<Digest> {
    let mut out: Vec<Digest> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(prev) => Digest::from_hasher(Sha256::new_with_prefix(format!("{prev} {d}"))),
        };
        out.push(next);
    }
    out
}

fn kind_dir(mode: Mode) -> &'static str {
    match mode {
        Mode::Flatten => "flat",
        Mode::OverlayLower(OverlayXattrs::User) => "overlay-user",
        Mode::OverlayLower(OverlayXattrs::Trusted) => "overlay-trusted",
    }
}

/// Where the walk snapshotter keeps the merged tree of a chain (see
/// `snapshot::walk_cache`): derived from the top-most overlay lower dir,
/// which names the store, the xattr kind and the chain id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalkCachePaths {
    /// `<root>/unpacked/walk-merged/<kind>-<hex>`.
    pub dir: PathBuf,
    /// Its lock file.
    pub lock: PathBuf,
    /// The store's scratch directory (same filesystem).
    pub tmp: PathBuf,
}

const WALK_MERGED: &str = "walk-merged";

/// [`WalkCachePaths`] for the stack whose top-most lower is `top` (as
/// `ensure_unpacked(.., Mode::OverlayLower(..))` gives it); `None` when
/// `top` is not a store's overlay lower dir.
pub fn walk_cache_paths(top: &Path) -> Option<WalkCachePaths> {
    if top.file_name()? != "rootfs" {
        return None;
    }
    let chain_dir = top.parent()?;
    let hex = chain_dir.file_name()?.to_str()?;
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let kinds = chain_dir.parent()?;
    let kind = kinds.file_name()?.to_str()?;
    if kind != kind_dir(Mode::OverlayLower(OverlayXattrs::User))
        && kind != kind_dir(Mode::OverlayLower(OverlayXattrs::Trusted))
    {
        return None;
    }
    let unpacked = kinds.parent()?;
    if unpacked.file_name()? != "unpacked" {
        return None;
    }
    let name = format!("{kind}-{hex}");
    Some(WalkCachePaths {
        dir: unpacked.join(WALK_MERGED).join(&name),
        lock: unpacked.join("locks").join(format!("walk-{name}.lock")),
        tmp: unpacked.parent()?.join("tmp"),
    })
}

impl Store {
    /// Removes unpacked trees whose chain id no image in `referenced` (the
    /// blobs reachable from names; configs among them give the diff_ids)
    /// uses, or every tree with `all`. Returns the bytes freed. Called by
    /// `gc` under the exclusive store lock; a tree whose per-chain lock is
    /// held (being unpacked, or used by a build that holds it shared) is
    /// skipped. A tree is first renamed into `tmp/` so it vanishes from
    /// `unpacked/` atomically, then deleted.
    pub(super) fn prune_unpacked(
        &self,
        referenced: &std::collections::BTreeSet<Digest>,
        all: bool,
    ) -> Result<u64, StoreError> {
        let mut keep = std::collections::BTreeSet::new();
        if !all {
            for d in referenced {
                if let Some(diff_ids) = self.config_diff_ids(d) {
                    keep.extend(
                        chain_ids(&diff_ids)
                            .into_iter()
                            .map(|c| c.hex().to_string()),
                    );
                }
            }
        }
        let mut freed = 0;
        for mode in [
            Mode::Flatten,
            Mode::OverlayLower(OverlayXattrs::User),
            Mode::OverlayLower(OverlayXattrs::Trusted),
        ] {
            let kind_root = self.unpacked_root().join(kind_dir(mode));
            let Ok(entries) = fs::read_dir(&kind_root) else {
                continue;
            };
            for entry in entries.flatten() {
                let hex = entry.file_name().to_string_lossy().into_owned();
                if keep.contains(&hex) {
                    continue;
                }
                let lock = format!("{}-{hex}.lock", kind_dir(mode));
                freed += self.prune_locked_tree(&entry.path(), &lock)?;
            }
        }
        freed += self.prune_walk_merged(&keep, all)?;
        Ok(freed)
    }

    /// The walk snapshotter's cached merged trees (`walk-merged/<kind>-<hex>`),
    /// pruned by the same rule as the lowers they were made from; one a step
    /// holds (its lock is taken) is skipped. A half-built tree never sits
    /// there (it is built in `tmp/` and renamed in).
    fn prune_walk_merged(
        &self,
        keep: &std::collections::BTreeSet<String>,
        all: bool,
    ) -> Result<u64, StoreError> {
        let root = self.unpacked_root().join(WALK_MERGED);
        let Ok(entries) = fs::read_dir(&root) else {
            return Ok(0);
        };
        let mut freed = 0;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let hex = name.rsplit('-').next().unwrap_or_default();
            if !all && keep.contains(hex) {
                continue;
            }
            freed += self.prune_locked_tree(&entry.path(), &format!("walk-{name}.lock"))?;
        }
        Ok(freed)
    }

    /// Removes the tree `path` unless the lock file `lock` (under
    /// `unpacked/locks/`) is held: renamed into `tmp/` first so it leaves
    /// its place atomically, then deleted. Returns the bytes freed (0 when
    /// skipped).
    fn prune_locked_tree(&self, path: &Path, lock: &str) -> Result<u64, StoreError> {
        let lock_path = self.unpacked_root().join("locks").join(lock);
        let held = self.open_lock_file(&lock_path)?;
        if held.try_lock().is_err() {
            tracing::debug!(tree = %path.display(), "in use; not pruned");
            return Ok(0);
        }
        let n = UNPACK_COUNTER.fetch_add(1, Ordering::Relaxed);
        let doomed = self
            .tmp_dir()
            .join(format!("prune-{}-{n}-{}", std::process::id(), nanos()));
        fs::rename(path, &doomed)
            .map_err(|e| self.io(format!("move {} away", path.display()), e))?;
        let freed = tree_size(&doomed);
        drop(TempTree {
            path: doomed,
            armed: true,
        });
        // The lock file goes too, while we still hold it.
        let _ = fs::remove_file(&lock_path);
        Ok(freed)
    }

    /// The diff_ids of `d` if it is a small JSON blob with `rootfs.diff_ids`.
    fn config_diff_ids(&self, d: &Digest) -> Option<Vec<Digest>> {
        let path = self.blob_path(d);
        if fs::metadata(&path).ok()?.len() > 4 << 20 {
            return None;
        }
        let bytes = fs::read(&path).ok()?;
        if bytes.first() != Some(&b'{') {
            return None;
        }
        let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
        let ids = v.get("rootfs")?.get("diff_ids")?.as_array()?;
        ids.iter()
            .map(|s| s.as_str().and_then(|s| Digest::parse(s).ok()))
            .collect()
    }
}

/// Bytes of regular files under `dir` (not following symlinks).
fn tree_size(dir: &Path) -> u64 {
    let mut total = 0;
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => todo.push(e.path()),
                Ok(m) if m.is_file() => total += m.len(),
                _ => {}
            }
        }
    }
    total
}

/// A scratch directory under `<root>/tmp`, removed on drop unless persisted.
pub(super) struct TempTree {
    pub(super) path: PathBuf,
    armed: bool,
}

impl Drop for TempTree {
    fn drop(&mut self) {
        if self.armed {
            if let Err(e) = remove_tree(&self.path) {
                tracing::warn!(path = %self.path.display(), error = %e, "could not remove unpack scratch directory");
            }
        }
    }
}

/// Removes a tree that may hold read-only directories, without following
/// symlinks.
fn remove_tree(path: &Path) -> io::Result<()> {
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Ok(());
    };
    let dir = sfs::open_root(parent)?;
    sfs::remove_at(dir.as_fd(), name)
}

impl Store {
    fn unpacked_root(&self) -> PathBuf {
        self.root.join("unpacked")
    }

    /// Where the tree for `chain_id` in `mode` lives (whether or not it exists).
    pub fn unpacked_dir(&self, chain_id: &Digest, mode: Mode) -> PathBuf {
        self.unpacked_root()
            .join(kind_dir(mode))
            .join(chain_id.hex())
    }

    /// Makes sure the layers are unpacked, reading blobs from this store.
    ///
    /// `Mode::Flatten`: one tree, the whole chain applied in order, keyed by
    /// the last chain id; returns one element (none for no layers).
    /// `Mode::OverlayLower`: one tree per layer keyed by its chain id, in
    /// order (lowest first); returns one element per layer.
    ///
    /// Idempotent and safe to call concurrently from threads and processes.
    /// Each blob is verified (digest of the compressed bytes) and each
    /// layer's decompressed stream must hash to its `diff_id`, else nothing
    /// is stored. Refuses unsafe layers (see [`layer::unpack`]).
    pub fn ensure_unpacked(
        &self,
        layers: &[LayerSource],
        mode: Mode,
    ) -> Result<Vec<Unpacked>, UnpackError> {
        let diff_ids: Vec<Digest> = layers.iter().map(|l| l.diff_id.clone()).collect();
        let chains = chain_ids(&diff_ids);
        match mode {
            Mode::Flatten => match chains.last() {
                None => Ok(Vec::new()),
                Some(chain) => Ok(vec![self.ensure_one(chain, layers, &[], mode)?]),
            },
            Mode::OverlayLower(_) => {
                let mut done: Vec<Unpacked> = Vec::with_capacity(layers.len());
                for (chain, l) in chains.iter().zip(layers) {
                    // The layers below, topmost first, as overlay stacks them.
                    let lowers: Vec<PathBuf> =
                        done.iter().rev().map(|u| u.rootfs.clone()).collect();
                    done.push(self.ensure_one(chain, std::slice::from_ref(l), &lowers, mode)?);
                }
                Ok(done)
            }
        }
    }

    /// Unpacks `layers` (in order) into the tree for `chain` unless present.
    fn ensure_one(
        &self,
        chain: &Digest,
        layers: &[LayerSource],
        lowers: &[PathBuf],
        mode: Mode,
    ) -> Result<Unpacked, UnpackError> {
        let dir = self.unpacked_dir(chain, mode);
        let found = |fresh| Unpacked {
            chain_id: chain.clone(),
            rootfs: dir.join("rootfs"),
            metadata: dir.join("meta.jsonl"),
            fresh,
        };
        if dir.is_dir() && unsynced::trusted(&dir) {
            return Ok(found(false));
        }
        let _lock = self.chain_lock(chain, mode)?;
        if dir.is_dir() {
            if unsynced::trusted(&dir) {
                return Ok(found(false));
            }
            tracing::info!(dir = %dir.display(), "unpacked tree not synced before a restart; unpacking it again");
            self.discard_tree(&dir)?;
        }
        let tmp = self.unpack_into_temp(layers, lowers, mode)?;
        let fresh = self.commit_tree(tmp, &dir)?;
        if fresh {
            tracing::debug!(chain = %chain, dir = %dir.display(), "unpacked");
        }
        Ok(found(fresh))
    }

    /// Takes the per-chain lock of `chain` in `mode` (one unpacker at a
    /// time), creating the directories it needs; held until dropped.
    pub(super) fn chain_lock(&self, chain: &Digest, mode: Mode) -> Result<fs::File, StoreError> {
        let kind_root = self.unpacked_root().join(kind_dir(mode));
        let locks = self.unpacked_root().join("locks");
        for d in [&kind_root, &locks] {
            fs::create_dir_all(d).map_err(|e| self.io(format!("create {}", d.display()), e))?;
        }
        let lock_path = locks.join(format!("{}-{}.lock", kind_dir(mode), chain.hex()));
        let lock = self.open_lock_file(&lock_path)?;
        lock.lock()
            .map_err(|e| self.io(format!("lock {}", lock_path.display()), e))?;
        Ok(lock)
    }

    /// Opens (creating) a lock file under `unpacked/locks/`, unlocked.
    fn open_lock_file(&self, path: &Path) -> Result<fs::File, StoreError> {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| self.io(format!("open {}", path.display()), e))
    }

    /// A new empty scratch directory `<root>/tmp/<purpose>-…`, removed on
    /// drop unless committed.
    pub(super) fn scratch_tree(&self, purpose: &str) -> Result<TempTree, StoreError> {
        let n = UNPACK_COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = self
            .tmp_dir()
            .join(format!("{purpose}-{}-{n}-{}", std::process::id(), nanos()));
        fs::create_dir(&path).map_err(|e| self.io(format!("create {}", path.display()), e))?;
        Ok(TempTree { path, armed: true })
    }

    /// Takes the published tree `dir` out of `unpacked/` (renamed into
    /// `tmp/`, then removed). The caller holds its per-chain lock.
    pub(super) fn discard_tree(&self, dir: &Path) -> Result<(), StoreError> {
        let _store_lock = self.lock_shared()?;
        let n = UNPACK_COUNTER.fetch_add(1, Ordering::Relaxed);
        let doomed = self
            .tmp_dir()
            .join(format!("stale-{}-{n}-{}", std::process::id(), nanos()));
        fs::rename(dir, &doomed).map_err(|e| self.io(format!("move {} away", dir.display()), e))?;
        drop(TempTree {
            path: doomed,
            armed: true,
        });
        Ok(())
    }

    /// Renames a finished scratch tree to `dir` under the shared store lock.
    /// `Ok(true)`: ours is in place; `Ok(false)`: another writer's complete
    /// tree was already there (a race the lock file should have prevented),
    /// and ours was discarded.
    pub(super) fn commit_tree(&self, tmp: TempTree, dir: &Path) -> Result<bool, StoreError> {
        let _store_lock = self.lock_shared()?;
        match fs::rename(&tmp.path, dir) {
            Ok(()) => {
                let mut tmp = tmp;
                tmp.armed = false;
                if !unsynced::is_marked(dir) {
                    // A synced tree: make its rename durable too.
                    self.sync_dir(dir.parent().unwrap_or(&self.root))?;
                }
                Ok(true)
            }
            // rename(2) refuses to replace a non-empty directory: theirs stays.
            Err(_) if dir.is_dir() => Ok(false),
            Err(e) => Err(self.io(
                format!("rename {} to {}", tmp.path.display(), dir.display()),
                e,
            )),
        }
    }

    fn unpack_into_temp(
        &self,
        layers: &[LayerSource],
        lowers: &[PathBuf],
        mode: Mode,
    ) -> Result<TempTree, UnpackError> {
        let tmp = self.scratch_tree("unpack")?;
        let rootfs = tmp.path.join("rootfs");
        fs::create_dir(&rootfs).map_err(|e| self.io(format!("create {}", rootfs.display()), e))?;
        let mut meta = Metadata::default();
        for l in layers {
            let blob = self.open_blob(&l.blob)?;
            let opts = UnpackOptions {
                layer: l.blob.to_string(),
                mode,
                expected_diff_id: Some(l.diff_id.clone()),
                lowers: lowers.to_vec(),
            };
            layer::unpack(blob, &rootfs, &opts, &mut meta).map_err(|source| {
                UnpackError::Layer {
                    root: self.root.clone(),
                    source,
                }
            })?;
        }
        let meta_path = tmp.path.join("meta.jsonl");
        meta.save(&meta_path).map_err(|source| UnpackError::Layer {
            root: self.root.clone(),
            source,
        })?;
        self.mark_or_sync(&tmp.path)?;
        Ok(tmp)
    }

    /// Marks the scratch tree directory `dir` unsynced (see `unsynced`), or
    /// syncs its filesystem where there is no boot id to mark it with.
    pub(super) fn mark_or_sync(&self, dir: &Path) -> Result<(), StoreError> {
        if unsynced::mark(dir).map_err(|e| self.io(format!("mark {}", dir.display()), e))? {
            return Ok(());
        }
        let fd = sfs::open_root(dir).map_err(|e| self.io(format!("open {}", dir.display()), e))?;
        sfs::sync_filesystem(fd.as_fd())
            .map_err(|e| self.io(format!("syncfs {}", dir.display()), e))
    }
}

fn nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// The loser of a rename race keeps the winner's tree and leaves no
    /// scratch behind.
    #[test]
    fn rename_loser_discards_its_tree() {
        let root = tempfile::tempdir().unwrap();
        let store = Store::open(root.path()).unwrap();
        let (blob, _) = store.put_bytes(&[0u8; 1024]).unwrap();
        let layer = LayerSource {
            blob,
            diff_id: Digest::of_bytes(&[0u8; 1024]),
        };
        let dir = store.unpacked_dir(&layer.diff_id, Mode::Flatten);
        fs::create_dir_all(dir.join("rootfs")).unwrap();
        fs::write(dir.join("rootfs/winner"), "w").unwrap();
        let tmp = store
            .unpack_into_temp(std::slice::from_ref(&layer), &[], Mode::Flatten)
            .unwrap();
        assert!(!store.commit_tree(tmp, &dir).unwrap());
        assert!(dir.join("rootfs/winner").is_file());
        assert_eq!(fs::read_dir(store.tmp_dir()).unwrap().count(), 0);
    }

    /// A tree published unsynced in another boot is unpacked again; one of
    /// this boot is reused as it is.
    #[test]
    fn a_tree_unsynced_before_a_restart_is_unpacked_again() {
        let root = tempfile::tempdir().unwrap();
        let store = Store::open(root.path()).unwrap();
        let mut tar = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_size(2);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut h, "f", &b"hi"[..]).unwrap();
        let bytes = tar.into_inner().unwrap();
        let (blob, _) = store.put_bytes(&bytes).unwrap();
        let layer = LayerSource {
            blob,
            diff_id: Digest::of_bytes(&bytes),
        };
        let mode = Mode::OverlayLower(OverlayXattrs::User);
        let first = store
            .ensure_unpacked(std::slice::from_ref(&layer), mode)
            .unwrap();
        assert!(first[0].fresh);
        let dir = first[0].rootfs.parent().unwrap().to_path_buf();
        assert!(unsynced::is_marked(&dir), "published without syncfs");
        let again = store
            .ensure_unpacked(std::slice::from_ref(&layer), mode)
            .unwrap();
        assert!(!again[0].fresh, "same boot: reused");

        // As if the machine had restarted before the data reached the disk.
        let marker = fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .find(|e| e.file_name().to_string_lossy().starts_with("unsynced-"))
            .unwrap();
        fs::rename(
            marker.path(),
            dir.join("unsynced-00000000-0000-0000-0000-000000000000"),
        )
        .unwrap();
        fs::write(dir.join("rootfs/f"), "").unwrap();
        let redone = store
            .ensure_unpacked(std::slice::from_ref(&layer), mode)
            .unwrap();
        assert!(redone[0].fresh, "another boot's tree is not trusted");
        assert_eq!(fs::read(dir.join("rootfs/f")).unwrap(), b"hi");
        assert!(unsynced::is_marked(&dir));
        assert_eq!(fs::read_dir(store.tmp_dir()).unwrap().count(), 0);
    }

    #[test]
    fn chain_id_formula() {
        let a = Digest::of_bytes(b"a");
        let b = Digest::of_bytes(b"b");
        let chains = chain_ids(&[a.clone(), b.clone()]);
        assert_eq!(chains[0], a);
        assert_eq!(chains[1], Digest::of_bytes(format!("{a} {b}").as_bytes()));
        assert!(chain_ids(&[]).is_empty());
    }
}
