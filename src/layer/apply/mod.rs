//! Applying tar entries under a root, one at a time, through `sys::fs`.

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use tar::EntryType;

mod attrs;
mod dirs;
mod lowers;
mod whiteouts;

use super::entry_path::{marker, Marker, RelPath};
use super::metadata::{Kind, Record};
use super::unpack::{Mode, OverlayXattrs, UnpackOptions, WhiteoutFormat};
use super::{LayerError, Metadata};
use crate::sys::fs as sfs;

/// A directory whose mode and times are set after the layer's last entry
/// (earlier, a read-only mode would block its children, and every child
/// created would bump its mtime).
struct DeferredDir {
    path: RelPath,
    mode: u32,
    mtime: (i64, i64),
}

pub(crate) struct Stats {
    pub entries: u64,
    pub whiteouts: Option<WhiteoutFormat>,
}

pub(crate) struct Unpacker<'a> {
    layer: String,
    mode: Mode,
    root: OwnedFd,
    /// `OverlayLower`: the earlier layers' directories, topmost first.
    lowers: Vec<OwnedFd>,
    meta: &'a mut Metadata,
    ids: (u32, u32),
    /// uid 0 (in whatever user namespace): chown, mknod and trusted.* xattrs
    /// are worth trying.
    privileged: bool,
    /// Paths this layer created: whiteouts and opaque markers only hide
    /// lower content (OCI image spec, "Whiteouts"). Kept as 128-bit hashes
    /// of the path so a layer of a million files costs ~40 MB less than
    /// keeping the paths themselves.
    created: HashSet<[u8; 16]>,
    deferred: Vec<DeferredDir>,
    /// Owned directories from earlier layers that were not writable and got
    /// `u+wx` for this layer (unprivileged only): put back at the end.
    restore: Vec<DeferredDir>,
    /// The last parent directory used; layers are sorted, so most entries
    /// share it. Dropped whenever anything is removed or a symlink appears.
    cache: Option<(RelPath, OwnedFd)>,
    stats: Stats,
}

fn errno(e: &io::Error) -> i32 {
    e.raw_os_error().unwrap_or(0)
}

const ENOENT: i32 = 2;
const ENOTDIR: i32 = 20;
const EEXIST: i32 = 17;
const EPERM: i32 = 1;
const EACCES: i32 = 13;

impl<'a> Unpacker<'a> {
    pub(crate) fn new(
        root: &Path,
        opts: &UnpackOptions,
        meta: &'a mut Metadata,
    ) -> Result<Unpacker<'a>, LayerError> {
        let root_fd = sfs::open_root(root).map_err(|source| LayerError::Root {
            layer: opts.layer.clone(),
            root: root.to_path_buf(),
            source,
        })?;
        let mut lowers = Vec::new();
        if let Mode::OverlayLower(_) = opts.mode {
            for l in &opts.lowers {
                lowers.push(sfs::open_root(l).map_err(|source| LayerError::Root {
                    layer: opts.layer.clone(),
                    root: l.clone(),
                    source,
                })?);
            }
        }
        let ids = sfs::effective_ids();
        Ok(Unpacker {
            layer: opts.layer.clone(),
            mode: opts.mode,
            root: root_fd,
            lowers,
            meta,
            ids,
            privileged: ids.0 == 0,
            created: HashSet::new(),
            deferred: Vec::new(),
            restore: Vec::new(),
            cache: None,
            stats: Stats {
                entries: 0,
                whiteouts: None,
            },
        })
    }

    fn refuse(&self, entry: &str, reason: impl Into<String>) -> LayerError {
        LayerError::Unsafe {
            layer: self.layer.clone(),
            entry: entry.to_string(),
            reason: reason.into(),
        }
    }

    fn io_err(&self, entry: &str, what: impl Into<String>, source: io::Error) -> LayerError {
        if sfs::is_escape(&source) {
            return self.refuse(
                entry,
                format!(
                    "{}: resolves outside the root or through a symlink ({source})",
                    what.into()
                ),
            );
        }
        LayerError::Entry {
            layer: self.layer.clone(),
            entry: entry.to_string(),
            what: what.into(),
            source,
        }
    }

    /// Applies one tar entry.
    pub(crate) fn apply<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
    ) -> Result<(), LayerError> {
        let kind = entry.header().entry_type();
        if super::is_header_only(kind) {
            return Ok(());
        }
        let raw_name = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw_name).into_owned();
        let path = RelPath::parse(&raw_name).map_err(|r| self.refuse(&shown, r))?;
        self.stats.entries += 1;
        let Some((parent, name)) = path.split_last() else {
            // `./`: the root's own attributes.
            if kind == EntryType::Directory {
                let attrs = self.attrs(entry, &shown)?;
                self.deferred.push(DeferredDir {
                    path,
                    mode: attrs.mode,
                    mtime: attrs.mtime,
                });
            }
            return Ok(());
        };
        let name = name.to_os_string();
        match marker(&name).map_err(|r| self.refuse(&shown, r))? {
            Marker::AufsMeta => Ok(()),
            Marker::Opaque => self.opaque(&parent, &shown),
            Marker::Whiteout(target) => self.whiteout(&parent, target, &shown),
            Marker::None => self.create(entry, kind, &path, &parent, &name, &shown),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn create<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        kind: EntryType,
        path: &RelPath,
        dir: &RelPath,
        name: &OsStr,
        shown: &str,
    ) -> Result<(), LayerError> {
        let attrs = self.attrs(entry, shown)?;
        let link_target = match kind {
            EntryType::Link | EntryType::Symlink => Some(
                entry
                    .link_name_bytes()
                    .map(|l| l.into_owned())
                    .ok_or_else(|| self.refuse(shown, "link without a target"))?,
            ),
            _ => None,
        };
        // Hardlink targets are checked before anything is touched.
        let hard_target = match (kind, &link_target) {
            (EntryType::Link, Some(t)) => {
                let t = RelPath::parse(t)
                    .map_err(|r| self.refuse(shown, format!("hardlink target: {r}")))?;
                if t == *path {
                    return Ok(());
                }
                Some(t)
            }
            _ => None,
        };
        let parent = self.parent_dir(dir, shown)?;
        let existing =
            sfs::lstat_at(parent.as_fd(), name).map_err(|e| self.io_err(shown, "stat", e))?;
        let mut was_whiteout = false;
        // Merge into an existing directory; replace anything else.
        let merge_dir = kind == EntryType::Directory && existing.as_ref().is_some_and(sfs::is_dir);
        if let Some(st) = existing.filter(|_| !merge_dir) {
            was_whiteout = sfs::is_whiteout_device(&st);
            self.remove(dir, name, shown)?;
        }
        self.meta.remove_tree(&path.display());
        self.created.insert(path.key());
        drop(parent);
        let parent = self.parent_dir(dir, shown)?;
        let parent = parent.as_fd();
        match kind {
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                let mut f = sfs::create_file(parent, name)
                    .map_err(|e| self.io_err(shown, "create file", e))?;
                io::copy(entry, &mut f).map_err(|e| self.io_err(shown, "write file", e))?;
                self.finish_file(&f, path, &attrs, shown)
            }
            EntryType::Directory => {
                if !merge_dir {
                    sfs::mkdir_at(parent, name, 0o700)
                        .map_err(|e| self.io_err(shown, "create directory", e))?;
                }
                let fd = sfs::open_child_dir(parent, name)
                    .map_err(|e| self.io_err(shown, "open directory", e))?;
                if let (true, Mode::OverlayLower(ns)) = (was_whiteout, self.mode) {
                    // A directory recreated over a deleted one must not merge
                    // with the lower copy.
                    self.set_opaque(fd.as_fd(), ns, shown)?;
                }
                let mut rec = self.record(path, Kind::Dir, &attrs);
                let mut needed = self.set_xattrs_fd(fd.as_fd(), &attrs, &mut rec);
                needed |= self.set_owner(|u, g| sfs::chown_fd(fd.as_fd(), u, g), &attrs);
                if needed {
                    self.meta.insert(rec);
                }
                self.deferred.push(DeferredDir {
                    path: path.clone(),
                    mode: attrs.mode,
                    mtime: attrs.mtime,
                });
                Ok(())
            }
            EntryType::Symlink => {
                let target = link_target.unwrap_or_default();
                sfs::symlink_at(OsStr::from_bytes(&target), parent, name)
                    .map_err(|e| self.io_err(shown, "create symlink", e))?;
                self.cache = None;
                self.finish_at(parent, name, path, Kind::Symlink, &attrs, None, shown)
            }
            EntryType::Link => {
                let Some(t) = hard_target else { return Ok(()) };
                self.hardlink(parent, name, path, &t, shown)
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let (special, kind) = match kind {
                    EntryType::Char => (sfs::Special::Char, Kind::Char),
                    EntryType::Block => (sfs::Special::Block, Kind::Block),
                    _ => (sfs::Special::Fifo, Kind::Fifo),
                };
                let h = entry.header();
                let major = h.device_major().ok().flatten().unwrap_or(0);
                let minor = h.device_minor().ok().flatten().unwrap_or(0);
                let rdev = (special != sfs::Special::Fifo).then_some((major, minor));
                match sfs::mknod_at(parent, name, special, major, minor) {
                    Ok(()) => self.finish_at(parent, name, path, kind, &attrs, rdev, shown),
                    Err(e)
                        if special != sfs::Special::Fifo && matches!(errno(&e), EPERM | EACCES) =>
                    {
                        // Not created: kept as metadata only.
                        let mut rec = self.record(path, kind, &attrs);
                        rec.rdev = rdev;
                        for (k, v) in &attrs.xattrs {
                            rec.add_xattr(&k.to_string_lossy(), v);
                        }
                        self.meta.insert(rec);
                        Ok(())
                    }
                    Err(e) => Err(self.io_err(shown, "create device", e)),
                }
            }
            other => {
                tracing::warn!(layer = %self.layer, entry = shown, kind = ?other, "skipping tar entry of unsupported type");
                Ok(())
            }
        }
    }

    /// Links `parent/name` to the existing non-directory `target`, found
    /// under the root without following any symlink.
    fn hardlink(
        &mut self,
        parent: BorrowedFd<'_>,
        name: &OsStr,
        path: &RelPath,
        target: &RelPath,
        shown: &str,
    ) -> Result<(), LayerError> {
        let Some((tdir, tname)) = target.split_last() else {
            return Err(self.refuse(shown, "hardlink to the root directory"));
        };
        let escape = |e: &io::Error| {
            sfs::is_escape(e).then(|| {
                self.refuse(
                    shown,
                    format!(
                        "hardlink target {:?} is reached through a symlink",
                        target.display()
                    ),
                )
            })
        };
        // In this layer's tree first (always, in Flatten mode: the whole
        // root), then in the lower layers' merged view.
        let here = match sfs::open_dir_no_symlinks(self.root.as_fd(), &tdir.to_path()) {
            Ok(fd) => match sfs::lstat_at(fd.as_fd(), tname) {
                Ok(Some(st)) => Some((fd, st)),
                Ok(None) => None,
                Err(e) => return Err(self.io_err(shown, "stat hardlink target", e)),
            },
            Err(e) if matches!(errno(&e), ENOENT | ENOTDIR) => None,
            Err(e) => {
                return Err(escape(&e).unwrap_or_else(|| {
                    self.io_err(
                        shown,
                        format!("open hardlink target {:?}", target.display()),
                        e,
                    )
                }))
            }
        };
        let (tparent, st) = match here {
            Some(found) => found,
            None => match self
                .lower_lookup(target)
                .map_err(|e| self.io_err(shown, "look up earlier layers", e))?
            {
                lowers::Lower::Found { layer, st } => {
                    let fd = sfs::open_dir_no_symlinks(self.lowers[layer].as_fd(), &tdir.to_path())
                        .map_err(|e| {
                            escape(&e).unwrap_or_else(|| {
                                self.io_err(shown, "open hardlink target in an earlier layer", e)
                            })
                        })?;
                    (fd, st)
                }
                lowers::Lower::Blocked { .. } => {
                    return Err(self.refuse(
                        shown,
                        format!(
                            "hardlink target {:?} is reached through a symlink",
                            target.display()
                        ),
                    ))
                }
                lowers::Lower::Absent => {
                    return Err(self.io_err(
                        shown,
                        format!("hardlink target {:?}", target.display()),
                        io::Error::from_raw_os_error(ENOENT),
                    ))
                }
            },
        };
        if sfs::is_dir(&st) {
            return Err(self.refuse(shown, "hardlink to a directory"));
        }
        sfs::hardlink_at(tparent.as_fd(), tname, parent, name).map_err(|e| LayerError::Entry {
            layer: self.layer.clone(),
            entry: shown.to_string(),
            what: format!("link to {:?}", target.display()),
            source: e,
        })?;
        // The name shares the target's inode and so its metadata record.
        if let Some(rec) = self.meta.get(&target.display()).cloned() {
            self.meta.insert(Record {
                path: path.display(),
                ..rec
            });
        }
        Ok(())
    }

    /// Sets deferred directory modes and times, deepest first. A directory
    /// that a later entry replaced (or that is now reached through a symlink)
    /// is skipped.
    pub(crate) fn finish(mut self) -> Result<Stats, LayerError> {
        self.cache = None;
        let mut restore = std::mem::take(&mut self.restore);
        restore.sort_by_key(|d| std::cmp::Reverse(d.path.depth()));
        let mut dirs = std::mem::take(&mut self.deferred);
        dirs.sort_by_key(|d| std::cmp::Reverse(d.path.depth()));
        // Modes set by this layer's own entries win over restored ones.
        for d in restore.into_iter().chain(dirs) {
            let shown = d.path.display();
            let fd = match sfs::open_dir_no_symlinks(self.root.as_fd(), &d.path.to_path()) {
                Ok(fd) => fd,
                Err(e) => {
                    tracing::debug!(layer = %self.layer, dir = %shown, error = %e, "directory gone before its mode was set");
                    continue;
                }
            };
            sfs::chmod_fd(fd.as_fd(), d.mode).map_err(|e| self.io_err(&shown, "chmod", e))?;
            let st = sfs::fstat(fd.as_fd()).map_err(|e| self.io_err(&shown, "stat", e))?;
            if st.st_mode & 0o7777 != d.mode {
                if let Some(rec) = self.meta.get(&shown).cloned() {
                    self.meta.insert(Record {
                        mode: d.mode,
                        ..rec
                    });
                } else {
                    self.meta.insert(Record {
                        path: shown.clone(),
                        kind: Kind::Dir,
                        // Without privilege the directory is the caller's,
                        // which reads back as container 0:0.
                        uid: if self.privileged {
                            u64::from(st.st_uid)
                        } else {
                            0
                        },
                        gid: if self.privileged {
                            u64::from(st.st_gid)
                        } else {
                            0
                        },
                        mode: d.mode,
                        rdev: None,
                        xattrs: Default::default(),
                    });
                }
            }
            sfs::set_times_fd(fd.as_fd(), d.mtime.0, d.mtime.1)
                .map_err(|e| self.io_err(&shown, "set times", e))?;
        }
        Ok(self.stats)
    }
}
