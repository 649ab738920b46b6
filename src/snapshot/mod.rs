//! Snapshotters: a writable root over unpacked layers for one step, and the
//! list of what the step changed (see `changes` for the contract with the
//! layer writer).
//!
//! Three implementations behind one [`Snapshotter`] trait, picked by
//! [`choose`]:
//! - [`SnapshotterKind::Overlay`]: kernel overlayfs mounted inside the
//!   sandbox's user namespace with `userxattr` (Linux ≥ 5.11). The change list
//!   comes from the upper dir alone.
//! - [`SnapshotterKind::FuseOverlay`]: fuse-overlayfs started inside the
//!   sandbox (needs `/dev/fuse` read-write), same upper-dir diff with its own
//!   bookkeeping names understood.
//! - [`SnapshotterKind::Walk`]: a copy of the merged lowers (reflinked when
//!   the filesystem can) and a stat-only comparison afterwards. The copy is
//!   kept in the store per chain id and reverted after each step
//!   (`walk_cache`), so a step costs two stat walks, not a copy.
//!
//! All three give the same change list for the same step (the conformance
//! tests check it), so the layers they produce are byte-identical. The shared
//! rules (`upper.rs`, `walk.rs`):
//! - a non-directory is listed when it is new or changed (any of size,
//!   mtime, ctime, mode, owner, inode, link count for the walk; being in the
//!   upper dir for the overlays);
//! - a directory is listed when it is new, or its mode, owner or xattrs
//!   differ from what the lowers had. Its mtime is ignored, as BuildKit's
//!   differs do: it changes whenever an entry is added or removed (including
//!   by the sandbox's own mount points), and the writer emits a parent
//!   anyway when a listed child needs it;
//! - a directory that replaces something the lowers had (a file, or a
//!   directory removed and made again) is `OpaqueDir`;
//! - only the top-most removed path is a `Delete` (an `rm -r dir` is one
//!   whiteout), and nothing under a replaced or opaque directory is deleted;
//! - snapshotter bookkeeping (`*.overlay.*`, `user.fuseoverlayfs.*` xattrs,
//!   fuse-overlayfs's `.wh..wh..opq`/`.wh..opq` files) never becomes a change,
//!   and paths in `exclude` (mount points the sandbox created) are left out.

pub mod changes;
mod choose;
mod error;
pub(crate) mod fsutil;
pub mod lower;
mod overlay;
mod upper;
mod walk;
mod walk_cache;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

pub use changes::{Change, ChangeKind, ChangeList};
pub use choose::{choose, choose_for, probe};
pub use error::SnapshotError;
pub use walk::copy_tree;

use crate::exec::RootFs;

/// Which snapshotter (`--snapshotter`).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum SnapshotterKind {
    /// Kernel overlayfs in the user namespace (`userxattr`).
    Overlay,
    /// fuse-overlayfs inside the sandbox.
    FuseOverlay,
    /// Copy the merged lowers, compare stat metadata afterwards.
    Walk,
}

impl SnapshotterKind {
    /// Every kind, in the order [`choose`] prefers them.
    pub const ALL: [SnapshotterKind; 3] = [
        SnapshotterKind::Overlay,
        SnapshotterKind::FuseOverlay,
        SnapshotterKind::Walk,
    ];
}

impl fmt::Display for SnapshotterKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SnapshotterKind::Overlay => "overlay",
            SnapshotterKind::FuseOverlay => "fuse-overlayfs",
            SnapshotterKind::Walk => "walk",
        })
    }
}

impl FromStr for SnapshotterKind {
    type Err = String;
    fn from_str(s: &str) -> Result<SnapshotterKind, String> {
        match s {
            "overlay" | "overlayfs" => Ok(SnapshotterKind::Overlay),
            "fuse-overlayfs" | "fuse" => Ok(SnapshotterKind::FuseOverlay),
            "walk" => Ok(SnapshotterKind::Walk),
            other => Err(format!(
                "unknown snapshotter {other:?} (overlay, fuse-overlayfs, walk)"
            )),
        }
    }
}

/// Makes a writable root for one step over unpacked layers.
pub trait Snapshotter: Send + Sync {
    fn kind(&self) -> SnapshotterKind;
    /// `lowers`: the image's unpacked layer dirs as
    /// `Store::ensure_unpacked(.., Mode::OverlayLower(..))` gives them,
    /// TOP-MOST FIRST (may be empty: `FROM scratch`). `work`: an empty
    /// private directory for this step, on the store's filesystem; the
    /// snapshot lives in it (remove it when done). The lowers are never
    /// written to.
    fn prepare(&self, lowers: &[PathBuf], work: &Path) -> Result<Snapshot, SnapshotError>;
}

/// The snapshotter of `kind` (no probing: see [`choose`]).
pub fn snapshotter(kind: SnapshotterKind) -> Box<dyn Snapshotter> {
    match kind {
        SnapshotterKind::Overlay => Box::new(overlay::KernelOverlay),
        SnapshotterKind::FuseOverlay => Box::new(overlay::FuseOverlay::default()),
        SnapshotterKind::Walk => Box::new(walk::Walk),
    }
}

/// Removes a step's `work` directory and everything in it, including what
/// a non-root owner cannot remove as is (overlayfs's mode-0 `work/work`,
/// read-only directories the step or the lowers left). Symlinks are not
/// followed. Call after the sandbox ended (its mounts are gone with it).
pub fn remove_work(work: &Path) -> Result<(), SnapshotError> {
    if std::fs::symlink_metadata(work).is_err() {
        return Ok(());
    }
    walk::make_writable(work)?;
    std::fs::remove_dir_all(work).map_err(error::io_err("remove", work))
}

/// One step's writable root, from [`Snapshotter::prepare`].
///
/// Keep it alive until the layer is written: [`ChangeList::source`] points
/// into it, and dropping a walk snapshot over the store's cached tree
/// reverts the step's changes there (see `walk_cache`). Serializable, so
/// that another process (kiln's user-namespace helper) can list its
/// changes; the copy there holds no lease on a cached tree.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Snapshot {
    kind: SnapshotterKind,
    rootfs: RootFs,
    state: State,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
enum State {
    /// An overlay: what changed is in `upper`.
    Upper {
        upper: PathBuf,
        lowers: Vec<PathBuf>,
        format: upper::Format,
    },
    /// A copied (or cached) tree and its stat index from before the step.
    Walk(walk::WalkState),
}

impl Snapshot {
    pub fn kind(&self) -> SnapshotterKind {
        self.kind
    }

    /// The root filesystem to put into `ProcessSpec::rootfs`.
    pub fn rootfs(&self) -> RootFs {
        self.rootfs.clone()
    }

    /// Where the new content of changed paths is (`ChangeList::source`).
    pub fn source(&self) -> &Path {
        match &self.state {
            State::Upper { upper, .. } => upper,
            State::Walk(w) => &w.tree,
        }
    }

    /// Makes the walk's before-index read as `stat` shows owners in
    /// another user namespace (`uid`/`gid`: this namespace's id → that
    /// one's), for listing the changes from there. The overlays compare
    /// nothing recorded earlier, so only the walk needs it.
    pub fn map_owners(&mut self, uid: impl Fn(u32) -> u32, gid: impl Fn(u32) -> u32) {
        if let State::Walk(w) = &mut self.state {
            walk::map_owners(&mut w.before, uid, gid);
        }
    }

    /// What the step changed, after it ended. `exclude`: container paths
    /// (`/etc/hosts`, leading `/` optional) the sandbox created as mount
    /// points (`RunOutcome::created`), left out of the list. Reads only the
    /// upper dir (overlays; the lowers are looked up only for directories
    /// found there) or stats the tree (walk); never reads file contents.
    pub fn changes(&self, exclude: &[String]) -> Result<ChangeList, SnapshotError> {
        let mut list = match &self.state {
            State::Upper {
                upper,
                lowers,
                format,
            } => upper::changes(upper, lowers, *format)?,
            State::Walk(w) => w.changes()?,
        };
        let exclude: Vec<&str> = exclude
            .iter()
            .map(|p| p.trim_start_matches('/').trim_end_matches('/'))
            .collect();
        list.retain(|c| !exclude.contains(&c.path.as_str()));
        list.sort_by(|a, b| a.path.as_bytes().cmp(b.path.as_bytes()));
        Ok(ChangeList {
            source: self.source().to_path_buf(),
            changes: list,
        })
    }
}
