//! The staging tree a COPY builds before it becomes a layer: a private
//! directory holding exactly the layer's paths. Nothing can be chowned
//! rootless, so every path's intended owner and mode also goes into a
//! `layer::Metadata` record the writer applies (see `layer::write`).
//!
//! Parent directories follow BuildKit's layers: one that exists in the
//! target image is carried with the target's mode, owner and mtime, except
//! that a directory the copy writes an entry into gets the copy's time (the
//! kernel updates it when BuildKit writes there); one that does not exist
//! is created 0755, owned by the `--chown` user (0:0 without it), with the
//! copy's time.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::OsStr;
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use super::image_tree::ImageTree;
use super::tree::{Node, NodeKind, Tree};
use super::{CopyError, Target};
use crate::layer::{write_layer, IdMapping, Kind, Metadata, Record, WriteOptions, WrittenLayer};
use crate::snapshot::changes::{Change, ChangeKind, ChangeList};
use crate::store::Store;
use crate::sys::fs as sfs;

/// Owner, mode and mtime an entry gets in the layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Meta {
    pub(super) uid: u64,
    pub(super) gid: u64,
    pub(super) mode: u32,
    pub(super) mtime: (i64, u32),
}

pub(super) struct Stage<'a> {
    dir: tempfile::TempDir,
    root: OwnedFd,
    target: ImageTree<'a>,
    staged: BTreeMap<String, (Kind, Meta)>,
    /// Staged directories carried over from the target unchanged.
    implied: BTreeSet<String>,
    /// Source `(dev, ino)` → the staged path holding that content.
    links: HashMap<(u64, u64), String>,
    now: (i64, u32),
    /// Owner of directories the copy creates.
    parent_owner: (u64, u64),
}

fn split(rel: &str) -> (&str, &str) {
    rel.rsplit_once('/').unwrap_or(("", rel))
}

impl<'a> Stage<'a> {
    pub(super) fn new(
        store: &Store,
        target: &'a Target,
        parent_owner: (u64, u64),
    ) -> Result<Stage<'a>, CopyError> {
        let tmp = store.root().join("tmp");
        let dir = tempfile::Builder::new()
            .prefix("copy-")
            .tempdir_in(&tmp)
            .map_err(CopyError::stage(
                "create staging dir in",
                tmp.display().to_string(),
            ))?;
        let root = sfs::open_root(dir.path())
            .map_err(CopyError::stage("open", dir.path().display().to_string()))?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| (i64::try_from(d.as_secs()).unwrap_or(0), d.subsec_nanos()))
            .unwrap_or((0, 0));
        Ok(Stage {
            dir,
            root,
            target: ImageTree::new(&target.lowers, &target.recorded),
            staged: BTreeMap::new(),
            implied: BTreeSet::new(),
            links: HashMap::new(),
            now,
            parent_owner,
        })
    }

    pub(super) fn now(&self) -> (i64, u32) {
        self.now
    }

    /// What the layer will have at `rel` so far: staged, else the target's.
    pub(super) fn kind_at(&self, rel: &str) -> Result<Option<NodeKind>, CopyError> {
        if let Some((k, _)) = self.staged.get(rel) {
            return Ok(Some(match k {
                Kind::Dir => NodeKind::Dir,
                Kind::File => NodeKind::File,
                _ => NodeKind::Other,
            }));
        }
        Ok(self.target.lstat(rel)?.map(|n| n.kind))
    }

    fn dir_fd(&self, rel: &str) -> Result<OwnedFd, CopyError> {
        sfs::open_dir_no_symlinks(self.root.as_fd(), Path::new(rel))
            .map_err(CopyError::stage("open directory", rel))
    }

    /// An entry is written into its parent: a target directory's mtime
    /// moves (BuildKit's copy replaces existing files too, so it moves then
    /// as well).
    fn touched(&mut self, rel: &str) -> Result<(), CopyError> {
        let (parent, _) = split(rel);
        if self.implied.contains(parent) {
            if let Some((_, meta)) = self.staged.get_mut(parent) {
                meta.mtime = self.now;
            }
        }
        Ok(())
    }

    /// Makes `rel` and its parents directories of the layer.
    pub(super) fn ensure_dir(&mut self, rel: &str) -> Result<(), CopyError> {
        if rel.is_empty() {
            return Ok(());
        }
        if let Some((k, _)) = self.staged.get(rel) {
            return if *k == Kind::Dir {
                Ok(())
            } else {
                Err(not_dir(rel))
            };
        }
        let (parent, name) = split(rel);
        self.ensure_dir(parent)?;
        let existing = self.target.lstat(rel)?;
        let created = existing.is_none();
        let meta = match existing {
            Some(n) if n.is_dir() => {
                self.implied.insert(rel.to_string());
                Meta {
                    uid: n.uid,
                    gid: n.gid,
                    mode: n.mode,
                    mtime: n.mtime,
                }
            }
            Some(_) => return Err(not_dir(rel)),
            None => Meta {
                uid: self.parent_owner.0,
                gid: self.parent_owner.1,
                mode: 0o755,
                mtime: self.now,
            },
        };
        sfs::mkdir_at(self.dir_fd(parent)?.as_fd(), OsStr::new(name), 0o700)
            .map_err(CopyError::stage("mkdir", rel))?;
        self.staged.insert(rel.to_string(), (Kind::Dir, meta));
        // A target directory only passed through is not written into.
        if created {
            self.touched(rel)?;
        }
        Ok(())
    }

    /// A directory with its own metadata (a copied directory).
    pub(super) fn put_dir(&mut self, rel: &str, meta: Meta) -> Result<(), CopyError> {
        if rel.is_empty() {
            return Ok(());
        }
        if !self.staged.contains_key(rel) {
            if let Some(n) = self.target.lstat(rel)? {
                if !n.is_dir() {
                    return Err(CopyError::BadDest {
                        path: format!("/{rel}"),
                        reason: "cannot copy a directory over a non-directory".into(),
                    });
                }
            }
        }
        self.ensure_dir(rel)?;
        self.implied.remove(rel);
        if let Some((_, m)) = self.staged.get_mut(rel) {
            *m = meta;
        }
        Ok(())
    }

    /// Prepares `rel` for a non-directory: parents exist, nothing in the way.
    fn make_room(&mut self, rel: &str) -> Result<OwnedFd, CopyError> {
        let (parent, name) = split(rel);
        self.ensure_dir(parent)?;
        let fd = self.dir_fd(parent)?;
        match self.staged.get(rel) {
            Some((Kind::Dir, _)) => return Err(over_dir(rel)),
            Some(_) => {
                sfs::remove_at(fd.as_fd(), OsStr::new(name))
                    .map_err(CopyError::stage("remove", rel))?;
                self.staged.remove(rel);
            }
            None => {
                if self.target.lstat(rel)?.is_some_and(|n| n.is_dir()) {
                    return Err(over_dir(rel));
                }
            }
        }
        Ok(fd)
    }

    /// Generic so that a `File` source gets `io::copy`'s in-kernel copy.
    pub(super) fn put_file<R: Read + ?Sized>(
        &mut self,
        rel: &str,
        meta: Meta,
        content: &mut R,
        link_key: Option<(u64, u64)>,
    ) -> Result<(), CopyError> {
        let fd = self.make_room(rel)?;
        let name = OsStr::new(split(rel).1);
        if let Some(first) = link_key.and_then(|k| self.links.get(&k)).cloned() {
            if self
                .staged
                .get(&first)
                .is_some_and(|(k, _)| *k == Kind::File)
            {
                let (fp, fname) = split(&first);
                sfs::hardlink_at(
                    self.dir_fd(fp)?.as_fd(),
                    OsStr::new(fname),
                    fd.as_fd(),
                    name,
                )
                .map_err(CopyError::stage("link", rel))?;
                self.staged.insert(rel.to_string(), (Kind::File, meta));
                return self.touched(rel);
            }
        }
        let mut file =
            sfs::create_file(fd.as_fd(), name).map_err(CopyError::stage("create", rel))?;
        io::copy(content, &mut file).map_err(CopyError::stage("write", rel))?;
        if let Some(k) = link_key {
            self.links.insert(k, rel.to_string());
        }
        self.staged.insert(rel.to_string(), (Kind::File, meta));
        self.touched(rel)
    }

    pub(super) fn put_symlink(
        &mut self,
        rel: &str,
        meta: Meta,
        target: &str,
    ) -> Result<(), CopyError> {
        let fd = self.make_room(rel)?;
        sfs::symlink_at(OsStr::new(target), fd.as_fd(), OsStr::new(split(rel).1))
            .map_err(CopyError::stage("symlink", rel))?;
        let meta = Meta {
            mode: 0o777,
            ..meta
        };
        self.staged.insert(rel.to_string(), (Kind::Symlink, meta));
        self.touched(rel)
    }

    /// A hardlink to `to`, a file this copy staged earlier (tar archives).
    pub(super) fn put_hardlink(&mut self, rel: &str, to: &str) -> Result<(), CopyError> {
        let Some((Kind::File, meta)) = self.staged.get(to).copied() else {
            return Err(CopyError::BadSource {
                path: rel.to_string(),
                reason: format!("hardlink to {to:?}, which is not a file of this copy"),
            });
        };
        let fd = self.make_room(rel)?;
        let (tp, tname) = split(to);
        sfs::hardlink_at(
            self.dir_fd(tp)?.as_fd(),
            OsStr::new(tname),
            fd.as_fd(),
            OsStr::new(split(rel).1),
        )
        .map_err(CopyError::stage("link", rel))?;
        self.staged.insert(rel.to_string(), (Kind::File, meta));
        self.touched(rel)
    }

    /// Copies one source node (not a directory) to `rel`.
    pub(super) fn put_node(
        &mut self,
        tree: &dyn Tree,
        node: &Node,
        rel: &str,
        meta: Meta,
    ) -> Result<(), CopyError> {
        match &node.kind {
            NodeKind::File => {
                let mut f = tree.open(node)?;
                self.put_file(rel, meta, &mut f, node.link_key)
            }
            NodeKind::Symlink(t) => self.put_symlink(rel, meta, t),
            NodeKind::Dir => self.put_dir(rel, meta),
            NodeKind::Other => {
                tracing::warn!(path = %node.rel, "COPY skips a fifo, socket or device");
                Ok(())
            }
        }
    }

    /// Sets modes and times on disk, then writes the layer.
    pub(super) fn finish(
        self,
        store: &Store,
        source_date_epoch: Option<i64>,
    ) -> Result<WrittenLayer, CopyError> {
        let (uid, gid) = sfs::effective_ids();
        if uid != 0 {
            unreadable_modes(&self.staged)?;
        }
        let mut metadata = Metadata::default();
        let base = self.dir.path();
        // Deepest first: a directory's time is set after its children.
        for (rel, (kind, meta)) in self.staged.iter().rev() {
            let path = base.join(rel);
            if *kind != Kind::Symlink {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(meta.mode))
                    .map_err(CopyError::stage("chmod", rel.as_str()))?;
            }
            sfs::set_times_at(
                rustix::fs::CWD,
                path.as_os_str(),
                meta.mtime.0,
                i64::from(meta.mtime.1),
            )
            .map_err(CopyError::stage("set times of", rel.as_str()))?;
            metadata.insert(Record {
                path: rel.clone(),
                kind: *kind,
                uid: meta.uid,
                gid: meta.gid,
                mode: meta.mode,
                rdev: None,
                xattrs: BTreeMap::new(),
            });
        }
        let changes = ChangeList {
            source: base.to_path_buf(),
            changes: self
                .staged
                .keys()
                .map(|p| Change {
                    path: p.clone(),
                    kind: ChangeKind::Upsert,
                })
                .collect(),
        };
        let opts = WriteOptions {
            source_date_epoch,
            ids: IdMapping::single(uid, gid),
            recorded: vec![metadata],
            ..WriteOptions::default()
        };
        Ok(write_layer(store, &changes, &opts)?)
    }
}

impl Drop for Stage<'_> {
    /// Gives the owner write access to every staged directory again, so
    /// the staging tree can be removed unprivileged after `--chmod=555`.
    fn drop(&mut self) {
        use std::os::unix::fs::PermissionsExt;
        for (rel, (kind, _)) in &self.staged {
            if *kind == Kind::Dir {
                let path = self.dir.path().join(rel);
                // Best effort: a failure leaves a stale dir in the store's
                // tmp, which `store check` reports.
                let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700));
            }
        }
    }
}

/// The layer writer reads the staged tree back with the modes it must
/// carry, so an unprivileged process cannot write a directory it may not
/// list or a file it may not read (`--chmod=640` on a directory).
fn unreadable_modes(staged: &BTreeMap<String, (Kind, Meta)>) -> Result<(), CopyError> {
    for (rel, (kind, meta)) in staged {
        let need = match kind {
            Kind::Dir => 0o500,
            Kind::File => 0o400,
            _ => continue,
        };
        if meta.mode & need != need {
            return Err(CopyError::Unsupported {
                path: format!("/{rel}"),
                reason: format!(
                    "mode {:04o} leaves its owner unable to read it, which a rootless build \
                     cannot write into a layer yet",
                    meta.mode
                ),
            });
        }
    }
    Ok(())
}

fn not_dir(rel: &str) -> CopyError {
    CopyError::BadDest {
        path: format!("/{rel}"),
        reason: "not a directory".into(),
    }
}

fn over_dir(rel: &str) -> CopyError {
    CopyError::BadDest {
        path: format!("/{rel}"),
        reason: "cannot overwrite a directory with a non-directory".into(),
    }
}
